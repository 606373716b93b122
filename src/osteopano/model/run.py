"""A finished training run folder, loaded for inference: ``load_run`` -> ``RunModel``.

A run folder holds ``config.json`` (``RunConfig``, with the ``ModelSpec`` under ``spec``) and
``model.safetensors``. Folders written before the spec existed (config version 1) still load: their
settings are converted by ``RunConfig.from_dict``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osteopano.errors import ModelError
from osteopano.model.config import RunConfig
from osteopano.prepare.spec import ModelSpec

if TYPE_CHECKING:
    from osteopano.model.networks import Classifier

RUN_FILES = ("config.json", "model.safetensors")


@dataclass
class RunModel:
    """A trained run, ready for inference: ``model`` the ``Classifier`` in eval mode (fp32, CPU;
    ``model.backbone`` the timm network for Grad-CAM), ``spec`` what it expects, ``config`` how it was made."""

    run_dir: Path
    model: Classifier
    config: RunConfig
    spec: ModelSpec

    @property
    def model_id(self) -> str:
        return run_model_id(self.run_dir)


def read_config(run_dir: str | Path) -> RunConfig:
    """The finished run's config with its spec; ModelError (one line) when missing, unreadable or unfinished."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: no such run folder")
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        hint = " (training unfinished? continue it with --resume)" if (run_dir / "checkpoint.pt").exists() else ""
        raise ModelError(f"{run_dir}: not a complete run, missing {', '.join(missing)}{hint}")
    try:
        cfg = RunConfig.load(run_dir / "config.json")
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise ModelError(f"{run_dir / 'config.json'}: unreadable run config ({exc}); if it was written by a "
                         "newer osteopano, upgrade; else retrain") from None
    if cfg.spec is None:
        raise ModelError(f"{run_dir}: the run has no threshold (training did not finish)")
    return cfg


def load_run(run_dir: str | Path) -> RunModel:
    """Rebuild a finished run's model from ``config.json`` + ``model.safetensors``; ModelError when incomplete."""
    from safetensors.torch import load_file

    from osteopano.model.networks import create_model

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    spec = cfg.spec
    model = create_model(cfg.backbone, len(spec.classes), "none", cfg.dropout, cfg.hidden,
                         n_covariates=spec.n_covariates)
    try:
        model.load_state_dict(load_file(str(run_dir / "model.safetensors")), strict=True)
    except Exception as exc:
        raise ModelError(f"{run_dir / 'model.safetensors'}: does not fit the configured model "
                         f"({str(exc).splitlines()[0][:150]})") from None
    return RunModel(run_dir, model.eval(), cfg, spec)


def run_model_id(run_dir: str | Path) -> str:
    """``<run folder name>-<first 8 hex of sha256(model.safetensors)>``: names the exact weights."""
    run_dir = Path(run_dir).resolve()
    digest = hashlib.sha256()
    with (run_dir / "model.safetensors").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{run_dir.name}-{digest.hexdigest()[:8]}"
