"""Training speed on this machine: images/s and seconds per epoch, fp32 vs bf16 autocast + channels_last,
beside the study's Keras MobileNet and EfficientNetB0 in the same run.

    python benchmarks/train_speed.py [--steps 6] [--batch-size 32] [--size 224] [--train-images 200]
                                     [--reference keras|none] [--keras-python .venv-keras/bin/python]

Times full training steps (forward, cross-entropy, backward, Adam) of the real
``Classifier`` (random weights: speed does not depend on them) on random
batches, after two warm-up steps. "s/epoch" is for ``--train-images`` images
(200 = the train half of a 400-image set). Uses torch's default thread count. The Keras rows
(``benchmarks/keras_reference.py train`` in the virtualenv of ``make bench-reference``, each in a
fresh process: Adam, sparse cross-entropy, random weights and batches, 224 px, the same batch size)
and the "x Keras EfficientNetB0" column compare each row with Keras EfficientNetB0 in this run;
osteopano's default is efficientnet_lite0 with ``--precision auto`` (bf16 where the CPU has it), and
under bf16 the 5x5 depthwise convolutions train in fp32 (``fp32_wide_depthwise``: oneDNN's bf16
backward of those is several times slower than its fp32 one here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from osteopano.model.networks import create_model
from osteopano.train.tensors import autocast, fp32_wide_depthwise, resolve_precision

BACKBONES = ("efficientnet_lite0", "mobilenetv3_large_100")
ROOT = Path(__file__).resolve().parents[1]
KERAS_PYTHON = ROOT / ".venv-keras" / "bin" / "python"


def keras_images_per_second(python: Path, backbone: str, steps: int, batch: int) -> float:
    cmd = [str(python), str(ROOT / "benchmarks" / "keras_reference.py"), "train", "--backbone", backbone,
           "--steps", str(steps), "--batch-size", str(batch)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"keras {backbone} failed:\n{res.stderr[-2000:]}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["images_per_s"])


def images_per_second(backbone: str, precision: str, steps: int, batch: int, size: int) -> float:
    torch.manual_seed(0)
    model = create_model(backbone, weights="none").train()
    x = torch.randn(batch, 3, size, size)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        fp32_wide_depthwise(model, precision)  # as osteopano train does
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--reference", choices=("keras", "none"), default="keras")
    parser.add_argument("--keras-python", type=Path, default=KERAS_PYTHON)
    args = parser.parse_args()
    keras = args.reference == "keras"
    if keras and not args.keras_python.exists():
        raise SystemExit(f"{args.keras_python} not found: run `make bench-reference` (or --reference none)")
    if args.size != 224 and keras:
        raise SystemExit("the Keras reference runs at 224 px; use --size 224 or --reference none")
    rows = []
    if keras:
        for backbone, name in (("mobilenet", "Keras MobileNet"), ("efficientnetb0", "Keras EfficientNetB0")):
            rows.append((name, "fp32 (TensorFlow)",
                         keras_images_per_second(args.keras_python, backbone, args.steps, args.batch_size)))
    for backbone in BACKBONES:
        for precision in ("fp32", "bf16"):
            ips = images_per_second(backbone, precision, args.steps, args.batch_size, args.size)
            label = "fp32" if precision == "fp32" else "bf16 autocast + channels_last (5x5 depthwise fp32)"
            rows.append((backbone, label, ips))
    ref = next((ips for name, _, ips in rows if name == "Keras EfficientNetB0"), None)
    table = Table(title=f"Training speed, batch {args.batch_size}, {args.size} px, "
                        f"{torch.get_num_threads()} threads ({torch.backends.cpu.get_cpu_capability()}); "
                        f"default: efficientnet_lite0, precision auto = {resolve_precision('auto')}")
    for col in ("backbone", "precision", "images/s", "s/epoch", "x Keras EfficientNetB0"):
        table.add_column(col, justify="left" if col in ("backbone", "precision") else "right")
    for name, label, ips in rows:
        table.add_row(name, label, f"{ips:.1f}", f"{args.train_images / ips:.1f}",
                      f"{ips / ref:.2f}x" if ref else "")
    Console().print(table)


if __name__ == "__main__":
    main()
