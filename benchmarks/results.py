"""Write docs/results.md from the outputs of `make demo` (SYNTHETIC phantom data, not clinical evidence).

    make results            # = make demo, then: python benchmarks/results.py demo-output --out docs/results.md

Every figure on the page is read from the run folders `make demo` just wrote with the current code:
the internal test split of the Klemetti-labelled development set and the DXA-labelled external set,
and the page names the commit that produced them. Nothing is typed in by hand, so the page cannot
drift from the code: when the code moves the figures, the next `make results` moves the page.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "Makefile", "pyproject.toml")
    return sha + (" (with uncommitted changes to the code)" if dirty else "")


def _ci(entry: dict, digits: int = 3) -> str:
    value, ci = entry.get("value"), entry.get("ci") or [None, None]
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text + (f" ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})" if None not in ci else "")


def _row(label: str, truth: str, m: dict) -> str:
    return (f"| {label} | {truth} | {m['n']} | {_ci(m['accuracy'], 2)} | {_ci(m['sensitivity'])} | "
            f"{_ci(m['specificity'])} | {_ci(m['auc'])} |")


def _oracle_auc(manifest: Path) -> float | None:
    """AUC of -mean(true MCW) for the DXA label over a phantom set (its built-in ceiling for the width)."""
    from sklearn.metrics import roc_auc_score

    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        y = np.array([r["label"] == "osteoporosis" for r in rows])
        mcw = np.array([(float(r["mcw_left_mm"]) + float(r["mcw_right_mm"])) / 2 for r in rows])
    except (KeyError, ValueError):
        return None
    return float(roc_auc_score(y, -mcw)) if 0 < y.sum() < len(y) else None


def render(demo: Path) -> str:
    internal = json.loads((demo / "run" / "metrics.json").read_text())
    external = json.loads((demo / "external-eval" / "metrics.json").read_text())
    cfg = json.loads((demo / "run" / "config.json").read_text())
    dev_oracle = _oracle_auc(demo / "dev" / "manifest.csv")
    ext_oracle = _oracle_auc(demo / "external" / "manifest.csv")
    sizes = internal.get("split_sizes", {})
    n_dev = sum(sum(v.values()) for v in sizes.values())
    versions = cfg.get("versions", {})
    truth = ", ".join(f"{k} -> {v}" for k, v in (cfg.get("label_map") or {}).items()) or "as labelled"
    lines = [
        "# Figures measured on SYNTHETIC data",
        "",
        "Written by `make results` (`benchmarks/results.py`) from the outputs of `make demo`, run with the code",
        f"at commit `{_commit()}`. Every figure here was measured on the synthetic panoramic phantom",
        "(`osteopano synth`): it shows that the software works as designed, **not how it would perform on",
        "patients**. The phantom's Klemetti grades and its link between cortical width and T-score are a model",
        "we wrote (docs/phantom.md).",
        "",
        "## The study's design on the phantom (`make demo`)",
        "",
        f"Development set: {n_dev} usable phantom images (`osteopano synth`, run seed {cfg.get('seed')}), "
        f"trained with the study's protocol (`--preset {cfg.get('preset')}`, {cfg.get('backbone')}, "
        f"{cfg.get('precision_used') or cfg.get('precision')}, {cfg.get('threads')} threads) on the "
        f"`{cfg.get('label_column')}` column ({truth}); external set: a separately generated "
        f"{external['n']}-image set scored against its `{external.get('label_column')}` column (the phantom's "
        "DXA label, T-score ≤ −2.5).",
        "",
        "| evaluation | truth | n | accuracy (95% CI) | sensitivity | specificity | AUC (95% CI) |",
        "|---|---|---|---|---|---|---|",
        _row("internal test split", f"`{cfg.get('label_column')}`", internal),
        _row("external set, the same model", f"`{external.get('label_column')}` (DXA)", external),
        "",
        f"- Training ran {internal.get('epochs_run')} epochs (best epoch {internal.get('best_epoch')}, "
        f"early stopping patience {cfg.get('patience')}); decision threshold "
        f"{internal['threshold_rule']['value']:.3f} ({internal['threshold_rule']['description']}).",
    ]
    if dev_oracle is not None and ext_oracle is not None:
        lines.append(f"- Oracle AUC of −(true mean MCW) for the DXA label: {dev_oracle:.3f} on the development "
                     f"set, {ext_oracle:.3f} on the external set (the phantom's built-in ceiling for the width).")
    age = (external.get("baselines") or {}).get("age_score") or {}
    if age.get("auc") is not None:
        lines.append(f"- External set, age alone as the score: AUC {age['auc']:.3f}.")
    lines += [
        "- The study (Brangakgi & Khadra 2024) reached 85% on Klemetti labels and 79% (23/29) on a DXA-labelled",
        "  external set: a model trained on Klemetti grades loses accuracy against DXA truth, because the",
        "  cortex predicts bone density only imperfectly.",
        "",
        f"Software: osteopano {versions.get('osteopano')}, torch {versions.get('torch')}, timm {versions.get('timm')}.",
        "Two runs of `make demo` on the same machine give identical `metrics.json` files (the thread count is",
        "fixed and recorded in `config.json`); other machines may differ in the last digits.",
        "",
        "Other benchmarks print their figures when run: `benchmarks/roi_vs_whole.py` (whole image vs cortex",
        "ROI vs covariates), `benchmarks/measure_accuracy.py` (MCW on the phantom), `benchmarks/border_real.py`",
        "(the border on real expert-outlined radiographs), `benchmarks/predict_speed.py` (speed).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path, nargs="?", default=ROOT / "demo-output")
    ap.add_argument("--out", type=Path, default=None, help="write here (default: print)")
    args = ap.parse_args()
    if not (args.demo / "run" / "metrics.json").is_file():
        sys.exit(f"error: {args.demo}: no make demo outputs (run make demo first)")
    text = render(args.demo)
    if args.out is None:
        print(text)
        return
    from osteopano.io.files import atomic_write_text

    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
