"""osteopano.data.dataset: discovery of both layouts, the inspect report, and ``osteopano inspect``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osteopano.data.dataset import MANIFEST_COLUMNS, discover, inspect_dataset
from osteopano.errors import DataError
from osteopano.io.images import write_png16


def _png(path: Path, value: int, size: tuple[int, int] = (64, 80), dpi: int | None = None) -> Path:
    """An 8-bit PNG of (height, width) = size whose pixels are seeded noise plus ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    data = rng.integers(0, 200, size=size).astype(np.uint8) + np.uint8(value % 50)
    Image.fromarray(data).save(path, **({"dpi": (dpi, dpi)} if dpi else {}))
    return path


def _truncated_png(path: Path) -> Path:
    noise = np.random.default_rng(5).integers(0, 65536, size=(64, 64), dtype=np.uint16)
    write_png16(path, noise)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """normal/ (2 images, one nested), osteoporosis/ (1), a hidden file and a non-image."""
    root = tmp_path / "data"
    _png(root / "normal" / "n1.png", 1)
    _png(root / "normal" / "sub" / "n2.png", 2, size=(96, 128))
    _png(root / "osteoporosis" / "o1.png", 3)
    _png(root / "normal" / ".hidden.png", 4)
    _png(root / ".cache" / "x.png", 5)
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


# ----------------------------------------------------------------------------- discovery


def test_discover_class_folders(class_folder: Path) -> None:
    ds = discover(class_folder)
    assert ds.kind == "folder" and ds.root == class_folder.resolve()
    found = {(s.path.relative_to(ds.root).as_posix(), s.label) for s in ds.samples}
    assert found == {
        ("normal/n1.png", "normal"),
        ("normal/sub/n2.png", "normal"),
        ("osteoporosis/o1.png", "osteoporosis"),
    }
    assert all(s.path.is_absolute() for s in ds.samples)
    assert {s.patient_id for s in ds.samples} == {"n1", "n2", "o1"}  # file stem by default
    assert sorted(ds.labels()) == ["normal", "normal", "osteoporosis"]
    assert [p.name for p in ds.skipped] == ["notes.txt"]


def test_images_directly_in_the_folder_have_no_label(tmp_path: Path) -> None:
    _png(tmp_path / "loose.png", 1)
    ds = discover(tmp_path)
    assert [(s.path.name, s.label) for s in ds.samples] == [("loose.png", None)]


def test_manifest_columns_paths_and_defaults(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png", 1)
    _png(tmp_path / "img" / "b.png", 2)
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,label,patient_id,tscore,scanner\n"
        "img/a.png,osteoporosis,P1,-2.7,X100\n"
        "img/b.png,normal,,,\n"
    )
    ds = discover(manifest)
    assert ds.kind == "manifest" and ds.manifest == manifest.resolve()
    a, b = ds.samples
    assert a.path == (tmp_path / "img" / "a.png").resolve() and a.path.is_file()
    assert (a.label, a.patient_id, b.patient_id) == ("osteoporosis", "P1", "b")
    assert a.number("tscore") == pytest.approx(-2.7) and b.number("tscore") is None
    assert a.get("scanner") == "X100" and b.get("scanner") is None and b.fields["scanner"] == ""
    assert a.get("klemetti") is None  # a contract column absent from this manifest
    assert ds.labels("scanner") == ["X100", None]
    with pytest.raises(DataError, match="scanner"):
        a.number("scanner")


def test_manifest_missing_required_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,patient_id\na.png,P1\n")
    with pytest.raises(DataError, match=r"m\.csv: missing required column\(s\) label"):
        discover(tmp_path / "m.csv")


def test_folder_with_manifest_uses_it(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png", 1)
    _png(tmp_path / "images" / "b.png", 2)  # not listed: the manifest decides
    row = "images/a.png,normal" + "," * (len(MANIFEST_COLUMNS) - 2)
    (tmp_path / "manifest.csv").write_text(",".join(MANIFEST_COLUMNS) + "\n" + row + "\n")
    ds = discover(tmp_path)
    assert ds.kind == "manifest" and [s.path.name for s in ds.samples] == ["a.png"]
    assert ds.fingerprint() == hashlib.sha256((tmp_path / "manifest.csv").read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["empty-folder", "only-text", "empty-manifest"])
def test_nothing_found_is_a_data_error(tmp_path: Path, layout: str) -> None:
    target = tmp_path
    if layout == "only-text":
        (tmp_path / "normal").mkdir()
        (tmp_path / "normal" / "a.txt").write_text("x")
    elif layout == "empty-manifest":
        target = tmp_path / "m.csv"
        target.write_text("path,label\n")
    with pytest.raises(DataError, match="no images found"):
        discover(target)


def test_missing_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        discover(tmp_path / "nope")


def test_folder_fingerprint_follows_the_file_list(class_folder: Path) -> None:
    before = discover(class_folder).fingerprint()
    assert discover(class_folder).fingerprint() == before
    _png(class_folder / "osteoporosis" / "o2.png", 9)
    assert discover(class_folder).fingerprint() != before


# ----------------------------------------------------------------------------- inspect


def test_inspect_report(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png", 1, size=(64, 80), dpi=254)
    _png(tmp_path / "img" / "b.png", 2, size=(100, 120))
    (tmp_path / "img" / "a_copy.png").write_bytes((tmp_path / "img" / "a.png").read_bytes())
    _truncated_png(tmp_path / "img" / "broken.png")
    (tmp_path / "manifest.csv").write_text(
        "path,label,patient_id\n"
        "img/a.png,normal,P1\n"
        "img/a_copy.png,osteoporosis,P1\n"  # same patient, other label, same bytes
        "img/b.png,normal,P2\n"
        "img/broken.png,normal,P3\n"
        "img/gone.png,,P4\n"
    )
    with pytest.raises(DataError, match="same image with different labels.*--allow-duplicates"):
        discover(tmp_path)  # refused by default (the same bytes labelled both ways)
    report = inspect_dataset(discover(tmp_path, allow_duplicates=True))
    json.dumps(report)  # JSON-ready
    assert [p["kind"] for p in report["problems"]] == ["conflicting_labels"]
    assert (report["n_images"], report["usable"], report["usable_labelled"]) == (5, 3, 3)
    assert report["classes"] == {"normal": 3, "osteoporosis": 1} and report["unlabelled"] == 1
    assert report["n_patients"] == 4 and report["patients_with_multiple_images"] == 1
    assert report["width"] == {"min": 80, "max": 120}
    assert report["height"] == {"min": 64, "max": 100}
    assert report["pixel_spacing_mm"]["min"] == pytest.approx(0.1)
    assert report["n_with_spacing"] == 2
    assert report["duplicates"] == [["img/a.png", "img/a_copy.png"]]
    assert report["mixed_label_patients"] == [
        {"patient_id": "P1", "labels": ["normal", "osteoporosis"]}
    ]
    reasons = {item["path"]: item["reason"] for item in report["unreadable"]}
    assert set(reasons) == {"img/broken.png", "img/gone.png"}
    assert "truncated" in reasons["img/broken.png"] and "not found" in reasons["img/gone.png"]


def test_inspect_without_reading_images(class_folder: Path) -> None:
    (class_folder / "normal" / "text.png").write_text("not an image")
    report = inspect_dataset(discover(class_folder), read_images=False)
    assert report["usable"] == 4 and report["width"] is None and report["unreadable"] == []


# ----------------------------------------------------------------------------- CLI


def _osteopano(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osteopano", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_inspect_lists_bad_files_and_exits_zero(class_folder: Path) -> None:
    _truncated_png(class_folder / "osteoporosis" / "cut.png")
    (class_folder / "normal" / "text.png").write_text("not an image")
    result = _osteopano("inspect", str(class_folder), "--json", "--no-gate")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # nothing but JSON on stdout
    reasons = {item["path"]: item["reason"] for item in report["unreadable"]}
    assert "truncated" in reasons["osteoporosis/cut.png"]
    assert "not an image" in reasons["normal/text.png"]
    assert report["usable_classes"] == {"normal": 2, "osteoporosis": 1}

    console = _osteopano("inspect", str(class_folder), "--no-gate")
    assert console.returncode == 0, console.stderr
    assert "cut.png" in console.stdout and "text.png" in console.stdout
    assert "truncated" in console.stdout and "not an image" in console.stdout


def test_cli_inspect_empty_folder_fails_with_one_line(tmp_path: Path) -> None:
    result = _osteopano("inspect", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}: no images found"]


def test_cli_inspect_nothing_readable_fails(tmp_path: Path) -> None:
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "a.png").write_text("text")
    result = _osteopano("inspect", str(tmp_path), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["usable"] == 0
    assert "no usable labelled images" in result.stderr and "Traceback" not in result.stderr


def test_dataset_json_sidecar_marks_synthetic_data(tmp_path):
    write_png16(tmp_path / "a.png", np.full((8, 8), 1000, np.uint16))
    (tmp_path / "manifest.csv").write_text("path,label\na.png,normal\n")
    assert discover(tmp_path).synthetic is None
    (tmp_path / "dataset.json").write_text('{"synthetic": true, "generator": "osteopano.phantom.generate"}')
    ds = discover(tmp_path / "manifest.csv")
    assert ds.synthetic is True and ds.info["generator"] == "osteopano.phantom.generate"
    (tmp_path / "dataset.json").write_text("not json")
    with pytest.raises(DataError, match="dataset.json"):
        discover(tmp_path)
