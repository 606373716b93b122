"""The one ``Screener``: read -> gate -> spacing -> measure -> prepare -> probabilities -> result.

``osteopano.load``, ``osteopano predict``, ``osteopano measure`` and the web page all screen through
it, so every image is decoded once and its cortex measured at most once (an ROI model's crops reuse
the measurement that ``--measure`` reports). Without a model (``engine=None``) it measures only.

* the pixel spacing follows the one rule of ``osteopano.io.spacing``;
* the radiograph gate (``osteopano.prepare.gate``) refuses what is not a panoramic radiograph before
  anything is scored (``gate=False`` for research use; recorded in the result as 'off');
* an image that cannot be read, is refused, or cannot be prepared becomes a result with ``error`` set
  and no probability; a batch goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from osteopano.errors import ModelError, OsteopanoError
from osteopano.io.images import Radiograph, from_array, read_image
from osteopano.prepare.chain import ModelInput, prepare
from osteopano.io.spacing import Spacing, resolve_spacing
from osteopano.screen.engines import Engine, load_engine
from osteopano.screen.result import BASE_COLUMNS, RISK_COLUMNS, ScreeningResult, measurement_columns

ImageLike = str | Path | np.ndarray | Radiograph
Covariates = Mapping[str, Any] | None


class Screener:
    """Screens radiographs with an optional model and an optional cortex measurement.

    ``engine``: an ``Engine`` (or None: measurement only); ``threshold`` replaces the model's own;
    ``measure``: add the cortex measurement to every result (always made for ROI models);
    ``threshold_mm``: the classical MCW threshold of the measurement; ``gate``: refuse non-radiographs.
    """

    def __init__(self, engine: Engine | None = None, *, threshold: float | None = None, measure: bool = False,
                 threshold_mm: float = 3.0, gate: bool = True, frame: int | None = None):
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ModelError(f"threshold {threshold} is not a probability (0..1)")
        if engine is None and not measure:
            raise ModelError("nothing to do: give a model, or measure the cortex")
        self.engine, self.measure, self.threshold_mm, self.gate = engine, measure, threshold_mm, gate
        self.frame = frame  # the frame of multi-frame files (DICOM, TIFF, APNG), which are refused without it
        self.threshold = (threshold if threshold is not None
                          else engine.spec.threshold.value if engine is not None else None)

    # ------------------------------------------------------------------ what it is
    @property
    def spec(self):
        return None if self.engine is None else self.engine.spec

    @property
    def card(self) -> dict[str, Any]:
        return {} if self.engine is None else self.engine.card

    @property
    def model_id(self) -> str | None:
        return None if self.engine is None else self.engine.model_id

    @property
    def supports_heatmaps(self) -> bool:
        return self.engine is not None and self.engine.supports_heatmaps

    @property
    def heatmap_unavailable(self) -> str:
        return "no model: heatmaps need one" if self.engine is None else self.engine.heatmap_unavailable

    @property
    def measures(self) -> bool:
        """True when results carry a cortex measurement (asked for, or an ROI model)."""
        return self.measure or (self.engine is not None and self.engine.spec.input_mode == "roi")

    def columns(self) -> list[str]:
        """The row columns of this screener's results (``ScreeningResult.to_row``)."""
        return list(BASE_COLUMNS) + (measurement_columns() + list(RISK_COLUMNS) if self.measure else [])

    # ------------------------------------------------------------------ screening
    def predict(self, image: ImageLike, heatmap: bool = False, pixel_spacing_mm: float | None = None,
                covariates: Covariates = None, clinical: Covariates = None) -> ScreeningResult:
        """Screen one image (file path, (H, W) array or Radiograph); OsteopanoError when it cannot be
        (unreadable, refused by the gate, not preparable). Use ``predict_batch`` for error results instead.
        ``heatmap=True`` adds the Grad-CAM map where the engine can make one (torch); elsewhere it warns.
        ``clinical``: age / sex / weight_kg for the risk index (``osteopano.prepare.risk``; they take
        precedence over a DICOM header's)."""
        radiograph = as_radiograph(image, self.frame)  # an unreadable file raises its ImageReadError here
        [(result, _)] = next(self.iter_screen([radiograph], heatmap=heatmap, pixel_spacing_mm=pixel_spacing_mm,
                                              covariates=covariates, clinical=clinical))
        unscored = result.probability is None if self.engine is not None else result.measurement is None
        if result.error and unscored:
            raise OsteopanoError(result.error)
        return result

    def predict_batch(self, images: Iterable[ImageLike], heatmap: bool = False, batch_size: int = 16,
                      pixel_spacing_mm: float | None = None, covariates: Covariates = None) -> list[ScreeningResult]:
        """Screen many images; one that cannot be screened gives a result with ``error`` set."""
        return [r for pairs in self.iter_screen(images, heatmap=heatmap, batch_size=batch_size,
                                                pixel_spacing_mm=pixel_spacing_mm, covariates=covariates)
                for r, _ in pairs]

    def iter_screen(self, images: Iterable[ImageLike], *, heatmap: bool = False, batch_size: int = 16,
                    pixel_spacing_mm: float | None = None, spacings: Mapping[Path, float] | None = None,
                    covariates: Covariates = None, clinical: Covariates = None,
                    clinical_manifest: Mapping[Path, Mapping[str, Any]] | None = None
                    ) -> Iterator[list[tuple[ScreeningResult, Radiograph | None]]]:
        """Lazily read and screen ``images`` ``batch_size`` at a time; yields (result, radiograph or None)
        pairs per batch; only one batch of decoded images is alive at a time. ``pixel_spacing_mm``: the
        explicit spacing for every image; ``spacings``: manifest values by resolved path. ``clinical``:
        age / sex / weight_kg for every image, before ``clinical_manifest`` (by resolved path), before
        the DICOM header (the risk index, ``osteopano.prepare.risk``)."""
        risk_inputs = (clinical or {}, clinical_manifest or {})
        if heatmap and not self.supports_heatmaps:
            warnings.warn(f"no heatmaps: {self.heatmap_unavailable}", stacklevel=3)
            heatmap = False
        if batch_size < 1:
            raise OsteopanoError(f"batch size must be at least 1, got {batch_size}")
        chunk: list[ImageLike] = []
        for item in images:
            chunk.append(item)
            if len(chunk) == batch_size:
                yield self._screen_chunk(chunk, heatmap, pixel_spacing_mm, spacings or {}, covariates, risk_inputs)
                chunk = []
        if chunk:
            yield self._screen_chunk(chunk, heatmap, pixel_spacing_mm, spacings or {}, covariates, risk_inputs)

    def _screen_chunk(self, items: list[ImageLike], heatmap: bool, option: float | None,
                      spacings: Mapping[Path, float], covariates: Covariates, risk_inputs: tuple = ({}, {})
                      ) -> list[tuple[ScreeningResult, Radiograph | None]]:
        return self._score([self._stage(item, option, spacings, covariates, risk_inputs) for item in items], heatmap)

    def _score(self, staged: list[tuple[ScreeningResult, Radiograph | None, ModelInput | None]], heatmap: bool
               ) -> list[tuple[ScreeningResult, Radiograph | None]]:
        """The network half: one batch of probabilities for the staged images that have a model input."""
        ready = [model_input for _, _, model_input in staged if model_input is not None]
        probs: Iterator[float] = iter([])
        if ready and self.engine is not None:
            probs = iter(self.engine.probabilities(np.stack([m.x for m in ready]),
                                                   np.stack([m.covariates for m in ready])))
        out = []
        for result, image, model_input in staged:
            if model_input is not None and self.engine is not None:
                p = float(next(probs))
                result = result.replace(probability=p, decision=p >= self.threshold)
                if heatmap:
                    result = result.replace(heatmap=self.engine.heatmap(image, model_input))
            out.append((result, image))
        return out

    def _stage(self, item: ImageLike, option: float | None, spacings: Mapping[Path, float],
               covariates: Covariates, risk_inputs: tuple = ({}, {})
               ) -> tuple[ScreeningResult, Radiograph | None, ModelInput | None]:
        """One image up to the network: (result so far, radiograph, model input or None)."""
        path = str(item) if isinstance(item, (str, Path)) else None
        base = ScreeningResult(path, threshold=self.threshold, model_id=self.model_id)
        try:
            image = as_radiograph(item, self.frame)
        except (OsteopanoError, ValueError) as exc:
            return base.replace(error=_message(exc, item)), None, None
        base = base.replace(path=path or image.path, patient_id=image.patient_id)
        try:
            spacing = self._spacing(image, path, option, spacings)
        except OsteopanoError as exc:
            return base.replace(error=str(exc)), None, None
        base = base.replace(pixel_spacing_mm=spacing.mm, spacing_source=spacing.source)
        verdict = self._gate(image)
        if verdict is not None:
            return base.replace(gate="refused", error=verdict), None, None
        base = base.replace(gate="passed" if self.gate else "off")
        measurement = None
        if self.measures:
            from osteopano.cortex import measure as cortex

            try:
                measurement = cortex.measure(image, pixel_spacing_mm=spacing.mm, threshold_mm=self.threshold_mm)
            except (OsteopanoError, ValueError) as exc:
                base = base.replace(error=f"cortex measurement failed: {exc}")
            base = base.replace(measurement=measurement)
        try:
            base = base.replace(risk=self._risk(image, path, measurement, *risk_inputs))
        except OsteopanoError as exc:
            base = base.replace(error="; ".join(filter(None, [base.error, str(exc)])))
        if self.engine is None:
            return base, image, None
        try:
            model_input = prepare(image, self.engine.spec, spacing.mm, covariates, measurement)
        except (OsteopanoError, ValueError) as exc:
            return base.replace(error=_message(exc, item)), image, None
        if model_input.measurement is not None and base.measurement is None:
            base = base.replace(measurement=model_input.measurement)
        return base, image, model_input

    def _spacing(self, image: Radiograph, path: str | None, option: float | None,
                 spacings: Mapping[Path, float]) -> Spacing:
        manifest = spacings.get(Path(path).resolve()) if path and spacings else None
        return resolve_spacing(option, manifest, image.pixel_spacing_mm, name=path or "image")

    def _risk(self, image: Radiograph, path: str | None, measurement: Any, option: Mapping[str, Any],
              manifest: Mapping[Path, Mapping[str, Any]]):
        """The risk index from option > manifest > DICOM header values (None when none was given)."""
        from osteopano.prepare.risk import assess, merge_values

        listed = manifest.get(Path(path).resolve()) if path and manifest else None
        values, sources = merge_values(("option", option), ("manifest", listed), ("file", image.patient))
        if not values:
            return None
        usable = measurement is not None and measurement.decision is not None   # mm known, not 'failed'
        return assess(values, mcw_mm=measurement.mcw_mm if usable else None, threshold_mm=self.threshold_mm,
                      sources=sources, name=path or image.path or "image")

    def _gate(self, image: Radiograph) -> str | None:
        """The gate's refusal reason, or None when the image passes (or the gate is off)."""
        if not self.gate:
            return None
        from osteopano.prepare.gate import check_radiograph

        verdict = check_radiograph(image)
        if verdict.passed:
            return None
        return f"{image.path or 'image'}: not screened, {verdict.reason}"


def load(path: str | Path | None = None, *, engine: str = "auto", threshold: float | None = None,
         measure: bool = False, threshold_mm: float = 3.0, gate: bool = True, frame: int | None = None) -> Screener:
    """A ready ``Screener`` for a run folder or an ``.onnx`` file (``engine``: auto | torch | onnx, see
    ``load_engine``); ``path=None`` measures only (``measure`` is then implied)."""
    model = None if path is None else load_engine(path, engine)
    return Screener(model, threshold=threshold, measure=measure or model is None, threshold_mm=threshold_mm,
                    gate=gate, frame=frame)


def as_radiograph(image: ImageLike, frame: int | None = None) -> Radiograph:
    """A path is read (ImageReadError when it cannot be; ``frame`` of a multi-frame file), an array
    wrapped, a Radiograph kept."""
    if isinstance(image, Radiograph):
        return image
    if isinstance(image, np.ndarray):
        return from_array(image)
    if isinstance(image, (str, Path)):
        return read_image(image, frame=frame)
    raise TypeError(f"expected a path, an array or a Radiograph, got {type(image).__name__}")


def _message(exc: Exception, item: ImageLike) -> str:
    if isinstance(exc, OsteopanoError):
        return str(exc)
    return f"{item if isinstance(item, (str, Path)) else '<array>'}: {exc}"
