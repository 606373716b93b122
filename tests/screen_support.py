"""Shared test support: a tiny trained run (trained once per test process) and `run_cli`.

Its session fixtures (`screen_base`, `run`) are in tests/conftest.py; `run_cli` runs the CLI in-process.
"""

from __future__ import annotations

import functools
from pathlib import Path

PHANTOM_WIDTH = 256  # 256 x ~125 px images: small, fast
N_TRAIN = 24


@functools.cache
def trained_run(base: Path) -> Path:
    """Synthesise N_TRAIN phantoms and train efficientnet_lite0 from scratch for 1 epoch at 64 px."""
    from osteopano.model.config import RunConfig
    from osteopano.phantom.generate import generate
    from osteopano.prepare.intensity import Preprocess
    from osteopano.train.loop import train_run

    data = base / "phantoms"
    generate(data, N_TRAIN, 0, width=PHANTOM_WIDTH, progress=False, workers=1)
    cfg = RunConfig(data=str(data), weights="none", epochs=1, image_size=64, precision="fp32",
                    preprocess=Preprocess(size=64, mean=(0.5,) * 3, std=(0.5,) * 3).to_dict())
    run = base / "run"
    train_run(cfg, run, workers=1)
    return run


@functools.cache
def exported_onnx(base: Path) -> Path:
    """``trained_run(base)`` exported to ONNX beside it (once per test process)."""
    from osteopano.model.onnx import export_onnx

    return export_onnx(trained_run(base), base / "model.onnx")["path"]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``osteopano ARGS`` in-process through ``cli.main``; returns (exit status, stdout, stderr)."""
    import sys

    import pytest

    from osteopano import cli

    monkeypatch.setattr(sys, "argv", ["osteopano", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err
