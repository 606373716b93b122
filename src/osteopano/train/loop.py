"""Training with the study's protocol, held-out evaluation, and loading a finished run.

``train_run(cfg, out)`` does, in order:

1. labels every sample (``label_column`` through ``label_map``; unlabelled
   samples dropped and counted), checks there are exactly two classes;
2. decodes and preprocesses every image once (``Preprocess.to_uint8``, in
   threads) and keeps the uint8 224x224 planes in memory; unreadable files are
   listed and left out. With ``input_mode='roi'`` each image's cortex is
   measured once and both ROI crops kept instead (``load_roi_images``); images
   without pixel spacing or whose cortex is not located are left out and
   counted. ``covariates`` (age, sex) come from the manifest; samples missing
   one are left out (no imputation);
3. splits train/val/test (the manifest's ``split`` column when filled, else
   stratified by class and grouped by patient, ``split_samples``);
4. trains ``create_model`` with Adam + cross-entropy, train-only augmentation
   (flip, small affine, brightness/contrast), early stopping on val loss
   restoring the best weights; after every epoch a checkpoint (model,
   optimiser, early-stopping state, best weights, history, RNG states) is
   written atomically, so ``resume=True`` continues an interrupted run and
   gives the same result as an uninterrupted one;
5. chooses the decision threshold on the validation split, then evaluates the
   untouched test split once (``osteopano.metrics.evaluation``) and writes the run
   folder.

Run folder: ``config.json``, ``splits.csv``, ``checkpoint.pt``, ``history.csv``,
``curves.png``, ``model.safetensors``, ``metrics.json``, ``confusion.png``,
``roc.png``, ``calibration.png``. ``load_run`` needs ``config.json`` and
``model.safetensors``.
"""

from __future__ import annotations

import copy
import csv
import io
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from osteopano.data.dataset import Sample, discover
from osteopano.data.labels import label_samples
from osteopano.data.splits import manifest_splits, split_samples
from osteopano.errors import DataError, ModelError
from osteopano.io.files import atomic_path, atomic_write_json, atomic_write_text
from osteopano.model.config import RunConfig
from osteopano.model.networks import Classifier, create_model
from osteopano.model.presets import recipe
from osteopano.prepare.covariates import covariate_names, covariate_stats, encode_covariates
from osteopano.prepare.intensity import Preprocess
from osteopano.prepare.roi import RoiSpec
from osteopano.prepare.spec import ModelSpec, Threshold
from osteopano.train.evaluate import mcw_baselines, synthetic_note
from osteopano.train.inputs import _progress, load_planes
from osteopano.train.tensors import autocast, fp32_wide_depthwise, predict_logits, resolve_precision, to_network

HISTORY_COLUMNS = ("epoch", "seconds", "loss", "accuracy", "val_loss", "val_accuracy")

class _AugmentedImages(torch.utils.data.Dataset):
    """Cached uint8 planes (N, K, S, S) + covariates (N, D) + labels; random flip/affine/brightness-contrast
    (each plane on its own) when ``augment`` is given."""

    def __init__(self, images: np.ndarray, covariates: np.ndarray, y: np.ndarray, augment: Callable | None):
        self.images = torch.from_numpy(images)
        self.covariates = torch.from_numpy(covariates)
        self.y = torch.from_numpy(y)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.augment:
            img = torch.cat([self.augment(img[k:k + 1]) for k in range(len(img))])
        return img, self.covariates[i], self.y[i]


def _augmentation(params: dict[str, Any]) -> Callable:
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(params["hflip"]),
        v2.RandomAffine(degrees=params["degrees"], translate=(params["translate"],) * 2,
                        scale=tuple(params["scale"])),
        v2.ColorJitter(brightness=params["brightness"], contrast=params["contrast"]),
    ])


# ----------------------------------------------------------------------------- training


def initial_spec(cfg: RunConfig) -> ModelSpec:
    """The spec the run starts from (classes, covariate statistics and threshold are filled in later):
    the asked-for recipe, else the preset's for the backbone, input mode and size."""
    pre = Preprocess.from_dict(cfg.preprocess) if cfg.preprocess else recipe(cfg.preset, cfg.backbone,
                                                                              cfg.input_mode, cfg.image_size)
    return ModelSpec(preprocess=pre, input_mode=cfg.input_mode, roi=RoiSpec.from_dict(cfg.roi),
                     covariates=tuple(cfg.covariates), classes=("normal", cfg.positive) if cfg.positive != "normal"
                     else ("other", "normal"), positive=cfg.positive, threshold=Threshold(rule=cfg.threshold_rule))


def _prepare(cfg: RunConfig, workers: int, console: Console | None) -> dict[str, Any]:
    """Data set -> labelled, decoded, split arrays (deterministic given cfg and the data)."""
    ds = discover(cfg.data, allow_duplicates=cfg.allow_duplicates)
    lab = label_samples(ds, cfg.label_column, cfg.label_map, cfg.positive)
    if lab.dropped and console:
        console.print(f"[yellow]{lab.dropped} sample(s) without a {cfg.label_column!r} value left out")
    samples, y = lab.samples, lab.y
    if cfg.covariates:
        keep = [i for i, s in enumerate(samples) if all(s.get(c) is not None for c in cfg.covariates)]
        if len(keep) < len(samples) and console:
            console.print(f"[yellow]{len(samples) - len(keep)} sample(s) without {', '.join(cfg.covariates)} "
                          "left out (covariates are not imputed)")
        samples, y = [samples[i] for i in keep], y[keep]
    spec = initial_spec(cfg).replace(classes=tuple(lab.classes))
    images, good, bad, measured = load_planes(samples, spec, cfg.pixel_spacing_mm, workers, console)
    if console and bad and spec.input_mode == "roi":
        console.print(f"[yellow]{len(bad)} image(s) dropped: unreadable, no pixel spacing, or cortex "
                      "not located (no whole-image fallback)")
    if console:
        for msg in bad:
            console.print(f"skipped image: {msg}", style="yellow", markup=False)
    samples = [samples[i] for i in good]
    y = y[good]
    if len(set(y.tolist())) < 2:
        raise DataError(f"{ds.root}: fewer than two classes among the readable images")
    split = manifest_splits([s.get("split") for s in samples])
    source = "manifest"
    if split is None:
        split = split_samples([lab.classes[k] for k in y], [s.patient_id for s in samples],
                              cfg.split_fractions, cfg.seed)
        source = "random"
    for name in ("train", "val", "test"):
        if not (split == name).any():
            raise DataError(f"{ds.root}: the {name} split is empty ({len(y)} usable images are too few)")
    covariates, stats = _covariates(spec, samples, split)
    return {"ds": ds, "classes": lab.classes, "samples": samples, "y": y, "images": images,
            "covariates": covariates, "mcw_measured": measured, "spec": spec.replace(covariate_stats=stats),
            "split": split, "split_source": source, "skipped": bad, "dropped": lab.dropped}


def _covariates(spec: ModelSpec, samples: Sequence[Sample], split: np.ndarray) -> tuple[np.ndarray, dict]:
    """(N, D) float32 head covariates and their train-split statistics."""
    if not spec.covariates:
        return np.zeros((len(samples), 0), np.float32), {}
    rows = [s.fields for s in samples]
    stats = covariate_stats(spec.covariates, [r for r, sp in zip(rows, split) if sp == "train"])
    cov = np.stack([encode_covariates(spec.covariates, r, stats, str(s.path)) for r, s in zip(rows, samples)])
    return cov.reshape(len(samples), len(covariate_names(spec.covariates))), stats


def _write_splits(path: Path, data: dict[str, Any]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "patient_id", "label", "split"])
    for s, k, sp in zip(data["samples"], data["y"], data["split"]):
        writer.writerow([str(s.path), s.patient_id, data["classes"][k], sp])
    atomic_write_text(path, buf.getvalue())


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def _save_curves(path: Path, history: list[dict[str, float]], best_epoch: int) -> None:
    """Accuracy and loss per epoch, train vs validation (the study's Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, name in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", ms=3, label="validation")
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name.lower())
        ax.set_title(f"Model {name.lower()}")
        ax.grid(alpha=0.3)
        ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_run(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, workers: int = 2,
              console: Console | None = None,
              on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train (or, with ``resume``, continue the run in ``out`` using its saved config) and evaluate.

    Returns the test metrics dict (also written to ``out/metrics.json``).
    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoint is written.
    """
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not (out / "config.json").is_file() or not ckpt_path.is_file():
            raise ModelError(f"{out}: nothing to resume (needs config.json and checkpoint.pt)")
        cfg = RunConfig.load(out / "config.json")
    elif cfg is None:
        raise ValueError("a RunConfig is needed unless resuming")
    elif (out / "checkpoint.pt").exists() or (out / "model.safetensors").exists():
        raise DataError(f"{out} already holds a run; choose another --out or continue it with --resume {out}")

    data = _prepare(cfg, workers, console)
    fingerprint = data["ds"].fingerprint()
    if resume and fingerprint != cfg.data_fingerprint:
        raise DataError(f"{cfg.data} changed since the run started (fingerprint differs); cannot resume")
    cfg.data_fingerprint = fingerprint
    cfg.data_synthetic = data["ds"].synthetic
    cfg.split_source = data["split_source"]
    cfg.skipped_files = data["skipped"]
    cfg.precision_used = cfg.precision_used if resume else resolve_precision(cfg.precision)
    # a fixed, recorded thread count: CPU reductions split by thread, so results depend on it
    cfg.threads = cfg.threads or min(os.cpu_count() or 1, 8)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    _write_splits(out / "splits.csv", data)

    preprocess = data["spec"].preprocess
    split, y = data["split"], data["y"]
    images = data["images"]
    _seed_everything(cfg.seed)
    model = create_model(cfg.backbone, len(data["classes"]), cfg.weights, cfg.dropout, cfg.hidden,
                         n_covariates=data["covariates"].shape[1])
    model = model.to(memory_format=torch.channels_last)
    fp32_wide_depthwise(model, cfg.precision_used)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader_rng = torch.Generator().manual_seed(cfg.seed)
    cov = data["covariates"]
    train_set = _AugmentedImages(images[split == "train"], cov[split == "train"], y[split == "train"],
                                 _augmentation(cfg.augmentation))
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                         generator=loader_rng, num_workers=0)
    val_images = torch.from_numpy(images[split == "val"])
    val_cov = torch.from_numpy(cov[split == "val"])
    val_y = torch.from_numpy(y[split == "val"])

    state = {"epoch": 0, "history": [], "best_val_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0,
             "best_model": copy.deepcopy(model.state_dict())}
    if resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        loader_rng.set_state(ckpt["rng"]["loader"])
        if console:
            console.print(f"Resuming {out} after epoch {state['epoch']}")

    precision = cfg.precision_used
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        with _progress(console) as progress:
            task = progress.add_task(f"Epoch {epoch}/{cfg.epochs}", total=len(loader), info="")
            for xb, cb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                with autocast(precision):
                    logits = model(to_network(xb, preprocess), cb)
                    loss = loss_fn(logits.float(), yb)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
                progress.update(task, advance=1, info=f"loss: {total_loss / seen:.4f}")
        val_logits = predict_logits(model, val_images, val_cov, preprocess, cfg.batch_size, precision)
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - start, 2),
               "loss": total_loss / seen, "accuracy": correct / seen,
               "val_loss": float(loss_fn(val_logits, val_y)),
               "val_accuracy": float((val_logits.argmax(1) == val_y).float().mean())}
        state["history"].append(row)
        state["epoch"] = epoch
        if row["val_loss"] < state["best_val_loss"]:
            state.update(best_val_loss=row["val_loss"], best_epoch=epoch, bad_epochs=0,
                         best_model=copy.deepcopy(model.state_dict()))
        else:
            state["bad_epochs"] += 1
        if console:
            console.print(f"Epoch {epoch}/{cfg.epochs} - {row['seconds']:.0f}s - loss: {row['loss']:.4f} - "
                          f"accuracy: {row['accuracy']:.4f} - val_loss: {row['val_loss']:.4f} - "
                          f"val_accuracy: {row['val_accuracy']:.4f}", soft_wrap=True)
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                "python": random.getstate(), "loader": loader_rng.get_state()}}, tmp)
        _write_history(out / "history.csv", state["history"])
        if on_epoch_end:
            on_epoch_end(epoch, row)

    if console and state["bad_epochs"] >= cfg.patience:
        console.print(f"Early stopping: no val_loss improvement for {cfg.patience} epochs; "
                      f"restoring the weights of epoch {state['best_epoch']}", soft_wrap=True)
    model.load_state_dict(state["best_model"])
    model = model.to(memory_format=torch.contiguous_format)
    _save_curves(out / "curves.png", state["history"], state["best_epoch"])
    return _finish(cfg, out, model, data, state, console)


def _finish(cfg: RunConfig, out: Path, model: Classifier, data: dict[str, Any], state: dict[str, Any],
            console: Console | None) -> dict[str, Any]:
    """Threshold on val, one evaluation on test, and the run's final files."""
    from safetensors.torch import save_file

    from osteopano.metrics.evaluation import (age_baseline_auc, choose_threshold, compute_metrics, parse_threshold_rule,
                                      print_report, save_plots)

    spec = data["spec"]
    split, y = data["split"], data["y"]
    images = torch.from_numpy(data["images"])
    prob = torch.softmax(predict_logits(model, images, torch.from_numpy(data["covariates"]), spec.preprocess,
                                        cfg.batch_size, "fp32"), 1)[:, spec.positive_index].numpy()
    val, test = split == "val", split == "test"
    threshold, note = choose_threshold(parse_threshold_rule(cfg.threshold_rule), y[val], prob[val])
    spec = spec.replace(threshold=Threshold(float(threshold), cfg.threshold_rule, note))
    cfg.spec = spec

    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    metrics = compute_metrics(y[test], prob[test], spec.threshold.value, class_names=list(spec.classes),
                              seed=cfg.seed)
    metrics["threshold_rule"] = spec.threshold.to_dict()
    metrics["evaluated_on"] = "test split (held out from training and threshold choice)"
    metrics["data_synthetic"] = cfg.data_synthetic
    metrics["split_sizes"] = {s: {c: int(((split == s) & (y == k)).sum()) for k, c in enumerate(spec.classes)}
                              for s in ("train", "val", "test")}
    metrics["best_epoch"] = state["best_epoch"]
    metrics["epochs_run"] = state["epoch"]
    ages = np.asarray([s.number("age") if s.number("age") is not None else np.nan for s in data["samples"]])
    if np.isfinite(ages).any():
        train = split == "train"
        try:
            metrics["age_baseline"] = age_baseline_auc(ages[train], y[train], ages[test], y[test], seed=cfg.seed)
        except DataError as exc:
            metrics["age_baseline"] = {"auc": None, "note": str(exc)}
    metrics["baselines"] = {"age_logistic": metrics.get("age_baseline") or {"auc": None, "note": "no ages"},
                            **mcw_baselines(data["samples"], y, data["mcw_measured"], test, seed=cfg.seed)}
    atomic_write_json(out / "metrics.json", metrics)
    save_plots(out, y[test], prob[test], spec.threshold.value, list(spec.classes), seed=cfg.seed)
    cfg.save(out / "config.json")
    if console:
        print_report(metrics, console,
                     title=f"Test split ({int(test.sum())} images) - {out}{synthetic_note(data['ds'])}")
        if "age_baseline" in metrics and metrics["age_baseline"].get("auc") is not None:
            ab = metrics["age_baseline"]
            console.print(f"Age-only logistic baseline AUC: {ab['auc']:.3f} "
                          f"(95% CI {ab['ci'][0]:.3f}-{ab['ci'][1]:.3f})" if ab.get("ci") else
                          f"Age-only logistic baseline AUC: {ab['auc']:.3f}")
    return metrics


