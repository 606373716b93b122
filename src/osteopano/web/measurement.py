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

from osteopano.render.texts import DISCLAIMER, NO_REFER, REFER, format_mm, format_width

OK_CONFIDENCE = 0.6   # as osteopano.cortex.measure: a side below is 'low confidence'
PLAUSIBLE_MM = (1.0, 8.0)
NOT_DECIDED = "No decision from the cortical width"


def overlay_rgb(radiograph: Any, measurement: Any) -> np.ndarray:
    """The radiograph with the traced border, endosteal margin, sites and widths, uint8 RGB."""
    from osteopano.cortex.measure import draw_overlay

    return cv2.cvtColor(draw_overlay(radiograph, measurement), cv2.COLOR_BGR2RGB)


def side_reasons(side: Any) -> list[str]:
    """Plain-language reasons why one side's measurement is doubtful (empty when it looks fine)."""
    if not side.located:
        return ["the lower border of the mandible was not found on this side"]
    reasons = []
    if side.confidence < OK_CONFIDENCE:
        reasons.append(f"low confidence ({side.confidence:.2f}): check the traced lines on the image")
    if side.site_method == "fixed_distance":
        reasons.append("the mental foramen was not found: measured at the usual distance from the midline")
    if side.mcw_mm is not None and not PLAUSIBLE_MM[0] <= side.mcw_mm <= PLAUSIBLE_MM[1]:
        reasons.append(f"the width is outside the usual adult range ({PLAUSIBLE_MM[0]:g}-{PLAUSIBLE_MM[1]:g} mm)")
    return reasons


def classical_decision_text(m: Any) -> str:
    """The classical decision in words: refer when the mean MCW is below the threshold."""
    if m.quality == "failed":
        return f"{NOT_DECIDED}: it could not be measured automatically"
    if m.mcw_mm is None:
        return f"{NOT_DECIDED}: the pixel spacing is unknown, so the width is in pixels only"
    limit = f"{m.threshold_mm:g} mm"
    text = (f"{REFER}: the cortical width ({format_mm(m.mcw_mm)}) is below {limit}" if m.decision
            else f"{NO_REFER}: the cortical width ({format_mm(m.mcw_mm)}) is at or above {limit}")
    if m.quality == "low":
        text += " (low-confidence measurement: check it on the image)"
    return text


def measurement_texts(m: Any) -> dict[str, str]:
    """The dentist's and the patient's paragraphs when the cortical width is the only screen."""
    if m.quality == "failed":
        return {
            "dentist": ("The mandibular cortical width could not be measured automatically on this image "
                        f"({'; '.join(m.notes) or 'border not found'}). Measure it by hand or refer on clinical "
                        "grounds as usual."),
            "patient": ("The computer program could not measure your dental X-ray this time. This says nothing "
                        "about your bones; your dentist will tell you what happens next."),
        }
    sides = ", ".join(f"{format_width(s.mcw_mm, s.mcw_px)} on the patient's {s.side}" for s in m.sides())
    dentist = f"The mandibular cortical width below the mental foramen measures {sides}."
    if m.mcw_mm is None:
        dentist += (" The pixel spacing of the image is unknown, so the widths are in pixels and the classical "
                    f"{m.threshold_mm:g} mm threshold cannot be applied: enter the spacing (mm per pixel, e.g. "
                    "from the device's documentation) with the upload.")
        patient = ("Your dental X-ray was checked by a computer program that measures the bone at the lower edge "
                   "of your jaw. It could not give a result in millimetres this time; your dentist will tell "
                   "you what happens next. This check is not a diagnosis.")
        return {"dentist": dentist, "patient": patient}
    dentist += (f" The mean, {format_mm(m.mcw_mm)}, is {'below' if m.decision else 'at or above'} the classical "
                f"{m.threshold_mm:g} mm threshold; a thinner cortex is a recognised radiographic sign of low bone "
                "mineral density. ")
    dentist += ("Suggested action: refer for DXA bone-density assessment, weighed together with the usual clinical "
                "risk factors." if m.decision else
                "A width above the threshold does not rule osteoporosis out; refer on clinical grounds when risk "
                "factors are present.")
    if m.quality == "low":
        dentist += " The automatic measurement has low confidence: check the traced lines on the image."
    if m.decision:
        patient = ("Your dental X-ray was checked by a computer program that measures the thickness of the bone at "
                   "the lower edge of your jaw. It was thinner than usual, which can be a sign that bones are less "
                   "dense, so your dentist may suggest a DXA scan: a quick, painless scan that measures bone "
                   "density with a very small dose of X-rays. This check is not a diagnosis: only a DXA scan can "
                   "tell whether you have osteoporosis.")
    else:
        patient = ("Your dental X-ray was checked by a computer program that measures the thickness of the bone at "
                   "the lower edge of your jaw. It was within the usual range. This check is not a diagnosis and "
                   "cannot rule osteoporosis out. If you are worried about your bones, or have broken a bone in a "
                   "minor fall, talk to your doctor about a DXA scan.")
    return {"dentist": dentist, "patient": patient}


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
