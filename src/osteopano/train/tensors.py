"""Tensors for training and evaluation: precision, the network input from cached uint8 planes, logits."""

from __future__ import annotations

import numpy as np
import torch

from osteopano.errors import DataError
from osteopano.prepare.intensity import Preprocess




def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' on CPUs with native bfloat16 (AVX-512 BF16 / AMX), else 'fp32'."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise DataError(f"precision {precision!r}: use auto, bf16 or fp32")
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "fp32"


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


FP32_DEPTHWISE_KERNEL = 5  # depthwise convolutions this wide or wider train in fp32 under bf16 autocast


class _Fp32Forward:
    """A module's own forward with autocast off and the input in fp32 (state dict and weights untouched)."""

    def __init__(self, forward):
        self.forward = forward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.forward(x.float())


def fp32_wide_depthwise(model: torch.nn.Module, precision: str) -> int:
    """For training under CPU bf16 autocast: run the 5x5 (and wider) depthwise convolutions in fp32.

    oneDNN's bf16 backward of a depthwise 5x5 convolution is 3-10x slower than its fp32 one on this
    machine's CPU (AMX; ``benchmarks/train_speed.py``), and those layers took half of an
    efficientnet_lite0 training step; the 3x3 ones are faster in bf16 or lie at full resolution, where
    casting the activations costs more than it saves. The other layers keep bf16. Nothing changes in
    fp32 training, in the weights or in the state dict's keys. Returns how many convolutions it set."""
    if precision != "bf16":
        return 0
    count = 0
    for conv in model.modules():
        if (isinstance(conv, torch.nn.Conv2d) and conv.groups > 1 and conv.groups == conv.in_channels
                and min(conv.kernel_size) >= FP32_DEPTHWISE_KERNEL and not isinstance(conv.forward, _Fp32Forward)):
            conv.forward = _Fp32Forward(conv.forward)
            count += 1
    return count


def to_network(batch_u8: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(B, K, S, S) uint8 planes -> the network input through ``Preprocess.normalise`` (the one
    normalisation, in numpy): (B, 3, S, S) channels-last for one plane (the whole image), (B, K, 3, S, S)
    for K ROI crops."""
    x = torch.from_numpy(np.ascontiguousarray(preprocess.normalise(batch_u8.numpy())))
    if x.shape[1] == 1:
        return x[:, 0].contiguous(memory_format=torch.channels_last)
    return x


def predict_logits(model: torch.nn.Module, images: torch.Tensor, covariates: torch.Tensor, preprocess: Preprocess,
                    batch_size: int, precision: str) -> torch.Tensor:
    """Logits (fp32) for (N, K, S, S) uint8 images and (N, D) covariates, in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode(), autocast(precision):
        for start in range(0, len(images), batch_size):
            batch = slice(start, start + batch_size)
            out.append(model(to_network(images[batch], preprocess), covariates[batch]).float())
    return torch.cat(out) if out else torch.zeros((0, 2))
