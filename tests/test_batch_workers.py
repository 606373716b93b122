"""Parallel staging in batches (osteopano.screen.batch / prefetch): `osteopano measure` in processes writes
the same rows, in input order, as one worker - CSV and JSONL, error rows included, with --resume; a
measuring predict (ONNX engine) stages in processes with the same rows too."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from bad_inputs import phantom_u8
from PIL import Image
from screen_support import exported_onnx
from typer.testing import CliRunner

from osteopano.cli import app
from osteopano.screen import batch as batch_module
from osteopano.screen import prefetch as prefetch_module
from osteopano.screen.batch import (
    MIN_IMAGES_PER_PROCESS,
    Outputs,
    plan_batch,
    run_batch,
)
from osteopano.screen.screener import Screener, load

N_GOOD = 2 * MIN_IMAGES_PER_PROCESS  # enough for two staging processes


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """N_GOOD phantoms (1000 px wide) in two folders, an unreadable file and a non-radiograph among them."""
    root = tmp_path_factory.mktemp("workers")
    for i in range(N_GOOD):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(phantom_u8(20 + i, width=1000)).save(sub / f"{i:02d}.png")
    (root / "a" / "05-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    Image.new("L", (600, 300), 128).save(root / "b" / "03-grey.png")
    return root


@pytest.fixture
def pools(monkeypatch) -> list[int]:
    """Records the worker count of every staging process pool started."""
    started: list[int] = []
    original = prefetch_module.stage_pool

    def recording(stage, workers):
        started.append(workers)
        return original(stage, workers)

    monkeypatch.setattr(prefetch_module, "stage_pool", recording)
    return started


def _measure(folder: Path, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["measure", str(folder), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out.read_text()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_measure_in_processes_writes_the_rows_of_one_worker(folder, tmp_path, pools, suffix):
    one = _measure(folder, tmp_path / f"one{suffix}", "--workers", "1")
    assert pools == []
    two = _measure(folder, tmp_path / f"two{suffix}", "--workers", "2")
    assert pools == [2]  # it did stage in processes
    assert two == one
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(two)))
        assert len(rows) == N_GOOD + 2 and [r["path"] for r in rows] == sorted(r["path"] for r in rows)
        errors = {Path(r["path"]).name for r in rows if r["error"]}
        assert errors == {"05-broken.png", "03-grey.png"}
        assert sum(bool(r["mcw_px"]) for r in rows) >= N_GOOD // 2  # widths, not only errors, compared


def test_resume_in_processes_completes_the_same_rows(folder, tmp_path, pools):
    full = _measure(folder, tmp_path / "full.csv", "--workers", "1")
    lines = full.splitlines(keepends=True)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(lines[:4]))  # header + 3 rows, as if interrupted
    resumed = _measure(folder, partial, "--workers", "2", "--resume")
    assert pools == [2]
    assert sorted(resumed.splitlines()) == sorted(full.splitlines())


def test_few_images_stay_on_threads(folder, tmp_path, pools):
    _measure(folder / "a" / "01.png", tmp_path / "one.csv", "--workers", "2")
    assert pools == []


def test_a_measuring_onnx_predict_stages_in_processes(folder, screen_base, run, tmp_path, pools):
    model = load(exported_onnx(screen_base), measure=True)
    paths = sorted(p for p in folder.rglob("*.png"))

    def rows(workers: int, out: Path) -> str:
        outputs = Outputs(out=out)
        for _ in run_batch(model, paths, plan_batch(paths, outputs, False), outputs, batch_size=3,
                           workers=workers):
            pass
        return out.read_text()

    one = rows(1, tmp_path / "one.csv")
    assert rows(2, tmp_path / "two.csv") == one and pools == [2]
    scored = [r for r in csv.DictReader(io.StringIO(one)) if r["probability"]]
    assert len(scored) >= N_GOOD - 1


def test_images_are_sent_back_only_when_drawn_on(folder, tmp_path):
    screener = Screener(None, measure=True)
    paths = sorted(folder.rglob("*.png"))
    seen = []
    original = batch_module._finish

    def spy(screener, result, image, outputs, names):
        seen.append((image is not None, result.gate == "passed"))
        return original(screener, result, image, outputs, names)

    mp = pytest.MonkeyPatch()
    mp.setattr(batch_module, "_finish", spy)
    try:
        for outputs in (Outputs(out=tmp_path / "rows.csv"), Outputs(overlays=tmp_path / "ov")):
            seen.clear()
            for _ in run_batch(screener, paths, plan_batch(paths, outputs, False), outputs, workers=2):
                pass
            passed = [drawn for drawn, gate_passed in seen if gate_passed]
            assert len(passed) == N_GOOD and all(passed) == bool(outputs.overlays) and any(passed) == all(passed)
        assert len(list((tmp_path / "ov").iterdir())) >= N_GOOD - 1
    finally:
        mp.undo()
