"""Automatic mandibular cortical width (MCW) measurement on a panoramic radiograph.

Classical image analysis, no trained model (method and limits: docs/cortex.md):

1. The inferior border of the mandible is traced across the whole image as the lowest continuous
   bone-to-soft-tissue edge, with a U-shape prior (:mod:`osteopano.cortex.border`), on a working
   grid whose scale follows the image's anatomy, not the pixel spacing.
2. The facial midline (symmetry axis) splits it into the patient's right and left body.
3. Intensity profiles along the border normals, sampled at the full input resolution, give the
   periosteal and endosteal edges of the cortical band (:mod:`osteopano.cortex.trace`).
4. The site is below the mental foramen when a dark oval is found there, else at a fixed
   fraction of the traced body's length (:mod:`osteopano.cortex.site`); the side's MCW is the
   median width over a few mm around it.
5. Each side gets a quality (ok / low / failed) and a plain reason; a failed side carries no
   width, no class and no decision. Widths are in mm only with a trusted spacing (argument >
   the file's own), else in pixels, with the scale-free panoramic mandibular index (PMI) where
   the foramen was found. The Klemetti-like class is EXPERIMENTAL (not validated on real images)
   and never enters the decision.

Sides are the PATIENT's: the patient's right is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from osteopano.cortex import border as cb
from osteopano.cortex import site as cs
from osteopano.cortex import trace as ct
from osteopano.cortex.overlay import draw_overlay  # noqa: F401  (public API)
from osteopano.errors import OsteopanoError
from osteopano.io.images import Radiograph

SITE_HALF_STRETCH_MM = 2.5       # MCW = median over +-this (arc length) around the site
SITE_SHIFTS_MM = (2.5, 5.0)      # where the band is unreadable at the site, these shifts along it are tried
SITE_HIDDEN_MM = 3.0             # the traced border starts this much further out than the site: it is hidden
EROSION_HALF_STRETCH_MM = 10.0   # erosion is judged over +-this around the site
ROUGH_SMOOTH_MM = 3.0            # endosteal roughness = residual after smoothing at this scale
ROUGH_REF_MM = 0.4               # roughness counted as full erosion
POROSITY_REF = 0.15              # porosity counted as full erosion
KLEMETTI_CUTS = (0.3, 0.68)      # erosion score -> C1 | C2 | C3 (experimental, set on the phantom)
PLAUSIBLE_MM = (1.0, 8.0)        # widths (anatomical mm) outside are implausible for an adult mandible
SPACING_RATIO = (0.6, 1.65)      # a given spacing this far from the anatomical scale is implausible
MIDLINE_AGREE_MM = 25.0          # a symmetry axis further than this from the traced chin is flagged
MIDLINE_MIN_SCORE = 0.35         # the symmetry axis is the midline when its mirror score reaches this
FULL_VIEW_ASPECT = 1.8           # width / height of a full panoramic field at least (the real ones: 1.9-2.7)
SYMMETRIC_SCORE = 0.5            # mirror correlation above which the image counts as a symmetric full view
CHIN_EDGE_MM = 12.0              # a chin this close to the image's side means the image shows one side only
INNER_STEP_LIMIT = 2.0           # a step inside the band this many times the outer edge's: 'low'
FRAME_GAP_MM = 10.0              # a side ending this close to the image's side, not yet rising
FRAME_RISE_MM = 2.0              # towards the angle (this much above its lowest point), is cut off by it
ASYM_LIMIT = 0.45                # relative difference of the sides above which the result is 'low'
SIDE_OK, SIDE_LOW = 0.5, 0.2     # side confidence needed for 'ok' / for a usable ('low') side


@dataclass
class SideMeasurement:
    """The measurement on one side of the patient (``side`` = 'right' | 'left').

    ``located``: a usable width was measured (quality ok or low). A failed side has no width,
    no erosion class and says why in ``reason``.
    """

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
    site_method: str | None = None                # 'mental_foramen' | 'proportion'
    site_distance_mm: float | None = None         # site's distance from the midline (mm; None without spacing)
    site_distance_px: float | None = None
    pmi: float | None = None                      # width / height of the foramen's lower edge above the border
    klemetti_estimate: str | None = None          # EXPERIMENTAL, not validated on real images
    confidence: float = 0.0
    quality: str = "failed"                       # 'ok' | 'low' | 'failed'
    reason: str | None = None                     # plain reason when not 'ok'


@dataclass
class CortexMeasurement:
    """Both sides and the overall judgement. ``right`` is on the image's left half."""

    right: SideMeasurement
    left: SideMeasurement
    mcw_mm: float | None
    mcw_px: float | None
    klemetti_estimate: str | None   # EXPERIMENTAL 'C1' | 'C2' | 'C3'; None when failed; never in decisions
    quality: str                    # 'ok' | 'low' | 'failed'
    confidence: float
    decision: bool | None           # mcw_mm < threshold_mm; None when the spacing is unknown or failed
    spacing_source: str             # 'argument' | 'file' | 'unknown'
    pixel_spacing_mm: float | None
    threshold_mm: float
    path: str | None = None
    notes: list[str] = field(default_factory=list)
    pmi: float | None = None        # mean PMI of the sides where the foramen was found
    anatomy_mm_per_px: float | None = None  # the anatomical scale the search used (not a spacing)

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
            "pmi": _r(self.pmi, 3),
            "decision_low_mcw": self.decision,
            "threshold_mm": self.threshold_mm,
            "klemetti_estimate": self.klemetti_estimate,
            "spacing_source": self.spacing_source,
            "pixel_spacing_mm": self.pixel_spacing_mm,
        }
        for s in self.sides():
            p = s.side
            row[f"located_{p}"] = s.located
            row[f"quality_{p}"] = s.quality
            row[f"reason_{p}"] = s.reason
            row[f"mcw_{p}_mm"] = _r(s.mcw_mm)
            row[f"mcw_{p}_px"] = _r(s.mcw_px)
            row[f"pmi_{p}"] = _r(s.pmi, 3)
            row[f"erosion_{p}"] = _r(s.erosion_score, 3)
            row[f"site_{p}_x"] = _r(s.site_xy[0], 1) if s.site_xy else None
            row[f"site_{p}_y"] = _r(s.site_xy[1], 1) if s.site_xy else None
            row[f"site_method_{p}"] = s.site_method
            row[f"site_{p}_from_midline_mm"] = _r(s.site_distance_mm, 1)
        row["notes"] = "; ".join(self.notes)
        return row

    def to_json(self) -> dict[str, Any]:
        """The row plus, per side, the traced border and endosteal margin (~1 point/mm, input pixels)."""
        out = self.to_row()
        step = max(1, round(1.0 / ct.BORDER_STEP_MM))
        for s in self.sides():
            out[f"side_{s.side}"] = {
                "located": s.located,
                "quality": s.quality,
                "reason": s.reason,
                "site_xy": _r2(s.site_xy),
                "normal": _r2(s.normal, 4),
                "site_method": s.site_method,
                "site_distance_px": _r(s.site_distance_px, 1),
                "klemetti_estimate_experimental": s.klemetti_estimate,
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


def _spacing(image: Radiograph, pixel_spacing_mm: float | None) -> tuple[float | None, str]:
    """The spacing to measure with and its source ('argument' | 'file' | 'unknown'), by the one rule of
    ``osteopano.io.spacing`` (the argument is the explicit value; callers with a manifest resolve first)."""
    from osteopano.errors import DataError
    from osteopano.io.spacing import resolve_spacing

    try:
        found = resolve_spacing(pixel_spacing_mm, None, image.pixel_spacing_mm, name=image.path or "image")
    except DataError as exc:
        raise OsteopanoError(str(exc)) from None
    return found.mm, {"option": "argument"}.get(found.source, found.source)


def measure(image: Radiograph, *, pixel_spacing_mm: float | None = None, threshold_mm: float = 3.0) -> CortexMeasurement:
    """Measure the mandibular cortical width below the mental foramen on both sides."""
    spacing, source = _spacing(image, pixel_spacing_mm)
    raw = np.asarray(image.pixels, dtype=np.float32)
    # pixels: profiles (the intensities' own shape, half-level crossings); ranked: the border search
    # (independent of the rendering curve). Both from one histogram of the image.
    pixels, ranked = ct.normalise_both(raw)
    nominal = cb.anatomy_scale(pixels.shape)
    notes: list[str] = []
    right, left = SideMeasurement(side="right"), SideMeasurement(side="left")
    border = cb.find_border(ranked, pixels) if min(pixels.shape) >= 64 else None
    if border is None:
        for s in (right, left):
            s.reason = f"{s.side} border not found: image too small or blank"
        notes.append("inferior border not found")
        return _result(right, left, spacing, source, threshold_mm, image, notes, nominal)
    midline_x, mid = _midline(pixels, nominal, border, notes)
    # Image left half = patient's right. Both halves of one mandible have about the same length,
    # and the sum of the two traced reaches does not depend on where the midline was put, so the
    # proportional sites use their mean (the longer one when the other is clearly cut short).
    halves = {d: border.side(midline_x, d) for d in (-1, 1)}
    reaches = [float(_distance(h[0], midline_x, mid).max()) * nominal for h in halves.values() if h is not None]
    shared = None
    if reaches:
        lo, hi = min(reaches), max(reaches)
        shared = float(np.mean(reaches)) if lo >= 0.7 * hi else hi
    for s, direction in ((right, -1), (left, +1)):
        _measure_side(pixels, nominal, halves[direction], midline_x, mid, s, shared)
    return _result(right, left, spacing, source, threshold_mm, image, notes, nominal)


def _midline(pixels: np.ndarray, nominal: float, border: cb.Border,
             notes: list[str]) -> tuple[float, ct.Midline | None]:
    """x of the midline at the border, and the symmetry axis when it is trusted."""
    finite = np.isfinite(border.ys)
    chin_x = border.chin_x
    hidden = _hidden_chin(border)
    if hidden is not None:
        # The path left the picture between the two sides (a chin cut off at the bottom or hidden
        # under a frame): the chin is in the middle of that stretch.
        chin_x = hidden
    elif finite.any():
        # Centre of the lowest stretch of the traced border (the chin), robust to a flat bottom.
        y = np.where(finite, border.ys, -np.inf)
        low = y >= np.max(y) - 2.0 / nominal
        chin_x = float(np.median(border.xs[low]))
    w = pixels.shape[1]
    if min(chin_x, w - 1 - chin_x) * nominal < CHIN_EDGE_MM:
        # The lowest point is at the image's side: the chin is cut off and only one side is shown.
        return (0.0 if chin_x < w / 2 else float(w - 1)), None
    mid = ct.find_midline(pixels, nominal)
    y_chin = float(np.nanmax(border.ys)) if finite.any() else pixels.shape[0] * 0.9
    x_sym = mid.x_at(y_chin)
    if mid.score < MIDLINE_MIN_SCORE:
        return chin_x, None
    if abs(x_sym - chin_x) * nominal <= MIDLINE_AGREE_MM:
        return float(x_sym), mid
    # The traced chin is far off the symmetry axis. On a full panoramic field a tilted head moves the
    # lowest point of the flat chin far to one side (on the phantom and on the real abdi-dev images the
    # axis lay nearer the mandible's centre than the traced chin on all but one of the images where the
    # two disagreed), so the sites are placed from the axis. A narrower picture is a crop, whose centre
    # (where the axis is searched) need not be the face's: there the traced chin is kept.
    full_view = pixels.shape[1] >= FULL_VIEW_ASPECT * pixels.shape[0]
    if mid.score >= SYMMETRIC_SCORE:
        # A clearly symmetric image whose traced U is off its axis: a tilted head, or the trace is
        # not the mandible.
        notes.append("traced border is off the image's symmetry axis (head tilted, or not a full panoramic view?)")
    return (float(x_sym), mid) if full_view else (chin_x, None)


def _hidden_chin(border: cb.Border) -> float | None:
    """Centre x of the stretch where the traced border runs below the picture with the border
    traced on both sides of it: the one holding the path's chin, else the longest."""
    lab, _ = ndimage.label(~np.isfinite(border.ys))
    runs = [(sl[0].start, sl[0].stop) for sl in ndimage.find_objects(lab)]
    runs = [(a, b) for a, b in runs if a > 0 and b < border.ys.size]  # not off the image's sides
    if not runs:
        return None
    holding = [r for r in runs if border.xs[r[0]] <= border.chin_x <= border.xs[r[1] - 1]]
    a, b = holding[0] if holding else max(runs, key=lambda r: r[1] - r[0])
    return float(0.5 * (border.xs[a] + border.xs[b - 1]))


def _distance(xy: np.ndarray, midline_x: float, mid: ct.Midline | None) -> np.ndarray:
    if mid is None:
        return np.abs(xy[:, 0] - midline_x)
    return np.abs(mid.horizontal_distance(xy))


def _measure_side(pixels: np.ndarray, nominal: float, half: tuple[np.ndarray, float] | None, midline_x: float,
                  mid: ct.Midline | None, out: SideMeasurement, reach_mm: float | None) -> None:
    """Read the band along one side's traced border and measure it at the site, in place."""
    name = out.side
    if half is None or reach_mm is None:
        out.reason = f"{name} border not found: image cropped?"
        return
    xy, support = half
    step_px = ct.BORDER_STEP_MM / nominal
    coarse = ct.resample_polyline(xy, step_px, nominal, support)
    out.border = coarse.xy
    prof, t = ct.profiles(pixels, coarse, nominal)
    band0 = ct.read_band(prof, t)
    trace = ct.refine_trace(coarse, band0, nominal)
    if trace is None:
        out.reason = f"{name} cortex not found along the traced border"
        return
    out.border = trace.xy
    ok0 = np.isfinite(band0.width_mm)
    out.endosteal = (coarse.xy + coarse.normals * (band0.inner_t / nominal)[:, None])[ok0]
    dist_px = _distance(trace.xy, midline_x, mid)
    own_reach = float(dist_px.max()) * nominal
    site = cs.find_site(pixels, trace, nominal, dist_px * nominal, reach_mm)
    out.site_method = site.method
    if site.method == "proportion" and (float(dist_px[site.index]) * nominal
                                        - cs.proportional_distance(reach_mm)) > SITE_HIDDEN_MM:
        # The border near the midline runs below the picture (a chin under a frame or cut off at
        # the bottom) past the site: the nearest point traced is not the site, and no width is given.
        out.reason = f"{name} site below the picture (chin under a frame or cut off at the bottom?)"
        return
    # Second pass near the site only, perpendicular to the refined border.
    reach_around = EROSION_HALF_STRETCH_MM + 2.0 + max(SITE_SHIFTS_MM)
    around = np.nonzero(np.abs(trace.arc_mm - trace.arc_mm[site.index]) <= reach_around)[0]
    sub = ct.Trace(xy=trace.xy[around], normals=trace.normals[around], arc_mm=trace.arc_mm[around],
                   edge_strength=trace.edge_strength)
    idx0 = int(np.searchsorted(around, site.index))
    prof, t = ct.profiles(pixels, sub, nominal)
    band = ct.read_band(prof, t)
    valid = np.isfinite(band.width_mm)
    # Where the inner margin is not readable right at the site, the nearest readable stretch within
    # a few mm is used (and said so): the width varies slowly along the body.
    def readable(i: int) -> int:
        """2 = clean band around border point i, 1 = readable but uneven, 0 = not readable."""
        ok_i = (np.abs(sub.arc_mm - sub.arc_mm[i]) <= SITE_HALF_STRETCH_MM) & valid
        n_i = (np.abs(sub.arc_mm - sub.arc_mm[i]) <= SITE_HALF_STRETCH_MM).sum()
        if ok_i.sum() < 3 or ok_i.sum() < 0.5 * n_i:
            return 0
        w = band.width_mm[ok_i]
        med = float(np.median(w))
        if not PLAUSIBLE_MM[0] <= med <= PLAUSIBLE_MM[1]:
            return 0
        return 2 if float(np.subtract(*np.percentile(w, [75, 25]))) / med <= 0.25 else 1

    candidates = []
    for shift in (0.0,) + tuple(v for m in SITE_SHIFTS_MM for v in (-m, m)):
        i = int(np.argmin(np.abs(sub.arc_mm - (sub.arc_mm[idx0] + shift))))
        if abs(sub.arc_mm[i] - sub.arc_mm[idx0] - shift) <= 1.0:
            candidates.append((i, readable(i)))
    best = max((c for c in candidates), key=lambda c: c[1], default=(idx0, 0))  # first of the best grade
    idx = best[0] if best[1] > 0 else idx0
    near = np.abs(sub.arc_mm - sub.arc_mm[idx]) <= SITE_HALF_STRETCH_MM
    ok = near & valid
    share = ok.sum() / max(1, near.sum())
    site_index = int(around[idx])
    outer = float(np.median(band.outer_t[ok])) if ok.any() else 0.0
    site_xy = sub.xy[idx] + sub.normals[idx] * float(np.clip(outer, -0.5, 0.5)) / nominal
    out.site_xy = (float(site_xy[0]), float(site_xy[1]))
    out.normal = (float(sub.normals[idx, 0]), float(sub.normals[idx, 1]))
    out.site_distance_px = float(dist_px[site_index])
    moved = abs(float(sub.arc_mm[idx] - sub.arc_mm[idx0]))
    if moved > 0.5 and site.method == "mental_foramen":
        site.foramen_height_mm = None  # the PMI belongs below the foramen only
    if ok.sum() < 3 or share < 0.5:
        out.reason = f"{name} inner margin not continuous at the site"
        return
    width = float(np.median(band.width_mm[ok]))  # anatomical mm
    spread = float(np.subtract(*np.percentile(band.width_mm[ok], [75, 25]))) / max(width, 1e-6)
    plausible = PLAUSIBLE_MM[0] <= width <= PLAUSIBLE_MM[1]
    conf = (np.clip((support - 0.15) / 0.35, 0, 1) * share * np.clip(1.2 - 2 * spread, 0, 1)
            * np.clip((own_reach - cb.BODY_MIN_MM) / 20.0, 0, 1) * (1.0 if plausible else 0.3))
    out.confidence = float(conf)
    if not plausible:
        reason = f"{name} width implausible ({width:.1f} mm on the anatomical scale)"
    elif support < 0.3:
        reason = f"{name} border weak or unclear"
    elif spread > 0.25:
        reason = f"{name} cortical width uneven at the site"
    elif share < 0.9:
        reason = f"{name} inner margin partly missing at the site"
    else:
        reason = f"{name} border traced only {own_reach:.0f} mm from the midline" if conf < SIDE_OK else None
    if conf < SIDE_LOW:
        out.reason = reason or f"{name} measurement unreliable"
        return
    out.quality = "ok" if conf >= SIDE_OK else "low"
    out.reason = reason if out.quality == "low" else None
    if out.quality == "ok" and ct.inner_step_ratio(prof, t, band, np.nonzero(near)[0]) >= INNER_STEP_LIMIT:
        # A rise inside the band much stronger than its outer edge: the traced edge may be a soft
        # tissue's below the bone (the width then includes it).
        out.quality = "low"
        out.reason = f"{name} outer edge fainter than a step inside the cortex (soft tissue below the border?)"
    if out.quality == "ok" and _cut_by_frame(trace.xy, dist_px, pixels.shape[1], nominal):
        out.quality = "low"
        out.reason = f"{name} border runs into the image's side at chin height (image cropped?)"
    if moved > 0.5:
        note = f"{name} site moved {moved:.1f} mm along the border (band unreadable right at it)"
        out.reason = f"{out.reason}; {note}" if out.reason else note
    out.located = True
    out.mcw_px = width / nominal
    if site.foramen_height_mm is not None and site.foramen_height_mm > width:
        out.pmi = width / site.foramen_height_mm
    out.roughness_mm, out.porosity, out.erosion_score = _erosion(sub, band, idx)
    out.klemetti_estimate = _klemetti(out.erosion_score)


def _klemetti(score: float | None) -> str | None:
    if score is None:
        return None
    return "C1" if score < KLEMETTI_CUTS[0] else "C2" if score < KLEMETTI_CUTS[1] else "C3"


def _cut_by_frame(xy: np.ndarray, dist_px: np.ndarray, width: int, nominal: float) -> bool:
    """A side's body ends at the angle, inside the picture and above the chin: a trace whose outer end
    lies near the image's side and no higher than the side's lowest point was cut off there (a cropped
    image, or a "midline" that is not the chin's)."""
    end = int(np.argmax(dist_px))
    gap = min(float(xy[end, 0]), width - 1 - float(xy[end, 0])) * nominal
    rise = (float(xy[:, 1].max()) - float(xy[end, 1])) * nominal  # image y grows downwards
    return gap < FRAME_GAP_MM and rise < FRAME_RISE_MM


def _result(right: SideMeasurement, left: SideMeasurement, spacing: float | None, source: str,
            threshold_mm: float, image: Radiograph, notes: list[str], nominal: float) -> CortexMeasurement:
    """Combine the sides: widths in mm with a trusted spacing, quality, decision, notes."""
    for s in (right, left):
        if s.reason:
            notes.append(s.reason)
        if spacing is not None and s.located:
            s.mcw_mm = s.mcw_px * spacing
        if spacing is not None and s.site_distance_px is not None:
            s.site_distance_mm = s.site_distance_px * spacing
    sides = [s for s in (right, left) if s.located]
    if spacing is None:
        notes.append("pixel spacing unknown: widths in pixels only")
    else:
        ratio = spacing / nominal
        if not SPACING_RATIO[0] <= ratio <= SPACING_RATIO[1]:
            notes.append(f"pixel spacing {spacing:g} mm looks implausible for this image's anatomy "
                         f"(about {nominal:.2f} mm expected)")
    if not sides:
        return CortexMeasurement(right, left, None, None, None, "failed", 0.0, None, source, spacing,
                                 threshold_mm, image.path, notes, None, nominal)
    mcw_px = float(np.mean([s.mcw_px for s in sides]))
    mcw_mm = mcw_px * spacing if spacing is not None else None
    conf = float(np.mean([s.confidence for s in (right, left)]))
    quality = "ok" if all(s.quality == "ok" for s in (right, left)) else "low"
    if len(sides) == 2:
        a, b = right.mcw_px, left.mcw_px
        asym = abs(a - b) / max(a + b, 1e-9) * 2
        if asym > ASYM_LIMIT:
            quality = "low"
            conf *= float(np.clip(1.0 - (asym - ASYM_LIMIT), 0.0, 1.0))
            notes.append(f"sides differ by {asym:.0%}")
    if any(n.startswith("pixel spacing") and "implausible" in n for n in notes):
        quality = "low"
    if any(s.reason and "at chin height" in s.reason for s in (right, left)):
        # One side leaves the picture where the chin should be: the midline (hence both sites) is not the
        # chin's, so neither side's site can be trusted.
        quality = "low"
        conf *= 0.5
    if any(n.startswith("traced border is off") for n in notes):
        quality = "low"
        conf *= 0.5
    pmis = [s.pmi for s in sides if s.pmi is not None]
    pmi = float(np.mean(pmis)) if pmis else None
    erosion = float(np.mean([s.erosion_score for s in sides]))
    decision = bool(mcw_mm < threshold_mm) if mcw_mm is not None else None
    return CortexMeasurement(right, left, mcw_mm, mcw_px, _klemetti(erosion), quality, conf, decision, source,
                             spacing, threshold_mm, image.path, notes, pmi, nominal)


def _fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Interpolate missing values along the polyline (0 when none valid)."""
    if not valid.any():
        return np.zeros_like(values)
    i = np.arange(values.size)
    return np.interp(i, i[valid], values[valid])


def _erosion(trace: ct.Trace, band: ct.Band, idx: int) -> tuple[float, float, float]:
    """Endosteal roughness (mm), cortical porosity and the combined erosion score in [0, 1]."""
    near = (np.abs(trace.arc_mm - trace.arc_mm[idx]) <= EROSION_HALF_STRETCH_MM) & np.isfinite(band.width_mm)
    inner = band.inner_t[near]
    sigma = ROUGH_SMOOTH_MM / ct.BORDER_STEP_MM
    rough = float(np.std(inner - ndimage.gaussian_filter1d(inner, sigma, mode="nearest"))) if inner.size > 3 else 0.0
    poro = float(np.nanmean(band.porosity[near])) if near.any() else 0.0
    score = 0.5 * min(rough / ROUGH_REF_MM, 1.0) + 0.5 * min(poro / POROSITY_REF, 1.0)
    return rough, poro, score
