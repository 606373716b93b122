"""Export a training run to one self-contained ONNX file.

The graph is the classifier followed by softmax: input ``input`` float32 (batch, 3, S, S) (the output
of ``Preprocess``), output ``probabilities`` float32 (batch, n_classes), with a dynamic batch axis
(opset 17, PyTorch's TorchScript-based exporter, which works offline without onnxscript).
``metadata_props`` carry, as JSON strings under ``osteopano.*``: the preprocessing recipe, the class
names, the positive class, the threshold with its rule, the model card, the model id and the
osteopano version - so ``OnnxEngine`` needs nothing but the file.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from osteopano import __version__
from osteopano.engines import META_PREFIX, ONNX_NAME, TorchEngine
from osteopano.errors import ModelError
from osteopano.fileio import atomic_write_bytes

OPSET = 17
PARITY_TOLERANCE = 1e-4


def export_onnx(run_dir: str | Path, out: str | Path | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Write ``run_dir``'s model as ONNX (default ``run_dir/model.onnx``), check it with
    ``onnx.checker`` and against PyTorch on a few random inputs. Returns {'path', 'model_id',
    'max_abs_diff', 'bytes'}; ModelError when the check fails."""
    import onnx
    import torch

    engine = TorchEngine.load(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / ONNX_NAME
    size = engine.preprocess.size
    wrapped = torch.nn.Sequential(engine.run.model, torch.nn.Softmax(dim=1)).eval()
    example = torch.zeros(1, 3, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(wrapped, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["probabilities"],
                          dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    model = onnx.load_from_string(buf.getvalue())
    for key, value in metadata(engine).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, json.dumps(value)
    model.doc_string = f"osteopano {engine.model_id}: {engine.card['intended_use']}"
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    diff = _parity(engine, data, seed)
    if diff >= PARITY_TOLERANCE:
        raise ModelError(f"{out}: ONNX output differs from PyTorch by {diff:.2e} (>= {PARITY_TOLERANCE}); "
                         "not written")
    atomic_write_bytes(out, data)
    return {"path": out, "model_id": engine.model_id, "max_abs_diff": diff, "bytes": len(data)}


def metadata(engine: TorchEngine) -> dict[str, Any]:
    """The ``osteopano.*`` metadata entries (values before JSON encoding)."""
    cfg = engine.run.config
    return {
        "preprocess": engine.preprocess.to_dict(),
        "classes": engine.classes,
        "positive": engine.positive,
        "threshold": {"value": engine.threshold, "rule": cfg.threshold_rule,
                      "description": cfg.threshold_note},
        "card": engine.card,
        "model_id": engine.model_id,
        "version": __version__,
    }


def _parity(engine: TorchEngine, onnx_bytes: bytes, seed: int) -> float:
    """max |p_torch - p_onnx| over all classes for 4 random inputs (batch of 3 + batch of 1)."""
    import onnxruntime as ort
    import torch

    size = engine.preprocess.size
    x = np.random.default_rng(seed).standard_normal((4, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    p_onnx = np.concatenate([session.run(None, {name: x[:3]})[0], session.run(None, {name: x[3:]})[0]])
    with torch.inference_mode():
        p_torch = torch.softmax(engine.run.model(torch.from_numpy(x)).float(), 1).numpy()
    return float(np.abs(p_onnx - p_torch).max())
