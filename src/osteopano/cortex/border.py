"""Finding the inferior border of the mandible on a panoramic radiograph (classical, no model).

The border is the LOWEST continuous bone-to-soft-tissue edge of the mandibular body, from the
angle on one side through the chin to the angle on the other. It is found on a reduced working
grid whose scale follows the image's anatomy (``anatomy_scale``), never an assumed pixel
spacing, so a wrong or missing spacing does not move it:

1. An edge map "bright above, dark below" at two scales (the sharp periosteal step and the broad
   step from bone to soft tissue), with saturated metal masked and normalised by a percentile of
   the searched region only (not the whole image, whose frame and skull would dominate it).
2. One dynamic-programming path across the whole width with a U-shape prior: a two-state path
   that may only go down (or stay level) on its way to the chin and only up (or level) after it,
   so it cannot dive off the border towards the bottom of the image or climb onto crowns, and a
   small reward for lying low, so the lowest long edge wins over the occlusal plane, crowns and
   mid-body shadows. The chin is where the path switches state: a crop that shows one side only
   puts the switch at the image edge.
3. Each side's body runs from the midline outwards while the path still follows a clear edge
   and rises less steeply than the ramus (``body_end``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from osteopano.cortex.trace import dp_path, edge_run

REF_HEIGHT_MM = 145.0     # a panoramic field's height; its width is about REF_ASPECT times that
REF_ASPECT = 2.05
WORK_MM = 0.5             # working grid of the search, in anatomical (nominal) mm
EDGE_SIGMA_MM = (1.0, 3.0)  # the two scales of the vertical edge
ROW_START = 0.35          # rows above this fraction of the height are never searched (teeth, skull)
COL_MARGIN = 0.02         # columns this close to the image sides are left out (frames, letters)
METAL_LEVEL = 0.985       # normalised intensity of saturated metal / enamel; masked with a margin
METAL_MARGIN_MM = 2.0
CORTEX_LIKE_MM = (15.0, 6.0)  # a bright region at least this long and at most this thick on average is
                              # the cortex (long and thin), not metal (compact: fillings, crowns, bridges)
EDGE_PERCENTILE = 97.0    # edge strength normalised by this percentile of the searched region
EDGE_SATURATION = 0.5     # ... and saturated at this fraction of it
DEPTH_BONUS = 0.25        # reward for lying low (0 at ROW_START, this at the bottom)
MAX_STEP = 2              # working rows per working column at most (63 degrees)
SMOOTH_PENALTY = 0.05     # per squared row step
WRONG_WAY_PENALTY = 0.35  # per row of going up before the chin / down after it
OFF_IMAGE_REWARD = 0.3    # the virtual row below the image (a chin cut off at the bottom)
BODY_MIN_MM = 35.0        # a side's body must be traced this far from the midline to count
SUPPORT_SMOOTH_MM = 6.0   # edge support along the path is averaged over this
SUPPORT_MIN = 0.25        # the body ends where the averaged support falls below this ...
RAMUS_SLOPE = 1.0         # ... or where the path rises steeper than this (45 degrees)
ANGLE_MIN_RISE = 0.25     # ... or, once the border has risen at least this steeply, where its rise
ANGLE_FLATTEN = 0.2       #     falls below this fraction of the steepest rise so far (past the angle)
ANGLE_FROM_MIDLINE_MM = 60.0  # (never nearer the midline than this)
NEAR_MM = (0.5, 2.0)      # the two sides of an edge: mean intensity this far above / below it
BAND_GAP_MM = (2.5, 20.0)  # a soft-tissue band's lower edge lies this far below the real border
BAND_STEP_RATIO = 0.5     # ... whose step is at least this fraction of the band edge's step
BAND_BRIGHTER = 0.5       # ... with tissue above it brighter by this fraction of that step
BAND_DOMINANT = 2.0       # (or a step this many times stronger right above, however textured between)
BAND_VALLEY = 0.25        # ... and the rise between stops (gradient below this fraction of the lower edge's)
VALLEY_SIGMA_MM = 0.5
VALLEY_MARGIN_MM = 1.0
BAND_SMOOTH = 0.6         # ... and the strip between at most this textured relative to the bone above
TEXTURE_SIGMA_MM = (0.5, 1.0)  # texture = |difference of Gaussians| at these scales (linear intensities)
TEXTURE_MARGIN_MM = 1.5   # ... kept this far from the two edges themselves
BONE_ABOVE_MM = (4.0, 12.0)    # bone texture is measured this far above the real border
NOISE_BELOW_MM = (2.0, 6.0)    # ... and the noise floor this far below the traced edge (soft tissue)
TEXTURE_RESOLVED = 2.0         # trabeculae count as resolved where the bone's texture is this many times the floor
BAND_RUN_MM = 10.0        # a band is rejected where most columns over this much border say so
CORTEX_ABOVE_MM = (0.5, 2.5)  # a bone edge's cortex: this far above it brighter than ...
INNER_ABOVE_MM = (6.0, 10.0)  # ... the bone this far above it
BAND_SNAP_MM = 2.0        # the re-searched path must lie this close to the band test's upper edge
BAND_ROUNDS = 2           # bands below bands (the hyoid under the soft tissue): rejected in turn
FRAME_LEVEL = 0.8         # a bright, even run up from the image's bottom (this bright, rank) is an
FRAME_TOL = 0.06          # unexposed frame (within this of its bottom row): the picture ends at its top
FRAME_SMOOTH_MM = 1.0
FRAME_BONE = 0.25         # bone runs into the frame where the strip right above it (FRAME_BONE_MM high)
FRAME_BONE_MM = 5.0       # is not soft-tissue dark (rank >= this) and no darker, by FRAME_EVEN at most,
FRAME_EVEN = -0.08        # than the bone FRAME_HIGHER_MM above the frame (no soft tissue between bone and
FRAME_HIGHER_MM = (5.0, 12.0)  # frame), with no bone-to-soft-tissue edge stronger than FRAME_CLEAR within
FRAME_CLEAR = 0.8         # FRAME_CLEAR_MM above it (the border is not in sight); or where that strip
FRAME_CLEAR_MM = 20.0     # is bone-bright throughout (rank >= FRAME_BRIGHT)
FRAME_BRIGHT = 0.5
FRAME_ALONG_MM = 5.0      # (the relative test: each read as its running median over this much of the border)
FRAME_BONE_RUN_MM = 10.0  # a hidden chin is this wide at least (not a few columns of noise)


def anatomy_scale(shape: tuple[int, int]) -> float:
    """Anatomical pixel size (nominal mm per pixel) of an image of this shape.

    A panoramic field is about ``REF_HEIGHT_MM`` high and ``REF_ASPECT`` times as wide; the larger
    of the two estimates is used, so a crop in either direction keeps the scale of the other.
    """
    h, w = shape
    return REF_HEIGHT_MM / max(h, w / REF_ASPECT, 1.0)


@dataclass
class Border:
    """The traced inferior border across the image, in input pixels."""

    xs: np.ndarray          # (N,) input x of each working column traced
    ys: np.ndarray          # (N,) input y of the border there (nan below the image)
    support: np.ndarray     # (N,) normalised edge strength along the path (0..1)
    chin_x: float           # x where the path switched from descending to rising
    nominal_mm: float       # anatomical mm per input pixel used for all windows

    def side(self, midline_x: float, direction: int) -> tuple[np.ndarray, float] | None:
        """The body border on one side of ``midline_x`` (-1 = image left) ordered from the midline
        outwards as (N, 2) input pixels, and its mean edge support; ``None`` when too short."""
        sel = (self.xs - midline_x) * direction >= 0
        idx = np.nonzero(sel)[0]
        if direction < 0:
            idx = idx[::-1]
        finite = np.isfinite(self.ys[idx])
        if idx.size and not finite[0]:
            # The side starts below the picture (a chin cut off or hidden under a frame): its border
            # starts where the path, back in the picture, first follows a clear edge again (not the
            # climb out of the frame, which would read as the ramus).
            clear = np.nonzero(finite & (self.support[idx] >= SUPPORT_MIN))[0]
            idx = idx[clear[0]:] if clear.size else idx[:0]
            finite = np.isfinite(self.ys[idx])
        idx = idx[finite]
        if idx.size < 4:
            return None
        end = body_end(self.xs[idx], self.ys[idx], self.support[idx], self.nominal_mm)
        idx = idx[:end]
        reach = abs(self.xs[idx[-1]] - midline_x) * self.nominal_mm if idx.size else 0.0
        if reach < BODY_MIN_MM:
            return None
        return np.column_stack([self.xs[idx], self.ys[idx]]), float(np.mean(self.support[idx]))


def body_end(xs: np.ndarray, ys: np.ndarray, support: np.ndarray, nominal_mm: float) -> int:
    """Number of points (from the midline outwards) that belong to the mandibular body: it ends
    where the edge support, averaged over ``SUPPORT_SMOOTH_MM``, stays below ``SUPPORT_MIN`` for
    good, or where the path rises steeper than ``RAMUS_SLOPE`` (the ramus)."""
    step_mm = float(np.median(np.abs(np.diff(xs)))) * nominal_mm if xs.size > 1 else WORK_MM
    sup = ndimage.uniform_filter1d(support, max(1, round(SUPPORT_SMOOTH_MM / step_mm)), mode="nearest")
    good = np.nonzero(sup >= SUPPORT_MIN)[0]
    end = int(good[-1]) + 1 if good.size else 0
    ys_s = ndimage.gaussian_filter1d(ys, max(1.0, 2.0 / step_mm), mode="nearest")
    slope = -np.gradient(ys_s) / np.maximum(np.abs(np.gradient(xs)), 1e-6)  # rise per run
    dist = np.abs(xs - xs[0]) * nominal_mm
    steep = np.nonzero((slope[:end] > RAMUS_SLOPE) & (dist[:end] > BODY_MIN_MM * 0.8))[0]
    if steep.size:
        end = int(steep[0])
    # Past the angle the path leaves the rising border and runs on level (soft-tissue edges, the
    # hyoid): the body ends where the rise falls well below the steepest rise met so far.
    run_max = np.maximum.accumulate(np.clip(slope[:end], 0, None))
    flat = np.nonzero((run_max >= ANGLE_MIN_RISE) & (slope[:end] < ANGLE_FLATTEN * run_max)
                      & (dist[:end] > ANGLE_FROM_MIDLINE_MM))[0]
    if flat.size:
        end = int(flat[0])
    return end


def metal_mask(small: np.ndarray, work_mm: float) -> np.ndarray:
    """Saturated metal and enamel (compact bright regions), dilated by ``METAL_MARGIN_MM``.

    The brightest pixels of a radiograph are metal restorations and enamel, but on many images
    also the dense cortex of the inferior border itself; a bright region that is long and thin
    (``CORTEX_LIKE_MM``: horizontal extent, mean thickness) with no compact bright region below
    it is that cortex and stays unmasked (a bridge lies above the crowns of the other jaw)."""
    bright = small >= METAL_LEVEL
    if not bright.any():
        return bright
    lab, n = ndimage.label(bright)
    # A bright region touching the image's edge is an unexposed collimation frame or a burned-in
    # margin, not metal in the mouth; masking it (with its margin) would erase a border lying near it.
    edge_ids = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    bright[np.isin(lab, edge_ids[edge_ids > 0])] = False
    if not bright.any():
        return bright
    lab, n = ndimage.label(bright)
    area = np.bincount(lab.ravel(), minlength=n + 1)
    boxes = ndimage.find_objects(lab)
    long_thin = [(sl[1].stop - sl[1].start) * work_mm >= CORTEX_LIKE_MM[0]
                 and area[i] * work_mm / (sl[1].stop - sl[1].start) <= CORTEX_LIKE_MM[1]
                 for i, sl in enumerate(boxes, start=1)]
    for i, sl in enumerate(boxes, start=1):
        if not long_thin[i - 1]:
            continue
        # The cortex is the lowest bright structure of the jaw: a long thin region with compact
        # metal below it (a bridge over the lower crowns, an upper bridge) is metal.
        under = any(not long_thin[k] and o[0].start >= sl[0].stop and o[1].start < sl[1].stop
                    and o[1].stop > sl[1].start for k, o in enumerate(boxes))
        if not under:
            bright[lab == i] = False
    if not bright.any():
        return bright
    return ndimage.binary_dilation(bright, iterations=max(1, round(METAL_MARGIN_MM / work_mm)))


def edge_map(small: np.ndarray, sigmas_px: tuple[float, float], metal: np.ndarray, r0: int,
             cols: slice) -> np.ndarray:
    """Normalised 'bright above, dark below' edge strength in [0, 1] (rows from ``r0``)."""
    out = None
    for s in sigmas_px:
        gy = ndimage.gaussian_filter(small, s, order=(1, 0))
        e = np.clip(-gy, 0, None)[r0:]
        e[metal[r0:]] = 0
        region = e[:, cols]
        scale = float(np.percentile(region, EDGE_PERCENTILE)) if region.size else 0.0
        if scale <= 0:
            return np.zeros_like(e)
        e = np.clip(e / (EDGE_SATURATION * scale), 0, 1)
        out = e if out is None else np.sqrt(out * e)
    return out


def _strip_mean(img: np.ndarray, rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Per column j: mean of img[rows[j] + k, j] for k in lo..hi (rows clipped to the image)."""
    n, m = img.shape
    k = np.arange(lo, hi + 1)[:, None]
    r = np.clip(rows[None, :] + k, 0, n - 1)
    return img[r, np.arange(m)[None, :]].mean(axis=0)


def _between(img: np.ndarray, top: np.ndarray, bottom: np.ndarray, reduce, empty: float) -> np.ndarray:
    """Per column j: ``reduce`` (np.mean / np.min / np.max) of img[top[j]..bottom[j], j] (inclusive,
    clipped to the image); ``empty`` where top > bottom."""
    n, m = img.shape
    length = int(max(1, (bottom - top).max() + 1)) if top.size else 1
    r = top[None, :] + np.arange(length)[:, None]
    valid = r <= bottom[None, :]
    vals = img[np.clip(r, 0, n - 1), np.arange(m)[None, :]]
    count = valid.sum(axis=0)
    if reduce is np.mean:
        out = np.where(valid, vals, 0.0).sum(axis=0) / np.maximum(count, 1)
    else:
        out = reduce(np.where(valid, vals, np.inf if reduce is np.min else -np.inf), axis=0)
    return np.where(count > 0, out, empty)


def soft_band_columns(small: np.ndarray, lin: np.ndarray, edge: np.ndarray, rows: np.ndarray,
                      work_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns where the traced edge (``rows``, in ``small``'s rows; ``edge`` aligned with them) is
    the lower edge of a soft-tissue band hanging below the mandible rather than the bone's edge.

    There, a second continuous edge runs 2.5-20 mm above it (the real border) with (a) a step at
    least half as strong, (b) tissue right above it clearly brighter than right above the traced
    edge (bone over a dimmer soft-tissue plateau), (c) a plateau between the two: the intensity
    stops rising and never falls on the way up (bone between would show its cortex's inner margin),
    and (d) a smooth, untextured strip between (soft tissue, not trabecular bone), or an upper step
    ``BAND_DOMINANT`` times as strong.
    Bone above the real border is textured, so an edge inside the mandible (the canal's roof, a
    shadow) fails (c) or (b). The texture test is used only where the image resolves the
    trabeculae (the bone's texture at least ``TEXTURE_RESOLVED`` times the noise floor read in the
    soft tissue below the traced edge); elsewhere only the dominant upper step counts.
    Returns (band flag per column, the upper edge's row per column)."""
    n, m = small.shape
    g0, g1 = (round(v / work_mm) for v in BAND_GAP_MM)
    a0, a1 = (max(1, round(v / work_mm)) for v in NEAR_MM)
    rows = np.asarray(rows, dtype=np.int64)
    offs = np.arange(g1, g0 - 1, -1)  # strip row k = rows - offs[k] (top to bottom)
    rr = rows[None, :] - offs[:, None]
    inside = rr >= 0
    # Only separate edges count (local maxima down each column), not the shoulder of the traced one.
    ridge = edge * (edge >= np.roll(edge, 1, axis=0)) * (edge >= np.roll(edge, -1, axis=0))
    strip = np.where(inside, ridge[np.clip(rr, 0, n - 1), np.arange(m)[None, :]], 0.0)
    k = dp_path(-strip, MAX_STEP, SMOOTH_PENALTY)
    upper = rows - offs[k]

    def step_at(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        above = _strip_mean(small, r, -a1, -a0)
        return above, above - _strip_mean(small, r, a0, a1)

    above1, step1 = step_at(rows)
    above2, step2 = step_at(upper)
    fine = ndimage.gaussian_filter(lin, TEXTURE_SIGMA_MM[0] / work_mm)
    tex = np.abs(fine - ndimage.gaussian_filter(lin, TEXTURE_SIGMA_MM[1] / work_mm))
    gap = rows - upper
    t0 = max(1, round(TEXTURE_MARGIN_MM / work_mm))
    between = _between(tex, upper + t0, rows - t0, np.mean, np.inf)
    b0, b1 = (round(v / work_mm) for v in BONE_ABOVE_MM)
    bone = _strip_mean(tex, upper, -b1, -b0)
    # The texture test only tells bone from soft tissue where the image resolves the trabeculae:
    # the bone's texture must stand clearly above the noise floor, read in the soft tissue below
    # the traced edge. Where it does not (a coarse or noisy image), the test cannot speak and the
    # band needs the dominant upper step instead.
    n0, n1 = (round(v / work_mm) for v in NOISE_BELOW_MM)
    noise = _strip_mean(tex, rows, n0, n1)
    resolved = np.median(bone) >= TEXTURE_RESOLVED * max(float(np.median(noise)), 1e-9)
    strong = step1 > 0
    smooth = (step2 >= BAND_DOMINANT * step1)
    if resolved:
        smooth |= between <= BAND_SMOOTH * bone
    # A band has a plateau between its lower edge and the bone (the intensity stops rising); the
    # rounded inferior border itself brightens gradually over a few mm (the X-ray path through the
    # bone grows), a ramp that keeps rising up to the cortex and is not a band.
    grad = -ndimage.gaussian_filter(small, VALLEY_SIGMA_MM / work_mm, order=(1, 0))
    v0 = max(1, round(VALLEY_MARGIN_MM / work_mm))
    peak = _between(grad, rows - 1, rows + 1, np.max, 0.0)
    valley = _between(grad, upper + v0, rows - v0, np.min, np.inf)
    smooth &= valley <= BAND_VALLEY * np.maximum(peak, 1e-6)
    # ... and it never falls on the way up either: bone between the two edges (the real border's
    # cortex under trabecular bone, root apices above) has an inner margin, a drop from the bright
    # cortex into darker bone; a soft-tissue band has none.
    smooth &= valley >= -BAND_VALLEY * np.maximum(peak, 1e-6)
    cond = (strong & (step2 >= BAND_STEP_RATIO * step1) & (above2 - above1 >= BAND_BRIGHTER * step1)
            & smooth & (gap >= g0) & (upper >= 0))
    return cond, upper


def u_path(reward: np.ndarray, off_reward: float | np.ndarray) -> tuple[np.ndarray, int]:
    """Two-state max-reward path over the columns of ``reward`` (rows x cols) plus a virtual
    bottom row: state 0 (before the chin) may move down freely and up only at a cost, state 1
    (after it) the reverse; the switch 0 -> 1 is free and happens once. Returns the row per
    column (n_rows = below the image) and the column of the switch."""
    n_rows, n_cols = reward.shape
    rows = n_rows + 1
    rew = np.vstack([reward, np.full((1, n_cols), off_reward)])
    offsets = np.arange(-MAX_STEP, MAX_STEP + 1)
    base = SMOOTH_PENALTY * offsets.astype(float) ** 2
    pen0 = base + WRONG_WAY_PENALTY * np.clip(-offsets, 0, None)  # state 0: going up (d < 0) costs
    pen1 = base + WRONG_WAY_PENALTY * np.clip(offsets, 0, None)   # state 1: going down costs
    acc0 = rew[:, 0].copy()
    acc1 = rew[:, 0].copy()
    back0 = np.zeros((n_cols, rows), dtype=np.int8)
    back1 = np.zeros((n_cols, rows), dtype=np.int8)
    from1 = np.zeros((n_cols, rows), dtype=bool)  # state 1 reached from state 0 (switch here)
    neg = -np.inf
    for j in range(1, n_cols):
        c0 = np.full((offsets.size, rows), neg)
        c1 = np.full((offsets.size, rows), neg)
        for k, d in enumerate(offsets):
            # candidate for row r comes from row r - d (d = row change from column j-1 to j)
            if d >= 0:
                c0[k, d:] = acc0[: rows - d] - pen0[k]
                c1[k, d:] = acc1[: rows - d] - pen1[k]
            else:
                c0[k, :d] = acc0[-d:] - pen0[k]
                c1[k, :d] = acc1[-d:] - pen1[k]
        b0 = np.argmax(c0, axis=0)
        b1 = np.argmax(c1, axis=0)
        n0 = c0[b0, np.arange(rows)]
        n1 = c1[b1, np.arange(rows)]
        switch = acc0 > n1  # switching at this column from state 0 at the same row (no step)
        n1 = np.where(switch, acc0, n1)
        back0[j] = offsets[b0]
        back1[j] = np.where(switch, 0, offsets[b1])
        from1[j] = switch
        acc0 = n0 + rew[:, j]
        acc1 = n1 + rew[:, j]
    path = np.empty(n_cols, dtype=np.int64)
    r0, r1 = int(np.argmax(acc0)), int(np.argmax(acc1))
    state = 1 if acc1[r1] >= acc0[r0] else 0
    r = r1 if state else r0
    chin = n_cols - 1 if state == 0 else 0
    for j in range(n_cols - 1, -1, -1):
        path[j] = r
        if j == 0:
            break
        if state == 1:
            if from1[j, r]:
                state = 0
                chin = j
                continue  # same row, previous column in state 0
            r = r - int(back1[j, r])
        else:
            r = r - int(back0[j, r])
    return path, chin


def _runs(flags: np.ndarray, min_len: int) -> np.ndarray:
    """``flags`` with every run of True shorter than ``min_len`` cleared."""
    out = flags.copy()
    lab, n = ndimage.label(flags)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl[0].stop - sl[0].start < min_len:
            out[sl] = False
    return out


def _reaches(path: np.ndarray, chin: int, support: np.ndarray, n_rows: int, work_mm: float) -> tuple[float, float]:
    """How far (mm) the body runs from the chin on each side along ``path`` (``body_end``)."""
    out = []
    for idx in (np.arange(chin, -1, -1), np.arange(chin, path.size)):
        idx = idx[path[idx] < n_rows]
        if idx.size < 4:
            out.append(0.0)
            continue
        end = body_end(idx.astype(float), path[idx].astype(float), support[idx], work_mm)
        out.append(abs(int(idx[end - 1]) - chin) * work_mm if end else 0.0)
    return out[0], out[1]


def _cortex_signal(small: np.ndarray, rows: np.ndarray, cols: np.ndarray, work_mm: float) -> np.ndarray:
    """Per column: mean intensity ``CORTEX_ABOVE_MM`` above the edge at ``rows`` minus the mean
    ``INNER_ABOVE_MM`` above it (positive where a bright cortex sits on the edge)."""
    sub = small[:, cols]
    c0, c1 = (max(1, round(v / work_mm)) for v in CORTEX_ABOVE_MM)
    i0, i1 = (max(1, round(v / work_mm)) for v in INNER_ABOVE_MM)
    return _strip_mean(sub, rows, -c1, -c0) - _strip_mean(sub, rows, -i1, -i0)


def reject_bands(path: np.ndarray, chin: int, small: np.ndarray, lin: np.ndarray, edge: np.ndarray,
                 depth: np.ndarray, work_mm: float, below_row: np.ndarray | float = OFF_IMAGE_REWARD + DEPTH_BONUS
                 ) -> tuple[np.ndarray, int]:
    """Move the path off the lower edge of soft-tissue bands (``soft_band_columns``) onto the bone.

    A band counts only over continuous runs of at least ``BAND_RUN_MM`` of border, on both sides
    of the chin. The band (from 1.5 mm below its edge up to 1.5 mm below the upper edge) is removed
    from ``edge`` and the path searched again. The new path is kept only when the rule can make its
    case: on most of the band's columns it lies within ``BAND_SNAP_MM`` of the upper edge the test
    found, it carries a cortex more clearly than the old edge (``_cortex_signal``), and neither
    side's body got shorter than ``BODY_MIN_MM`` where it was longer. Otherwise the first path
    stands. ``edge`` is updated in place when a band is rejected."""
    n_rows = edge.shape[0]
    near = max(1, round(1.5 / work_mm))
    run = max(1, round(BAND_RUN_MM / work_mm))
    snap = max(1, round(BAND_SNAP_MM / work_mm))
    cols = np.arange(path.size)
    for _ in range(BAND_ROUNDS):
        on = path < n_rows
        if not on.any():
            break
        band = np.zeros(path.size, bool)
        upper = np.full(path.size, -1, dtype=np.int64)
        band[on], upper[on] = soft_band_columns(small[:, on], lin[:, on], edge[:, on], path[on], work_mm)
        band = ndimage.uniform_filter1d(band.astype(float), run, mode="nearest") >= 0.5
        band = _runs(band, run)
        # A soft-tissue band hangs below the whole body (the submandibular tissue is projected on
        # both sides): a run on one side only is taken for something else and left alone.
        if not (band[:chin + 1].sum() >= run and band[chin:].sum() >= run):
            break
        # Drop the band: its edge and the strip up to the upper edge (the broad edge map's shoulder
        # would otherwise hold the path just above the band's edge), then search again.
        trial = edge.copy()
        rows = np.arange(n_rows)[:, None]
        trial[(rows >= upper[None, :] + near) & (rows <= path[None, :] + near) & band[None, :]] = 0.0
        new, new_chin = u_path(trial + depth, below_row)
        on_bone = np.abs(new[band] - upper[band]) <= snap
        support = np.where(path < n_rows, edge[np.minimum(path, n_rows - 1), cols], 0.0)
        new_support = np.where(new < n_rows, trial[np.minimum(new, n_rows - 1), cols], 0.0)
        before = _reaches(path, chin, support, n_rows, work_mm)
        after = _reaches(new, new_chin, new_support, n_rows, work_mm)
        kept = all(a >= BODY_MIN_MM or b < BODY_MIN_MM for a, b in zip(after, before))
        # The bone's edge carries a cortex: right above it brighter than the bone further up. The
        # band's edge has the dimmer band above it; an edge inside the bone (root apices, the
        # canal) has no cortex of its own. The new edge must show a cortex more clearly.
        gain = _cortex_signal(small, new[band], band, work_mm) - _cortex_signal(small, path[band], band, work_mm)
        if on_bone.mean() < 0.5 or not kept or float(np.median(gain)) <= 0:
            break
        edge[:] = trial
        path, chin = new, new_chin
    return path, chin


def bottom_frame(smoothed: np.ndarray) -> np.ndarray:
    """Per column, the first row of a bright, even frame along the image's bottom (the number of
    rows where there is none): in ``smoothed`` (the working image smoothed over ``FRAME_SMOOTH_MM``)
    the bottom row is at least ``FRAME_LEVEL`` bright and the rows above it stay within ``FRAME_TOL``
    of it."""
    return smoothed.shape[0] - edge_run(smoothed, FRAME_LEVEL, FRAME_TOL)


def bone_into_frame(smoothed: np.ndarray, edge: np.ndarray, top: np.ndarray, r0: int, work_mm: float) -> np.ndarray:
    """Per column: does bone run straight into the frame (or the image's bottom edge) at row ``top``,
    over a chin's width (``FRAME_BONE_RUN_MM``)?
    The strip right above it is not soft-tissue dark, no darker than the bone higher up (no soft
    tissue between bone and frame), and no clear bone-to-soft-tissue edge (``edge``, rows from
    ``r0``, frame rows cleared) lies just above it: the border itself is not in sight. Or the strip
    is bright throughout (a dense chin). The relative test (over a frame only) finds the chin where
    the body is a mid grey (rank 0.3-0.45 on low-jawed phantoms), which the brightness test alone
    missed."""
    px = lambda v: max(1, round(v / work_mm))  # noqa: E731
    strip = _between(smoothed, top - px(FRAME_BONE_MM), top - 1, np.min, 0.0)
    higher = _between(smoothed, top - px(FRAME_HIGHER_MM[1]), top - px(FRAME_HIGHER_MM[0]), np.mean, 0.0)
    seen = _between(edge, top - r0 - px(FRAME_CLEAR_MM), top - r0 - 1, np.max, 0.0)
    # each read as its running median along the border (noise and single roots do not split a run)
    strip, higher, seen = (ndimage.median_filter(v, size=px(FRAME_ALONG_MM), mode="nearest")
                           for v in (strip, higher, seen))
    bright = strip >= FRAME_BRIGHT
    # (only over a frame: at the image's own bottom edge a noise or blank picture would pass it)
    relative = ((strip >= FRAME_BONE) & (strip - higher >= FRAME_EVEN) & (seen <= FRAME_CLEAR)
                & (top < smoothed.shape[0]))
    return _runs(relative | bright, max(1, px(FRAME_BONE_RUN_MM)))


def find_border(pixels: np.ndarray, linear: np.ndarray | None = None) -> Border | None:
    """Trace the inferior border across a normalised radiograph (values 0..1; ``pixels`` rank
    normalised, ``linear`` the same image linearly normalised for texture, default ``pixels``)."""
    h, w = pixels.shape
    nominal = anatomy_scale((h, w))
    f = min(1.0, nominal / WORK_MM)
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    if sw < 40 or sh < 20:
        return None
    small = cv2.resize(pixels, (sw, sh), interpolation=cv2.INTER_AREA)
    lin = small if linear is None else cv2.resize(linear, (sw, sh), interpolation=cv2.INTER_AREA)
    work_mm = nominal / f  # nominal mm per working pixel
    metal = metal_mask(small, work_mm)
    r0 = int(ROW_START * sh)
    c0, c1 = int(COL_MARGIN * sw), sw - int(COL_MARGIN * sw)
    if c1 - c0 < 20 or sh - r0 < 10:
        return None
    sig = tuple(s / work_mm for s in EDGE_SIGMA_MM)
    edge = edge_map(small, sig, metal, r0, slice(c0, c1))[:, c0:c1]
    depth = np.linspace(0.0, DEPTH_BONUS, edge.shape[0])[:, None]
    n_rows = edge.shape[0]
    # A bright frame along the bottom (unexposed detector, a burned-in margin) is outside the
    # picture: its rows count as "below the image". Where bone runs straight into the frame or the
    # image's bottom edge (no darker soft tissue between, along FRAME_BONE_RUN_MM at least: a chin,
    # not a few bright columns of noise), the chin is hidden there, and being below the picture pays
    # like a clear edge, so the path does not climb onto the teeth to get round it.
    smoothed = ndimage.gaussian_filter(small, FRAME_SMOOTH_MM / work_mm)
    top = bottom_frame(smoothed)[c0:c1]
    frame = np.arange(n_rows)[:, None] >= (top - r0)[None, :]
    edge[frame] = 0.0
    hidden = bone_into_frame(smoothed[:, c0:c1], edge, top, r0, work_mm)
    below_row = np.where(hidden, 1.0, OFF_IMAGE_REWARD) + DEPTH_BONUS
    off = np.where(frame, below_row[None, :] - depth, 0.0)
    path, chin = u_path(edge + depth * ~frame + off, below_row)
    path, chin = reject_bands(path, chin, small[r0:, c0:c1], lin[r0:, c0:c1], edge, depth * ~frame + off,
                              work_mm, below_row)
    below = (path >= n_rows) | frame[np.minimum(path, n_rows - 1), np.arange(path.size)]
    support = np.where(below, 0.0, edge[np.minimum(path, n_rows - 1), np.arange(path.size)])
    y_small = (r0 + path).astype(float)
    y_small[below] = np.nan
    xs = (np.arange(c0, c1) + 0.5) / f - 0.5
    ys = (y_small + 0.5) / f - 0.5
    return Border(xs=xs, ys=ys, support=support, chin_x=float(xs[chin]), nominal_mm=nominal)
