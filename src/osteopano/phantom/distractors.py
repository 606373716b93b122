"""The phantom's distractors: what lies over, under and around the mandible on a real panoramic
radiograph, each with its own switch and frequency.

:class:`Distractors` holds one probability per distractor (0 = never, 1 = always); the presence
of each is drawn per patient (anatomy) or per image (positioning and acquisition) from its own
random stream, so switching one off leaves everything else in the image unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np

from osteopano.errors import OsteopanoError
from osteopano.phantom.anatomy import Anatomy
from osteopano.phantom.raster import Raster, bandpass_noise, child, resize, smoothstep

ANATOMY_KINDS = ("skull_base", "zygomatic_arches", "nasal_cavity", "hard_palate", "maxillary_sinus", "tongue",
                 "airway", "hyoid", "neck_soft_tissue", "spine_ghost")  # fmt: skip
DENTAL_KINDS = ("restorations", "crowns", "root_fillings", "bridges", "implants", "missing_teeth",
                "edentulous", "mixed_dentition")  # fmt: skip
IMAGE_KINDS = ("head_tilt", "smile", "frown", "incisor_blur", "detector_texture", "exposure_gradient",
               "collimation_frame", "side_letter", "date_text", "low_jaw")  # fmt: skip


@dataclass(frozen=True)
class Distractors:
    """Probability of each distractor (per patient for anatomy and teeth, per image for the rest).

    See docs/phantom.md for what each one draws. ``Distractors.none()`` gives the clean phantom
    (smooth skull, full dentition, no positioning errors or burned-in marks)."""

    # anatomy over and under the mandible (per patient)
    skull_base: float = 1.0  # skull base, orbits, petrous ridges in the upper field
    zygomatic_arches: float = 1.0
    nasal_cavity: float = 1.0  # nasal cavity, septum, turbinates
    hard_palate: float = 1.0  # palate line and its ghost
    maxillary_sinus: float = 1.0
    tongue: float = 0.9  # tongue mass over the body, dark air between tongue and palate
    airway: float = 0.9  # pharyngeal airway: dark oblique band over the ramus and angle
    hyoid: float = 0.85  # hyoid bone below the mandible, double image
    neck_soft_tissue: float = 0.9  # submandibular soft tissue below the border, with its own edge
    spine_ghost: float = 0.9  # cervical spine ghost over the chin, double contour
    # teeth (per patient)
    restorations: float = 0.55  # amalgam fillings (saturating)
    crowns: float = 0.3  # metal / metal-ceramic crowns
    root_fillings: float = 0.3
    bridges: float = 0.12
    implants: float = 0.12
    missing_teeth: float = 1.0  # teeth missing with age (otherwise a full dentition)
    edentulous: float = 0.07  # no teeth in one or both jaws, resorbed ridge
    mixed_dentition: float = 0.0  # children's mixed dentition with tooth germs (not in a 45-85 population)
    # positioning (per image)
    head_tilt: float = 0.25  # rotation up to +-7 deg instead of +-3 deg
    smile: float = 0.2  # chin tipped down: deep U, curved occlusal plane
    frown: float = 0.15  # chin up: flat border, reversed occlusal curve
    incisor_blur: float = 0.25  # incisors out of the focal trough (too far forward / back)
    low_jaw: float = 0.2  # jaw low in the field, border close to the lower edge
    # acquisition and burned-in marks (per image)
    detector_texture: float = 0.7  # fixed-pattern lines and grain of the detector
    exposure_gradient: float = 0.6  # uneven exposure across the field
    collimation_frame: float = 0.6  # bright unexposed frame along the edges
    side_letter: float = 0.7  # burned-in "L" / "R"
    date_text: float = 0.3  # burned-in date

    @classmethod
    def none(cls) -> Distractors:
        """Every probability 0."""
        return cls(**{f.name: 0.0 for f in fields(cls)})

    def with_(self, **probabilities: float) -> Distractors:
        unknown = sorted(set(probabilities) - {f.name for f in fields(self)})
        if unknown:
            raise OsteopanoError(f"unknown distractor(s) {', '.join(unknown)}; known: {', '.join(self.names())}")
        for name, p in probabilities.items():
            if not 0.0 <= float(p) <= 1.0:
                raise OsteopanoError(f"distractor {name}: probability must be in [0, 1], got {p}")
        return replace(self, **{k: float(v) for k, v in probabilities.items()})

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def parse(cls, specs: list[str] | None, *, off: bool = False) -> Distractors:
        """From CLI specs ``NAME=P`` (and ``all=P``); ``off`` starts from :meth:`none`."""
        base = cls.none() if off else cls()
        values: dict[str, float] = {}
        for spec in specs or []:
            name, sep, value = spec.partition("=")
            try:
                p = float(value)
            except ValueError:
                p = float("nan")
            if not sep or math.isnan(p):
                raise OsteopanoError(f"--distractor {spec!r}: expected NAME=PROBABILITY, e.g. hyoid=0.5")
            if name.strip() == "all":
                values.update({n: p for n in cls.names()})
            else:
                values[name.strip()] = p
        return base.with_(**values)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def draw(self, seq: np.random.SeedSequence, kinds: tuple[str, ...]) -> dict[str, bool]:
        """Presence of each of ``kinds``, one independent uniform draw per kind."""
        out = {}
        for i, name in enumerate(kinds):
            u = float(np.random.default_rng(child(seq, i)).random())
            out[name] = u < getattr(self, name)
        return out


class _Grids:
    """Two low-resolution canvases: broad masses (blurred ~3 mm) and fine bony edges (~0.9 mm)."""

    def __init__(self, raster: Raster, k: float):
        self.k = k
        self.raster = raster
        self.lo, self.lo_broad = Raster.make(raster.mm * 2), Raster.make(raster.mm * 8)
        self.fine = np.zeros(self.lo.shape, np.float32)
        self.broad = np.zeros(self.lo_broad.shape, np.float32)
        self.exact = np.zeros(raster.shape, np.float32)  # drawn at full resolution, not blurred

    def _grid(self, c: np.ndarray) -> Raster:
        return self.lo if c is self.fine else self.lo_broad

    def ell(self, c, cx, cy, ax, ay, val, angle=0.0, thick=-1.0, a0=0, a1=360):
        g, k = self._grid(c), self.k
        centre = tuple(int(v) for v in np.round(g.px([cx * k, cy * k]) * 16))
        axes = (max(1, int(round(ax * k / g.mm * 16))), max(1, int(round(ay * k / g.mm * 16))))
        t = -1 if thick < 0 else max(1, int(round(thick * k / g.mm)))
        layer = np.zeros_like(c)
        cv2.ellipse(layer, centre, axes, angle, a0, a1, 1.0, t, cv2.LINE_AA, 4)
        c += val * layer

    def line(self, c, pts, val, thick):
        g = self._grid(c)
        layer = np.zeros_like(c)
        q = np.round(g.px(np.asarray(pts, dtype=np.float64) * self.k) * 16).astype(np.int32)
        cv2.polylines(layer, [q], False, 1.0, max(1, int(round(thick * self.k / g.mm))), cv2.LINE_AA, 4)
        c += val * layer

    def fill(self, c, pts, val):
        g = self._grid(c)
        layer = np.zeros_like(c)
        q = np.round(g.px(np.asarray(pts, dtype=np.float64) * self.k) * 16).astype(np.int32)
        cv2.fillPoly(layer, [q], 1.0, cv2.LINE_AA, 4)
        c += val * layer

    def result(self, rng: np.random.Generator) -> np.ndarray:
        k = self.k
        broad = resize(cv2.GaussianBlur(self.broad, (0, 0), 3.0 * k / self.lo_broad.mm), self.lo.shape)
        fine = cv2.GaussianBlur(self.fine, (0, 0), 0.9 * k / self.lo.mm)
        upper = smoothstep((-self.lo.ys[:, None] + 10) / 30)  # bony clutter, strongest over the skull
        bp = bandpass_noise(rng, self.lo.shape, 1.0 / self.lo.mm, 6 / self.lo.mm)
        ridges = np.exp(-((bp / 0.3) ** 2))  # a network of thin bony edges
        out = broad + fine + 0.004 * bp + 0.035 * upper * (ridges - 0.25)
        return resize(out, self.raster.shape) + self.exact


def _skull_base(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    j = lambda s: float(rng.normal(0, s))
    g.ell(g.broad, 0, -88, 175, 45, 0.4)  # skull base
    g.ell(g.broad, 0, -45, 112 + j(3), 38 + j(2), 0.24)  # maxilla / midface (bright on a real OPG)
    for _ in range(int(rng.integers(10, 20))):  # thin bony edges crossing the upper field
        x0, y0 = rng.uniform(-150, 150), rng.uniform(-80, -35)
        ang, length = rng.uniform(-0.6, 0.6), rng.uniform(20, 70)
        pts = [(x0, y0), (x0 + length * np.cos(ang) / 2, y0 + length * np.sin(ang) / 2 + j(3)),
               (x0 + length * np.cos(ang), y0 + length * np.sin(ang))]
        g.line(g.fine, pts, rng.uniform(0.05, 0.12), rng.uniform(0.6, 2.0))
    for sx in (-1, 1):
        g.ell(g.fine, sx * (36 + j(2)), -74 + j(2), 20, 14, 0.11, thick=1.5, a0=150, a1=390)  # orbit rims
        g.ell(g.broad, sx * 36, -76, 17, 11, -0.15)  # orbit
        g.line(g.fine, [(sx * 20, -66 + j(2)), (sx * 75, -64 + j(2)), (sx * 120, -60 + j(3)), (sx * 160, -52)],
               0.08, 2.5)  # petrous ridge / skull base line  # fmt: skip
        gx = anat.gonial_x[0 if sx < 0 else 1] / anat.k
        g.ell(g.fine, sx * (gx + 3), -43, 10, 8, 0.08, thick=1.2, a0=180, a1=360)  # glenoid fossa
        cx = sx * (gx + 24 + j(3))
        g.ell(g.broad, cx, -22, 24, 56, 0.15)  # mastoid and the lateral cervical spine
        for y in np.arange(-44, 26, rng.uniform(12, 16)):  # vertebral end plates of the lateral spine
            g.line(g.fine, [(cx - 12, y + j(1)), (cx + 12, y + j(1))], 0.05, 1.5)
        g.ell(g.broad, sx * (gx - 8), -52, 40, 16, 0.08)  # articular eminence, zygomatic root


def _zygomatic_arches(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    for sx in (-1, 1):
        y0 = -56 + float(rng.normal(0, 2))
        g.line(g.fine, [(sx * 58, -60), (sx * 95, y0), (sx * 128, -53), (sx * 150, -45)], 0.18, 6)
        g.line(g.fine, [(sx * 60, -52), (sx * 95, y0 + 7), (sx * 125, -47)], 0.04, 1.2)  # lower edge


def _nasal_cavity(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    g.ell(g.broad, 0, -54, 16, 21, -0.4)
    g.line(g.fine, [(0, -80), (float(rng.normal(0, 2)), -58), (0, -36)], 0.06, 1.5)  # septum
    for sx in (-1, 1):
        g.ell(g.fine, sx * 16, -55, 9, 5, 0.05)  # inferior turbinate


def _hard_palate(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    j = lambda s: float(rng.normal(0, s))
    g.line(g.fine, [(-64, -25), (-30, -29 + j(1)), (0, -30), (30, -29 + j(1)), (64, -25)], 0.12, 4)
    dy = rng.uniform(5, 12)  # ghost of the contralateral palate, higher and fainter
    g.line(g.fine, [(-70, -25 - dy), (-30, -30 - dy), (30, -30 - dy), (70, -25 - dy)], 0.05, 3)


def _maxillary_sinus(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    for sx in (-1, 1):
        cx, cy = sx * (50 + rng.normal(0, 2)), -48 + rng.normal(0, 2)
        ax_, ay_ = 27 + rng.normal(0, 2), 16 + rng.normal(0, 1.5)
        g.ell(g.broad, cx, cy, ax_, ay_, -0.12)
        g.ell(g.fine, cx, cy, ax_, ay_, 0.06, thick=0.9, a0=10, a1=200)  # floor and walls


def _tongue(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    """Tongue mass over the body and the dark air between its dorsum and the palate (at the
    level of the upper roots, a band of variable height)."""
    gap = rng.uniform(6, 16)  # mm from the palate (y ~ -30) down to the tongue dorsum
    g.ell(g.broad, 0, 2 - gap / 3, 75, 20, rng.uniform(0.05, 0.1))  # tongue mass
    a = rng.uniform(0.07, 0.13)
    y = -30 + gap / 2
    pts = [(-95, y + 8), (-55, y - 2), (-20, y + 1), (20, y + 1), (55, y - 2), (95, y + 8)]
    g.line(g.broad, pts, -a, gap)  # air between tongue dorsum and palate
    g.line(g.fine, pts, -0.4 * a, 0.6 * gap)


def _airway(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    """Pharyngeal airway: an oblique dark band from behind the soft palate down across the ramus
    and the angle, often leaning forward into the body; it ends in the neck below the angle."""
    for sx in (-1, 1):
        i = 0 if sx < 0 else 1
        gx, gy = anat.gonial_x[i] / anat.k, anat.gonial_y[i] / anat.k
        x0 = gx + rng.uniform(-14, 2)
        lean = rng.uniform(-0.3, 0.05)  # the band runs obliquely, often forward into the body
        a = rng.uniform(0.04, 0.09)
        y1 = gy + rng.uniform(8, 25)
        top, bottom = (sx * x0, -32 + rng.uniform(-5, 5)), (sx * (x0 + lean * (y1 + 32)), y1)
        g.line(g.broad, [top, bottom], -a, rng.uniform(8, 13))
        g.line(g.fine, [top, bottom], -0.25 * a, rng.uniform(6, 10))  # sharper edges of the air column


def _hyoid(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    k = anat.k
    val = rng.uniform(0.12, 0.28)
    for sx in (-1, 1):
        gx = anat.gonial_x[0 if sx < 0 else 1] / k
        cx = sx * rng.uniform(0.4, 0.9) * gx
        border = float(anat.border(np.array(cx * k))) / k
        cy = border + rng.uniform(3, 16)
        ang = sx * rng.uniform(-25, 5)
        g.ell(g.fine, cx, cy, rng.uniform(9, 16), rng.uniform(2.2, 3.5), val, angle=ang)  # body / greater horn
        g.ell(g.fine, cx + sx * rng.uniform(8, 14), cy + rng.uniform(-3, 3), 5, 2.5, 0.7 * val, angle=ang)
        dy = rng.uniform(2, 6)  # double image (contralateral hyoid), fainter
        g.ell(g.fine, cx - sx * rng.uniform(3, 8), cy + dy, rng.uniform(8, 13), 2.5, 0.5 * val, angle=-ang)


def _neck_soft_tissue(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    """Submandibular soft tissue hanging below the border: its lower edge (tissue over air or
    thinner tissue) runs roughly parallel to the border a few mm below it and fades out toward the
    angles. Its strength follows real radiographs (``benchmarks/phantom_vs_real.py``, the strongest
    edge 3-20 mm below the border over the border's own step, per image): real abdi-dev p50 0.15,
    p90 0.42, max 0.92; this phantom p50 0.17, p90 0.41, max 0.49. It used to be p50 0.51, p90 1.34,
    max 2.02: a bone-bright lobe with a hard edge, stronger than the border, that no real image shows.
    The lower edge is soft (2-6 mm), one in five sharp."""
    k = anat.k
    reach = rng.uniform(0.55, 1.0)
    xs = np.linspace(-anat.gonial_x[0] * reach, anat.gonial_x[1] * reach, 60)
    b = anat.border(xs) / k
    xs = xs / k
    drop = rng.uniform(4, 15) * (1 - 0.7 * (np.abs(xs) / xs.max()) ** 3)
    wav = rng.uniform(0.5, 3) * np.sin(xs / rng.uniform(15, 40) + rng.uniform(0, 6))
    lower = b + np.maximum(drop + wav, 1.0)
    val = rng.uniform(0.008, 0.08)
    # on the anatomy raster itself (unblurred): a third of the tissue fades in gradually from 25 mm
    # above the border (no edge over the bone), the rest starts exactly at the border (one step
    # with the border's own); both end at the tissue's lower edge; it fades out at its ends
    r = g.raster
    y0, y1 = np.searchsorted(r.ys, k * (b.min() - 26)), np.searchsorted(r.ys, k * (lower.max() + 1))
    cx, cy = r.xs / k, r.ys[y0:y1, None] / k
    bb = np.interp(cx, xs, b)[None, :]
    low = np.interp(cx, xs, lower)[None, :]
    fade = smoothstep((np.abs(xs).max() - np.abs(cx)) / 12)[None, :] * (np.abs(cx) <= np.abs(xs).max())[None, :]
    aa = 0.6 * r.mm / k
    tissue = 0.35 * smoothstep((cy - bb + 25) / 16) + 0.65 * smoothstep((cy - bb) / aa + 0.5)
    soft = rng.uniform(2, 6) if rng.uniform() > 0.2 else 0.3  # mm: a soft lower edge, sometimes a sharp one
    tissue *= smoothstep((low - cy) / soft + 0.5) * fade
    g.exact[y0:y1] += (val * tissue).astype(np.float32)


def _spine_ghost(g: _Grids, anat: Anatomy, rng: np.random.Generator) -> None:
    w = rng.uniform(14, 21)
    g.ell(g.broad, 0, 62, w, 55, rng.uniform(0.16, 0.36))  # bright over the chin, as on real OPGs
    off = rng.uniform(6, 12)
    for sx in (-1, 1):  # double contour: anterior and posterior edges of the vertebral ghosts
        for d in (0, off):
            g.line(g.fine, [(sx * (w - 4 - d), 10), (sx * (w - 6 - d + rng.normal(0, 2)), 100)],
                   0.035, 2.0)  # fmt: skip


_LAYERS = {
    "skull_base": _skull_base, "zygomatic_arches": _zygomatic_arches, "nasal_cavity": _nasal_cavity,
    "hard_palate": _hard_palate, "maxillary_sinus": _maxillary_sinus, "tongue": _tongue, "airway": _airway,
    "hyoid": _hyoid, "neck_soft_tissue": _neck_soft_tissue, "spine_ghost": _spine_ghost,
}  # fmt: skip


def anatomy_layer(raster: Raster, anat: Anatomy, present: dict[str, bool], seq: np.random.SeedSequence) -> np.ndarray:
    """Attenuation of everything around the mandible that ``present`` switches on, plus the
    always-present head silhouette (soft tissue, dark corners and neck)."""
    g = _Grids(raster, anat.k)
    for i, name in enumerate(ANATOMY_KINDS):
        if present.get(name):
            _LAYERS[name](g, anat, np.random.default_rng(child(seq, i)))
    out = g.result(np.random.default_rng(child(seq, 99)))
    return out + soft_tissue(raster, anat)


def soft_tissue(raster: Raster, anat: Anatomy) -> np.ndarray:
    """Head silhouette: soft tissue over the face, dark corners, dark neck below the mandible."""
    x, y = raster.xs[None, :], raster.ys[:, None]
    lateral = np.exp(-((x / 155.0) ** 4)) * np.exp(-((y / 95.0) ** 6))
    above = smoothstep((anat.border(x) + 4 * anat.k - y) / 14.0)
    return (0.02 + lateral * (0.03 + 0.16 * above)).astype(np.float32)


def describe(present: dict[str, bool]) -> str:
    """The manifest's ``distractors`` cell: the names present, ';'-separated."""
    return ";".join(name for name, on in present.items() if on)

