"""``osteopano inspect``: check a data set before training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from osteopano.data.dataset import discover, inspect_dataset
from osteopano.errors import DataError


def command(
    data: Path = typer.Argument(
        ..., help="A folder of class subfolders, a CSV manifest (path,label,...), "
        "or a folder holding manifest.csv."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the full report as JSON on stdout (nothing else)."
    ),
    allow_duplicates: bool = typer.Option(
        False, "--allow-duplicates", help="Record identical images under different patients or labels, "
        "repeated or conflicting rows in the report instead of refusing the data set."
    ),
    no_gate: bool = typer.Option(False, "--no-gate", help="Do not run the radiograph gate on the images."),
) -> None:
    """Check a data set: class counts, patients, image sizes and spacing, unreadable files,
    exact duplicates and patients with conflicting labels.

    Exits 0 when at least one readable, labelled image exists; otherwise exits 2.
    """
    from osteopano.prepare.gate import check_radiograph

    ds = discover(data, allow_duplicates=allow_duplicates)
    report = inspect_dataset(ds, progress=not as_json, gate=None if no_gate else check_radiograph)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    if report["usable_labelled"] == 0:
        raise DataError(
            f"{data}: no usable labelled images ({report['n_images']} found, "
            f"{len(report['unreadable'])} unreadable, {report['unlabelled']} without a label)"
        )


def _span(rng: dict[str, float] | None, fmt: str = "{}") -> str:
    if rng is None:
        return "unknown"
    lo, hi = fmt.format(rng["min"]), fmt.format(rng["max"])
    return lo if lo == hi else f"{lo} - {hi}"


def _print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    source = report["manifest"] or report["root"]
    provenance = " - SYNTHETIC phantom data" if report.get("synthetic") else ""
    overview = Table(title=f"Data set: {source} ({report['kind']}){provenance}", show_header=False)
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("images", str(report["n_images"]))
    overview.add_row("usable (readable)", str(report["usable"]))
    overview.add_row("usable with a label", str(report["usable_labelled"]))
    overview.add_row("without a label", str(report["unlabelled"]))
    overview.add_row("patients", str(report["n_patients"]))
    overview.add_row("patients with >1 image", str(report["patients_with_multiple_images"]))
    overview.add_row("width (px)", _span(report["width"]))
    overview.add_row("height (px)", _span(report["height"]))
    spacing = _span(report["pixel_spacing_mm"], "{:.4g}")
    overview.add_row("pixel spacing (mm)", f"{spacing} ({report['n_with_spacing']} images)")
    overview.add_row("formats", ", ".join(f"{k}: {v}" for k, v in report["formats"].items()) or "-")
    depths = ", ".join(f"{k}: {v}" for k, v in report["bit_depths"].items())
    overview.add_row("bit depths", depths or "-")
    console.print(overview)

    classes = Table(title="Classes")
    classes.add_column("label")
    classes.add_column("images", justify="right")
    classes.add_column("usable", justify="right")
    for label, count in report["classes"].items():
        classes.add_row(escape(label), str(count), str(report["usable_classes"].get(label, 0)))
    console.print(classes)

    if report["unreadable"]:
        bad = Table(title=f"Unreadable files ({len(report['unreadable'])})")
        bad.add_column("file")
        bad.add_column("reason")
        for item in report["unreadable"]:
            bad.add_row(escape(item["path"]), escape(item["reason"]))
        console.print(bad)
    for group in report["duplicates"]:
        console.print(f"[yellow]duplicate images:[/] {escape(', '.join(group))}")
    for item in report["mixed_label_patients"]:
        console.print(
            f"[yellow]patient {escape(item['patient_id'])} has different labels:[/] "
            f"{escape(', '.join(item['labels']))}"
        )
    if report["skipped_files"]:
        console.print(f"skipped {len(report['skipped_files'])} non-image file(s)")
