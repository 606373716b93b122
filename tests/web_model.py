"""A tiny trained model for the web tests (test_web.py, test_browser.py): synthetic phantoms, one epoch,
64 px, random initial weights, plus its ONNX export. Built once per test session and directory."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from osteopano.cli import app


def build_small_model(base: Path) -> tuple[Path, Path, Path]:
    """(run folder, model.onnx, folder of phantom PNGs) under ``base``; reused when already built."""
    data, run = base / "phantoms", base / "run"
    onnx_file = run / "model.onnx"
    if onnx_file.is_file():
        return run, onnx_file, data
    runner = CliRunner()
    for args in (
        ["synth", str(data), "--n", "12", "--seed", "1", "--width", "800", "--workers", "1"],
        ["train", str(data), "--out", str(run), "--weights", "none", "--epochs", "1", "--image-size", "64",
         "--batch-size", "4", "--workers", "1", "--seed", "0"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"osteopano {args[0]} failed: {result.output}\n{result.exception!r}"
    from osteopano.model.onnx import export_onnx

    export_onnx(run)
    return run, onnx_file, data
