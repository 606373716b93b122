"""Results as FHIR (R4B, the same shape as R4 for these resources) for record systems: one
``Bundle`` (type ``collection``) per screened image holding a ``DiagnosticReport`` and its
``Observation`` s, validated by ``fhir.resources``.

Observations: the cortical width per located side (mm, or pixels when the spacing is unknown),
the mean width, the erosion score per side, the measurement quality, the classical decision
against the threshold and, when a model was used, its score with its threshold as a component.
Status is ``preliminary``: an automatic screening result nobody has verified, not a diagnosis.

The patient is referenced by the DICOM PatientID only (an identifier, never a name) and the study
by its Study Instance UID (``urn:dicom:uid``), both only when a DICOM source is given. Codes:
LOINC 18748-4 for the report, SNOMED CT for the mandible and laterality, UCUM units; the rest use
the local code system ``CODE_SYSTEM``. Resource ids derive from the source, so the same image
gives the same ids.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from osteopano import __version__
from osteopano.cortex.measure import CortexMeasurement
from osteopano.render.texts import DISCLAIMER

CODE_SYSTEM = "urn:osteopano:codes"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
_NS = uuid.UUID("0b5c1f38-6f0e-4c33-9a35-0f7e6f2f1e11")  # namespace for osteopano's resource ids


def build_fhir(measurement: CortexMeasurement, *, source: Any = None, name: str | None = None,
               model_score: float | None = None, model_threshold: float | None = None,
               model_id: str | None = None, issued: datetime | None = None) -> dict[str, Any]:
    """The Bundle as a JSON-ready dict; ``source`` is the pydicom Dataset when the image was DICOM."""
    from fhir.resources.R4B.bundle import Bundle

    key = str(source.SOPInstanceUID) if source is not None and source.get("SOPInstanceUID") else (
        name or measurement.path or "image")
    when = (issued or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    context = _context(source, when)
    device = {"display": f"osteopano {__version__}"}
    observations = [_observation(o, key, context, device) for o in _observation_specs(
        measurement, model_score, model_threshold, model_id)]
    report = {
        "resourceType": "DiagnosticReport",
        "id": _id(key, "report", model_id),
        "status": "preliminary",
        "category": [_concept("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")],
        "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
                 "text": "Mandibular cortical width screening (osteopano)"},
        "issued": when,
        "performer": [device],
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        "conclusion": _conclusion(measurement, model_score, model_threshold),
        **{k: v for k, v in context.items() if k in ("subject", "effectiveDateTime")},
    }
    if source is not None and source.get("StudyInstanceUID"):
        report["imagingStudy"] = [{"identifier": _uid_identifier(source.StudyInstanceUID)}]
    bundle = {
        "resourceType": "Bundle",
        "id": _id(key, "bundle", model_id),
        "type": "collection",
        "timestamp": when,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in [report, *observations]],
    }
    return json.loads(Bundle.model_validate(bundle).model_dump_json(exclude_none=True))


def write_fhir(measurement: CortexMeasurement, out_dir: str | Path, *, name: str, source: Any = None,
               model_score: float | None = None, model_threshold: float | None = None,
               model_id: str | None = None) -> Path:
    """Write the Bundle as ``OUT_DIR/NAME_fhir.json`` (atomically) and return the path."""
    from osteopano.io.files import atomic_write_text

    bundle = build_fhir(measurement, source=source, name=name, model_score=model_score,
                        model_threshold=model_threshold, model_id=model_id)
    path = Path(out_dir) / f"{name}_fhir.json"
    atomic_write_text(path, json.dumps(bundle, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------- content


def _observation_specs(m: CortexMeasurement, score: float | None, threshold: float | None,
                       model_id: str | None) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for s in m.sides():
        if not s.located:
            continue
        site = {"coding": [{"system": SNOMED, "code": "91609006", "display": "Mandible"}],
                "text": f"patient's {s.side} mandible, below the mental foramen"}
        width = _mm(s.mcw_mm) if s.mcw_mm is not None else _px(s.mcw_px)
        specs.append({"key": f"mcw-{s.side}", "text": f"Mandibular cortical width, {s.side}",
                      "valueQuantity": width, "bodySite": site})
        if s.erosion_score is not None:
            specs.append({"key": f"erosion-{s.side}", "text": f"Endosteal erosion score, {s.side} (0..1)",
                          "valueQuantity": _unitless(s.erosion_score, 3), "bodySite": site})
    if m.mcw_mm is not None:
        specs.append({"key": "mcw-mean", "text": "Mean mandibular cortical width",
                      "valueQuantity": _mm(m.mcw_mm),
                      "referenceRange": [{"low": _mm(m.threshold_mm),
                                          "text": f"below {m.threshold_mm:g} mm: refer for DXA"}]})
    specs.append({"key": "quality", "text": "Measurement quality",
                  "valueCodeableConcept": _concept(CODE_SYSTEM, f"quality-{m.quality}", m.quality)})
    if m.decision is not None:
        specs.append({"key": "mcw-below-threshold",
                      "text": f"Cortical width below {m.threshold_mm:g} mm", "valueBoolean": m.decision})
    if score is not None:
        spec = {"key": "model-score", "text": "Model score for osteoporosis (0..1)",
                "valueQuantity": _unitless(score, 4), "method": {"text": f"classifier {model_id or ''}".strip()}}
        if threshold is not None:
            spec["component"] = [{"code": {"text": "Model decision threshold"},
                                  "valueQuantity": _unitless(threshold, 4)}]
        specs.append(spec)
    return specs


def _observation(spec: dict[str, Any], key: str, context: dict[str, Any], device: dict[str, str]) -> dict[str, Any]:
    spec = dict(spec)
    code_key, text = spec.pop("key"), spec.pop("text")
    obs = {
        "resourceType": "Observation",
        "id": _id(key, code_key),
        "status": "preliminary",
        "category": [_concept("http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging")],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": code_key, "display": text}], "text": text},
        "device": device,
        "method": spec.pop("method", None) or {"text": f"osteopano {__version__} automatic cortical width"},
        **{k: v for k, v in context.items() if k in ("subject", "effectiveDateTime", "derivedFrom")},
        **spec,
    }
    return obs


def _context(source: Any, issued: str) -> dict[str, Any]:
    """subject (PatientID only), effective time (the study's date/time), derivedFrom (the study)."""
    out: dict[str, Any] = {"effectiveDateTime": issued}
    if source is None:
        return out
    patient_id = str(source.get("PatientID", "") or "").strip()
    if patient_id:
        out["subject"] = {"identifier": {"value": patient_id}}
    study_date = str(source.get("StudyDate", "") or "")
    if len(study_date) == 8 and study_date.isdigit():
        out["effectiveDateTime"] = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    if source.get("StudyInstanceUID"):
        out["derivedFrom"] = [{"type": "ImagingStudy", "identifier": _uid_identifier(source.StudyInstanceUID)}]
    return out


def _conclusion(m: CortexMeasurement, score: float | None, threshold: float | None) -> str:
    if m.quality == "failed":
        text = "The cortical width could not be measured (" + "; ".join(m.notes) + ")."
    elif m.mcw_mm is not None:
        text = f"Mean mandibular cortical width {m.mcw_mm:.2f} mm (quality {m.quality})"
        if m.decision is not None:
            text += f", {'below' if m.decision else 'not below'} the {m.threshold_mm:g} mm threshold"
        text += "."
    else:
        text = f"Mean mandibular cortical width {m.mcw_px:.1f} px (pixel spacing unknown, quality {m.quality})."
    if score is not None:
        text += f" Model score {score:.3f}" + (f" (threshold {threshold:.3f})." if threshold is not None else ".")
    return f"{text} {DISCLAIMER}"


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _mm(value: float) -> dict[str, Any]:
    return {"value": round(float(value), 2), "unit": "mm", "system": UCUM, "code": "mm"}


def _px(value: float | None) -> dict[str, Any]:
    return {"value": round(float(value or 0.0), 1), "unit": "pixels", "system": UCUM, "code": "{pixels}"}


def _unitless(value: float, nd: int) -> dict[str, Any]:
    return {"value": round(float(value), nd), "unit": "1", "system": UCUM, "code": "1"}


def _uid_identifier(uid: Any) -> dict[str, str]:
    return {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}


def _id(*parts: Any) -> str:
    return str(uuid.uuid5(_NS, "|".join(["osteopano", __version__, *("" if p is None else str(p) for p in parts)])))
