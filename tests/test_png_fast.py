"""osteopano.io.png_fast: the ISA-L + numpy PNG decode gives cv2.imdecode's array bit for bit where it
applies (non-interlaced 8/16-bit grey/RGB/RGBA, rows filtered None/Sub/Up), declines everything else
(Average/Paeth rows, interlace, palette, no isal) so libpng decodes as before, and refuses a damaged
zlib stream. Real radiographs from ../shared when it is there; synthetic PNGs always."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from osteopano.errors import ImageReadError
from osteopano.io import images
from osteopano.io.integrity import CorruptImage, check_png
from osteopano.io.png_fast import decode_png, running_sums, unfilter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-samples"
NONE, SUB, UP, AVERAGE, PAETH = range(5)


# ----------------------------------------------------------------------------- helpers


def _cv2(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert arr is not None
    return arr


def _fast(data: bytes) -> np.ndarray | None:
    walk = check_png(io.BytesIO(data), inflate=False, keep=True)
    return decode_png(walk["ihdr"], walk["idat"])


def _same(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _filter_row(row: np.ndarray, prev: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    """One scanline (uint8 bytes) filtered with ``kind`` against the previous (unfiltered) one."""
    x = row.astype(np.int32)
    up = prev.astype(np.int32)
    left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
    if kind == NONE:
        pred = np.zeros_like(x)
    elif kind == SUB:
        pred = left
    elif kind == UP:
        pred = up
    elif kind == AVERAGE:
        pred = (left + up) // 2
    else:  # Paeth
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    return ((x - pred) % 256).astype(np.uint8)


def _png(pixels: np.ndarray, kinds, *, idat_pieces: int = 2, stream: bytes | list[bytes] | None = None,
         extra: bytes = b"") -> bytes:
    """A PNG written by hand: each row filtered with ``kinds[y]``; the zlib stream (or ``stream``) split
    over ``idat_pieces`` IDAT chunks (a list: one chunk each); ``extra`` chunks after IHDR."""
    arr = np.asarray(pixels)
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    depth = 16 if arr.dtype == np.uint16 else 8
    colour = {1: 0, 3: 2, 4: 6}[channels]
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    rows = rows.reshape(height, width * channels * depth // 8)
    bpp = channels * depth // 8
    prev = np.zeros(rows.shape[1], np.uint8)
    raw = bytearray()
    for y in range(height):
        raw.append(kinds[y])
        raw += _filter_row(rows[y], prev, kinds[y], bpp).tobytes()
        prev = rows[y]
    data = zlib.compress(bytes(raw), 6) if stream is None else stream
    if isinstance(data, list):
        idats = b"".join(_chunk(b"IDAT", piece) for piece in data)
    else:
        step = -(-len(data) // idat_pieces)
        idats = b"".join(_chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + idats + _chunk(b"IEND", b"")


def _image(shape, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth content with noise (so every filter changes the bytes)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    base = cv2.GaussianBlur(rng.random(shape[:2]).astype(np.float32), (7, 7), 0)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    if len(shape) == 3:
        base = np.dstack([np.roll(base, 3 * c, axis=1) for c in range(shape[2])])
    noisy = base * 0.8 * top + rng.integers(0, max(2, top // 20), shape)
    return np.clip(noisy, 0, top).astype(dtype)


def _read(data: bytes, monkeypatch, name: str = "x.png"):
    """read_image_bytes, and whether it fell back to cv2.imdecode."""
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    try:
        return images.read_image_bytes(data, name), bool(calls)
    finally:
        monkeypatch.setattr(images.cv2, "imdecode", real)


# ----------------------------------------------------------------------------- real radiographs


def test_real_pngs_decode_bit_identical_on_the_fast_path(monkeypatch):
    files = sorted(REAL.rglob("*.png")) if REAL.is_dir() else []
    if not files:
        pytest.skip(f"no real PNG radiographs under {REAL} (they live beside the checkout)")
    for path in files:
        data = path.read_bytes()
        reference = _cv2(data)
        assert _same(_fast(data), reference), path.name
        image, fell_back = _read(data, monkeypatch, path.name)
        assert not fell_back, f"{path.name}: read_image did not take the fast path"
        scale = 65535.0 if reference.dtype == np.uint16 else 255.0
        if reference.ndim == 2:
            np.testing.assert_array_equal(image.pixels, reference.astype(np.float32) / np.float32(scale))


# ----------------------------------------------------------------------------- synthetic PNGs


@pytest.mark.parametrize("shape, dtype", [((37, 53), np.uint8), ((37, 53), np.uint16),
                                          ((29, 41, 3), np.uint8), ((29, 41, 4), np.uint8),
                                          ((23, 31, 3), np.uint16)])
def test_opencv_written_pngs_decode_identically(shape, dtype):
    ok, buf = cv2.imencode(".png", _image(shape, dtype))
    data = buf.tobytes()
    assert ok and _same(_fast(data), _cv2(data))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pillow_optimized_pngs_decode_identically_or_fall_back(dtype, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(_image((48, 70), dtype, seed=4)).save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    fast = _fast(data)
    assert fast is None or _same(fast, _cv2(data))
    image, fell_back = _read(data, monkeypatch)
    assert fell_back == (fast is None)
    monkeypatch.setattr(images, "_cv2_decode", lambda *a, **k: None)  # Pillow alone
    np.testing.assert_array_equal(image.pixels, images.read_image_bytes(data).pixels)


@pytest.mark.parametrize("shape, dtype", [((40, 33), np.uint8), ((40, 33), np.uint16),
                                          ((31, 17, 3), np.uint8), ((31, 17, 4), np.uint8),
                                          ((25, 19, 4), np.uint16)])
@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_none_sub_up_rows_decode_identically(shape, dtype, seed):
    kinds = np.random.default_rng(seed).choice([NONE, SUB, UP], size=shape[0]).tolist()
    kinds[:3] = [UP, UP, SUB]  # an Up run at the top (it refers to zeros), then runs after Sub
    kinds[-4:] = [UP] * 4
    data = _png(_image(shape, dtype, seed), kinds, idat_pieces=3)
    assert _same(_fast(data), _cv2(data))


def test_ancillary_chunks_change_nothing():
    """gAMA, sBIT, pHYs and tEXt are not applied to the pixels by libpng here either."""
    arr = _image((26, 35), np.uint16, seed=9)
    extra = (_chunk(b"gAMA", struct.pack(">I", 100_000)) + _chunk(b"sBIT", b"\x0c")
             + _chunk(b"pHYs", struct.pack(">IIB", 10_000, 10_000, 1)) + _chunk(b"tEXt", b"Comment\0scan"))
    data = _png(arr, [SUB] * 26, extra=extra)
    assert _same(_fast(data), _cv2(data)) and np.array_equal(_fast(data), arr)


def test_unfilter_handles_every_up_run_layout():
    """Up rows alone, in runs, at the top and at the bottom, against a row-by-row reference."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    for kinds in ([UP] * 12, [SUB] + [UP] * 11, [NONE, UP, SUB, UP, UP, NONE, NONE, UP, SUB, SUB, UP, UP],
                  [SUB] * 11 + [UP]):
        kinds = np.array(kinds, np.uint8)
        expected = np.zeros_like(data)
        for y in range(12):
            row = data[y].astype(np.int64)
            if kinds[y] == SUB:
                row = np.cumsum(row.reshape(-1, 2), axis=0).reshape(-1)  # bpp 2
            elif kinds[y] == UP:
                row = row + (expected[y - 1] if y else 0)
            expected[y] = row % 256
        assert np.array_equal(unfilter(data, kinds, 2), expected), kinds.tolist()


@pytest.mark.parametrize("bpp", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("pixels", [1, 2, 5, 64, 257])
def test_running_sums_are_cumulative_sums_per_byte_lane(bpp, pixels):
    data = np.random.default_rng(bpp * pixels).integers(0, 256, (7, pixels * bpp + 1), dtype=np.uint8)[:, 1:]
    expected = np.cumsum(data.reshape(7, pixels, bpp), axis=1, dtype=np.uint8).reshape(7, -1)
    got = running_sums(data, bpp)
    assert got.flags.c_contiguous and np.array_equal(got, expected)


@pytest.mark.parametrize("kind", [AVERAGE, PAETH])
def test_average_or_paeth_rows_fall_back_to_libpng(kind, monkeypatch):
    arr = _image((60, 45), seed=2)
    for kinds in ([kind] * 60, [SUB] * 59 + [kind]):  # at the start (the probe) or after it
        data = _png(arr, kinds)
        assert _fast(data) is None
        image, fell_back = _read(data, monkeypatch)
        assert fell_back
        np.testing.assert_array_equal(image.pixels, _cv2(data).astype(np.float32) / np.float32(255))


def test_interlaced_palette_and_low_bit_depth_pngs_fall_back():
    arr = _image((30, 40), seed=3)
    buf = io.BytesIO()
    Image.fromarray(arr).convert("P").save(buf, format="PNG")
    palette = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(arr > 128).save(buf, format="PNG")
    bilevel = buf.getvalue()
    ok, buf = cv2.imencode(".png", arr)  # OpenCV writes no interlace: the IHDR flag set by hand
    walk = check_png(io.BytesIO(buf.tobytes()), inflate=False, keep=True)
    assert ok and decode_png(walk["ihdr"], walk["idat"]) is not None
    assert decode_png(walk["ihdr"][:12] + b"\x01", walk["idat"]) is None
    assert _fast(palette) is None and _fast(bilevel) is None


def test_pngs_without_isal_decode_by_libpng(monkeypatch):
    _, buf = cv2.imencode(".png", _image((30, 40)))
    data = buf.tobytes()
    monkeypatch.setitem(sys.modules, "isal", None)  # `import isal` now raises ImportError
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    assert _fast(data) is None
    image, fell_back = _read(data, monkeypatch)
    assert fell_back
    np.testing.assert_array_equal(image.pixels, _cv2(data).astype(np.float32) / np.float32(255))


def test_the_phantoms_pngs_decode_identically(tmp_path, monkeypatch):
    from osteopano.phantom.generate import generate

    generate(tmp_path, 2, seed=3, width=400, masks=True, progress=False, workers=1)
    files = sorted(tmp_path.rglob("*.png"))
    assert files
    for path in files:
        data = path.read_bytes()
        fast = _fast(data)
        assert fast is None or _same(fast, _cv2(data)), path.name
        image = images.read_image(path)
        with monkeypatch.context() as m:
            m.setattr(images, "_cv2_decode", lambda *a, **k: None)  # Pillow alone
            np.testing.assert_array_equal(image.pixels, images.read_image(path).pixels, err_msg=path.name)
    # the images (Pillow, adaptive filters) use Paeth rows; some masks (OpenCV) only None/Sub/Up
    assert any(_fast(p.read_bytes()) is not None for p in files)


# ----------------------------------------------------------------------------- damaged streams


def _rows(arr: np.ndarray) -> bytes:
    return b"".join(b"\x01" + _filter_row(r, np.zeros_like(r), SUB, 1).tobytes() for r in arr)


def test_a_stream_too_short_or_too_long_is_refused():
    arr = _image((20, 30), seed=6)
    short = _png(arr, [SUB] * 20, stream=zlib.compress(_rows(arr[:-1])))
    long = _png(arr, [SUB] * 20, stream=zlib.compress(_rows(np.vstack([arr, arr[:1]]))))
    with pytest.raises(CorruptImage, match="589 bytes where IHDR implies 620"):
        _fast(short)
    with pytest.raises(CorruptImage, match="more than the 620 bytes IHDR implies"):
        _fast(long)
    for data in (short, long):
        with pytest.raises(ImageReadError, match=r"x\.png.*corrupt PNG image data"):
            images.read_image_bytes(data, "x.png")


def test_a_bad_adler32_is_refused_in_zlibs_words():
    arr = _image((20, 30), seed=7)
    stream = zlib.compress(_rows(arr))
    # the Adler-32 damaged and in an IDAT chunk of its own: libpng meets it after the last row, warns, decodes
    data = _png(arr, [SUB] * 20, stream=[stream[:-4], bytes(b ^ 0x01 for b in stream[-4:])])
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(CorruptImage, match="corrupt PNG image data"):
        _fast(data)
    with pytest.raises(ImageReadError, match=r"x\.png.*corrupt PNG image data.*incorrect data check"):
        images.read_image_bytes(data, "x.png")


def test_bytes_after_the_stream_fall_back_to_libpng(monkeypatch):
    arr = _image((20, 30), seed=8)
    data = _png(arr, [SUB] * 20, stream=zlib.compress(_rows(arr)) + b"\0\0\0")
    assert _fast(data) is None
    image, fell_back = _read(data, monkeypatch)
    assert fell_back and image.pixels.shape == (20, 30)


def test_a_zip_bomb_is_refused_without_inflating_it_whole():
    arr = _image((20, 30), seed=10)
    bomb = zlib.compress(_rows(arr) + bytes(20_000_000), 9)  # 20 MB of zeros after the rows: ~20 kB
    data = _png(arr, [SUB] * 20, stream=bomb)
    with pytest.raises(CorruptImage, match="more than the 620 bytes IHDR implies"):
        _fast(data)
    with pytest.raises(ImageReadError, match=r"x\.png.*corrupt PNG image data"):
        images.read_image_bytes(data, "x.png")


def test_the_pixel_limit_is_applied_before_png_fast_decodes(monkeypatch):
    _, buf = cv2.imencode(".png", _image((40, 50)))
    monkeypatch.setattr(images, "decode_png", lambda *a: pytest.fail("decoded an image above the limit"))
    with pytest.raises(ImageReadError, match="above the limit of 1000"):
        images.read_image_bytes(buf.tobytes(), "big.png", max_pixels=1000)
