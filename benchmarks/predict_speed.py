"""File -> probability speed and peak memory, osteopano's engines beside the study's Keras stack, in one run.

    python benchmarks/predict_speed.py [--run RUN] [--images DIR ...] [--n 40] [--reference keras]
                                       [--batch-size 8] [--rounds 1]

* images: ``--images DIR`` (repeatable; PNG/JPEG); default the real radiographs of
  ../shared/real-samples/native and dc1000-more (2943 x 1435 PNG) when present, else ``--n``
  phantoms ``--width`` px wide. ``--n`` caps how many are used.
* throughput: images/s from file to probability, each engine in a fresh process after a warm-up
  batch: ``torch`` and ``onnx`` run ``osteopano.screen.batch.screen`` (what ``osteopano predict``
  does: threads decode + prepare while the network runs); ``keras`` is the study's stack
  (benchmarks/keras_reference.py in the virtualenv made by ``make bench-reference``, or
  ``--keras-python``); ``predict CLI`` times ``osteopano predict MODEL.onnx DIR --out rows.csv``
  end to end (process start, imports and model load included; no warm-up); ``ray`` runs
  ``osteopano.screen.ray_data.predict_ray`` on a local Ray with this machine's CPUs (after a
  warm-up batch; Ray's own start excluded) and checks its rows equal the onnx engine's.
* peak RSS: VmHWM of a fresh process that loads the model and predicts ONE 2943 x 1435 image.
* CPU ms/image: the process's CPU time (all threads) per image in the timed part - what an image
  costs whatever else the machine runs (images/s also depends on the cores one gets).
* ratio: images/s over the Keras stack's in the same run. ``--rounds`` > 1 repeats the whole
  round robin and keeps each engine's best round (the machine may be shared).

Without --run a model is trained for 1 epoch from scratch (--weights none) at 224 px on 16 phantoms,
with the default (fast-v2) preprocessing: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed_common import ROOT, bench_images, timed_predict

KERAS_PYTHON = ROOT / ".venv-keras" / "bin" / "python"


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def _worker(args: argparse.Namespace) -> None:
    """Runs in the subprocess: load, predict, print one JSON line."""
    t0 = time.perf_counter()
    import osteopano
    from osteopano.screen.batch import Outputs, plan_batch, run_batch

    def screen(model, paths, batch_size, out=None):  # what `osteopano predict` runs, without the progress bar
        outputs = Outputs(out=out)
        return run_batch(model, paths, plan_batch(paths, outputs, False), outputs, batch_size=batch_size)

    if args.worker == "ray":
        _ray_worker(args)
        return
    model = osteopano.load(args.model, engine=args.engine)
    out = {"engine": args.engine, "load_s": time.perf_counter() - t0}
    if args.worker == "throughput":
        paths = [Path(p) for p in Path(args.images).read_text().split("\n") if p]
        for _ in screen(model, paths[: args.batch_size], args.batch_size):  # warm-up
            pass
        t1, c1 = time.perf_counter(), time.process_time()
        rows = [item.row for batch in screen(model, paths, args.batch_size, Path(args.rows) if args.rows else None)
                for item in batch]
        out["seconds"] = time.perf_counter() - t1
        out["cpu_seconds"] = time.process_time() - c1
        out["n"] = len(paths)
        out["errors"] = sum(r["error"] is not None for r in rows)
    else:
        out["probability"] = model.predict(Path(args.images)).probability
    out["peak_rss_mb"] = _peak_rss_mb()
    out["torch_imported"] = "torch" in sys.modules
    print(json.dumps(out))


def _ray_worker(args: argparse.Namespace) -> None:
    """A local Ray with this machine's CPUs: warm-up on one batch, then the whole list (pipeline start-up
    and actor creation included, Ray's own start excluded)."""
    import ray

    from osteopano.screen.ray_data import predict_ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    paths = [Path(p) for p in Path(args.images).read_text().split("\n") if p]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        predict_ray(args.model, paths[: args.batch_size], Path(tmp) / "warm.csv", batch_size=args.batch_size)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        counts = predict_ray(args.model, paths, Path(args.rows or Path(tmp) / "rows.csv"), batch_size=args.batch_size)
        seconds = time.perf_counter() - start
    print(json.dumps({"engine": "ray", "n": len(paths), "seconds": seconds, "errors": counts["errors"],
                      "warm_up_seconds": warm, "peak_rss_mb": _peak_rss_mb()}))


def _json_child(cmd: list[str], what: str) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{what} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _osteopano(mode: str, engine: str, model: Path, images: Path, batch_size: int, rows: Path | None = None) -> dict:
    return _json_child([sys.executable, __file__, "--worker", mode, "--engine", engine, "--model", str(model),
                        "--images", str(images), "--batch-size", str(batch_size)]
                       + (["--rows", str(rows)] if rows else []), f"{engine} {mode}")


def _keras(python: Path, mode: str, images: Path, batch_size: int) -> dict:
    return _json_child([str(python), str(ROOT / "benchmarks" / "keras_reference.py"), mode, str(images),
                        "--batch-size", str(batch_size), "--warmup", str(batch_size)], f"keras {mode}")


def _cli(model: Path, folder: Path, n: int, out: Path, batch_size: int) -> dict:
    seconds, cpu_seconds, _ = timed_predict(model, folder, out, batch_size)
    return {"n": n, "seconds": seconds, "cpu_seconds": cpu_seconds}


def _train(tmp: Path) -> Path:
    from osteopano.model.config import RunConfig
    from osteopano.model.networks import backbone_mean_std
    from osteopano.phantom.generate import generate
    from osteopano.prepare.intensity import Preprocess
    from osteopano.train.loop import train_run

    generate(tmp / "train", 16, 0, width=800, progress=False)
    mean, std = backbone_mean_std("efficientnet_lite0")
    cfg = RunConfig(data=str(tmp / "train"), weights="none", epochs=1, precision="fp32",
                    preprocess=Preprocess(size=224, mean=mean, std=std).to_dict())
    train_run(cfg, tmp / "run")
    return tmp / "run"


def _images(args: argparse.Namespace, tmp: Path) -> tuple[list[Path], str]:
    return bench_images(args.images, args.n, tmp, default_n=40, width=args.width)


def _big_image(paths: list[Path], tmp: Path) -> Path:
    """A 2943 x 1435 radiograph: the first image of that size, else a phantom resized to it."""
    from PIL import Image

    for p in paths:
        with Image.open(p) as img:
            if img.size == (2943, 1435):
                return p
    import cv2

    from osteopano.phantom.generate import render

    path = tmp / "big.png"
    cv2.imwrite(str(path), cv2.resize(render(0, width=2943).pixels, (2943, 1435), interpolation=cv2.INTER_AREA))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="A trained run folder (default: train a throwaway one).")
    parser.add_argument("--images", type=Path, action="append", help="Image folder (repeatable).")
    parser.add_argument("--n", type=int, default=40, help="At most this many images (0 = all).")
    parser.add_argument("--width", type=int, default=1600, help="Phantom width when no real images exist.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reference", choices=("keras", "none"), default="keras")
    parser.add_argument("--keras-python", type=Path, default=KERAS_PYTHON,
                        help="The Python of the Keras virtualenv (make bench-reference).")
    parser.add_argument("--engines", default="torch,onnx,cli",
                        help="Comma list of torch, onnx, cli, ray (Ray Data on a local Ray with this machine's "
                             "CPUs; needs osteopano[scale]; its rows are compared with the onnx engine's).")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--worker", choices=("throughput", "peak", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.images = args.images[0]
        _worker(args)
        return

    from rich.console import Console
    from rich.table import Table

    from osteopano.model.onnx import export_onnx

    keras = args.reference == "keras"
    if keras and not args.keras_python.exists():
        raise SystemExit(f"{args.keras_python} not found: run `make bench-reference` (or give --keras-python, "
                         "or --reference none)")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp_name:
        tmp = Path(tmp_name)
        run = args.run or _train(tmp)
        onnx_file = export_onnx(run, tmp / "model.onnx")["path"]
        paths, described = _images(args, tmp)
        listing = tmp / "images.txt"
        listing.write_text("\n".join(str(p) for p in paths))
        folder = tmp / "cli-images"
        folder.mkdir()
        for i, p in enumerate(paths):
            (folder / f"{i:05d}{p.suffix.lower()}").symlink_to(p)
        big = _big_image(paths, tmp)
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            timed = {}
            if keras:
                timed["keras"] = _keras(args.keras_python, "predict", listing, args.batch_size)
            for engine in engines:
                if engine == "cli":
                    timed["predict CLI (onnx)"] = _cli(onnx_file, folder, len(paths), tmp / "rows.csv",
                                                       args.batch_size)
                elif engine == "ray":
                    timed["ray (local)"] = _osteopano("ray", "onnx", onnx_file, listing, args.batch_size,
                                                      tmp / "rows-ray.csv")
                else:
                    timed[engine] = _osteopano("throughput", engine, run if engine == "torch" else onnx_file,
                                               listing, args.batch_size,
                                               tmp / "rows-onnx.csv" if engine == "onnx" else None)
            for name, res in timed.items():
                res["rate"] = res["n"] / res["seconds"]
                if name not in best or res["rate"] > best[name]["rate"]:
                    best[name] = res
        peaks = {}
        if keras:
            peaks["keras"] = _keras(args.keras_python, "peak", big, 1)["peak_rss_mb"]
        same_rows = None
        if (tmp / "rows-ray.csv").exists() and (tmp / "rows-onnx.csv").exists():
            same_rows = (tmp / "rows-ray.csv").read_text() == (tmp / "rows-onnx.csv").read_text()
        for engine in engines:
            if engine not in ("cli", "ray"):
                peaks[engine] = _osteopano("peak", engine, run if engine == "torch" else onnx_file, big, 1)[
                    "peak_rss_mb"]
    load = os.getloadavg()
    table = Table(title=f"File -> probability, {described}; batch {args.batch_size}; {os.cpu_count()} CPUs, "
                        f"load average {load[0]:.1f}/{load[1]:.1f}; best of {args.rounds} round(s)")
    for col in ("engine", "images/s", "ms/image", "x Keras", "CPU ms/image", f"peak RSS, one {big.name} (MB)"):
        table.add_column(col, justify="right")
    ref = best.get("keras", {}).get("rate")
    for name, res in best.items():
        peak = peaks.get(name if name != "predict CLI (onnx)" else "", None)
        table.add_row(name, f"{res['rate']:.1f}", f"{1000 / res['rate']:.1f}",
                      f"{res['rate'] / ref:.2f}x" if ref else "",
                      f"{1000 * res['cpu_seconds'] / res['n']:.0f}" if res.get("cpu_seconds") else "",
                      f"{peak:.0f}" if peak else "")
    Console().print(table)
    if "ray (local)" in best and "onnx" in best:
        ratio = best["ray (local)"]["rate"] / best["onnx"]["rate"]
        print(f"Ray Data on a local {os.cpu_count()}-CPU Ray: {ratio:.0%} of the onnx engine's images/s "
              f"(pipeline and actor start-up included); rows identical to the onnx engine's: {same_rows}")
        if best["ray (local)"].get("warm_up_seconds") is not None:
            print(f"  its fixed cost: the warm-up run of one batch of {args.batch_size} took "
                  f"{best['ray (local)']['warm_up_seconds']:.1f} s (Ray starts the actors' processes per run), "
                  "so the share grows with the number of images")
    print(json.dumps({"images": described, "load_average": load, "ray_rows_identical": same_rows,
                      "engines": {k: {"images_per_s": round(v["rate"], 2), "peak_rss_mb": peaks.get(k)}
                                  | ({"cpu_ms_per_image": round(1000 * v["cpu_seconds"] / v["n"], 1)}
                                     if v.get("cpu_seconds") else {})
                                  for k, v in best.items()}}))


if __name__ == "__main__":
    main()
