"""The one preparation chain: radiograph -> network input, for training, both engines and Grad-CAM.

``planes`` makes the uint8 network planes (what training caches and augments), ``prepare`` the
normalised float input an engine runs on. Both follow the model's ``ModelSpec``:

* ``'whole'`` - ``Preprocess.to_uint8`` of the whole radiograph (window, CLAHE, squash to S x S): one
  plane;
* ``'roi'`` - the cortex is measured (``osteopano.cortex.measure``; or the measurement passed in is
  reused, so an image is measured at most once) and both inferior-cortex crops are cut at a fixed
  scale in mm (``osteopano.prepare.roi``) and go through ``to_uint8`` one by one: two planes.

Normalisation (``Preprocess.normalise``) is defined once, in numpy; training applies that same
function to its augmented uint8 batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from osteopano.io.images import Radiograph
from osteopano.prepare.covariates import encode_covariates
from osteopano.prepare.roi import RoiError, roi_crops
from osteopano.prepare.spec import ModelSpec


@dataclass
class ModelInput:
    """One image made ready for the network.

    ``x`` float32 (3, S, S), or (2, 3, S, S) for the two ROI crops; ``covariates`` (D,) encoded;
    ``affines`` image -> plane (ROI only, to draw heatmaps back); ``measurement`` the cortex
    measurement made on the way (ROI models), else None.
    """

    x: np.ndarray
    covariates: np.ndarray
    affines: list[np.ndarray] | None = None
    measurement: Any = None


def planes(radiograph: Radiograph, spec: ModelSpec, pixel_spacing_mm: float | None = None,
           measurement: Any = None) -> tuple[np.ndarray, list[np.ndarray] | None, Any]:
    """uint8 (K, S, S) network planes (K = 1 whole image, 2 ROI crops), their image->plane affines (ROI)
    and the cortex measurement (ROI; ``measurement`` when given). RoiError when an ROI cannot be cut."""
    pre = spec.preprocess
    if spec.input_mode == "whole":
        return pre.to_uint8(radiograph.pixels)[None], None, measurement
    name = radiograph.path or "image"
    if not pixel_spacing_mm:
        raise RoiError(f"{name}: pixel spacing unknown; the cortex ROI needs it "
                       "(--pixel-spacing MM, or a manifest pixel_spacing_mm column)")
    if measurement is None:
        from osteopano.cortex.measure import measure

        measurement = measure(radiograph, pixel_spacing_mm=pixel_spacing_mm)
    crops, affines = roi_crops(radiograph, measurement, size_mm=spec.roi.size_mm, px_per_mm=spec.roi.px_per_mm,
                               pixel_spacing_mm=pixel_spacing_mm)
    size = pre.size
    out = np.stack([pre.to_uint8(c) for c in crops])
    scaled = [np.diag([size / c.shape[1], size / c.shape[0]]) @ a for c, a in zip(crops, affines)]
    return out, scaled, measurement


def prepare(radiograph: Radiograph, spec: ModelSpec, pixel_spacing_mm: float | None = None,
            covariates: Mapping[str, Any] | None = None, measurement: Any = None) -> ModelInput:
    """The network input for one image (see the module docstring); OsteopanoError when it cannot be made
    (a covariate missing, the cortex ROI not found, the spacing unknown for an ROI model)."""
    name = radiograph.path or "image"
    cov = encode_covariates(spec.covariates, covariates, spec.covariate_stats, name)
    u8, affines, measurement = planes(radiograph, spec, pixel_spacing_mm, measurement)
    x = spec.preprocess.normalise(u8)
    return ModelInput(x[0] if spec.input_mode == "whole" else x, cov, affines, measurement)
