"""Low-level image analysis behind :mod:`osteopano.cortex.measure`: intensity normalisation,
reading the cortical band from intensity profiles along the border normals, and the midline.

Lengths here are in the millimetres of the ``spacing_mm`` the caller passes: the measurement
passes the image's anatomical scale (:func:`osteopano.cortex.border.anatomy_scale`), never the
pixel spacing, so nothing moves with a wrong spacing. The cortical band is read at the full input
resolution from profiles sampled every ``PROFILE_STEP_MM`` along the border normals. Coordinates
returned are ``(x, y)`` pixel coordinates of the input image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

RANK_BINS = 4096          # intensity levels of the rank normalisation
BORDER_STEP_MM = 0.5      # spacing of the border polyline points used for profiles
NORMAL_SMOOTH_MM = 3.0    # the border is smoothed at this scale before taking normals
JUMP_MM = 0.8             # refined periosteal offsets further than this from their running median are dropped
JUMP_WINDOW_MM = 10.0     # ... taken over this much border
REFINE_SMOOTH_MM = 1.5    # smoothing of the measured periosteal edge along the border
PROFILE_RANGE_MM = (-3.0, 10.0)  # profile extent along the normal (negative = below the border)
PROFILE_STEP_MM = 0.05
PROFILE_SIGMA_MM = 0.12   # smoothing of each profile
OUTER_SEARCH_MM = 1.6     # the outer (periosteal) edge is searched within this of the traced border
EDGE_MAX_STEP_MM = 0.4    # band edges move at most this between neighbouring border points
EDGE_PENALTY = 0.003      # per squared profile sample of edge movement
INNER_DECAY_MM = 6.0      # the endosteal step's reward decays as exp(-depth / this)
MIN_WIDTH_MM, MAX_WIDTH_MM = 0.5, 9.0  # a cortical band outside this is not accepted
MIN_CONTRAST = 0.01       # cortex brighter than soft tissue / trabecular bone by at least this
MIN_DROP = 0.1            # fallback endosteal step: at least this fraction of the profiles' strong gradients


@dataclass
class Trace:
    """The traced inferior border of one side, in input-image pixel coordinates."""

    xy: np.ndarray          # (N, 2) float, ordered from the midline outwards
    normals: np.ndarray     # (N, 2) unit vectors into the bone
    arc_mm: np.ndarray      # (N,) arc length from the inner end, mm
    edge_strength: float    # mean normalised edge strength along the path (0..1)


@dataclass
class Band:
    """The cortical band read from the profiles along one traced border."""

    outer_t: np.ndarray     # (N,) periosteal edge offset along the normal from the trace, mm (nan = none)
    inner_t: np.ndarray     # (N,) endosteal edge offset, mm (nan = none)
    porosity: np.ndarray    # (N,) fraction of the band's samples darker than the endosteal half level

    @property
    def width_mm(self) -> np.ndarray:
        return self.inner_t - self.outer_t


def normalise_both(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two normalisations of an image from one pass over its histogram at ``RANK_BINS`` levels:
    (linear, rank). Linear: stretched to the 1st-99th percentile window, so thresholds mean the same on
    every image (the percentiles read from the cumulative histogram: exact for 8-bit, to 1/4096 of the
    range otherwise). Rank: each intensity mapped to its mid-rank, so any increasing intensity map
    (gamma, window, the device's or the export's LUT) gives the same image and the border search does
    not depend on the rendering curve."""
    p = np.asarray(pixels, dtype=np.float32)
    lo, hi = float(p.min()), float(p.max())
    if hi - lo <= 1e-9:
        return np.zeros_like(p), np.zeros_like(p)
    q = ((p - lo) * ((RANK_BINS - 1) / (hi - lo))).astype(np.int32)
    counts = np.bincount(q.ravel(), minlength=RANK_BINS).astype(np.float64)
    cdf = np.cumsum(counts)
    total = cdf[-1]
    rank = ((cdf - 0.5 * counts) / total).astype(np.float32)  # mid-rank of each level
    step = (hi - lo) / (RANK_BINS - 1)
    p1, p99 = (lo + step * float(np.searchsorted(cdf, f * total, side="left")) for f in (0.01, 0.99))
    span = max(p99 - p1, 1e-6)
    levels = np.clip((lo + step * np.arange(RANK_BINS) - p1) / span, 0.0, 1.0).astype(np.float32)
    return levels[q], rank[q]


def dp_path(cost: np.ndarray, max_step: int, penalty: float) -> np.ndarray:
    """Minimum-cost path through ``cost`` (rows x columns), one row per column, the row changing by
    at most ``max_step`` between neighbouring columns at ``penalty`` per squared step."""
    n_rows, n_cols = cost.shape
    offsets = np.arange(-max_step, max_step + 1)
    pen = penalty * offsets.astype(np.float64) ** 2
    acc = np.full(n_rows + 2 * max_step, np.inf)
    acc[max_step:max_step + n_rows] = cost[:, 0]
    back = np.zeros((n_cols, n_rows), dtype=np.int16)
    cost_t = np.ascontiguousarray(cost.T)
    for j in range(1, n_cols):
        # windows[r, k] = acc[r + offsets[k]] (padded with inf outside the rows)
        cands = np.lib.stride_tricks.sliding_window_view(acc, offsets.size) + pen
        best = np.argmin(cands, axis=1)
        acc[max_step:max_step + n_rows] = cands[np.arange(n_rows), best] + cost_t[j]
        back[j] = offsets[best]
    path = np.empty(n_cols, dtype=np.int64)
    path[-1] = int(np.argmin(acc[max_step:max_step + n_rows]))
    for j in range(n_cols - 1, 0, -1):
        path[j - 1] = path[j] + back[j, path[j]]
    return path


def resample_polyline(xy: np.ndarray, step_px: float, spacing_mm: float, strength: float) -> Trace:
    """Resample a polyline at equal arc steps and attach unit normals pointing up into the bone."""
    seg = np.hypot(*np.diff(xy, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(0.0, arc[-1], step_px)
    pts = np.column_stack([np.interp(s, arc, xy[:, 0]), np.interp(s, arc, xy[:, 1])])
    tan = np.gradient(ndimage.gaussian_filter1d(pts, NORMAL_SMOOTH_MM / (step_px * spacing_mm), axis=0,
                                                mode="nearest"), axis=0)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True)
    normals = np.column_stack([tan[:, 1], -tan[:, 0]])
    normals[normals[:, 1] > 0] *= -1  # into the bone = upwards in the image
    return Trace(xy=pts, normals=normals, arc_mm=s * spacing_mm, edge_strength=strength)


def refine_trace(trace: Trace, band: Band, spacing_mm: float) -> Trace | None:
    """Move the trace onto the measured periosteal edge (smoothed along the border) and recompute
    the normals from it, so that widths are read perpendicular to the real border even where the
    coarse trace wiggles. ``None`` when too few profiles showed a band."""
    valid = np.isfinite(band.outer_t)
    if valid.sum() < max(5, 0.2 * valid.size):
        return None
    i = np.arange(valid.size)
    outer = np.interp(i, i[valid], band.outer_t[valid])
    # Jump rejection: a periosteal step that leaves the border's own course (a fainter inner step,
    # a double contour) by more than JUMP_MM is dropped and bridged from its neighbours.
    course = ndimage.median_filter(outer, size=max(3, round(JUMP_WINDOW_MM / BORDER_STEP_MM) | 1), mode="nearest")
    keep = valid & (np.abs(outer - course) <= JUMP_MM)
    if keep.sum() >= max(5, 0.2 * valid.size):
        outer = np.interp(i, i[keep], band.outer_t[keep])
    xy = trace.xy + trace.normals * (outer / spacing_mm)[:, None]
    xy = ndimage.gaussian_filter1d(xy, REFINE_SMOOTH_MM / BORDER_STEP_MM, axis=0, mode="nearest")
    return resample_polyline(xy, BORDER_STEP_MM / spacing_mm, spacing_mm, trace.edge_strength)


def profiles(pixels: np.ndarray, trace: Trace, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Intensity profiles along the normals of ``trace`` (rows = border points), and their offsets t in mm."""
    t = np.arange(PROFILE_RANGE_MM[0], PROFILE_RANGE_MM[1] + 1e-9, PROFILE_STEP_MM)
    t_px = t / spacing_mm
    xs = trace.xy[:, 0, None] + trace.normals[:, 0, None] * t_px[None, :]
    ys = trace.xy[:, 1, None] + trace.normals[:, 1, None] * t_px[None, :]
    prof = ndimage.map_coordinates(pixels, [ys.ravel(), xs.ravel()], order=1, mode="nearest")
    prof = prof.reshape(xs.shape)
    sigma = max(PROFILE_SIGMA_MM, 0.5 * spacing_mm) / PROFILE_STEP_MM
    return ndimage.gaussian_filter1d(prof, sigma, axis=1), t


def _crossing(p: np.ndarray, t: np.ndarray, level: float, i0: int, i1: int, rising: bool, near: float) -> float:
    """Sub-sample position of the crossing of ``level`` in p[i0:i1] nearest to ``near`` (nan if none)."""
    seg = p[i0:i1] - level
    if rising:
        idx = np.nonzero((seg[:-1] < 0) & (seg[1:] >= 0))[0]
    else:
        idx = np.nonzero((seg[:-1] >= 0) & (seg[1:] < 0))[0]
    if idx.size == 0:
        return float("nan")
    frac = seg[idx] / (seg[idx] - seg[idx + 1])
    pos = t[i0 + idx] + frac * (t[1] - t[0])
    return float(pos[np.argmin(np.abs(pos - near))])


def _steepest(d: np.ndarray, t: np.ndarray, i0: int, i1: int) -> float:
    """Sub-sample position of the steepest rise of a profile (gradient ``d``) in d[i0:i1]: the
    periosteal edge. A real border rises sharply from the soft tissue and then keeps brightening
    slowly into the bone, so a half-level between soft tissue and the band's bright part would sit
    inside the bone; the steepest point is where a blurred step edge is."""
    i0, i1 = max(i0, 1), min(i1, d.size - 1)
    if i1 - i0 < 1:
        return float("nan")
    k = i0 + int(np.argmax(d[i0:i1]))
    if d[k] <= 0:
        return float("nan")
    y0, y1, y2 = d[k - 1], d[k], d[k + 1]
    den = y0 - 2 * y1 + y2
    off = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return float(t[k] + np.clip(off, -1, 1) * (t[1] - t[0]))


def _idx(v: np.ndarray, t0: float, step: float, last: int) -> np.ndarray:
    """Sample index of positions ``v`` (rounded like ``round``, clipped to the profile)."""
    return np.clip(np.round((np.asarray(v, dtype=np.float64) - t0) / step), 0, last).astype(np.int64)


def _window_stat(prof: np.ndarray, lo: np.ndarray, hi: np.ndarray, stat) -> np.ndarray:
    """Per row i: ``stat`` of prof[i, lo[i]:hi[i] + 1] (NaN where the window is empty)."""
    n = prof.shape[0]
    length = int(max(1, (hi - lo).max() + 1)) if n else 1
    cols = lo[:, None] + np.arange(length)[None, :]
    valid = cols <= hi[:, None]
    vals = np.where(valid, prof[np.arange(n)[:, None], np.minimum(cols, prof.shape[1] - 1)], np.nan)
    out = np.full(n, np.nan)
    has = valid.any(axis=1)
    if has.any():
        out[has] = stat(vals[has], axis=1)
    return out


def read_band(prof: np.ndarray, t: np.ndarray) -> Band:
    """Find the periosteal and endosteal edges of the bright cortical band on each profile.

    The periosteal edge is the dark->bright step near the traced border, the endosteal edge the
    bright->dark step further in; each is located as a smooth path along the border by dynamic
    programming on the profile gradients (so trabecular texture cannot pull single profiles
    astray), then refined to the half-maximum crossing between the local background, cortex
    and trabecular levels, which makes the width independent of the blur of the image.
    """
    n = prof.shape[0]
    step = t[1] - t[0]
    d = np.gradient(prof, step, axis=1)
    scale = max(float(np.percentile(np.abs(d), 99)), 1e-9)

    t0, last = float(t[0]), t.size - 1

    def idx(v: float) -> int:
        return min(max(round((float(v) - t0) / step), 0), last)

    max_step = max(1, round(EDGE_MAX_STEP_MM / step))
    penalty = EDGE_PENALTY * (PROFILE_STEP_MM / step) ** 2
    a, b = idx(-OUTER_SEARCH_MM), idx(OUTER_SEARCH_MM) + 1
    io = a + dp_path(-np.clip(d[:, a:b].T / scale, 0, 1), max_step, penalty)
    # Inner edge in coordinates relative to the outer edge: row k = outer + MIN_WIDTH + k samples.
    k0, k1 = round(MIN_WIDTH_MM / step), round(MAX_WIDTH_MM / step)
    rel = io[:, None] + np.arange(k0, k1 + 1)[None, :]
    inside = rel < t.size
    reward = np.where(inside, np.clip(-d[np.arange(n)[:, None], np.minimum(rel, t.size - 1)] / scale, 0, 1), 0)
    # Prefer the first clear drop going inward (the margin of the solid cortex) over endosteal
    # residues and trabecular edges further in.
    reward *= np.exp(-np.arange(k0, k1 + 1) * step / INNER_DECAY_MM)[None, :]
    ii = io + k0 + dp_path(-reward.T, max_step, penalty)

    outer = np.full(n, np.nan)
    inner = np.full(n, np.nan)
    porosity = np.full(n, np.nan)
    t_in = t[np.minimum(ii, last)]
    # The three levels of every profile at once (windows of varying length, NaN-padded).
    bgs = _window_stat(prof, _idx(t[io] - 1.5, t0, step, last), _idx(t[io] - 0.5, t0, step, last), np.nanmedian)
    cortexes = _window_stat(prof, np.minimum(io, last), np.minimum(ii, last), lambda v, axis: np.nanpercentile(v, 75, axis=axis))
    trabs = _window_stat(prof, _idx(t_in + 0.5, t0, step, last), _idx(t_in + 2.0, t0, step, last), np.nanmedian)
    for i in range(n):
        p, to, ti = prof[i], t[io[i]], t_in[i]
        if ii[i] >= t.size - 2:
            continue
        bg, cortex, trab = float(bgs[i]), float(cortexes[i]), float(trabs[i])
        if cortex - bg <= MIN_CONTRAST:
            continue
        o = _steepest(d[i], t, idx(to - 0.5), idx(to + 0.5) + 1)
        # The endosteal margin: the half-level crossing between cortex and trabecular bone where
        # the trabecular bone is clearly darker (as on most images); on real radiographs the bone
        # above often stays as bright as the cortex (overlapping soft tissue), and then the
        # strongest inward drop found by the path above is the margin.
        e = float("nan")
        if cortex - trab > MIN_CONTRAST:
            e = _crossing(p, t, 0.5 * (cortex + trab), idx(ti - 1.0), idx(ti + 1.0) + 1, False, ti)
        if np.isnan(e) and d[i, min(ii[i], t.size - 1)] < -MIN_DROP * scale:
            e = ti
        if np.isnan(o) or np.isnan(e) or not (MIN_WIDTH_MM <= e - o <= MAX_WIDTH_MM):
            continue
        outer[i], inner[i] = o, e
        band = p[idx(o):idx(e) + 1]
        porosity[i] = float(np.mean(band < 0.5 * (cortex + trab))) if cortex > trab else 0.0
    return Band(outer_t=outer, inner_t=inner, porosity=porosity)


INNER_STEP_SIGMA_MM = 0.25       # profiles smoothed this much before comparing steps
INNER_STEP_FROM_MM = (1.0, 0.5)  # a step inside the band: from this far inside the outer edge to this far before the inner


def inner_step_ratio(prof: np.ndarray, t: np.ndarray, band: Band, rows: np.ndarray) -> float:
    """Median over ``rows`` of the strongest inward rise *inside* the measured band divided by the
    rise at its outer edge (NaN when none readable). A bone's edge is the strongest rise of its
    profile: the cortex is solid and bright from the edge in. A ratio well above 1 means the outer
    edge is a fainter step below the bone (a soft-tissue band's edge), the bone's edge lying inside."""
    step = t[1] - t[0]
    d = np.gradient(ndimage.gaussian_filter1d(prof[rows], INNER_STEP_SIGMA_MM / step, axis=1), step, axis=1)
    t0, last = float(t[0]), t.size - 1
    o, e = band.outer_t[rows], band.inner_t[rows]
    ok = np.isfinite(o) & np.isfinite(e) & (e - o > sum(INNER_STEP_FROM_MM))
    if not ok.any():
        return float("nan")
    d, o, e = d[ok], o[ok], e[ok]
    io = _idx(o, t0, step, last)
    peak = _window_stat(d, np.maximum(io - 3, 0), np.minimum(io + 3, last), np.nanmax)
    inner = _window_stat(d, _idx(o + INNER_STEP_FROM_MM[0], t0, step, last),
                         _idx(e - INNER_STEP_FROM_MM[1], t0, step, last), np.nanmax)
    good = peak > 0
    return float(np.median(inner[good] / peak[good])) if good.any() else float("nan")


SYMMETRY_MM = 2.0                 # working grid of the symmetry search
SYMMETRY_FRAME = (0.8, 0.06)      # a bright, even run in from an image edge (level, tolerance) is a frame:
SYMMETRY_FRAME_MARGIN_MM = 4.0    # left out of the search with this margin (its inner edge is no anatomy)
SYMMETRY_CLIP = 98.0              # gradient magnitudes clipped at this percentile (no structure dominates)
SYMMETRY_SHIFT_MM = 25.0          # the midline is searched this far either side of the image centre
SYMMETRY_TILT_DEG = 5.0           # ... tilted up to this much


@dataclass
class Midline:
    """The facial midline as a (possibly tilted) line x = x0 + tan(tilt) * (y - y0), input pixels."""

    x0: float
    y0: float
    tilt_rad: float
    score: float  # correlation of the image with its mirror image about the line (-1..1)

    def x_at(self, y: float) -> float:
        """x of the line at row ``y`` (input pixels)."""
        return float(self.x0 + np.tan(self.tilt_rad) * (y - self.y0))

    def horizontal_distance(self, xy: np.ndarray) -> np.ndarray:
        """Signed distance of points from the line, perpendicular to it (pixels; + = image right)."""
        return (xy[:, 0] - self.x0 - np.tan(self.tilt_rad) * (xy[:, 1] - self.y0)) * np.cos(self.tilt_rad)


def edge_run(img: np.ndarray, level: float, tol: float) -> np.ndarray:
    """Per column, how many rows up from the image's bottom edge form a bright, even frame: the
    bottom row is at least ``level`` bright and every row of the run within ``tol`` of it."""
    ref = img[-1]
    same = (np.abs(img - ref[None, :]) <= tol) & (ref >= level)[None, :]
    return np.cumprod(same[::-1], axis=0).sum(axis=0)


def frame_mask(img: np.ndarray, level: float, tol: float, margin: int) -> np.ndarray:
    """Pixels of a bright, even frame along any of the four edges (``edge_run`` from each side),
    grown by ``margin`` pixels inwards."""
    h, w = img.shape
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    mask = rows >= h - (edge_run(img, level, tol) + margin)[None, :]       # bottom
    mask |= rows < (edge_run(img[::-1], level, tol) + margin)[None, :]     # top
    mask |= cols >= w - (edge_run(img.T, level, tol) + margin)[:, None]    # right
    mask |= cols < (edge_run(img.T[::-1], level, tol) + margin)[:, None]   # left
    return mask


def find_midline(pixels: np.ndarray, spacing_mm: float) -> Midline:
    """Axis of bilateral symmetry: the mirror line that best maps the image's edges onto themselves.

    A panoramic image is close to mirror-symmetric about the facial midline; patient positioning
    shifts and tilts it, so the line is searched over shifts and small tilts by correlating the
    gradient magnitude (coarse grid) with its reflection.
    """
    h, w = pixels.shape
    f = spacing_mm / SYMMETRY_MM
    small = cv2.resize(pixels, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    grad = ndimage.gaussian_gradient_magnitude(small, 1.0).astype(np.float32)
    # A collimation frame's inner edges are long, strong lines whose mirror axis is the middle of the
    # exposed field, not the face's: they are left out. And no single strong structure (metal, a
    # burned-in letter, the spine's ghost) may dominate the correlation: magnitudes are clipped.
    # On 200 phantoms (benchmarks/midline_accuracy.py) the axis lay a median 3.7 mm (p90 8.9) from the
    # face's midline on framed images before, 0.7 mm (p90 1.8) after; unframed 0.7 mm both.
    frame = frame_mask(small, *SYMMETRY_FRAME, max(1, round(SYMMETRY_FRAME_MARGIN_MM / SYMMETRY_MM)))
    if frame.mean() < 0.5:
        grad[frame] = np.nan
    grad = np.minimum(grad, np.nanpercentile(grad, SYMMETRY_CLIP))
    grad = (grad - np.nanmean(grad)) / (np.nanstd(grad) + 1e-9)
    sh, sw = grad.shape
    yc = sh / 2.0
    best = (-np.inf, sw / 2.0, 0.0)
    margin = SYMMETRY_SHIFT_MM / SYMMETRY_MM
    for tilt in np.deg2rad(np.arange(-SYMMETRY_TILT_DEG, SYMMETRY_TILT_DEG + 1e-9, 1.0)):
        for xc in np.arange(sw / 2.0 - margin, sw / 2.0 + margin + 1e-9, 1.0):
            # Reflection about the line through (xc, yc) with direction (sin t, cos t).
            c2, s2 = np.cos(2 * tilt), np.sin(2 * tilt)
            m = np.array([[-c2, s2], [s2, c2]])
            t = np.array([xc, yc]) - m @ np.array([xc, yc])
            mirrored = cv2.warpAffine(grad, np.hstack([m, t[:, None]]).astype(np.float32), (sw, sh),
                                      flags=cv2.INTER_LINEAR, borderValue=np.nan)
            ok = np.isfinite(mirrored) & np.isfinite(grad)
            if ok.mean() < 0.5:
                continue
            a, b = grad[ok], mirrored[ok]
            denom = float(a.std() * b.std())
            score = float(np.mean((a - a.mean()) * (b - b.mean())) / denom) if denom > 1e-12 else 0.0
            if score > best[0]:
                best = (score, xc, tilt)
    score, xc, tilt = best
    return Midline(x0=(xc + 0.5) / f - 0.5, y0=(yc + 0.5) / f - 0.5, tilt_rad=float(tilt), score=score)
