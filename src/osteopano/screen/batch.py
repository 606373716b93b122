"""Batch screening: one ``ScreeningResult`` per radiograph, streamed from the inputs to the output file.

Everything here is torch-free (the ONNX path uses it). The pieces:

* ``ScreeningResult`` - what ``Engine.predict`` returns and what a row of
  ``osteopano predict`` holds;
* ``iter_image_paths`` - the inputs (files, and folders searched recursively
  for ``IMAGE_SUFFIXES``), walked lazily so that the memory use does not grow
  with the number of images;
* ``RowWriter`` - appends rows to a CSV or JSONL file as they come (header
  once, flush + fsync after every batch) and, for ``--resume``, reads back the
  paths already written;
* ``screen`` - reads, predicts in small batches and adds the optional Grad-CAM
  overlay PNG, HTML/PDF report and cortical-width columns per image.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osteopano.errors import DataError, OsteopanoError
from osteopano.io.images import IMAGE_SUFFIXES, Radiograph

if TYPE_CHECKING:
    from osteopano.screen.engines import Engine

ROW_COLUMNS = ("path", "patient_id", "probability", "decision", "threshold", "model_id", "error")


@dataclass(frozen=True)
class ScreeningResult:
    """The screening outcome for one radiograph.

    ``decision`` is True (refer for DXA) when ``probability >= threshold``; both are None when the
    image could not be read (``error`` then says why). ``heatmap`` is the Grad-CAM map, float32 (H, W)
    in [0, 1] at the input image's full resolution, only when asked for (torch engine).
    """

    path: str | None
    patient_id: str | None
    probability: float | None
    decision: bool | None
    threshold: float
    model_id: str
    error: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    pixel_spacing_mm: float | None = None

    def to_row(self) -> dict[str, Any]:
        """The row written by ``osteopano predict`` (``ROW_COLUMNS``; probability rounded to 6 places)."""
        return {"path": self.path, "patient_id": self.patient_id,
                "probability": None if self.probability is None else round(self.probability, 6),
                "decision": self.decision, "threshold": self.threshold, "model_id": self.model_id,
                "error": self.error}


# ----------------------------------------------------------------------------- inputs


def iter_image_paths(inputs: Iterable[str | Path], exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Files given directly (whatever their name), then images under each folder (recursive, sorted per
    folder, hidden files and folders skipped, ``exclude`` folders skipped). Lazy; no duplicates.

    A path that does not exist is yielded too, so that it becomes a row with its error.
    """
    skip = [Path(e).resolve() for e in exclude]
    seen: set[Path] = set()
    for item in inputs:
        item = Path(item)
        candidates = _walk(item, skip) if item.is_dir() else iter([item])
        for path in candidates:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                yield path.absolute()


def _walk(root: Path, skip: list[Path]) -> Iterator[Path]:
    """Images under ``root``, depth first, names sorted within each folder (os.scandir, lazy)."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            if not any(path.resolve().is_relative_to(s) for s in skip):
                yield from _walk(path, skip)
        elif entry.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


# ----------------------------------------------------------------------------- output rows


class RowWriter:
    """Append rows to FILE.csv or FILE.jsonl, durably after every batch.

    CSV columns: ``columns`` plus, when ``extra`` is True, the keys of the first row that has more
    than ``columns`` (error rows before it wait in memory so that the header is written once).
    With ``resume`` the existing file is kept (a torn last line is cut off) and its header reused.
    """

    def __init__(self, path: Path, columns: tuple[str, ...] = ROW_COLUMNS, *, extra: bool = False,
                 resume: bool = False):
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise DataError(f"{path}: --out must end in .csv or .jsonl")
        self.path, self.jsonl, self.extra = path, suffix == ".jsonl", extra
        self.header: list[str] | None = None
        self._pending: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            _cut_torn_line(path)
            if not self.jsonl and path.stat().st_size:
                with path.open(newline="", encoding="utf-8") as fh:
                    self.header = next(csv.reader(fh), None)
                if not self.header or "path" not in self.header:
                    raise DataError(f"{path}: not an osteopano predict output (no 'path' column); "
                                    "choose another --out or drop --resume")
            self._fh = path.open("a", newline="", encoding="utf-8")
        else:
            self._fh = path.open("w", newline="", encoding="utf-8")
        self.columns = columns

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` and make them durable (flush + fsync)."""
        if self.jsonl:
            for row in rows:
                self._fh.write(json.dumps(row, default=_json_default) + "\n")
        else:
            self._pending.extend(rows)
            if self.header is None:
                full = [r for r in self._pending if not self.extra or len(r) > len(self.columns)]
                if not full:
                    return
                self.header = list(self.columns) + [k for k in full[0] if k not in self.columns]
                self._write_csv(self._pending, header=True)
            else:
                self._write_csv(self._pending)
            self._pending = []
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _write_csv(self, rows: list[dict[str, Any]], header: bool = False) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.header, extrasaction="ignore", restval="",
                                lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
        self._fh.write(buf.getvalue())

    def close(self) -> None:
        """Write any rows still waiting for a header (with the base columns only) and close."""
        if self._pending:
            new = self.header is None
            self.header = self.header or list(self.columns)
            self._write_csv(self._pending, header=new)
            self._pending = []
        self._fh.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline (a run killed mid-write), so appending stays well-formed."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def done_paths(path: Path) -> set[str]:
    """The ``path`` values already in an output file (CSV or JSONL); empty when it does not exist."""
    if not path.exists():
        return set()
    done: set[str] = set()
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".jsonl":
            for line in fh:
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line
        else:
            done.update(row["path"] for row in csv.DictReader(fh) if row.get("path"))
    return done


# ----------------------------------------------------------------------------- the batch


@dataclass
class Screened:
    """One image's outcome in ``screen``: the CSV/JSONL row and the files written for it."""

    result: ScreeningResult
    row: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def screen(engine: Engine, paths: Iterable[Path], *, batch_size: int = 8, heatmaps_dir: Path | None = None,
           report_dir: Path | None = None, measure: bool = False, pixel_spacing_mm: float | None = None,
           name_of: Callable[[Path], str] = lambda p: p.stem,
           covariates: dict[str, Any] | None = None, workers: int | None = None) -> Iterator[list[Screened]]:
    """Predict ``paths`` in batches of ``batch_size``, yielding each batch's outcomes as soon as it is done.

    ``heatmaps_dir``: a Grad-CAM overlay PNG per image (torch engine); ``report_dir``: an HTML + PDF
    report per image (with the overlay when the engine can make one); ``measure``: the cortical-width
    columns of ``osteopano.cortex.measure.measure`` in each row. Images that cannot be read become rows with
    their error. Only one batch of images is held in memory at a time. ``covariates`` (e.g.
    {'age': 67, 'sex': 'F'}) go to every image, for models that take them. ``workers`` threads
    (default one per core; 1 = none) read and prepare the next images while the network runs
    (``osteopano.screen.prefetch``).
    """
    if heatmaps_dir is not None and not engine.supports_heatmaps:
        raise OsteopanoError(engine.heatmap_unavailable)
    with_heatmap = heatmaps_dir is not None or (report_dir is not None and engine.supports_heatmaps)
    card = engine.card if report_dir is not None else None
    from osteopano.screen.prefetch import predict_prefetched

    keep_pixels = with_heatmap or report_dir is not None or measure
    for pairs in predict_prefetched(engine, paths, heatmap=with_heatmap, batch_size=batch_size,
                                    pixel_spacing_mm=pixel_spacing_mm, covariates=covariates,
                                    workers=workers, keep_pixels=keep_pixels):
        batch = []
        for result, image in pairs:
            item = Screened(result, result.to_row())
            if image is not None:
                _extras(item, image, heatmaps_dir, report_dir, card, measure, pixel_spacing_mm, name_of)
            batch.append(item)
        yield batch


def _extras(item: Screened, image: Radiograph, heatmaps_dir: Path | None, report_dir: Path | None,
            card: dict | None, measure: bool, pixel_spacing_mm: float | None,
            name_of: Callable[[Path], str]) -> None:
    """Overlay PNG, cortical width and report for one readable image; problems go to the row's error."""
    problems: list[str] = []
    overlay = None
    if item.result.heatmap is not None:
        from osteopano.screen.explain import overlay as make_overlay

        overlay = make_overlay(image, item.result.heatmap)
    name = name_of(Path(item.result.path))
    if heatmaps_dir is not None and overlay is not None:
        item.files["heatmap"] = _write_png(heatmaps_dir / f"{name}_gradcam.png", overlay)
    measurement = None
    if measure:
        from osteopano.cortex import measure as cortex

        try:
            measurement = cortex.measure(image, pixel_spacing_mm=pixel_spacing_mm)
            item.row.update({k: v for k, v in measurement.to_row().items() if k != "path"})
        except (OsteopanoError, ValueError) as exc:
            problems.append(f"cortex measurement failed: {exc}")
    if report_dir is not None:
        from osteopano.render.reports import write_report

        try:
            item.files.update(write_report(report_dir, image, item.result, card, overlay, measurement,
                                            stem=name))
        except OsteopanoError as exc:
            problems.append(f"report failed: {exc}")
    if problems:
        item.row["error"] = "; ".join(problems)


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) RGB image (``explain.overlay``'s order) as PNG, atomically."""
    from PIL import Image

    from osteopano.io.files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    return path


def flat_name(path: Path, roots: Iterable[Path]) -> str:
    """A file name for ``path``'s outputs: its path below the input folder holding it, joined by '__'
    (so that same-named images in different sub-folders do not collide); else its stem."""
    resolved = path.resolve()
    for root in roots:
        root = Path(root).resolve()
        if root.is_dir() and resolved.is_relative_to(root):
            return "__".join(resolved.relative_to(root).with_suffix("").parts)
    return path.stem
