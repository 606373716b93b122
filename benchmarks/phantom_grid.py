"""Side-by-side grid: 8 SYNTHETIC phantoms beside 8 real panoramic radiographs.

The real images are drawn at run time from ``../shared/real-samples`` (beside the checkout; never
copied into the repository) and the picture is written outside the repository by default, so
nothing from ``../shared`` is ever committed. Left column pair: phantoms; right: real images.

    python benchmarks/phantom_grid.py [--out /tmp/osteopano-phantom-grid.png] [--seed 2026] [--tile 640]

``--example docs/img/phantom-example.png`` instead writes the committed example of the docs: the
SYNTHETIC phantom of ``--seed`` alone (rendered at width 1600, downscaled to 800 px, 8-bit), no real
image in it.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import cv2
import numpy as np

from osteopano.io.images import read_image
from osteopano.phantom.generate import render

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "real-samples"


def _tile(pixels: np.ndarray, width: int, caption: str) -> np.ndarray:
    img = np.clip(pixels.astype(np.float32), 0, 1)
    h = int(round(width * 0.4875))
    t = (cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    t = cv2.cvtColor(t, cv2.COLOR_GRAY2BGR)
    scale = 0.4 * width / 480
    (tw, th), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(t, (0, 0), (tw + 10, th + 10), (0, 0, 0), -1)
    cv2.putText(t, caption, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (80, 220, 255), 1, cv2.LINE_AA)
    return cv2.copyMakeBorder(t, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/osteopano-phantom-grid.png"))
    ap.add_argument("--seed", type=int, default=2026, help="phantom seeds seed..seed+7; also picks the real images")
    ap.add_argument("--tile", type=int, default=640, help="width of each tile in pixels")
    ap.add_argument("--real", type=Path, default=SHARED, help="folder searched (recursively) for real images")
    ap.add_argument("--example", type=Path, default=None,
                    help="write only the phantom of --seed (800 px wide) to this path, e.g. docs/img/phantom-example.png")
    args = ap.parse_args()
    if args.example is not None:
        pixels = render(args.seed, width=1600).pixels.astype(np.float32) / 65535.0
        small = cv2.resize(pixels, (800, int(round(800 * pixels.shape[0] / pixels.shape[1]))), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(args.example), np.round(np.clip(small, 0, 1) * 255).astype(np.uint8))
        print(f"wrote {args.example}: SYNTHETIC phantom seed {args.seed}, {small.shape[1]} x {small.shape[0]}")
        return
    if args.out.resolve().is_relative_to(REPO):
        sys.exit(f"{args.out}: refusing to write inside the repository (the grid holds real images)")
    real = sorted(p for p in args.real.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
                  and "ufba" not in p.parent.name)  # fmt: skip  (ufba-512 is squashed to a square)
    if not real:
        sys.exit(f"{args.real}: no real images found (../shared is absent in a fresh clone)")
    picks = random.Random(args.seed).sample(real, min(8, len(real)))
    rows = []
    for i in range(8):
        ph = render(args.seed + i, width=1600)
        tr = ph.truth
        left = _tile(ph.pixels / 65535.0, args.tile, f"SYNTHETIC seed {args.seed + i} {tr['klemetti_true']} "
                     f"MCW {tr['mcw_right_mm']:.1f}/{tr['mcw_left_mm']:.1f} mm")  # fmt: skip
        if i < len(picks):
            right = _tile(read_image(picks[i]).pixels, args.tile, f"real {picks[i].parent.name}/{picks[i].name}")
        else:
            right = np.full_like(left, 255)
        rows.append(np.hstack([left, right]))
    grid = np.vstack(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), grid)
    print(f"wrote {args.out} ({grid.shape[1]} x {grid.shape[0]}): 8 synthetic phantoms (left) beside "
          f"{len(picks)} real radiographs from {args.real} (right)")


if __name__ == "__main__":
    main()
