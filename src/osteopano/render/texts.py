"""The words osteopano says, defined once: the disclaimer, the decision wording, the plain-language
paragraphs for the dentist and for the patient, and how numbers are printed. The report, the web page
and the CLI all take them from here."""

from __future__ import annotations

from typing import Any

import numpy as np

DISCLAIMER = ("osteopano is a screening aid, not a diagnosis: only a DXA scan can diagnose osteoporosis. "
              "Interpret the result together with the patient's history and clinical risk factors.")
DISCLAIMER_SHORT = "a screening aid, not a diagnosis"
REFER = "Refer for DXA bone-density assessment"
NO_REFER = "No referral suggested by this screen"
NOT_SCREENED = "Not screened: the image could not be analysed"
MCW_THRESHOLD_MM = 3.0
NOT_DECIDED = "No decision from the cortical width"


def decision_text(decision: bool | None) -> str:
    """The decision in words: ``REFER``, ``NO_REFER`` or ``NOT_SCREENED`` (None)."""
    return NOT_SCREENED if decision is None else (REFER if decision else NO_REFER)


def format_probability(p: float | None) -> str:
    """How a model score or threshold is printed everywhere in the report: 3 decimals ('0.734')."""
    return "n/a" if p is None else f"{float(p):.3f}"


def format_mm(v: float | None) -> str:
    return "not measured" if v is None or not np.isfinite(v) else f"{float(v):.2f} mm"


def format_width(mm: float | None, px: float | None) -> str:
    """A cortical width in mm, else in pixels when the pixel spacing is unknown."""
    if (mm is None or not np.isfinite(mm)) and px is not None and np.isfinite(px):
        return f"{float(px):.1f} px (pixel spacing unknown)"
    return format_mm(mm)


def plain_language(result: Any, measurement: Any = None) -> dict[str, str]:
    """The two plain-language paragraphs: ``'dentist'`` (clinical, with the score and threshold, and
    the cortical width when measured) and ``'patient'`` (simple words, not alarming, what DXA is).
    Without a model score, a measurement speaks for itself (``measurement_texts``)."""
    error = getattr(result, "error", None)
    if getattr(result, "probability", None) is None and measurement is not None and not getattr(result, "gate", None) == "refused":
        return measurement_texts(measurement)
    if error or getattr(result, "probability", None) is None:
        return {
            "dentist": (f"This image could not be screened ({error or 'no model score'}). "
                        "Check the file and screen it again; meanwhile refer on clinical grounds as usual."),
            "patient": ("The computer program could not check your dental X-ray this time. "
                        "This says nothing about your bones; your dentist will tell you what happens next."),
        }
    p, t = format_probability(result.probability), format_probability(result.threshold)
    if result.decision:
        dentist = (f"The model's score for this radiograph is {p}, at or above the decision threshold of {t}. "
                   "Suggested action: refer for DXA bone-density assessment, weighed together with the usual "
                   "clinical risk factors (age, sex, previous low-trauma fractures, family history, "
                   "glucocorticoid use).")
        patient = ("Your dental X-ray was checked by a computer program that looks for signs that bones may be "
                   "less dense than usual. It noticed some of these signs, so your dentist may suggest a DXA "
                   "scan. A DXA scan is a quick, painless scan, usually of the hip and lower back, that "
                   "measures bone density with a very small dose of X-rays. This check is not a diagnosis: "
                   "only a DXA scan can tell whether you have osteoporosis, and many people who have one are "
                   "told their bones are fine.")
    else:
        dentist = (f"The model's score for this radiograph is {p}, below the decision threshold of {t}: "
                   f"{NO_REFER.lower()}. A negative screen does not rule osteoporosis out; refer on clinical "
                   "grounds when risk factors are present.")
        patient = ("Your dental X-ray was checked by a computer program that looks for signs that bones may be "
                   "less dense than usual. It did not find signs that call for a further test. This check is "
                   "not a diagnosis and cannot rule osteoporosis out. If you are worried about your bones, "
                   "or have broken a bone in a minor fall, talk to your doctor: they can arrange a DXA scan, "
                   "a quick and painless bone-density scan.")
    if getattr(result, "heatmap", None) is not None:
        dentist += " The heatmap shows which parts of the image raised the score most; it is not a map of disease."
    mcw = _mcw_sentence(measurement, bool(result.decision))
    if mcw:
        dentist += " " + mcw
    return {"dentist": dentist, "patient": patient}


def _mcw_sentence(m: Any, refer: bool) -> str:
    """The dentist's sentence about the cortical width measurement ('' when none was made)."""
    if m is None:
        return ""
    if getattr(m, "quality", None) == "failed":
        return "The mandibular cortical width could not be measured automatically."
    if getattr(m, "mcw_mm", None) is None:
        return ("The mandibular cortical width cannot be given in millimetres: the image's pixel spacing is "
                "unknown.")
    limit = float(getattr(m, "threshold_mm", MCW_THRESHOLD_MM) or MCW_THRESHOLD_MM)
    sides = ", ".join(f"{format_mm(getattr(getattr(m, side, None), 'mcw_mm', None))} on the patient's {side}"
                      for side in ("right", "left"))
    text = (f"The mandibular cortical width below the mental foramen measures {sides} (mean {format_mm(m.mcw_mm)}); "
            f"a width under the classical {limit:g} mm threshold is a recognised radiographic sign of low "
            "bone mineral density.")
    if m.mcw_mm < limit and not refer:
        text += " The thin cortex is a reason to consider DXA referral despite the model's negative score."
    if getattr(m, "quality", None) == "low":
        text += " The automatic measurement has low confidence: check it on the image."
    return text


# ----------------------------------------------------------------------------- the cortical width alone


def side_reasons(side: Any) -> list[str]:
    """Plain-language reasons why one side's measurement is doubtful or missing (empty when it is 'ok'):
    the measurement's own reason for the side (``osteopano.cortex``), and how the site was found."""
    reasons = [side.reason] if getattr(side, "reason", None) else []
    if not side.located and not reasons:
        reasons.append("the lower border of the mandible was not found on this side")
    if side.located and side.site_method not in (None, "mental_foramen"):
        reasons.append("the mental foramen was not seen: the site was placed from the mandible's proportions")
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


# ----------------------------------------------------------------------------- the clinical risk index

RISK_TITLE = "Clinical risk index (OST) beside the cortical width"
RISK_CATEGORIES = {"high": "high risk (OST below -4)", "moderate": "moderate risk (OST -4 to -1)",
                   "low": "low risk (OST above -1)"}
COMBINED = {
    "refer": "Refer for DXA bone-density assessment (the cortical width is below the threshold, or the OST "
             "is high risk)",
    "consider": "Consider referral for DXA (moderate OST with a cortical width within 0.5 mm above the "
                "threshold)",
    "no": "No referral suggested by the combined rule",
    None: "No combined result (it needs the OST, and the cortical width in mm unless the OST is high)",
}
RISK_NOT_VALIDATED = ("The combined rule follows the OSTEODENT project's approach of using the radiographic index "
                      "together with a clinical risk index; osteopano did not validate it. It is a prompt to "
                      "consider a bone-density assessment, not a diagnosis.")
RISK_SOURCES = (
    "OST = 0.2 x (weight in kg - age in years), truncated; high risk < -4, moderate -4 to -1, low > -1: "
    "Koh LK et al., Osteoporos Int 2001;12:699-705 (derived in Asian postmenopausal women, validated mostly "
    "in women).",
    "MCW threshold 3 mm: Devlin H, Horner K, Osteoporos Int 2002;13:373-378; Taguchi A et al.",
    "MCW with a clinical risk index: Karayianni K, Horner K et al., Bone 2007;40:223-229 (MCW with OSIRIS, the "
    "OSTEODENT project); Horner K et al. 2010 (the OSTEODENT index).",
)
_SOURCE_WORDS = {"option": "entered", "manifest": "from the manifest", "file": "from the DICOM header"}


def risk_texts(risk: Any) -> dict[str, Any] | None:
    """Display-ready values of a ``osteopano.prepare.risk.RiskIndex`` for the report and the web page
    (None without one). Never shows the age or weight themselves, only where they came from."""
    if risk is None:
        return None
    if risk.ost is None:
        ost_text = "not computed (" + "; ".join(risk.notes) + ")"
    else:
        ost_text = f"{risk.ost} ({RISK_CATEGORIES[risk.category]})"
    inputs = ", ".join(f"{k.replace('_kg', '')} {_SOURCE_WORDS.get(v, v)}" for k, v in risk.sources.items())
    return {
        "title": RISK_TITLE,
        "ost": risk.ost,
        "category": risk.category,
        "ost_text": ost_text,
        "combined": risk.combined_referral,
        "combined_text": COMBINED.get(risk.combined_referral, COMBINED[None]),
        "inputs": inputs,
        "notes": [n for n in risk.notes if risk.ost is not None],
        "not_validated": RISK_NOT_VALIDATED,
        "sources": list(RISK_SOURCES),
    }
