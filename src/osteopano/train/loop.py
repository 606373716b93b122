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
import functools
import io
import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from osteopano.train.config import RunConfig
from osteopano.data.dataset import Dataset, Sample, discover
from osteopano.errors import DataError, ModelError, OsteopanoError
from osteopano.io.files import atomic_path, atomic_write_json, atomic_write_text
from osteopano.io.images import read_image
from osteopano.model.networks import Classifier, create_model
from osteopano.prepare.intensity import Preprocess
from osteopano.data.splits import manifest_splits, split_samples

RUN_FILES = ("config.json", "model.safetensors")
HISTORY_COLUMNS = ("epoch", "seconds", "loss", "accuracy", "val_loss", "val_accuracy")

# ----------------------------------------------------------------------------- labels


def parse_label_map(text: str | None) -> dict[str, str]:
    """``'C1=normal,C2=osteoporosis'`` -> ``{'C1': 'normal', 'C2': 'osteoporosis'}``; DataError when malformed."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        raw, sep, cls = (s.strip() for s in part.partition("="))
        if not sep or not raw or not cls:
            raise DataError(f"label map {text!r}: each item must look like VALUE=CLASS (e.g. C1=normal)")
        mapping[raw] = cls
    return mapping


@dataclass
class Labelled:
    """Samples that carry a class, with class indices (``classes`` = [negative, positive])."""

    samples: list[Sample]
    y: np.ndarray
    classes: list[str]
    dropped: int  # samples without a label


def label_samples(ds: Dataset, column: str, label_map: dict[str, str], positive: str) -> Labelled:
    """Apply ``label_map`` to ``column``; exactly two classes, ``positive`` one of them (DataError otherwise)."""
    if not ds.samples:
        raise DataError(f"{ds.root}: no images found")
    raw = ds.labels(column)
    present = sorted({v for v in raw if v is not None})
    if not present:
        raise DataError(f"{ds.root}: no sample has a value in column {column!r}")
    if label_map:
        absent = sorted(set(label_map) - set(present))
        if absent:
            raise DataError(f"label map names {', '.join(absent)}, absent from column {column!r} "
                            f"(values found: {', '.join(present)})")
        unmapped = sorted(set(present) - set(label_map))
        if unmapped:
            raise DataError(f"column {column!r} holds {', '.join(unmapped)}, not covered by the label map")
    keep = [i for i, v in enumerate(raw) if v is not None]
    names = [label_map.get(raw[i], raw[i]) for i in keep]
    classes = sorted(set(names))
    if len(classes) < 2:
        raise DataError(f"{ds.root}: only one class ({classes[0]}) in column {column!r}; two are needed")
    if len(classes) > 2:
        raise DataError(f"{ds.root}: {len(classes)} classes ({', '.join(classes)}) in column {column!r}; "
                        "merge them into two with --label-map, e.g. C1=normal,C2=osteoporosis,C3=osteoporosis")
    if positive not in classes:
        raise DataError(f"positive class {positive!r} is not among the classes {', '.join(classes)} "
                        "(set --positive)")
    classes = [c for c in classes if c != positive] + [positive]
    y = np.asarray([classes.index(n) for n in names], dtype=np.int64)
    return Labelled([ds.samples[i] for i in keep], y, classes, len(raw) - len(keep))


# ----------------------------------------------------------------------------- images


def _map_images(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, console: Console | None,
                label: str) -> tuple[list[Any], list[int], list[str]]:
    """Run ``fn`` over ``items`` in threads with a progress bar; ``fn`` returns a result or a str reason.
    Returns (all results, indices of the good ones, the reasons of the bad ones)."""
    results: list[Any] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, _progress(console) as progress:
        task = progress.add_task(label, total=len(items), info="")
        for res in pool.map(fn, items):
            results.append(res)
            progress.advance(task)
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    return results, good, [r for r in results if isinstance(r, str)]


def load_images(paths: Sequence[Path], preprocess: Preprocess, workers: int,
                console: Console | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode + preprocess (to uint8 planes) in threads. Returns (images (N, S, S) uint8 of the good files,
    indices of the good files, 'path: reason' for each unreadable one)."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return preprocess.to_uint8(read_image(path).pixels)
        except OsteopanoError as exc:
            return str(exc)
        except (ValueError, OSError) as exc:
            return f"{path}: {exc}"

    results, good, bad = _map_images(one, paths, workers, console, "Preprocessing images")
    size = preprocess.size
    images = np.stack([results[i] for i in good]) if good else np.zeros((0, size, size), np.uint8)
    return images, good, bad


def load_roi_images(samples: Sequence[Sample], preprocess: Preprocess, spec: dict[str, Any],
                    default_spacing: float | None, workers: int, console: Console | None = None
                    ) -> tuple[np.ndarray, list[int], list[str], np.ndarray]:
    """Decode, measure the cortex (``osteopano.cortex.measure``, ~0.4 s an image: done once here) and cut both
    ROI crops (``osteopano.prepare.roi``) in threads. Returns (planes (N, 2, S, S) uint8, indices of the good
    samples, 'path: reason' for each image left out - unreadable, no pixel spacing, cortex not
    located -, the measured mean MCW in mm of the good ones). Pixel spacing per image: the manifest's
    ``pixel_spacing_mm`` column, else ``default_spacing`` (--pixel-spacing), else the file's own.
    Results are memoised in this process (file, size, mtime, spacing, recipe), so resuming, evaluating
    or training a second ROI model on the same images in one process does not measure them again."""
    recipe = json.dumps([spec, preprocess.to_dict()], sort_keys=True)

    def one(sample: Sample) -> tuple[np.ndarray, float] | str:
        try:
            stat = sample.path.stat()
            spacing = sample.number("pixel_spacing_mm") or default_spacing
            return _roi_planes(str(sample.path), stat.st_size, stat.st_mtime_ns, spacing, recipe)
        except OsteopanoError as exc:
            return str(exc)
        except (ValueError, OSError) as exc:
            return f"{sample.path}: {exc}"

    results, good, bad = _map_images(one, samples, workers, console, "Measuring the cortex, cutting ROI crops")
    size = preprocess.size
    images = np.stack([results[i][0] for i in good]) if good else np.zeros((0, 2, size, size), np.uint8)
    mcw = np.asarray([results[i][1] for i in good], float)
    return images, good, bad, mcw


@functools.lru_cache(maxsize=1024)  # ~100 MB of 224 px planes at most
def _roi_planes(path: str, _size: int, _mtime_ns: int, spacing: float | None, recipe: str
                ) -> tuple[np.ndarray, float]:
    """One image's ROI planes (2, S, S) uint8 and measured MCW (mm, NaN when unknown); see load_roi_images."""
    from osteopano.prepare.roi import RoiSpec, measure_roi

    spec, preprocess = json.loads(recipe)
    planes, _, measurement = measure_roi(read_image(path), Preprocess.from_dict(preprocess),
                                         RoiSpec.from_dict(spec), spacing)
    planes.setflags(write=False)
    return planes, float(measurement.mcw_mm) if measurement.mcw_mm is not None else np.nan


def _progress(console: Console | None) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), console=console, transient=True,
                    disable=console is None or not console.is_terminal)


# ----------------------------------------------------------------------------- tensors


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' on CPUs with native bfloat16 (AVX-512 BF16 / AMX), else 'fp32'."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise DataError(f"precision {precision!r}: use auto, bf16 or fp32")
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "fp32"


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _normalise(batch_u8: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(B, K, S, S) uint8 -> float32, exactly ``Preprocess.normalise``: (B, 3, S, S) channels-last for one
    plane (the whole image), (B, K, 3, S, S) for K ROI crops."""
    mean = torch.tensor(preprocess.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 1, 3, 1, 1)
    x = (batch_u8.float().div_(255.0).unsqueeze(2).expand(-1, -1, 3, -1, -1) - mean) / std
    if x.shape[1] == 1:
        return x[:, 0].contiguous(memory_format=torch.channels_last)
    return x.contiguous()


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


def _predict_logits(model: torch.nn.Module, images: torch.Tensor, covariates: torch.Tensor, preprocess: Preprocess,
                    batch_size: int, precision: str) -> torch.Tensor:
    """Logits (fp32) for (N, K, S, S) uint8 images and (N, D) covariates, in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode(), _autocast(precision):
        for start in range(0, len(images), batch_size):
            batch = slice(start, start + batch_size)
            out.append(model(_normalise(images[batch], preprocess), covariates[batch]).float())
    return torch.cat(out) if out else torch.zeros((0, 2))


# ----------------------------------------------------------------------------- training


def _prepare(cfg: RunConfig, workers: int, console: Console | None) -> dict[str, Any]:
    """Data set -> labelled, decoded, split arrays (deterministic given cfg and the data)."""
    ds = discover(cfg.data)
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
    preprocess = cfg.preprocess_obj()
    measured = None
    if cfg.input_mode == "roi":
        images, good, bad, measured = load_roi_images(samples, preprocess, cfg.roi, cfg.pixel_spacing_mm,
                                                       workers, console)
        if console and bad:
            console.print(f"[yellow]{len(bad)} image(s) dropped: unreadable, no pixel spacing, or cortex "
                          "not located (no whole-image fallback)")
    elif cfg.input_mode == "whole":
        images, good, bad = load_images([s.path for s in samples], preprocess, workers, console)
        images = images[:, None]  # (N, 1, S, S): one plane per case
    else:
        raise DataError(f"unknown input {cfg.input_mode!r} (use whole or roi)")
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
    covariates = _covariates(cfg, samples, split)
    return {"ds": ds, "classes": lab.classes, "samples": samples, "y": y, "images": images,
            "covariates": covariates, "mcw_measured": measured,
            "split": split, "split_source": source, "skipped": bad, "dropped": lab.dropped}


def _covariates(cfg: RunConfig, samples: Sequence[Sample], split: np.ndarray) -> np.ndarray:
    """(N, D) float32 head covariates; sets ``cfg.covariate_stats`` from the train split."""
    from osteopano.prepare.roi import covariate_names, covariate_stats, encode_covariates

    if not cfg.covariates:
        return np.zeros((len(samples), 0), np.float32)
    rows = [s.fields for s in samples]
    cfg.covariate_stats = covariate_stats(cfg.covariates, [r for r, sp in zip(rows, split) if sp == "train"])
    return np.stack([encode_covariates(cfg.covariates, r, cfg.covariate_stats, str(s.path))
                     for r, s in zip(rows, samples)]).reshape(len(samples), len(covariate_names(cfg.covariates)))


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
    cfg.classes = data["classes"]
    cfg.split_source = data["split_source"]
    cfg.skipped_files = data["skipped"]
    cfg.precision_used = cfg.precision_used if resume else resolve_precision(cfg.precision)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    _write_splits(out / "splits.csv", data)

    preprocess = cfg.preprocess_obj()
    split, y = data["split"], data["y"]
    images = data["images"]
    _seed_everything(cfg.seed)
    model = create_model(cfg.backbone, len(cfg.classes), cfg.weights, cfg.dropout, cfg.hidden,
                         n_covariates=data["covariates"].shape[1])
    model = model.to(memory_format=torch.channels_last)
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
                with _autocast(precision):
                    logits = model(_normalise(xb, preprocess), cb)
                    loss = loss_fn(logits.float(), yb)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
                progress.update(task, advance=1, info=f"loss: {total_loss / seen:.4f}")
        val_logits = _predict_logits(model, val_images, val_cov, preprocess, cfg.batch_size, precision)
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

    preprocess = cfg.preprocess_obj()
    split, y = data["split"], data["y"]
    images = torch.from_numpy(data["images"])
    pos = len(cfg.classes) - 1
    prob = torch.softmax(_predict_logits(model, images, torch.from_numpy(data["covariates"]), preprocess,
                                         cfg.batch_size, "fp32"), 1)[:, pos].numpy()
    val, test = split == "val", split == "test"
    threshold, note = choose_threshold(parse_threshold_rule(cfg.threshold_rule), y[val], prob[val])
    cfg.threshold, cfg.threshold_note = float(threshold), note

    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    metrics = compute_metrics(y[test], prob[test], cfg.threshold, class_names=cfg.classes, seed=cfg.seed)
    metrics["threshold_rule"] = {"rule": cfg.threshold_rule, "value": cfg.threshold,
                                 "description": cfg.threshold_note}
    metrics["evaluated_on"] = "test split (held out from training and threshold choice)"
    metrics["data_synthetic"] = cfg.data_synthetic
    metrics["split_sizes"] = {s: {c: int(((split == s) & (y == k)).sum()) for k, c in enumerate(cfg.classes)}
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
    metrics["baselines"] = {"age": metrics.get("age_baseline") or {"auc": None, "note": "no ages"},
                            **mcw_baselines(data["samples"], y, data["mcw_measured"], test, seed=cfg.seed)}
    atomic_write_json(out / "metrics.json", metrics)
    save_plots(out, y[test], prob[test], cfg.threshold, cfg.classes, seed=cfg.seed)
    cfg.save(out / "config.json")
    if console:
        print_report(metrics, console,
                     title=f"Test split ({int(test.sum())} images) - {out}{_synthetic_note(data['ds'])}")
        if "age_baseline" in metrics and metrics["age_baseline"].get("auc") is not None:
            ab = metrics["age_baseline"]
            console.print(f"Age-only logistic baseline AUC: {ab['auc']:.3f} "
                          f"(95% CI {ab['ci'][0]:.3f}-{ab['ci'][1]:.3f})" if ab.get("ci") else
                          f"Age-only logistic baseline AUC: {ab['auc']:.3f}")
    return metrics


def mcw_baselines(samples: Sequence[Sample], y: np.ndarray, measured: np.ndarray | None, rows: np.ndarray,
                  *, seed: int = 0) -> dict[str, Any]:
    """The MCW-only baseline on ``rows`` (a boolean mask): -MCW as the score (a thin cortex flags
    osteoporosis), no fitting. ``mcw``: from the manifest's mcw_left_mm/mcw_right_mm (mean of the sides
    present) when every case has one, else the measured MCW (``osteopano.cortex.measure``, roi runs);
    ``mcw_measured`` too when measured values exist. Cases without a value are left out and counted."""
    def entry(mcw: np.ndarray, source: str) -> dict[str, Any]:
        keep = rows & np.isfinite(mcw)
        if len(np.unique(y[keep])) < 2:
            return {"auc": None, "source": source, "note": "fewer than two classes with an MCW value"}
        return {**score_auc(y[keep], -mcw[keep], seed), "n_missing": int((rows & ~np.isfinite(mcw)).sum()),
                "source": source, "score": "-MCW (mm), no fitting"}

    def manifest_mcw(s: Sample) -> float:
        sides = [v for v in (s.number("mcw_left_mm"), s.number("mcw_right_mm")) if v is not None]
        return float(np.mean(sides)) if sides else np.nan

    out: dict[str, Any] = {}
    manifest = np.asarray([manifest_mcw(s) for s in samples], float)
    if np.isfinite(manifest[rows]).all() and rows.any():
        out["mcw"] = entry(manifest, "manifest")
    elif measured is not None:
        out["mcw"] = entry(measured, "measured")
    else:
        out["mcw"] = {"auc": None, "note": "no MCW: no manifest mcw columns, and whole-image runs do not "
                      "measure the cortex (osteopano measure does)"}
    if measured is not None:
        out["mcw_measured"] = entry(measured, "measured")
    return out


def score_auc(y: np.ndarray, score: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """AUC of a raw score (any scale) with its stratified-bootstrap 95% CI: {'auc', 'ci', 'n'}."""
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    from osteopano.metrics.evaluation import bootstrap_auc_ci

    unit = rankdata(score) / len(score)  # monotone into (0, 1]: same AUC, valid for the bootstrap helper
    return {"auc": float(roc_auc_score(y, score)), "ci": bootstrap_auc_ci(y, unit, seed=seed), "n": len(y)}


# ----------------------------------------------------------------------------- finished runs


@dataclass
class RunModel:
    """A trained run, ready for inference (see ``load_run``).

    ``model`` is the ``Classifier`` in eval mode (fp32, CPU; ``model.backbone`` is
    the timm network for Grad-CAM); ``classes`` the output order, the positive
    class last; ``threshold`` the decision threshold chosen on the run's
    validation split; ``preprocess`` the exact input recipe.
    """

    run_dir: Path
    model: Classifier
    config: RunConfig
    classes: list[str]
    threshold: float
    preprocess: Preprocess

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.config.positive)

    def to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """float32 HxW [0, 1] images -> (N, 3, S, S) network input (whole-image models without covariates;
        ROI / covariate models predict through ``osteopano.load``, which measures and crops)."""
        if self.config.input_mode != "whole" or self.config.covariates:
            raise ModelError(f"{self.run_dir}: an ROI or covariate model; predict with osteopano.load(run)")
        return torch.from_numpy(np.stack([self.preprocess(img) for img in images]))

    def predict_proba(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Probability of the positive class for each float32 HxW [0, 1] image (Radiograph.pixels), batched."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                logits = self.model(self.to_tensor(images[start:start + batch_size]))
                out.append(torch.softmax(logits.float(), 1)[:, self.positive_index].numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def load_run(run_dir: str | Path) -> RunModel:
    """Rebuild a finished run's model from ``config.json`` + ``model.safetensors``; ModelError when incomplete."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: no such run folder")
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        hint = " (training unfinished? continue it with --resume)" if (run_dir / "checkpoint.pt").exists() else ""
        raise ModelError(f"{run_dir}: not a complete run, missing {', '.join(missing)}{hint}")
    try:
        cfg = RunConfig.load(run_dir / "config.json")
        preprocess = cfg.preprocess_obj()
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{run_dir / 'config.json'}: unreadable run config ({exc})") from None
    if cfg.threshold is None:
        raise ModelError(f"{run_dir}: the run has no threshold (training did not finish)")
    from osteopano.prepare.roi import covariate_names

    model = create_model(cfg.backbone, len(cfg.classes), "none", cfg.dropout, cfg.hidden,
                         n_covariates=len(covariate_names(cfg.covariates)))
    try:
        model.load_state_dict(load_file(str(run_dir / "model.safetensors")), strict=True)
    except Exception as exc:
        raise ModelError(f"{run_dir / 'model.safetensors'}: does not fit the configured model "
                         f"({str(exc).splitlines()[0][:150]})") from None
    return RunModel(run_dir, model.eval(), cfg, list(cfg.classes), float(cfg.threshold), preprocess)


def evaluate_run(run_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
                 label_column: str | None = None, label_map: dict[str, str] | None = None,
                 threshold: str | None = None, workers: int = 2, pixel_spacing_mm: float | None = None,
                 console: Console | None = None) -> dict[str, Any]:
    """Score every labelled sample of an external data set with a finished run; write metrics.json + plots.

    The truth is the data's ``label`` column by default (the study's external set was labelled by
    DXA, as the phantom's ``label`` is), whatever column the run was trained on; the run's label map
    applies only when scoring against the run's own column. The threshold defaults to the run's
    (chosen on its validation split). A threshold *rule* ('youden', 'sens:0.9') is chosen on this same data and says so.
    Unreadable files are listed in ``metrics['skipped_files']`` and left out; for ROI runs so are images
    without pixel spacing (manifest column, else ``pixel_spacing_mm``, else the file's) or whose cortex
    is not located, and for covariate runs samples lacking a covariate in the manifest.
    ``metrics['baselines']``: age as the score (no fitting) and -MCW (``mcw_baselines``).
    """
    from osteopano.metrics.evaluation import (choose_threshold, compute_metrics, parse_threshold_rule, print_report,
                                      save_plots)

    run = load_run(run_dir)
    cfg = run.config
    ds = discover(data)
    out = Path(out) if out else run.run_dir / f"eval-{_data_name(ds)}"
    column = label_column or "label"
    if label_map is not None:
        mapping = label_map
    else:
        mapping = cfg.label_map if column == cfg.label_column else {}
    lab = label_samples(ds, column, mapping, cfg.positive)
    if lab.classes != run.classes:
        raise DataError(f"{data}: classes {', '.join(lab.classes)} differ from the run's {', '.join(run.classes)}")
    keep = [i for i, s in enumerate(lab.samples) if all(s.get(c) is not None for c in cfg.covariates)]
    samples, y_all = [lab.samples[i] for i in keep], lab.y[keep]
    missing_cov = len(lab.samples) - len(keep)
    if missing_cov and console:
        console.print(f"[yellow]{missing_cov} sample(s) without {', '.join(cfg.covariates)} left out")
    measured = None
    if cfg.input_mode == "roi":
        images, good, bad, measured = load_roi_images(samples, run.preprocess, cfg.roi, pixel_spacing_mm,
                                                       workers, console)
    else:
        images, good, bad = load_images([s.path for s in samples], run.preprocess, workers, console)
        images = images[:, None]
    if console:
        for msg in bad:
            console.print(f"skipped image: {msg}", style="yellow", markup=False)
    if not good:
        raise DataError(f"{data}: none of the {len(lab.samples)} labelled images could be used")
    samples = [samples[i] for i in good]
    y = y_all[good]
    from osteopano.prepare.roi import encode_covariates

    cov = np.stack([encode_covariates(cfg.covariates, s.fields, cfg.covariate_stats, str(s.path))
                    for s in samples]).reshape(len(samples), -1).astype(np.float32)
    logits = _predict_logits(run.model, torch.from_numpy(images), torch.from_numpy(cov), run.preprocess, 32, "fp32")
    prob = torch.softmax(logits, 1)[:, run.positive_index].numpy()
    if threshold is None:
        value, note = run.threshold, f"the run's threshold ({cfg.threshold_note})"
        rule = cfg.threshold_rule
    else:
        rule_obj = parse_threshold_rule(threshold)
        value, note = choose_threshold(rule_obj, y, prob)
        rule = threshold
        if rule_obj.kind != "fixed":
            note += " (chosen on this evaluation set itself: optimistic)"
    metrics = compute_metrics(y, prob, value, class_names=run.classes, seed=cfg.seed)
    metrics["threshold_rule"] = {"rule": rule, "value": float(value), "description": note}
    metrics["evaluated_on"] = f"external data {ds.root} (all {len(y)} readable labelled images)"
    metrics["label_column"] = column
    metrics["data_synthetic"] = ds.synthetic
    metrics["run"] = str(run.run_dir)
    metrics["skipped_files"] = bad
    metrics["unlabelled_dropped"] = lab.dropped
    metrics["covariates_missing"] = missing_cov
    every = np.ones(len(y), bool)
    ages = np.asarray([s.number("age") if s.number("age") is not None else np.nan for s in samples])
    age_entry: dict[str, Any] = {"auc": None, "note": "no ages, or one class only"}
    if np.isfinite(ages).any() and len(np.unique(y[np.isfinite(ages)])) == 2:
        keep = np.isfinite(ages)
        age_entry = {**score_auc(y[keep], ages[keep], cfg.seed), "score": "age (older = higher risk), no fitting"}
    metrics["baselines"] = {"age": age_entry, **mcw_baselines(samples, y, measured, every, seed=cfg.seed)}
    atomic_write_json(out / "metrics.json", metrics)
    save_plots(out, y, prob, value, run.classes, seed=cfg.seed)
    if console:
        print_report(metrics, console,
                     title=f"{ds.root} ({len(y)} images) - run {run.run_dir}{_synthetic_note(ds)}")
        console.print(f"Wrote {out}")
    return metrics


def _synthetic_note(ds: Dataset) -> str:
    return " - SYNTHETIC phantom data, not clinical evidence" if ds.synthetic else ""


def _data_name(ds: Dataset) -> str:
    return ds.root.name if ds.root.is_dir() else ds.root.stem
