"""Shape of one patient's jaw in millimetres: the inferior border, measurement sites and mental
foramina, occlusal plane and alveolar crest, the mandible outline and the cortical width profile.

Coordinates: origin mid-field, x right, y down; the patient's right is at x < 0 (image left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from osteopano.phantom.raster import chaikin, smoothstep

# Proportions of a real OPG (image mm at ~0.1 mm/px, e.g. DC1000 images): the gonial angles near
# 12-14 % and 86-88 % of the width, 24-34 mm above the chin's border, condyles in the upper fifth,
# the occlusal plane close to mid-height, a lower tooth (crown + root) about 30 mm long.
CREST_BELOW_OCCLUSAL_MM = 12.5


@dataclass
class Anatomy:
    """Per-patient shape parameters in millimetres (already multiplied by the patient scale).

    Per-side tuples are (patient's right = x < 0, patient's left = x > 0).
    """

    k: float
    chin_y: float  # inferior border at the midline
    gonial_x: tuple[float, float]  # |x| of the gonial angle per side (asymmetry)
    gonial_y: tuple[float, float]
    power: float  # shape exponent of the inferior border
    notch: tuple[float, float]  # depth of the antegonial notch (mm up) per side
    site_x: tuple[float, float]  # |x| of the measurement site
    foramen_h: tuple[float, float]  # height of the mental foramen above the border
    occ_y: float  # occlusal plane at the midline
    occ_rise: float  # rise of the occlusal plane at x = 72 mm (negative: "frown")
    ridge_drop: float = 0.0  # resorption of the lower alveolar ridge (edentulous jaws), mm

    @property
    def gx(self) -> float:
        """Mean |x| of the gonial angles (for placing things roughly)."""
        return 0.5 * (self.gonial_x[0] + self.gonial_x[1])

    def _side(self, x: np.ndarray, pair: tuple[float, float]) -> np.ndarray:
        return np.where(np.asarray(x) < 0, pair[0], pair[1])

    def border(self, x: np.ndarray) -> np.ndarray:
        """y of the inferior border of the mandibular body at x (clamped beyond the angle)."""
        x = np.asarray(x, dtype=np.float64)
        gx, gy = self._side(x, self.gonial_x), self._side(x, self.gonial_y)
        r = np.minimum(np.abs(x) / gx, 1.0)
        notch = self._side(x, self.notch) * np.exp(-(((r - 0.84) / 0.07) ** 2))
        return self.chin_y - (self.chin_y - gy) * r**self.power - notch

    def border_slope(self, x: np.ndarray) -> np.ndarray:
        """dy/dx of the inferior border (central difference)."""
        x = np.asarray(x, dtype=np.float64)
        h = 0.01
        return (self.border(x + h) - self.border(x - h)) / (2 * h)

    def occlusal(self, x: np.ndarray) -> np.ndarray:
        """y of the occlusal plane (smile curve)."""
        return self.occ_y - self.occ_rise * (np.asarray(x) / (72 * self.k)) ** 2

    def crest(self, x: np.ndarray) -> np.ndarray:
        """y of the lower alveolar crest (just below the crowns' cervical line)."""
        return self.occlusal(x) + CREST_BELOW_OCCLUSAL_MM * self.k + self.ridge_drop

    def site(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """(point on the border, unit normal into the bone) in anatomy mm; side -1 = image left."""
        x = side * self.site_x[0 if side < 0 else 1]
        y = float(self.border(np.array(x)))
        s = float(self.border_slope(np.array(x)))
        n = np.array([s, -1.0]) / math.hypot(s, 1.0)
        return np.array([x, y]), n

    def foramen(self, side: int) -> np.ndarray:
        """Centre of the mental foramen (mm) on the border normal through the site."""
        p, n = self.site(side)
        return p + n * self.foramen_h[0 if side < 0 else 1]

    def border_polyline(self, step_mm: float = 1.0) -> np.ndarray:
        """(N, 2) points of the inferior border from the right gonial angle to the left one."""
        xs = np.arange(-self.gonial_x[0], self.gonial_x[1] + 1e-6, step_mm)
        return np.stack([xs, self.border(xs)], 1)


def sample_anatomy(rng: np.random.Generator, k: float, posture: float = 0.0) -> Anatomy:
    """Draw the shape of one patient's jaw (k = overall anatomical scale).

    ``posture`` in [-1, 1] is a positioning error: > 0 chin tipped down ("smile": deeper U,
    curved occlusal plane), < 0 chin up ("frown": flat border, reversed occlusal curve)."""
    gx = k * rng.uniform(104, 114)
    asym = rng.normal(0, 0.025)
    chin = k * rng.uniform(53, 60)
    gy = chin - k * rng.uniform(24, 34)
    notch = float(rng.uniform(0, 2.5)) * k
    anat = Anatomy(
        k=k,
        chin_y=chin + 5 * k * max(posture, 0) - 2 * k * max(-posture, 0),
        gonial_x=(gx * (1 + asym), gx * (1 - asym)),
        gonial_y=(gy + rng.normal(0, 1.5) * k - 5 * k * posture, gy + rng.normal(0, 1.5) * k - 5 * k * posture),
        power=float(rng.uniform(2.3, 3.2)),
        notch=(notch * rng.uniform(0.7, 1.3), notch * rng.uniform(0.7, 1.3)),
        site_x=(k * rng.uniform(36, 43), k * rng.uniform(36, 43)),
        foramen_h=(k * rng.uniform(10.5, 13.5), k * rng.uniform(10.5, 13.5)),
        occ_y=k * rng.uniform(3, 10) + 3 * k * posture,
        occ_rise=k * rng.uniform(8, 13) + 12 * k * posture,
    )
    return anat


def mandible_polygon(anat: Anatomy, side_jitter: np.ndarray) -> np.ndarray:
    """Outline of the mandible in mm: inferior border, both rami with condyle and coronoid,
    alveolar crest."""
    k = anat.k
    lower = anat.border_polyline(0.5)

    def ramus(sx: int) -> np.ndarray:
        i = 0 if sx < 0 else 1
        gx, gy = anat.gonial_x[i], anat.gonial_y[i]
        jx, jy = side_jitter[i]
        # posterior border nearly upright from the angle to the condylar neck (as on a real OPG)
        arc = gonial_arc(anat, sx)  # the rounded angle, tangent to the inferior border at (gx, gy)
        ex, ey = arc[-1]
        post = [*arc, (ex + 0.8 * k, min(ey - 6 * k, gy - 26 * k)), (gx + 3 * k + jx, -30 * k + jy)]
        phi = np.linspace(-np.pi / 4, 1.15 * np.pi, 12)  # condylar head: posterior -> top -> anterior
        head = np.stack([gx + 3 * k + jx + 7 * k * np.cos(phi), -40 * k + jy - 5.5 * k * np.sin(phi)], 1)
        rest = [(gx - 4 * k, -33 * k + jy), (gx - 13 * k, -24 * k), (gx - 21 * k, -29 * k),
                (gx - 27 * k, -36 * k + jy), (gx - 31 * k, -34 * k + jy), (gx - 32 * k, -18 * k),
                (gx - 33 * k, -2 * k), (gx - 35 * k, float(anat.crest(sx * (gx - 35 * k)))) ]  # fmt: skip
        pts = np.vstack([post, head, rest]).astype(np.float64)
        pts[:, 0] *= sx
        return pts if sx > 0 else pts[::-1]

    x_in = (anat.gonial_x[1] - 36 * k, -(anat.gonial_x[0] - 36 * k))
    xc = np.arange(x_in[0], x_in[1] - 0.1, -1.0)
    crest = np.stack([xc, anat.crest(xc)], 1)
    upper = chaikin(np.vstack([ramus(1), crest, ramus(-1)]), 3)
    return np.vstack([lower, upper])


def gonial_arc(anat: Anatomy, sx: int, n: int = 10) -> np.ndarray:
    """The gonial angle as a circular arc (radius ~9 mm) that leaves the inferior border at the
    angle (gx, gy) along its tangent and turns up into the posterior border of the ramus; in the
    frame x > 0 (mirrored by the caller). The arc's first point is just beyond (gx, gy)."""
    i = 0 if sx < 0 else 1
    gx, gy = anat.gonial_x[i], float(anat.border(np.array(sx * anat.gonial_x[i])))
    slope = abs(float(anat.border_slope(np.array(sx * (gx - 0.05)))))
    th0, th1 = math.atan2(slope, 1.0), math.radians(86.0)  # direction above horizontal, outward
    radius = 9.0 * anat.k
    ths = np.linspace(th0, th1, n + 1)[1:]
    ds = radius * (th1 - th0) / n
    pts, p = [], np.array([gx, gy])
    for th in ths:
        p = p + ds * np.array([math.cos(th), -math.sin(th)])
        pts.append(p.copy())
    return np.array(pts)


def width_profile(x: np.ndarray, anat: Anatomy, mcw_right: float, mcw_left: float,
                  rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Cortical width along the border: thicker at the chin, thinner toward the angle, with a
    smooth per-patient undulation; exactly the manifest MCW at each side's site."""
    gx = anat.gx

    def shape(u: np.ndarray, ph: float, amp: float) -> np.ndarray:
        r = np.minimum(np.abs(u) / gx, 1.2)
        return (1.12 - 0.35 * r**2) * (1 + amp * np.sin(2.3 * np.pi * r + ph))

    sides = []
    for w_site, sx in ((mcw_right, anat.site_x[0]), (mcw_left, anat.site_x[1])):
        ph, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.07)
        sides.append(w_site / shape(np.array(sx), ph, amp) * shape(x, ph, amp))
    t = smoothstep((x + 8) / 16)  # blend right (x < 0) and left across the midline
    return ((1 - t) * sides[0] + t * sides[1]).astype(np.float32)
