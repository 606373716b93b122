"""Synthetic panoramic radiographs (OPG) with known ground truth - the project's test bed.

No labelled real data exists here, so every test, benchmark and demo runs on this phantom.
Results on it are synthetic and never clinical evidence.

Latent model (per patient; both images of a patient share it)
--------------------------------------------------------------
* ``age`` ~ U(45, 85) years; ``sex`` female with probability 0.8 (screening populations).
* ``tscore`` (DXA, lowest site) ~ N(mu, 1.0) with mu = -1.15 - 0.05 (age - 45) for women and
  0.9 higher for men. ``label`` = ``osteoporosis`` when tscore <= -2.5, else ``normal``
  (about a third osteoporosis at defaults).
* Endosteal erosion ``e`` = -0.55 tscore + N(0, 0.7): the jaw follows the skeleton only loosely.
* Mandibular cortical width at the mental-foramen site ``w`` = 4.75 - 0.75 e + N(0, 0.3) mm,
  clipped to [1.6, 6.0]; left and right differ by ~5 % (N(0, 0.05) relative). The oracle AUC
  of -MCW for the DXA label is therefore about 0.8, not 1.0.
* Klemetti class from ``e + N(0, 0.25)`` cut at 0.94 and 1.89 (about 45 % C1, 35 % C2, 20 % C3;
  mean MCW about 4.6, 3.7 and 3.0 mm). The class is drawn in the pixels: C1 an even, sharp
  endosteal margin; C2 semilunar lacunae and endosteal cortical residues; C3 heavy residues
  and porous cortex (streaks through the cortex).
  Erosion covers most of the mandibular body on both sides (from the canine region to the
  angle), so it survives downscaling to 224 x 224; eroded cortices are also thinner and less
  dense, and trabecular bone is sparser with lower tscore.

Geometry and rendering
----------------------
Anatomy is defined in millimetres (origin mid-field, x right, y down; a field is ~300 x 146 mm)
and scaled per patient. The inferior border of the mandibular body is the curve
``y = b(x)``; the cortex occupies the band 0 <= d <= w(x) where d is the distance from the
border into the bone (first-order perpendicular distance) and w(x) varies smoothly along the
border, equal to the manifest MCW at the measurement site of each side. The site is a point of
the inferior border (x ~ +-36-43 mm); the mental foramen (a small dark oval) lies on the border
normal through it, 10.5-13.5 mm up. Lacunae, residues and pores are kept 1.5 mm clear of the
site so that the true width there is well defined.
The patient's right is on the image's left (radiographic convention).

Everything is drawn into an anatomy raster (numpy/OpenCV: analytic cortex, polygons for the
mandible and teeth, band-passed noise for trabecular bone, blurred low-resolution drawing for
skull, sinuses, airway, spine ghost and hyoid), then an acquisition is simulated: field width
(pixel spacing = field width / image width, 0.08-0.2 mm at usual widths), rotation (+-3 deg),
shift, exposure (exponential transfer), gamma, contrast, brightness, detector blur and
Poisson-like + Gaussian noise. Manifest site coordinates and normals refer to the final image.

Randomness: ``np.random.SeedSequence(seed)`` has one child per patient (truth and anatomy) and
per image (acquisition and noise), so the same seed gives byte-identical files whatever the
worker count.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from osteopano.errors import OsteopanoError
from osteopano import __version__
from osteopano.io.files import atomic_write_json, atomic_write_text

ASPECT = 0.4875  # height / width of the output image (1600 -> 780)
RASTER_HALF_MM = (170.0, 92.0)  # anatomy raster covers x in [-170, 170], y in [-92, 92] mm
RASTER_MM_PER_WIDTH = 300.0  # raster spacing = 300 mm / image width (independent of the acquisition)
KLEMETTI_CUTS = (0.94, 1.89)  # erosion thresholds C1 | C2 | C3
TWO_IMAGE_FRACTION = 0.18  # share of patients imaged twice
FORMATS = ("png", "dicom")

BASE_COLUMNS = (
    "path", "patient_id", "age", "sex", "tscore", "label", "klemetti", "mcw_left_mm",
    "mcw_right_mm", "pixel_spacing_mm", "site_left_x", "site_left_y", "site_right_x",
    "site_right_y", "normal_left_x", "normal_left_y", "normal_right_x", "normal_right_y",
)  # fmt: skip
ACQ_KEYS = (
    "fov_mm", "rotation_deg", "shift_x_mm", "shift_y_mm", "exposure", "gamma", "contrast",
    "brightness", "noise_poisson", "noise_gauss", "blur_px",
)  # fmt: skip
MANIFEST_COLUMNS = BASE_COLUMNS + tuple(f"acq_{k}" for k in ACQ_KEYS)


# ----------------------------------------------------------------------------- latent model


def _child(seq: np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    """The i-th child of ``seq``, like ``seq.spawn`` but stateless (spawn counts its calls, so
    re-deriving a patient from a shared SeedSequence would silently give another patient)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, i))


@dataclass
class Patient:
    """Ground truth and fixed anatomy of one synthetic patient."""

    patient_id: str
    age: float
    sex: str
    tscore: float
    erosion: float
    klemetti: str
    mcw_right_mm: float  # patient's right = image left (x < 0)
    mcw_left_mm: float
    anatomy_seed: np.random.SeedSequence
    scale: float = 1.0

    @property
    def label(self) -> str:
        return "osteoporosis" if self.tscore <= -2.5 else "normal"


def sample_patient(seq: np.random.SeedSequence, patient_id: str) -> Patient:
    """Draw one patient's age, sex, T-score, erosion, Klemetti class and cortical widths."""
    truth_seq, anatomy_seq = _child(seq, 0), _child(seq, 1)
    rng = np.random.default_rng(truth_seq)
    age = float(rng.uniform(45, 85))
    sex = "F" if rng.random() < 0.8 else "M"
    mu = -1.15 - 0.05 * (age - 45) + (0.9 if sex == "M" else 0.0)
    tscore = float(np.clip(rng.normal(mu, 1.0), -5.0, 2.5))
    erosion = -0.55 * tscore + rng.normal(0, 0.7)
    width = float(np.clip(4.75 - 0.75 * erosion + rng.normal(0, 0.3), 1.6, 6.0))
    grade = erosion + rng.normal(0, 0.25)
    klemetti = "C1" if grade < KLEMETTI_CUTS[0] else "C2" if grade < KLEMETTI_CUTS[1] else "C3"
    asym = rng.normal(0, 0.05)
    return Patient(
        patient_id=patient_id,
        age=round(age, 1),
        sex=sex,
        tscore=round(tscore, 2),
        erosion=float(erosion),
        klemetti=klemetti,
        mcw_right_mm=round(float(np.clip(width * (1 + asym), 1.5, 6.2)), 3),
        mcw_left_mm=round(float(np.clip(width * (1 - asym), 1.5, 6.2)), 3),
        anatomy_seed=anatomy_seq,
        scale=float(rng.uniform(0.94, 1.06)),
    )


def sample_acquisition(rng: np.random.Generator) -> dict[str, float]:
    """Random acquisition parameters (field of view, pose, exposure, detector) of one image."""
    return {
        "fov_mm": float(rng.uniform(285, 320)),
        "rotation_deg": float(rng.uniform(-3, 3)),
        "shift_x_mm": float(rng.uniform(-7, 7)),
        "shift_y_mm": float(rng.uniform(-6, 2)),
        "exposure": float(rng.uniform(1.3, 2.3)),
        "gamma": float(rng.uniform(0.8, 1.25)),
        "contrast": float(rng.uniform(0.85, 1.1)),
        "brightness": float(rng.uniform(-0.05, 0.06)),
        "noise_poisson": float(rng.uniform(0.004, 0.018)),
        "noise_gauss": float(rng.uniform(0.002, 0.01)),
        "blur_px": float(rng.uniform(0.4, 1.1)),
    }


# ----------------------------------------------------------------------------- geometry


@dataclass
class Anatomy:
    """Per-patient shape parameters in millimetres (already multiplied by the patient scale)."""

    k: float
    chin_y: float  # inferior border at the midline
    gonial_x: float  # |x| of the gonial angle
    gonial_y: float
    power: float  # shape exponent of the inferior border
    site_x: tuple[float, float]  # |x| of the measurement site, (right = image left, left)
    foramen_h: tuple[float, float]  # height of the mental foramen above the border
    occ_y: float  # occlusal plane at the midline
    occ_rise: float  # rise of the occlusal plane at x = 72 mm

    def border(self, x: np.ndarray) -> np.ndarray:
        """y of the inferior border of the mandibular body at x (clamped beyond the angle)."""
        r = np.minimum(np.abs(x) / self.gonial_x, 1.0)
        return self.chin_y - (self.chin_y - self.gonial_y) * r**self.power

    def border_slope(self, x: np.ndarray) -> np.ndarray:
        """dy/dx of the inferior border."""
        r = np.minimum(np.abs(x) / self.gonial_x, 1.0)
        return -np.sign(x) * (self.chin_y - self.gonial_y) * self.power * r ** (self.power - 1) / self.gonial_x

    def occlusal(self, x: np.ndarray) -> np.ndarray:
        """y of the occlusal plane (smile curve)."""
        return self.occ_y - self.occ_rise * (np.asarray(x) / (72 * self.k)) ** 2

    def crest(self, x: np.ndarray) -> np.ndarray:
        """y of the lower alveolar crest."""
        return self.occlusal(x) + 10.5 * self.k

    def site(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """(point on the border, unit normal into the bone) in anatomy mm; side -1 = image left."""
        x = side * self.site_x[0 if side < 0 else 1]
        y = float(self.border(np.array(x)))
        s = float(self.border_slope(np.array(x)))
        n = np.array([s, -1.0]) / math.hypot(s, 1.0)
        return np.array([x, y]), n


def sample_anatomy(rng: np.random.Generator, k: float) -> Anatomy:
    """Draw the shape of one patient's jaw (k = overall anatomical scale)."""
    return Anatomy(
        k=k,
        chin_y=k * rng.uniform(54, 59),
        gonial_x=k * rng.uniform(95, 103),
        gonial_y=k * rng.uniform(12, 22),
        power=float(rng.uniform(2.2, 2.8)),
        site_x=(k * rng.uniform(36, 43), k * rng.uniform(36, 43)),
        foramen_h=(k * rng.uniform(10.5, 13.5), k * rng.uniform(10.5, 13.5)),
        occ_y=k * rng.uniform(9, 14),
        occ_rise=k * rng.uniform(8, 13),
    )


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


def _poly(canvas: np.ndarray, raster: Raster, pts_mm: np.ndarray, value: float) -> None:
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


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, smooth cubic in between (float32)."""
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _bandpass_noise(rng: np.random.Generator, shape: tuple[int, int], s1: float, s2: float) -> np.ndarray:
    """Zero-mean, unit-std band-passed Gaussian noise (difference of Gaussians, sigmas in px)."""
    n = rng.standard_normal(shape, dtype=np.float32)
    a = cv2.GaussianBlur(n, (0, 0), s1) - cv2.GaussianBlur(n, (0, 0), s2)
    return a / (a.std() + 1e-6)


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------- anatomy layers


def _skull_layer(raster: Raster, anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Structures drawn at half resolution: broad masses (blurred ~4 mm: midface, skull base,
    sinuses, airway, tongue, spine ghost) and fine bony edges (blurred ~0.5 mm: sinus walls,
    palate, zygomatic arches, nasal septum, glenoid fossae, hyoid, lateral cervical spine)."""
    k = anat.k
    lo, lo_broad = Raster.make(raster.mm * 2), Raster.make(raster.mm * 8)
    fine = np.zeros(lo.shape, np.float32)
    broad = np.zeros(lo_broad.shape, np.float32)
    grids = {id(fine): lo, id(broad): lo_broad}

    def ell(c, cx, cy, ax, ay, val, angle=0.0, thick=-1.0, a0=0, a1=360):
        g = grids[id(c)]
        centre = tuple(int(v) for v in np.round(g.px([cx * k, cy * k]) * 16))
        axes = (int(round(ax * k / g.mm * 16)), int(round(ay * k / g.mm * 16)))
        t = -1 if thick < 0 else max(1, int(round(thick * k / g.mm)))
        layer = np.zeros_like(c)
        cv2.ellipse(layer, centre, axes, angle, a0, a1, 1.0, t, cv2.LINE_AA, 4)
        c += val * layer

    def line(c, pts, val, thick):
        g = grids[id(c)]
        layer = np.zeros_like(c)
        q = np.round(g.px(np.asarray(pts, dtype=np.float64) * k) * 16).astype(np.int32)
        cv2.polylines(layer, [q], False, 1.0, max(1, int(round(thick * k / g.mm))), cv2.LINE_AA, 4)
        c += val * layer

    j = lambda s: float(rng.normal(0, s))  # noqa: E731 - small anatomical jitter
    ell(broad, 0, -45, 105 + j(3), 38 + j(2), 0.13)  # maxilla / midface
    ell(broad, 0, -85, 175, 38, 0.14)  # skull base, orbits
    ell(broad, 0, -2, 70, 16, 0.08)  # tongue
    ell(broad, 0, 50, 24, 60, 0.13)  # spine ghost
    ell(broad, 0, -60, 14, 18, -0.14)  # nasal cavity
    line(broad, [(-60, -13), (-25, -8), (25, -8), (60, -13)], -0.06, 4)  # palatoglossal air space
    line(fine, [(0, -80), (0, -40)], 0.05, 1.5)  # nasal septum
    line(fine, [(-64, -25), (-30, -29 + j(1)), (0, -30), (30, -29 + j(1)), (64, -25)], 0.12, 4)  # hard palate
    for sx in (-1, 1):
        cx, cy = sx * (50 + j(2)), -48 + j(2)
        ax_, ay_ = 27 + j(2), 16 + j(1.5)
        ell(broad, cx, cy, ax_, ay_, -0.12)  # maxillary sinus
        ell(fine, cx, cy, ax_, ay_, 0.06, thick=0.9, a0=10, a1=200)  # its floor and walls
        ell(fine, sx * 16, -55, 9, 5, 0.05)  # inferior turbinate
        line(fine, [(sx * 58, -60), (sx * 95, -56 + j(2)), (sx * 128, -53), (sx * 150, -45)], 0.08, 5)  # zygoma
        ell(broad, sx * (105 + j(2)), 12, 7, 60, -0.10, angle=sx * 6)  # pharyngeal airway over ramus
        ell(fine, sx * (87 + j(3)), 64 + j(3), 13, 3, 0.1, angle=sx * -10)  # hyoid
        ell(fine, sx * (anat.gonial_x / k + 12), -46, 11, 9, 0.08, thick=1.2, a0=180, a1=360)  # glenoid fossa
        ell(broad, sx * 160, 10, 18, 80, 0.08)  # lateral cervical spine / skull
    broad = _resize(cv2.GaussianBlur(broad, (0, 0), 4.0 * k / lo_broad.mm), lo.shape)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.9 * k / lo.mm)
    out = broad + fine + 0.006 * _bandpass_noise(rng, lo.shape, 1.5 / lo.mm, 8 / lo.mm)  # bony clutter
    return _resize(out, raster.shape)


def _soft_tissue(raster: Raster, anat: Anatomy) -> np.ndarray:
    """Head silhouette: soft tissue over the face, dark corners, dark neck below the mandible."""
    x, y = raster.xs[None, :], raster.ys[:, None]
    lateral = np.exp(-((x / 155.0) ** 4)) * np.exp(-((y / 95.0) ** 6))
    above = _smoothstep((anat.border(x) + 10 * anat.k - y) / 25.0)
    return (0.03 + lateral * (0.05 + 0.10 * above)).astype(np.float32)


def _mandible_polygon(anat: Anatomy, side_jitter: np.ndarray) -> np.ndarray:
    """Outline of the mandible in mm: inferior border, both rami with condyle and coronoid,
    alveolar crest."""
    k, gx = anat.k, anat.gonial_x
    xs = np.arange(-gx, gx + 0.25, 0.5)
    lower = np.stack([xs, anat.border(xs)], 1)

    def ramus(sx: int) -> np.ndarray:
        jx, jy = side_jitter[0 if sx < 0 else 1]
        gy = anat.gonial_y
        post = [(gx + 2 * k, gy - 6 * k), (gx + 5 * k, gy - 22 * k), (gx + 9 * k + jx, -30 * k + jy)]
        phi = np.linspace(-np.pi / 4, 1.15 * np.pi, 12)  # condylar head: posterior -> top -> anterior
        head = np.stack([gx + 11 * k + jx + 8 * k * np.cos(phi), -43 * k + jy - 6 * k * np.sin(phi)], 1)
        rest = [(gx + 1 * k, -34 * k + jy), (gx - 6 * k, -29 * k), (gx - 14 * k, -33 * k),
                (gx - 20 * k, -43 * k + jy), (gx - 24 * k, -42 * k + jy), (gx - 26 * k, -28 * k),
                (gx - 27 * k, -10 * k), (gx - 29 * k, 0.0),
                (gx - 32 * k, float(anat.crest(gx - 32 * k)) - 2 * k)]  # fmt: skip
        pts = np.vstack([post, head, rest])
        pts[:, 0] *= sx
        return pts if sx > 0 else pts[::-1]

    xc = np.arange(gx - 34 * k, -(gx - 34 * k) - 0.1, -1.0)
    crest = np.stack([xc, anat.crest(xc)], 1)
    upper = _chaikin(np.vstack([ramus(1), crest, ramus(-1)]), 3)
    return np.vstack([lower, upper])


def _chaikin(pts: np.ndarray, rounds: int) -> np.ndarray:
    """Corner-cutting smoothing of an open polyline (keeps its end points)."""
    for _ in range(rounds):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.vstack([pts[:1], np.stack([q, r], 1).reshape(-1, 2), pts[-1:]])
    return pts


def _width_profile(x: np.ndarray, anat: Anatomy, patient: Patient, rng: np.random.Generator) -> np.ndarray:
    """Cortical width along the border: thicker at the chin, thinner toward the angle, with a
    smooth per-patient undulation; exactly the manifest MCW at each side's site."""
    gx = anat.gonial_x

    def shape(u: np.ndarray, ph: float, amp: float) -> np.ndarray:
        r = np.minimum(np.abs(u) / gx, 1.2)
        return (1.12 - 0.35 * r**2) * (1 + amp * np.sin(2.3 * np.pi * r + ph))

    sides = []
    for w_site, sx in ((patient.mcw_right_mm, anat.site_x[0]), (patient.mcw_left_mm, anat.site_x[1])):
        ph, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.07)
        sides.append(w_site / shape(np.array(sx), ph, amp) * shape(x, ph, amp))
    t = _smoothstep((x + 8) / 16)  # blend right (x < 0) and left across the midline
    return ((1 - t) * sides[0] + t * sides[1]).astype(np.float32)


def _teeth_layer(raster: Raster, anat: Anatomy, patient: Patient, rng: np.random.Generator) -> np.ndarray:
    """Upper and lower teeth: enamel crowns, dentin, pulp canals, roots with a dark periodontal
    space; some missing (more with age), a few bright restorations."""
    k = anat.k
    canvas = np.zeros(raster.shape, np.float32)
    widths = {1: [5.8, 6.2, 7.5, 7.8, 8.0, 12.0, 11.5, 11.0], -1: [8.5, 7.5, 8.2, 7.8, 7.5, 11.0, 10.5, 10.0]}
    p_missing = 0.03 + 0.006 * (patient.age - 45)
    for jaw in (1, -1):  # 1 = lower (crowns point up), -1 = upper
        for sx in (-1, 1):
            pos = 0.4 * k
            for i, w0 in enumerate(widths[jaw]):
                w = 1.12 * w0 * k * rng.uniform(0.95, 1.05)
                xc = sx * (pos + w / 2)
                pos += w + rng.uniform(-0.3, 0.5) * k
                missing = rng.random() < p_missing * (1.6 if i >= 5 else 0.7)
                if (i == 7 and rng.random() < 0.5) or missing:
                    continue
                _draw_tooth(canvas, raster, anat, rng, xc, w, jaw, i, sx)
    return cv2.GaussianBlur(canvas, (0, 0), 0.12 / raster.mm)


def _draw_tooth(canvas: np.ndarray, raster: Raster, anat: Anatomy, rng: np.random.Generator, xc: float, w: float,
                jaw: int, i: int, sx: int) -> None:  # fmt: skip
    """Draw one tooth (index i from the midline, 5-7 = molars) additively into canvas."""
    k = anat.k
    top = float(anat.occlusal(np.array(xc))) - (1.0 * k if jaw < 0 else 0.0)
    tilt = np.deg2rad(sx * max(i - 2, 0) * 1.8 * jaw + rng.normal(0, 2.5))
    axis = np.array([math.sin(tilt), jaw * math.cos(tilt)])  # from the occlusal tip into the jaw
    across = np.array([math.cos(tilt), -jaw * math.sin(tilt)])

    def place(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.array([xc, top]) + np.outer(np.asarray(u), across) + np.outer(np.asarray(v), axis)

    def fill(u: np.ndarray, v: np.ndarray, value: float) -> None:
        _poly(canvas, raster, place(u, v), value)

    hw = w / 2 * 0.96
    hc = (10.0 if i < 5 else 9.0) * k * rng.uniform(0.92, 1.08)
    lr = (17.0 if i < 5 else 15.0) * k * rng.uniform(0.9, 1.1) * (1.2 if i == 2 else 1.0)
    if i < 3:  # incisors and canine: tapered edge / cusp tip
        cu = np.array([-0.78, -0.95, -0.9, -0.55, 0.0, 0.55, 0.9, 0.95, 0.78]) * hw
        cv = np.array([1.0, 0.55, 0.2, 0.04, 0.0 if i < 2 else -0.05, 0.04, 0.2, 0.55, 1.0]) * hc
    else:  # premolars and molars: cusps
        cu = np.array([-0.82, -0.98, -0.95, -0.7, -0.3, 0.0, 0.3, 0.7, 0.95, 0.98, 0.82]) * hw
        cv = np.array([1.0, 0.55, 0.18, 0.0, 0.07, 0.13, 0.07, 0.0, 0.18, 0.55, 1.0]) * hc
    roots = [(-0.78, 0.78, 0.0)] if i < 5 else [(-0.85, -0.1, -0.3), (0.1, 0.85, 0.3)]
    for grow, value in ((0.9 * k, -0.04), (0.0, 0.2)):  # periodontal space, then the root
        for u0, u1, lean in roots:
            um = (u0 + u1) / 2
            ru = np.array([u0 * hw - grow / 2, (um + lean - 0.15) * hw - grow / 3,
                           (um + lean + 0.15) * hw + grow / 3, u1 * hw + grow / 2])  # fmt: skip
            mid = 0.62 * np.array([u0 * hw - grow / 2, u1 * hw + grow / 2]) + 0.38 * (um + lean) * hw
            ru = np.array([ru[0], mid[0], ru[1], ru[2], mid[1], ru[3]])
            rv = np.array([hc * 0.9, hc + 0.6 * lr, hc + lr + grow / 2, hc + lr + grow / 2, hc + 0.6 * lr, hc * 0.9])
            fill(ru, rv, value)
    fill(cu, cv, 0.4)  # enamel cap (over dentin)
    fill(cu * 0.8, np.clip(cv, 0.1 * hc, None) + 0.1 * hc, -0.07)  # dentin core
    if i >= 4 and rng.random() < 0.12:  # amalgam restoration
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        fill(0.45 * hw * np.cos(t) * (1 + 0.1 * np.sin(3 * t)), hc * (0.25 + 0.22 * np.sin(t)), 0.8)
    for u0, u1, lean in roots:  # pulp chamber and canals
        um = (u0 + u1) / 2
        fill(np.array([um - 0.12, um + lean - 0.04, um + lean + 0.04, um + 0.12]) * hw,
             np.array([0.5 * hc, hc + lr * 0.93, hc + lr * 0.93, 0.5 * hc]), -0.07)  # fmt: skip
    fill(np.array([-0.4, -0.3, 0.3, 0.4]) * hw, np.array([0.95 * hc, 0.55 * hc, 0.55 * hc, 0.95 * hc]), -0.06)


# ----------------------------------------------------------------------------- image


@dataclass
class PhantomImage:
    """One rendered phantom: pixels, pixel spacing, truth row (manifest fields) and masks."""

    pixels: np.ndarray  # uint16 (H, W)
    pixel_spacing_mm: float
    truth: dict[str, Any]
    mandible_mask: np.ndarray  # uint8 0/255
    cortex_mask: np.ndarray  # uint8 0/255


def _stroke(canvas: np.ndarray, raster: Raster, pts_mm: np.ndarray, thick_mm: float, value: float,
            blur_mm: float) -> None:  # fmt: skip
    """Add a blurred open polyline (mm) to the canvas, working on its bounding patch only."""
    p = raster.px(pts_mm)
    pad = int(math.ceil((thick_mm + 4 * blur_mm) / raster.mm)) + 2
    x0, y0 = np.maximum(np.floor(p.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(p.max(0)).astype(int) + pad, canvas.shape[::-1])
    patch = np.zeros((y1 - y0, x1 - x0), np.float32)
    q = np.round((p - (x0, y0)) * 16).astype(np.int32)
    cv2.polylines(patch, [q], False, 1.0, max(1, int(round(thick_mm / raster.mm))), cv2.LINE_AA, 4)
    canvas[y0:y1, x0:x1] += value * cv2.GaussianBlur(patch, (0, 0), blur_mm / raster.mm)


def render_anatomy(patient: Patient, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Anatomy, Raster]:
    """Attenuation-like raster of the patient's anatomy plus mandible and cortex masks."""
    raster = Raster.for_width(width)
    rng = np.random.default_rng(patient.anatomy_seed)
    anat = sample_anatomy(rng, patient.scale)
    k, mm = anat.k, raster.mm
    xs, ys = raster.xs, raster.ys
    x, y = xs[None, :], ys[:, None]  # broadcasting views of the grid
    half = (raster.shape[0] // 2 + 1, raster.shape[1] // 2 + 1)

    att = _soft_tissue(raster, anat) + _skull_layer(raster, anat, rng)

    # maxillary alveolar bone around the upper roots, with its own trabecular texture
    up = anat.occlusal(xs) - 9.0 * k
    m0, m1 = int(np.searchsorted(ys, up.min() - 40 * k)), int(np.searchsorted(ys, up.max() + 1))
    ym = ys[m0:m1, None]
    maxilla = _smoothstep((up - ym) / 3.0) * _smoothstep((ym - (up - 28 * k)) / 10.0)
    maxilla *= _smoothstep((78 * k - np.abs(xs)) / 8.0)
    tex_max = np.exp(-((_bandpass_noise(rng, half, 0.25 / mm, 1.25 / mm) / 0.4) ** 2))
    att[m0:m1] += maxilla * (0.08 + 0.05 * _resize(tex_max, raster.shape)[m0:m1])

    # mandible outline
    jitter = rng.normal(0, 1.5, (2, 2)) * k
    mand = np.zeros(raster.shape, np.float32)
    _poly(mand, raster, _mandible_polygon(anat, jitter), 1.0)
    np.clip(mand, 0, 1, out=mand)

    # per-column quantities along the inferior border (the raster is axis-aligned)
    ax = np.abs(xs)
    border, slope = anat.border(xs), anat.border_slope(xs)
    w = _width_profile(xs, anat, patient, rng)
    grade = {"C1": 0, "C2": 1, "C3": 2}[patient.klemetti]
    strength = float(np.clip(patient.erosion / 2.5, 0.0, 1.0))
    # erosion envelope: from the canine region to the angle on both sides, 1.5 mm clear of the sites
    env = _smoothstep((ax - 10 * k) / 8) * _smoothstep((anat.gonial_x - 3 - ax) / 6)
    for side in (-1, 1):
        env *= _smoothstep((np.abs(xs - side * anat.site_x[0 if side < 0 else 1]) - 1.5) / 1.0)
    w_eff = w.copy()
    for _ in range(int(rng.integers(12, 20)) * grade):  # semilunar lacunae in the endosteal margin
        cx = rng.uniform(-anat.gonial_x, anat.gonial_x)
        r = rng.uniform(1.2, 2.8) * k
        depth = rng.uniform(0.25, 0.5) * (0.7 + 0.3 * grade)
        w_eff -= env * depth * w * np.sqrt(np.clip(1 - ((xs - cx) / r) ** 2, 0, None))
    w_eff = np.maximum(w_eff, 0.6).astype(np.float32)
    in_body = _smoothstep((anat.gonial_x + 2 - ax) / 5).astype(np.float32)

    # rows holding the inferior border region (d from -2 to 16 mm); everything below is per-band
    r0 = int(np.searchsorted(ys, anat.gonial_y - 17 * k))
    r1 = int(np.searchsorted(ys, anat.chin_y + 3))
    yb = ys[r0:r1, None]
    d = ((border[None, :] - yb) / np.sqrt(1 + slope * slope)[None, :]).astype(np.float32)
    aa = mm * 0.6
    band = np.zeros(raster.shape, np.float32)
    band[r0:r1] = _smoothstep(d / aa + 0.5) * (1 - _smoothstep((d - w_eff) / aa + 0.5)) * in_body

    # trabeculae = zero-crossing network of band-passed noise; thinner/sparser when osteoporotic
    t_lat = patient.tscore + rng.normal(0, 0.5)
    trab_level = float(np.clip(0.17 + 0.014 * t_lat, 0.11, 0.2))
    thick = float(np.clip(0.42 + 0.05 * t_lat, 0.2, 0.5))
    tex = _resize(np.exp(-((_bandpass_noise(rng, half, 0.22 / mm, 1.0 / mm) / thick) ** 2)), raster.shape)
    ramus = _smoothstep((ax - (anat.gonial_x - 24 * k)) / 8)[None, :]
    ramus = ramus * _smoothstep((anat.gonial_y - 8 - ys) / 10)[:, None]  # thinner bone plate
    inner = 1 - band
    # soft-edged fill except along the inferior border, where the edge must stay exact
    sharp = np.zeros(raster.shape, np.float32)
    sharp[r0:r1] = in_body * _smoothstep((9 - d) / 2)
    sharp[r1:] = in_body
    fill = _resize(cv2.GaussianBlur(_resize(mand, half), (0, 0), 0.5 / mm), raster.shape)
    fill += sharp * (mand - fill)
    crest = anat.crest(xs)
    c0, c1 = int(np.searchsorted(ys, crest.min())), int(np.searchsorted(ys, crest.max() + 6 * k))
    crest_fade = np.where(np.arange(raster.shape[0]) < c0, 0.55, 1.0).astype(np.float32)[:, None] * fill
    crest_fade[c0:c1] = (0.55 + 0.45 * _smoothstep((ys[c0:c1, None] - crest) / (6 * k))) * fill[c0:c1]
    att += crest_fade * ((trab_level - 0.05 * ramus) * (0.8 + 0.2 * inner) + 0.09 * tex * inner)

    # thin generic cortex on the rest of the outline (ramus, condyle, crest)
    edge = cv2.distanceTransform((mand > 0.5).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * mm
    rim = mand * np.clip((1.8 - edge) / 0.8, 0, 1)
    c1 = int(np.searchsorted(ys, crest.max() + 5))
    rim[:c1] *= 1 - _smoothstep((74 * k - ax) / 4) * _smoothstep((crest + 5 - ys[:c1, None]) / 2)
    rim[r0:r1] *= 1 - in_body * _smoothstep((6 - d) / 2)
    rim[r1:] *= 1 - in_body
    att += 0.12 * rim

    # inferior-border cortex; border-aligned noise (streaks along the border) for pores/residues
    map_u = np.broadcast_to(((xs + 130) / 0.5).astype(np.float32), d.shape)
    map_v = (np.clip(d, -2, 16) / 0.1 + 25).astype(np.float32)
    bn_shape = (220, 560)
    sub = att[r0:r1]
    cortex_density = 0.26 - 0.05 * grade * (0.5 + 0.5 * strength)
    if grade >= 2:  # porous cortex
        bn2 = cv2.remap(_bandpass_noise(rng, bn_shape, 0.8, 2.5), map_u, map_v, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        sub += cortex_density * band[r0:r1] * (1 - 0.7 * _smoothstep((bn2 - 0.45) / 0.5) * env)
    else:
        sub += cortex_density * band[r0:r1]
    if grade >= 1:  # endosteal cortical residues just above the margin
        bn = cv2.remap(_bandpass_noise(rng, bn_shape, 1.0, 3.0), map_u, map_v, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        zone = _smoothstep((d - w_eff - 0.2) / 0.3) * (1 - _smoothstep((d - w_eff - 1.2 * grade - 0.8) / 1.5))
        resid = _smoothstep((bn - (1.2 - 0.25 * grade)) / 0.5) * zone * (env * in_body)
        sub += 0.1 * (0.7 + 0.3 * grade) * resid * mand[r0:r1]

    # mental foramina (small dark ovals above the sites) and mandibular canals
    for side in (-1, 1):
        p, n = anat.site(side)
        fx, fy = p + n * anat.foramen_h[0 if side < 0 else 1]
        t = np.linspace(0, 2 * np.pi, 24)
        _poly(att, raster, np.stack([fx + 1.6 * k * np.cos(t), fy + 1.2 * k * np.sin(t)], 1), -0.07)
        end_x = side * (anat.gonial_x - 14 * k)
        cxs = np.linspace(fx, end_x, 30)
        cys = fy - 22 * k * ((cxs - fx) / (end_x - fx)) ** 2 + 4 * k * np.sin(np.linspace(0, np.pi, 30))
        _stroke(att, raster, np.stack([cxs, cys], 1), 2.6 * k, -0.04, 0.6)

    att += _teeth_layer(raster, anat, patient, rng)
    att = cv2.GaussianBlur(att, (0, 0), 0.25)  # the foramen polygon etc. are not pixel-sharp

    cortex_mask = ((band > 0.5) & (mand > 0.5)).astype(np.float32)
    return att, (mand > 0.5).astype(np.float32), cortex_mask, anat, raster


def _field_matrices(raster: Raster, acq: dict[str, float], width: int, height: int):
    """Affine maps between final image pixels and anatomy mm (field = R(theta) anatomy + shift)."""
    s = acq["fov_mm"] / width
    th = math.radians(acq["rotation_deg"])
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    shift = np.array([acq["shift_x_mm"], acq["shift_y_mm"]])
    centre = np.array([width / 2 - 0.5, height / 2 - 0.5])

    def to_pixel(p_mm: np.ndarray) -> np.ndarray:
        return (rot @ p_mm + shift) / s + centre

    # pixel -> anatomy mm -> raster px, as one 2x3 matrix for cv2.warpAffine(WARP_INVERSE_MAP)
    a = rot.T * s / raster.mm
    b = (rot.T @ (-centre * s - shift) + np.array(RASTER_HALF_MM)) / raster.mm - 0.5
    return np.hstack([a, b[:, None]]), to_pixel, rot, s


def render(
    rng_or_seed: np.random.Generator | np.random.SeedSequence | int,
    *,
    width: int = 1600,
    patient: Patient | None = None,
    acquisition: dict[str, float] | None = None,
    patient_id: str = "P0000",
) -> PhantomImage:
    """Render one phantom radiograph in memory.

    ``rng_or_seed`` seeds whatever is not given: the patient (latent truth and anatomy) and the
    acquisition. Passing the same ``patient`` with another acquisition gives a second image of the
    same anatomy and truth.
    """
    if width < 200:
        raise OsteopanoError(f"--width must be at least 200 px, got {width}")
    if isinstance(rng_or_seed, np.random.Generator):
        seq = np.random.SeedSequence(int(rng_or_seed.integers(0, 2**63)))
    elif isinstance(rng_or_seed, np.random.SeedSequence):
        seq = rng_or_seed
    else:
        seq = np.random.SeedSequence(int(rng_or_seed))
    patient_seq, acq_seq, noise_seq = (_child(seq, i) for i in range(3))
    if patient is None:
        patient = sample_patient(patient_seq, patient_id)
    if acquisition is None:
        acquisition = sample_acquisition(np.random.default_rng(acq_seq))
    height = int(round(width * ASPECT))
    att, mand, ctx, anat, raster = render_anatomy(patient, width)
    mat, to_pixel, rot, spacing = _field_matrices(raster, acquisition, width, height)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    att = cv2.warpAffine(att, mat, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    mand = cv2.warpAffine(mand, mat, (width, height), flags=flags)
    ctx = cv2.warpAffine(ctx, mat, (width, height), flags=flags)

    # acquisition: exponential transfer, gamma, contrast/brightness, detector blur, noise
    a = acquisition
    img = (1 - np.exp(-a["exposure"] * np.clip(att, 0, None))) / (1 - math.exp(-a["exposure"] * 1.1))
    lo, hi = np.percentile(img[::4, ::4], [0.5, 99.7])  # the modality's automatic windowing
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** a["gamma"]
    img = a["brightness"] + 0.04 + a["contrast"] * 0.9 * img
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), a["blur_px"])
    nrng = np.random.default_rng(noise_seq)
    img = img + a["noise_poisson"] * np.sqrt(np.clip(img, 0, None)) * nrng.standard_normal(img.shape, np.float32)
    img = img + a["noise_gauss"] * nrng.standard_normal(img.shape, np.float32)
    pixels = np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)

    truth: dict[str, Any] = {
        "patient_id": patient.patient_id, "age": patient.age, "sex": patient.sex,
        "tscore": patient.tscore, "label": patient.label, "klemetti": patient.klemetti,
        "mcw_left_mm": patient.mcw_left_mm, "mcw_right_mm": patient.mcw_right_mm,
        "pixel_spacing_mm": round(spacing, 6),
    }  # fmt: skip
    for name, side in (("left", 1), ("right", -1)):  # patient's right = image left (x < 0)
        p, n = anat.site(side)
        px = to_pixel(p)
        nn = rot @ n
        truth[f"site_{name}_x"], truth[f"site_{name}_y"] = round(float(px[0]), 3), round(float(px[1]), 3)
        truth[f"normal_{name}_x"], truth[f"normal_{name}_y"] = round(float(nn[0]), 5), round(float(nn[1]), 5)
    for key in ACQ_KEYS:
        truth[f"acq_{key}"] = round(acquisition[key], 5)
    return PhantomImage(
        pixels=pixels,
        pixel_spacing_mm=spacing,
        truth=truth,
        mandible_mask=((mand > 0.5) * 255).astype(np.uint8),
        cortex_mask=((ctx > 0.5) * 255).astype(np.uint8),
    )


# ----------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class _Job:
    stem: str
    patient_index: int
    image_seq: np.random.SeedSequence
    patient_seq: np.random.SeedSequence


def plan(n: int, seed: int) -> list[_Job]:
    """Assign n images to patients (~18 % of patients imaged twice) with their seeds."""
    root = np.random.SeedSequence(seed)
    plan_seq, patients_seq = _child(root, 0), _child(root, 1)
    rng = np.random.default_rng(plan_seq)
    jobs: list[_Job] = []
    pi = 0
    while len(jobs) < n:
        pseq = _child(patients_seq, pi)
        shots = 2 if (rng.random() < TWO_IMAGE_FRACTION and n - len(jobs) >= 2) else 1
        for shot in range(shots):
            iseq = _child(pseq, 1000 + shot)
            jobs.append(_Job(f"phantom_{len(jobs):05d}", pi, iseq, pseq))
        pi += 1
    return jobs


def _patient_of(job: _Job) -> Patient:
    return sample_patient(job.patient_seq, f"P{job.patient_index:05d}")


def _write_one(args: tuple[_Job, str, int, str, bool, int]) -> dict[str, Any]:
    """Render and write one image (and masks); returns its manifest row. Runs in a worker."""
    job, out_dir, width, fmt, masks, seed = args
    out = Path(out_dir)
    ph = render(job.image_seq, width=width, patient=_patient_of(job))
    name = f"{job.stem}.{'png' if fmt == 'png' else 'dcm'}"
    if fmt == "png":
        from osteopano.io.images import write_png16

        write_png16(out / name, ph.pixels)
    else:
        _write_dicom(out / name, ph, seed, job.stem)
    if masks:
        from osteopano.io.files import atomic_path

        for kind, arr in (("mandible", ph.mandible_mask), ("cortex", ph.cortex_mask)):
            with atomic_path(out / "masks" / f"{job.stem}_{kind}.png") as tmp:
                cv2.imwrite(str(tmp), arr)
    return {"path": name, **ph.truth}


def _write_dicom(path: Path, ph: PhantomImage, seed: int, stem: str) -> None:
    """Write a DICOM whose UIDs derive from the seed and file stem, so the same seed gives identical bytes."""
    from osteopano.io.images import write_dicom

    write_dicom(path, ph.pixels, ph.truth["pixel_spacing_mm"], patient_id=ph.truth["patient_id"],
                uid_seed=f"osteopano-phantom-{seed}-{stem}")  # fmt: skip


def generate(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    fmt: str = "png",
    width: int = 1600,
    masks: bool = False,
    progress: bool = True,
    workers: int = 2,
    on_image: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Write n phantom radiographs and ``out_dir/manifest.csv``; return the manifest rows.

    Output is byte-identical for the same arguments whatever ``workers`` is.
    """
    if n < 1:
        raise OsteopanoError(f"--n must be at least 1, got {n}")
    if fmt not in FORMATS:
        raise OsteopanoError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if width < 200:
        raise OsteopanoError(f"--width must be at least 200 px, got {width}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OsteopanoError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(job, str(out), width, fmt, masks, seed) for job in plan(n, seed)]
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task("synthesising", total=n)
    try:
        with contextlib.ExitStack() as stack:
            mapper = map
            if workers > 1 and n > 1:
                mapper = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map
            for row in mapper(_write_one, tasks):
                rows.append(row)
                if bar is not None:
                    bar.advance(task_id)
                if on_image:
                    on_image()
    finally:
        if bar is not None:
            bar.stop()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", buf.getvalue())
    # Provenance sidecar read by osteopano.data.dataset: runs trained on it are labelled synthetic.
    atomic_write_json(out / "dataset.json", {
        "synthetic": True,
        "generator": "osteopano.phantom.generate",
        "osteopano_version": __version__,
        "n": n, "seed": seed, "format": fmt, "width": width,
        "note": "Synthetic panoramic phantom: results on it are not clinical evidence.",
    })  # fmt: skip
    return rows
