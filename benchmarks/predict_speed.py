"""Prediction speed and memory of the torch and ONNX engines, from image file to probability.

    python benchmarks/predict_speed.py [--run RUN] [--n 200] [--width 1600] [--batch-size 16]

* throughput: images/s for ``predict_batch`` over N phantom PNGs (decode + preprocess + network),
  after one warm-up batch, each engine in a fresh subprocess (model loading timed separately);
* peak memory: the peak resident set (VmHWM) of a fresh subprocess that loads the model and
  predicts ONE 2943 x 1435 radiograph (a real sample from ../shared when present, else a phantom).

Without --run a model is trained for 1 epoch from scratch (--weights none) at 224 px on 16 phantoms:
speed does not depend on the weights. Everything is written to a temporary folder.
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

REAL_NATIVE = Path(__file__).resolve().parents[2] / "shared" / "real-samples" / "native"


def _worker(args: argparse.Namespace) -> None:
    """Runs in the subprocess: load, predict, print one JSON line."""
    t0 = time.perf_counter()
    import osteopano

    model = osteopano.load(args.model, engine=args.engine)
    load_s = time.perf_counter() - t0
    paths = sorted(Path(args.images).glob("*.png")) if Path(args.images).is_dir() else [Path(args.images)]
    out = {"engine": model.name, "load_s": load_s, "n": len(paths)}
    if args.mode == "throughput":
        model.predict_batch(paths[: args.batch_size], batch_size=args.batch_size)  # warm-up
        t1 = time.perf_counter()
        results = model.predict_batch(paths, batch_size=args.batch_size)
        out["seconds"] = time.perf_counter() - t1
        out["errors"] = sum(r.error is not None for r in results)
    else:
        result = model.predict(paths[0])
        out["probability"] = result.probability
    status = Path("/proc/self/status").read_text()
    out["peak_rss_mb"] = int(next(line.split()[1] for line in status.splitlines()
                                  if line.startswith("VmHWM:"))) / 1024
    out["torch_imported"] = "torch" in sys.modules
    print(json.dumps(out))


def _child(mode: str, engine: str, model: Path, images: Path, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--engine", engine, "--model", str(model),
           "--images", str(images), "--batch-size", str(batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{engine} {mode} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


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


def _big_image(tmp: Path) -> Path:
    """A 2943 x 1435 radiograph: the first real native sample, else a phantom at that width."""
    real = sorted(REAL_NATIVE.glob("*.png")) if REAL_NATIVE.is_dir() else []
    if real:
        return real[0]
    import cv2

    from osteopano.phantom.generate import render

    ph = render(0, width=2943)
    path = tmp / "big.png"
    cv2.imwrite(str(path), cv2.resize(ph.pixels, (2943, 1435), interpolation=cv2.INTER_AREA))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="A trained run folder (default: train a throwaway one).")
    parser.add_argument("--n", type=int, default=200, help="Phantom images for the throughput test.")
    parser.add_argument("--width", type=int, default=1600, help="Phantom width in pixels (synth's default).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--worker", choices=("throughput", "peak"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.mode = args.worker
        _worker(args)
        return

    from rich.console import Console
    from rich.table import Table

    from osteopano.model.onnx import export_onnx
    from osteopano.phantom.generate import generate

    console = Console()
    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp_name:
        tmp = Path(tmp_name)
        run = args.run or _train(tmp)
        onnx_file = export_onnx(run, tmp / "model.onnx")["path"]
        images = tmp / "images"
        generate(images, args.n, 1, width=args.width, progress=False)
        big = _big_image(tmp)
        table = Table(title=f"Prediction speed, file -> probability ({args.n} phantoms {args.width} px wide, "
                      f"batch {args.batch_size}; {os.cpu_count()} CPUs; peak RSS for one {big.name})")
        for col in ("engine", "model load (s)", "images/s", "ms/image", "peak RSS 1 image (MB)",
                    "torch imported"):
            table.add_column(col, justify="right")
        for engine, model in (("torch", run), ("onnx", onnx_file)):
            speed = _child("throughput", engine, model, images, args.batch_size)
            peak = _child("peak", engine, model, big, args.batch_size)
            rate = speed["n"] / speed["seconds"]
            table.add_row(engine, f"{peak['load_s']:.2f}", f"{rate:.1f}", f"{1000 / rate:.1f}",
                          f"{peak['peak_rss_mb']:.0f}", str(peak["torch_imported"]))
        console.print(table)


if __name__ == "__main__":
    main()
