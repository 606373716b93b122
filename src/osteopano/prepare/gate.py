"""The radiograph gate (interim minimal version): refuse inputs that cannot be a panoramic radiograph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_SIDE_PX = 96


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)


def check_radiograph(radiograph: Any) -> GateVerdict:
    """Size and a non-blank image."""
    pixels = np.asarray(getattr(radiograph, "pixels", radiograph), np.float32)
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        return GateVerdict(False, f"too small ({w} x {h} px)")
    if float(pixels[::4, ::4].std()) < 0.01:
        return GateVerdict(False, "blank: no contrast")
    return GateVerdict(True)
