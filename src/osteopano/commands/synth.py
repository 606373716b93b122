"""``osteopano synth``: write a synthetic panoramic data set with known ground truth."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer


def command(
    out: Path = typer.Argument(..., help="Output folder (created); images, masks/ and manifest.csv go here."),
    n: int = typer.Option(40, "--n", help="Number of images to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    fmt: str = typer.Option("png", "--format",
                            help="Image format: png (16-bit), dicom (with PixelSpacing) or jpeg (8-bit, as clinics send)."),
    width: int = typer.Option(1600, "--width", help="Image width in pixels (height is ~0.49 x width)."),
    masks: bool = typer.Option(False, "--masks",
                               help="Also write mandible, cortex, teeth and metal masks and a truth JSON per image to OUT/masks/."),
    distractor: list[str] = typer.Option([], "--distractor",
                                         help="NAME=P: probability of one distractor (repeatable; all=P sets every one; "
                                              "names in docs/phantom.md)."),
    clean: bool = typer.Option(False, "--clean", help="Start from no distractors (the clean phantom); --distractor adds."),
    grader_noise: float = typer.Option(None, "--grader-noise",
                                       help="SD of the Klemetti grader's reading error on the erosion scale (default 0.32)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (output does not depend on it)."),
) -> None:
    """Write N SYNTHETIC panoramic radiographs (phantoms) and OUT/manifest.csv with their
    ground truth: age, sex, DXA T-score and label, Klemetti class, cortical widths, measurement
    sites, acquisition parameters. Synthetic images are for testing only, never clinical evidence.
    """
    from osteopano.errors import OsteopanoError
    from osteopano.phantom.distractors import Distractors
    from osteopano.phantom.generate import generate
    from osteopano.phantom.latent import GraderModel

    fmt = {"jpg": "jpeg", "dcm": "dicom"}.get(fmt.lower(), fmt.lower())
    distractors = Distractors.parse(distractor, off=clean)
    if grader_noise is not None and not 0 <= grader_noise <= 5:
        raise OsteopanoError(f"--grader-noise must be in [0, 5], got {grader_noise}")
    grader = GraderModel() if grader_noise is None else GraderModel(noise_sd=grader_noise)
    rows = generate(out, n, seed, fmt=fmt, width=width, masks=masks, workers=max(1, workers),
                    distractors=distractors, grader=grader)
    _print_summary(out, rows)


def oracle_auc(rows: list[dict[str, Any]]) -> float | None:
    """AUC of -mean(MCW left, right) for the DXA label: how well the true width predicts it.
    None when the set holds one class only."""
    y = [r["label"] == "osteoporosis" for r in rows]
    if len(set(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    score = [-(float(r["mcw_left_mm"]) + float(r["mcw_right_mm"])) / 2 for r in rows]
    return float(roc_auc_score(y, score))


def grader_agreement(rows: list[dict[str, Any]]) -> float | None:
    """Share of images whose graded Klemetti class agrees with the true class on C1 vs C2/C3:
    the best Klemetti accuracy a perfect model can reach on this set."""
    pairs = [(r["klemetti"], r.get("klemetti_true")) for r in rows if r.get("klemetti_true")]
    if not pairs:
        return None
    return sum((a == "C1") == (b == "C1") for a, b in pairs) / len(pairs)


def _print_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    labels = Counter(r["label"] for r in rows)
    klemetti = Counter(r["klemetti"] for r in rows)
    per_patient = Counter(r["patient_id"] for r in rows)
    table = Table(title=f"Synthetic phantom set: {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", str(len(rows)))
    table.add_row("patients", f"{len(per_patient)} ({sum(v == 2 for v in per_patient.values())} with two images)")
    table.add_row("label", ", ".join(f"{k} {labels[k]}" for k in ("normal", "osteoporosis")))
    table.add_row("Klemetti (graded)", ", ".join(f"{k} {klemetti[k]}" for k in ("C1", "C2", "C3")))
    agree = grader_agreement(rows)
    if agree is not None:
        table.add_row("grader vs true class", f"{agree:.1%} (C1 vs C2/C3)")
    spacing = [float(r["pixel_spacing_mm"]) for r in rows]
    table.add_row("pixel spacing (mm)", f"{min(spacing):.3f} - {max(spacing):.3f}")
    auc = oracle_auc(rows)
    table.add_row("oracle AUC (-MCW vs DXA)", "n/a (one class only)" if auc is None else f"{auc:.3f}")
    Console().print(table)
