"""Inference engines behind ``osteopano.load``: the PyTorch run folder or the standalone ONNX file.

Both give the same interface (``Engine``): ``predict``, ``predict_batch``, ``iter_predict``, ``card``,
``model_id``, ``threshold``. ``OnnxEngine`` needs only the core dependencies (numpy, OpenCV,
onnxruntime): it never imports torch, timm or scikit-learn, and takes its preprocessing recipe,
classes, threshold and model card from the ONNX file's metadata. ``TorchEngine`` wraps
``osteopano.train.loop.load_run`` and can also make Grad-CAM heatmaps (``osteopano.screen.explain``);
the ONNX engine cannot (Grad-CAM needs the network's gradients).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osteopano import __version__
from osteopano.errors import ModelError, OsteopanoError
from osteopano.io.images import Radiograph, from_array, read_image
from osteopano.prepare.intensity import Preprocess
from osteopano.prepare.roi import RoiSpec, encode_covariates, measure_roi
from osteopano.screen.batch import ScreeningResult

if TYPE_CHECKING:
    from osteopano.train.loop import RunModel

ImageLike = str | Path | np.ndarray | Radiograph
Covariates = Mapping[str, Any] | None
WHOLE_INPUT = {"mode": "whole", "covariates": [], "covariate_stats": {}}
ENGINES = ("auto", "torch", "onnx")
ONNX_NAME = "model.onnx"  # default export location inside a run folder
META_PREFIX = "osteopano."  # ONNX metadata_props keys: osteopano.prepare.intensity, osteopano.card, ...
INTENDED_USE = ("Screening aid: flags panoramic radiographs whose appearance suggests low bone mineral "
                "density, for referral to DXA. Not a diagnosis.")


@dataclass
class ModelInput:
    """One image made ready for the network: ``x`` (3, S, S), or (2, 3, S, S) for the two cortex ROI
    crops; ``covariates`` (D,) encoded; ``affines`` image->crop (ROI only, to draw heatmaps back)."""

    x: np.ndarray
    covariates: np.ndarray
    affines: list[np.ndarray] | None = None


class Engine:
    """Common prediction logic; subclasses supply ``probabilities`` (and, for torch, ``heatmap``).

    ``input_spec`` (``RunConfig.input_spec``): 'whole' models take the squashed image; 'roi' models
    measure the cortex and take both ROI crops (``osteopano.prepare.roi``; needs the pixel spacing: the
    ``pixel_spacing_mm`` argument, else the file's). Models with ``covariates`` need them per call
    (``covariates={'age': 67, 'sex': 'F'}``); a missing one is an error for that image, never imputed.
    """

    name = "engine"
    supports_heatmaps = False
    heatmap_unavailable = "this engine cannot make heatmaps"

    def __init__(self, *, preprocess: Preprocess, classes: list[str], positive: str, threshold: float,
                 model_id: str, card: dict[str, Any], input_spec: dict[str, Any] | None = None):
        self.input_spec = dict(input_spec or WHOLE_INPUT)
        self.preprocess = preprocess
        self.classes = list(classes)
        self.positive = positive
        self.threshold = float(threshold)
        self.model_id = model_id
        self.card = card

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive)

    def probabilities(self, batch: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
        """Positive-class probability for a preprocessed batch, float32 (N, 3, S, S) or (N, 2, 3, S, S)
        (ROI crops), with (N, D) covariates when the model takes them -> (N,)."""
        raise NotImplementedError

    def model_input(self, image: Radiograph, pixel_spacing_mm: float | None = None,
                    covariates: Covariates = None) -> ModelInput:
        """The network input for one image (see the class docstring); OsteopanoError when it cannot be made."""
        spec = self.input_spec
        name = image.path or "image"
        cov = encode_covariates(spec.get("covariates", []), covariates, spec.get("covariate_stats", {}), name)
        if spec["mode"] == "roi":
            planes, affines, _ = measure_roi(image, self.preprocess, RoiSpec.from_dict(spec["roi"]),
                                             pixel_spacing_mm)
            return ModelInput(np.stack([self.preprocess.normalise(p) for p in planes]), cov, affines)
        return ModelInput(self.preprocess(image.pixels), cov)

    def heatmap(self, image: Radiograph, covariates: Covariates = None,
                pixel_spacing_mm: float | None = None) -> np.ndarray:
        """Grad-CAM map for ``image``: float32 (H, W) in [0, 1] at its full resolution."""
        if not self.supports_heatmaps:
            raise ModelError(self.heatmap_unavailable)
        spacing = pixel_spacing_mm if pixel_spacing_mm is not None else image.pixel_spacing_mm
        return self._heatmap(image, self.model_input(image, spacing, covariates))

    def _heatmap(self, image: Radiograph, prepared: ModelInput) -> np.ndarray:
        raise ModelError(self.heatmap_unavailable)

    def predict(self, image: ImageLike, heatmap: bool = False,
                pixel_spacing_mm: float | None = None, covariates: Covariates = None) -> ScreeningResult:
        """Screen one image (file path, (H, W) array or Radiograph). An unreadable file raises
        ImageReadError; use ``predict_batch`` to get error results instead.

        ``heatmap=True`` adds the Grad-CAM map (``result.heatmap``) where the engine can make one
        (``supports_heatmaps``: torch only); elsewhere it warns and ``result.heatmap`` stays None."""
        radiograph = as_radiograph(image)
        [(result, _)] = next(self.iter_predict([radiograph], heatmap=heatmap, pixel_spacing_mm=pixel_spacing_mm,
                                               covariates=covariates))
        if result.error:
            raise OsteopanoError(result.error)
        return result

    def predict_batch(self, images: Iterable[ImageLike], heatmap: bool = False, batch_size: int = 16,
                      pixel_spacing_mm: float | None = None, covariates: Covariates = None
                      ) -> list[ScreeningResult]:
        """Screen many images; an unreadable one gives a result with ``error`` set and the batch goes on."""
        return [r for pairs in self.iter_predict(images, heatmap=heatmap, batch_size=batch_size,
                                                 pixel_spacing_mm=pixel_spacing_mm, covariates=covariates)
                for r, _ in pairs]

    def iter_predict(self, images: Iterable[ImageLike], *, heatmap: bool = False, batch_size: int = 16,
                     pixel_spacing_mm: float | None = None, covariates: Covariates = None
                     ) -> Iterator[list[tuple[ScreeningResult, Radiograph | None]]]:
        """Lazily read and screen ``images`` ``batch_size`` at a time; yields (result, radiograph or None
        when unusable) pairs per batch. Only one batch of decoded images is alive at a time.
        ``covariates`` (covariate models) apply to every image of the call."""
        if heatmap and not self.supports_heatmaps:
            warnings.warn(f"no heatmaps: {self.heatmap_unavailable}", stacklevel=3)
            heatmap = False
        if batch_size < 1:
            raise OsteopanoError(f"batch size must be at least 1, got {batch_size}")
        chunk: list[ImageLike] = []
        for item in images:
            chunk.append(item)
            if len(chunk) == batch_size:
                yield self._predict_chunk(chunk, heatmap, pixel_spacing_mm, covariates)
                chunk = []
        if chunk:
            yield self._predict_chunk(chunk, heatmap, pixel_spacing_mm, covariates)

    def _predict_chunk(self, items: list[ImageLike], heatmap: bool, pixel_spacing_mm: float | None,
                       covariates: Covariates = None) -> list[tuple[ScreeningResult, Radiograph | None]]:
        images: list[Radiograph | None] = []
        inputs: list[ModelInput] = []
        errors: list[str | None] = []
        for item in items:
            try:
                image = as_radiograph(item)
                spacing = pixel_spacing_mm if pixel_spacing_mm is not None else image.pixel_spacing_mm
                inputs.append(self.model_input(image, spacing, covariates))
                images.append(image)
                errors.append(None)
            except OsteopanoError as exc:
                images.append(None)
                errors.append(str(exc))
            except ValueError as exc:  # an array that is not an image
                images.append(None)
                errors.append(f"{_name(item)}: {exc}")
        probs = iter(self.probabilities(np.stack([i.x for i in inputs]), np.stack([i.covariates for i in inputs]))
                     if inputs else [])
        prepared = iter(inputs)
        out = []
        for item, image, error in zip(items, images, errors):
            path = _path_of(item, image)
            if image is None:
                out.append((ScreeningResult(path, None, None, None, self.threshold, self.model_id, error), None))
                continue
            p, model_input = float(next(probs)), next(prepared)
            spacing = pixel_spacing_mm if pixel_spacing_mm is not None else image.pixel_spacing_mm
            result = ScreeningResult(path, image.patient_id, p, p >= self.threshold, self.threshold,
                                     self.model_id, None, self._heatmap(image, model_input) if heatmap else None,
                                     spacing)
            out.append((result, image))
        return out


class TorchEngine(Engine):
    """A training run folder (``config.json`` + ``model.safetensors``) on PyTorch; Grad-CAM available."""

    name = "torch"
    supports_heatmaps = True

    def __init__(self, run: RunModel):
        self.run = run
        # Grad-CAM hooks the shared network: two heatmaps at once would mix their activations.
        self._gradcam_lock = threading.Lock()
        super().__init__(preprocess=run.preprocess, classes=run.classes, positive=run.config.positive,
                         threshold=run.threshold, model_id=run_model_id(run.run_dir),
                         card=build_card(run), input_spec=run.config.input_spec())

    @classmethod
    def load(cls, run_dir: str | Path) -> TorchEngine:
        from osteopano.train.loop import load_run

        return cls(load_run(run_dir))

    def probabilities(self, batch: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
        import torch

        cov = None if covariates is None else torch.from_numpy(np.ascontiguousarray(covariates, np.float32))
        with torch.inference_mode():
            logits = self.run.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)), cov)
            return torch.softmax(logits.float(), 1)[:, self.positive_index].numpy()

    def _heatmap(self, image: Radiograph, prepared: ModelInput) -> np.ndarray:
        try:
            from osteopano.screen.explain import gradcam
        except ImportError as exc:
            raise ModelError(f"Grad-CAM heatmaps are unavailable ({exc})") from None
        with self._gradcam_lock:
            if prepared.affines is None and not len(prepared.covariates):
                return gradcam(self.run, image)
            return gradcam(self.run, image, model_input=prepared)


class OnnxEngine(Engine):
    """A standalone ``.onnx`` file written by ``osteopano export``, on onnxruntime (no torch)."""

    name = "onnx"
    heatmap_unavailable = ("heatmaps need Grad-CAM, which needs the PyTorch model: load the run folder "
                           "with engine='torch' (osteopano predict RUN --engine torch)")

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        options = session_options(ort, threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise ModelError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:150]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        meta = read_metadata(props, path)
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        try:  # absent in whole-image exports
            input_spec = json.loads(props[META_PREFIX + "input"]) if META_PREFIX + "input" in props else None
        except ValueError as exc:
            raise ModelError(f"{path}: broken osteopano metadata ({exc})") from None
        super().__init__(preprocess=Preprocess.from_dict(meta["preprocess"]), classes=meta["classes"],
                         positive=meta["positive"], threshold=meta["threshold"]["value"],
                         model_id=meta["model_id"], card=meta["card"], input_spec=input_spec)

    def probabilities(self, batch: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
        feed = {self.input_names[0]: np.ascontiguousarray(batch, dtype=np.float32)}
        if len(self.input_names) > 1:  # the covariates input
            feed[self.input_names[1]] = np.ascontiguousarray(covariates, dtype=np.float32)
        (probs,) = self.session.run(None, feed)
        return probs[:, self.positive_index]


def session_options(ort: Any, threads: int | None = None) -> Any:
    """ONNX Runtime settings for a pipeline whose decode threads share the cores with inference:
    ``threads`` intra-op threads (default: onnxruntime's, one per core; 1 for one session per core,
    as on Ray), no busy-waiting between ops (spinning threads would take the cores from the
    decoders), sequential execution, every graph optimisation."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load(path: str | Path, *, engine: str = "auto", threshold: float | None = None) -> Engine:
    """A ready model from a run folder or an ``.onnx`` file.

    ``engine``: 'torch' (run folder; Grad-CAM heatmaps), 'onnx' (an .onnx file, or RUN/model.onnx;
    no torch needed) or 'auto' (onnx for an .onnx file; for a run folder torch when it is installed,
    else RUN/model.onnx). ``threshold`` replaces the model's own decision threshold.
    """
    path = Path(path).expanduser()
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ModelError(f"threshold {threshold} is not a probability (0..1)")
    if not path.exists():
        raise ModelError(f"{path}: no such run folder or ONNX file")
    if path.is_file():
        if engine == "torch":
            raise ModelError(f"{path}: the torch engine needs a run folder; an .onnx file runs on the onnx engine")
        model: Engine = OnnxEngine(path)
    elif engine == "onnx" or (engine == "auto" and not _torch_available()):
        onnx_file = path / ONNX_NAME
        if not onnx_file.is_file():
            why = "" if engine == "onnx" else " (PyTorch is not installed: pip install 'osteopano[train]')"
            raise ModelError(f"{path}: no {ONNX_NAME} in the run folder{why}; "
                             f"write it with: osteopano export {path}")
        model = OnnxEngine(onnx_file)
    else:
        model = TorchEngine.load(path)
    if threshold is not None:
        model.threshold = float(threshold)
    return model


def _torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "timm", "safetensors"))


# ----------------------------------------------------------------------------- inputs


def as_radiograph(image: ImageLike) -> Radiograph:
    """A path is read (ImageReadError when it cannot be), an array wrapped, a Radiograph kept."""
    if isinstance(image, Radiograph):
        return image
    if isinstance(image, np.ndarray):
        return from_array(image)
    if isinstance(image, (str, Path)):
        return read_image(image)
    raise TypeError(f"expected a path, an array or a Radiograph, got {type(image).__name__}")


def _path_of(item: ImageLike, image: Radiograph | None) -> str | None:
    if isinstance(item, (str, Path)):
        return str(item)
    return image.path if image is not None else None


def _name(item: ImageLike) -> str:
    return str(item) if isinstance(item, (str, Path)) else "<array>"


# ----------------------------------------------------------------------------- identity and card


def run_model_id(run_dir: str | Path) -> str:
    """``<run folder name>-<first 8 hex of sha256(model.safetensors)>``: names the exact weights."""
    run_dir = Path(run_dir).resolve()
    digest = hashlib.sha256()
    with (run_dir / "model.safetensors").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{run_dir.name}-{digest.hexdigest()[:8]}"


CARD_METRICS = ("n", "n_positive", "n_negative", "accuracy", "sensitivity", "specificity", "precision", "npv",
                "f1", "auc", "brier", "evaluated_on")


def build_card(run: RunModel) -> dict[str, Any]:
    """The model card of a finished run: what the model is, how it was trained and how it did on the
    held-out test split (with 95% CIs from ``metrics.json``), and whether the data were synthetic."""
    cfg = run.config
    metrics = _read_json(run.run_dir / "metrics.json")
    synthetic, source = _synthetic(cfg)
    n_images = sum(sum(v.values()) for v in metrics.get("split_sizes", {}).values()) or None
    return {
        "model_id": run_model_id(run.run_dir),
        "name": run.run_dir.resolve().name,
        "intended_use": INTENDED_USE,
        "backbone": cfg.backbone,
        "initial_weights": cfg.weights,
        "input": {"mode": cfg.input_mode, "size": run.preprocess.size, "covariates": list(cfg.covariates),
                  **({"roi": cfg.roi} if cfg.input_mode == "roi" else {})},
        "classes": list(run.classes),
        "positive_class": cfg.positive,
        "threshold": {"value": run.threshold, "rule": cfg.threshold_rule,
                      "how_chosen": cfg.threshold_note or "chosen on the run's validation split"},
        "training_data": {"synthetic": synthetic, "synthetic_source": source,
                          "description": _data_description(cfg, synthetic, n_images), "n_images": n_images},
        "test_metrics": {k: metrics[k] for k in CARD_METRICS if k in metrics},
        "epochs_run": metrics.get("epochs_run"),
        "osteopano_version": (cfg.versions or {}).get("osteopano") or __version__,
        "trained": cfg.created,
    }


def _synthetic(cfg: Any) -> tuple[bool | None, str]:
    """Was the training data the synthetic phantom? As recorded in the run config (from the data
    set's ``dataset.json``); None when the provenance was not recorded."""
    value = cfg.data_synthetic
    if value is None:
        return None, "unknown (the training data carried no dataset.json)"
    return bool(value), "run config (data_synthetic, from the data set's dataset.json)"


def _data_description(cfg: Any, synthetic: bool | None, n_images: int | None) -> str:
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


# ----------------------------------------------------------------------------- ONNX metadata


def read_metadata(props: dict[str, str], path: Path) -> dict[str, Any]:
    """Parse the ``osteopano.*`` JSON metadata of an exported ONNX file; ModelError when absent/broken."""
    keys = ("preprocess", "classes", "positive", "threshold", "card", "model_id", "version")
    missing = [k for k in keys if META_PREFIX + k not in props]
    if missing:
        raise ModelError(f"{path}: not an osteopano ONNX export (metadata {', '.join(missing)} missing); "
                         "write one with: osteopano export RUN")
    try:
        return {k: json.loads(props[META_PREFIX + k]) for k in keys}
    except ValueError as exc:
        raise ModelError(f"{path}: broken osteopano metadata ({exc})") from None
