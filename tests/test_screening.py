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
from osteopano.errors import DataError
from osteopano.render.display import heatmap_overlay
from osteopano.io.images import read_image, write_dicom
from osteopano.io.rows import RowWriter, previous_rows
from osteopano.io.walk import OutputNames, iter_image_paths
from osteopano.screen.result import BASE_COLUMNS as ROW_COLUMNS


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
    assert "6 image(s) screened, 2 with an error" in err


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
    assert err.strip().splitlines()[-1] == "error: none of the 1 input files could be screened"
    assert len(read_csv(tmp_path / "o.csv")) == 1  # the error row is still written


def test_no_images_found_exits_2(monkeypatch, capsys, run, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(tmp_path))
    assert code == 2 and err.startswith("error: no images found in")


def test_resume_predicts_only_the_missing_images(monkeypatch, capsys, run, mixed, tmp_path):
    out = tmp_path / "p.csv"
    assert run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out))[0] == 0
    full = read_csv(out)
    lines = out.read_text().splitlines(keepends=True)
    # keep the header and 3 rows (the first good one with a marker probability), plus a torn 4th row
    marked = next(i for i, r in enumerate(full[:3]) if not r["error"])
    kept = lines[1:4]
    cells = kept[marked].split(",")
    cells[2] = "0.123456"
    kept[marked] = ",".join(cells)
    out.write_text(lines[0] + "".join(kept) + lines[4][:15])
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--resume")
    assert code == 0, err
    kept_ok = sum(not r["error"] for r in full[:3])
    assert f"{kept_ok} done before, skipped" in err
    rows = read_csv(out)
    assert len(rows) == len(full) == 8
    assert len({r["path"] for r in rows}) == 8
    assert next(r for r in rows if r["path"] == full[marked]["path"])["probability"] == "0.123456"  # kept
    by_path = {r["path"]: r["probability"] for r in full}
    assert all(by_path[r["path"]] == r["probability"] for r in rows if r["path"] != full[marked]["path"])
    # the two error rows (truncated, text) are screened again on every resume, never duplicated
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--resume")
    assert code == 0 and "2 that had failed before, retried" in err and "6 done before, skipped" in err
    assert len(read_csv(out)) == 8


def test_resume_refuses_an_output_with_other_columns(monkeypatch, capsys, run, mixed, tmp_path):
    out = tmp_path / "p.csv"
    assert run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out))[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--resume",
                           "--measure", "--pixel-spacing", "0.9")
    assert code == 2 and "columns differ" in err and len(err.strip().splitlines()) == 1


def test_output_names_keep_the_relative_path_and_extension(monkeypatch, capsys, run, phantoms, tmp_path):
    """clinicA/001.dcm, clinicB/001.png, 007.dcm and 007.png: four images, four reports (a wrong-patient risk)."""
    inputs = tmp_path / "in"
    for folder in ("clinicA", "clinicB"):
        (inputs / folder).mkdir(parents=True)
    pixels = (read_image(phantoms[0]).pixels * 65535).astype(np.uint16)
    write_dicom(inputs / "clinicA" / "001.dcm", pixels, 0.25, patient_id="A-1")
    shutil.copy(phantoms[1], inputs / "clinicB" / "001.png")
    write_dicom(inputs / "007.dcm", pixels, 0.25, patient_id="B-7")
    shutil.copy(phantoms[2], inputs / "007.png")
    rep = tmp_path / "rep"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(inputs), "--report", str(rep))
    assert code == 0, err
    assert sorted(p.name for p in rep.glob("*.html")) == ["007_dcm.html", "007_png.html", "clinicA__001_dcm.html",
                                                         "clinicB__001_png.html"]
    # a second run into the same folder never overwrites: the names get a suffix
    assert run_cli(monkeypatch, capsys, "predict", str(run), str(inputs / "007.png"), "--report", str(rep))[0] == 0
    assert (rep / "007_png-2.html").is_file() and len(list(rep.glob("*.html"))) == 5


def test_output_names_unit(tmp_path):
    (tmp_path / "a").mkdir()
    names = OutputNames([tmp_path])
    assert names.stem(tmp_path / "a" / "x.y.png") == "a__x_y_png"
    assert names.stem(tmp_path / "a" / "x.y.png") == "a__x_y_png"  # the same image keeps its name
    assert names.stem(tmp_path / "a" / "x y.png") == "a__x_y_png-2"  # same safe name, another image
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b_png.html").write_text("an earlier report")
    assert OutputNames([tmp_path], [tmp_path / "out"]).stem(tmp_path / "b.png") == "b_png-2"


def test_iter_image_paths_survives_a_symlink_loop(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"x")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d", target_is_directory=True)
    (tmp_path / "d" / "self.png").symlink_to(tmp_path / "d" / "self.png")  # a link to itself
    names = [p.name for p in iter_image_paths([tmp_path / "d"])]
    assert names.count("a.png") == 1


def test_heatmaps_have_the_input_size(monkeypatch, capsys, run, mixed, tmp_path):
    maps = tmp_path / "maps"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed / "sub"), "--heatmaps", str(maps))
    assert code == 0, err
    pngs = sorted(maps.glob("*.png"))
    assert len(pngs) == 2
    model = osteopano.load(run)
    for png in pngs:
        source = mixed / "sub" / png.name.replace("_png_gradcam.png", ".png")
        with Image.open(png) as im, Image.open(source) as src:
            assert im.size == src.size and im.mode == "RGB"
            written = np.asarray(im)
        image = read_image(source)
        assert np.array_equal(written, heatmap_overlay(image.pixels, model.predict(image, heatmap=True).heatmap))


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
    from osteopano.render.texts import format_probability

    rep = tmp_path / "rep"
    out = tmp_path / "p.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed / "sub"), "--report", str(rep),
                           "--out", str(out))
    assert code == 0, err
    rows = read_csv(out)
    html = sorted(rep.rglob("*.html"))
    assert len(html) == 2 and len(sorted(rep.rglob("*.pdf"))) == 2
    for row in rows:  # reports are named after the image's name, extension kept
        html_text = (rep / f"{Path(row['path']).name.replace('.', '_')}.html").read_text(encoding="utf-8")
        assert format_probability(float(row["probability"])) in html_text


def test_measure_adds_cortex_columns(monkeypatch, capsys, run, mixed, tmp_path):
    out = tmp_path / "p.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(run), str(mixed), "--out", str(out), "--measure",
                           "--pixel-spacing", "0.9")
    assert code == 0, err
    rows = read_csv(out)
    assert len(rows) == 8 and {"mcw_mm", "quality", "klemetti_estimate"} <= set(rows[0])
    good = [r for r in rows if not r["error"]]
    assert all(r["spacing_source"] == "option" and r["quality"] in ("ok", "low", "failed") for r in good)
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


def test_row_writer_appends_escapes_and_reads_back(tmp_path):
    out = tmp_path / "r.csv"
    columns = [*ROW_COLUMNS, "mcw_mm"]
    err_row = dict.fromkeys(columns) | {"path": "/x/bad.png", "error": "bad"}
    good_row = dict.fromkeys(columns) | {"path": "/x/good.png", "probability": 0.5, "mcw_mm": 2.5,
                                         "patient_id": "=HYPERLINK(1)"}
    with RowWriter(out, columns) as writer:
        writer.write([err_row, good_row])
    rows = read_csv(out)
    assert list(rows[0]) == columns and rows[1]["mcw_mm"] == "2.5"
    assert rows[1]["patient_id"] == "'=HYPERLINK(1)"  # a formula is never written as one
    assert previous_rows(out) == ({"/x/good.png"}, {"/x/bad.png"})
    with RowWriter(out, columns, resume=True, drop={"/x/bad.png"}) as writer:
        writer.write([dict.fromkeys(columns) | {"path": "/x/third.png"}])
    assert [r["path"] for r in read_csv(out)] == ["/x/good.png", "/x/third.png"]
    with pytest.raises(DataError, match="columns differ"):
        RowWriter(out, list(ROW_COLUMNS), resume=True)


def test_row_writer_rejects_other_suffixes(tmp_path):
    from osteopano.errors import DataError

    with pytest.raises(DataError, match="must end in .csv or .jsonl"):
        RowWriter(tmp_path / "r.txt", list(ROW_COLUMNS))
