"""The clinical risk index (OST, Koh et al. 2001) and the combined MCW + OST referral rule; its inputs
from options, manifests and DICOM headers. Images are SYNTHETIC phantoms."""

from __future__ import annotations

import csv
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from osteopano.cli import app
from osteopano.errors import DataError
from osteopano.io.images import read_image
from osteopano.prepare import risk
from osteopano.screen.screener import Screener


@pytest.mark.parametrize(("weight", "age", "ost"), [
    (60, 81, -4),    # -4.2 truncated towards zero, as the published chart
    (50, 75, -5),
    (50, 70, -4),    # exactly -4
    (65, 70, -1),
    (70, 70, 0),
    (80, 55, 5),
    (72.5, 60, 2),   # 2.5 -> 2
])
def test_ost_index_is_truncated(weight, age, ost):
    assert risk.ost_index(weight, age) == ost


@pytest.mark.parametrize(("ost", "category"), [(-5, "high"), (-4, "moderate"), (-2, "moderate"), (-1, "moderate"),
                                               (0, "low"), (6, "low")])
def test_ost_categories(ost, category):
    assert risk.ost_category(ost) == category


@pytest.mark.parametrize(("mcw", "category", "expected"), [
    (2.5, "low", "refer"),          # thin cortex alone
    (2.5, None, "refer"),           # ... even without an OST
    (4.0, "high", "refer"),         # high OST alone
    (None, "high", "refer"),
    (3.3, "moderate", "consider"),  # moderate OST, MCW within 0.5 mm above 3 mm
    (3.5, "moderate", "consider"),
    (3.6, "moderate", "no"),
    (3.3, "low", "no"),
    (3.0, "low", "no"),             # at the threshold is not below it
    (None, "moderate", None),       # no width in mm: cannot decide
    (3.3, None, None),              # no OST: no combined result
])
def test_combined_referral_rule(mcw, category, expected):
    assert risk.combined_referral(mcw, category, 3.0) == expected


def test_combined_rule_follows_the_threshold():
    assert risk.combined_referral(3.3, "low", threshold_mm=3.5) == "refer"
    assert risk.combined_referral(3.9, "moderate", threshold_mm=3.5) == "consider"


def test_assess_notes_and_missing_inputs():
    full = risk.assess({"age": "70", "weight_kg": "45", "sex": "female"}, mcw_mm=3.8)
    assert (full.ost, full.category, full.combined_referral, full.sex) == (-5, "high", "refer", "F")
    assert full.raw == -5.0 and full.notes == ()
    man = risk.assess({"age": 70, "weight_kg": 80, "sex": "M"}, mcw_mm=3.8)
    assert man.category == "low" and any("women" in n for n in man.notes)
    half = risk.assess({"age": 70}, mcw_mm=2.0)
    assert half.ost is None and half.category is None and half.combined_referral == "refer"
    assert any("age and weight" in n for n in half.notes)
    assert risk.assess({}) is None and risk.assess({"age": " "}) is None


@pytest.mark.parametrize(("values", "message"), [({"age": "old"}, "not a number"), ({"weight_kg": 0.5}, "implausible"),
                                                 ({"age": 200}, "implausible"), ({"sex": "x"}, "not understood")])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(DataError, match=message) as info:
        risk.clean_values(values, "scan.png")
    assert "scan.png" in str(info.value) and "\n" not in str(info.value)


def test_risk_repr_never_shows_age_or_weight():
    text = repr(risk.assess({"age": 67.0, "weight_kg": 58.0, "sex": "F"}))
    assert "67" not in text and "58" not in text


@pytest.mark.parametrize(("text", "years"), [("065Y", 65.0), ("018M", 1.5), ("052W", 1.0), ("", None),
                                             ("65Y", None), ("065X", None)])
def test_dicom_age(text, years):
    got = risk.parse_dicom_age(text)
    assert got == (None if years is None else pytest.approx(years, abs=0.01))


def test_merge_prefers_option_then_manifest_then_file():
    values, sources = risk.merge_values(("option", {"age": 70, "sex": None}), ("manifest", {"age": "60", "sex": "F"}),
                                        ("file", {"age": 50, "weight_kg": 55.0}))
    assert values == {"age": 70, "sex": "F", "weight_kg": 55.0}
    assert sources == {"age": "option", "sex": "manifest", "weight_kg": "file"}


# ----------------------------------------------------------------------------- on images


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from osteopano.phantom.generate import generate

    out = tmp_path_factory.mktemp("risk-phantoms")
    generate(out, 2, 3, fmt="dicom", width=900, progress=False, workers=1)
    return out


def _tagged(src: Path, dst: Path, **tags) -> Path:
    ds = pydicom.dcmread(src)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


def test_dicom_header_feeds_the_radiograph_and_the_screener(phantoms, tmp_path):
    src = min(phantoms.glob("*.dcm"))
    path = _tagged(src, tmp_path / "tagged.dcm", PatientAge="072Y", PatientSex="F", PatientWeight="48")
    image = read_image(path)
    assert image.patient == {"age": 72.0, "sex": "F", "weight_kg": 48.0}
    assert "patient=" not in repr(image) and "weight" not in repr(image)
    screener = Screener(None, measure=True)
    result = screener.predict(image)
    assert result.risk.ost == risk.ost_index(48, 72) == -4 and result.risk.category == "moderate"
    assert result.risk.sources == {"age": "file", "sex": "file", "weight_kg": "file"}
    # an option wins over the header
    opt = screener.predict(image, clinical={"weight_kg": 40})
    assert opt.risk.ost == -6 and opt.risk.sources["weight_kg"] == "option" and opt.risk.category == "high"
    assert opt.risk.combined_referral == "refer"
    row = opt.to_row(measured=True)
    assert (row["ost_index"], row["ost_category"], row["combined_referral"]) == (-6, "high", "refer")
    # the combined rule uses the measured width
    m = opt.measurement
    assert result.risk.combined_referral == risk.combined_referral(m.mcw_mm if m.decision is not None else None,
                                                                   "moderate")


def test_untagged_dicom_has_no_risk(phantoms):
    result = Screener(None, measure=True).predict(min(phantoms.glob("*.dcm")))
    assert result.risk is None
    row = result.to_row(measured=True)
    assert row["ost_index"] is None and row["combined_referral"] is None


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_manifest_columns_and_cli_options(phantoms, tmp_path):
    manifest = _rows(phantoms / "manifest.csv")
    ages = {r["path"]: float(r["age"]) for r in manifest}
    # the phantom's manifest has age and sex; add a weight column for one image
    folder = tmp_path / "data"
    folder.mkdir()
    names = sorted(ages)
    for name in names:
        (folder / name).write_bytes((phantoms / name).read_bytes())
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "age", "sex", "weight_kg"])
        writer.writeheader()
        writer.writerow({"path": names[0], "age": ages[names[0]], "sex": "F", "weight_kg": "52"})
        writer.writerow({"path": names[1], "age": ages[names[1]], "sex": "F", "weight_kg": ""})
    found = risk.manifest_values(folder.glob("*.dcm"))
    assert found[(folder / names[0]).resolve()]["weight_kg"] == "52"
    assert "weight_kg" not in found[(folder / names[1]).resolve()]

    runner = CliRunner()
    out = tmp_path / "rows.csv"
    res = runner.invoke(app, ["measure", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    first, second = rows[names[0]], rows[names[1]]
    assert int(first["ost_index"]) == risk.ost_index(52, ages[names[0]])
    assert first["ost_category"] == risk.ost_category(int(first["ost_index"]))
    assert second["ost_index"] == "" and second["ost_category"] == ""   # age without weight: no OST

    res = runner.invoke(app, ["measure", str(folder), "--out", str(out), "--weight", "90", "--age", "50"])
    assert res.exit_code == 0, res.output
    for row in _rows(out):
        assert (int(row["ost_index"]), row["ost_category"]) == (8, "low")

    res = runner.invoke(app, ["measure", str(folder), "--sex", "x"])   # refused before anything is measured
    assert res.exit_code != 0 and isinstance(res.exception, DataError)
    assert "sex 'x' not understood" in str(res.exception)


# ----------------------------------------------------------------------------- the web page and the API


@pytest.fixture(scope="module")
def measure_client():
    from fastapi.testclient import TestClient

    from osteopano.web import app as web

    return TestClient(web.create_app(None))


def test_api_measure_risk_from_fields_and_dicom_header(measure_client, phantoms, tmp_path):
    src = min(phantoms.glob("*.dcm"))
    tagged = _tagged(src, tmp_path / "tagged.dcm", PatientAge="075Y", PatientSex="F", PatientWeight="50")
    body = measure_client.post("/api/v1/measure", files={"file": ("opg.dcm", tagged.read_bytes())}).json()
    assert body["risk"]["ost"] == -5 and body["risk"]["category"] == "high"
    assert body["risk"]["combined_referral"] == "refer"
    assert body["risk"]["input_sources"] == {"age": "file", "sex": "file", "weight_kg": "file"}
    # form fields win over the header; none given and no header: no risk
    body = measure_client.post("/api/v1/measure", files={"file": ("opg.dcm", tagged.read_bytes())},
                               data={"weight_kg": "90"}).json()
    assert body["risk"]["ost"] == 3 and body["risk"]["input_sources"]["weight_kg"] == "option"
    plain = measure_client.post("/api/v1/measure", files={"file": ("opg.dcm", src.read_bytes())}).json()
    assert plain["risk"] is None
    bad = measure_client.post("/api/v1/measure", files={"file": ("opg.dcm", src.read_bytes())}, data={"age": "old"})
    assert bad.status_code == 422 and "age 'old' is not a number" in bad.json()["detail"]


def test_result_page_shows_the_risk_section(measure_client, phantoms):
    src = min(phantoms.glob("*.dcm"))
    page = measure_client.post("/screen", files={"file": ("opg.dcm", src.read_bytes())},
                               data={"age": "80", "weight_kg": "55", "sex": "F"})
    assert page.status_code == 200
    html = page.text
    assert 'id="risk"' in html and "OST index" in html and "-5 (high risk (OST below -4))" in html
    assert "osteopano did not validate it" in html and "Koh LK" in html
    assert measure_client.get("/").text.count('name="weight_kg"') == 1
