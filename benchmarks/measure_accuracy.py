"""Accuracy of the automatic MCW measurement on SYNTHETIC phantom images, optionally beside
the border tracer as it was at an earlier git commit.

Generates ``--n`` phantom radiographs (fixed seed) into a temporary folder, measures each with
``osteopano measure``'s function (pixel spacing from the manifest) and prints, per side: the
fraction located (of all sides; of the sides whose true site is in the picture, the manifest's
``site_*_visible``; and, of the sides whose site lies under the collimation frame or off the
picture, how many still got a width: it should be none), the fraction whose measurement site lies
within ``--border-tol-mm`` (2 mm) of the true inferior border (the manifest's ``border_px``
polyline), the median and 95th-percentile absolute MCW error against the truth, the distance of
the site from the true site, and images/s.

``--compare-with REV`` also measures the same images with the tracer of git commit REV (its
``src/osteopano`` extracted with ``git archive`` into a temporary folder and run in a subprocess with
that folder first on PYTHONPATH). Before the package split (e.g. e1b58f0) the function is
``osteopano.cortex.measure``; from 9252ec7 on ``osteopano.cortex.measure.measure``.

Acceptance (synthetic data only, not clinical evidence): for the current tracer median abs error
<= 0.2 mm, p95 <= 0.5 mm, 100 % located of the sides whose site is in the picture and none of the
others (a width there would be made up); "difficulty parity" of the phantom: the tracer as it was
before issue 10 (e1b58f0) puts both sides within 2 mm of the true border on at most 80 % of images.

    python benchmarks/measure_accuracy.py [--n 200] [--seed 2026] [--width 1600] [--compare-with e1b58f0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import phantom_set

from osteopano.phantom import generate as phantom

REPO = Path(__file__).resolve().parents[1]

# Run inside the measured version's interpreter environment; prints one JSON line per image.
_MEASURE_SCRIPT = r"""
import csv, json, sys, time
from pathlib import Path
try:
    from osteopano.cortex.measure import measure
except ImportError:
    from osteopano.cortex import measure
try:
    from osteopano.io.images import read_image
except ImportError:
    from osteopano.imageio import read_image
import osteopano
root = Path(sys.argv[1])
print(json.dumps({"module": osteopano.__file__}), flush=True)
with (root / "manifest.csv").open(newline="") as fh:
    rows = list(csv.DictReader(fh))
for row in rows:
    image = read_image(root / row["path"])
    t = time.perf_counter()
    m = measure(image, pixel_spacing_mm=float(row["pixel_spacing_mm"]))
    out = {"path": row["path"], "seconds": time.perf_counter() - t, "klemetti": m.klemetti_estimate,
           "quality": getattr(m, "quality", None)}
    for s in m.sides():
        border = getattr(s, "border", None)
        out[s.side] = {"located": bool(s.located), "mcw_mm": s.mcw_mm,
                       "quality": getattr(s, "quality", None), "reason": getattr(s, "reason", None),
                       "border": [list(map(float, p)) for p in border[::4]] if border is not None and len(border) else None,
                       "site_xy": list(map(float, s.site_xy)) if s.site_xy is not None else None}
    print(json.dumps(out), flush=True)
"""


def _run_measure(src: Path, data: Path) -> tuple[str, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", _MEASURE_SCRIPT, str(data)], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"measuring with {src} failed:\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return lines[0]["module"], lines[1:]


def _extract(rev: str, dest: Path) -> Path:
    """``git archive REV src/osteopano`` into dest; returns dest/src."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/osteopano"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def _dist_to_polyline(p: np.ndarray, poly: np.ndarray) -> float:
    a, b = poly[:-1], poly[1:]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
    return float(np.min(np.hypot(*(a + t[:, None] * ab - p).T)))


def score(rows: list[dict[str, str]], results: list[dict], tol_mm: float) -> dict[str, object]:
    """Per-side figures of one tracer against the manifest truth."""
    by_path = {r["path"]: r for r in results}
    out: dict[str, object] = {"both_on_border": 0, "n": len(rows), "seconds": 0.0, "ok": 0, "ok_off": 0}
    per = {s: {"located": 0, "on_border": 0, "err": [], "site": [], "visible": 0, "located_visible": 0,
               "hidden_located": 0} for s in ("right", "left")}
    signed: list[tuple[float, float, str]] = []  # (cortex visibility, measured - true MCW, side quality)
    for row in rows:
        res = by_path[row["path"]]
        out["seconds"] += res["seconds"]
        spacing = float(row["pixel_spacing_mm"])
        border = phantom.decode_polyline(row["border_px"])
        ok_both = True
        off = False
        for side in ("right", "left"):
            s = res[side]
            on = False
            # a site whose cortex lies under the collimation frame or outside the picture cannot be
            # measured: the right answer there is "not located" (manifests before the column: visible)
            visible = row.get(f"site_{side}_visible", "1") != "0"
            per[side]["visible"] += visible
            per[side]["located_visible"] += bool(s["located"]) and visible
            per[side]["hidden_located"] += bool(s["located"]) and not visible
            if s["located"] and s.get("border"):
                # the traced side's median distance to the true border (a side "off" when > tol)
                d = [_dist_to_polyline(np.array(p), border) for p in s["border"]]
                off |= float(np.median(d)) * spacing > tol_mm
            if s["located"] and s["site_xy"] is not None:
                per[side]["located"] += 1
                xy = np.array(s["site_xy"])
                on = _dist_to_polyline(xy, border) * spacing <= tol_mm
                off |= not on
                true_xy = np.array([float(row[f"site_{side}_x"]), float(row[f"site_{side}_y"])])
                per[side]["site"].append(float(np.hypot(*(xy - true_xy))) * spacing)
                if s["mcw_mm"] is not None:
                    per[side]["err"].append(abs(s["mcw_mm"] - float(row[f"mcw_{side}_mm"])))
                    signed.append((float(row.get("cortex_visibility") or "nan"),
                                   s["mcw_mm"] - float(row[f"mcw_{side}_mm"]), str(s.get("quality"))))
            per[side]["on_border"] += on
            ok_both &= on
        out["both_on_border"] += ok_both
        if res.get("quality") == "ok":
            out["ok"] += 1
            out["ok_off"] += off
    out["sides"] = per
    out["signed"] = signed
    return out


VISIBILITY_BANDS = ((0.0, 0.6, "faint (< 0.6)"), (0.6, 1.2, "0.6-1.2"), (1.2, 9.0, "bright (>= 1.2)"))


def _by_visibility(console: Console, sc: dict) -> None:
    """MCW error of the measured sides by the phantom's cortex visibility (manifests that have it)."""
    rows = [r for r in sc["signed"] if np.isfinite(r[0])]
    if not rows:
        return
    t = Table(title="MCW error (measured - true) by the phantom's cortex_visibility, measured sides")
    for col in ("cortex visibility", "sides", "median |err| mm", "p95 |err| mm", "> 0.5 mm: wide / narrow",
                "of them quality ok"):  # fmt: skip
        t.add_column(col, justify="right")
    for lo, hi, name in VISIBILITY_BANDS:
        band = [r for r in rows if lo <= r[0] < hi]
        if not band:
            continue
        e = np.array([r[1] for r in band])
        big = [r for r in band if abs(r[1]) > 0.5]
        t.add_row(name, str(len(band)), f"{np.median(np.abs(e)):.3f}", f"{np.percentile(np.abs(e), 95):.3f}",
                  f"{sum(r[1] > 0 for r in big)} / {sum(r[1] < 0 for r in big)}", str(sum(r[2] == "ok" for r in big)))
    console.print(t)


def _table(console: Console, title: str, sc: dict, tol: float) -> None:
    n = sc["n"]
    t = Table(title=title)
    for col in ("side", "located", "located / site in picture", "site hidden: located",
                f"site <= {tol:g} mm from border", "median |err| mm", "p95 |err| mm", "median site dist mm"):  # fmt: skip
        t.add_column(col, justify="right")
    allerr = []
    for side in ("right", "left"):
        p = sc["sides"][side]
        e = np.array(p["err"]) if p["err"] else np.array([np.nan])
        allerr += p["err"]
        t.add_row(side, f"{p['located']}/{n}", f"{p['located_visible']}/{p['visible']}",
                  f"{p['hidden_located']}/{n - p['visible']}", f"{p['on_border']}/{n}", f"{np.median(e):.3f}",
                  f"{np.percentile(e, 95):.3f}", f"{np.median(p['site']) if p['site'] else float('nan'):.2f}")
    e = np.array(allerr) if allerr else np.array([np.nan])
    t.add_row("both", "", "", "", f"{sc['both_on_border']}/{n} = {sc['both_on_border'] / n:.1%}", f"{np.median(e):.3f}",
              f"{np.percentile(e, 95):.3f}", "")
    console.print(t)
    console.print(f"quality ok: {sc['ok']}/{n} = {sc['ok'] / n:.1%}; ok images with a side (median over the side) or "
                  f"site > {tol:g} mm off the true border: {sc['ok_off']}/{sc['ok']} = {sc['ok_off'] / max(sc['ok'], 1):.1%}")
    console.print(f"speed: {n / max(sc['seconds'], 1e-9):.2f} images/s (measure only, 1 process)")
    sc["median_err"], sc["p95_err"] = float(np.median(e)), float(np.percentile(e, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phantom_set.add_arguments(ap)
    ap.add_argument("--compare-with", metavar="REV", default=None,
                    help="also measure with the tracer of this git commit (e.g. e1b58f0)")
    ap.add_argument("--border-tol-mm", type=float, default=2.0)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp:
        root, rows = phantom_set.prepare(args, Path(tmp), console.print)
        runs = [("current", REPO / "src")]
        if args.compare_with:
            old = Path(tmp) / "rev"
            old.mkdir()
            runs.append((args.compare_with, _extract(args.compare_with, old)))
        scores = {}
        for name, src in runs:
            module, results = _run_measure(src, root)
            scores[name] = sc = score(rows, results, args.border_tol_mm)
            _table(console, f"MCW on {len(rows)} SYNTHETIC phantoms (seed {args.seed}, width {args.width}): "
                   f"tracer {name} ({Path(module).parent})", sc, args.border_tol_mm)  # fmt: skip
            if name == "current":
                _by_visibility(console, sc)
    cur = scores["current"]
    ok = cur["median_err"] <= 0.2 and cur["p95_err"] <= 0.5 and all(
        cur["sides"][s]["located_visible"] == cur["sides"][s]["visible"] and cur["sides"][s]["hidden_located"] == 0
        for s in ("right", "left"))
    console.print("Current tracer (median <= 0.2, p95 <= 0.5 mm, 100% of the sites in the picture located, "
                  "none of those under the frame or off the picture): "
                  + ("[green]PASS[/green]" if ok else "[red]FAIL[/red]"))
    if args.compare_with:
        old = scores[args.compare_with]
        frac = old["both_on_border"] / old["n"]
        console.print(f"Difficulty parity: tracer {args.compare_with} has both sides within {args.border_tol_mm:g} mm "
                      f"of the true border on {frac:.1%} of the phantoms (target <= 80%; 47-67% on real images): "
                      + ("[green]PASS[/green]" if frac <= 0.8 else "[red]FAIL[/red]"))


if __name__ == "__main__":
    main()
