"""The fast screening path: OpenCV decoding, the versioned preprocessing recipe, threaded prefetch."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

import osteopano.io.images as images
from osteopano.prepare.intensity import FAST_V2, FULL_V1, Preprocess
from osteopano.screen.prefetch import prefetch


def _pillow_only(monkeypatch, path):
    monkeypatch.setattr(images, "_cv2_decode", lambda *a, **k: None)
    try:
        return images.read_image(path)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("kind", ["grey8", "grey16", "rgb", "rgba", "jpeg-grey", "jpeg-rgb"])
def test_opencv_decode_gives_pillows_pixels(kind, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    grey = cv2.GaussianBlur(rng.integers(0, 256, (90, 130), dtype=np.uint8), (5, 5), 0)
    arrays = {"grey8": grey, "grey16": (grey.astype(np.uint16) * 257 + 3),
              "rgb": np.dstack([grey, grey // 2, 255 - grey]), "rgba": np.dstack([grey, grey, grey // 3, grey]),
              "jpeg-grey": grey, "jpeg-rgb": np.dstack([grey, grey // 2, grey])}
    path = tmp_path / (f"{kind}.jpg" if kind.startswith("jpeg") else f"{kind}.png")
    Image.fromarray(arrays[kind]).save(path, **({"dpi": (254.0, 254.0)} if kind == "grey8" else {}))
    calls = []
    real = images._cv2_decode
    monkeypatch.setattr(images, "_cv2_decode", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    fast = images.read_image(path)
    monkeypatch.undo()
    slow = _pillow_only(monkeypatch, path)
    assert calls and calls[0] is not None and fast.pixels.dtype == np.float32  # OpenCV decoded it
    assert np.array_equal(fast.pixels, slow.pixels)
    assert (fast.bit_depth, fast.pixel_spacing_mm, fast.source_format, fast.chroma) == (
        slow.bit_depth, slow.pixel_spacing_mm, slow.source_format, slow.chroma)


def test_reduced_jpeg_decode_scales_size_and_spacing(tmp_path):
    grey = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (400, 800), dtype=np.uint8), (9, 9), 0)
    path = tmp_path / "big.jpg"
    Image.fromarray(grey).save(path, quality=95)
    full = images.read_image(path)
    reduced = images.read_image(path, reduce_to=100)  # 400 / 4 = 100 still >= 100; / 8 would not be
    assert full.pixels.shape == (400, 800) and reduced.pixels.shape == (100, 200)
    small = cv2.resize(full.pixels, (200, 100), interpolation=cv2.INTER_AREA)
    assert np.abs(small - reduced.pixels).mean() < 0.01
    png = tmp_path / "big.png"
    Image.fromarray(grey).save(png)
    assert images.read_image(png, reduce_to=100).pixels.shape == (400, 800)  # PNG: never reduced


def _full_v1_reference(pre: Preprocess, img: np.ndarray) -> np.ndarray:
    """The recipe as it was before recipes had names (window, CLAHE, then resize)."""
    lo, hi = np.percentile(img, [pre.window_low, pre.window_high])
    u8 = np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)
    u8 = cv2.createCLAHE(clipLimit=pre.clahe_clip, tileGridSize=(pre.clahe_grid,) * 2).apply(u8)
    return cv2.resize(u8, (pre.size, pre.size), interpolation=cv2.INTER_AREA)


def test_saved_configs_without_recipe_keep_the_old_recipe_bit_exact():
    img = cv2.GaussianBlur(np.random.default_rng(3).random((300, 610), dtype=np.float32), (7, 7), 0)
    old_dict = {k: v for k, v in Preprocess(size=64).to_dict().items() if k != "recipe"}
    old = Preprocess.from_dict(old_dict)
    assert old.recipe == FULL_V1 and Preprocess().recipe == FAST_V2
    assert np.array_equal(old.to_uint8(img), _full_v1_reference(old, img))
    fast = Preprocess(size=64)
    assert Preprocess.from_dict(fast.to_dict()) == fast
    out = fast.to_uint8(img)
    assert out.shape == (64, 64) and out.dtype == np.uint8 and out.min() < 10 and out.max() > 245
    assert not np.array_equal(out, old.to_uint8(img))  # a different recipe, not a relabelling
    assert fast.decode_side() == 128 and old.decode_side() is None
    flat = fast.to_uint8(np.full((50, 50), 0.7, np.float32))  # area averages of a flat image differ by 1 ulp
    assert flat.min() == flat.max()
    with pytest.raises(ValueError, match="unknown preprocessing recipe"):
        Preprocess(recipe="v9")


def test_prefetch_keeps_order_bounds_the_work_ahead_and_raises_at_the_item():
    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01 * (i % 3))
        with lock:
            running[0] -= 1
        if i == 7:
            raise ValueError("seven")
        return i * i

    got = []
    with pytest.raises(ValueError, match="seven"):
        for item, value in prefetch(range(20), slow_square, workers=3, ahead=4):
            got.append((item, value))
    assert got == [(i, i * i) for i in range(7)]
    assert 1 < peak[0] <= 3
    consumed = []
    source = (consumed.append(i) or i for i in range(1000))
    first = next(prefetch(source, lambda i: i, workers=2, ahead=5))
    assert first == (0, 0) and len(consumed) <= 6  # a lazy source is read only `ahead` items ahead


def test_truncated_file_is_refused_even_after_weasyprint_relaxed_pillow(tmp_path, monkeypatch, noise_u16):
    from PIL import ImageFile

    from osteopano.errors import ImageReadError

    images.write_png16(tmp_path / "full.png", noise_u16)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what `import weasyprint` does
    with pytest.raises(ImageReadError, match="cut.png.*truncated"):
        images.read_image(tmp_path / "cut.png")
