"""Batch screening of files and folders for ``osteopano predict`` and ``osteopano measure``.

``run_batch`` walks the inputs (``osteopano.io.walk``), screens them through a ``Screener`` a batch
at a time, writes each image's extras (Grad-CAM overlay PNG, cortex overlay PNG, HTML + PDF report)
under unique names (``OutputNames``: relative path and extension kept, nothing overwritten) and
appends each batch's rows to the output (``osteopano.io.rows.RowWriter``) as soon as it is done, so
memory stays flat and an interruption loses at most the batch in flight. ``--resume`` skips the
images already done and screens again those whose row had an error.
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
from osteopano.prepare.spacing import manifest_spacings
from osteopano.screen.prefetch import iter_screen_prefetched
from osteopano.screen.result import ScreeningResult
from osteopano.screen.screener import Screener


@dataclass
class Outputs:
    """Where a batch writes besides its rows (None = not asked for)."""

    out: Path | None = None
    heatmaps: Path | None = None
    report: Path | None = None
    overlays: Path | None = None
    jsonl_polylines: bool = False   # measure: the JSONL rows carry the traced polylines

    def folders(self) -> list[Path]:
        return [d for d in (self.heatmaps, self.report, self.overlays) if d is not None]


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
                           ("--overlays", outputs.overlays)):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise DataError(f"{folder}: {option} must be a folder, and this is a file")
    done, failed = previous_rows(outputs.out) if resume and outputs.out is not None else (set(), set())
    found = list(iter_image_paths(inputs, outputs.folders()))
    if not found:
        raise DataError("no images found in " + ", ".join(str(p) for p in inputs))
    todo = [p for p in found if str(p) not in done]
    return Plan(todo, len(found), len(found) - len(todo), failed & {str(p) for p in todo})


def run_batch(screener: Screener, inputs: list[Path], plan: Plan, outputs: Outputs, *, resume: bool = False,
              batch_size: int = 8, pixel_spacing_mm: float | None = None, covariates: dict[str, Any] | None = None
              ) -> Iterator[list[Screened]]:
    """Screen ``plan.todo``, writing rows and extras; returns an iterator of each batch's ``Screened`` items.
    The output file is checked (and, resuming, its columns compared) before anything is screened."""
    if outputs.heatmaps is not None and not screener.supports_heatmaps:
        raise OsteopanoError(screener.heatmap_unavailable)
    writer = (RowWriter(outputs.out, screener.columns(), resume=resume, drop=plan.retried)
              if outputs.out is not None else None)
    return _batches(screener, inputs, plan, outputs, writer, batch_size, pixel_spacing_mm, covariates)


def _batches(screener: Screener, inputs: list[Path], plan: Plan, outputs: Outputs, writer: RowWriter | None,
             batch_size: int, pixel_spacing_mm: float | None, covariates: dict[str, Any] | None
             ) -> Iterator[list[Screened]]:
    heatmap = outputs.heatmaps is not None or (outputs.report is not None and screener.supports_heatmaps)
    names = OutputNames(inputs, outputs.folders())
    spacings = manifest_spacings(plan.todo)
    try:
        for pairs in iter_screen_prefetched(screener, plan.todo, heatmap=heatmap, batch_size=batch_size,
                                            pixel_spacing_mm=pixel_spacing_mm, spacings=spacings,
                                            covariates=covariates):
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
    if result.measurement is not None and (outputs.overlays is not None or outputs.report is not None):
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
    if problems:
        row["error"] = "; ".join(([row["error"]] if row.get("error") else []) + problems)
    return item


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
