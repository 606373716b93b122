"""Grad-CAM on the full radiograph (osteopano.screen.explain): shape, range, localisation, target layer, overlays."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Grad-CAM needs torch (pip install 'osteopano[train]')")
timm = pytest.importorskip("timm", reason="Grad-CAM tests build timm backbones")
pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is not installed")

from torch import nn  # noqa: E402

from osteopano.screen import explain  # noqa: E402
from osteopano.errors import ModelError  # noqa: E402
from osteopano.prepare.chain import ModelInput  # noqa: E402
from osteopano.prepare.intensity import Preprocess  # noqa: E402
from osteopano.prepare.spec import ModelSpec  # noqa: E402
from osteopano.render.display import heatmap_overlay  # noqa: E402

H, W = 60, 100          # full-resolution test images (not square: the map must come back to W x H)
SQ_H, SQ_W = 15, 25     # the bright square (about 8 x 8 px in the 32 x 32 network input)
CLASSES = ["normal", "osteoporosis"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small nets run faster on one thread than on two shared with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image(rng: np.random.Generator, square: tuple[int, int] | None) -> np.ndarray:
    """Grey noise around 0.3, plus a bright SQ_H x SQ_W square with its top-left corner at ``square``."""
    img = np.clip(0.3 + 0.05 * rng.standard_normal((H, W)), 0, 1).astype(np.float32)
    if square is not None:
        y, x = square
        img[y:y + SQ_H, x:x + SQ_W] = 0.9
    return img


def _random_corner(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, H - SQ_H + 1)), int(rng.integers(0, W - SQ_W + 1))


def _squash(pixels: np.ndarray) -> np.ndarray:
    """The preprocessing of the square model: squash to 32 x 32, three channels, centred.

    (No percentile window: it would stretch the background of square-free images and
    hand the network a shortcut away from the square.)
    """
    small = cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_AREA)
    return np.repeat(small[None] - 0.5, 3, axis=0).astype(np.float32)


@pytest.fixture(scope="module")
def square_model(_one_thread) -> SimpleNamespace:
    """A tiny CNN trained (seconds, seeded) to call an image positive when it holds a bright square."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pre = _squash

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = np.arange(n) % 2
        x = np.stack([pre(_image(rng, _random_corner(rng) if label else None)) for label in y])
        return torch.from_numpy(x), torch.from_numpy(y)

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )
    x, y = batch(128)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    x_test, y_test = batch(40)
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.95, f"the square detector did not learn (held-out accuracy {accuracy:.2f})"
    return SimpleNamespace(model=net, spec=ModelSpec(classes=CLASSES))


def _cam(model: SimpleNamespace, image: np.ndarray, **kw) -> np.ndarray:
    """Grad-CAM of the square model, whose own input recipe (``_squash``) is passed as the model input."""
    return explain.gradcam(model, image, model_input=ModelInput(_squash(image), np.zeros(0, np.float32)), **kw)


def _box_mask(corner: tuple[int, int], margin: int = 0) -> np.ndarray:
    y, x = corner
    mask = np.zeros((H, W), bool)
    mask[max(0, y - margin):y + SQ_H + margin, max(0, x - margin):x + SQ_W + margin] = True
    return mask


@pytest.mark.parametrize("corner", [(5, 8), (40, 70)])
def test_heat_concentrates_on_the_square(square_model, corner):
    rng = np.random.default_rng(1)
    heat = _cam(square_model, _image(rng, corner))
    assert heat.shape == (H, W) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0 and heat.std() > 0.05
    inside = _box_mask(corner)
    assert heat[inside].mean() > 3 * heat[~inside].mean()
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert _box_mask(corner, margin=8)[peak], f"heat peak {peak} is not at the square {corner}"


def test_heat_follows_the_square(square_model):
    rng = np.random.default_rng(2)
    first = _cam(square_model, _image(rng, (5, 8)))
    second = _cam(square_model, _image(rng, (40, 70)))
    ys, xs = np.mgrid[:H, :W]
    centroid = [(float((h * ys).sum() / h.sum()), float((h * xs).sum() / h.sum())) for h in (first, second)]
    assert centroid[1][0] > centroid[0][0] + 15 and centroid[1][1] > centroid[0][1] + 30


def test_target_class_and_model_state(square_model):
    image = _image(np.random.default_rng(3), (20, 40))
    square_model.model.train()  # gradcam must hand the model back as it found it
    try:
        positive = _cam(square_model, image)
        by_name = _cam(square_model, image, target_class="osteoporosis")
        assert square_model.model.training
    finally:
        square_model.model.eval()
    np.testing.assert_array_equal(positive, by_name)
    negative = _cam(square_model, image, target_class=0)
    assert not np.allclose(negative, positive)
    with pytest.raises(ModelError, match="class"):
        _cam(square_model, image, target_class=5)
    with pytest.raises(ModelError, match="unknown class"):
        _cam(square_model, image, target_class="fracture")


@pytest.mark.parametrize(("backbone", "expected"), [("tf_efficientnet_lite0", "bn2"),
                                                    ("mobilenetv3_large_100", "blocks")])
def test_target_layer_of_timm_backbones(backbone, expected):
    model = timm.create_model(backbone, pretrained=False, num_classes=2).eval()
    layer = explain.target_layer(model, input_size=64)
    assert layer is model.get_submodule(expected)
    shapes = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 96))
    handle.remove()
    assert shapes == [(1, model.num_features, 3, 3)]  # the last (stride-32) feature map, before global pooling


def test_target_layer_without_feature_map():
    with pytest.raises(ModelError, match="no convolutional feature map"):
        explain.target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), input_size=8)


def test_gradcam_on_the_project_classifier():
    """The real Classifier (timm backbone + dense head, random weights): full-size maps in [0, 1] that
    depend on the input. A class whose score no region raises gets an all-zero map, so both are tried."""
    from osteopano.model.networks import create_model

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, weights="none").eval()
    run = SimpleNamespace(model=model, spec=ModelSpec(preprocess=Preprocess(size=96), classes=CLASSES))
    image = cv2.GaussianBlur(np.random.default_rng(4).random((90, 150), dtype=np.float32), (0, 0), 4)
    changed = image.copy()
    changed[10:40, 20:60] = 1.0
    informative = 0
    for target in (0, 1):
        heat = explain.gradcam(run, image, target_class=target)
        assert heat.shape == image.shape and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1
        if heat.std() > 0:
            informative += 1
            assert not np.allclose(explain.gradcam(run, changed, target_class=target), heat)
    assert informative >= 1


def test_heatmap_overlay():
    rng = np.random.default_rng(5)
    pixels = rng.random((40, 70), dtype=np.float32)
    heat = np.zeros_like(pixels)
    heat[10:20, 30:50] = 1.0
    image = heatmap_overlay(pixels, heat, alpha=0.5)
    assert image.shape == (40, 70, 3) and image.dtype == np.uint8
    cold, hot = image[~(heat > 0)], image[heat > 0]
    assert (cold[:, 0] == cold[:, 1]).all() and (cold[:, 1] == cold[:, 2]).all()  # no heat: plain grey
    assert np.abs(hot[:, 0].astype(int) - hot[:, 2].astype(int)).mean() > 20  # heat: coloured (TURBO red)
    assert hot[:, 0].mean() > hot[:, 2].mean()  # RGB order: hot is red, not blue
    with pytest.raises(ValueError, match="shape"):
        heatmap_overlay(pixels, heat[:, :10])
