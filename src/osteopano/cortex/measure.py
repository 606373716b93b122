"""Automatic mandibular cortical width (MCW) measurement on a panoramic radiograph.

Classical image analysis, no trained model:

1. The image is resampled to a 0.5 mm working grid and the inferior border of the mandible
   is traced on each side of the midline by dynamic programming over the columns on the
   vertical gradient (bright bone above, dark soft tissue below), leaving out the midline
   zone where the spine ghost and chin soft tissue confuse it (:mod:`osteopano.cortex.measure.trace`).
2. Intensity profiles along the border normals, sampled at the full input resolution, give
   the periosteal (outer) and endosteal (inner) edges of the bright cortical band as
   half-maximum crossings; their distance is the cortical width perpendicular to the border.
3. The measurement site below the mental foramen is the foramen itself when a dark oval is
   found above the border in the premolar region, else a fixed distance from the midline
   (``site_method``). The side's MCW is the median width over a few mm around the site.
4. Irregularity of the endosteal margin and dark holes inside the band give an erosion score
   and a Klemetti-like class; edge strength, symmetry and plausibility give a confidence.

Widths are in mm when the pixel spacing is known (argument > the file's own > unknown);
with an unknown spacing the algorithm assumes a typical panoramic field height for its
internal scales and reports the width in pixels only, flagged ``spacing_source='unknown'``.
Sides are the PATIENT's: the patient's right is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from osteopano.cortex import trace as ct
from osteopano.errors import OsteopanoError
from osteopano.io.images import Radiograph

ASSUMED_FIELD_HEIGHT_MM = 145.0  # typical panoramic image height, for internal scales when spacing is unknown
SITE_FROM_MIDLINE_MM = 39.5      # anatomical fallback: site this far (horizontally) from the midline
SITE_HALF_STRETCH_MM = 2.5       # MCW = median over +-this (arc length) around the site
EROSION_HALF_STRETCH_MM = 10.0   # erosion is judged over +-this around the site
ROUGH_SMOOTH_MM = 3.0            # endosteal roughness = residual after smoothing at this scale
ROUGH_REF_MM = 0.4               # roughness counted as full erosion
POROSITY_REF = 0.15              # porosity counted as full erosion
KLEMETTI_CUTS = (0.3, 0.68)      # erosion score -> C1 | C2 | C3
PLAUSIBLE_MM = (1.0, 8.0)        # widths outside are implausible for an adult mandible
MIN_RISE_MM = 5.0                # the border must rise at least this much from the chin zone outwards
FAIL_CONFIDENCE = 0.15           # below: 'failed' (widths kept for inspection, no decision)
OK_CONFIDENCE = 0.6              # quality 'ok' at or above, 'low' below (and 'failed' if nothing found)


@dataclass
class SideMeasurement:
    """The measurement on one side of the patient (``side`` = 'right' | 'left')."""

    side: str
    located: bool = False
    mcw_mm: float | None = None
    mcw_px: float | None = None
    site_xy: tuple[float, float] | None = None    # on the periosteal (outer) edge, input pixels
    normal: tuple[float, float] | None = None     # unit vector into the bone, image x right / y down
    border: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))     # periosteal edge polyline
    endosteal: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # endosteal margin polyline
    erosion_score: float | None = None            # 0 = smooth, solid cortex ... 1 = heavily eroded
    roughness_mm: float | None = None
    porosity: float | None = None
    site_method: str | None = None                # 'mental_foramen' | 'fixed_distance'
    confidence: float = 0.0


@dataclass
class CortexMeasurement:
    """Both sides and the overall judgement. ``right`` is on the image's left half."""

    right: SideMeasurement
    left: SideMeasurement
    mcw_mm: float | None
    mcw_px: float | None
    klemetti_estimate: str | None   # 'C1' | 'C2' | 'C3'
    quality: str                    # 'ok' | 'low' | 'failed' (nothing found, or confidence < FAIL_CONFIDENCE)
    confidence: float
    decision: bool | None           # mcw_mm < threshold_mm; None when spacing unknown or failed
    spacing_source: str             # 'argument' | 'file' | 'unknown'
    pixel_spacing_mm: float | None
    threshold_mm: float
    path: str | None = None
    notes: list[str] = field(default_factory=list)

    def sides(self) -> tuple[SideMeasurement, SideMeasurement]:
        return self.right, self.left

    def to_row(self) -> dict[str, Any]:
        """Flat, CSV-ready record (no polylines)."""
        row: dict[str, Any] = {
            "path": self.path,
            "quality": self.quality,
            "confidence": _r(self.confidence, 3),
            "mcw_mm": _r(self.mcw_mm),
            "mcw_px": _r(self.mcw_px),
            "decision_low_mcw": self.decision,
            "threshold_mm": self.threshold_mm,
            "klemetti_estimate": self.klemetti_estimate,
            "spacing_source": self.spacing_source,
            "pixel_spacing_mm": self.pixel_spacing_mm,
        }
        for s in self.sides():
            p = s.side
            row[f"located_{p}"] = s.located
            row[f"mcw_{p}_mm"] = _r(s.mcw_mm)
            row[f"mcw_{p}_px"] = _r(s.mcw_px)
            row[f"erosion_{p}"] = _r(s.erosion_score, 3)
            row[f"site_{p}_x"] = _r(s.site_xy[0], 1) if s.site_xy else None
            row[f"site_{p}_y"] = _r(s.site_xy[1], 1) if s.site_xy else None
            row[f"site_method_{p}"] = s.site_method
        row["notes"] = "; ".join(self.notes)
        return row

    def to_json(self) -> dict[str, Any]:
        """The row plus, per side, the traced border and endosteal margin (~1 point/mm, input pixels)."""
        out = self.to_row()
        step = max(1, round(1.0 / ct.BORDER_STEP_MM))
        for s in self.sides():
            out[f"side_{s.side}"] = {
                "located": s.located,
                "site_xy": _r2(s.site_xy),
                "normal": _r2(s.normal, 4),
                "site_method": s.site_method,
                "roughness_mm": _r(s.roughness_mm, 3),
                "porosity": _r(s.porosity, 3),
                "confidence": _r(s.confidence, 3),
                "border": np.round(s.border[::step], 1).tolist(),
                "endosteal": np.round(s.endosteal[::step], 1).tolist(),
            }
        return out


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _r2(v: tuple[float, float] | None, nd: int = 1) -> list[float] | None:
    return None if v is None else [round(float(v[0]), nd), round(float(v[1]), nd)]


def resolve_spacing(image: Radiograph, pixel_spacing_mm: float | None) -> tuple[float | None, str]:
    """Pixel spacing and where it came from: the argument, else the file, else unknown."""
    if pixel_spacing_mm is not None:
        if not 0.0 < pixel_spacing_mm < 5.0:
            raise OsteopanoError(f"pixel spacing {pixel_spacing_mm} mm is not plausible (expected 0-5 mm)")
        return float(pixel_spacing_mm), "argument"
    if image.pixel_spacing_mm:
        return float(image.pixel_spacing_mm), "file"
    return None, "unknown"


def measure(image: Radiograph, *, pixel_spacing_mm: float | None = None, threshold_mm: float = 3.0) -> CortexMeasurement:
    """Measure the mandibular cortical width below the mental foramen on both sides."""
    spacing, source = resolve_spacing(image, pixel_spacing_mm)
    pixels = ct.normalise(np.asarray(image.pixels, dtype=np.float32))
    h, w = pixels.shape
    work_spacing = spacing if spacing is not None else ASSUMED_FIELD_HEIGHT_MM / h
    midline = ct.find_midline(pixels, work_spacing)
    # Image left half = patient's right.
    right = _measure_side(pixels, work_spacing, midline, -1, "right")
    left = _measure_side(pixels, work_spacing, midline, +1, "left")
    sides = [s for s in (right, left) if s.located]
    notes: list[str] = []
    if spacing is None:
        notes.append("pixel spacing unknown: widths in pixels only")
        for s in (right, left):
            s.mcw_mm = None  # measured on the assumed internal scale only
    if not sides:
        notes.append("inferior border / cortex not found")
        return CortexMeasurement(right, left, None, None, None, "failed", 0.0, None, source, spacing,
                                 threshold_mm, image.path, notes)
    widths_px = [s.mcw_px for s in sides]
    mcw_px = float(np.mean(widths_px))
    mcw_mm = mcw_px * spacing if spacing is not None else None
    # A panoramic image is near mirror-symmetric about the midline; a crop or a foreign image is not.
    conf = float(np.mean([s.confidence for s in (right, left)])) * float(np.clip((midline.score - 0.35) / 0.3, 0, 1))
    if midline.score < 0.5:
        notes.append("image not left-right symmetric (cropped?)")
    if len(sides) == 2:
        a, b = widths_px
        asym = abs(a - b) / max(a + b, 1e-9) * 2  # relative difference of the two sides
        conf *= float(np.clip(1.0 - max(0.0, asym - 0.3), 0.0, 1.0))
        if asym > 0.5:
            notes.append("sides differ by more than 50%")
    else:
        notes.append("only one side located")
    mm_assumed = mcw_px * work_spacing
    if not PLAUSIBLE_MM[0] <= mm_assumed <= PLAUSIBLE_MM[1]:
        conf *= 0.5
        notes.append("implausible width")
    quality = "ok" if conf >= OK_CONFIDENCE and len(sides) == 2 else "low" if conf >= FAIL_CONFIDENCE else "failed"
    erosion = float(np.mean([s.erosion_score for s in sides]))
    klemetti = "C1" if erosion < KLEMETTI_CUTS[0] else "C2" if erosion < KLEMETTI_CUTS[1] else "C3"
    decision = bool(mcw_mm < threshold_mm) if mcw_mm is not None and quality != "failed" else None
    return CortexMeasurement(right, left, mcw_mm, mcw_px, klemetti, quality, conf, decision, source, spacing,
                             threshold_mm, image.path, notes)


def _measure_side(pixels: np.ndarray, spacing: float, midline: ct.Midline, direction: int,
                  name: str) -> SideMeasurement:
    """Trace, read the band and measure one side; ``direction`` -1 = image left half."""
    out = SideMeasurement(side=name)
    h = pixels.shape[0]
    x_low = midline.x0 + np.tan(midline.tilt_rad) * (0.8 * h - midline.y0)  # midline near the border
    trace = ct.trace_border(pixels, spacing, x_low, direction)
    if trace is None or len(trace.xy) < 10:
        return out
    prof, t = ct.profiles(pixels, trace, spacing)
    trace = ct.refine_trace(trace, ct.read_band(prof, t), spacing)
    if trace is None:
        return out
    prof, t = ct.profiles(pixels, trace, spacing)
    band = ct.read_band(prof, t)
    valid = np.isfinite(band.width_mm)
    outer_t = _fill(band.outer_t, valid)
    out.border = trace.xy + trace.normals * (outer_t / spacing)[:, None]
    out.endosteal = (trace.xy + trace.normals * (band.inner_t / spacing)[:, None])[valid]
    idx, method = _find_site(pixels, trace, spacing, np.abs(midline.horizontal_distance(trace.xy)) * spacing)
    out.site_method = method
    near = np.abs(trace.arc_mm - trace.arc_mm[idx]) <= SITE_HALF_STRETCH_MM
    ok = near & valid
    if ok.sum() < max(3, 0.3 * near.sum()):
        return out
    width_mm = float(np.median(band.width_mm[ok]))
    out.located = True
    out.mcw_mm = width_mm
    out.mcw_px = width_mm / spacing
    out.site_xy = (float(out.border[idx, 0]), float(out.border[idx, 1]))
    out.normal = (float(trace.normals[idx, 0]), float(trace.normals[idx, 1]))
    out.roughness_mm, out.porosity, out.erosion_score = _erosion(trace, band, idx)
    # Confidence: edge strength of the trace, share of valid profiles at the site, spread there.
    spread = float(np.subtract(*np.percentile(band.width_mm[ok], [75, 25]))) / max(width_mm, 1e-6)
    # Shape: the inferior border of the body rises from the chin toward the angle and runs the
    # whole traced stretch (an upside-down or cropped image fails this).
    rise_mm = float(trace.xy[0, 1] - trace.xy[-1, 1]) * spacing
    length_mm = float(trace.arc_mm[-1])
    shape = np.clip((rise_mm - MIN_RISE_MM) / 10.0, 0, 1) * np.clip((length_mm - 30.0) / 30.0, 0, 1)
    out.confidence = float(np.clip(trace.edge_strength, 0, 1) * (ok.sum() / near.sum())
                           * np.clip(1.2 - spread, 0, 1) * shape)
    return out


def _fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Interpolate missing values along the polyline (0 when none valid)."""
    if not valid.any():
        return np.zeros_like(values)
    i = np.arange(values.size)
    return np.interp(i, i[valid], values[valid])


def _find_site(pixels: np.ndarray, trace: ct.Trace, spacing: float, dist_mm: np.ndarray) -> tuple[int, str]:
    """Index on the trace of the measurement site, and how it was found: below a clearly visible
    mental foramen, else at ``SITE_FROM_MIDLINE_MM`` from the symmetry axis."""
    found = ct.find_foramen(pixels, trace, spacing, dist_mm)
    if found is not None:
        return found[0], "mental_foramen"
    return int(np.argmin(np.abs(dist_mm - SITE_FROM_MIDLINE_MM))), "fixed_distance"


def _erosion(trace: ct.Trace, band: ct.Band, idx: int) -> tuple[float, float, float]:
    """Endosteal roughness (mm), cortical porosity and the combined erosion score in [0, 1]."""
    near = (np.abs(trace.arc_mm - trace.arc_mm[idx]) <= EROSION_HALF_STRETCH_MM) & np.isfinite(band.width_mm)
    inner = band.inner_t[near]
    sigma = ROUGH_SMOOTH_MM / ct.BORDER_STEP_MM
    rough = float(np.std(inner - ndimage.gaussian_filter1d(inner, sigma, mode="nearest"))) if inner.size > 3 else 0.0
    poro = float(np.nanmean(band.porosity[near])) if near.any() else 0.0
    score = 0.5 * min(rough / ROUGH_REF_MM, 1.0) + 0.5 * min(poro / POROSITY_REF, 1.0)
    return rough, poro, score


def draw_overlay(image: Radiograph, measurement: CortexMeasurement) -> np.ndarray:
    """The radiograph in colour with traced border (cyan), endosteal margin (yellow), sites and widths."""
    grey = (np.clip(image.pixels, 0, 1) * 255).astype(np.uint8)
    vis = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    h, w = grey.shape
    lw = max(1, round(min(h, w) / 400))
    font = max(0.4, min(h, w) / 700)
    for s in measurement.sides():
        if len(s.border):
            cv2.polylines(vis, [np.round(s.border).astype(np.int32)], False, (255, 255, 0), lw, cv2.LINE_AA)
        if len(s.endosteal) > 1:
            cv2.polylines(vis, _runs(s.endosteal), False, (0, 220, 255), lw, cv2.LINE_AA)
        if s.located and s.site_xy and s.normal and s.mcw_px:
            p0 = np.array(s.site_xy)
            p1 = p0 + np.array(s.normal) * s.mcw_px
            cv2.line(vis, _pt(p0), _pt(p1), (0, 0, 255), lw + 1, cv2.LINE_AA)
            cv2.circle(vis, _pt(p0), 3 * lw, (0, 0, 255), -1, cv2.LINE_AA)
            text = f"{s.side[0].upper()}: " + (f"{s.mcw_mm:.1f} mm" if s.mcw_mm is not None else f"{s.mcw_px:.0f} px")
            # Beside the site, above the endosteal margin (inside the bone), centred on it.
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, lw)
            org = p1 + np.array(s.normal) * 1.5 * th + np.array([-tw / 2, th / 2])
            _text(vis, text, org, font, lw)
    head = _headline(measurement)
    _text(vis, head, np.array([10.0 * lw, 30.0 * font + 5]), font, lw,
          colour=(0, 0, 255) if measurement.quality != "ok" else (0, 255, 0))
    return vis


def _runs(points: np.ndarray) -> list[np.ndarray]:
    """Split a polyline where points are missing (a gap of more than 3 steps), for drawing."""
    step = np.hypot(*np.diff(points, axis=0).T)
    cuts = np.nonzero(step > 3 * np.median(step))[0] + 1
    return [np.round(run).astype(np.int32) for run in np.split(points, cuts) if len(run) > 1]


def _headline(m: CortexMeasurement) -> str:
    if m.quality == "failed":
        return "FAILED: " + "; ".join(m.notes)
    width = f"MCW {m.mcw_mm:.2f} mm" if m.mcw_mm is not None else f"MCW {m.mcw_px:.1f} px (spacing unknown)"
    text = f"{width}  {m.klemetti_estimate}  conf {np.floor(m.confidence * 100) / 100:.2f}"
    if m.decision is not None:
        text += f"  {'< ' if m.decision else '>= '}{m.threshold_mm:g} mm"
    if m.quality == "low":
        text = "LOW QUALITY - check by eye. " + text
    return text


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _text(img: np.ndarray, text: str, org: np.ndarray, scale: float, lw: int,
          colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Text with a dark outline so it reads on any background."""
    h, w = img.shape[:2]
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, lw)
    x = int(np.clip(org[0], 2, max(2, w - tw - 2)))
    y = int(np.clip(org[1], th + 2, h - 4))
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), lw + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, lw, cv2.LINE_AA)
