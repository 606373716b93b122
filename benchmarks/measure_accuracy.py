"""Accuracy and speed of the automatic MCW measurement on SYNTHETIC phantom images.

Generates ``--n`` phantom radiographs (fixed seed) into a temporary folder, measures each with
``osteopano.cortex.measure.measure`` (pixel spacing from the manifest) and prints, per side, the median
and 95th-percentile absolute MCW error against the phantom's truth, the fraction located, the
distance of the measurement site from the true site, the Klemetti agreement and images/s.

Acceptance (synthetic data only, not clinical evidence): median abs error <= 0.2 mm,
95th percentile <= 0.5 mm, 100 % located.

    python benchmarks/measure_accuracy.py [--n 200] [--seed 2026] [--width 1600]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from osteopano.phantom import generate as phantom
from osteopano.cortex.measure import measure
from osteopano.io.images import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        phantom.generate(root, args.n, args.seed, width=args.width, progress=False)
        console.print(f"generated {args.n} synthetic images (width {args.width}, seed {args.seed}) "
                      f"in {time.perf_counter() - t0:.1f} s")
        with (root / "manifest.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        err: dict[str, list[float]] = {"right": [], "left": []}
        site: dict[str, list[float]] = {"right": [], "left": []}
        located = Counter()
        methods = Counter()
        quality = Counter()
        klemetti = Counter()
        elapsed = 0.0
        for row in rows:
            image = read_image(root / row["path"])
            spacing = float(row["pixel_spacing_mm"])
            t = time.perf_counter()
            m = measure(image, pixel_spacing_mm=spacing)
            elapsed += time.perf_counter() - t
            quality[m.quality] += 1
            klemetti[(row["klemetti"], m.klemetti_estimate)] += 1
            for s in m.sides():
                if not s.located:
                    continue
                located[s.side] += 1
                methods[s.site_method] += 1
                err[s.side].append(abs(s.mcw_mm - float(row[f"mcw_{s.side}_mm"])))
                true_xy = np.array([float(row[f"site_{s.side}_x"]), float(row[f"site_{s.side}_y"])])
                site[s.side].append(float(np.hypot(*(np.array(s.site_xy) - true_xy))) * spacing)

    n = len(rows)
    table = Table(title=f"MCW accuracy on {n} SYNTHETIC phantom images (seed {args.seed}, width {args.width})")
    for col in ("side", "located", "median |err| mm", "p95 |err| mm", "max |err| mm", "median site dist mm"):
        table.add_column(col, justify="right")
    for side in ("right", "left"):
        e = np.array(err[side]) if err[side] else np.array([np.nan])
        table.add_row(side, f"{located[side]}/{n}", f"{np.median(e):.3f}", f"{np.percentile(e, 95):.3f}",
                      f"{np.max(e):.3f}", f"{np.median(site[side]) if site[side] else float('nan'):.2f}")
    both = np.array(err["right"] + err["left"])
    table.add_row("both", f"{(located['right'] + located['left']) / (2 * n):.1%}", f"{np.median(both):.3f}",
                  f"{np.percentile(both, 95):.3f}", f"{np.max(both):.3f}", "")
    console.print(table)
    console.print(f"speed: {n / elapsed:.2f} images/s (measure only, 1 process)   "
                  f"quality: {dict(quality)}   site method: {dict(methods)}")
    classes = ("C1", "C2", "C3")
    kt = Table(title="Klemetti: truth (rows) vs estimate (columns)")
    kt.add_column("truth")
    for c in classes:
        kt.add_column(c, justify="right")
    for tr in classes:
        kt.add_row(tr, *(str(klemetti[(tr, es)]) for es in classes))
    console.print(kt)
    agree = sum(klemetti[(c, c)] for c in classes) / max(1, n)
    ok = np.median(both) <= 0.2 and np.percentile(both, 95) <= 0.5 and located["right"] + located["left"] == 2 * n
    console.print(f"Klemetti agreement {agree:.1%}.  Acceptance (median <= 0.2, p95 <= 0.5 mm, 100% located): "
                  + ("[green]PASS[/green]" if ok else "[red]FAIL[/red]"))


if __name__ == "__main__":
    main()
