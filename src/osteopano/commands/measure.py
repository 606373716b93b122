"""``osteopano measure``: automatic mandibular cortical width on a batch of radiographs (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def command(
    inputs: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    pixel_spacing: float | None = typer.Option(
        None, "--pixel-spacing", min=0.001, max=5.0,
        help="Pixel spacing in mm for every image (the spacing rule: README, Pixel spacing)."),
    out: Path | None = typer.Option(None, "--out", help="Append one row per image to FILE.csv or FILE.jsonl as "
                                    "it is done (jsonl adds the traced border and endosteal margin polylines)."),
    overlays: Path | None = typer.Option(None, "--overlays", help="Write an overlay PNG per image into DIR."),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML + PDF report per image into DIR."),
    threshold_mm: float = typer.Option(3.0, "--threshold-mm", min=0.1, help="MCW below this is flagged (mm)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --out, measure the images not "
                                "in it yet and again those whose row had an error."),
    frame: int | None = typer.Option(None, "--frame", min=0, help="The frame (0-based) to screen in "
                                     "multi-frame DICOM, multi-page TIFF or animated PNG files, which are refused "
                                     "without it."),
    no_gate: bool = typer.Option(False, "--no-gate", help="Research use: measure images the radiograph gate "
                                 "would refuse (recorded as gate=off)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Images read and measured together."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Images decoded and measured in parallel, "
                                       "each in its own process (default: one per core; 1: in this process). "
                                       "Rows are the same and in input order for any number."),
    age: float | None = typer.Option(None, "--age", min=0.0, max=130.0, help="Patient age in years, for the OST "
                                     "risk index (every image; docs/clinic.md)."),
    sex: str | None = typer.Option(None, "--sex", help="F or M, for the OST risk index (every image)."),
    weight: float | None = typer.Option(None, "--weight", min=2.0, max=400.0, help="Patient weight in kg, for "
                                        "the OST risk index (every image)."),
    dicom_out: Path | None = typer.Option(None, "--dicom-out", help="Write a DICOM SR (TID 1500) and a "
                                          "Secondary Capture of the overlay per DICOM input into DIR."),
    fhir_out: Path | None = typer.Option(None, "--fhir-out", help="Write a FHIR Bundle (DiagnosticReport + "
                                         "Observations) JSON per image into DIR."),
) -> None:
    """Measure the mandibular cortical width below the mental foramen on both sides.

    Classical image analysis (no trained model). Widths are in mm when the pixel spacing is
    known (--pixel-spacing, a manifest.csv beside the images, or the DICOM tag), else in pixels.
    Age, sex and weight (options, manifest columns age/sex/weight_kg, or the DICOM header) add the
    OST risk index and a combined referral rule (docs/clinic.md; not validated by osteopano).
    A screening aid, not a diagnosis.
    """
    from rich.console import Console

    from osteopano.commands._batch import drive, summary
    from osteopano.screen.batch import Outputs, clinic_note, plan_batch, run_batch
    from osteopano.screen.screener import Screener

    from osteopano.prepare.risk import clean_values

    clinical = {k: v for k, v in (("age", age), ("sex", sex), ("weight_kg", weight)) if v is not None}
    clean_values(clinical, "--age/--sex/--weight")   # a bad value stops here, with one line
    outputs = Outputs(out=out, overlays=overlays, report=report, jsonl_polylines=True, dicom_out=dicom_out,
                      fhir_out=fhir_out)
    plan = plan_batch(inputs, outputs, resume)
    console = Console(stderr=True)
    if not plan.todo:
        console.print(f"All {plan.found} images are already in {out}; nothing to do.", soft_wrap=True, markup=False)
        return
    screener = Screener(None, measure=True, threshold_mm=threshold_mm, gate=not no_gate, frame=frame)
    batches = run_batch(screener, inputs, plan, outputs, resume=resume, batch_size=batch_size,
                        pixel_spacing_mm=pixel_spacing, clinical=clinical, workers=workers)
    rows, n_ok, n_err = drive(batches, len(plan.todo), "measuring", console)
    Console().print(_table(rows))
    summary(console, n_ok, n_err, out, plan, "measured")
    if note := clinic_note(outputs):
        console.print(note, soft_wrap=True, markup=False)


def _table(rows: list[dict[str, Any]]):
    """Rich table: one line per image (first 40), then totals; user data is never read as markup."""
    from rich.table import Table
    from rich.text import Text

    from osteopano.render.texts import DISCLAIMER_SHORT

    table = Table(title=f"Mandibular cortical width ({DISCLAIMER_SHORT})")
    for col in ("image", "quality", "MCW right", "MCW left", "MCW", "< threshold"):
        table.add_column(col)
    for r in rows[:40]:
        name = Text(Path(r["path"]).name if r.get("path") else "")
        if r.get("quality") is None:
            table.add_row(name, Text("error", style="red"), Text((r.get("error") or "")[-60:]), "", "", "")
            continue
        low = r.get("decision_low_mcw")
        table.add_row(name, r["quality"], _fmt(r, "right"), _fmt(r, "left"), _fmt(r, None),
                      "" if low is None else str(low))
    measured = [r for r in rows if r.get("quality") is not None]
    qualities = {q: sum(r["quality"] == q for r in measured) for q in ("ok", "low", "failed")}
    table.caption = (f"{len(rows)} files: {len(rows) - len(measured)} not measured, "
                     + ", ".join(f"{n} {q}" for q, n in qualities.items())
                     + f"; {sum(bool(r.get('decision_low_mcw')) for r in measured)} below threshold")
    return table


def _fmt(r: dict[str, Any], side: str | None) -> str:
    key = "mcw" if side is None else f"mcw_{side}"
    if r.get(f"{key}_mm") is not None:
        return f"{r[f'{key}_mm']:.2f} mm"
    if r.get(f"{key}_px") is not None:
        return f"{r[f'{key}_px']:.1f} px"
    return "-"
