"""Consistency of ``osteopano.cortex.measure`` on REAL radiographs under harmless changes (no truth needed).

Data: every image under ``../shared/real-samples/`` (skips with a reason when absent). Each image is
measured as it is (``--pixel-spacing``, default 0.1 mm/px; images narrower than 1000 px, such as the
512 x 512 ufba set, at ``--small-spacing`` = 0.5 mm/px) and after each change (issue #12 item 6):

* ``flip``: mirror image (the sides swap: the patient's right is compared with the flipped left);
* ``half``: 0.5x downscale (area), spacing doubled;
* ``gamma0.7`` / ``gamma1.4``: intensity ** gamma;
* ``jpeg70``: JPEG quality 70 round trip.

Per change: the median and 90th percentile of |MCW change| in mm over the sides located in both
measurements, and the share of sides whose ``located`` flips (located in one, not the other).

    python benchmarks/measure_consistency.py [--pixel-spacing 0.1] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from osteopano.cortex.measure import measure
from osteopano.io.images import IMAGE_SUFFIXES, from_array, read_image

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "real-samples"


def variants(pixels: np.ndarray, spacing: float) -> dict[str, tuple[np.ndarray, float, bool]]:
    """name -> (pixels, spacing, sides swapped)."""
    h, w = pixels.shape
    u8 = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    _, enc = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, 70])
    jpeg = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    half = cv2.resize(pixels, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return {
        "flip": (np.ascontiguousarray(pixels[:, ::-1]), spacing, True),
        "half": (half, spacing * w / (w // 2), False),
        "gamma0.7": (np.power(pixels, 0.7).astype(np.float32), spacing, False),
        "gamma1.4": (np.power(pixels, 1.4).astype(np.float32), spacing, False),
        "jpeg70": (jpeg, spacing, False),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixel-spacing", type=float, default=0.1)
    ap.add_argument("--small-spacing", type=float, default=0.5, help="spacing assumed for images < 1000 px wide")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    if not ROOT.is_dir():
        print(f"skipped: {ROOT} is absent (real sample radiographs are needed)")
        return 0
    files = sorted(p for p in ROOT.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    changes: dict[str, list[float]] = {}
    flips: dict[str, list[bool]] = {}
    t0 = time.perf_counter()
    n_base_located = 0
    for f in files:
        image = read_image(f)
        spacing = args.pixel_spacing if image.pixels.shape[1] >= 1000 else args.small_spacing
        base = measure(image, pixel_spacing_mm=spacing)
        n_base_located += sum(s.located for s in base.sides())
        for name, (px, sp, swapped) in variants(image.pixels, spacing).items():
            m = measure(from_array(px), pixel_spacing_mm=sp)
            pairs = [(base.right, m.left if swapped else m.right), (base.left, m.right if swapped else m.left)]
            for a, b in pairs:
                flips.setdefault(name, []).append(a.located != b.located)
                if a.located and b.located:
                    changes.setdefault(name, []).append(abs(a.mcw_mm - b.mcw_mm))
    elapsed = time.perf_counter() - t0
    print(f"real-samples (REAL, no truth), {len(files)} images, {n_base_located}/{2 * len(files)} sides located "
          f"as they are; --pixel-spacing {args.pixel_spacing} (images < 1000 px wide: {args.small_spacing})")
    print(f"{'change':10s} {'median |dMCW| mm':>17s} {'p90 |dMCW| mm':>14s} {'located flips':>14s} {'pairs':>6s}")
    for name in ("flip", "half", "gamma0.7", "gamma1.4", "jpeg70"):
        c = np.array(changes.get(name, [np.nan]))
        fl = flips.get(name, [])
        print(f"{name:10s} {np.median(c):17.3f} {np.percentile(c, 90):14.3f} "
              f"{sum(fl):6d}/{len(fl):<3d} ({np.mean(fl):.1%}) {len(changes.get(name, [])):6d}")
    print(f"time: {elapsed:.0f} s for {len(files) * 6} measurements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
