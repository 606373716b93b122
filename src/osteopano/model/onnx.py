"""Export a training run to one self-contained ONNX file.

The graph is the classifier followed by softmax: input ``input`` float32 (batch, 3, S, S) (the output
of ``Preprocess``), output ``probabilities`` float32 (batch, n_classes), with a dynamic batch axis
(opset 17, PyTorch's TorchScript-based exporter, which works offline without onnxscript).
``metadata_props`` carry, as JSON strings under ``osteopano.*``: the preprocessing recipe, the class
names, the positive class, the threshold with its rule, the model card, the model id and the
osteopano version - so ``OnnxEngine`` needs nothing but the file.

ROI models (``osteopano.prepare.roi``) take ``input`` float32 (batch, 2, 3, S, S): the two cortex crops (the
patient's right, then the mirrored left), cut by ``OnnxEngine`` with numpy/OpenCV and
``osteopano.cortex.measure``. Covariate models take a second input ``covariates`` float32 (batch, D). The
metadata entry ``osteopano.input`` holds the input mode, crop geometry, covariates and their
standardisation (``RunConfig.input_spec``).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from osteopano import __version__
from osteopano.screen.engines import META_PREFIX, ONNX_NAME, TorchEngine
from osteopano.errors import ModelError
from osteopano.io.files import atomic_write_bytes

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
    shape, n_cov = _input_shape(engine)
    classifier = engine.run.model

    class WithSoftmax(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, x, covariates=None):
            return torch.softmax(self.classifier(x, covariates), 1)

    example = (torch.zeros(1, *shape),) + ((torch.zeros(1, n_cov),) if n_cov else ())
    names = ["input", "covariates"][:len(example)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(WithSoftmax().eval(), example, buf, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["probabilities"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "probabilities": {0: "batch"}})
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
        "input": engine.input_spec,
    }


def _input_shape(engine: TorchEngine) -> tuple[tuple[int, ...], int]:
    """One case's input shape ((3, S, S), or (2, 3, S, S) for ROI crops) and the number of covariates."""
    from osteopano.prepare.roi import SIDES, covariate_names

    size = engine.preprocess.size
    shape = (len(SIDES), 3, size, size) if engine.input_spec["mode"] == "roi" else (3, size, size)
    return shape, len(covariate_names(engine.input_spec.get("covariates", [])))


def _parity(engine: TorchEngine, onnx_bytes: bytes, seed: int) -> float:
    """max |p_torch - p_onnx| over all classes for 4 random inputs (batch of 3 + batch of 1)."""
    import onnxruntime as ort
    import torch

    shape, n_cov = _input_shape(engine)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    cov = rng.standard_normal((4, n_cov)).astype(np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def feed(rows: slice) -> dict[str, np.ndarray]:
        return dict(zip(names, (x[rows], cov[rows])))

    p_onnx = np.concatenate([session.run(None, feed(slice(0, 3)))[0], session.run(None, feed(slice(3, 4)))[0]])
    with torch.inference_mode():
        p_torch = torch.softmax(engine.run.model(torch.from_numpy(x), torch.from_numpy(cov)).float(), 1).numpy()
    return float(np.abs(p_onnx - p_torch).max())
