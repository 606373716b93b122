"""Training presets as data, read by ``RunConfig`` defaults and the ``osteopano train`` options alike.

``"paper"`` is the protocol of Brangakgi & Khadra (2024): 224 px input, brightness/contrast
normalisation (percentile window then CLAHE), a stratified 50/25/25 split, an ImageNet backbone with
a dense head, Adam at 2e-4, batch 32, up to 100 epochs with early stopping (patience 10).
``recipe`` gives the intensity recipe a run uses: the backbone's own ImageNet mean/std (timm's
pretrained config), and no CLAHE on ROI crops (its 8 x 8 tiles on a 25 x 12 mm crop would flatten the
cortex / trabecular contrast the model is meant to see).
"""

from __future__ import annotations

from typing import Any

from osteopano.errors import DataError
from osteopano.prepare.intensity import Preprocess

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "backbone": "efficientnet_lite0",
        "weights": "imagenet",
        "image_size": 224,
        "window": (0.5, 99.5),
        "clahe_clip": 2.0,
        "clahe_grid": 8,
        "roi_clahe_clip": 0.0,
        "split_fractions": (0.5, 0.25, 0.25),
        "dropout": 0.3,
        "hidden": (256, 128),
        "epochs": 100,
        "patience": 10,
        "batch_size": 32,
        "lr": 2e-4,
        "threshold_rule": "0.5",
        "augmentation": {"hflip": 0.5, "degrees": 5.0, "translate": 0.03, "scale": [0.95, 1.05],
                         "brightness": 0.1, "contrast": 0.1},
    },
}
DEFAULT_PRESET = "paper"


def preset(name: str = DEFAULT_PRESET) -> dict[str, Any]:
    """A copy of the named preset; DataError for an unknown name."""
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r} (available: {', '.join(PRESETS)})")
    import copy

    return copy.deepcopy(PRESETS[name])


def recipe(preset_name: str, backbone: str, input_mode: str, image_size: int) -> Preprocess:
    """The intensity recipe of a run: the preset's window and CLAHE (none on ROI crops), the backbone's
    ImageNet mean/std (needs timm), the run's input size."""
    from osteopano.model.networks import backbone_mean_std

    p = preset(preset_name)
    mean, std = backbone_mean_std(backbone)
    clip = p["roi_clahe_clip"] if input_mode == "roi" else p["clahe_clip"]
    return Preprocess(size=image_size, window_low=p["window"][0], window_high=p["window"][1], clahe_clip=clip,
                      clahe_grid=p["clahe_grid"], mean=mean, std=std)
