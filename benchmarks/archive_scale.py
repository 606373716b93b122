"""Flat memory on a large archive: ``osteopano predict`` on 1,000 then 10,000 images, time and peak RSS.

    python benchmarks/archive_scale.py [--model MODEL.onnx | --run RUN] [--sizes 1000,10000]
                                       [--width 800] [--unique 1000] [--cache ~/.cache/osteopano-bench]

The archive is SYNTHETIC: ``--unique`` phantoms ``--width`` px wide are generated once (about
0.05-0.2 s per image per core) into ``--cache``, outside the repository, and reused by later runs;
the larger archives are made of hard links to them (``archive-N/`` folders, also cached), so every
file is decoded and screened like any other. Each size runs ``osteopano predict MODEL DIR --out
rows.csv --engine onnx`` in a fresh process; its peak resident set comes from the kernel
(``wait4``'s ru_maxrss). Prints seconds, images/s, ms/image and peak RSS per size, then the RSS
growth from the smallest to the largest archive (target < 50 MB) and the time ratio against the
image ratio (linear: about equal).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from speed_common import timed_predict

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _archive(cache: Path, n: int, unique: int, width: int) -> Path:
    """``cache/archive-N-wW`` holding N phantom PNGs: the first ``unique`` generated, the rest hard links."""
    base = cache / f"phantoms-{unique}-w{width}"
    if not (base / ".complete").exists():
        from osteopano.phantom.generate import generate

        print(f"generating {unique} phantoms {width} px wide into {base} (once)...", flush=True)
        generate(base, unique, 7, width=width, progress=True)
        (base / ".complete").touch()
    sources = sorted(base.glob("*.png"))
    folder = cache / f"archive-{n}-from{unique}-w{width}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            target = folder / f"img_{i:07d}.png"
            if not target.exists():
                os.link(sources[i % len(sources)], target)
        (folder / ".complete").touch()
    return folder


def _screen(model: Path, folder: Path, out: Path, batch_size: int) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one ``osteopano predict`` process."""
    seconds, _, rss_mb = timed_predict(model, folder, out, batch_size)
    return seconds, rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="An .onnx file (default: export --run, or train a throwaway).")
    parser.add_argument("--run", type=Path, help="A trained run folder to export.")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--unique", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "osteopano-bench")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="osteopano-archive-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if model is None:
            from osteopano.model.onnx import export_onnx

            if args.run is None:
                from predict_speed import _train

                args.run = _train(tmp)
            model = export_onnx(args.run, tmp / "model.onnx")["path"]
        results = []
        for n in sizes:
            folder = _archive(args.cache, n, min(args.unique, n), args.width)
            seconds, rss = _screen(model, folder, tmp / f"rows-{n}.csv", args.batch_size)
            rows = sum(1 for _ in (tmp / f"rows-{n}.csv").open()) - 1
            results.append((n, seconds, rss, rows))
            print(f"{n:>7} images: {seconds:8.1f} s  {n / seconds:6.1f} images/s  {1000 * seconds / n:6.1f} ms/image"
                  f"  peak RSS {rss:6.0f} MB  ({rows} rows)", flush=True)
    (n0, s0, r0, _), (n1, s1, r1, _) = results[0], results[-1]
    load = os.getloadavg()
    print(f"SYNTHETIC archive, {args.width} px phantoms; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    print(f"RSS growth {n0} -> {n1} images: {r1 - r0:+.0f} MB (target < 50 MB); "
          f"time ratio {s1 / s0:.2f} for {n1 / n0:.0f}x the images (linear: ~{n1 / n0:.0f})")


if __name__ == "__main__":
    main()
