"""Drawing primitives of the phantom: the anatomy raster (a pixel grid in millimetres),
anti-aliased polygons and strokes, smooth steps, band-passed noise, seeding helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

RASTER_HALF_MM = (170.0, 92.0)  # anatomy raster covers x in [-170, 170], y in [-92, 92] mm
RASTER_MM_PER_WIDTH = 300.0  # raster spacing = 300 mm / image width (independent of the acquisition)


def child(seq: np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    """The i-th child of ``seq``, like ``seq.spawn`` but stateless (spawn counts its calls, so
    re-deriving a patient from a shared SeedSequence would silently give another patient)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, i))


@dataclass
class Raster:
    """The anatomy raster: an axis-aligned pixel grid in mm."""

    mm: float  # mm per raster pixel
    shape: tuple[int, int]
    xs: np.ndarray = field(repr=False)  # (W,) float32 mm of the column centres
    ys: np.ndarray = field(repr=False)  # (H,) float32 mm of the row centres

    @classmethod
    def make(cls, mm: float) -> Raster:
        w, h = (int(math.ceil(2 * half / mm)) for half in RASTER_HALF_MM)
        xs = ((np.arange(w) + 0.5) * mm - RASTER_HALF_MM[0]).astype(np.float32)
        ys = ((np.arange(h) + 0.5) * mm - RASTER_HALF_MM[1]).astype(np.float32)
        return cls(mm=mm, shape=(h, w), xs=xs, ys=ys)

    @classmethod
    def for_width(cls, width: int) -> Raster:
        return cls.make(RASTER_MM_PER_WIDTH / width)

    def px(self, pts_mm: np.ndarray) -> np.ndarray:
        """mm -> raster pixel coordinates (continuous, pixel centres at integers)."""
        return (np.asarray(pts_mm, dtype=np.float64) + RASTER_HALF_MM) / self.mm - 0.5


def poly(canvas: np.ndarray, raster: Raster, pts_mm: np.ndarray, value: float) -> None:
    """Add ``value`` inside a polygon given in mm (anti-aliased, 1/256 px vertex precision)."""
    p = raster.px(pts_mm)
    x0, y0 = np.maximum(np.floor(p.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(p.max(0)).astype(int) + 3, canvas.shape[::-1])
    if x1 <= x0 or y1 <= y0:
        return
    patch = np.zeros((y1 - y0, x1 - x0), np.float32)
    q = np.round((p - (x0, y0)) * 256).astype(np.int32)
    cv2.fillPoly(patch, [q], 1.0, lineType=cv2.LINE_AA, shift=8)
    canvas[y0:y1, x0:x1] += value * patch


def stroke(canvas: np.ndarray, raster: Raster, pts_mm: np.ndarray, thick_mm: float, value: float,
           blur_mm: float) -> None:  # fmt: skip
    """Add a blurred open polyline (mm) to the canvas, working on its bounding patch only."""
    p = raster.px(pts_mm)
    pad = int(math.ceil((thick_mm + 4 * blur_mm) / raster.mm)) + 2
    x0, y0 = np.maximum(np.floor(p.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(p.max(0)).astype(int) + pad, canvas.shape[::-1])
    if x1 <= x0 or y1 <= y0:
        return
    patch = np.zeros((y1 - y0, x1 - x0), np.float32)
    q = np.round((p - (x0, y0)) * 16).astype(np.int32)
    cv2.polylines(patch, [q], False, 1.0, max(1, int(round(thick_mm / raster.mm))), cv2.LINE_AA, 4)
    if blur_mm > 0:
        patch = cv2.GaussianBlur(patch, (0, 0), blur_mm / raster.mm)
    canvas[y0:y1, x0:x1] += value * patch


def smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, smooth cubic in between (float32)."""
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)
    out = t * -2.0
    out += 3.0
    out *= t
    out *= t
    return out


def bandpass_noise(rng: np.random.Generator, shape: tuple[int, int], s1: float, s2: float) -> np.ndarray:
    """Zero-mean, unit-std band-passed Gaussian noise (difference of Gaussians, sigmas in px)."""
    n = rng.standard_normal(shape, dtype=np.float32)
    a = cv2.GaussianBlur(n, (0, 0), s1) - cv2.GaussianBlur(n, (0, 0), s2)
    return a / (a.std() + 1e-6)


def resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def chaikin(pts: np.ndarray, rounds: int) -> np.ndarray:
    """Corner-cutting smoothing of an open polyline (keeps its end points)."""
    for _ in range(rounds):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.vstack([pts[:1], np.stack([q, r], 1).reshape(-1, 2), pts[-1:]])
    return pts
