"""Batch screening: `osteopano predict` on files, folders and DICOM, bad files, --resume, heatmaps,
reports, --measure, and the streaming writer."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from screen_support import exported_onnx, run_cli

import osteopano
from osteopano.screen import explain
from osteopano.io.images import read_image, write_dicom
from osteopano.screen.batch import ROW_COLUMNS, RowWriter, done_paths, iter_image_paths


@pytest.fixture(scope="session")
def phantoms(run, screen_base) -> list[Path]:
    return sorted((screen_base / "phantoms").glob("*.png"))


@pytest.fixture
def mixed(tmp_path, phantoms) -> Path:
    """6 good PNGs (2 in a sub-folder), a truncated PNG and a text file named .jpg."""
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for i, src in enumerate(phantoms[:6]):
        shutil.copy(src, folder / ("sub" if i >= 4 else "") / src.name)
    (folder / "truncated.png").write_bytes(phantoms[6].read_bytes()[:2000])
    (folder / "notes.jpg").write_text("not an image\n")
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_with_bad_files_gives_error_rows_and_exit_0(monkeypatch, capsys, run, mixed, tmp_path):
    out = tmp_path / "p.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out),
                           "--batch-size", "3")
    assert code == 0, err
    rows = read_csv(out)
    assert list(rows[0]) == list(ROW_COLUMNS)
    assert len(rows) == 8
    bad = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(bad) == {"truncated.png", "notes.jpg"}
    assert "truncated" in bad["truncated.png"] and "not an image" in bad["notes.jpg"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 6 and {Path(r["path"]).parent.name for r in good} == {"mixed", "sub"}
    for r in good:
        p, t = float(r["probability"]), float(r["threshold"])
        assert 0.0 <= p <= 1.0
        assert r["decision"] == str(p >= t)
    assert "6 image(s) screened, 2 unreadable" in err


def test_rows_match_the_api(monkeypatch, capsys, run, phantoms, tmp_path):
    out = tmp_path / "p.jsonl"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(phantoms[0]), str(phantoms[1]),
                           "--out", str(out), "--threshold", "0.3")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model = osteopano.load(run, threshold=0.3)
    for row, src in zip(rows, phantoms[:2], strict=True):
        r = model.predict(src)
        assert row["probability"] == pytest.approx(r.probability, abs=1e-6)
        assert row["decision"] is (r.probability >= 0.3) and row["threshold"] == 0.3
        assert row["model_id"] == model.model_id and row["error"] is None


def test_explicit_files_with_any_name_and_dicom_patient_id(monkeypatch, capsys, run, phantoms, tmp_path):
    odd = tmp_path / "scan_without_extension"
    shutil.copy(phantoms[0], odd)
    pixels = (read_image(phantoms[1]).pixels * 65535).astype(np.uint16)
    dicom = tmp_path / "dicoms" / "a.dcm"
    dicom.parent.mkdir()
    write_dicom(dicom, pixels, 0.25, patient_id="PID-0042")
    out = tmp_path / "p.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(odd), str(dicom.parent),
                           "--out", str(out))
    assert code == 0, err
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert set(rows) == {"scan_without_extension", "a.dcm"}
    assert not rows["scan_without_extension"]["error"] and rows["scan_without_extension"]["patient_id"] == ""
    assert rows["a.dcm"]["patient_id"] == "PID-0042" and not rows["a.dcm"]["error"]


def test_nothing_readable_exits_2_with_one_line(monkeypatch, capsys, run, tmp_path):
    (tmp_path / "a.png").write_text("text")
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(tmp_path), "--out", str(tmp_path / "o.csv"))
    assert code == 2
    assert err.strip().splitlines()[-1] == "error: none of the 1 input files could be read"
    assert len(read_csv(tmp_path / "o.csv")) == 1  # the error row is still written


def test_no_images_found_exits_2(monkeypatch, capsys, run, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(tmp_path))
    assert code == 2 and err.startswith("error: no images found in")


def test_resume_predicts_only_the_missing_images(monkeypatch, capsys, run, mixed, tmp_path):
    out = tmp_path / "p.csv"
    assert run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out))[0] == 0
    full = read_csv(out)
    lines = out.read_text().splitlines(keepends=True)
    # keep the header and 3 rows (the first with a marker probability), plus a torn 4th row
    kept = lines[1].split(",")
    kept[2] = "0.123456"
    out.write_text(lines[0] + ",".join(kept) + "".join(lines[2:4]) + lines[4][:15])
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--resume")
    assert code == 0, err
    assert "(plus 3 from before)" in err
    rows = read_csv(out)
    assert len(rows) == len(full) == 8
    assert len({r["path"] for r in rows}) == 8
    assert rows[0]["probability"] == "0.123456"  # not predicted again
    assert {r["path"]: r["probability"] for r in rows[3:]} == {r["path"]: r["probability"] for r in full[3:]}
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--resume")
    assert code == 0 and "nothing to do" in err and len(read_csv(out)) == 8


def test_heatmaps_have_the_input_size(monkeypatch, capsys, run, mixed, tmp_path):
    maps = tmp_path / "maps"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed / "sub"), "--heatmaps", str(maps))
    assert code == 0, err
    pngs = sorted(maps.glob("*.png"))
    assert len(pngs) == 2
    model = osteopano.load(run)
    for png in pngs:
        source = mixed / "sub" / png.name.replace("_gradcam.png", ".png")
        with Image.open(png) as im, Image.open(source) as src:
            assert im.size == src.size and im.mode == "RGB"
            written = np.asarray(im)
        image = read_image(source)
        assert np.array_equal(written, explain.overlay(image, model.predict(image, heatmap=True).heatmap))


def test_table_without_out(monkeypatch, capsys, run, phantoms):
    code, out, err = run_cli(monkeypatch, capsys, "predict", str(run), str(phantoms[0]))
    assert code == 0, err
    assert phantoms[0].name in out and "refer for DXA" in out


def test_onnx_engine_refuses_heatmaps(monkeypatch, capsys, run, screen_base, phantoms, tmp_path):
    onnx_file = exported_onnx(screen_base)
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(onnx_file), str(phantoms[0]),
                           "--heatmaps", str(tmp_path / "h"))
    assert code == 2 and "Grad-CAM" in err and len(err.strip().splitlines()) == 1


def test_reports_contain_the_probability(monkeypatch, capsys, run, mixed, tmp_path):
    format_probability = pytest.importorskip(
        "osteopano.render.reports", reason="osteopano.render.reports (report helper) not written yet").format_probability
    rep = tmp_path / "rep"
    out = tmp_path / "p.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed / "sub"), "--report", str(rep),
                           "--out", str(out))
    assert code == 0, err
    rows = read_csv(out)
    html = sorted(rep.rglob("*.html"))
    assert len(html) == 2 and len(sorted(rep.rglob("*.pdf"))) == 2
    for row in rows:  # write_report names the files after the image's stem
        html_text = (rep / f"{Path(row['path']).stem}.html").read_text(encoding="utf-8")
        assert format_probability(float(row["probability"])) in html_text


def test_measure_adds_cortex_columns(monkeypatch, capsys, run, mixed, tmp_path):
    out = tmp_path / "p.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--measure",
                           "--pixel-spacing", "0.9")
    assert code == 0, err
    rows = read_csv(out)
    assert len(rows) == 8 and {"mcw_mm", "quality", "klemetti_estimate"} <= set(rows[0])
    good = [r for r in rows if not r["error"]]
    assert all(r["spacing_source"] == "argument" and r["quality"] in ("ok", "low", "failed") for r in good)
    assert any(r["mcw_mm"] for r in good)
    assert all(r["mcw_mm"] == "" for r in rows if r["error"])


# ----------------------------------------------------------------------------- building blocks


def test_iter_image_paths_is_lazy_recursive_and_deduplicated(tmp_path):
    (tmp_path / "d" / "deep" / ".hidden").mkdir(parents=True)
    for rel in ("d/b.png", "d/a.JPG", "d/deep/c.dcm", "d/deep/.hidden/x.png", "d/notes.txt", "d/.y.png"):
        (tmp_path / rel).write_bytes(b"x")
    odd = tmp_path / "odd.name"
    odd.write_bytes(b"x")
    it = iter_image_paths([tmp_path / "d", odd, tmp_path / "d" / "b.png", tmp_path / "missing.png"])
    assert iter(it) is it  # a generator, not a list
    names = [p.relative_to(tmp_path).as_posix() for p in it]
    assert names == ["d/a.JPG", "d/b.png", "d/deep/c.dcm", "odd.name", "missing.png"]
    excluded = list(iter_image_paths([tmp_path / "d"], exclude=[tmp_path / "d" / "deep"]))
    assert [p.name for p in excluded] == ["a.JPG", "b.png"]


def test_row_writer_waits_for_the_extra_columns_and_fsyncs(tmp_path):
    out = tmp_path / "r.csv"
    err_row = dict.fromkeys(ROW_COLUMNS) | {"path": "/x/bad.png", "error": "bad"}
    good_row = dict.fromkeys(ROW_COLUMNS) | {"path": "/x/good.png", "probability": 0.5, "mcw_mm": 2.5}
    with RowWriter(out, extra=True) as writer:
        writer.write([err_row])
        assert out.read_text() == ""  # header not known yet
        writer.write([good_row])
        assert out.read_text().count("\n") == 3  # durable before close
    rows = read_csv(out)
    assert list(rows[0]) == [*ROW_COLUMNS, "mcw_mm"] and rows[1]["mcw_mm"] == "2.5"
    assert done_paths(out) == {"/x/bad.png", "/x/good.png"}
    with RowWriter(out, resume=True) as writer:
        writer.write([dict.fromkeys(ROW_COLUMNS) | {"path": "/x/third.png"}])
    assert len(read_csv(out)) == 3 and out.read_text().count("path,") == 1


def test_row_writer_rejects_other_suffixes(tmp_path):
    from osteopano.errors import DataError

    with pytest.raises(DataError, match="must end in .csv or .jsonl"):
        RowWriter(tmp_path / "r.txt")
