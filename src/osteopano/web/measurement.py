"""The cortex measurement as the web page and ``/api/v1/measure`` show it: the overlay, the width per
side (mm, or px when the pixel spacing is unknown), the quality with plain reasons, the classical
decision (MCW below the threshold) and the texts for the dentist and the patient.

Without a model the page screens by the mandibular cortical width alone (the classical index, see
``osteopano.cortex``); with a model it shows both.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from osteopano.render.texts import (DISCLAIMER, NO_REFER, NOT_DECIDED, REFER, classical_decision_text, format_width,
                                    side_reasons)

def overlay_rgb(radiograph: Any, measurement: Any) -> np.ndarray:
    """The radiograph with the traced border, endosteal margin, sites and widths, uint8 RGB."""
    from osteopano.cortex.measure import draw_overlay

    return cv2.cvtColor(draw_overlay(radiograph, measurement), cv2.COLOR_BGR2RGB)


def measurement_view(m: Any) -> dict[str, Any]:
    """Display-ready values of a measurement for the page and the API (JSON-safe)."""
    sides = []
    for s in m.sides():
        sides.append({
            "side": s.side,
            "label": f"Patient's {s.side}",
            "located": bool(s.located),
            "mcw_mm": None if s.mcw_mm is None else round(float(s.mcw_mm), 2),
            "mcw_px": None if s.mcw_px is None else round(float(s.mcw_px), 1),
            "width_text": format_width(s.mcw_mm, s.mcw_px) if s.located else "not found",
            "below_threshold": s.mcw_mm is not None and bool(s.mcw_mm < m.threshold_mm),
            "confidence": round(float(s.confidence), 3),
            "reasons": side_reasons(s),
        })
    return {
        "sides": sides,
        "mean_text": format_width(m.mcw_mm, m.mcw_px) if m.quality != "failed" else "not measured",
        "mcw_mm": None if m.mcw_mm is None else round(float(m.mcw_mm), 2),
        "mcw_px": None if m.mcw_px is None else round(float(m.mcw_px), 1),
        "quality": m.quality,
        "confidence": round(float(m.confidence), 3),
        "notes": list(m.notes),
        "klemetti_estimate": m.klemetti_estimate,
        "decision": m.decision,
        "decision_text": classical_decision_text(m),
        "decision_title": NOT_DECIDED if m.decision is None else (REFER if m.decision else NO_REFER),
        "decision_detail": _capitalised(classical_decision_text(m).split(": ", 1)[-1]),
        "threshold_mm": float(m.threshold_mm),
        "pixel_spacing_mm": m.pixel_spacing_mm,
        "spacing_known": m.pixel_spacing_mm is not None,
        "disclaimer": DISCLAIMER,
    }


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------- the clinical risk index

CLINICAL_FIELDS = ("age", "sex", "weight_kg")   # optional form fields of the page and the API


def with_risk(screening: Any, fields: dict[str, str]) -> Any:
    """``screening`` with its result's risk index from the form fields (before the DICOM header's
    PatientAge/PatientSex/PatientWeight); unchanged when none is given. DataError for a bad field."""
    from osteopano.prepare.risk import assess, merge_values

    result = screening.result
    form = {k: fields.get(k) for k in CLINICAL_FIELDS}
    values, sources = merge_values(("option", form), ("file", getattr(screening.radiograph, "patient", None)))
    if not values or not hasattr(result, "replace"):
        return screening
    m = getattr(result, "measurement", None)
    usable = m is not None and m.decision is not None   # a width in mm, not a failed measurement
    risk = assess(values, mcw_mm=m.mcw_mm if usable else None,
                  threshold_mm=float(m.threshold_mm) if m is not None else 3.0, sources=sources, name="upload")
    screening.result = result.replace(risk=risk)
    return screening


def risk_view(risk: Any) -> dict[str, Any] | None:
    """The risk index for the page and the API (JSON-safe; no age or weight echoed), None without one."""
    from osteopano.render.texts import risk_texts

    view = risk_texts(risk)
    if view is None:
        return None
    view.update(ost_raw=risk.raw, combined_referral=risk.combined_referral, input_sources=dict(risk.sources))
    return view
