"""Accuracy of the facial midline (the symmetry axis, ``osteopano.cortex.trace.find_midline``) that
places the measurement sites, on SYNTHETIC phantoms and on REAL radiographs with expert outlines.

* Phantom (``--n`` images, seed 2026, width 1600, as ``measure_accuracy.py``; ``--keep DIR``
  ``--reuse`` as there): the axis's x at the manifest's ``midline_y`` against ``midline_x`` (the
  anatomy's x = 0), in mm; for all images, framed ones (distractor ``collimation_frame``) and
  unframed ones. SYNTHETIC, not clinical evidence.
* Real (``../shared/real-masks/abdi-dev/``, skipped with a reason when absent): the axis's x at the
  lowest row of expert 1's mask against the middle of the mask's widest extent (condyle to
  condyle), at ``--pixel-spacing`` (0.1) mm/px. The mask's middle is itself only a proxy for the
  midline (an asymmetric mandible or a rotated head moves it), so small differences mean little.

Printed per group: images, median and p90 |error| mm, images more than 5 mm off, and the median
mirror score.

    python benchmarks/midline_accuracy.py [--n 200] [--keep DIR --reuse] [--pixel-spacing 0.1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import phantom_set
from border_real import ROOT as REAL
from border_real import largest_component

from osteopano.cortex import border as cb
from osteopano.cortex import trace as ct
from osteopano.io.images import read_image


def axis_x(pixels: np.ndarray, y: float) -> tuple[float, float]:
    """(x of the symmetry axis at row y, its mirror score) of an image (values 0..1)."""
    linear, _ = ct.normalise_both(np.asarray(pixels, dtype=np.float32))
    mid = ct.find_midline(linear, cb.anatomy_scale(linear.shape))
    return mid.x_at(y), mid.score


def _line(name: str, err: list[float], scores: list[float]) -> None:
    if not err:
        print(f"  {name:28s} no images")
        return
    e = np.abs(np.array(err))
    print(f"  {name:28s} {e.size:4d} images  median {np.median(e):5.2f} mm  p90 {np.percentile(e, 90):5.2f} mm  "
          f"> 5 mm {int((e > 5).sum()):3d}  median score {np.median(scores):.2f}")


def phantom_figures(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp:
        root, rows = phantom_set.prepare(args, Path(tmp))
        if "midline_x" not in rows[0]:
            raise SystemExit(f"{root}: no midline_x column (generated before it existed): drop --reuse")
        groups: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ("all", "framed", "unframed")}
        for row in rows:
            x, score = axis_x(read_image(root / row["path"]).pixels, float(row["midline_y"]))
            e = (x - float(row["midline_x"])) * float(row["pixel_spacing_mm"])
            framed = "collimation_frame" in row["distractors"]
            for k in ("all", "framed" if framed else "unframed"):
                groups[k][0].append(e)
                groups[k][1].append(score)
    print(f"SYNTHETIC phantoms ({args.n}, seed {args.seed}, width {args.width}): axis vs the anatomy's midline")
    for k, (err, scores) in groups.items():
        _line(k, err, scores)


def real_figures(args: argparse.Namespace) -> None:
    import cv2

    if not (REAL / "images").is_dir():
        print(f"real: skipped, {REAL} is absent (real images with expert masks are needed)")
        return
    err, scores = [], []
    for f in sorted((REAL / "images").glob("*.png")):
        mask = cv2.imread(str(REAL / "mandible-expert1" / f.name), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            continue
        if not mask.any():
            continue
        big = largest_component(mask)
        cols, rows = np.nonzero(big.any(axis=0))[0], np.nonzero(big.any(axis=1))[0]
        x, score = axis_x(read_image(f).pixels, float(rows[-1]))
        err.append((x - 0.5 * (cols[0] + cols[-1])) * args.pixel_spacing)
        scores.append(score)
    print(f"REAL abdi-dev: axis vs the middle of expert 1's mask, at {args.pixel_spacing} mm/px")
    _line("all", err, scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phantom_set.add_arguments(ap)
    ap.add_argument("--pixel-spacing", type=float, default=0.1)
    args = ap.parse_args()
    phantom_figures(args)
    real_figures(args)


if __name__ == "__main__":
    main()
