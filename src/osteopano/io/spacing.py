"""The one pixel-spacing rule of osteopano, for every command and the web.

Precedence: an explicit option (``--pixel-spacing``, a web form field) > the data's manifest column
``pixel_spacing_mm`` > the file's own metadata (DICOM PixelSpacing / ImagerPixelSpacing, a PNG/TIFF
resolution tag that is plausible) > unknown. A spacing outside ``PLAUSIBLE_MM`` given as an option or
in a manifest is refused with a message (a typo such as 1.0 for 0.1 would move every millimetre);
the file reader already drops implausible metadata. With an unknown spacing, widths are reported in
pixels and decisions that need millimetres are not made.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from osteopano.errors import DataError

PLAUSIBLE_MM = (0.01, 2.0)   # mm per pixel: detectors lie around 0.05-0.2; downscaled copies are coarser
SOURCES = ("option", "manifest", "file", "unknown")


@dataclass(frozen=True)
class Spacing:
    """A resolved pixel spacing (mm/px, None when unknown) and where it came from (``SOURCES``)."""

    mm: float | None
    source: str

    @property
    def known(self) -> bool:
        return self.mm is not None


def check_spacing(value: float, what: str) -> float:
    """``value`` as a float when finite and within ``PLAUSIBLE_MM``, else DataError naming ``what``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what}: pixel spacing {value!r} is not a number") from None
    lo, hi = PLAUSIBLE_MM
    if not math.isfinite(value) or not lo <= value <= hi:
        raise DataError(f"{what}: pixel spacing {value} mm/px is implausible for a panoramic radiograph "
                        f"(expected {lo}-{hi} mm/px)")
    return value


def resolve_spacing(option: float | None = None, manifest: float | None = None, file: float | None = None,
                    *, name: str = "image") -> Spacing:
    """The spacing by the precedence above; DataError for an implausible option or manifest value."""
    if option is not None:
        return Spacing(check_spacing(option, "--pixel-spacing"), "option")
    if manifest is not None:
        return Spacing(check_spacing(manifest, f"{name} (manifest pixel_spacing_mm)"), "manifest")
    if file is not None:
        return Spacing(float(file), "file")
    return Spacing(None, "unknown")


def manifest_rows(files: Iterable[Path]) -> dict[Path, dict[str, str]]:
    """The row of each image listed in a ``manifest.csv`` in its folder or a folder above (resolved path ->
    the row's columns), each manifest read once; an unreadable manifest is passed over (it is optional)."""
    rows: dict[Path, dict[str, str]] = {}
    read: set[Path] = set()
    for path in files:
        for folder in Path(path).resolve().parents:
            manifest = folder / "manifest.csv"
            if manifest in read:
                continue
            read.add(manifest)
            if not manifest.is_file():
                continue
            try:
                with manifest.open(newline="", encoding="utf-8") as fh:
                    for row in csv.DictReader(fh):
                        if row.get("path"):
                            rows.setdefault((manifest.parent / row["path"]).resolve(), row)
            except (OSError, UnicodeDecodeError, csv.Error):
                continue
    return rows


def manifest_spacings(files: Iterable[Path]) -> dict[Path, float]:
    """``pixel_spacing_mm`` of images listed in a manifest (``manifest_rows``); rows without a number are left out."""
    spacings: dict[Path, float] = {}
    for path, row in manifest_rows(files).items():
        try:
            value = float(row.get("pixel_spacing_mm") or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            spacings[path] = value
    return spacings
