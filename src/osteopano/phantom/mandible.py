"""The mandible of the phantom: outline, trabecular bone, thin generic cortex, the inferior-border
cortex with its exact width profile, the Klemetti signs (semilunar lacunae, endosteal residues,
porosity) drawn with a strength that grows continuously with the latent erosion, mental foramina
and mandibular canals."""

from __future__ import annotations

import cv2
import numpy as np

from osteopano.phantom.anatomy import Anatomy, mandible_polygon, width_profile
from osteopano.phantom.latent import Patient
from osteopano.phantom.raster import (
    Raster,
    bandpass_noise,
    poly,
    resize,
    smoothstep,
    stroke,
)

EROSION_SPAN = 1.3  # latent erosion above 0.25 over which the signs grow to full strength
SITE_CLEAR_MM = 1.5  # lacunae, residues and pores stay this far (along x) from the sites
ENDOSTEAL_RAMP = (0.25, 0.6, 1.2)  # the cortex fades into trabecular bone over 0.25 x width (0.6-1.2 mm), centred on it
BASE_RADIUS_MM = (4.0, 6.0)  # the basal border's rounding in cross-section (see draw_mandible)
BASE_FLAT = 0.2  # share of the body's bucco-lingual path already crossed at the border (its flat underside)


def erosion_strength(erosion: float, expression: float) -> float:
    """How strongly the Klemetti signs are drawn (0 = even margin ... 1 = heavily eroded): a
    smooth ramp of the latent erosion, so classes overlap near the cuts, times the patient's
    own expression factor (the same erosion does not look the same in everyone)."""
    return float(np.clip((erosion - 0.25) / EROSION_SPAN * expression, 0.0, 1.0))


def draw_mandible(att: np.ndarray, raster: Raster, anat: Anatomy, patient: Patient,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Add the mandible to ``att``; returns (mandible coverage 0..1, cortex band 0..1)."""
    k, mm = anat.k, raster.mm
    xs, ys = raster.xs, raster.ys
    half = (raster.shape[0] // 2 + 1, raster.shape[1] // 2 + 1)

    # maxillary alveolar bone around the upper roots, with its own trabecular texture
    up = anat.occlusal(xs) - 11.5 * k
    m0, m1 = int(np.searchsorted(ys, up.min() - 40 * k)), int(np.searchsorted(ys, up.max() + 1))
    ym = ys[m0:m1, None]
    maxilla = smoothstep((up - ym) / 3.0) * smoothstep((ym - (up - 28 * k)) / 10.0)
    maxilla *= smoothstep((84 * k - np.abs(xs)) / 10.0)
    tex_max = np.exp(-((bandpass_noise(rng, half, 0.25 / mm, 1.25 / mm) / 0.4) ** 2))
    att[m0:m1] += maxilla * (0.07 + 0.035 * resize(tex_max, raster.shape)[m0:m1])

    jitter = rng.normal(0, 1.5, (2, 2)) * k
    mand = np.zeros(raster.shape, np.float32)
    poly(mand, raster, mandible_polygon(anat, jitter), 1.0)
    np.clip(mand, 0, 1, out=mand)

    # per-column quantities along the inferior border (the raster is axis-aligned)
    ax = np.abs(xs)
    gxc = np.where(xs < 0, anat.gonial_x[0], anat.gonial_x[1]).astype(np.float32)
    border, slope = anat.border(xs).astype(np.float32), anat.border_slope(xs).astype(np.float32)
    w = width_profile(xs, anat, patient.mcw_right_mm, patient.mcw_left_mm, rng)
    s = erosion_strength(patient.erosion, float(np.exp(rng.normal(0, 0.3))))
    # erosion envelope: from the canine region to the angle on both sides, clear of the sites
    env = smoothstep((ax - 10 * k) / 8) * smoothstep((gxc - 3 - ax) / 6)
    for side in (-1, 1):
        env *= smoothstep((np.abs(xs - side * anat.site_x[0 if side < 0 else 1]) - SITE_CLEAR_MM) / 1.0)
    w_eff = w.copy()
    n_lac = int(rng.poisson(34 * s))
    for _ in range(n_lac):  # semilunar lacunae in the endosteal margin
        cx = rng.uniform(-anat.gx, anat.gx)
        r = rng.uniform(1.0, 2.8) * k
        depth = rng.uniform(0.15, 0.45) * (0.6 + 0.4 * s)
        w_eff -= env * depth * w * np.sqrt(np.clip(1 - ((xs - cx) / r) ** 2, 0, None))
    w_eff = np.maximum(w_eff, 0.6).astype(np.float32)
    in_body = smoothstep((gxc - ax) / 5).astype(np.float32)  # the angle's arc has only the thin rim

    # rows holding the inferior border region (d from -2 to 16 mm); everything below is per-band
    r0 = int(np.searchsorted(ys, min(anat.gonial_y) - 17 * k - max(anat.notch)))
    r1 = int(np.searchsorted(ys, anat.chin_y + 3))
    yb = ys[r0:r1, None]
    d = ((border[None, :] - yb) / np.sqrt(1 + slope * slope)[None, :]).astype(np.float32)
    aa = mm * 0.6
    outer = smoothstep(d / aa + 0.5)
    band = np.zeros(raster.shape, np.float32)  # the cortex (mask): 0 <= d <= w_eff
    band[r0:r1] = outer * (1 - smoothstep((d - w_eff) / aa + 0.5)) * in_body
    # what is drawn: a sharp periosteal edge, an endosteal side fading into the trabecular bone
    # over a distance growing with the width, symmetric about d = w_eff (so the half-way level
    # between cortex and trabecular bone stays exactly at the width)
    ramp = np.clip(ENDOSTEAL_RAMP[0] * w_eff, ENDOSTEAL_RAMP[1], ENDOSTEAL_RAMP[2])
    graded = np.zeros(raster.shape, np.float32)
    graded[r0:r1] = outer * (1 - smoothstep((d - w_eff) / ramp + 0.5)) * in_body

    # trabeculae = zero-crossing network of band-passed noise; thinner/sparser when osteoporotic
    t_lat = patient.tscore + rng.normal(0, 0.5)
    # attenuations are relative to teeth (enamel ~0.7) and skull: the body is mid-dark on a real OPG
    trab_level = float(np.clip(0.14 + 0.01 * t_lat, 0.1, 0.16))
    thick = float(np.clip(0.42 + 0.05 * t_lat, 0.2, 0.5))
    tex = resize(np.exp(-((bandpass_noise(rng, half, 0.22 / mm, 1.0 / mm) / thick) ** 2)), raster.shape)
    ramus = smoothstep((ax - (gxc - 24 * k)) / 8)[None, :]
    ramus = ramus * smoothstep((min(anat.gonial_y) - 8 - ys) / 10)[:, None]  # thinner bone plate
    inner = 1 - graded
    # soft-edged fill except along the inferior border, where the edge must stay exact
    sharp = np.zeros(raster.shape, np.float32)
    sharp[r0:r1] = in_body * smoothstep((9 - d) / 2)
    sharp[r1:] = in_body
    fill = resize(cv2.GaussianBlur(resize(mand, half), (0, 0), 0.8 / mm), raster.shape)
    fill += sharp * (mand - fill)
    crest = anat.crest(xs)
    c0, c1 = int(np.searchsorted(ys, crest.min())), int(np.searchsorted(ys, crest.max() + 6 * k))
    crest_fade = np.where(np.arange(raster.shape[0]) < c0, 0.55, 1.0).astype(np.float32)[:, None] * fill
    crest_fade[c0:c1] = (0.55 + 0.45 * smoothstep((ys[c0:c1, None] - crest) / (6 * k))) * fill[c0:c1]
    pre = att[r0:r1].copy()  # the border rows before the bone: see the rounded base below
    att += crest_fade * ((trab_level - 0.014 * ramus) * (0.8 + 0.2 * inner) + 0.056 * tex * inner)

    # thin generic cortex on the rest of the outline (ramus, condyle, crest)
    edge = cv2.distanceTransform((mand > 0.5).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * mm
    rim = mand * np.exp(-edge / 1.3)  # graded, no drawn outline
    c1 = int(np.searchsorted(ys, crest.max() + 5))
    rim[:c1] *= 1 - smoothstep((74 * k - ax) / 4) * smoothstep((crest + 5 - ys[:c1, None]) / 2)
    rim[r0:r1] *= 1 - in_body * smoothstep((6 - d) / 2)
    rim[r1:] *= 1 - in_body
    att += 0.05 * rim

    # inferior-border cortex; border-aligned noise (streaks along the border) for pores/residues
    map_u = np.broadcast_to(((xs + 130) / 0.5).astype(np.float32), d.shape)
    map_v = (np.clip(d, -2, 16) / 0.1 + 25).astype(np.float32)
    bn_shape = (220, 560)
    sub = att[r0:r1]
    along = np.zeros_like(xs)  # the cortex is not equally dense all along the border
    for _ in range(3):
        along += rng.uniform(0.02, 0.05) * np.sin(2 * np.pi * xs / rng.uniform(35, 90) + rng.uniform(0, 2 * np.pi))
    # x the patient's cortex visibility (latent.VISIBILITY_LOG): on some the cortex hardly stands out
    cortex_density = (0.18 - 0.036 * s) * (1 + along) * patient.cortex_visibility
    porous = float(smoothstep((s - 0.3) / 0.45))
    bn2 = cv2.remap(bandpass_noise(rng, bn_shape, 0.8, 2.5), map_u, map_v, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    # in 2-D, pores and residues stay clear of the site's whole normal line (which leans in x)
    env2 = np.broadcast_to(smoothstep((ax - 10 * k) / 8) * smoothstep((gxc - 3 - ax) / 6), d.shape).copy()
    for side in (-1, 1):
        p, n = anat.site(side)
        off = np.abs(xs[None, :] - p[0] - n[0] / max(-n[1], 0.5) * np.clip(d, 0, None))
        env2 *= smoothstep((off - SITE_CLEAR_MM) / 1.0)
    sub += cortex_density * graded[r0:r1] * (1 - 0.6 * porous * smoothstep((bn2 - 0.5) / 0.5) * env2)
    # endosteal cortical residues just above the margin (faint already at low erosion)
    bn = cv2.remap(bandpass_noise(rng, bn_shape, 1.0, 3.0), map_u, map_v, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    zone = smoothstep((d - w_eff - 0.2) / 0.3) * (1 - smoothstep((d - w_eff - 2.4 * s - 0.8) / 1.5))
    resid = smoothstep((bn - (1.5 - 0.7 * s)) / 0.5) * zone * (env2 * in_body)
    sub += 0.07 * (0.4 + 0.6 * s) * smoothstep(s / 0.1) * resid * mand[r0:r1]

    # the rounded base: the body's cross-section is a rounded rectangle below (flat underside, corners
    # of radius BASE_RADIUS_MM), so the beam's path through the bone, cortex and all, shortens toward
    # the periosteal edge: the bone steps up at the border (BASE_FLAT), then rises gradually over 4-6 mm
    # (the corners' chords), as in real OPGs' median profile (benchmarks/phantom_vs_real.py); the drawn
    # cortex (mask, MCW truth: periosteal edge to endosteal margin) is unchanged
    rr = float(rng.uniform(*BASE_RADIUS_MM))
    t_ = np.clip(d / rr, 0, 1)
    chord = BASE_FLAT + (1 - BASE_FLAT) * np.sqrt(t_ * (2 - t_))
    proj = 1 - in_body[None, :] * (1 - chord)
    att[r0:r1] = pre + (att[r0:r1] - pre) * proj

    # mental foramina (small dark ovals above the sites) and mandibular canals
    for side in (-1, 1):
        fx, fy = anat.foramen(side)
        t = np.linspace(0, 2 * np.pi, 24)
        poly(att, raster, np.stack([fx + 1.6 * k * np.cos(t), fy + 1.2 * k * np.sin(t)], 1), -0.07)
        end_x = side * (anat.gonial_x[0 if side < 0 else 1] - 14 * k)
        cxs = np.linspace(fx, end_x, 30)
        cys = fy - 22 * k * ((cxs - fx) / (end_x - fx)) ** 2 + 4 * k * np.sin(np.linspace(0, np.pi, 30))
        stroke(att, raster, np.stack([cxs, cys], 1), 2.6 * k, -0.04, 0.6)
    cortex = np.zeros(raster.shape, np.float32)
    cortex[r0:r1] = band[r0:r1] * mand[r0:r1]
    return mand, cortex
