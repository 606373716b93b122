"""Teeth of the phantom: crowns with enamel, dentin, pulp and roots in a periodontal space; the
dentition (full, with teeth missing, edentulous jaws, children's mixed dentition with germs)
and metal (amalgam, crowns, root fillings, bridges, implants) bright enough to saturate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from osteopano.phantom.anatomy import Anatomy
from osteopano.phantom.raster import Raster, poly

WIDTHS = {1: [5.8, 6.2, 7.5, 7.8, 8.0, 12.0, 11.5, 11.0], -1: [8.5, 7.5, 8.2, 7.8, 7.5, 11.0, 10.5, 10.0]}
MAGNIFICATION = 1.22  # a panoramic machine magnifies the teeth by about 1.15-1.3 (widths above are anatomical)
ROOT_CLEAR_MM = 17.0  # lower root apices end at least this far above the inferior border
TOOTH_GAIN = 1.25  # teeth (enamel, dentin, roots) attenuate far more than the mandible's bone: the brightest of an OPG
METAL = 1.4  # attenuation added by metal: saturates the detector whatever the exposure


@dataclass
class Dentition:
    """Per-patient state of every tooth position: (jaw, side, index) -> what is there."""

    kind: str  # 'full' | 'partial' | 'edentulous' | 'mixed'
    teeth: dict[tuple[int, int, int], str] = field(default_factory=dict)  # 'tooth' | 'missing' | 'implant' | 'pontic'
    metal: dict[tuple[int, int, int], set[str]] = field(default_factory=dict)  # amalgam, crown, root_filling
    ridge_drop: float = 0.0  # lower ridge resorption (mm) when the lower jaw is edentulous

    def count(self) -> int:
        return sum(v == "tooth" for v in self.teeth.values())

    def metal_count(self) -> int:
        return sum(bool(v) for v in self.metal.values()) + sum(v == "implant" for v in self.teeth.values())


def sample_dentition(rng: np.random.Generator, age: float, present: dict[str, bool]) -> Dentition:
    """Which teeth are there and what metal they carry, from the patient's dental switches."""
    positions = [(jaw, sx, i) for jaw in (1, -1) for sx in (-1, 1) for i in range(8)]
    kind = "mixed" if present.get("mixed_dentition") else "full"
    d = Dentition(kind=kind, teeth={p: "tooth" for p in positions})
    p_missing = 0.03 + 0.006 * (age - 45) if present.get("missing_teeth") else 0.0
    for p in positions:
        u = rng.random()
        if p[2] == 7 and (rng.random() < 0.5 or kind == "mixed"):
            d.teeth[p] = "missing"  # third molars: often absent (not yet erupted in children)
        elif u < p_missing * (1.6 if p[2] >= 5 else 0.7):
            d.teeth[p] = "missing"
    if present.get("edentulous") and kind != "mixed":
        jaws = [(1,), (-1,), (1, -1)][int(rng.integers(3))]
        for p in positions:
            if p[0] in jaws:
                d.teeth[p] = "missing"
        d.kind = "edentulous"
        if 1 in jaws:
            d.ridge_drop = float(rng.uniform(5, 10))
    elif any(v == "missing" for p, v in d.teeth.items() if p[2] < 7) and kind != "mixed":
        d.kind = "partial"
    if present.get("implants"):
        for _ in range(int(rng.integers(1, 4))):
            p = positions[int(rng.integers(len(positions)))]
            if p[2] < 7 and not (d.kind == "edentulous" and rng.random() < 0.3):
                d.teeth[p] = "implant"
    if present.get("bridges"):
        jaw, sx, i = positions[int(rng.integers(len(positions)))]
        i = min(max(i, 1), 5)
        d.teeth[(jaw, sx, i - 1)] = d.teeth[(jaw, sx, i + 1)] = "tooth"  # abutments
        d.teeth[(jaw, sx, i)] = "pontic"
        for q in ((jaw, sx, i - 1), (jaw, sx, i), (jaw, sx, i + 1)):
            d.metal.setdefault(q, set()).add("crown")
    teeth = [p for p, v in d.teeth.items() if v == "tooth"]
    for name, n_max, rule in (("crown", 3, "crowns"), ("root_filling", 3, "root_fillings")):
        if present.get(rule) and teeth:
            for _ in range(int(rng.integers(1, n_max + 1))):
                d.metal.setdefault(teeth[int(rng.integers(len(teeth)))], set()).add(name)
    if present.get("restorations"):
        for p in teeth:
            if p[2] >= 3 and rng.random() < 0.25:
                d.metal.setdefault(p, set()).add("amalgam")
    return d


def teeth_layer(raster: Raster, anat: Anatomy, dent: Dentition,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(attenuation of teeth and metal, teeth coverage 0..1, metal coverage 0..1)."""
    k = anat.k
    canvas = np.zeros(raster.shape, np.float32)
    cover = np.zeros(raster.shape, np.float32)
    metal = np.zeros(raster.shape, np.float32)
    child_scale = 0.8 if dent.kind == "mixed" else 1.0
    for jaw in (1, -1):  # 1 = lower (crowns point up), -1 = upper
        for sx in (-1, 1):
            pos = 0.2 * k
            for i, w0 in enumerate(WIDTHS[jaw]):
                w = MAGNIFICATION * w0 * k * rng.uniform(0.95, 1.05) * child_scale
                xc = sx * (pos + w / 2)
                pos += w + rng.uniform(-0.7, 0.1) * k  # neighbouring crowns touch or overlap a little
                state = dent.teeth[(jaw, sx, i)]
                draw = _Tooth(raster, anat, rng, xc, w, jaw, i, sx, canvas, cover, metal)
                if state == "tooth":
                    draw.tooth(dent.metal.get((jaw, sx, i), set()), scale=child_scale)
                    if dent.kind == "mixed" and i < 6:
                        draw.germ()
                elif state == "implant":
                    draw.implant()
                elif state == "pontic":
                    draw.pontic()
    sigma = 0.12 / raster.mm
    return TOOTH_GAIN * cv2.GaussianBlur(canvas, (0, 0), sigma), cover, metal


def _round(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round the corners of an open crown outline (two rounds of corner cutting, ends kept)."""
    from osteopano.phantom.raster import chaikin

    pts = chaikin(np.stack([u, v], 1), 2)
    return pts[:, 0], pts[:, 1]


class _Tooth:
    """Drawing of one tooth position (index i from the midline, 5-7 = molars) into the canvases."""

    def __init__(self, raster, anat, rng, xc, w, jaw, i, sx, canvas, cover, metal):
        self.raster, self.anat, self.rng = raster, anat, rng
        self.canvas, self.cover, self.metal_canvas = canvas, cover, metal
        self.jaw, self.i, self.sx, self.w = jaw, i, sx, w
        k = anat.k
        self.top = float(anat.occlusal(np.array(xc))) + (0.6 * k if jaw < 0 else -0.2 * k)  # cusps interlock
        tilt = np.deg2rad(sx * max(i - 2, 0) * 2.8 * jaw + rng.normal(0, 2.5))
        self.axis = np.array([math.sin(tilt), jaw * math.cos(tilt)])  # from the occlusal tip into the jaw
        self.across = np.array([math.cos(tilt), -jaw * math.sin(tilt)])
        self.xc = xc
        self.hw = w / 2
        self.hc = (13.0 if i < 5 else 11.5) * k * rng.uniform(0.92, 1.08) * (1.1 if jaw < 0 and i < 2 else 1.0)
        self.lr = (16.5 if i < 5 else 14.5) * k * rng.uniform(0.9, 1.1) * (1.2 if i == 2 else 1.0)
        if jaw > 0:  # lower apices stay above the mental foramen and the inferior-border cortex
            room = float(anat.border(np.array(xc))) - ROOT_CLEAR_MM * k - (self.top + self.hc)
            self.lr = max(min(self.lr, room), 5.0 * k)

    def place(self, u, v) -> np.ndarray:
        return np.array([self.xc, self.top]) + np.outer(np.asarray(u), self.across) + np.outer(np.asarray(v), self.axis)

    def fill(self, u, v, value: float, target: np.ndarray | None = None) -> None:
        poly(self.canvas if target is None else target, self.raster, self.place(u, v), value)

    def crown_outline(self) -> tuple[np.ndarray, np.ndarray]:
        hw, hc = self.hw, self.hc
        # bulbous crowns, widest a third of the way down, narrowing to the cervical line (v = hc)
        if self.i < 2:  # incisors: broad crowns with a straight incisal edge
            cu = np.array([-0.74, -0.93, -1.0, -0.98, -0.88, 0.0, 0.88, 0.98, 1.0, 0.93, 0.74]) * hw
            cv = np.array([1.0, 0.7, 0.4, 0.15, 0.02, 0.0, 0.02, 0.15, 0.4, 0.7, 1.0]) * hc
        elif self.i == 2:  # canine: cusp tip
            cu = np.array([-0.74, -0.93, -1.0, -0.96, -0.6, 0.0, 0.6, 0.96, 1.0, 0.93, 0.74]) * hw
            cv = np.array([1.0, 0.7, 0.4, 0.18, 0.06, -0.04, 0.06, 0.18, 0.4, 0.7, 1.0]) * hc
        else:  # premolars and molars: broad crowns with cusps
            cu = np.array([-0.76, -0.95, -1.0, -0.97, -0.78, -0.3, 0.0, 0.3, 0.78, 0.97, 1.0, 0.95, 0.76]) * hw
            cv = np.array([1.0, 0.7, 0.4, 0.15, 0.0, 0.06, 0.11, 0.06, 0.0, 0.15, 0.4, 0.7, 1.0]) * hc
        return _round(cu, cv)

    def roots(self) -> list[tuple[float, float, float]]:
        return [(-0.74, 0.74, 0.0)] if self.i < 5 else [(-0.78, -0.06, -0.3), (0.06, 0.78, 0.3)]

    def root_outline(self, u0, u1, lean, grow, lr) -> tuple[np.ndarray, np.ndarray]:
        hw, hc = self.hw, self.hc
        um = (u0 + u1) / 2
        ru = np.array([u0 * hw - grow / 2, (um + lean - 0.18) * hw - grow / 3,
                       (um + lean + 0.18) * hw + grow / 3, u1 * hw + grow / 2])  # fmt: skip
        mid = 0.8 * np.array([u0 * hw - grow / 2, u1 * hw + grow / 2]) + 0.2 * (um + lean) * hw
        ru = np.array([ru[0], mid[0], ru[1], ru[2], mid[1], ru[3]])
        rv = np.array([hc * 0.9, hc + 0.6 * lr, hc + lr + grow / 2, hc + lr + grow / 2, hc + 0.6 * lr, hc * 0.9])
        return ru, rv

    def tooth(self, metal: set[str], scale: float = 1.0) -> None:
        k, hw, hc, lr = self.anat.k, self.hw, self.hc, self.lr * scale
        for grow, value in ((1.0 * k, 0.03), (0.6 * k, -0.06), (0.0, 0.17)):  # lamina dura, periodontal space, root
            for u0, u1, lean in self.roots():
                self.fill(*self.root_outline(u0, u1, lean, grow, lr), value)
        cu, cv = self.crown_outline()
        self.fill(cu, cv, 0.58)  # enamel cap (over dentin)
        self.fill(cu * 0.82, np.clip(cv, 0.12 * hc, None) + 0.08 * hc, -0.06)  # dentin core
        for u0, u1, lean in self.roots():  # coverage for the teeth mask
            self.fill(*self.root_outline(u0, u1, lean, 0.0, lr), 1.0, self.cover)
        self.fill(cu, cv, 1.0, self.cover)
        for u0, u1, lean in self.roots():  # pulp chamber and canals
            um = (u0 + u1) / 2
            cu_ = np.array([um - 0.12, um + lean - 0.04, um + lean + 0.04, um + 0.12]) * hw
            cv_ = np.array([0.5 * hc, hc + lr * 0.93, hc + lr * 0.93, 0.5 * hc])
            self.fill(cu_, cv_, -0.07)
            if "root_filling" in metal:
                self.metal(cu_ * 0.8, np.clip(cv_, 0.8 * hc, None), 0.7)
        self.fill(np.array([-0.4, -0.3, 0.3, 0.4]) * hw, np.array([0.95 * hc, 0.55 * hc, 0.55 * hc, 0.95 * hc]), -0.06)
        if "crown" in metal:
            self.metal(cu * 1.03, np.clip(cv, None, 0.95 * hc) - 0.03 * hc, 1.0)
        elif "amalgam" in metal:
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            a = self.rng.uniform(0.3, 0.55)
            self.metal(a * hw * np.cos(t) * (1 + 0.1 * np.sin(3 * t)), hc * (0.25 + 0.22 * np.sin(t)), 1.0)

    def metal(self, u, v, frac: float) -> None:
        self.fill(u, v, METAL * frac)
        self.fill(u, v, 1.0, self.metal_canvas)
        self.fill(u, v, 1.0, self.cover)  # metal restorations are part of the teeth mask

    def pontic(self) -> None:
        """A bridge's pontic: a metal crown with no root, joined to its neighbours."""
        cu, cv = self.crown_outline()
        self.metal(cu * 1.12, np.clip(cv, None, 0.9 * self.hc), 1.0)
        self.fill(cu * 1.12, np.clip(cv, None, 0.9 * self.hc), 1.0, self.cover)

    def implant(self) -> None:
        """A threaded titanium screw in the bone with a crown on it."""
        hc, k = self.hc, self.anat.k
        length = self.rng.uniform(9, 13) * k
        r = self.rng.uniform(1.7, 2.2) * k
        v = np.linspace(hc + 1.0 * k, hc + length, 24)
        thread = r * (1 + 0.12 * np.sign(np.sin(v / (0.9 * k) * np.pi)))
        taper = np.linspace(1.0, 0.7, v.size)
        u = np.concatenate([-thread * taper, (thread * taper)[::-1]])
        vv = np.concatenate([v, v[::-1]])
        self.metal(u, vv, 1.2)
        self.fill(u, vv, 1.0, self.cover)
        cu, cv = self.crown_outline()
        self.metal(cu, np.clip(cv, None, hc * 1.05), 0.8)  # metal-ceramic crown on the abutment
        self.fill(cu, cv, 1.0, self.cover)

    def germ(self) -> None:
        """A permanent tooth germ below the (deciduous) tooth: a crown in a dark crypt, no root."""
        hc, lr = self.hc, self.lr
        cu, cv = self.crown_outline()
        depth = hc + 0.55 * lr
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        self.fill(1.1 * self.hw * np.cos(t), depth + 0.6 * hc + 0.75 * hc * np.sin(t), -0.06)  # crypt
        self.fill(cu * 0.9, depth + cv * 0.8, 0.35)
        self.fill(cu * 0.9, depth + cv * 0.8, 1.0, self.cover)
