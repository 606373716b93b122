"""Training speed on this machine: images/s and seconds per epoch, fp32 vs bf16 autocast + channels_last.

    python benchmarks/train_speed.py [--steps 6] [--batch-size 32] [--size 224] [--train-images 200]

Times full training steps (forward, cross-entropy, backward, Adam) of the real
``Classifier`` (random weights: speed does not depend on them) on random
batches, after two warm-up steps. "s/epoch" is for ``--train-images`` images
(200 = the train half of a 400-image set). Uses torch's default thread count.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from osteopano.model.networks import create_model

BACKBONES = ("efficientnet_lite0", "mobilenetv3_large_100")


def images_per_second(backbone: str, precision: str, steps: int, batch: int, size: int) -> float:
    torch.manual_seed(0)
    model = create_model(backbone, weights="none").train()
    x = torch.randn(batch, 3, size, size)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
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
    args = parser.parse_args()
    table = Table(title=f"Training speed, batch {args.batch_size}, {args.size} px, "
                        f"{torch.get_num_threads()} threads ({torch.backends.cpu.get_cpu_capability()})")
    for col in ("backbone", "precision", "images/s", "s/epoch", "speed-up"):
        table.add_column(col, justify="left" if col in ("backbone", "precision") else "right")
    for backbone in BACKBONES:
        base = None
        for precision in ("fp32", "bf16"):
            ips = images_per_second(backbone, precision, args.steps, args.batch_size, args.size)
            base = base or ips
            label = "fp32" if precision == "fp32" else "bf16 autocast + channels_last"
            table.add_row(backbone, label, f"{ips:.1f}", f"{args.train_images / ips:.1f}", f"{ips / base:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
