"""``ModelSpec``: everything a trained model expects besides its weights, in one frozen record.

The spec travels with every model: it is written into the run's ``config.json`` (key ``spec``),
into one ONNX metadata entry (``osteopano.spec``) and is the source of the model card. Whoever
prepares an input (training, the torch engine, the ONNX engine, Grad-CAM) reads it from here:

* ``preprocess`` - the intensity recipe (``Preprocess``: window, CLAHE, size, mean/std);
* ``input_mode`` - ``'whole'`` (the panoramic squashed to a square, the study) or ``'roi'`` (the two
  inferior-cortex crops, ``roi`` says how they are cut);
* ``covariates`` and ``covariate_stats`` - clinical inputs of the head and their training-split
  standardisation;
* ``classes`` (output order), ``positive`` (the screen-positive class);
* ``threshold`` - the decision threshold with the rule that chose it and a description.

``ModelSpec.from_dict(spec.to_dict()) == spec``; unknown keys are an error (a newer format).
Older run folders and ONNX files (before the spec existed) are read by
``osteopano.model.run.spec_from_config`` and ``osteopano.model.onnx.spec_from_metadata``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from osteopano.prepare.intensity import Preprocess
from osteopano.prepare.covariates import covariate_names
from osteopano.prepare.roi import RoiSpec

SPEC_VERSION = 1
INPUT_MODES = ("whole", "roi")


@dataclass(frozen=True)
class Threshold:
    """The decision threshold: ``decision = probability >= value``."""

    value: float = 0.5
    rule: str = "0.5"           # as asked: a number, 'youden', 'sens:0.9'
    description: str = ""       # how it was chosen, in words

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rule": self.rule, "description": self.description}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Threshold:
        _no_unknown(d, ("value", "rule", "description"), "threshold")
        return cls(float(d.get("value", 0.5)), str(d.get("rule", "0.5")), str(d.get("description", "")))


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and how its output is read; see the module docstring."""

    preprocess: Preprocess = field(default_factory=Preprocess)
    input_mode: str = "whole"
    roi: RoiSpec = field(default_factory=RoiSpec)
    covariates: tuple[str, ...] = ()
    covariate_stats: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ("normal", "osteoporosis")
    positive: str = "osteoporosis"
    threshold: Threshold = field(default_factory=Threshold)

    def __post_init__(self) -> None:
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input mode {self.input_mode!r} (use {' or '.join(INPUT_MODES)})")
        object.__setattr__(self, "covariates", tuple(self.covariates))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.positive not in self.classes:
            raise ValueError(f"positive class {self.positive!r} is not one of {', '.join(self.classes)}")

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive)

    @property
    def n_covariates(self) -> int:
        return len(covariate_names(self.covariates))

    def input_shape(self) -> tuple[int, ...]:
        """One case's network input: (3, S, S), or (2, 3, S, S) for the two ROI crops."""
        size = self.preprocess.size
        return (2, 3, size, size) if self.input_mode == "roi" else (3, size, size)

    def replace(self, **changes: Any) -> ModelSpec:
        import dataclasses

        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"spec_version": SPEC_VERSION, "preprocess": self.preprocess.to_dict(), "input_mode": self.input_mode,
                "roi": self.roi.to_dict(), "covariates": list(self.covariates),
                "covariate_stats": dict(self.covariate_stats), "classes": list(self.classes),
                "positive": self.positive, "threshold": self.threshold.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``; ValueError for unknown keys or a newer spec version."""
        _no_unknown(d, ("spec_version", "preprocess", "input_mode", "roi", "covariates", "covariate_stats",
                        "classes", "positive", "threshold"), "model spec")
        if int(d.get("spec_version", SPEC_VERSION)) > SPEC_VERSION:
            raise ValueError(f"model spec version {d['spec_version']} is newer than this osteopano "
                             f"understands ({SPEC_VERSION}); upgrade osteopano")
        return cls(preprocess=Preprocess.from_dict(d.get("preprocess", {})), input_mode=d.get("input_mode", "whole"),
                   roi=RoiSpec.from_dict(d.get("roi", {})), covariates=tuple(d.get("covariates", ())),
                   covariate_stats=dict(d.get("covariate_stats", {})),
                   classes=tuple(d.get("classes", ("normal", "osteoporosis"))),
                   positive=d.get("positive", "osteoporosis"),
                   threshold=Threshold.from_dict(d.get("threshold", {})))


def _no_unknown(d: Mapping[str, Any], known: tuple[str, ...], what: str) -> None:
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(sorted(unknown))}")
