"""Acquisition of a phantom radiograph: field of view, pose, exposure transfer and automatic
windowing, uneven exposure, collimation frame, detector blur, fixed-pattern texture and noise,
burned-in side letters and dates."""

from __future__ import annotations

import math

import cv2
import numpy as np

from osteopano.phantom.raster import RASTER_HALF_MM, Raster, smoothstep

ACQ_KEYS = (
    "fov_mm", "rotation_deg", "shift_x_mm", "shift_y_mm", "exposure", "gamma", "contrast",
    "brightness", "noise_poisson", "noise_gauss", "blur_px", "gradient", "gradient_angle_deg",
    "texture", "frame_mm",
)  # fmt: skip


def sample_acquisition(rng: np.random.Generator, present: dict[str, bool] | None = None) -> dict[str, float]:
    """Random acquisition parameters (field of view, pose, exposure, detector) of one image."""
    present = present or {}
    tilt = 7.0 if present.get("head_tilt") else 3.0
    acq = {
        "fov_mm": float(rng.uniform(285, 320)),
        "rotation_deg": float(rng.uniform(-tilt, tilt)),
        "shift_x_mm": float(rng.uniform(-7, 7)),
        "shift_y_mm": float(rng.uniform(-6, 2)),
        "exposure": float(rng.uniform(0.3, 0.9)),  # mild shoulder: the display is close to linear in attenuation
        "gamma": float(rng.uniform(0.8, 1.15)),
        "contrast": float(rng.uniform(0.85, 1.1)),
        "brightness": float(rng.uniform(-0.05, 0.04)),
        "noise_poisson": float(rng.uniform(0.004, 0.018)),
        "noise_gauss": float(rng.uniform(0.002, 0.01)),
        "blur_px": float(rng.uniform(0.4, 1.1)),
    }
    u = rng.uniform(4, 10, 4)  # always drawn, so switches do not shift the other draws
    acq["shift_y_mm"] += float(u[0]) if present.get("low_jaw") else 0.0
    acq["gradient"] = float(rng.uniform(0.15, 0.45)) if present.get("exposure_gradient") else 0.0
    acq["gradient_angle_deg"] = float(rng.uniform(0, 360))
    acq["texture"] = float(rng.uniform(0.002, 0.008)) if present.get("detector_texture") else 0.0
    acq["frame_mm"] = float(u[1] * 0.6) if present.get("collimation_frame") else 0.0
    return acq


def field_matrices(raster: Raster, acq: dict[str, float], width: int, height: int):
    """Affine maps between final image pixels and anatomy mm (field = R(theta) anatomy + shift)."""
    s = acq["fov_mm"] / width
    th = math.radians(acq["rotation_deg"])
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    shift = np.array([acq["shift_x_mm"], acq["shift_y_mm"]])
    centre = np.array([width / 2 - 0.5, height / 2 - 0.5])

    def to_pixel(p_mm: np.ndarray) -> np.ndarray:
        p = np.asarray(p_mm, dtype=np.float64)
        return (p @ rot.T + shift) / s + centre

    # pixel -> anatomy mm -> raster px, as one 2x3 matrix for cv2.warpAffine(WARP_INVERSE_MAP)
    a = rot.T * s / raster.mm
    b = (rot.T @ (-centre * s - shift) + np.array(RASTER_HALF_MM)) / raster.mm - 0.5
    return np.hstack([a, b[:, None]]), to_pixel, rot, s


def expose(att: np.ndarray, metal: np.ndarray, acq: dict[str, float],
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation (final image grid) -> detector intensity in [0, 1] before blur and noise, and how
    much the collimation frame covers each pixel (0 = exposed, 1 = frame only)."""
    h, w = att.shape
    if acq.get("gradient", 0.0) > 0:  # uneven exposure: a smooth ramp across the field
        th = math.radians(acq["gradient_angle_deg"])
        xx = ((np.arange(w, dtype=np.float32) / w - 0.5) * math.cos(th))[None, :]
        yy = ((np.arange(h, dtype=np.float32) / h - 0.5) * math.sin(th))[:, None]
        ramp = xx + yy
        att = att * (1 + acq["gradient"] * ramp)
    img = (1 - np.exp(-acq["exposure"] * np.clip(att, 0, None))) / (1 - math.exp(-acq["exposure"] * 1.1))
    sample = img[::4, ::4][metal[::4, ::4] < 0.5]  # the modality's automatic windowing ignores metal
    lo, hi = np.percentile(sample if sample.size else img, [0.5, 99.7])
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** acq["gamma"]
    img = acq["brightness"] + 0.04 + acq["contrast"] * 0.9 * img
    if acq.get("frame_mm", 0.0) > 0:  # unexposed (bright) collimation frame, uneven along the edges
        img, cover = _frame(img, acq, rng)
    else:
        cover = np.zeros(img.shape, np.float32)
    return img.astype(np.float32), cover


def _frame(img: np.ndarray, acq: dict[str, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape
    mm = acq["fov_mm"] / w
    base = acq["frame_mm"] / mm
    widths = [base * rng.uniform(0.3, 1.6) * (1 + 0.4 * np.sin(np.linspace(0, rng.uniform(2, 9), n)
              + rng.uniform(0, 6))) for n in (w, w, h, h)]  # top, bottom, left, right  # fmt: skip
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    widths = [v.astype(np.float32) for v in widths]
    inside = np.minimum(yy - widths[0][None, :], (h - 1 - yy) - widths[1][None, :])
    np.minimum(inside, xx - widths[2][:, None], out=inside)
    np.minimum(inside, (w - 1 - xx) - widths[3][:, None], out=inside)
    soft = 2.0 / mm * rng.uniform(0.3, 1.0)
    level = rng.uniform(0.85, 1.0)
    band = inside < soft  # only the frame's pixels need blending
    t = smoothstep(0.5 - inside[band] / soft)
    img = img.copy()
    img[band] = img[band] * (1 - t) + level * t
    cover = np.zeros(img.shape, np.float32)
    cover[band] = t
    return img, cover


def detector(img: np.ndarray, metal: np.ndarray, acq: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Detector blur, fixed-pattern texture (row/column banding, grain), quantum + read noise, and
    saturation behind metal."""
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), acq["blur_px"])
    h, w = img.shape
    if acq.get("texture", 0.0) > 0:
        rows = cv2.GaussianBlur(rng.standard_normal((h, 1)).astype(np.float32), (0, 0), 1.5)
        cols = cv2.GaussianBlur(rng.standard_normal((1, w)).astype(np.float32), (0, 0), 3.0)
        grain = cv2.resize(rng.standard_normal((h // 2 + 1, w // 2 + 1), np.float32), (w, h),
                           interpolation=cv2.INTER_LINEAR)  # fmt: skip
        img = img + acq["texture"] * (0.8 * rows / (rows.std() + 1e-6) + 0.3 * cols / (cols.std() + 1e-6)
                                      + 0.8 * grain / (grain.std() + 1e-6))  # fmt: skip
    # quantum (signal-dependent) and read noise in one Gaussian draw: var = p^2 * signal + g^2
    sd = np.sqrt(acq["noise_poisson"] ** 2 * np.clip(img, 0, None) + acq["noise_gauss"] ** 2)
    img = img + sd * rng.standard_normal(img.shape, np.float32)
    if metal.any():  # metal saturates the detector (white whatever the exposure)
        img = np.maximum(img, np.maximum(metal, cv2.GaussianBlur(metal, (0, 0), 0.6)) * 1.05)
    return img


def burn_in(img: np.ndarray, present: dict[str, bool], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Burned-in side letter and date (white, crisp); returns the image and what was written."""
    h, w = img.shape
    written = []
    u = rng.random(4)
    marks = np.zeros((h, w), np.uint8)  # (cv2 draws text on 8-bit images only)
    if present.get("side_letter"):
        letter = "L" if u[0] < 0.75 else "R"
        scale = h / 420 * rng.uniform(0.9, 1.4)
        thick = max(1, int(round(h / 200)))
        (tw, _th), _ = cv2.getTextSize(letter, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        x = int(w * 0.955 - tw) if letter == "L" else int(w * 0.045)
        y = int(h * rng.uniform(0.87, 0.95))
        cv2.putText(marks, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
        written.append(letter)
    if present.get("date_text"):
        year, month, day = 2008 + int(u[1] * 16), 1 + int(u[2] * 12), 1 + int(u[3] * 28)
        text = f"{day:02d}.{month:02d}.{year}"
        scale = h / 1100
        thick = max(1, int(round(h / 700)))
        cv2.putText(marks, text, (int(w * 0.03), int(h * 0.06)), cv2.FONT_HERSHEY_SIMPLEX, scale, 250, thick,
                    cv2.LINE_AA)  # fmt: skip
        written.append(text)
    if written:
        img = np.maximum(img, marks.astype(np.float32) / 255)
    return img, " ".join(written)
