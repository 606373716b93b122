"""Ray Data screening (osteopano.screen.ray_data) on a local 2-CPU Ray started here: same rows as `predict`."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray Data is optional (pip install 'osteopano[scale]')")

from screen_support import exported_onnx, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(run, screen_base, tmp_path_factory) -> Path:
    """Six phantoms in a tree plus one broken file."""
    folder = tmp_path_factory.mktemp("ray-images")
    (folder / "sub").mkdir()
    for i, src in enumerate(sorted((screen_base / "phantoms").glob("*.png"))[:6]):
        shutil.copy(src, folder / ("sub" if i % 2 else ".") / src.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def single(images, screen_base, tmp_path_factory) -> list[dict[str, str]]:
    """The rows of the single-machine `osteopano predict`."""
    out = tmp_path_factory.mktemp("single") / "rows.csv"
    mp = pytest.MonkeyPatch()
    try:
        import sys

        from osteopano import cli

        mp.setattr(sys, "argv", ["osteopano", "predict", str(exported_onnx(screen_base)), str(images),
                                 "--out", str(out)])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert not exit_info.value.code
    finally:
        mp.undo()
    return read_rows(out)


def test_rows_equal_single_machine_predict(local_ray, single, images, screen_base, tmp_path):
    from osteopano.screen.ray_data import predict_ray

    out = tmp_path / "ray.csv"
    counts = predict_ray(exported_onnx(screen_base), [images], out, batch_size=2)
    rows = read_rows(out)
    assert rows == single
    assert counts == {"screened": 6, "errors": 1, "skipped": 0}
    from osteopano.screen.result import BASE_COLUMNS

    assert list(rows[0]) == list(BASE_COLUMNS)
    assert "broken.png" in next(r["error"] for r in rows if r["path"].endswith("broken.png"))


def test_resume_screens_only_the_missing_rows(local_ray, single, images, screen_base, tmp_path):
    from osteopano.screen.ray_data import predict_ray

    out = tmp_path / "ray.csv"
    with out.open("w", newline="") as fh:  # an interrupted run: header, three rows and a torn line
        writer = csv.DictWriter(fh, fieldnames=list(single[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(single[:3])
        fh.write(single[3]["path"][:10])
    counts = predict_ray(exported_onnx(screen_base), [images], out, resume=True, batch_size=3)
    kept = [r for r in single[:3] if not r["error"]]  # rows with an error are screened again, as in predict
    assert counts["skipped"] == len(kept) and counts["screened"] + counts["errors"] == len(single) - len(kept)
    rows = read_rows(out)
    assert rows[: len(kept)] == kept
    assert sorted(rows, key=lambda r: r["path"]) == sorted(single, key=lambda r: r["path"])


def test_cli_option(local_ray, monkeypatch, capsys, single, images, screen_base, tmp_path):
    out = tmp_path / "cli.csv"
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(exported_onnx(screen_base)), str(images),
                           "--out", str(out), "--ray", "local")
    assert code == 0, err
    assert read_rows(out) == single
    assert "screened on Ray" in err
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(exported_onnx(screen_base)), str(images),
                           "--ray", "local")
    assert code == 2 and "--out" in err and "Traceback" not in err
