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
                                               help="Pixel spacing in mm for every image (else the file's)."),
    measure: bool = typer.Option(False, "--measure", help="Add the mandibular cortical width columns "
                                 "(osteopano.cortex.measure) to each row."),
    resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --out and screen only the "
                                "images not in it yet."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images read and predicted together."),
    age: float | None = typer.Option(None, "--age", min=0.0, max=130.0, help="Patient age in years, for models "
                                     "trained with --covariates age (applies to every image)."),
    sex: str | None = typer.Option(None, "--sex", help="F or M, for models trained with --covariates sex "
                                   "(applies to every image)."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray Data (pip install 'osteopano[scale]'; an .onnx model and "
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
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from osteopano.screen.engines import load
    from osteopano.screen.batch import RowWriter, done_paths, flat_name, iter_image_paths, screen

    if resume and out is None:
        raise DataError("--resume needs --out (the file to continue)")
    if out is not None and out.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"{out}: --out must end in .csv or .jsonl")
    exclude = [d for d in (heatmaps, report) if d is not None]
    if ray is not None:
        from osteopano.screen.ray_data import predict_command

        return predict_command(model, inputs, out, address=None if ray == "local" else ray, resume=resume,
                               batch_size=batch_size, threshold=threshold, pixel_spacing_mm=pixel_spacing,
                               covariates={k: v for k, v in (("age", age), ("sex", sex)) if v is not None},
                               unsupported=[name for name, v in (("--heatmaps", heatmaps), ("--report", report),
                                                                 ("--measure", measure)) if v])
    done = done_paths(out) if resume and out is not None else set()
    n_found = total = 0
    for path in iter_image_paths(inputs, exclude):  # a walk over names only, for the progress bar
        n_found += 1
        total += str(path) not in done
    if n_found == 0:
        raise DataError("no images found in " + ", ".join(str(p) for p in inputs))
    m = load(model, engine=engine, threshold=threshold)
    if heatmaps is not None and not m.supports_heatmaps:
        raise DataError(f"--heatmaps: {m.heatmap_unavailable}")
    todo = (p for p in iter_image_paths(inputs, exclude) if str(p) not in done)
    console = Console(stderr=True)
    if total == 0:
        console.print(f"All {n_found} images are already in {out}; nothing to do.", soft_wrap=True)
        return
    writer = RowWriter(out, extra=measure, resume=resume) if out is not None else None
    rows, n_ok, n_err = [], 0, 0
    try:
        with Progress(TextColumn("screening"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("", total=total)
            for batch in screen(m, todo, batch_size=batch_size, heatmaps_dir=heatmaps, report_dir=report,
                                measure=measure, pixel_spacing_mm=pixel_spacing,
                                name_of=lambda p: flat_name(p, inputs),
                                covariates={k: v for k, v in (("age", age), ("sex", sex)) if v is not None}):
                batch_rows = [item.row for item in batch]
                if writer is not None:
                    writer.write(batch_rows)
                else:
                    rows.extend(batch_rows)
                n_err += sum(item.result.error is not None for item in batch)
                n_ok += sum(item.result.error is None for item in batch)
                progress.advance(task, len(batch))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        typer.echo("")  # keep the table off the progress bar's last line
        Console().print(_table(rows, m.model_id))
    console.print(f"{n_ok} image(s) screened, {n_err} unreadable" + (f"; rows in {out}" if out else "")
                  + (f" (plus {n_found - total} from before)" if done else ""), soft_wrap=True)
    if n_ok == 0:
        raise DataError(f"none of the {n_err} input files could be read")


def _table(rows: list[dict], model_id: str):
    """Rich table of the rows (probability, decision, error)."""
    from rich.table import Table

    table = Table(title=f"Screening with {model_id} (a screening aid, not a diagnosis)")
    for col in ("image", "patient", "probability", "refer for DXA", "error"):
        table.add_column(col)
    for r in rows:
        refer = "" if r["decision"] is None else ("[bold red]yes[/]" if r["decision"] else "no")
        prob = "" if r["probability"] is None else f"{r['probability']:.3f}"
        table.add_row(Path(r["path"]).name if r["path"] else "", r["patient_id"] or "", prob, refer,
                      r["error"] or "")
    return table
