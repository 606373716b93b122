"""The radiograph gate: is this image plausibly a dental panoramic radiograph (OPG)?

``check_radiograph(radiograph) -> GateVerdict`` runs cheap image statistics, in this order, and
stops at the first that fails; ``GateVerdict.reason`` is then one plain line saying why, and
``GateVerdict.checks`` holds every figure measured so far (JSON-ready). A scorer must not give a
probability for an image the gate refuses. Everything is measured on a downscaled copy (a strided
sample, then 64 x 128 px), so one call takes a few milliseconds on a 2943 x 1435 image; see
docs/gate.md for the figures and the reasoning behind each threshold.

1. ``size``: at least ``MIN_WIDTH`` x ``MIN_HEIGHT`` pixels.
2. ``aspect``: width / height within ``ASPECT_RANGE`` (a panoramic is about 2:1, 1.9-2.8:1 on the
   devices seen), or square within 3 %: data sets such as UFBA-UESC squash panoramics to 512 x 512,
   so a square image is taken as a squashed panoramic and judged, unsquashed, by the content checks.
3. ``colour``: the hue varies across the image (chromaticity spread above ``MAX_CHROMA``): a
   photograph. A uniform tint (sepia, a film photographed on a lightbox) counts as grey.
4. ``blank``: (almost) one grey level: all black, all white, a constant DICOM (RescaleSlope 0).
5. ``contrast``: the 1st-99th percentile span below ``MIN_CONTRAST`` of the full scale.
6. ``saturation``: more than ``MAX_WHITE`` of the pixels at the top of the scale or ``MAX_BLACK`` at
   the bottom (metal restorations and collimator edges stay far below these).
7. ``noise``: neighbouring pixels (native resolution, centre of the image) correlate below
   ``MIN_NEIGHBOUR_CORR``: a radiograph is smooth at the pixel scale, noise is not.
8. ``document``: a bright background covering most of the image (a scanned page or form).
9. ``layout``: correlation with a mean layout of synthetic phantoms (``osteopano.phantom``, frozen in
   ``data/gate_layout.npy``:
   tooth rows in the middle, mandible and its inferior border below, rami at the sides, dark airway
   above the tongue) below ``MIN_LAYOUT``; strongly negative means an inverted image (bone dark),
   a higher correlation with the layout turned over than with the layout an upside-down one.
10. ``symmetry``: a panoramic is roughly mirror-symmetric about its vertical midline; photographs,
    textures and gradients are not.
11. ``texture``: the finest detail (trabecular bone, tooth and cortex edges) relative to the contrast;
    a blurred image or a smooth graphic has too little.
12. ``teeth``: horizontal detail (tooth edges run vertically) in the middle band of the image compared
    with the image as a whole; the limit is low enough for edentulous jaws (about 0.9 for a jaw
    without teeth, against 0.55), so it only refuses images with no structure there at all.
13. ``combined``: each of layout, symmetry, texture and teeth has a "weak" zone above its hard limit
    (``WEAK``); a real panoramic is weak in one at most, an image weak in two or more is refused.

Intensities follow ``osteopano.io.images``: [0, 1], bone bright. Images of more than 8 bits whose
values use only the lower bits (12-bit data in a 16-bit PNG) are judged on the range they use.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from osteopano.io.images import chroma_spread  # noqa: F401  (the colour measure, computed at decoding)

MIN_WIDTH, MIN_HEIGHT = 180, 90
ASPECT_RANGE = (1.6, 3.2)
SQUARE_TOLERANCE = 0.03
MAX_CHROMA = 0.02
MIN_BLANK_RANGE = 0.02
MIN_CONTRAST = 0.2
MAX_WHITE, MAX_BLACK = 0.25, 0.35
MIN_NEIGHBOUR_CORR = 0.5
MAX_BRIGHT_BACKGROUND = 0.5
MIN_LAYOUT = 0.05
INVERTED_LAYOUT = -0.15
MIN_SYMMETRY = 0.4
MIN_TEXTURE = 0.006
MIN_TEETH = 0.55  # edentulous jaws (common at screening ages) score about 0.9: keep well below
# "weak" zones above the hard limits: an image weak in two or more of these is refused too
WEAK = {"layout": 0.15, "symmetry": 0.55, "fine_texture": 0.014, "teeth_detail": 0.95}

CANON = (64, 128)  # (height, width) of the working copy; a square input is unsquashed by it
_TEMPLATE_SEEDS = range(1000, 1032)  # phantoms averaged into the layout template
_TEMPLATE_WIDTH = 256


@dataclass(frozen=True)
class GateVerdict:
    """``passed``; ``reason`` (one plain line) when refused; ``checks`` the figures measured."""

    passed: bool
    reason: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None  # name of the check that refused the image


class _Refused(Exception):
    def __init__(self, check: str, reason: str):
        self.check, self.reason = check, reason


def check_radiograph(radiograph: Any) -> GateVerdict:
    """Judge a ``Radiograph`` (or an (H, W) / (H, W, 3) array, uint8/uint16/float in [0, 1])."""
    pixels, bits, chroma = _unpack(radiograph)
    checks: dict[str, Any] = {}
    try:
        _run_checks(pixels, bits, chroma, checks)
    except _Refused as refused:
        return GateVerdict(False, f"not a dental panoramic radiograph: {refused.reason}", checks,
                           refused.check)
    return GateVerdict(True, None, checks, None)


# ----------------------------------------------------------------------------- input


def _unpack(radiograph: Any) -> tuple[np.ndarray, int, float]:
    """(grey float32 pixels, bits per sample, chroma spread) of a Radiograph or an array."""
    if hasattr(radiograph, "pixels"):
        return (np.asarray(radiograph.pixels, np.float32), int(getattr(radiograph, "bit_depth", 8) or 8),
                float(getattr(radiograph, "chroma", 0.0) or 0.0))
    arr = np.asarray(radiograph)
    if arr.dtype == np.uint8:
        bits, arr = 8, arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        bits, arr = 16, arr.astype(np.float32) / 65535.0
    else:
        bits, arr = 32, np.nan_to_num(arr.astype(np.float32))
    chroma = 0.0
    if arr.ndim == 3:
        rgb = arr[..., :3]
        chroma = chroma_spread(rgb)
        arr = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {np.shape(radiograph)}")
    return np.clip(arr, 0.0, 1.0), bits, chroma


# ----------------------------------------------------------------------------- checks


def _run_checks(pixels: np.ndarray, bits: int, chroma: float, checks: dict[str, Any]) -> None:
    height, width = pixels.shape
    checks["width"], checks["height"] = int(width), int(height)
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise _Refused("size", f"{width}x{height} px is too small (a panoramic is at least "
                       f"{MIN_WIDTH}x{MIN_HEIGHT} px)")
    aspect = width / height
    checks["aspect"] = round(aspect, 3)
    square = abs(aspect - 1.0) <= SQUARE_TOLERANCE
    checks["squashed_square"] = square
    if not square and not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
        if aspect < 1.0:
            raise _Refused("aspect", f"taller than wide ({width}x{height} px); a panoramic is about "
                           "2:1 wide - is it rotated?")
        raise _Refused("aspect", f"width:height {aspect:.2f}:1 is not a panoramic's "
                       f"({ASPECT_RANGE[0]}-{ASPECT_RANGE[1]}:1, or squashed to a square)")
    checks["chroma"] = round(chroma, 4)
    if chroma > MAX_CHROMA:
        raise _Refused("colour", "a colour image (a photograph?), not a grey radiograph")

    step = max(1, min(height // (2 * CANON[0]), width // (2 * CANON[1])))
    sample = pixels[::step, ::step]
    full = _full_scale(sample, bits)
    checks["full_scale"] = round(full, 5)
    lo, p1, p50, p99, hi = (float(v) / full for v in np.percentile(sample, [0.5, 1, 50, 99, 99.5]))
    checks["p1"], checks["median"], checks["p99"] = round(p1, 3), round(p50, 3), round(p99, 3)
    if hi - lo < MIN_BLANK_RANGE:
        level = float(np.median(sample))
        kind = "all black" if level < 0.1 else "all white" if level > 0.9 else "one uniform grey"
        raise _Refused("blank", f"the image is blank ({kind})")
    checks["contrast"] = round(p99 - p1, 3)
    if p99 - p1 < MIN_CONTRAST:
        raise _Refused("contrast", f"almost no contrast (1st-99th percentile span {p99 - p1:.2f} "
                       f"of the scale, below {MIN_CONTRAST})")
    white = float((sample >= full * (1 - 0.5 / 255)).mean())
    black = float((sample <= full * (0.5 / 255)).mean())
    checks["white_fraction"], checks["black_fraction"] = round(white, 3), round(black, 3)
    if white > MAX_WHITE:
        raise _Refused("saturation", f"{white:.0%} of the pixels are saturated white")
    if black > MAX_BLACK:
        raise _Refused("saturation", f"{black:.0%} of the pixels are pure black")

    corr = _neighbour_corr(pixels)
    checks["neighbour_corr"] = round(corr, 3)
    if corr < MIN_NEIGHBOUR_CORR:
        raise _Refused("noise", f"looks like noise (neighbouring pixels correlate {corr:.2f}, a "
                       f"radiograph above {MIN_NEIGHBOUR_CORR})")
    bright = float((sample >= 0.75 * full).mean())
    checks["bright_fraction"] = round(bright, 3)
    if bright > MAX_BRIGHT_BACKGROUND:
        raise _Refused("document", f"{bright:.0%} of the image is a bright background, like a scanned "
                       "document (or an inverted radiograph)")

    small = cv2.resize(sample, (2 * CANON[1], 2 * CANON[0]), interpolation=cv2.INTER_AREA)
    canon = cv2.resize(small, (CANON[1], CANON[0]), interpolation=cv2.INTER_AREA)
    template = _template()
    layout = _corr(canon, template)
    upside_down = _corr(canon, template[::-1])
    checks["layout"], checks["layout_upside_down"] = round(layout, 3), round(upside_down, 3)
    if upside_down >= MIN_LAYOUT and upside_down > layout:
        raise _Refused("layout", "looks upside down (it matches the panoramic layout turned over)")
    symmetry = _corr(canon, canon[:, ::-1])
    checks["symmetry"] = round(symmetry, 3)
    if layout < MIN_LAYOUT:
        if layout <= INVERTED_LAYOUT and symmetry >= MIN_SYMMETRY:
            raise _Refused("layout", "looks inverted (bone dark, air bright); save it with bone white")
        raise _Refused("layout", f"the layout of a panoramic is not found (teeth in the middle, "
                       f"mandible below, rami at the sides: score {layout:.2f}, needed {MIN_LAYOUT})")
    if symmetry < MIN_SYMMETRY:
        raise _Refused("symmetry", f"not left-right symmetric like a panoramic (score {symmetry:.2f}, "
                       f"needed {MIN_SYMMETRY})")
    texture = _fine_texture(small, (p99 - p1) * full)
    checks["fine_texture"] = round(texture, 4)
    if texture < MIN_TEXTURE:
        raise _Refused("texture", f"too smooth or blurred: no fine detail (score {texture:.3f}, needed "
                       f"{MIN_TEXTURE})")
    teeth = _teeth_detail(small)
    checks["teeth_detail"] = round(teeth, 3)
    if teeth < MIN_TEETH:
        raise _Refused("teeth", f"no tooth or jaw detail in the middle of the image (score {teeth:.2f}, "
                       f"needed {MIN_TEETH})")
    weak = [name for name, limit in WEAK.items() if checks[name] < limit]
    checks["weak"] = weak
    if len(weak) >= 2:
        raise _Refused("combined", f"too weak on {' and '.join(n.replace('_', ' ') for n in weak)} "
                       "together for a panoramic")


def _full_scale(sample: np.ndarray, bits: int) -> float:
    """1.0, or for >8-bit data using only its lower bits the power of two those bits reach."""
    top = float(sample.max(initial=0.0))
    if bits <= 8 or top <= 0.0 or top >= 0.5:
        return 1.0
    used_bits = max(8, math.ceil(math.log2(top * 65535.0 + 1.0)))
    return min(1.0, (2.0**used_bits - 1.0) / 65535.0)


def _neighbour_corr(pixels: np.ndarray) -> float:
    """Correlation of horizontally and of vertically adjacent pixels (the smaller) in a central
    block of up to 128 x 256 px at native resolution; 1.0 for a constant block."""
    h, w = pixels.shape
    y0, x0 = max(0, h // 2 - 64), max(0, w // 2 - 128)
    block = np.array(pixels[y0:y0 + 128, x0:x0 + 256], np.float32)
    block -= block.mean()
    values = []
    for a, b in ((block[:, :-1], block[:, 1:]), (block[:-1], block[1:])):
        a, b = a.ravel(), b.ravel()  # copies, contiguous
        denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
        values.append(float(np.dot(a, b)) / denom if denom > 0 else 1.0)
    return min(values)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else 0.0


def _teeth_detail(small: np.ndarray) -> float:
    """Mean absolute horizontal pixel difference in the middle band (rows 30-70 %, columns 25-75 %:
    the tooth rows, whose edges run vertically) relative to the whole image's; 0 without detail."""
    h, w = small.shape
    band = small[int(0.3 * h):int(0.7 * h), int(0.25 * w):int(0.75 * w)]
    whole = float(np.abs(np.diff(small, axis=1)).mean())
    return float(np.abs(np.diff(band, axis=1)).mean()) / whole if whole > 1e-9 else 0.0


def _fine_texture(small: np.ndarray, contrast: float) -> float:
    """Standard deviation of the finest detail (the 128 x 256 copy minus its 1-px Gaussian blur)
    relative to the image's contrast: trabecular bone, tooth and cortex edges vs a smooth graphic."""
    detail = small - cv2.GaussianBlur(small, (0, 0), 1.0)
    return float(detail.std()) / contrast if contrast > 1e-9 else 0.0


TEMPLATE_FILE = "data/gate_layout.npy"  # package data beside this module


@functools.lru_cache(maxsize=1)
def _template() -> np.ndarray:
    """The shipped 64 x 128 layout template (``TEMPLATE_FILE``, read once a process).

    It was built by ``build_template()`` from the phantom as it stood at commit d181e54 and is frozen on
    purpose: the thresholds above (docs/gate.md) were set and checked (``benchmarks/gate_real.py``)
    against it, so a change of the phantom must not move what the gate passes. Rebuild it only with
    ``python benchmarks/gate_template.py`` and re-run ``benchmarks/gate_real.py`` afterwards."""
    from importlib.resources import files

    with files("osteopano.prepare").joinpath(TEMPLATE_FILE).open("rb") as handle:
        template = np.load(handle, allow_pickle=False).astype(np.float64)
    if template.shape != CANON or not np.isfinite(template).all():
        raise RuntimeError(f"{TEMPLATE_FILE}: not a finite {CANON} layout template (reinstall osteopano)")
    template.setflags(write=False)
    return template


def build_template() -> np.ndarray:
    """Mean z-scored 64 x 128 layout of 32 seeded synthetic phantoms (about 0.5 s): how
    ``TEMPLATE_FILE`` is made (``benchmarks/gate_template.py``)."""
    from osteopano.phantom.generate import render

    acc = np.zeros(CANON, np.float64)
    for seed in _TEMPLATE_SEEDS:
        img = render(seed, width=_TEMPLATE_WIDTH).pixels.astype(np.float32) / 65535.0
        small = cv2.resize(img, (CANON[1], CANON[0]), interpolation=cv2.INTER_AREA).astype(np.float64)
        acc += (small - small.mean()) / (small.std() + 1e-9)
    return acc / len(_TEMPLATE_SEEDS)
