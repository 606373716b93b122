"""Evaluation of a finished run on an external labelled data set, and the score baselines.

``evaluate_run`` scores every labelled sample of a data set with a run (the data's ``label`` column
by default: the study's external set was labelled by DXA) and writes ``metrics.json`` and plots.
Baselines in ``metrics['baselines']``: ``age_score`` (age itself as the score, no fitting) and -MCW
(``mcw_baselines``); a run's own ``metrics.json`` has ``age_logistic`` instead (a logistic model
of age fitted on the training split).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from osteopano.data.dataset import Dataset, Sample, discover
from osteopano.data.labels import label_samples
from osteopano.errors import DataError
from osteopano.io.files import atomic_write_json
from osteopano.model.run import load_run
from osteopano.prepare.covariates import encode_covariates
from osteopano.train.inputs import load_planes
from osteopano.train.tensors import predict_logits


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
    without a pixel spacing (``osteopano.prepare.spacing``) or whose cortex
    is not located, and for covariate runs samples lacking a covariate in the manifest.
    ``metrics['baselines']``: age as the score (no fitting) and -MCW (``mcw_baselines``).
    """
    from osteopano.metrics.evaluation import (choose_threshold, compute_metrics, parse_threshold_rule, print_report,
                                      save_plots)

    run = load_run(run_dir)
    cfg, spec = run.config, run.spec
    ds = discover(data)
    out = Path(out) if out else run.run_dir / f"eval-{_data_name(ds)}"
    column = label_column or "label"
    if label_map is not None:
        mapping = label_map
    else:
        mapping = cfg.label_map if column == cfg.label_column else {}
    lab = label_samples(ds, column, mapping, spec.positive)
    if tuple(lab.classes) != spec.classes:
        raise DataError(f"{data}: classes {', '.join(lab.classes)} differ from the run's {', '.join(spec.classes)}")
    keep = [i for i, s in enumerate(lab.samples) if all(s.get(c) is not None for c in spec.covariates)]
    samples, y_all = [lab.samples[i] for i in keep], lab.y[keep]
    missing_cov = len(lab.samples) - len(keep)
    if missing_cov and console:
        console.print(f"[yellow]{missing_cov} sample(s) without {', '.join(spec.covariates)} left out")
    images, good, bad, measured = load_planes(samples, spec, pixel_spacing_mm, workers, console)
    if console:
        for msg in bad:
            console.print(f"skipped image: {msg}", style="yellow", markup=False)
    if not good:
        raise DataError(f"{data}: none of the {len(lab.samples)} labelled images could be used")
    samples = [samples[i] for i in good]
    y = y_all[good]
    cov = np.stack([encode_covariates(spec.covariates, s.fields, spec.covariate_stats, str(s.path))
                    for s in samples]).reshape(len(samples), -1).astype(np.float32)
    logits = predict_logits(run.model, torch.from_numpy(images), torch.from_numpy(cov), spec.preprocess, 32, "fp32")
    prob = torch.softmax(logits, 1)[:, spec.positive_index].numpy()
    if threshold is None:
        value, note = spec.threshold.value, f"the run's threshold ({spec.threshold.description})"
        rule = spec.threshold.rule
    else:
        rule_obj = parse_threshold_rule(threshold)
        value, note = choose_threshold(rule_obj, y, prob)
        rule = threshold
        if rule_obj.kind != "fixed":
            note += " (chosen on this evaluation set itself: optimistic)"
    metrics = compute_metrics(y, prob, value, class_names=list(spec.classes), seed=cfg.seed)
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
    metrics["baselines"] = {"age_score": age_entry, **mcw_baselines(samples, y, measured, every, seed=cfg.seed)}
    atomic_write_json(out / "metrics.json", metrics)
    save_plots(out, y, prob, value, list(spec.classes), seed=cfg.seed)
    if console:
        print_report(metrics, console,
                     title=f"{ds.root} ({len(y)} images) - run {run.run_dir}{synthetic_note(ds)}")
        console.print(f"Wrote {out}")
    return metrics


def synthetic_note(ds: Dataset) -> str:
    return " - SYNTHETIC phantom data, not clinical evidence" if ds.synthetic else ""


def _data_name(ds: Dataset) -> str:
    return ds.root.name if ds.root.is_dir() else ds.root.stem
