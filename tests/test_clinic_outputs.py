"""``osteopano measure`` / ``predict`` with ``--dicom-out`` (SR + Secondary Capture per DICOM input) and
``--fhir-out`` (a FHIR Bundle per image), on SYNTHETIC phantoms. Read back with pydicom; ``dciodvfy``
(Debian dicom3tools, installed by the Makefile) checks them when present (the test says so when it skips)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner
from web_model import build_small_model

from osteopano.cli import app

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"   # Comprehensive SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"       # Secondary Capture


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two DICOM phantoms (one in a sub-folder under the same file name) and one PNG phantom."""
    from osteopano.phantom.generate import generate

    base = tmp_path_factory.mktemp("clinic-phantoms")
    generate(base / "dcm", 2, 5, fmt="dicom", width=900, progress=False, workers=1)
    generate(base / "png", 1, 6, fmt="png", width=900, progress=False, workers=1)
    root = base / "in"
    (root / "clinicB").mkdir(parents=True)
    first, second = sorted((base / "dcm").glob("*.dcm"))
    shutil.copy(first, root / "001.dcm")
    shutil.copy(second, root / "clinicB" / "001.dcm")
    shutil.copy(next((base / "png").glob("*.png")), root / "001.png")
    return root


def _dciodvfy_errors(path: Path) -> list[str]:
    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; `make test` installs it)")
    run = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def _nums(ds) -> dict[str, float]:
    """Every NUM content item's code meaning -> value, anywhere in the SR tree."""
    found: dict[str, float] = {}

    def walk(items):
        for item in items:
            if item.get("ValueType") == "NUM":
                found[item.ConceptNameCodeSequence[0].CodeMeaning] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return found


def test_measure_writes_sr_sc_and_fhir_under_unique_names(inputs, tmp_path):
    dicom_dir, fhir_dir = tmp_path / "dicom", tmp_path / "fhir"
    res = CliRunner().invoke(app, ["measure", str(inputs), "--dicom-out", str(dicom_dir), "--fhir-out",
                                   str(fhir_dir), "--out", str(tmp_path / "rows.csv")])
    assert res.exit_code == 0, res.output
    assert "1 input(s) are not DICOM files: no SR/SC" in res.output
    assert sorted(p.name for p in dicom_dir.iterdir()) == [
        "001_dcm_sc.dcm", "001_dcm_sr.dcm", "clinicB__001_dcm_sc.dcm", "clinicB__001_dcm_sr.dcm"]
    assert sorted(p.name for p in fhir_dir.iterdir()) == [
        "001_dcm_fhir.json", "001_png_fhir.json", "clinicB__001_dcm_fhir.json"]
    for stem, source_path in (("001_dcm", inputs / "001.dcm"), ("clinicB__001_dcm", inputs / "clinicB" / "001.dcm")):
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        sr = pydicom.dcmread(dicom_dir / f"{stem}_sr.dcm")
        sc = pydicom.dcmread(dicom_dir / f"{stem}_sc.dcm")
        assert sr.SOPClassUID == SR_CLASS and sc.SOPClassUID == SC_CLASS
        for out in (sr, sc):
            assert out.StudyInstanceUID == source.StudyInstanceUID
            assert out.SeriesInstanceUID != source.SeriesInstanceUID
            assert out.PatientID == source.PatientID
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert (sc.Rows, sc.Columns, sc.SamplesPerPixel) == (source.Rows, source.Columns, 3)
        bundle = json.loads((fhir_dir / f"{stem}_fhir.json").read_text())
        assert bundle["resourceType"] == "Bundle"
        assert any(e["resource"]["resourceType"] == "DiagnosticReport" for e in bundle["entry"])
    png_bundle = json.loads((fhir_dir / "001_png_fhir.json").read_text())
    assert {e["resource"]["resourceType"] for e in png_bundle["entry"]} == {"DiagnosticReport", "Observation"}
    for path in (dicom_dir / "001_dcm_sr.dcm", dicom_dir / "001_dcm_sc.dcm"):
        assert _dciodvfy_errors(path) == [], path.name


def test_measured_width_is_in_the_sr(inputs, tmp_path):
    import csv

    rows_file = tmp_path / "rows.csv"
    res = CliRunner().invoke(app, ["measure", str(inputs / "001.dcm"), "--dicom-out", str(tmp_path),
                                   "--out", str(rows_file)])
    assert res.exit_code == 0, res.output
    [row] = list(csv.DictReader(rows_file.open(newline="")))
    nums = _nums(pydicom.dcmread(tmp_path / "001_dcm_sr.dcm"))
    mean = next(v for k, v in nums.items() if k.startswith("Mean mandibular cortical width"))
    assert mean == pytest.approx(float(row["mcw_mm"]), abs=0.006)   # the row keeps 2 decimals
    assert "not DICOM" not in res.output


def test_predict_dicom_out_carries_the_model_score(inputs, tmp_path_factory, tmp_path):
    import csv

    _run, onnx_file, _data = build_small_model(tmp_path_factory.getbasetemp() / "web-model")
    rows_file = tmp_path / "rows.csv"
    res = CliRunner().invoke(app, ["predict", str(onnx_file), str(inputs / "001.dcm"), "--dicom-out",
                                   str(tmp_path / "dicom"), "--fhir-out", str(tmp_path / "fhir"),
                                   "--out", str(rows_file)])
    assert res.exit_code == 0, res.output
    [row] = list(csv.DictReader(rows_file.open(newline="")))
    assert row["mcw_mm"] != ""            # --dicom-out implies --measure
    nums = _nums(pydicom.dcmread(tmp_path / "dicom" / "001_dcm_sr.dcm"))
    assert nums["Model score for osteoporosis (0..1)"] == pytest.approx(float(row["probability"]), abs=1e-4)
    assert nums["Model decision threshold (0..1)"] == pytest.approx(float(row["threshold"]), abs=1e-4)
    assert (tmp_path / "dicom" / "001_dcm_sc.dcm").is_file()
    text = (tmp_path / "fhir" / "001_dcm_fhir.json").read_text()
    assert "Bundle" in text


def test_dicom_out_that_is_a_file_is_a_one_line_error(inputs, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    res = CliRunner().invoke(app, ["measure", str(inputs / "001.dcm"), "--dicom-out", str(blocker)])
    assert res.exit_code != 0 and "--dicom-out must be a folder" in str(res.exception)
