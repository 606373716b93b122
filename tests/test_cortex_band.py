"""The border search takes the bone's lower edge, not the lower edge of a soft-tissue band below it."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from osteopano.cortex import border as cb
from osteopano.cortex import trace as ct


def _jaw(band_mm: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """A U-shaped textured bone over a smooth soft-tissue band ``band_mm`` thick (0 = none).
    Returns (image, bone edge row per column, anatomical mm per pixel)."""
    h, w = 600, 1230
    mm = cb.anatomy_scale((h, w))
    x = (np.arange(w) - w / 2) * mm
    edge = 0.62 * h + (1 - (x / 110.0) ** 2) * 0.2 * h          # lowest at the chin, rising outwards
    rows = np.arange(h)[:, None]
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 1.0 / mm)
    img = np.full((h, w), 0.15)
    bone = rows < edge[None, :]
    img[bone] = 0.7 + 0.04 * texture[bone] / texture.std()
    cortex = bone & (rows > edge[None, :] - 3.5 / mm)
    img[cortex] = 0.85
    if band_mm > 0:
        img[(rows >= edge[None, :]) & (rows < edge[None, :] + band_mm / mm)] = 0.4
    img = ndimage.gaussian_filter(img, 0.3 / mm) + rng.normal(0, 0.01, (h, w))
    return img.astype(np.float32), edge, mm


def _offset_mm(img: np.ndarray, edge: np.ndarray, mm: float) -> float:
    lin, ranked = ct.normalise_both(img)
    b = cb.find_border(ranked, lin)
    assert b is not None
    xs = np.round(b.xs).astype(int)
    body = np.abs(xs - img.shape[1] / 2) * mm < 80
    ok = body & np.isfinite(b.ys)
    assert ok.mean() > 0.8 * body.mean()
    return float(np.median(np.abs(b.ys[ok] - edge[xs[ok]]))) * mm


def test_border_is_the_bone_edge_not_the_soft_tissue_band_below():
    img, edge, mm = _jaw(band_mm=8.0)
    assert _offset_mm(img, edge, mm) < 2.5  # the coarse 0.5 mm search grid; the band edge lies 8 mm lower


def test_border_without_band_unchanged():
    img, edge, mm = _jaw(band_mm=0.0)
    assert _offset_mm(img, edge, mm) < 2.5  # the coarse 0.5 mm search grid; the band edge lies 8 mm lower


def test_band_columns_flag_only_the_band_edge():
    img, edge, mm = _jaw(band_mm=8.0, seed=1)
    lin, ranked = ct.normalise_both(img)
    f = cb.WORK_MM / mm
    small = cv2.resize(ranked, (round(img.shape[1] / f), round(img.shape[0] / f)), interpolation=cv2.INTER_AREA)
    lins = cv2.resize(lin, small.shape[::-1], interpolation=cv2.INTER_AREA)
    work = cb.WORK_MM
    e = cb.edge_map(small, tuple(s / work for s in cb.EDGE_SIGMA_MM), np.zeros(small.shape, bool), 0,
                    slice(0, small.shape[1]))
    cols = np.arange(small.shape[1])
    bone_rows = np.round(np.interp(cols * f, np.arange(img.shape[1]), edge) / f).astype(int)
    centre = slice(small.shape[1] // 2 - 40, small.shape[1] // 2 + 40)
    band_rows = bone_rows + round(8.0 / work)
    at_band = cb.soft_band_columns(small, lins, e, band_rows, work)[0][centre]
    at_bone = cb.soft_band_columns(small, lins, e, bone_rows, work)[0][centre]
    assert at_band.mean() > 0.8
    assert at_bone.mean() < 0.1


def test_bright_roots_above_a_thin_cortex_do_not_move_the_border():
    """Bright structures ending 12 mm above the border (root apices) over bone with a cortex:
    not a soft-tissue band, the border stays on the bone's edge."""
    img, edge, mm = _jaw(band_mm=0.0, seed=2)
    h, w = img.shape
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    x = (cols - w / 2) * mm
    roots = (np.abs(x) < 50) & ((np.abs(x) % 8) < 4) & (rows < edge[None, :] - 12 / mm) & (rows > edge[None, :] - 30 / mm)
    img = img.copy()
    img[roots] = 0.95
    assert _offset_mm(img, edge, mm) < 2.5


def test_metal_mask_keeps_a_long_thin_cortex_but_not_a_bridge_over_crowns():
    work = cb.WORK_MM
    small = np.zeros((200, 400), np.float32)
    small[150:156, 50:350] = 1.0       # long and thin, nothing bright below: the cortex
    small[40:50, 100:200] = 1.0        # long and thin with compact bright regions below it: a bridge
    small[60:75, 110:130] = 1.0        # ... the crowns of the other jaw
    small[60:75, 160:180] = 1.0
    mask = cb.metal_mask(small, work)
    assert not mask[152, 200]
    assert mask[45, 150] and mask[67, 120]


def _profiles(band_mm: float) -> tuple[np.ndarray, np.ndarray, ct.Band]:
    """Profiles across a cortex 3 mm wide (t = 0 at the traced edge); with ``band_mm`` > 0 a dim
    soft-tissue band of that width lies between the traced edge and the bone."""
    t = np.arange(-3.0, 10.0 + 1e-9, 0.05)
    bone_edge = band_mm
    p = np.where(t < 0, 0.1, 0.25)                       # soft tissue / band
    p = np.where(t >= bone_edge, 0.9, p)                 # cortex
    p = np.where(t >= bone_edge + 3.0, 0.6, p)           # trabecular bone
    if band_mm == 0:
        p = np.where((t >= 0) & (t < 3.0), 0.9, p)
    prof = ndimage.gaussian_filter1d(np.tile(p, (9, 1)), 2.0, axis=1)
    band = ct.Band(outer_t=np.zeros(9), inner_t=np.full(9, bone_edge + 3.0), porosity=np.zeros(9))
    return prof, t, band


def test_inner_step_ratio_tells_a_bone_edge_from_a_band_edge_below_it():
    rows = np.arange(9)
    assert ct.inner_step_ratio(*_profiles(0.0), rows) < 0.5     # the edge is the strongest rise
    assert ct.inner_step_ratio(*_profiles(3.0), rows) > 2.0     # a faint step below the bone's edge
