"""``osteopano measure``: automatic mandibular cortical width on a batch of radiographs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import typer

from osteopano.errors import DataError, OsteopanoError

CHECKPOINT_EVERY = 20  # rewrite the output file (atomically) after this many images


def command(
    inputs: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    pixel_spacing: float | None = typer.Option(
        None, "--pixel-spacing", min=0.001, max=5.0,
        help="Pixel spacing in mm for every image; overrides a manifest.csv and the file's own spacing."),
    out: Path | None = typer.Option(None, "--out", help="Write one row per image to FILE.csv or FILE.jsonl "
                                    "(jsonl adds the traced border and endosteal margin polylines)."),
    overlays: Path | None = typer.Option(None, "--overlays", help="Write an overlay PNG per image into DIR."),
    threshold_mm: float = typer.Option(3.0, "--threshold-mm", min=0.1, help="MCW below this is flagged (mm)."),
) -> None:
    """Measure the mandibular cortical width below the mental foramen on both sides.

    Classical image analysis (no trained model). Widths are in mm when the pixel spacing is
    known (--pixel-spacing, a manifest.csv beside the images, or the DICOM tag), else in pixels.
    A screening aid, not a diagnosis.
    """
    import cv2
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from osteopano.cortex import measure as cortex
    from osteopano.io.files import atomic_path
    from osteopano.io.images import read_image

    if out is not None and out.suffix.lower() not in (".csv", ".jsonl"):
        raise OsteopanoError(f"{out}: --out must end in .csv or .jsonl")
    files = collect_inputs(inputs, exclude=overlays)
    if not files:
        raise DataError("no images found in " + ", ".join(str(p) for p in inputs))
    spacings = _manifest_spacings(files)
    console = Console(stderr=True)
    records: list[dict[str, Any]] = []
    n_read = 0
    try:
        with Progress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.description}"), console=console) as progress:
            task = progress.add_task("", total=len(files))
            for k, path in enumerate(files, 1):
                progress.update(task, description=path.name)
                record: dict[str, Any] = {"path": str(path), "error": None}
                try:
                    image = read_image(path)
                    n_read += 1
                    spacing, origin = _spacing_for(path, image.pixel_spacing_mm, pixel_spacing, spacings)
                    m = cortex.measure(image, pixel_spacing_mm=spacing, threshold_mm=threshold_mm)
                    record.update(m.to_json() if _is_jsonl(out) else m.to_row())
                    record["spacing_origin"] = origin
                    if overlays is not None:
                        with atomic_path(overlays / _overlay_name(path, inputs)) as tmp:
                            if not cv2.imwrite(str(tmp), cortex.draw_overlay(image, m)):
                                raise OsteopanoError(f"{overlays}: cannot write overlay")
                except OsteopanoError as exc:
                    record["error"] = str(exc)
                records.append(record)
                progress.advance(task)
                if out is not None and k % CHECKPOINT_EVERY == 0:
                    _write(out, records)
    finally:
        if out is not None and records:
            _write(out, records)
    console.print(_summary(records))
    if n_read == 0:
        raise DataError(f"none of the {len(files)} input files could be read")


def collect_inputs(inputs: list[Path], exclude: Path | None = None) -> list[Path]:
    """Files given directly, plus images found recursively in the folders given (sorted, no duplicates).

    A path that does not exist is kept so that it is reported as a row with its error.
    """
    from osteopano.io.images import IMAGE_SUFFIXES

    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            for p in sorted(item.rglob("*")):
                if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not any(part.startswith(".") for part in p.relative_to(item).parts)
                        and not (skip is not None and p.resolve().is_relative_to(skip))):
                    found.append(p)
        else:
            found.append(item)
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def _manifest_spacings(files: list[Path]) -> dict[Path, float]:
    """``pixel_spacing_mm`` of images listed in a manifest.csv in their folder or a folder above."""
    spacings: dict[Path, float] = {}
    manifests = {m for f in files for m in (d / "manifest.csv" for d in f.resolve().parents) if m.is_file()}
    for manifest in manifests:
        try:
            with manifest.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    try:
                        value = float(row.get("pixel_spacing_mm") or "nan")
                    except ValueError:
                        continue
                    if row.get("path") and 0 < value < 5:
                        spacings.setdefault((manifest.parent / row["path"]).resolve(), value)
        except (OSError, UnicodeDecodeError, csv.Error):
            continue  # a manifest is optional; an unreadable one is ignored
    return spacings


def _spacing_for(path: Path, from_file: float | None, option: float | None,
                 manifest: dict[Path, float]) -> tuple[float | None, str]:
    """Spacing to pass to ``measure`` and its origin: option > manifest > the file's own > unknown."""
    if option is not None:
        return option, "option"
    if path.resolve() in manifest:
        return manifest[path.resolve()], "manifest"
    return None, "file" if from_file else "unknown"


def _overlay_name(path: Path, inputs: list[Path]) -> str:
    """Overlay file name: the path relative to its input folder, flattened, so names do not collide."""
    for root in inputs:
        if root.is_dir() and path.resolve().is_relative_to(root.resolve()):
            rel = path.resolve().relative_to(root.resolve())
            return "__".join(rel.with_suffix("").parts) + "_cortex.png"
    return path.stem + "_cortex.png"


def _is_jsonl(out: Path | None) -> bool:
    return out is not None and out.suffix.lower() == ".jsonl"


def _write(out: Path, records: list[dict[str, Any]]) -> None:
    """Write all records so far, atomically (CSV columns: the union in first-seen order)."""
    from osteopano.io.files import atomic_write_text

    if _is_jsonl(out):
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
        return
    columns: list[str] = ["path", "error"]
    for r in records:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
    atomic_write_text(out, buf.getvalue())


def _summary(records: list[dict[str, Any]]):
    """Rich table: one line per image (first 40), then totals."""
    from rich.table import Table

    table = Table(title="Mandibular cortical width (screening aid, not a diagnosis)")
    for col in ("image", "quality", "MCW right", "MCW left", "MCW", "Klemetti", "< threshold"):
        table.add_column(col)
    for r in records[:40]:
        name = Path(r["path"]).name
        if r["error"]:
            table.add_row(name, "[red]error[/red]", r["error"][-60:], "", "", "", "")
            continue
        table.add_row(name, r["quality"], _fmt(r, "right"), _fmt(r, "left"), _fmt(r, None),
                      r["klemetti_estimate"] or "", "" if r["decision_low_mcw"] is None else str(r["decision_low_mcw"]))
    ok = [r for r in records if not r["error"]]
    qualities = {q: sum(r["quality"] == q for r in ok) for q in ("ok", "low", "failed")}
    table.caption = (f"{len(records)} files: {len(records) - len(ok)} unreadable, "
                     + ", ".join(f"{n} {q}" for q, n in qualities.items())
                     + f"; {sum(bool(r['decision_low_mcw']) for r in ok)} below threshold")
    return table


def _fmt(r: dict[str, Any], side: str | None) -> str:
    key = "mcw" if side is None else f"mcw_{side}"
    if r.get(f"{key}_mm") is not None:
        return f"{r[f'{key}_mm']:.2f} mm"
    if r.get(f"{key}_px") is not None:
        return f"{r[f'{key}_px']:.1f} px"
    return "-"
