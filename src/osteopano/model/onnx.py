"""Export a training run to one self-contained ONNX file.

The graph is the classifier followed by softmax: input ``input`` float32 (batch, 3, S, S) (the output
of ``Preprocess``), output ``probabilities`` float32 (batch, n_classes), with a dynamic batch axis
(opset 17, PyTorch's TorchScript-based exporter, which works offline without onnxscript).
``metadata_props`` carry, as JSON strings: ``osteopano.spec`` (the ``ModelSpec``: preprocessing recipe,
input mode, ROI and covariates, classes, threshold with its rule), ``osteopano.card`` (the model card),
``osteopano.model_id`` and ``osteopano.version`` - so ``OnnxEngine`` needs nothing but the file.
Files exported before the spec existed carry eight separate keys instead; ``read_metadata`` reads both.

ROI models (``osteopano.prepare.roi``) take ``input`` float32 (batch, 2, 3, S, S): the two cortex crops (the
patient's right, then the mirrored left), cut by ``OnnxEngine`` with numpy/OpenCV and
``osteopano.cortex.measure``. Covariate models take a second input ``covariates`` float32 (batch, D). The
spec holds the input mode, crop geometry, covariates and their standardisation.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from osteopano import __version__
from osteopano.errors import ModelError
from osteopano.io.files import atomic_write_bytes
from osteopano.model.card import build_card
from osteopano.model.run import RunModel, load_run
from osteopano.prepare.intensity import Preprocess
from osteopano.prepare.roi import RoiSpec
from osteopano.prepare.spec import ModelSpec, Threshold

META_PREFIX = "osteopano."  # ONNX metadata_props keys: osteopano.spec, osteopano.card, ...
ONNX_NAME = "model.onnx"    # default export location inside a run folder

OPSET = 17
PARITY_TOLERANCE = 1e-4


def export_onnx(run_dir: str | Path, out: str | Path | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Write ``run_dir``'s model as ONNX (default ``run_dir/model.onnx``), check it with
    ``onnx.checker`` and against PyTorch on a few random inputs. Returns {'path', 'model_id',
    'max_abs_diff', 'bytes'}; ModelError when the check fails."""
    import onnx
    import torch

    run = load_run(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / ONNX_NAME
    shape, n_cov = run.spec.input_shape(), run.spec.n_covariates
    classifier = run.model

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
    meta = metadata(run)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, json.dumps(value)
    model.doc_string = f"osteopano {meta['model_id']}: {meta['card']['intended_use']}"
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    diff = _parity(run, data, seed)
    if diff >= PARITY_TOLERANCE:
        raise ModelError(f"{out}: ONNX output differs from PyTorch by {diff:.2e} (>= {PARITY_TOLERANCE}); "
                         "not written")
    atomic_write_bytes(out, data)
    return {"path": out, "model_id": meta["model_id"], "max_abs_diff": diff, "bytes": len(data)}


def metadata(run: RunModel) -> dict[str, Any]:
    """The ``osteopano.*`` metadata entries (values before JSON encoding)."""
    model_id = run.model_id
    return {"spec": run.spec.to_dict(), "card": build_card(run.run_dir, run.config, run.spec, model_id),
            "model_id": model_id, "version": __version__}


def read_metadata(props: dict[str, str], path: Path) -> tuple[ModelSpec, dict[str, Any], str]:
    """(spec, card, model_id) from an exported file's metadata, this version's or the older eight keys;
    ModelError (one line, saying how to re-export) when absent or broken."""
    try:
        if META_PREFIX + "spec" in props:
            spec = ModelSpec.from_dict(json.loads(props[META_PREFIX + "spec"]))
            return spec, json.loads(props[META_PREFIX + "card"]), json.loads(props[META_PREFIX + "model_id"])
        return _read_v1(props, path)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: broken or unknown osteopano metadata ({exc}); re-export it with: "
                         "osteopano export RUN") from None


def _read_v1(props: dict[str, str], path: Path) -> tuple[ModelSpec, dict[str, Any], str]:
    """Metadata of files exported before ``ModelSpec`` (osteopano 0.1: eight keys)."""
    keys = ("preprocess", "classes", "positive", "threshold", "card", "model_id", "version")
    missing = [k for k in keys if META_PREFIX + k not in props]
    if missing:
        raise ModelError(f"{path}: not an osteopano ONNX export (metadata {', '.join(missing)} missing); "
                         "write one with: osteopano export RUN")
    meta = {k: json.loads(props[META_PREFIX + k]) for k in keys}
    inp = json.loads(props[META_PREFIX + "input"]) if META_PREFIX + "input" in props else {}
    thr = meta["threshold"]
    spec = ModelSpec(preprocess=Preprocess.from_dict(meta["preprocess"]), input_mode=inp.get("mode", "whole"),
                     roi=RoiSpec.from_dict(inp.get("roi", {})), covariates=tuple(inp.get("covariates", ())),
                     covariate_stats=inp.get("covariate_stats", {}), classes=tuple(meta["classes"]),
                     positive=meta["positive"],
                     threshold=Threshold(float(thr["value"]), str(thr.get("rule", "")),
                                         str(thr.get("description", ""))))
    return spec, meta["card"], meta["model_id"]


def _parity(run: RunModel, onnx_bytes: bytes, seed: int) -> float:
    """max |p_torch - p_onnx| over all classes for 4 random inputs (batch of 3 + batch of 1)."""
    import onnxruntime as ort
    import torch

    shape, n_cov = run.spec.input_shape(), run.spec.n_covariates
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    cov = rng.standard_normal((4, n_cov)).astype(np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def feed(rows: slice) -> dict[str, np.ndarray]:
        return dict(zip(names, (x[rows], cov[rows])))

    p_onnx = np.concatenate([session.run(None, feed(slice(0, 3)))[0], session.run(None, feed(slice(3, 4)))[0]])
    with torch.inference_mode():
        p_torch = torch.softmax(run.model(torch.from_numpy(x), torch.from_numpy(cov)).float(), 1).numpy()
    return float(np.abs(p_onnx - p_torch).max())
