"""DICOM out (SR + Secondary Capture) and FHIR out, on SYNTHETIC phantom DICOMs.

Read back with highdicom and pydicom, checked by dicom3tools' ``dciodvfy`` (the Makefile installs
it; the test skips, saying so, only when the binary is absent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

import osteopano
from osteopano.errors import OsteopanoError
from osteopano.pacs.screening import ScreenOutcome, dataset_to_radiograph, screen_dataset, skip_reason
from osteopano.render import dicom_out, fhir


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> list[Path]:
    from osteopano.phantom.generate import generate

    out = tmp_path_factory.mktemp("phantom-dicom")
    generate(out, 2, 1, fmt="dicom", width=1000, progress=False, workers=1)
    return sorted(out.glob("*.dcm"))


@pytest.fixture(scope="module")
def screened(phantoms) -> tuple[pydicom.Dataset, ScreenOutcome]:
    ds = pydicom.dcmread(phantoms[0])
    return ds, screen_dataset(ds)


def _located(outcome: ScreenOutcome):
    sides = [s for s in outcome.measurement.sides() if s.located]
    assert sides, "the phantom's cortex should be found"
    return sides


def test_sr_reads_back_with_widths_sites_and_references(screened, tmp_path):
    import highdicom as hd

    source, outcome = screened
    path = dicom_out.write_sr(source, outcome.measurement, tmp_path, name="p0")
    raw = pydicom.dcmread(path)
    assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert raw.StudyInstanceUID == source.StudyInstanceUID
    assert raw.SeriesInstanceUID != source.SeriesInstanceUID
    assert raw.PatientID == source.PatientID and str(raw.PatientName) == ""
    evidence = raw.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    sr = hd.sr.srread(path)
    groups = sr.content.get_planar_roi_measurement_groups()
    by_side = {}
    for g in groups:
        laterality = g.finding_sites[0].laterality.meaning.lower()
        by_side[laterality] = g
    for side in _located(outcome):
        group = by_side[side.side]
        [width] = group.get_measurements(name=pydicom.sr.codedict.codes.SCT.Width)
        assert width.value == pytest.approx(side.mcw_mm, abs=1e-3)
        assert width.unit.value == "mm"
        region = group.roi
        assert region.graphic_type.value == "POLYLINE"
        assert region.value[0] == pytest.approx(np.asarray(side.site_xy) + 0.5, abs=0.01)
        assert np.hypot(*(region.value[1] - region.value[0])) == pytest.approx(side.mcw_px, rel=1e-3)
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]  # 'selected from' the source image
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert any(i.TextValue == osteopano.__version__ for i in group[0].ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Version")
        erosion = [m for m in group.get_measurements() if m.name.value == "erosion-score"]
        assert erosion[0].value == pytest.approx(side.erosion_score, abs=1e-3)
    [overall] = sr.content.get_image_measurement_groups()
    [quality] = overall.get_qualitative_evaluations(name=pydicom.sr.codedict.codes.DCM.ImageQuality)
    assert quality.value.value == f"quality-{outcome.measurement.quality}"
    [mean] = [m for m in overall.get_measurements() if m.name.value == "mcw-mean"]
    assert mean.value == pytest.approx(outcome.measurement.mcw_mm, abs=1e-3)
    assert not _model_items(raw), "no model was used: no model score in the SR"


def _model_items(ds) -> list[str]:
    found = []

    def walk(items):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
            if name.startswith("model-"):
                found.append(name)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return found


def test_sr_carries_model_score_and_threshold_when_given(screened):
    source, outcome = screened
    sr = dicom_out.build_sr(source, outcome.measurement, model_score=0.73, model_threshold=0.41, model_id="run-x")
    assert sorted(_model_items(sr)) == ["model-positive", "model-score", "model-threshold"]
    plain = dicom_out.build_sr(source, outcome.measurement)
    assert sr.SOPInstanceUID != plain.SOPInstanceUID  # different content, different instance
    again = dicom_out.build_sr(source, outcome.measurement)
    assert again.SOPInstanceUID == plain.SOPInstanceUID  # same image, same software: same object
    assert again.SeriesInstanceUID == plain.SeriesInstanceUID


def test_sc_holds_the_overlay_in_the_source_study(screened, tmp_path):
    source, outcome = screened
    path = dicom_out.write_sc(source, outcome.overlay_rgb, tmp_path, name="p0")
    sc = pydicom.dcmread(path)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert sc.PhotometricInterpretation == "RGB"
    assert np.array_equal(sc.pixel_array, outcome.overlay_rgb)
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesInstanceUID not in (source.SeriesInstanceUID,
                                        dicom_out.build_sr(source, outcome.measurement).SeriesInstanceUID)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.Manufacturer == "osteopano" and sc.BurnedInAnnotation == "YES"
    # The overlay is the radiograph in colour with coloured drawing on top: not grey everywhere.
    rgb = outcome.overlay_rgb.astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 60).any()


def _dciodvfy(path: Path) -> str:
    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; `make test` installs it)")
    run = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
    return run.stdout + run.stderr


def test_dciodvfy_reports_no_errors(screened, tmp_path):
    source, outcome = screened
    files = [dicom_out.write_sr(source, outcome.measurement, tmp_path, model_score=0.6, model_threshold=0.5),
             dicom_out.write_sc(source, outcome.overlay_rgb, tmp_path)]
    for path in files:
        report = _dciodvfy(path)
        assert ("ComprehensiveSR" in report) or ("SCImage" in report), report  # it recognised the IOD
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


def test_unknown_spacing_reports_pixels(phantoms, tmp_path):
    source = pydicom.dcmread(phantoms[1])
    del source.PixelSpacing, source.ImagerPixelSpacing  # the phantom writes both (a DX instance)
    outcome = screen_dataset(source)
    assert outcome.measurement.pixel_spacing_mm is None
    sr = dicom_out.build_sr(source, outcome.measurement)
    units = set()

    def walk(items):
        for item in items:
            if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeMeaning == "Width":
                units.add(item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    assert units == {"{pixels}"}
    path = dicom_out.write_sr(source, outcome.measurement, tmp_path)
    assert [ln for ln in _dciodvfy(path).splitlines() if ln.startswith("Error")] == []


def test_source_without_uids_is_a_one_line_error(screened):
    source, outcome = screened
    broken = pydicom.Dataset()
    broken.update(source)
    del broken.StudyInstanceUID
    with pytest.raises(OsteopanoError, match="lacks StudyInstanceUID"):
        dicom_out.build_sr(broken, outcome.measurement)
    with pytest.raises(OsteopanoError, match="uint8 RGB"):
        dicom_out.build_sc(source, outcome.overlay_rgb[..., 0])


def test_skip_reason(screened):
    source, outcome = screened
    assert skip_reason(source) is None
    assert "modality" in skip_reason(source, "CT")
    assert skip_reason(source, None) is None
    for own in outcome.outputs(source):
        assert skip_reason(own, None) is not None  # never screens its own SR / SC


def test_fhir_bundle(screened, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    source, outcome = screened
    path = fhir.write_fhir(outcome.measurement, tmp_path, name="p0", source=source,
                           model_score=0.8, model_threshold=0.5, model_id="run-x")
    bundle = json.loads(path.read_text())
    Bundle.model_validate(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    report = resources[0]
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{source.StudyInstanceUID}"
    assert report["subject"] == {"identifier": {"value": source.PatientID}}
    assert "not a diagnosis" in report["conclusion"]
    obs = {r["code"]["coding"][0]["code"]: r for r in resources[1:]}
    assert {f"urn:uuid:{r['id']}" for r in obs.values()} == {x["reference"] for x in report["result"]}
    for side in _located(outcome):
        q = obs[f"mcw-{side.side}"]["valueQuantity"]
        assert q["value"] == pytest.approx(side.mcw_mm, abs=0.005) and q["code"] == "mm"
    assert obs["model-score"]["valueQuantity"]["value"] == pytest.approx(0.8)
    assert obs["model-score"]["component"][0]["valueQuantity"]["value"] == pytest.approx(0.5)
    assert obs["quality"]["valueCodeableConcept"]["coding"][0]["code"] == f"quality-{outcome.measurement.quality}"
    assert "Name" not in path.read_text()  # no patient name field anywhere

    # Without a DICOM source (a PNG input): no subject, no study, still valid.
    plain = fhir.build_fhir(outcome.measurement, name="some_png")
    Bundle.model_validate(plain)
    assert "subject" not in plain["entry"][0]["resource"]
    assert "model-score" not in json.dumps(plain)


@pytest.mark.slow
def test_model_score_from_a_real_engine(screened, run):
    """The tiny trained run (SYNTHETIC, one epoch): its score and threshold land in the SR and FHIR."""
    from osteopano.screen.screener import load

    source, _ = screened
    screener = load(run, engine="torch", measure=True)
    outcome = screen_dataset(source, screener)
    expected = screener.predict(dataset_to_radiograph(source))
    assert outcome.model_score == pytest.approx(expected.probability)
    assert outcome.threshold == pytest.approx(screener.threshold) and outcome.model_id == screener.model_id
    sr, _ = outcome.outputs(source)
    values = {}

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                values[item.ConceptNameCodeSequence[0].CodeValue] = float(item.MeasuredValueSequence[0].NumericValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert values["model-score"] == pytest.approx(expected.probability, abs=1e-4)
    assert values["model-threshold"] == pytest.approx(screener.threshold, abs=1e-4)


def test_failed_measurement_still_makes_valid_objects(tmp_path):
    """An image with no mandible (noise): quality 'failed', no decision; still valid DICOM.

    (Widths found on a failed image are kept for inspection, so side groups may be present.)"""
    from osteopano.io.images import write_dicom

    rng = np.random.default_rng(5)
    write_dicom(tmp_path / "noise.dcm", rng.integers(0, 65535, size=(300, 600), dtype=np.uint16), 0.25,
                patient_id="N1", uid_seed="noise")
    source = pydicom.dcmread(tmp_path / "noise.dcm")
    from osteopano.errors import OsteopanoError
    from osteopano.screen.screener import load

    with pytest.raises(OsteopanoError, match="not a dental panoramic radiograph"):
        screen_dataset(source)  # the gate refuses noise before anything is measured
    outcome = screen_dataset(source, load(None, gate=False))  # research use: measured all the same
    assert outcome.measurement.quality == "failed" and outcome.measurement.decision is None
    sr, sc = outcome.outputs(source)
    import highdicom as hd

    path = dicom_out._save(sr, tmp_path / "noise_sr.dcm")
    parsed = hd.sr.srread(path)
    located = [s for s in outcome.measurement.sides() if s.located]
    assert len(parsed.content.get_planar_roi_measurement_groups()) == len(located)
    [overall] = parsed.content.get_image_measurement_groups()
    [quality] = overall.get_qualitative_evaluations(name=pydicom.sr.codedict.codes.DCM.ImageQuality)
    assert quality.value.value == "quality-failed"
    assert not overall.get_qualitative_evaluations(name=dicom_out._code("mcw-low", "x"))  # no decision
    for p in (path, dicom_out._save(sc, tmp_path / "noise_sc.dcm")):
        assert [ln for ln in _dciodvfy(p).splitlines() if ln.startswith("Error")] == []
    bundle = fhir.build_fhir(outcome.measurement, source=source)
    assert "could not be measured" in bundle["entry"][0]["resource"]["conclusion"]
