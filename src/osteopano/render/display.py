"""How a radiograph is shown, defined once: the display window, downscaling, the heatmap overlay and
PNG data URIs. The report, its PDF and the web page show the same pixels."""

from __future__ import annotations

import base64

import cv2
import numpy as np

WINDOW = (0.5, 99.5)   # display window: these percentiles of the image map to black and white


def display_u8(pixels: np.ndarray) -> np.ndarray:
    """Grey pixels (any range) -> uint8, windowed to the ``WINDOW`` percentiles (what a viewer shows)."""
    pixels = np.asarray(pixels, np.float32)
    lo, hi = np.percentile(pixels, WINDOW)
    scale = 255.0 / (hi - lo) if hi > lo else 255.0
    return np.clip((pixels - lo) * scale, 0, 255).round().astype(np.uint8)


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` downscaled (area averaging) to at most ``width`` pixels wide."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def heatmap_overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The displayed radiograph with the heatmap in colour (OpenCV TURBO), uint8 (H, W, 3) RGB.

    The colour is blended in proportionally to the heat (weight ``alpha * heat``), so cold regions keep
    the plain radiograph and the anatomy stays readable."""
    pixels = np.asarray(getattr(pixels, "pixels", pixels), np.float32)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != pixels.shape:
        raise ValueError(f"heatmap shape {heat.shape} differs from the radiograph's {pixels.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    grey = np.repeat(display_u8(pixels)[..., None].astype(np.float32), 3, axis=2)
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).round().astype(np.uint8), cv2.COLORMAP_TURBO),
                          cv2.COLOR_BGR2RGB)
    weight = (alpha * heat)[..., None]
    blend = grey * (1.0 - weight) + colour.astype(np.float32) * weight
    return np.clip(blend, 0, 255).round().astype(np.uint8)


def png_data_uri(image: np.ndarray, width: int) -> str:
    """uint8 grey or RGB image -> 'data:image/png;base64,...', downscaled to ``width``."""
    image = shrink(image, width)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")
