"""Screen one DICOM dataset and make its SR and Secondary Capture: what ``pacs pull`` and
``pacs listen`` do per image.

``screen_dataset(ds, screener=None)`` decodes the dataset with ``osteopano.io.images`` (the same
decoding as every other input) and screens it with the project's ``Screener`` (the radiograph gate,
the spacing rule, the cortex measurement and, when the screener has a model, its score and
threshold), then draws the overlay.
``skip_reason(ds, modality)`` says why a dataset is not screened (wrong modality, an SR or SC,
osteopano's own output), None when it is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteopano.cortex.measure import CortexMeasurement


@dataclass(frozen=True)
class ScreenOutcome:
    """The result for one image: the measurement, the overlay (RGB uint8) and the model's score."""

    measurement: CortexMeasurement
    overlay_rgb: np.ndarray
    model_score: float | None = None
    threshold: float | None = None
    model_id: str | None = None

    def outputs(self, source: Any) -> list[Any]:
        """The SR and the Secondary Capture for ``source`` (pydicom Datasets, in that order)."""
        from osteopano.render.dicom_out import build_sc, build_sr

        return [build_sr(source, self.measurement, model_score=self.model_score,
                         model_threshold=self.threshold, model_id=self.model_id),
                build_sc(source, self.overlay_rgb)]


def skip_reason(ds: Any, modality: str | None = "PX") -> str | None:
    """Why ``ds`` is not screened, or None. ``modality`` None accepts every image modality."""
    from osteopano.render.dicom_out import is_own_or_not_image

    if is_own_or_not_image(ds):
        return "a report or osteopano's own output, not a radiograph"
    if "PixelData" not in ds:
        return "no pixel data"
    found = str(ds.get("Modality", "") or "")
    if modality and found.upper() != modality.upper():
        return f"modality {found or 'missing'}, not {modality}"
    return None


def screen_dataset(ds: Any, screener: Any = None, *, threshold_mm: float = 3.0,
                   name: str = "dataset") -> ScreenOutcome:
    """Screen one DICOM dataset through the project's ``Screener``; OsteopanoError when it cannot be.

    ``screener``: an ``osteopano.screen.screener.Screener`` that measures (``load(MODEL, measure=True)``);
    None: a measurement-only one with ``threshold_mm``. An image the radiograph gate refuses, or that
    cannot be read, raises OsteopanoError with the reason.
    """
    import cv2

    from osteopano.cortex import measure as cortex
    from osteopano.errors import OsteopanoError
    from osteopano.screen.screener import load

    screener = screener if screener is not None else load(None, threshold_mm=threshold_mm)
    if not screener.measures:
        raise OsteopanoError("the screener must measure the cortex (load(..., measure=True))")
    image = dataset_to_radiograph(ds, name)
    result = screener.predict(image)
    m = result.measurement
    if m is None:
        raise OsteopanoError(result.error or f"{name}: the cortex could not be measured")
    overlay = cv2.cvtColor(cortex.draw_overlay(image, m), cv2.COLOR_BGR2RGB)  # draw_overlay is BGR (OpenCV)
    if result.probability is None:
        return ScreenOutcome(m, overlay)
    return ScreenOutcome(m, overlay, result.probability, result.threshold, result.model_id)


def dataset_to_radiograph(ds: Any, name: str = "dataset") -> Any:
    """Decode a pydicom Dataset through ``read_image_bytes`` (so DICOM rules stay in one place)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from osteopano.io.images import read_image_bytes

    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return read_image_bytes(buf.getvalue(), name)


def describe(outcome: Any) -> str:
    """A log line's result part: widths per side, quality, model score (no patient data)."""
    m = outcome.measurement
    parts = []
    for s in m.sides():
        if s.mcw_mm is not None:
            parts.append(f"{s.side} {s.mcw_mm:.2f} mm")
        elif s.mcw_px is not None and s.located:
            parts.append(f"{s.side} {s.mcw_px:.1f} px")
    text = "MCW " + (", ".join(parts) if parts else "not found") + f", quality {m.quality}"
    if outcome.model_score is not None:
        text += f", model score {outcome.model_score:.3f}"
    return text


def save_outputs(ds: Any, outcome: ScreenOutcome, out_dir: Path | None, fhir_dir: Path | None) -> None:
    """Write the SR and SC into ``out_dir`` and the FHIR bundle into ``fhir_dir`` (either may be None)."""
    from osteopano.render.dicom_out import write_sc, write_sr
    from osteopano.render.fhir import write_fhir

    name = str(ds.SOPInstanceUID)
    if out_dir is not None:
        write_sr(ds, outcome.measurement, out_dir, model_score=outcome.model_score,
                 model_threshold=outcome.threshold, model_id=outcome.model_id)
        write_sc(ds, outcome.overlay_rgb, out_dir)
    if fhir_dir is not None:
        write_fhir(outcome.measurement, fhir_dir, name=name, source=ds, model_score=outcome.model_score,
                   model_threshold=outcome.threshold, model_id=outcome.model_id)
