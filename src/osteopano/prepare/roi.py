"""Cortex regions of interest at native resolution, and the clinical covariates (numpy + OpenCV only).

Squashing a ~2900 x 1400 panoramic to 224 x 224 shrinks it 6-13x: a 3 mm cortex
becomes 2-3 pixels and the ~1 mm difference between a normal and a thin cortex
falls below one pixel. An ROI model instead looks at the inferior cortex below
the mental foramen on both sides (Gaudin 2024), cropped at a FIXED scale in mm.

``roi_crops`` cuts, for each side found by ``osteopano.cortex.measure.measure``, a
``size_mm`` = 25 x 12 mm rectangle centred on the measurement site along the
border, rotated so the border runs horizontally with the bone ABOVE, sampled at
``px_per_mm`` (8 px/mm -> 200 x 96 px) from the image's real pixel spacing
(``cv2.warpAffine``), then resized to ``out_px`` x ``out_px`` (the network input).
The border sits ``BORDER_FROM_BOTTOM_MM`` above the crop's lower edge, so each
crop holds ~3 mm of soft tissue, the cortex and ~6 mm of trabecular bone.
The patient's LEFT side (image right) is mirrored, so in both crops the crop's
x axis points along the border towards the midline.

Each crop comes with its 2x3 affine (full-image pixel -> crop pixel, at the
returned crop size); ``crop_to_image`` maps a crop-sized map (a Grad-CAM
heatmap) back onto the full image through it.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from osteopano.errors import OsteopanoError
from osteopano.io.images import Radiograph

SIZE_MM = (25.0, 12.0)          # crop width (along the border) x height (across it)
PX_PER_MM = 8.0                 # sampling of the crop before resizing to the network input
BORDER_FROM_BOTTOM_MM = 3.0     # the inferior border sits this far above the crop's lower edge
SIDES = ("right", "left")       # crop order: patient's right (image left), then patient's left


class RoiError(OsteopanoError):
    """The cortex ROI cannot be cut from this image (no pixel spacing, cortex not located)."""


@dataclass(frozen=True)
class RoiSpec:
    """How the crops are cut; stored in the run config and the ONNX metadata."""

    size_mm: tuple[float, float] = SIZE_MM
    px_per_mm: float = PX_PER_MM

    def to_dict(self) -> dict[str, Any]:
        return {"size_mm": list(self.size_mm), "px_per_mm": self.px_per_mm}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoiSpec:
        return cls(tuple(float(v) for v in d.get("size_mm", SIZE_MM)), float(d.get("px_per_mm", PX_PER_MM)))


def _side_affine(site: Sequence[float], normal: Sequence[float], side: str, spacing_mm: float,
                 size_mm: tuple[float, float], px_per_mm: float) -> np.ndarray:
    """2x3 affine, full-image pixel -> crop pixel (crop sampled at ``px_per_mm``)."""
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    v = -n                                   # crop 'down': out of the bone
    u = np.array([-n[1], n[0]])              # along the border
    toward_midline = 1.0 if side == "right" else -1.0   # patient's right is on the image's left
    if u[0] * toward_midline < 0:
        u = -u                               # the left side comes out mirrored
    w, h = size_mm[0] * px_per_mm, size_mm[1] * px_per_mm
    s = 1.0 / (px_per_mm * spacing_mm)      # image pixels per crop pixel
    centre = np.asarray(site, float) + n * (size_mm[1] / 2 - BORDER_FROM_BOTTOM_MM) / spacing_mm
    # crop -> image: P = centre + (cx - w/2) s u + (cy - h/2) s v
    to_image = np.array([[s * u[0], s * v[0], 0.0], [s * u[1], s * v[1], 0.0]])
    to_image[:, 2] = centre - to_image[:, :2] @ np.array([w / 2, h / 2])
    return cv2.invertAffineTransform(to_image)


def roi_crops(radiograph: Radiograph | np.ndarray, measurement: Any, *, size_mm: tuple[float, float] = SIZE_MM,
              px_per_mm: float = PX_PER_MM, out_px: int | None = None,
              pixel_spacing_mm: float | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The two cortex crops (float32, [0, 1]; order ``SIDES``) and their image->crop affines.

    ``measurement`` is an ``osteopano.cortex.measure.CortexMeasurement`` of this image. The spacing is
    ``pixel_spacing_mm``, else the measurement's, else the radiograph's. Crops are
    ``size_mm * px_per_mm`` pixels (200 x 96 by default), or ``out_px`` x ``out_px`` when given
    (area-resampled; the affine then maps to that grid). RoiError when the spacing is unknown or a
    side was not located (no silent whole-image fallback).
    """
    pixels = np.asarray(getattr(radiograph, "pixels", radiograph), np.float32)
    spacing = (pixel_spacing_mm or getattr(measurement, "pixel_spacing_mm", None)
               or getattr(radiograph, "pixel_spacing_mm", None))
    name = getattr(radiograph, "path", None) or getattr(measurement, "path", None) or "image"
    if not spacing:
        raise RoiError(f"{name}: pixel spacing unknown; the cortex ROI needs it "
                       "(--pixel-spacing MM, or a manifest pixel_spacing_mm column)")
    if getattr(measurement, "quality", None) == "failed":
        raise RoiError(f"{name}: the mandibular cortex could not be located (cortex measurement failed)")
    w, h = round(size_mm[0] * px_per_mm), round(size_mm[1] * px_per_mm)
    crops, affines = [], []
    for side in SIDES:
        m = getattr(measurement, side)
        if not m.located or m.site_xy is None or m.normal is None:
            raise RoiError(f"{name}: the cortex on the patient's {side} side could not be located")
        affine = _side_affine(m.site_xy, m.normal, side, float(spacing), size_mm, px_per_mm)
        crop = cv2.warpAffine(pixels, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if out_px is not None:
            crop = cv2.resize(crop, (out_px, out_px), interpolation=cv2.INTER_AREA)
            affine = np.diag([out_px / w, out_px / h]) @ affine
        crops.append(crop.astype(np.float32))
        affines.append(affine.astype(np.float64))
    return crops, affines


def crop_to_image(values: np.ndarray, affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map a crop-sized float map back onto the full image (``shape`` = (H, W)); 0 outside the crop."""
    h, w = shape
    return cv2.warpAffine(np.asarray(values, np.float32), np.asarray(affine, np.float64), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0)
