"""Results as DICOM objects a PACS viewer shows beside the radiograph (highdicom).

For a screened DICOM radiograph (the *source*):

- ``build_sr`` / ``write_sr``: a Comprehensive SR holding a TID 1500 Measurement Report. One
  planar-ROI group per located side of the patient: the mandibular cortical width (MCW) in mm
  (in pixels when the spacing is unknown) with the measured line as a SCOORD POLYLINE on the
  source image (from the periosteal edge into the bone, DICOM image coordinates: the top-left
  corner of the first pixel is 0,0), the side's erosion score and how the site was found. One
  overall group: the mean MCW, the quality (ok / low / failed), the Klemetti-like class, the
  classical decision against the threshold and, when a model was used, its score and
  threshold. The algorithm's name and version (``osteopano.__version__``) are on every
  measurement (TID 4019) and the SR's device observer.
- ``build_sc`` / ``write_sc``: a Secondary Capture of the RGB overlay (traced border, sites and
  widths burned in; no patient data in the burned-in text).

Both go into the source's study, each in a new series of its own (one SR series and one SC
series per study, found again from the study's UID), and reference the source instance. Their
UIDs derive from the source's UIDs, the osteopano version and the model, so screening the same
image again with the same software gives the same objects (a PACS keeps one copy, it does not
get a duplicate). Codes not in DICOM/SNOMED use the private coding scheme ``99OSTEOPANO``.
No patient name is added; what identifies the patient is copied from the source as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from osteopano import __version__
from osteopano.cortex.measure import CortexMeasurement, SideMeasurement
from osteopano.errors import OsteopanoError

MANUFACTURER = "osteopano"
ALGORITHM_NAME = "osteopano mandibular cortical width"
SCHEME = "99OSTEOPANO"  # private coding scheme (DICOM PS3.16: '99' prefix = local)
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
SR_SERIES_DESCRIPTION = "osteopano MCW report (screening aid, not a diagnosis)"
SC_SERIES_DESCRIPTION = "osteopano MCW overlay (screening aid, not a diagnosis)"
_NOT_SOURCES = {  # SOP classes osteopano writes or that are not images: never screened
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.7",      # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.11.1",   # Grayscale Softcopy Presentation State
}


def is_own_or_not_image(ds: Any) -> bool:
    """True for objects osteopano writes (SR, SC) or that are reports/states, not radiographs."""
    return (str(ds.get("SOPClassUID", "")) in _NOT_SOURCES
            or str(ds.get("Manufacturer", "")) == MANUFACTURER)


# ----------------------------------------------------------------------------- public API


def build_sr(source: Any, measurement: CortexMeasurement, *, model_score: float | None = None,
             model_threshold: float | None = None, model_id: str | None = None) -> Any:
    """The TID 1500 measurement report for ``measurement`` made on ``source`` (a pydicom Dataset)."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.sr.codedict import codes

    source = _header(source)
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=__version__,
                                              manufacturer=MANUFACTURER)
    groups: list[Any] = [g for s in measurement.sides() if (g := _side_group(source, s, algorithm))]
    groups.append(_overall_group(source, measurement, algorithm, model_score, model_threshold, model_id))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", MANUFACTURER), name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER,
            model_name=f"osteopano {__version__}"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.DentalRadiography,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=_uid("sr-series", source.StudyInstanceUID, __version__),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("sr", source.SOPInstanceUID, __version__, model_id, model_threshold,
                              measurement.threshold_mm),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,      # an automatic result nobody has verified: PRELIMINARY, UNVERIFIED
        is_verified=False,
    )
    sr.SeriesDescription = SR_SERIES_DESCRIPTION
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "osteopano local codes"
    scheme.CodingSchemeResponsibleOrganization = "osteopano project"
    sr.CodingSchemeIdentificationSequence = Sequence([scheme])
    sr.SoftwareVersions = __version__
    return sr


def build_sc(source: Any, overlay_rgb: np.ndarray) -> Any:
    """A Secondary Capture of the overlay (RGB uint8, the source's size) in the source's study."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    source = _header(source)
    rgb = np.ascontiguousarray(overlay_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise OsteopanoError(f"overlay must be an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    same_grid = (rgb.shape[0], rgb.shape[1]) == (source.get("Rows"), source.get("Columns"))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=_uid("sc-series", source.StudyInstanceUID, __version__),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid("sc", source.SOPInstanceUID, __version__),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        pixel_spacing=tuple(float(v) for v in spacing) if spacing and same_grid else None,
        # A panoramic is viewed facing the patient: columns run to the patient's left, rows to the feet.
        patient_orientation=tuple(source.PatientOrientation) if source.get("PatientOrientation") else ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",  # explicit VR little endian
    )
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = Sequence([ref])
    sc.DerivationDescription = "Overlay of the automatic mandibular cortical width measurement"
    sc.BurnedInAnnotation = "YES"  # widths and the headline are drawn in (no patient data)
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ImageLaterality = source.get("ImageLaterality") or "B"  # a panoramic shows both sides
    sc.SeriesDescription = SC_SERIES_DESCRIPTION
    sc.SoftwareVersions = __version__
    return sc


def write_sr(source: Any, measurement: CortexMeasurement, out_dir: str | Path, *, name: str | None = None,
             model_score: float | None = None, model_threshold: float | None = None,
             model_id: str | None = None) -> Path:
    """Build the SR and save it as ``OUT_DIR/NAME_sr.dcm`` (NAME: the source's SOP Instance UID)."""
    sr = build_sr(source, measurement, model_score=model_score, model_threshold=model_threshold,
                  model_id=model_id)
    return _save(sr, Path(out_dir) / f"{name or source.SOPInstanceUID}_sr.dcm")


def write_sc(source: Any, overlay_rgb: np.ndarray, out_dir: str | Path, *, name: str | None = None) -> Path:
    """Build the Secondary Capture and save it as ``OUT_DIR/NAME_sc.dcm``."""
    return _save(build_sc(source, overlay_rgb), Path(out_dir) / f"{name or source.SOPInstanceUID}_sc.dcm")


# ----------------------------------------------------------------------------- content


def _code(value: str, meaning: str) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value, SCHEME, meaning)


def _side_group(source: Any, side: SideMeasurement, algorithm: Any) -> Any | None:
    """TID 1410 planar ROI group for one located side; None when the side was not found."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not side.located or side.site_xy is None or side.normal is None or not side.mcw_px:
        return None
    laterality = codes.SCT.Right if side.side == "right" else codes.SCT.Left
    site = [hd.sr.FindingSite(codes.SCT.Mandible, laterality=laterality)]
    p0 = np.asarray(side.site_xy, dtype=np.float64)
    p1 = p0 + np.asarray(side.normal, dtype=np.float64) * float(side.mcw_px)
    line = np.clip(np.stack([p0, p1]) + 0.5, 0.0, [float(source.Columns), float(source.Rows)])
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=line.astype(np.float32),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    if side.mcw_mm is not None:
        width = hd.sr.Measurement(name=codes.SCT.Width, value=round(float(side.mcw_mm), 3),
                                  unit=codes.UCUM.Millimeter, finding_sites=site, algorithm_id=algorithm)
    else:
        width = hd.sr.Measurement(name=codes.SCT.Width, value=round(float(side.mcw_px), 2),
                                  unit=hd.sr.CodedConcept("{pixels}", "UCUM", "pixels"),
                                  finding_sites=site, algorithm_id=algorithm)
    measurements = [width]
    if side.erosion_score is not None and np.isfinite(side.erosion_score):
        measurements.append(hd.sr.Measurement(
            name=_code("erosion-score", "Endosteal erosion score (0 smooth .. 1 eroded)"),
            value=round(float(side.erosion_score), 3), unit=codes.UCUM.NoUnits,
            finding_sites=site, algorithm_id=algorithm))
    evaluations = []
    if side.site_method:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=_code("site-method", "Measurement site found by"),
            value=_code(side.site_method, side.site_method.replace("_", " "))))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid("tracking", source.SOPInstanceUID, side.side),
            identifier=f"MCW {side.side} (patient's {side.side}, below the mental foramen)"),
        referenced_region=region,
        finding_type=_code("mcw", "Mandibular cortical width"),
        finding_sites=site,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def _overall_group(source: Any, m: CortexMeasurement, algorithm: Any, model_score: float | None,
                   model_threshold: float | None, model_id: str | None) -> Any:
    """TID 1501 group: mean width, quality, class, decision, and the model's score when given."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements = []
    if m.mcw_mm is not None:
        measurements.append(hd.sr.Measurement(
            name=_code("mcw-mean", "Mean mandibular cortical width of the located sides"),
            value=round(float(m.mcw_mm), 3), unit=codes.UCUM.Millimeter, algorithm_id=algorithm))
    measurements.append(hd.sr.Measurement(
        name=_code("mcw-threshold", "Cortical width threshold"), value=float(m.threshold_mm),
        unit=codes.UCUM.Millimeter, algorithm_id=algorithm))
    measurements.append(hd.sr.Measurement(
        name=_code("confidence", "Measurement confidence (0..1)"), value=round(float(m.confidence), 3),
        unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
    if model_score is not None:
        model_alg = hd.sr.AlgorithmIdentification(name=f"osteopano classifier {model_id or ''}".strip()[:64],
                                                  version=__version__, manufacturer=MANUFACTURER)
        measurements.append(hd.sr.Measurement(
            name=_code("model-score", "Model score for osteoporosis (0..1)"),
            value=round(float(model_score), 4), unit=codes.UCUM.NoUnits, algorithm_id=model_alg))
        if model_threshold is not None:
            measurements.append(hd.sr.Measurement(
                name=_code("model-threshold", "Model decision threshold (0..1)"),
                value=round(float(model_threshold), 4), unit=codes.UCUM.NoUnits, algorithm_id=model_alg))
    evaluations = [hd.sr.QualitativeEvaluation(
        name=codes.DCM.ImageQuality, value=_code(f"quality-{m.quality}", f"Measurement quality {m.quality}"))]
    if m.klemetti_estimate:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=_code("klemetti", "Klemetti-like class (experimental)"),
            value=_code(m.klemetti_estimate, f"Klemetti {m.klemetti_estimate}")))
    if m.decision is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=_code("mcw-low", "Cortical width below threshold (refer for DXA)"),
            value=codes.SCT.Yes if m.decision else codes.SCT.No))
    if model_score is not None and model_threshold is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=_code("model-positive", "Model score at or above its threshold"),
            value=codes.SCT.Yes if model_score >= model_threshold else codes.SCT.No))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid("tracking", source.SOPInstanceUID, "overall"),
                                                     identifier="overall screening result"),
        finding_type=_code("mcw", "Mandibular cortical width"),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


# ----------------------------------------------------------------------------- helpers


# Type 2 patient/study attributes (present, may be empty) that highdicom copies from the source.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _header(source: Any) -> Any:
    """The source's header without its pixel data, with missing Type 2 attributes present but empty.

    The outputs copy identifying attributes from here; a missing one is left empty, never made up.
    """
    from pydicom.dataset import Dataset

    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                           "Rows", "Columns") if not source.get(k)]
    if missing:
        raise OsteopanoError(f"source DICOM lacks {', '.join(missing)}: cannot reference it")
    header = Dataset()
    for element in source:
        if element.tag.group not in (0x7FE0, 0x0002):
            header.add(element)
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def _uid(*parts: Any) -> str:
    """A UID derived from the parts (same parts, same UID) under pydicom's UID root."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["osteopano", *("" if p is None else str(p) for p in parts)]))


def _save(ds: Any, path: Path) -> Path:
    from osteopano.io.files import atomic_path

    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
