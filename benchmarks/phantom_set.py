"""The SYNTHETIC phantom set the cortex benchmarks share (``measure_accuracy.py``,
``midline_accuracy.py``): ``--n`` images of seed ``--seed`` and width ``--width``, generated into a
temporary folder, or into ``--keep DIR`` and, with ``--reuse``, taken from there when its manifest
already holds ``--n`` images."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from osteopano.phantom import generate as phantom


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    ap.add_argument("--reuse", action="store_true", help="with --keep: measure the images already there if its "
                    "manifest holds --n images (no regeneration)")


def prepare(args: argparse.Namespace, tmp: Path, say=print) -> tuple[Path, list[dict[str, str]]]:
    """(folder, manifest rows) of the set, generated unless ``--reuse`` finds it."""
    root = args.keep or tmp / "data"
    manifest = root / "manifest.csv"
    t0 = time.perf_counter()
    if args.reuse and args.keep and manifest.exists() and len(manifest.read_text().splitlines()) == args.n + 1:
        say(f"reusing the {args.n} images in {root} (generated earlier; seed and width as then)")
    else:
        phantom.generate(root, args.n, args.seed, width=args.width, progress=False)
        say(f"generated {args.n} synthetic images (width {args.width}, seed {args.seed}) "
            f"in {time.perf_counter() - t0:.1f} s")
    with manifest.open(newline="") as fh:
        return root, list(csv.DictReader(fh))
