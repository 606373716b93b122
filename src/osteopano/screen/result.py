"""``ScreeningResult``: what screening one radiograph gives, and the row it becomes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASE_COLUMNS = ("path", "patient_id", "probability", "decision", "threshold", "model_id", "pixel_spacing_mm",
                "spacing_source", "gate", "error")
RISK_COLUMNS = ("ost_index", "ost_category", "combined_referral")   # osteopano.prepare.risk


@dataclass(frozen=True)
class ScreeningResult:
    """The screening outcome for one radiograph.

    ``decision`` is True (refer for DXA) when ``probability >= threshold``; both are None when the
    image could not be read, was refused by the radiograph gate, or no model was used (measurement
    only) - ``error`` then says why, where there is a reason. ``heatmap`` is the Grad-CAM map,
    float32 (H, W) in [0, 1] at the input's full resolution, only when asked for (torch engine).
    ``measurement`` is the cortex measurement (``osteopano.cortex``) when one was made.
    ``gate``: 'passed', 'refused' or 'off' (``--no-gate``); None when the image was never read.
    ``risk``: the clinical risk index (``osteopano.prepare.risk.RiskIndex``: OST and the combined
    referral rule) when age, sex or weight was given (option, manifest or the DICOM header).
    """

    path: str | None
    patient_id: str | None = None
    probability: float | None = None
    decision: bool | None = None
    threshold: float | None = None
    model_id: str | None = None
    error: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    pixel_spacing_mm: float | None = None
    spacing_source: str = "unknown"
    measurement: Any = field(default=None, repr=False, compare=False)
    gate: str | None = None
    risk: Any = field(default=None, repr=False, compare=False)

    def replace(self, **changes: Any) -> ScreeningResult:
        return dataclasses.replace(self, **changes)

    def to_row(self, measured: bool = False) -> dict[str, Any]:
        """The row of ``osteopano predict`` / ``measure`` (``BASE_COLUMNS``, then the measurement's
        columns when ``measured``); probability rounded to 6 places."""
        row = {"path": self.path, "patient_id": self.patient_id,
               "probability": None if self.probability is None else round(self.probability, 6),
               "decision": self.decision, "threshold": self.threshold, "model_id": self.model_id,
               "pixel_spacing_mm": self.pixel_spacing_mm, "spacing_source": self.spacing_source,
               "gate": self.gate, "error": self.error}
        if measured and self.measurement is not None:
            row.update({k: v for k, v in self.measurement.to_row().items() if k not in row})
        if measured:
            row.update(self.risk.to_row() if self.risk is not None else dict.fromkeys(RISK_COLUMNS))
        return row


def measurement_columns() -> list[str]:
    """The columns a cortex measurement adds to a row, in order (from an empty measurement)."""
    from osteopano.cortex import measure as cortex
    from osteopano.io.images import from_array

    # a blank image: nothing found, every column present
    row = cortex.measure(from_array(np.zeros((120, 240), np.float32)), pixel_spacing_mm=None).to_row()
    return [k for k in row if k not in BASE_COLUMNS]
