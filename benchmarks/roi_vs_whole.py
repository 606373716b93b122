"""Whole-image vs cortex-ROI vs ROI + covariates on one SYNTHETIC phantom development set.

One phantom set (``--n`` images at ``--width`` px, ``--seed``), DXA labels (``label``: T-score <= -2.5),
one fixed train/val/test split written into a copy of the manifest (``split`` column) so every model
sees the same images. Prints the test AUC (95% bootstrap CI) of:

* whole image (the study's squashed 224 x 224 input),
* cortex ROI (both inferior-cortex crops at 8 px/mm, shared backbone),
* cortex ROI + age and sex,
* MCW-only: -MCW as measured by ``osteopano.cortex.measure`` (the tool's own measurement),
* age-only: logistic regression on age (train split),
* oracle: -mean of the manifest's TRUE MCW (the phantom's ground truth; no real data set has it).

Synthetic data: these numbers are about the phantom, not about patients.

    python benchmarks/roi_vs_whole.py [--n 400] [--width 1600] [--epochs 8] [--work /tmp/roi-bench]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def _dev_set(work: Path, n: int, width: int, seed: int) -> Path:
    """Generate the phantom set once (reused when present) and write manifest_split.csv with a fixed split."""
    from osteopano.phantom import generate as phantom
    from osteopano.data.dataset import discover
    from osteopano.data.splits import split_samples

    data = work / f"phantom-n{n}-w{width}-s{seed}"
    if not (data / "manifest.csv").is_file():
        phantom.generate(data, n, seed, width=width, progress=True)
    ds = discover(data / "manifest.csv")
    split = split_samples([s.label for s in ds.samples], [s.patient_id for s in ds.samples], (0.5, 0.25, 0.25),
                          seed)
    with open(data / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row, sp in zip(rows, split):
        row["split"] = sp
    with open(data / "manifest_split.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return data / "manifest_split.csv"


def _train(manifest: Path, out: Path, args: argparse.Namespace, **extra) -> tuple[dict, float]:
    """Train one model (or reuse a finished run in ``out``); returns its test metrics and the seconds its
    epochs took (history.csv; cortex measurement and data loading not included)."""
    if not (out / "metrics.json").is_file():
        _fit(manifest, out, args, **extra)
    with open(out / "history.csv", newline="") as fh:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(fh))
    return json.loads((out / "metrics.json").read_text()), seconds


def _fit(manifest: Path, out: Path, args: argparse.Namespace, **extra) -> None:
    from rich.console import Console

    from osteopano.model.config import RunConfig
    from osteopano.model.networks import backbone_mean_std
    from osteopano.prepare.intensity import Preprocess
    from osteopano.train.loop import train_run

    mean, std = backbone_mean_std("efficientnet_lite0")
    clahe = {"clahe_clip": 0.0} if extra.get("input_mode") == "roi" else {}
    cfg = RunConfig(data=str(manifest), seed=args.seed, epochs=args.epochs, patience=args.patience,
                    image_size=args.image_size, batch_size=32,
                    preprocess=Preprocess(size=args.image_size, mean=mean, std=std, **clahe).to_dict(), **extra)
    train_run(cfg, out, workers=2, console=Console())


def _auc_row(name: str, y: np.ndarray, score: np.ndarray, seed: int) -> tuple[str, float, list | None, int]:
    from osteopano.train.loop import score_auc

    entry = score_auc(y, score, seed)
    return name, entry["auc"], entry["ci"], entry["n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--work", type=Path, default=Path("/tmp/osteopano-roi-bench"))
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from osteopano.data.dataset import discover

    manifest = _dev_set(args.work, args.n, args.width, args.seed)
    runs = args.work / f"runs-n{args.n}-w{args.width}-s{args.seed}-e{args.epochs}-i{args.image_size}"
    rows = []
    whole, t_whole = _train(manifest, runs / "whole", args)
    roi, t_roi = _train(manifest, runs / "roi", args, input_mode="roi")
    roi_cov, t_cov = _train(manifest, runs / "roi_cov", args, input_mode="roi", covariates=["age", "sex"])
    for name, m, secs in ((f"whole image ({args.image_size} px squashed)", whole, t_whole), ("cortex ROI (2 crops)", roi, t_roi),
                          ("cortex ROI + age, sex", roi_cov, t_cov)):
        rows.append((name, m["auc"]["value"], m["auc"]["ci"], m["n"], secs))
    measured = roi["baselines"].get("mcw_measured") or {}
    rows.append(("MCW-only (-measured MCW)", measured.get("auc"), measured.get("ci"), measured.get("n"),
                 float("nan")))
    age = roi["baselines"]["age"]
    rows.append(("age-only (logistic)", age.get("auc"), age.get("ci"), age.get("n"), float("nan")))
    test = [s for s in discover(manifest).samples if s.get("split") == "test"]
    y = np.asarray([s.label == "osteoporosis" for s in test], int)
    true_mcw = np.asarray([(s.number("mcw_left_mm") + s.number("mcw_right_mm")) / 2 for s in test])
    rows.append((*_auc_row("oracle (-true mean MCW)", y, -true_mcw, args.seed), float("nan")))

    table = Table(title=f"Test AUC on a SYNTHETIC phantom set: {args.n} images, width {args.width}, seed "
                        f"{args.seed}, {args.epochs} epochs max, {args.image_size} px (not clinical evidence)")
    for col in ("input / score", "AUC", "95% CI", "n test", "train s (epochs)"):
        table.add_column(col)
    for name, auc, ci, n, secs in rows:
        table.add_row(name, "-" if auc is None else f"{auc:.3f}",
                      "-" if not ci else f"{ci[0]:.3f}-{ci[1]:.3f}", str(n),
                      "" if secs != secs else f"{secs:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
