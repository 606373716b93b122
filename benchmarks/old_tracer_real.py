"""Why the border tracer of before issue 10 fails on REAL radiographs, and whether the SYNTHETIC phantom
makes it fail the same way (issue 11's difficulty parity, measured on its cause).

Runs the tracer of git commit ``--rev`` (default e1b58f0; its ``src/osteopano`` extracted with ``git
archive`` and run in a subprocess, as ``measure_accuracy.py --compare-with`` does) on

* the real abdi-dev radiographs (``../shared/real-masks/abdi-dev``; skipped, saying why, when absent):
  both sides located and each side's median distance to expert 1's lower mask edge <= 2 mm
  (``border_real.py``'s metric, 0.1 mm/px), and
* ``--n`` phantoms (seed ``--seed``, width 1600),

and counts, over every profile its cortex-band reading looks at, why a profile was not read
(``cortex <= bone above``: the band holds nothing brighter than the bone 0.5-2 mm beyond its inner
edge, i.e. the profile only rises to a plateau; ``no crossing``; ...). A side needs 30 % of the
profiles near its site read to count as located.

    python benchmarks/old_tracer_real.py [--rev e1b58f0] [--n 30] [--seed 2026]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from border_real import ROOT as ABDI, reference_edge, side_distance  # noqa: E402
from measure_accuracy import _extract  # noqa: E402

from osteopano.phantom import generate as phantom  # noqa: E402

# Run with the old package first on PYTHONPATH: its read_band, counting why profiles are not read.
_SCRIPT = r"""
import json, sys
from collections import Counter
from pathlib import Path
import numpy as np
import osteopano.cortex as oc
import osteopano.cortex_trace as ct
from osteopano.imageio import read_image
from osteopano.cortex_trace import (EDGE_MAX_STEP_MM, EDGE_PENALTY, PROFILE_STEP_MM, OUTER_SEARCH_MM, MIN_WIDTH_MM,
                                    MAX_WIDTH_MM, INNER_DECAY_MM, dp_path)
reasons = Counter()
original = ct.read_band

def counting(prof, t):  # the old read_band's edge paths and tests again (it returns no reasons), counted
    band = original(prof, t)
    n, step = prof.shape[0], t[1] - t[0]
    d = np.gradient(prof, step, axis=1)
    scale = max(float(np.percentile(np.abs(d), 99)), 1e-9)
    idx = lambda v: int(np.clip(round((v - t[0]) / step), 0, t.size - 1))
    max_step, penalty = max(1, round(EDGE_MAX_STEP_MM / step)), EDGE_PENALTY * (PROFILE_STEP_MM / step) ** 2
    a, b = idx(-OUTER_SEARCH_MM), idx(OUTER_SEARCH_MM) + 1
    io = a + dp_path(-np.clip(d[:, a:b].T / scale, 0, 1), max_step, penalty)
    k0, k1 = round(MIN_WIDTH_MM / step), round(MAX_WIDTH_MM / step)
    rel = io[:, None] + np.arange(k0, k1 + 1)[None, :]
    reward = np.where(rel < t.size, np.clip(-d[np.arange(n)[:, None], np.minimum(rel, t.size - 1)] / scale, 0, 1), 0)
    reward *= np.exp(-np.arange(k0, k1 + 1) * step / INNER_DECAY_MM)[None, :]
    ii = io + k0 + dp_path(-reward.T, max_step, penalty)
    for i in range(n):
        if np.isfinite(band.outer_t[i]):
            reasons["read"] += 1
            continue
        p, to, ti = prof[i], t[io[i]], t[min(ii[i], t.size - 1)]
        if ii[i] >= t.size - 2:
            reasons["inner edge at the profile's end"] += 1
            continue
        bg = float(np.median(p[idx(to - 1.5):idx(to - 0.5) + 1]))
        cortex = float(np.percentile(p[io[i]:ii[i] + 1], 75))
        trab = float(np.median(p[idx(ti + 0.5):idx(ti + 2.0) + 1]))
        reasons["cortex <= tissue below" if cortex <= bg else "cortex <= bone above" if cortex <= trab
                else "no crossing / width out of range"] += 1
    return band

ct.read_band = counting
for line in sys.stdin:
    path, spacing = line.rstrip("\n").split("\t")
    m = oc.measure(read_image(Path(path)), pixel_spacing_mm=float(spacing))
    out = {"path": path}
    for s in m.sides():
        b = getattr(s, "border", None)
        out[s.side] = {"located": bool(s.located),
                       "border": [list(map(float, q)) for q in b[::2]] if b is not None and len(b) else None}
    print(json.dumps(out), flush=True)
print(json.dumps({"reasons": reasons}), flush=True)
"""


def run_old(src: Path, items: list[tuple[Path, float]]) -> tuple[list[dict], Counter]:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], input="".join(f"{p}\t{s}\n" for p, s in items),
                          env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the old tracer failed:\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return lines[:-1], Counter(lines[-1]["reasons"])


def shares(reasons: Counter) -> str:
    total = max(sum(reasons.values()), 1)
    return ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in reasons.most_common())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="e1b58f0")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="osteopano-old-") as tmp:
        src = _extract(args.rev, Path(tmp))
        if (ABDI / "images").is_dir():
            files = sorted((ABDI / "images").glob("*.png"))
            rows, reasons = run_old(src, [(f, 0.1) for f in files])
            good = not_located = 0
            for row in rows:
                name = Path(row["path"]).name
                mask = cv2.imread(str(ABDI / "mandible-expert1" / name), cv2.IMREAD_GRAYSCALE)
                edge, a, b, centre = reference_edge(mask)
                ok = True
                for side in ("right", "left"):
                    s = row[side]
                    if not s["located"] or not s["border"]:
                        ok = False
                        not_located += 1
                        continue
                    cols = np.arange(a, centre + 1) if side == "right" else np.arange(centre, b + 1)
                    dist = side_distance(np.array(s["border"]), edge, cols)
                    ok &= bool(dist.size) and float(np.median(dist)) * 0.1 <= 2.0
                good += ok
            print(f"REAL abdi-dev, tracer {args.rev}: both sides located and within 2 mm on {good}/{len(rows)}; "
                  f"{not_located} of {2 * len(rows)} sides not located")
            print(f"  profiles of its cortex-band reading: {shares(reasons)}")
        else:
            print(f"real abdi-dev: skipped, {ABDI} is not there")
        data = Path(tmp) / "phantoms"
        phantom.generate(data, args.n, args.seed, width=1600, progress=False)
        with (data / "manifest.csv").open(newline="") as fh:
            items = [(data / r["path"], float(r["pixel_spacing_mm"])) for r in csv.DictReader(fh)]
        rows, reasons = run_old(src, items)
        located = sum(row[s]["located"] for row in rows for s in ("right", "left"))
        print(f"SYNTHETIC phantom (seed {args.seed}, n {len(rows)}), tracer {args.rev}: {located} of {2 * len(rows)} "
              "sides located")
        print(f"  profiles of its cortex-band reading: {shares(reasons)}")


if __name__ == "__main__":
    main()
