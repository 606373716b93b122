"""The submandibular soft tissue's edge beside the bone border: real radiographs vs the SYNTHETIC phantom.

Below the mandible a real panoramic radiograph shows soft tissue (the submandibular region, the tongue's
base, the hyoid) whose lower edge the border tracer may take for the bone's. How strong that edge is,
compared with the border itself, decides how hard the phantom's version of it should be.

Per column of the mandibular body (the central 70 % of the border, the 5 % round the midline left out):
the border step (mean 0.7-2 mm above the border minus 0.7-2 mm below it, image smoothed over 0.4 mm)
and the strongest drop going down 3-20 mm below the border (means over 1.5 mm above and below each
row). Per image the median ratio of the two; printed: p10, p50, p90 and the maximum over images.

Real: ``../shared/real-masks/abdi-dev`` (border = the lowest pixel of expert 1's mandible mask per
column, 0.1 mm/px assumed). Phantom: ``--n`` phantoms (seed ``--seed``), border = the manifest's
``border_px``, the manifest's spacing. Skips the real row, saying why, without ../shared.

    python benchmarks/phantom_vs_real.py [--n 60] [--seed 2026]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import cv2
import numpy as np

from osteopano.phantom import generate as phantom

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "real-masks" / "abdi-dev"


def edge_ratio(img: np.ndarray, border_y: np.ndarray, cols: list[int], mm: float) -> float | None:
    """Median over ``cols`` of (strongest drop 3-20 mm below the border) / (the border's step)."""
    sm = cv2.GaussianBlur(img, (0, 0), max(0.4 / mm, 1.0))
    a, b, w = int(2 / mm), int(0.7 / mm), int(1.5 / mm)
    out = []
    for c in cols:
        y = int(round(border_y[c]))
        if y - a < 0 or y + int(22 / mm) >= img.shape[0]:
            continue
        p = sm[:, c]
        step = p[y - a:y - b].mean() - p[y + b:y + a].mean()
        ys = np.arange(y + int(3 / mm), y + int(20 / mm))
        drop = max(p[t - w:t].mean() - p[t:t + w].mean() for t in ys)
        if step > 0:
            out.append(drop / step)
    return float(np.median(out)) if out else None


LEVEL_WINDOWS_MM = {"bone 6-10 above": (-10, -6), "cortex 0.5-1.5 above": (-1.5, -0.5),
                    "tissue 1-3 below": (1, 3), "tissue 8-12 below": (8, 12)}


def levels(img: np.ndarray, border_y: np.ndarray, cols: list[int], mm: float) -> np.ndarray | None:
    """Median over ``cols`` of the intensity in each of ``LEVEL_WINDOWS_MM`` (mm from the border, + = below),
    as a fraction of the image's 1st-99th percentile range."""
    sm = cv2.GaussianBlur(img, (0, 0), max(0.3 / mm, 1.0))
    lo, hi = np.percentile(img, [1, 99])
    out = []
    for c in cols:
        y = int(round(border_y[c]))
        if y - int(10 / mm) < 0 or y + int(12 / mm) >= img.shape[0]:
            continue
        out.append([(sm[y + int(a / mm):y + int(b / mm), c].mean() - lo) / max(hi - lo, 1e-9)
                    for a, b in LEVEL_WINDOWS_MM.values()])
    return np.median(out, axis=0) if out else None


def _body_cols(x0: float, x1: float, stride: int) -> list[int]:
    wd, mid = x1 - x0, 0.5 * (x0 + x1)
    return [c for c in range(int(x0 + 0.15 * wd), int(x1 - 0.15 * wd), stride) if abs(c - mid) > 0.05 * wd]


def real_ratios() -> tuple[list[float], list[np.ndarray]]:
    out, lv = [], []
    for f in sorted((SHARED / "images").glob("*.png")):
        mask = cv2.imread(str(SHARED / "mandible-expert1" / f.name), cv2.IMREAD_GRAYSCALE)
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if mask is None or img is None:
            continue
        m = mask > 0
        has = m.any(0)
        low = np.where(has, m.shape[0] - 1 - np.argmax(m[::-1], 0), -1).astype(float)
        xs = np.nonzero(has)[0]
        cols = [c for c in _body_cols(xs.min(), xs.max(), 15) if has[c]]
        img = img.astype(np.float32) / 255
        r, v = edge_ratio(img, low, cols, 0.1), levels(img, low, cols, 0.1)
        if r is not None:
            out.append(r)
        if v is not None:
            lv.append(v)
    return out, lv


def phantom_ratios(n: int, seed: int) -> tuple[list[float], list[np.ndarray]]:
    out, lv = [], []
    with tempfile.TemporaryDirectory(prefix="osteopano-pvr-") as tmp:
        root = Path(tmp)
        phantom.generate(root, n, seed, width=1600, progress=False)
        with (root / "manifest.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            img = cv2.imread(str(root / row["path"]), cv2.IMREAD_UNCHANGED).astype(np.float32)
            img = (img - img.min()) / max(float(np.ptp(img)), 1e-9)
            b = phantom.decode_polyline(row["border_px"])
            ey = np.interp(np.arange(img.shape[1]), b[:, 0], b[:, 1])
            cols, mm = _body_cols(b[:, 0].min(), b[:, 0].max(), 8), float(row["pixel_spacing_mm"])
            r, v = edge_ratio(img, ey, cols, mm), levels(img, ey, cols, mm)
            if r is not None:
                out.append(r)
            if v is not None:
                lv.append(v)
    return out, lv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rows = [("real abdi-dev", real_ratios() if SHARED.is_dir() else None),
            (f"SYNTHETIC phantom (seed {args.seed})", phantom_ratios(args.n, args.seed))]
    print("submandibular edge / border step, per image (median over the body's columns)")
    print(f"{'images':28s} {'n':>4s} {'p10':>6s} {'p50':>6s} {'p90':>6s} {'max':>6s}")
    for name, v in rows:
        if v is None:
            print(f"{name:28s} skipped: {SHARED} is not there")
            continue
        p = np.percentile(v[0], [10, 50, 90, 100])
        print(f"{name:28s} {len(v[0]):4d} " + " ".join(f"{x:6.2f}" for x in p))
    print("\nintensity around the border, fraction of the image's p1-p99 range (median over images)")
    print(f"{'images':28s} " + " ".join(f"{k:>21s}" for k in LEVEL_WINDOWS_MM))
    for name, v in rows:
        if v is not None and v[1]:
            print(f"{name:28s} " + " ".join(f"{x:21.3f}" for x in np.median(np.array(v[1]), axis=0)))


if __name__ == "__main__":
    main()
