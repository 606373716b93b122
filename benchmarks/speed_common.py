"""Shared by the speed benchmarks (predict_speed, measure_speed, archive_scale): which images they time
and how one ``osteopano predict`` child process is timed. Not a benchmark itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "real-samples"
DEFAULT_DIRS = (SHARED / "native", SHARED / "dc1000-more")  # real 2943 x 1435 PNGs, when present
SUFFIXES = {".png", ".jpg", ".jpeg"}


def bench_images(dirs: list[Path] | None, n: int, tmp: Path, *, default_n: int,
                 width: int) -> tuple[list[Path], str]:
    """Up to ``n`` images (0 = all) from ``dirs`` (default the real samples); without any, ``n or default_n``
    SYNTHETIC phantoms ``width`` px wide generated into ``tmp``. Returns the paths and a description."""
    dirs = dirs or [d for d in DEFAULT_DIRS if d.is_dir()]
    paths = sorted(p for d in dirs for p in Path(d).rglob("*") if p.suffix.lower() in SUFFIXES)
    if paths:
        paths = paths[:n] if n else paths
        return paths, f"{len(paths)} images from {', '.join(str(d) for d in dirs)}"
    from osteopano.phantom.generate import generate

    generate(tmp / "phantoms", n or default_n, 1, width=width, progress=False)
    paths = sorted((tmp / "phantoms").glob("*.png"))
    return paths, f"{len(paths)} SYNTHETIC phantoms {width} px wide"


def timed_predict(model: Path, folder: Path, out: Path, batch_size: int) -> tuple[float, float, float]:
    """``osteopano predict MODEL FOLDER --engine onnx`` in a child process: (wall seconds, CPU seconds,
    peak RSS in MB); exits with its stderr's tail when it fails."""
    cmd = [sys.executable, "-m", "osteopano", "predict", str(model), str(folder), "--engine", "onnx",
           "--out", str(out), "--batch-size", str(batch_size)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"osteopano predict failed on {folder}:\n{err[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
