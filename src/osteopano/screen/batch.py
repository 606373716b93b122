"""Batch screening of files and folders for ``osteopano predict`` and ``osteopano measure``.

``run_batch`` walks the inputs (``osteopano.io.walk``), screens them through a ``Screener`` a batch
at a time, writes each image's extras (Grad-CAM overlay PNG, cortex overlay PNG, HTML + PDF report,
for a DICOM input the DICOM SR + Secondary Capture, a FHIR Bundle for every measured input) under unique names (``OutputNames``: relative path and extension kept, nothing overwritten) and
appends each batch's rows to the output (``osteopano.io.rows.RowWriter``) as soon as it is done, so
memory stays flat and an interruption loses at most the batch in flight. ``--resume`` skips the
images already done and screens again those whose row had an error. Images are read and staged
``workers`` at a time (``osteopano.screen.prefetch``): on threads, or in processes when the screener
measures the cortex and there are at least ``MIN_IMAGES_PER_PROCESS`` images per worker; the rows are
the same, in input order, for any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osteopano.errors import DataError, OsteopanoError
from osteopano.io.files import atomic_path
from osteopano.io.images import Radiograph
from osteopano.io.rows import RowWriter, check_output_file, previous_rows
from osteopano.io.walk import OutputNames, iter_image_paths
from osteopano.prepare.risk import manifest_values
from osteopano.io.spacing import manifest_spacings
from osteopano.screen.prefetch import default_workers, iter_screen_prefetched
from osteopano.screen.result import ScreeningResult
from osteopano.screen.screener import Screener


# Below this many images per worker, a measuring batch stages on threads rather than processes.
MIN_IMAGES_PER_PROCESS = 4


@dataclass
class Outputs:
    """Where a batch writes besides its rows (None = not asked for)."""

    out: Path | None = None
    heatmaps: Path | None = None
    report: Path | None = None
    overlays: Path | None = None
    jsonl_polylines: bool = False   # measure: the JSONL rows carry the traced polylines
    dicom_out: Path | None = None   # SR (TID 1500) + Secondary Capture of the overlay, DICOM inputs only
    fhir_out: Path | None = None    # FHIR Bundle (DiagnosticReport + Observations), every measured input
    not_dicom: int = 0              # filled during the run: inputs that got no SR/SC (not DICOM)

    def folders(self) -> list[Path]:
        return [d for d in (self.heatmaps, self.report, self.overlays, self.dicom_out, self.fhir_out)
                if d is not None]


@dataclass
class Screened:
    """One image's outcome: its result, its row and the files written for it."""

    result: ScreeningResult
    row: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Plan:
    """What ``run_batch`` will do: the paths to screen and what was skipped (``--resume``)."""

    todo: list[Path]
    found: int
    skipped_done: int = 0
    retried: set[str] = field(default_factory=set)


def plan_batch(inputs: list[Path], outputs: Outputs, resume: bool) -> Plan:
    """Validate the outputs (one-line errors) and list the images to screen."""
    if resume and outputs.out is None:
        raise DataError("--resume needs --out (the file to continue)")
    if outputs.out is not None:
        check_output_file(outputs.out)
    for option, folder in (("--heatmaps", outputs.heatmaps), ("--report", outputs.report),
                           ("--overlays", outputs.overlays), ("--dicom-out", outputs.dicom_out),
                           ("--fhir-out", outputs.fhir_out)):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise DataError(f"{folder}: {option} must be a folder, and this is a file")
    done, failed = previous_rows(outputs.out) if resume and outputs.out is not None else (set(), set())
    found = list(iter_image_paths(inputs, outputs.folders()))
    if not found:
        raise DataError("no images found in " + ", ".join(str(p) for p in inputs))
    todo = [p for p in found if str(p) not in done]
    return Plan(todo, len(found), len(found) - len(todo), failed & {str(p) for p in todo})


def run_batch(screener: Screener, inputs: list[Path], plan: Plan, outputs: Outputs, *, resume: bool = False,
              batch_size: int = 8, pixel_spacing_mm: float | None = None, covariates: dict[str, Any] | None = None,
              clinical: dict[str, Any] | None = None, workers: int | None = None,
              processes: bool | None = None) -> Iterator[list[Screened]]:
    """Screen ``plan.todo``, writing rows and extras; returns an iterator of each batch's ``Screened`` items.
    The output file is checked (and, resuming, its columns compared) before anything is screened.
    ``clinical``: age / sex / weight_kg for every image (the risk index; before manifest and DICOM values).
    ``workers`` images are read and staged at a time (default one per core), on threads or - when the
    screener measures the cortex - processes (``processes``: force either; ``screen.prefetch``); rows
    come out in input order and are the same for any ``workers``."""
    if outputs.heatmaps is not None and not screener.supports_heatmaps:
        raise OsteopanoError(screener.heatmap_unavailable)
    writer = (RowWriter(outputs.out, screener.columns(), resume=resume, drop=plan.retried)
              if outputs.out is not None else None)
    return _batches(screener, inputs, plan, outputs, writer, batch_size, pixel_spacing_mm, covariates, clinical,
                    workers, processes)


def _batches(screener: Screener, inputs: list[Path], plan: Plan, outputs: Outputs, writer: RowWriter | None,
             batch_size: int, pixel_spacing_mm: float | None, covariates: dict[str, Any] | None,
             clinical: dict[str, Any] | None = None, workers: int | None = None,
             processes: bool | None = None) -> Iterator[list[Screened]]:
    heatmap = outputs.heatmaps is not None or (outputs.report is not None and screener.supports_heatmaps)
    names = OutputNames(inputs, outputs.folders())
    spacings = manifest_spacings(plan.todo)
    workers = max(1, min(default_workers() if workers is None else workers, len(plan.todo)))
    if processes is None and len(plan.todo) < MIN_IMAGES_PER_PROCESS * workers:
        processes = False  # a staging process starts in about half a second: not worth it for a few images
    try:
        for pairs in iter_screen_prefetched(screener, plan.todo, heatmap=heatmap, batch_size=batch_size,
                                            pixel_spacing_mm=pixel_spacing_mm, spacings=spacings,
                                            covariates=covariates, clinical=clinical,
                                            clinical_manifest=manifest_values(plan.todo), workers=workers,
                                            processes=processes, keep_images=bool(outputs.folders())):
            batch = [_finish(screener, result, image, outputs, names) for result, image in pairs]
            if writer is not None:
                writer.write([item.row for item in batch])
            yield batch
    finally:
        if writer is not None:
            writer.close()


def _finish(screener: Screener, result: ScreeningResult, image: Radiograph | None, outputs: Outputs,
            names: OutputNames) -> Screened:
    """The row and the extras of one image; problems with extras go to the row's error."""
    row = result.to_row(measured=screener.measure)
    if outputs.jsonl_polylines and result.measurement is not None and outputs.out is not None \
            and outputs.out.suffix.lower() == ".jsonl":
        row.update({k: v for k, v in result.measurement.to_json().items() if k not in row})
    item = Screened(result, row)
    if image is None or result.path is None:
        return item
    problems: list[str] = []
    stem = names.stem(Path(result.path))
    heat = None
    if result.heatmap is not None:
        from osteopano.render.display import heatmap_overlay

        heat = heatmap_overlay(image.pixels, result.heatmap)
        if outputs.heatmaps is not None:
            item.files["heatmap"] = _write_png(outputs.heatmaps / f"{stem}_gradcam.png", heat)
    cortex_rgb = None
    if result.measurement is not None and (outputs.overlays is not None or outputs.report is not None
                                           or outputs.dicom_out is not None):
        import cv2

        from osteopano.cortex.measure import draw_overlay

        cortex_rgb = cv2.cvtColor(draw_overlay(image, result.measurement), cv2.COLOR_BGR2RGB)
        if outputs.overlays is not None:
            item.files["overlay"] = _write_png(outputs.overlays / f"{stem}_cortex.png", cortex_rgb)
    if outputs.report is not None and (result.probability is not None or result.measurement is not None):
        from osteopano.render.reports import write_report

        try:
            item.files.update(write_report(outputs.report, image, result, screener.card, heat,
                                           result.measurement, stem=stem, cortex_overlay=cortex_rgb))
        except OsteopanoError as exc:
            problems.append(f"report failed: {exc}")
    if result.measurement is not None and (outputs.dicom_out is not None or outputs.fhir_out is not None):
        problems += _clinic_outputs(screener, result, image, cortex_rgb, outputs, stem, item.files)
    if problems:
        row["error"] = "; ".join(([row["error"]] if row.get("error") else []) + problems)
    return item


def clinic_note(outputs: Outputs) -> str | None:
    """The summary's one line about inputs that got no DICOM SR/SC (not DICOM files), or None."""
    if outputs.dicom_out is None or not outputs.not_dicom:
        return None
    return (f"{outputs.not_dicom} input(s) are not DICOM files: no SR/SC for them in {outputs.dicom_out}"
            + (" (their FHIR JSON is written)" if outputs.fhir_out is not None else ""))


def _clinic_outputs(screener: Screener, result: ScreeningResult, image: Radiograph, cortex_rgb: np.ndarray | None,
                    outputs: Outputs, stem: str, files: dict[str, Path]) -> list[str]:
    """The DICOM SR + SC (DICOM inputs) and the FHIR Bundle of one measured image; the problems met."""
    source, problems = None, []
    if image.source_format == "dicom":
        import pydicom

        try:  # the header only: the SR/SC copy the patient/study attributes, the pixels are the overlay's
            source = pydicom.dcmread(result.path, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - it was read once already; say what failed, go on
            problems.append(f"DICOM header not re-read ({type(exc).__name__})")
    scored = result.probability is not None
    score = {"model_score": result.probability, "model_threshold": result.threshold if scored else None,
             "model_id": result.model_id if scored else None}
    if outputs.dicom_out is not None and source is None and image.source_format != "dicom":
        outputs.not_dicom += 1
    elif outputs.dicom_out is not None and source is not None:
        from osteopano.render.dicom_out import write_sc, write_sr

        try:
            files["sr"] = write_sr(source, result.measurement, outputs.dicom_out, name=stem, **score)
            if cortex_rgb is not None:
                files["sc"] = write_sc(source, cortex_rgb, outputs.dicom_out, name=stem)
        except (OsteopanoError, ValueError, AttributeError, TypeError) as exc:  # an odd source header
            problems.append(f"DICOM SR/SC failed: {exc}")
    if outputs.fhir_out is not None:
        from osteopano.render.fhir import write_fhir

        try:
            files["fhir"] = write_fhir(result.measurement, outputs.fhir_out, name=stem, source=source, **score)
        except (OsteopanoError, ValueError) as exc:
            problems.append(f"FHIR failed: {exc}")
    return problems


def _write_png(path: Path, image: np.ndarray) -> Path:
    """Write a uint8 RGB (or grey) image as PNG, atomically."""
    import cv2

    out = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        ok, png = cv2.imencode(".png", out)
        if not ok:
            raise OsteopanoError(f"{path}: cannot encode the image as PNG")
        tmp.write_bytes(png.tobytes())
    return path
