"""``osteopano evaluate``: score a trained run on another (external) labelled data set."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    run: Path = typer.Argument(..., help="A run folder written by `osteopano train`."),
    data: Path = typer.Argument(..., help="Manifest CSV, folder holding manifest.csv, or class-folder tree."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default RUN/eval-<data folder name>)."),
    label_column: str = typer.Option("label", help="Column holding the true class: by default the data's "
                                     "`label` (DXA in the phantom), whatever the run was trained on."),
    label_map: str = typer.Option(None, help="Map raw values to the run's classes (default: the run's map "
                                  "when scoring the run's own label column, else none)."),
    threshold: str = typer.Option(None, help="Default: the run's threshold (chosen on its validation split). "
                                  "A number, or 'youden'/'sens:0.9' chosen on THIS data (optimistic)."),
    workers: int = typer.Option(2, min=1, help="Threads decoding and preprocessing images."),
    pixel_spacing: float | None = typer.Option(None, "--pixel-spacing", min=0.001, max=5.0,
                                               help="ROI runs: pixel spacing in mm for every image (the spacing rule: README, Pixel spacing)."),
) -> None:
    """Predict every labelled image of DATA with RUN's model and write metrics.json (AUC, sensitivity,
    specificity with 95% CIs), confusion.png, roc.png and calibration.png. Unreadable files are listed
    and skipped."""
    from rich.console import Console

    from osteopano.data.labels import parse_label_map
    from osteopano.train.evaluate import evaluate_run

    evaluate_run(run, data, out, label_column=label_column,
                 label_map=parse_label_map(label_map) if label_map is not None else None,
                 threshold=threshold, workers=workers, pixel_spacing_mm=pixel_spacing, console=Console())
