"""Bad input through every entry point: `osteopano inspect`, `measure`, `predict` (torch run folder and
exported .onnx) and the web API / page. Every kind of tests/bad_inputs.py must end as a one-line error or
a refusal - never a traceback, never a probability - while a good image in the same batch is still scored.

What must hold, per entry point:
* predict (both engines): the kind's row has no probability and no decision, and its error says why
  (read errors: the reader's reason; non-radiographs: the gate's "not a dental panoramic radiograph: ...").
* measure: the kind's row has an error and no width.
* inspect --json: the kind is listed as unusable with its reason.
* web: the API answers 4xx with a one-line JSON "detail" and no probability; the page shows no decision.
The screener (predict, measure, web) and `osteopano inspect` run the gate.
Data-set problems (duplicates across splits, conflicting rows, paths outside the folder, a non-numeric
age with --covariates age) must make `train` and `inspect` stop with one line.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import NOT_RADIOGRAPHS, READ_ERRORS, make_all, phantom_u8
from PIL import Image
from screen_support import exported_onnx, run_cli

from osteopano.prepare.gate import check_radiograph

GATE_REASON = "not a dental panoramic radiograph"


def _kinds(gate_mark=()):
    return ([pytest.param(k, id=k) for k in sorted(READ_ERRORS)]
            + [pytest.param(k, id=k, marks=gate_mark) for k in sorted(NOT_RADIOGRAPHS)])


def test_the_suite_has_at_least_forty_kinds():
    assert len(READ_ERRORS) + len(NOT_RADIOGRAPHS) >= 40


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Every kind in one folder, plus good.png (a phantom the gate passes)."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    paths = make_all(folder / "normal")
    good = folder / "normal" / "good.png"
    Image.fromarray(phantom_u8(11)).save(good)
    Image.fromarray(phantom_u8(12)).save((folder / "osteoporosis").mkdir() or folder / "osteoporosis" / "good2.png")
    return {**paths, "_good": good, "_root": folder}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "osteopano", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-2000:]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {Path(r["path"]).name: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def predict_rows(bad, screen_base, run, tmp_path_factory) -> dict[str, dict[str, dict[str, str]]]:
    """One `osteopano predict` over the whole folder per engine: engine -> file name -> row."""
    out = tmp_path_factory.mktemp("predict")
    rows = {}
    for engine, model in (("torch", run), ("onnx", exported_onnx(screen_base))):
        target = out / f"{engine}.csv"
        result = _cli("predict", str(model), str(bad["_root"] / "normal"), "--out", str(target),
                      "--engine", engine)
        _no_traceback(result)
        assert result.returncode == 0, result.stderr[-2000:]  # the good image was read, the batch went on
        rows[engine] = _rows(target)
    return rows


@pytest.fixture(scope="module")
def measure_rows(bad, tmp_path_factory) -> dict[str, dict[str, str]]:
    target = tmp_path_factory.mktemp("measure") / "mcw.csv"
    result = _cli("measure", str(bad["_root"] / "normal"), "--out", str(target))
    _no_traceback(result)
    assert result.returncode == 0, result.stderr[-2000:]
    return _rows(target)


@pytest.fixture(scope="module")
def inspect_report(bad) -> dict:
    result = _cli("inspect", str(bad["_root"]), "--json")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def web_client(screen_base, run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from osteopano.web.app import create_app

    return TestClient(create_app(exported_onnx(screen_base)), raise_server_exceptions=False)


# ----------------------------------------------------------------------------- predict


def _refused_row(row: dict[str, str], kind: str) -> None:
    assert row["probability"] in ("", None), f"{kind} was scored: {row}"
    assert row["decision"] in ("", None), f"{kind} got a decision: {row}"
    assert row["error"], f"{kind}: no error"
    assert "\n" not in row["error"]
    if kind in NOT_RADIOGRAPHS:
        assert GATE_REASON in " ".join(str(v) for v in row.values())


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_predict_still_scores_the_good_image(predict_rows, engine):
    row = predict_rows[engine]["good.png"]
    assert row["error"] == "" and 0.0 <= float(row["probability"]) <= 1.0


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("kind", _kinds())
def test_predict_refuses(predict_rows, bad, engine, kind):
    _refused_row(predict_rows[engine][bad[kind].name], kind)


# ----------------------------------------------------------------------------- measure


def test_measure_still_measures_the_good_image(measure_rows):
    assert measure_rows["good.png"]["error"] == ""


@pytest.mark.parametrize("kind", _kinds())
def test_measure_refuses(measure_rows, bad, kind):
    row = measure_rows[bad[kind].name]
    assert row["error"] and "\n" not in row["error"], f"{kind}: {row}"
    widths = [v for k, v in row.items() if k.startswith("mcw") and v not in ("", None)]
    assert widths == [], f"{kind} got widths {widths}"
    if kind in NOT_RADIOGRAPHS:
        assert GATE_REASON in row["error"]


# ----------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("kind", _kinds())
def test_inspect_lists_it_as_unusable(inspect_report, bad, kind):
    reasons = {Path(item["path"]).name: item["reason"] for item in inspect_report["unreadable"]}
    name = bad[kind].name
    assert name in reasons, f"{kind} counted as usable"
    assert reasons[name] and "\n" not in reasons[name]
    if kind in NOT_RADIOGRAPHS:
        assert GATE_REASON in reasons[name]


def test_inspect_dataset_with_the_gate_refuses_every_non_radiograph(bad):
    from osteopano.data.dataset import discover, inspect_dataset

    report = inspect_dataset(discover(bad["_root"]), gate=check_radiograph)
    gated = {Path(i["path"]).name for i in report["unreadable"] if i.get("gate")}
    assert gated == {bad[k].name for k in NOT_RADIOGRAPHS}
    assert report["usable_classes"] == {"normal": 1, "osteoporosis": 1}


# ----------------------------------------------------------------------------- web


@pytest.mark.parametrize("kind", _kinds())
def test_web_api_refuses(web_client, bad, kind):
    path = bad[kind]
    response = web_client.post("/api/v1/screen", files={"file": (path.name, path.read_bytes())})
    assert 400 <= response.status_code < 500, (kind, response.status_code, response.text[:300])
    body = response.json()
    assert "probability" not in body and "decision" not in body
    assert body["detail"] and "\n" not in body["detail"]
    if kind in NOT_RADIOGRAPHS:
        assert GATE_REASON in body["detail"]


@pytest.mark.parametrize("kind", _kinds())
def test_web_page_shows_no_decision(web_client, bad, kind):
    path = bad[kind]
    response = web_client.post("/screen", files={"file": (path.name, path.read_bytes())})
    assert 400 <= response.status_code < 500, (kind, response.status_code)
    assert "Refer for DXA" not in response.text and "No DXA referral" not in response.text
    assert "Traceback" not in response.text


def test_web_scores_the_good_image(web_client, bad):
    response = web_client.post("/api/v1/screen", files={"file": ("good.png", bad["_good"].read_bytes())})
    assert response.status_code == 200 and 0.0 <= response.json()["probability"] <= 1.0


# ----------------------------------------------------------------------------- data-set problems


def _manifest(folder: Path, rows: list[str], header: str = "path,label,patient_id") -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate((21, 22, 23, 24)):
        Image.fromarray(phantom_u8(seed, 256)).save(folder / "img" / f"{i}.png")
    (folder / "manifest.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder


def _dataset_problem(tmp_path: Path, problem: str) -> tuple[Path, list[str]]:
    data = tmp_path / "data"
    extra: list[str] = []
    if problem == "duplicate-across-splits":
        _manifest(data, ["img/0.png,normal,P0,train", "img/1.png,osteoporosis,P1,val", "img/2.png,normal,P2,test",
                         "img/copy.png,normal,P9,test"], "path,label,patient_id,split")
        (data / "img" / "copy.png").write_bytes((data / "img" / "0.png").read_bytes())
    elif problem == "duplicate-other-patient":
        _manifest(data, ["img/0.png,normal,P0", "img/1.png,osteoporosis,P1", "img/copy.png,normal,P9"])
        (data / "img" / "copy.png").write_bytes((data / "img" / "0.png").read_bytes())
    elif problem == "conflicting-rows":
        _manifest(data, ["img/0.png,normal,P0", "img/1.png,osteoporosis,P1", "img/0.png,osteoporosis,P0"])
    elif problem == "path-outside":
        outside = tmp_path / "elsewhere.png"
        Image.fromarray(phantom_u8(30, 256)).save(outside)
        _manifest(data, ["img/0.png,normal,P0", "img/1.png,osteoporosis,P1", "../elsewhere.png,normal,P2"])
    elif problem == "non-numeric-age":
        _manifest(data, ["img/0.png,normal,P0,61", "img/1.png,osteoporosis,P1,sixty", "img/2.png,normal,P2,70"],
                  "path,label,patient_id,age")
        extra = ["--covariates", "age"]
    return data, extra


PROBLEMS = ["duplicate-across-splits", "duplicate-other-patient", "conflicting-rows", "path-outside",
            "non-numeric-age"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_train_and_inspect_stop_with_one_line(tmp_path, monkeypatch, capsys, problem):
    data, extra = _dataset_problem(tmp_path, problem)
    for args in (["inspect", str(data)],
                 ["train", str(data), "--out", str(tmp_path / "run"), "--weights", "none", "--epochs", "1",
                  "--image-size", "32", *extra]):
        code, out, err = run_cli(monkeypatch, capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2, (args[0], out, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err and "Traceback" not in out
        if problem == "non-numeric-age":
            assert "line 3" in lines[0] and "'age'" in lines[0] and "sixty" in lines[0]


@pytest.mark.parametrize("problem", PROBLEMS[:4])
def test_allow_duplicates_records_the_problems(tmp_path, problem):
    from osteopano.data.dataset import discover, inspect_dataset

    data, _ = _dataset_problem(tmp_path, problem)
    ds = discover(data, allow_duplicates=True)
    kinds = {p["kind"] for p in ds.problems}
    expected = {"duplicate-across-splits": "duplicate_across_splits",
                "duplicate-other-patient": "duplicate_other_patient",
                "conflicting-rows": "conflicting_rows", "path-outside": "outside"}[problem]
    assert expected in kinds
    assert inspect_dataset(ds, read_images=False)["problems"] == ds.problems


def test_cli_allow_duplicates_flag(tmp_path, monkeypatch, capsys):
    data, _ = _dataset_problem(tmp_path, "duplicate-other-patient")
    code, out, err = run_cli(monkeypatch, capsys, "inspect", str(data), "--json", "--allow-duplicates")
    assert code == 0, err
    assert json.loads(out)["problems"][0]["kind"] == "duplicate_other_patient"


def test_same_image_same_patient_is_not_a_problem(tmp_path):
    from osteopano.data.dataset import discover

    data = _manifest(tmp_path / "d", ["img/0.png,normal,P0", "img/1.png,osteoporosis,P1", "img/copy.png,normal,P0"])
    (data / "img" / "copy.png").write_bytes((data / "img" / "0.png").read_bytes())
    assert discover(data).problems == []  # one patient: the split keeps both copies together


def test_non_square_pixels_are_resampled(tmp_path):
    from osteopano.io.images import read_image, write_dicom

    base = phantom_u8().astype(np.uint16) * 16
    path = tmp_path / "aspect.dcm"
    write_dicom(path, base, None, uid_seed="a", BitsStored=12, PixelSpacing=[0.1, 0.125])
    image = read_image(path)
    assert image.pixel_spacing_mm == pytest.approx(0.1)
    assert image.pixels.shape == (base.shape[0], round(base.shape[1] * 1.25))


READER_REASONS = {
    "png-flipped-idat-byte": "CRC mismatch in the IDAT chunk",
    "png-flipped-byte-crc-fixed": "corrupt PNG image data",
    "png-without-iend": "truncated PNG",
    "png-bad-ihdr-crc": "CRC mismatch in the IHDR chunk",
    "png-zero-width": "invalid IHDR",
    "truncated-png": "truncated PNG",
    "png-signature-only": "truncated PNG",
    "png-bomb-header": "too large",
    "truncated-jpeg": "truncated JPEG",
    "jpeg-without-eoi": "truncated JPEG",
    "jpeg-header-only": "truncated JPEG",
    "truncated-tiff": "truncated TIFF",
    "truncated-bmp": "truncated",
    "multi-page-tiff": "multi-page TIFF with 2 frames",
    "animated-png": "animated PNG with 2 frames",
    "multi-frame-dicom": "multi-frame DICOM with 2 frames",
    "dicom-pixel-aspect-3": "non-square pixels",
}


@pytest.mark.parametrize("kind", sorted(READER_REASONS))
def test_reader_names_the_problem(tmp_path, kind):
    from osteopano.errors import ImageReadError
    from osteopano.io.images import read_image, read_image_bytes

    path = READ_ERRORS[kind](tmp_path)
    for read in (lambda: read_image(path), lambda: read_image_bytes(path.read_bytes(), path.name)):
        with pytest.raises(ImageReadError) as info:
            read()
        assert READER_REASONS[kind] in info.value.reason and path.name in str(info.value)


@pytest.mark.parametrize("kind", ["multi-page-tiff", "animated-png", "multi-frame-dicom"])
def test_an_explicit_frame_is_read(tmp_path, kind):
    from osteopano.io.images import read_image

    path = READ_ERRORS[kind](tmp_path)
    first, second = read_image(path, frame=0), read_image(path, frame=1)
    assert first.pixels.shape == second.pixels.shape
    assert not np.array_equal(first.pixels, second.pixels)
