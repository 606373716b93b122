"""``osteopano export``: write a training run as one self-contained ONNX file for torch-free inference."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    run: Path = typer.Argument(..., help="A finished training run folder (config.json + model.safetensors)."),
    onnx: Path | None = typer.Option(None, "--onnx", help="The ONNX file to write (default RUN/model.onnx)."),
) -> None:
    """Export the run's model (with softmax) to ONNX, with its preprocessing, classes, threshold and model
    card in the file's metadata, so `osteopano predict FILE.onnx` needs neither the run folder nor PyTorch.
    The file is checked with onnx.checker and against PyTorch before it is written."""
    from rich.console import Console

    from osteopano.model.onnx import export_onnx

    info = export_onnx(run, onnx)
    Console().print(f"Wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, model {info['model_id']}); "
                    f"max |p_torch - p_onnx| = {info['max_abs_diff']:.1e}")
