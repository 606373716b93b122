"""Grad-CAM heatmaps on the full radiograph: where in the image the classifier looked.

The network sees the radiograph squashed to S x S (``Preprocess``). Grad-CAM
(the ``grad-cam`` library) is computed on that tensor for the positive class
(or any class asked for), then the S x S map is resized straight back to the
radiograph's own W x H: squashing is a plain resize, so its inverse is one too.

ROI models (``osteopano.prepare.roi``) see two cortex crops instead: Grad-CAM runs on
both crops at once (one backward pass through the shared backbone, each crop's
map normalised on its own) and each crop's map is drawn back onto the full
image through the crop's inverse affine (``roi.crop_to_image``); the rest of
the image gets 0. Covariates are held fixed at the case's values.

The target layer is the last convolutional feature map the backbone makes
before global pooling (``target_layer``), found by watching one forward pass,
so any timm CNN works without a per-architecture table.

Grad-CAM always runs in fp32 (autocast off), whatever precision training used.
Overlays are uint8 H x W x 3 RGB (what PIL, matplotlib and the web page
expect); ``save_overlay`` converts to OpenCV's BGR for ``cv2.imwrite``.

torch and grad-cam are imported inside the functions that need them, so the
overlay helpers also work on the torch-free ONNX path.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from osteopano.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

    from osteopano.io.images import Radiograph

PROBE_SIZE = 224  # input side used to find the target layer (a typical CNN ends 7x7 there)


def _pixels(radiograph: Radiograph | np.ndarray) -> np.ndarray:
    """A Radiograph's pixels (or the array itself) as float32 H x W in [0, 1]."""
    pixels = np.asarray(getattr(radiograph, "pixels", radiograph), dtype=np.float32)
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"expected a 2-D grey radiograph, got shape {pixels.shape}")
    return pixels


def target_layer(model: nn.Module, input_size: int = PROBE_SIZE) -> nn.Module:
    """The module making the model's last spatial feature map (the Grad-CAM target).

    One no-grad forward pass of a blank ``input_size`` square with forward hooks on
    every submodule; the answer is the last module to finish whose output is a
    4-D (N, C, H, W) tensor with H, W > 1 - i.e. the last conv stage before global
    pooling (EfficientNet: ``bn2`` = conv_head + BN + activation; MobileNetV3:
    ``blocks``, since its ``conv_head`` comes after pooling). ModelError when
    there is none (e.g. a vision transformer).
    """
    import torch

    param = next(model.parameters())
    seen: list[nn.Module] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
            seen.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not seen:
        raise ModelError(f"{type(model).__name__}: no convolutional feature map found for Grad-CAM "
                         f"(input {input_size}x{input_size})")
    return seen[-1]


def _class_index(run_model: Any, target_class: int | str | None) -> int:
    """The output index to explain: the positive class by default, else an index or a class name."""
    classes = list(run_model.spec.classes)
    if target_class is None:
        return run_model.spec.positive_index
    if isinstance(target_class, str):
        if target_class not in classes:
            raise ModelError(f"unknown class {target_class!r} (the model's classes: {', '.join(classes)})")
        return classes.index(target_class)
    if not 0 <= int(target_class) < len(classes):
        raise ModelError(f"class index {target_class} out of range (the model has {len(classes)} classes)")
    return int(target_class)


def _crop_batch(model: nn.Module, k: int, covariates: Any) -> nn.Module:
    """``model`` (crops + covariates) wrapped so Grad-CAM can feed the K crops of ONE case as a batch of K."""
    from torch import nn

    class CropBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            n = x.shape[0] // k
            cov = None if covariates is None else covariates.expand(n, -1)
            return self.model(x.view(n, k, *x.shape[1:]) if k > 1 else x, cov)

    return CropBatch()


def gradcam(run_model: Any, radiograph: Radiograph | np.ndarray, *,
            target_class: int | str | None = None, model_input: Any = None) -> np.ndarray:
    """Grad-CAM of ``run_model`` (a ``RunModel``: ``.model``, ``.spec``) on one radiograph.

    Returns float32 (H, W) in [0, 1] at the radiograph's full resolution (all zeros
    when nothing in the image raises the target class's score). ``target_class``:
    None = the positive class, or a class index or name. ``model_input``: the
    ``prepare.chain.ModelInput`` the engine screened (ROI crops with their affines, covariates);
    None = ``prepare`` it here (whole-image models without covariates).
    """
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    pixels = _pixels(radiograph)
    index = _class_index(run_model, target_class)
    model = run_model.model
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = copy.deepcopy(model).float()  # never change the caller's model
    device = next(model.parameters()).device
    net, affines, probe = model, None, model
    if model_input is None:
        from osteopano.io.images import from_array
        from osteopano.prepare.chain import prepare

        model_input = prepare(from_array(pixels), run_model.spec)
    if model_input.affines is None and not len(model_input.covariates):
        x = torch.from_numpy(np.ascontiguousarray(model_input.x, np.float32)[None]).to(device)
    else:
        x = torch.from_numpy(np.ascontiguousarray(model_input.x, np.float32)).to(device)
        affines = model_input.affines
        crops = x.shape[0] if x.ndim == 4 else 1
        x = x.reshape(-1, *x.shape[-3:])
        cov = torch.from_numpy(np.asarray(model_input.covariates, np.float32)[None]).to(device)
        net, probe = _crop_batch(model, crops, cov if cov.shape[1] else None), model.backbone
    x.requires_grad_(True)  # gradients reach the feature map even when the weights are frozen
    layer = target_layer(probe, input_size=x.shape[-1])
    was_training = model.training
    cam = GradCAM(model=net, target_layers=[layer])  # puts the model in eval mode
    try:
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])
    finally:
        cam.activations_and_grads.release()
        model.train(was_training)
    h, w = pixels.shape
    if affines is None:
        full = cv2.resize(np.asarray(maps[0], np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        from osteopano.prepare.roi import crop_to_image

        full = np.max([crop_to_image(m, a, (h, w)) for m, a in zip(maps, affines)], axis=0)
    return np.clip(full, 0.0, 1.0).astype(np.float32)
