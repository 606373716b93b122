"""Screen one DICOM dataset and make its SR and Secondary Capture: what ``pacs pull`` and
``pacs listen`` do per image.

``screen_dataset(ds, engine=None)`` decodes the dataset with ``osteopano.io.images`` (the same
decoding as every other input), measures the cortical width, draws the overlay and, when a model
engine is given (``osteopano.screen.engines.load``), adds its score and threshold.
``skip_reason(ds, modality)`` says why a dataset is not screened (wrong modality, an SR or SC,
osteopano's own output), None when it is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
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


def screen_dataset(ds: Any, *, engine: Any = None, threshold_mm: float = 3.0,
                   name: str = "dataset") -> ScreenOutcome:
    """Measure (and score with ``engine`` when given) one DICOM dataset; OsteopanoError on bad input."""
    import cv2

    from osteopano.cortex import measure as cortex

    image = dataset_to_radiograph(ds, name)
    m = cortex.measure(image, threshold_mm=threshold_mm)
    overlay = cv2.cvtColor(cortex.draw_overlay(image, m), cv2.COLOR_BGR2RGB)  # draw_overlay is BGR (OpenCV)
    if engine is None:
        return ScreenOutcome(m, overlay)
    result = engine.predict(image)
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
