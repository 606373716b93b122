"""Turn a radiograph into the network's input tensor (numpy + OpenCV only, no torch).

The same code runs in training, in PyTorch inference and in the torch-free ONNX
path, so a model always sees exactly what it was trained on. The recipe is
stored in every run's ``config.json`` (``Preprocess.to_dict``).

Two versioned recipes (``Preprocess.recipe``); a saved config or ONNX file without the field
is ``full-v1``, so every older model keeps its exact input:

* ``full-v1`` (the original): steps 1, 2, 3, 4 below at the file's full resolution (a float32
  percentile and CLAHE on ~4 Mpx for a 2943 x 1435 panoramic: ~60 ms of one core).
* ``fast-v2`` (the default of new runs): step 3 first - the [0, 1] image is area-averaged
  (``cv2.INTER_AREA``) straight to ``size`` x ``size`` - then steps 1 and 2 on those
  size x size pixels, then step 4. The CLAHE grid covers the whole image as before, so its
  tiles hold the same anatomy; only their pixel count shrinks. ~5 ms for the same image.

Steps, for ``pixels`` = float32 (H, W) in [0, 1] (0 = air, 1 = bone):

1. **Percentile window** - the ``window_low`` and ``window_high`` percentiles
   (default 0.5 and 99.5) of the image are mapped to 0 and 1 and values outside
   are clipped, then quantised to 8 bits. This is the "brightness/contrast
   normalisation" of the study: exposure and detector gain no longer matter,
   and a few saturated pixels cannot squash the contrast.
2. **CLAHE** (OpenCV ``createCLAHE``) on the 8-bit image, ``clahe_clip`` = 2.0
   (histogram clip limit, relative to a flat histogram) on a ``clahe_grid`` x
   ``clahe_grid`` = 8 x 8 tile grid laid over the whole image, whatever its
   size. It evens out the brightness falling off towards the ramus and the
   spine shadow while keeping the local cortex / trabecular contrast.
   ``clahe_clip = 0`` switches it off.
3. **Resize** to ``size`` x ``size`` (default 224) with ``cv2.INTER_AREA``
   (area averaging, no aliasing when shrinking). The aspect ratio is NOT
   kept: the ~2:1 panoramic is squashed to a square, as in the study.
4. **Grey to 3 channels** (the same plane replicated for the RGB ImageNet
   backbone) and **mean/std normalisation** per channel, from [0, 1] scale;
   ImageNet's mean/std by default, the training command stores the
   backbone's own values (0.5/0.5 for EfficientNet-Lite).

``to_uint8`` stops after step 3; training caches that (224x224 bytes per image)
and augments it before ``normalise``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

FULL_V1 = "full-v1"  # window + CLAHE at full resolution, then resize (models before recipes had names)
FAST_V2 = "fast-v2"  # resize first, then window + CLAHE at the network's resolution
RECIPES = (FULL_V1, FAST_V2)
DEFAULT_RECIPE = FAST_V2  # for new runs; from_dict without the field gives FULL_V1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Radiograph -> network input; see the module docstring for the exact steps."""

    size: int = 224
    window_low: float = 0.5
    window_high: float = 99.5
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    recipe: str = DEFAULT_RECIPE

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown preprocessing recipe {self.recipe!r} (known: {', '.join(RECIPES)}); "
                             "a newer osteopano may have written this model")
        if self.size < 8:
            raise ValueError(f"image size {self.size} is too small (>= 8)")
        if not 0 <= self.window_low < self.window_high <= 100:
            raise ValueError(f"bad percentile window {self.window_low}..{self.window_high}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_uint8(self, pixels: np.ndarray) -> np.ndarray:
        """Steps 1-3 (window, CLAHE, resize) in the recipe's order. Returns uint8 (size, size)."""
        img = np.asarray(pixels, dtype=np.float32)
        if img.ndim == 3:  # colour input: average the channels
            img = img.mean(axis=2)
        if img.ndim != 2 or img.size == 0:
            raise ValueError(f"expected a 2-D grey image, got shape {np.shape(pixels)}")
        if self.recipe == FAST_V2:
            small = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
            return self._window_clahe(small)
        return cv2.resize(self._window_clahe(img), (self.size, self.size), interpolation=cv2.INTER_AREA)

    def _window_clahe(self, img: np.ndarray) -> np.ndarray:
        """Steps 1-2 on a float32 (H, W) image -> uint8 (H, W)."""
        lo, hi = np.percentile(img, [self.window_low, self.window_high])
        # fast-v2 windows area averages, which carry float rounding: a spread below 1e-6 (1/15 of one
        # 16-bit level) is a flat image, not contrast to stretch; full-v1 keeps its exact rule
        flat = hi - lo <= 1e-6 if self.recipe == FAST_V2 else hi <= lo
        scale = 0.0 if flat else 255.0 / (hi - lo)
        u8 = np.clip((img - lo) * scale, 0, 255).round().astype(np.uint8)
        if self.clahe_clip > 0:
            clahe = cv2.createCLAHE(clipLimit=self.clahe_clip, tileGridSize=(self.clahe_grid, self.clahe_grid))
            u8 = clahe.apply(u8)
        return u8

    def decode_side(self) -> int | None:
        """The fewest pixels per side a decoder may reduce an image to before ``to_uint8`` (fast-v2:
        twice ``size``, so that area averaging still sees >= 2 x 2 decoded pixels per output pixel);
        None for full-v1, whose window and CLAHE need every pixel."""
        return 2 * self.size if self.recipe == FAST_V2 else None

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """Step 4, the one normalisation of the project (training, both engines, Grad-CAM):
        uint8 (or [0, 1] float) (..., S, S) -> float32 (..., 3, S, S), each plane replicated to 3
        channels, then (x - mean) / std per channel."""
        img = np.asarray(image)
        x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        x = np.expand_dims(x, -3)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (np.broadcast_to(x, (*x.shape[:-3], 3, *x.shape[-2:])) - mean) / std

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (H, W) in [0, 1] -> float32 (3, size, size), ready for the network."""
        return self.normalise(self.to_uint8(pixels))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of ``to_dict``; unknown keys are an error (a newer config format). A dict without
        ``recipe`` was saved before recipes had names: it is ``full-v1``, the recipe it was trained with."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown preprocess settings: {', '.join(sorted(unknown))}")
        d = {"recipe": FULL_V1, **d}
        return cls(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items()})
