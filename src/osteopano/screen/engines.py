"""Inference engines: the network behind a ``Screener``, from a PyTorch run folder or a standalone ONNX file.

An engine only runs the network: ``probabilities(x, covariates)`` on prepared inputs
(``osteopano.prepare.chain``) and, for torch, ``heatmap`` (Grad-CAM). It carries the model's
``ModelSpec``, its card and id. ``OnnxEngine`` needs only the core dependencies (numpy, OpenCV,
onnxruntime): it never imports torch, timm or scikit-learn, and reads its spec and card from the ONNX
file's metadata (``osteopano.model.onnx.read_metadata``).

Threads (docs/speed.md): the network shares the cores with the threads that decode and prepare the next
images (``osteopano.screen.prefetch``), so both engines run it on ``network_threads()`` intra-op threads -
a quarter of the cores, at least one (one on a 2-core machine): decoding and preparing cost about four
times the network's CPU, and a network thread that waits for a descheduled partner wastes its core.
``OSTEOPANO_ONNX_THREADS`` / ``OSTEOPANO_TORCH_THREADS`` (or ``threads=``) choose otherwise. ONNX
Runtime's settings are per session (``session_options``). PyTorch's are per process, so
``TorchEngine.load`` sets them only when it is the one that imports torch (``osteopano predict``,
``measure``, ``serve``, ``osteopano.load`` in a fresh process) or when asked: it sets
``OMP_WAIT_POLICY=PASSIVE`` (unless set) before the import, so idle OpenMP threads sleep instead of
spinning on the cores the decoders need, and ``torch.set_num_threads``. Nothing is set on importing
osteopano.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osteopano.errors import ModelError
from osteopano.model.onnx import ONNX_NAME, read_metadata
from osteopano.prepare.spec import ModelSpec

if TYPE_CHECKING:
    from osteopano.io.images import Radiograph
    from osteopano.model.run import RunModel
    from osteopano.prepare.chain import ModelInput

ENGINES = ("auto", "torch", "onnx")


class Engine:
    """The network of one model; subclasses supply ``probabilities`` (and, for torch, ``heatmap``)."""

    supports_heatmaps = False
    heatmap_unavailable = "this engine cannot make heatmaps"

    def __init__(self, spec: ModelSpec, card: dict[str, Any], model_id: str):
        self.spec, self.card, self.model_id = spec, card, model_id

    def probabilities(self, x: np.ndarray, covariates: np.ndarray) -> np.ndarray:
        """Positive-class probability for prepared inputs: float32 (N, 3, S, S) or (N, 2, 3, S, S) (ROI
        crops) with (N, D) covariates -> (N,)."""
        raise NotImplementedError

    def heatmap(self, image: Radiograph, prepared: ModelInput) -> np.ndarray:
        """Grad-CAM map for ``image``: float32 (H, W) in [0, 1] at its full resolution."""
        raise ModelError(self.heatmap_unavailable)


class TorchEngine(Engine):
    """A training run folder (``config.json`` + ``model.safetensors``) on PyTorch; Grad-CAM available."""

    supports_heatmaps = True

    def __init__(self, run: RunModel):
        self.run = run
        # Grad-CAM hooks the shared network: two heatmaps at once would mix their activations.
        self._gradcam_lock = threading.Lock()
        self._frozen = None  # the network traced and frozen for inference, made on first use
        self._freeze_lock = threading.Lock()
        from osteopano.model.card import build_card

        model_id = run.model_id
        super().__init__(run.spec, build_card(run.run_dir, run.config, run.spec, model_id), model_id)

    @classmethod
    def load(cls, run_dir: str | Path, threads: int | None = None) -> TorchEngine:
        """The run's network for inference, in channels-last layout (faster convolutions on CPU).

        ``threads`` (default ``OSTEOPANO_TORCH_THREADS``, else ``network_threads()`` when this call
        imports torch; a torch imported earlier keeps its settings): torch's intra-op threads."""
        first = "torch" not in sys.modules
        if first:  # libgomp reads it once, when torch loads it
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        from osteopano.model.run import load_run

        threads = threads or _env_threads("OSTEOPANO_TORCH_THREADS")
        if threads or first:
            torch.set_num_threads(threads or network_threads())
        run = load_run(run_dir)
        run.model.to(memory_format=torch.channels_last)
        return cls(run)

    def probabilities(self, x: np.ndarray, covariates: np.ndarray) -> np.ndarray:
        import torch

        cov = torch.from_numpy(np.ascontiguousarray(covariates, np.float32))
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self._network(inputs, cov)
            return torch.softmax(logits.float(), 1)[:, self.spec.positive_index].numpy()

    def _network(self, inputs, cov):
        """The network traced and frozen on its first call (batch norm folded into the convolutions:
        about a third less CPU per image than eager mode; logits agree to ~1e-6); eager mode if it
        cannot be traced. Grad-CAM keeps using the eager network."""
        if self._frozen is None:
            with self._freeze_lock:
                if self._frozen is None:
                    self._frozen = _freeze(self.run.model, inputs, cov)
        return self._frozen(inputs, cov)

    def heatmap(self, image: Radiograph, prepared: ModelInput) -> np.ndarray:
        try:
            from osteopano.screen.explain import gradcam
        except ImportError as exc:
            raise ModelError(f"Grad-CAM heatmaps are unavailable ({exc})") from None
        with self._gradcam_lock:
            return gradcam(self.run, image, model_input=prepared)


def _freeze(model, inputs, cov):
    """``torch.jit.freeze(torch.jit.trace(model))`` for inference, or ``model`` when that fails."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(model.eval(), (inputs, cov), check_trace=False))
    except Exception:  # noqa: BLE001 - any model that does not trace runs as it is
        return model


class OnnxEngine(Engine):
    """A standalone ``.onnx`` file written by ``osteopano export``, on onnxruntime (no torch).

    ``threads``: onnxruntime's intra-op threads (default: ``OSTEOPANO_ONNX_THREADS``, else
    ``network_threads()``)."""

    heatmap_unavailable = ("heatmaps need Grad-CAM, which needs the PyTorch model: load the run folder "
                           "with engine='torch' (osteopano predict RUN --engine torch)")

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        threads = threads or _env_threads("OSTEOPANO_ONNX_THREADS") or network_threads()
        options = session_options(ort, threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise ModelError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:150]})") from None
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        super().__init__(*read_metadata(self.session.get_modelmeta().custom_metadata_map, path))

    def probabilities(self, x: np.ndarray, covariates: np.ndarray) -> np.ndarray:
        feed = {self.input_names[0]: np.ascontiguousarray(x, dtype=np.float32)}
        if len(self.input_names) > 1:  # the covariates input
            feed[self.input_names[1]] = np.ascontiguousarray(covariates, dtype=np.float32)
        (probs,) = self.session.run(None, feed)
        return probs[:, self.spec.positive_index]


def network_threads() -> int:
    """Intra-op threads for the network beside the prefetch threads: a quarter of the cores this
    process may use, at least 1 (module text)."""
    from osteopano.screen.prefetch import default_workers

    return max(1, default_workers() // 4)


def _env_threads(name: str) -> int | None:
    """A positive thread count from environment variable ``name``; None when unset, 0 or empty."""
    text = os.environ.get(name, "").strip()
    try:
        value = int(text) if text else 0
    except ValueError:
        raise ModelError(f"{name}={text!r} is not a number of threads") from None
    return value if value > 0 else None


def session_options(ort: Any, threads: int | None = None) -> Any:
    """ONNX Runtime settings for a pipeline whose decode threads share the cores with inference:
    ``threads`` intra-op threads (default: onnxruntime's, one per core; 1 for one session per core,
    as on Ray), no busy-waiting between ops (spinning threads would take the cores from the
    decoders), one inter-op thread and sequential execution (a batch is one chain of ops; a second
    pool would only compete), every graph optimisation."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_engine(path: str | Path, engine: str = "auto") -> Engine:
    """The engine for a run folder or an ``.onnx`` file.

    ``engine``: 'torch' (run folder; Grad-CAM heatmaps), 'onnx' (an .onnx file, or RUN/model.onnx;
    no torch needed) or 'auto' (onnx for an .onnx file; for a run folder torch when it is installed,
    else RUN/model.onnx).
    """
    path = Path(path).expanduser()
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
    if not path.exists():
        raise ModelError(f"{path}: no such run folder or ONNX file")
    if path.is_file():
        if engine == "torch":
            raise ModelError(f"{path}: the torch engine needs a run folder; an .onnx file runs on the onnx engine")
        return OnnxEngine(path)
    if engine == "onnx" or (engine == "auto" and not _torch_available()):
        onnx_file = path / ONNX_NAME
        if not onnx_file.is_file():
            why = "" if engine == "onnx" else " (PyTorch is not installed: pip install 'osteopano[train]')"
            raise ModelError(f"{path}: no {ONNX_NAME} in the run folder{why}; "
                             f"write it with: osteopano export {path}")
        return OnnxEngine(onnx_file)
    return TorchEngine.load(path)


def _torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "timm", "safetensors"))
