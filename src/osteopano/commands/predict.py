"""``osteopano predict``: screen a batch of radiographs with a trained model (run folder or .onnx file)."""

from __future__ import annotations

from pathlib import Path

import typer

from osteopano.errors import DataError


def command(
    model: Path = typer.Argument(..., help="A training run folder or an .onnx file from `osteopano export`."),
    inputs: list[Path] = typer.Argument(..., help="Image files (any name) and folders (searched recursively "
                                        "for .png .jpg .jpeg .bmp .tif .tiff .dcm .dicom)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Append one row per image to FILE.csv or "
                                    "FILE.jsonl as it is done (an existing file is replaced unless --resume). "
                                    "Without it a table is printed."),
    heatmaps: Path | None = typer.Option(None, "--heatmaps", help="Write a Grad-CAM overlay PNG per image "
                                         "(full resolution) into DIR. Torch engine only."),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML + PDF report per image into DIR."),
    engine: str = typer.Option("auto", "--engine", help="auto | torch | onnx (auto: onnx for an .onnx file; "
                               "for a run folder torch when installed, else RUN/model.onnx)."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                           help="Decision threshold instead of the model's own."),
    pixel_spacing: float | None = typer.Option(None, "--pixel-spacing", min=0.001, max=5.0,
                                               help="Pixel spacing in mm for every image (the spacing rule: README, Pixel spacing)."),
    measure: bool = typer.Option(False, "--measure", help="Add the mandibular cortical width columns "
                                 "(osteopano.cortex.measure) to each row."),
    resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --out, screen the images not in it "
                                "yet and again those whose row had an error."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images read and predicted together."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Images decoded and prepared in parallel "
                                       "while the network runs (default: one per core; threads, or processes "
                                       "with --measure; docs/speed.md). Rows are the same for any number."),
    frame: int | None = typer.Option(None, "--frame", min=0, help="The frame (0-based) to screen in "
                                     "multi-frame DICOM, multi-page TIFF or animated PNG files, which are refused "
                                     "without it."),
    no_gate: bool = typer.Option(False, "--no-gate", help="Research use: score images the radiograph gate "
                                 "would refuse (recorded as gate=off in every row)."),
    age: float | None = typer.Option(None, "--age", min=0.0, max=130.0, help="Patient age in years, for models "
                                     "trained with --covariates age and the OST risk index (every image)."),
    sex: str | None = typer.Option(None, "--sex", help="F or M, for models trained with --covariates sex "
                                   "and the OST risk index (applies to every image)."),
    weight: float | None = typer.Option(None, "--weight", min=2.0, max=400.0, help="Patient weight in kg, for "
                                        "the OST risk index with --measure (docs/clinic.md; every image)."),
    dicom_out: Path | None = typer.Option(None, "--dicom-out", help="Write a DICOM SR (TID 1500) and a "
                                          "Secondary Capture of the overlay per DICOM input into DIR "
                                          "(implies --measure)."),
    fhir_out: Path | None = typer.Option(None, "--fhir-out", help="Write a FHIR Bundle (DiagnosticReport + "
                                         "Observations) JSON per image into DIR (implies --measure)."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray Data (pip install 'osteopano\\[scale]'; an .onnx model and "
                                   "--out FILE.csv/.jsonl): 'local' starts a Ray on this machine (or joins "
                                   "RAY_ADDRESS's), 'auto' or HOST:6379 a running cluster."),
) -> None:
    """Screen radiographs for signs of osteoporosis: probability and refer-for-DXA decision per image.

    Images are read and predicted a batch at a time and each batch's rows are appended to --out at once
    (memory stays flat however many images). An unreadable file becomes a row with its error and the
    batch goes on; the exit status is 0 unless no image at all could be read. A screening aid, not a
    diagnosis; a model trained on the synthetic phantom says nothing about real patients.
    Cortex-ROI models need each image's pixel spacing (the file's, or --pixel-spacing); an image whose
    cortex is not found gets an error row. Covariate models need --age/--sex (no imputation).
    """
    from rich.console import Console

    from osteopano.commands._batch import drive, summary
    from osteopano.screen.batch import Outputs, clinic_note, plan_batch, run_batch
    from osteopano.screen.screener import load

    from osteopano.prepare.risk import clean_values

    if ray is not None:
        from osteopano.screen.ray_data import predict_command

        return predict_command(model, inputs, out, address=None if ray == "local" else ray, resume=resume,
                               batch_size=batch_size, threshold=threshold, pixel_spacing_mm=pixel_spacing,
                               gate=not no_gate, covariates={k: v for k, v in (("age", age), ("sex", sex)) if v is not None},
                               unsupported=[name for name, v in (("--heatmaps", heatmaps), ("--report", report),
                                                                 ("--measure", measure), ("--weight", weight),
                                                                 ("--dicom-out", dicom_out), ("--fhir-out", fhir_out))
                                            if v])
    clinical = {k: v for k, v in (("age", age), ("sex", sex), ("weight_kg", weight)) if v is not None}
    clean_values(clinical, "--age/--sex/--weight")   # a bad value stops here, with one line
    outputs = Outputs(out=out, heatmaps=heatmaps, report=report, dicom_out=dicom_out, fhir_out=fhir_out)
    measure = measure or dicom_out is not None or fhir_out is not None
    plan = plan_batch(inputs, outputs, resume)
    console = Console(stderr=True)
    if not plan.todo:
        console.print(f"All {plan.found} images are already in {out}; nothing to do.", soft_wrap=True, markup=False)
        return
    screener = load(model, engine=engine, threshold=threshold, measure=measure, gate=not no_gate, frame=frame)
    if heatmaps is not None and not screener.supports_heatmaps:
        raise DataError(f"--heatmaps: {screener.heatmap_unavailable}")
    covariates = {k: v for k, v in (("age", age), ("sex", sex)) if v is not None}
    batches = run_batch(screener, inputs, plan, outputs, resume=resume, batch_size=batch_size,
                        pixel_spacing_mm=pixel_spacing, covariates=covariates, clinical=clinical, workers=workers)
    rows, n_ok, n_err = drive(batches, len(plan.todo), "screening", console)
    if out is None:
        typer.echo("")  # keep the table off the progress bar's last line
        Console().print(_table(rows, screener.model_id))
    summary(console, n_ok, n_err, out, plan, "screened")
    if note := clinic_note(outputs):
        console.print(note, soft_wrap=True, markup=False)


def _table(rows: list[dict], model_id: str):
    """Rich table of the rows (probability, decision, error); user data is never read as markup."""
    from rich.table import Table
    from rich.text import Text

    from osteopano.render.texts import DISCLAIMER_SHORT

    table = Table(title=Text(f"Screening with {model_id} ({DISCLAIMER_SHORT})"))
    for col in ("image", "patient", "probability", "refer for DXA", "error"):
        table.add_column(col)
    for r in rows:
        refer = Text("") if r["decision"] is None else (Text("yes", style="bold red") if r["decision"] else Text("no"))
        prob = "" if r["probability"] is None else f"{r['probability']:.3f}"
        table.add_row(Text(Path(r["path"]).name if r["path"] else ""), Text(r["patient_id"] or ""), prob, refer,
                      Text(r["error"] or ""))
    return table
