"""The model card: what a model is, how it was trained and how it did on held-out data.

``build_card`` writes it from a run (its ``ModelSpec`` is the source of the input, classes and
threshold entries); ``CardView`` is the one reader of a card for the report, the web page and the
CLI, whatever osteopano version wrote it (older cards said ``how_chosen`` for the threshold's
description).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osteopano import __version__
from osteopano.model.config import RunConfig
from osteopano.prepare.spec import ModelSpec

INTENDED_USE = ("Screening aid: flags panoramic radiographs whose appearance suggests low bone mineral "
                "density, for referral to DXA. Not a diagnosis.")
CARD_METRICS = ("n", "n_positive", "n_negative", "accuracy", "sensitivity", "specificity", "precision", "npv",
                "f1", "auc", "brier", "evaluated_on")


def build_card(run_dir: Path, cfg: RunConfig, spec: ModelSpec, model_id: str) -> dict[str, Any]:
    """The card of a finished run (test metrics with 95% CIs from ``metrics.json``)."""
    metrics = _read_json(Path(run_dir) / "metrics.json")
    synthetic = cfg.data_synthetic
    n_images = sum(sum(v.values()) for v in metrics.get("split_sizes", {}).values()) or None
    return {
        "model_id": model_id,
        "name": Path(run_dir).resolve().name,
        "intended_use": INTENDED_USE,
        "backbone": cfg.backbone,
        "initial_weights": cfg.weights,
        "input": {"mode": spec.input_mode, "size": spec.preprocess.size, "covariates": list(spec.covariates),
                  **({"roi": spec.roi.to_dict()} if spec.input_mode == "roi" else {})},
        "classes": list(spec.classes),
        "positive_class": spec.positive,
        "threshold": spec.threshold.to_dict(),
        "training_data": {"synthetic": synthetic,
                          "description": _data_description(cfg, synthetic, n_images), "n_images": n_images},
        "test_metrics": {k: metrics[k] for k in CARD_METRICS if k in metrics},
        "epochs_run": metrics.get("epochs_run"),
        "osteopano_version": (cfg.versions or {}).get("osteopano") or __version__,
        "trained": cfg.created,
    }


@dataclass(frozen=True)
class CardView:
    """A card read once for display: every consumer uses these attributes, never the raw layout."""

    model_id: str | None
    name: str | None
    intended_use: str | None
    synthetic: bool | None
    data_description: str | None
    n_images: int | None
    threshold: float | None
    threshold_rule: str | None
    threshold_description: str | None
    metrics: dict[str, Any]
    trained: str | None
    version: str | None
    input_mode: str
    backbone: str | None
    classes: tuple[str, ...]

    @classmethod
    def of(cls, card: dict[str, Any] | None) -> CardView:
        card = card if isinstance(card, dict) else {}
        data = card.get("training_data") if isinstance(card.get("training_data"), dict) else {}
        thr = card.get("threshold") if isinstance(card.get("threshold"), dict) else {}
        metrics = card.get("test_metrics") if isinstance(card.get("test_metrics"), dict) else {}
        inp = card.get("input") if isinstance(card.get("input"), dict) else {}
        value = thr.get("value")
        return cls(model_id=card.get("model_id"), name=card.get("name"), intended_use=card.get("intended_use"),
                   synthetic=data.get("synthetic"), data_description=data.get("description"),
                   n_images=data.get("n_images"), threshold=None if value is None else float(value),
                   threshold_rule=thr.get("rule"),
                   threshold_description=thr.get("description") or thr.get("how_chosen"),
                   metrics=metrics, trained=card.get("trained") or card.get("created"),
                   version=card.get("osteopano_version") or card.get("version"), input_mode=inp.get("mode", "whole"),
                   backbone=card.get("backbone"), classes=tuple(map(str, card.get("classes") or ())))


def _data_description(cfg: RunConfig, synthetic: bool | None, n_images: int | None) -> str:
    kind = {True: "SYNTHETIC panoramic phantom (osteopano synth); results are not clinical evidence",
            False: "radiographs", None: "data of unknown provenance (synthetic or not: unknown)"}
    count = f"{n_images} labelled images" if n_images else "an unknown number of images"
    # the last two path parts only (e.g. dev/manifest.csv): no local directory layout in cards
    source = "/".join(Path(cfg.data).parts[-2:]) if cfg.data else "an unrecorded path"
    return (f"{kind[synthetic]}: {count} from {source}, label column "
            f"{cfg.label_column!r}, split {cfg.split_source} {list(cfg.split_fractions)} (train/val/test)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
