"""Inferior-border localisation of ``osteopano.cortex.measure`` on REAL radiographs with expert masks.

Data: ``../shared/real-masks/abdi-dev/`` (real panoramic radiographs, mandible outlined by experts;
non-commercial: validation only). Skips with a reason when the folder is absent.

Metric (fixed, so figures compare across versions; issue #12 item 6):

* Reference edge per image column = the lowest pixel of the largest connected component of the
  expert's mask.
* Mandibular body = from the lowest point of the central half of that edge (the central half of
  the columns the edge spans), walking outwards on each side until the edge, smoothed with a
  Gaussian of sigma 15 px, rises steeper than 45 degrees (|dy/dx| > 1), and never the outer 3 % of
  the mask's width.
* Per side: the median vertical distance between the traced border (``side.border``, interpolated
  per column) and the reference over the body columns of that side it covers.
* Per image: the median distance over the body columns both located sides cover.
* A site is "off" when its vertical distance to the reference edge at its column exceeds 2 mm.

Printed: images with both sides located; images with both sides located and each side's median
distance <= 2 mm; per-image median distance (median, p95) in mm; the per-side signed median
(traced minus reference: a bias of the periosteal edge inwards or outwards); ``ok`` images with a side or site
> 2 mm off; sites > 2 mm off the border; failed sides that carry a width; images/s (decode included).

    python benchmarks/border_real.py [--pixel-spacing 0.1] [--expert 1] [--overlays DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from osteopano.cortex.measure import draw_overlay, measure
from osteopano.io.images import read_image

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "real-masks" / "abdi-dev"
OFF_MM = 2.0
SMOOTH_PX = 15.0
EDGE_MARGIN = 0.03


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of an expert's mask (the mandible), as a boolean image."""
    lab, n = ndimage.label(mask > 0)
    if n == 0:
        raise ValueError("empty mask")
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def reference_edge(mask: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """(edge y per column, nan where none; body first column; body last column; lowest column)."""
    comp = largest_component(mask)
    h, w = comp.shape
    has = comp.any(axis=0)
    lowest = h - 1 - np.argmax(comp[::-1], axis=0)
    edge = np.where(has, lowest, np.nan).astype(float)
    cols = np.nonzero(has)[0]
    c0, c1 = int(cols[0]), int(cols[-1])
    span = c1 - c0 + 1
    q0, q1 = c0 + span // 4, c1 - span // 4
    centre = q0 + int(np.nanargmax(edge[q0:q1 + 1]))
    filled = np.interp(np.arange(w), cols, edge[cols])
    smooth = ndimage.gaussian_filter1d(filled, SMOOTH_PX)
    slope = np.gradient(smooth)
    lim0, lim1 = c0 + int(np.ceil(EDGE_MARGIN * span)), c1 - int(np.ceil(EDGE_MARGIN * span))
    a = centre
    while a - 1 >= lim0 and slope[a - 1] <= 1.0:  # walking left, the edge rises where dy/dx > 1
        a -= 1
    b = centre
    while b + 1 <= lim1 and slope[b + 1] >= -1.0:
        b += 1
    return edge, a, b, centre


def side_distance(border: np.ndarray, edge: np.ndarray, cols: np.ndarray, signed: bool = False) -> np.ndarray:
    """Vertical distances (px) between the polyline and the reference on the columns it covers
    (``signed``: traced minus reference, + = the trace lies below the mask's edge, outside the bone)."""
    if len(border) < 2:
        return np.zeros(0)
    order = np.argsort(border[:, 0])
    bx, by = border[order, 0], border[order, 1]
    cols = cols[(cols >= bx[0]) & (cols <= bx[-1]) & np.isfinite(edge[cols])]
    d = np.interp(cols, bx, by) - edge[cols]
    return d if signed else np.abs(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixel-spacing", type=float, default=0.1)
    ap.add_argument("--expert", choices=("1", "2"), default="1")
    ap.add_argument("--overlays", type=Path, default=None, help="write downscaled overlays here")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--verbose", action="store_true", help="one line per image")
    args = ap.parse_args()
    if not (ROOT / "images").is_dir():
        print(f"skipped: {ROOT} is absent (real images with expert masks are needed)")
        return 0
    import cv2

    sp = args.pixel_spacing
    files = sorted((ROOT / "images").glob("*.png"))[: args.limit]
    both_located = both_close = ok_images = ok_off = sites = sites_off = failed_with_width = 0
    per_image: list[float] = []
    signed: list[float] = []  # per located side: median of traced - reference (mm)
    quality = Counter()
    methods = Counter()
    elapsed = cpu = 0.0
    for f in files:
        mask = cv2.imread(str(ROOT / f"mandible-expert{args.expert}" / f.name), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            print(f"{f.name}: no mask, skipped")
            continue
        t, c = time.perf_counter(), time.process_time()
        image = read_image(f)
        m = measure(image, pixel_spacing_mm=sp)
        elapsed += time.perf_counter() - t
        cpu += time.process_time() - c
        edge, a, b, centre = reference_edge(mask)
        quality[m.quality] += 1
        med: dict[str, float] = {}
        dists = []
        off = False
        for s in m.sides():
            if (not s.located or getattr(s, "quality", None) == "failed") and (
                    s.mcw_mm is not None or s.mcw_px is not None):
                failed_with_width += 1
            if not s.located:
                continue
            methods[s.site_method] += 1
            # Patient's right = image left = columns left of the lowest point.
            cols = np.arange(a, centre + 1) if s.side == "right" else np.arange(centre, b + 1)
            d = side_distance(s.border, edge, cols)
            ds = side_distance(s.border, edge, cols, signed=True)
            if ds.size:
                signed.append(float(np.median(ds)) * sp)
            med[s.side] = float(np.median(d)) * sp if d.size else float("inf")
            dists.append(d)
            if med[s.side] > OFF_MM:
                off = True
            if s.site_xy is not None:
                sites += 1
                x = round(s.site_xy[0])
                ref = edge[min(max(x, 0), edge.size - 1)]
                if not np.isfinite(ref) or abs(s.site_xy[1] - ref) * sp > OFF_MM:
                    sites_off += 1
                    off = True
        located = len(med) == 2
        both_located += located
        close = located and all(v <= OFF_MM for v in med.values())
        both_close += close
        if dists and sum(d.size for d in dists):
            per_image.append(float(np.median(np.concatenate(dists))) * sp)
        if m.quality == "ok":
            ok_images += 1
            ok_off += off
        if args.verbose:
            print(f"{f.name}: q={m.quality:6s} conf={m.confidence:.2f} "
                  + " ".join(f"{k}={v:.2f}mm" for k, v in med.items())
                  + (f" mcw={m.mcw_mm:.2f}" if m.mcw_mm else " mcw=-")
                  + " site=" + ",".join(f"{s.site_distance_mm:.0f}" for s in m.sides() if s.site_distance_mm)
                  + f" body={(centre - a) * sp:.0f},{(b - centre) * sp:.0f}" + (" OFF" if off else "") + f"  {'; '.join(m.notes)}")
        if args.overlays is not None:
            args.overlays.mkdir(parents=True, exist_ok=True)
            vis = draw_overlay(image, m)
            for x in range(a, b + 1, 4):
                if np.isfinite(edge[x]):
                    cv2.circle(vis, (x, int(edge[x])), 2, (255, 0, 255), -1)
            vis = cv2.resize(vis, (vis.shape[1] // 3, vis.shape[0] // 3), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(args.overlays / f.name), vis)
    n = sum(quality.values())
    pi = np.array(per_image) if per_image else np.array([np.nan])
    print(f"abdi-dev (REAL, expert {args.expert}), {n} images, --pixel-spacing {sp}")
    print(f"  both sides located:                       {both_located}/{n} ({both_located / n:.1%})")
    print(f"  both located and each side <= 2 mm:       {both_close}/{n} ({both_close / n:.1%})")
    print(f"  per-image median distance: median {np.median(pi):.3f} mm, p95 {np.percentile(pi, 95):.3f} mm"
          f" ({len(per_image)} images with a located side)")
    sg = np.array(signed) if signed else np.array([np.nan])
    print(f"  per-side signed median (traced - mask edge, + = outside the bone): median {np.median(sg):+.3f} mm,"
          f" p10 {np.percentile(sg, 10):+.3f}, p90 {np.percentile(sg, 90):+.3f} ({len(signed)} sides)")
    print(f"  quality: {dict(quality)}; ok on {ok_images / n:.1%}")
    print(f"  ok images with a side or site > 2 mm off: {ok_off}/{ok_images}"
          f" ({ok_off / max(ok_images, 1):.1%})")
    print(f"  sites > 2 mm off the border:              {sites_off}/{sites}")
    print(f"  failed/unlocated sides carrying a width:  {failed_with_width}")
    print(f"  site methods: {dict(methods)}")
    print(f"  speed: {n / elapsed:.2f} images/s wall, {n / cpu:.2f} images/s per CPU core "
          "(decode + measure, 1 process; wall time depends on the machine's load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
