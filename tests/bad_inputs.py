"""Generators for the bad-input suite (tests/test_bad_inputs.py): every kind is made here, seeded.

``READ_ERRORS``: files no reader should decode (damaged, truncated, not images, ambiguous frames).
``NOT_RADIOGRAPHS``: files that decode but are not dental panoramic radiographs (the gate's job).
Each maker writes one file into a folder and returns its path. A file named ``<kind>.<ext>``.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from osteopano.io.images import write_dicom

BASE_WIDTH = 800


@functools.cache
def phantom_u8(seed: int = 7, width: int = BASE_WIDTH) -> np.ndarray:
    """A synthetic panoramic (osteopano.phantom) as 8-bit grey, the base of the derived kinds."""
    from osteopano.phantom.generate import render

    return (render(seed, width=width).pixels // 257).astype(np.uint8)


def _png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each PNG chunk."""
    out, pos = [], 8
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((pos, ctype))
        pos += 12 + length
    return out


def _first_idat(data: bytes) -> tuple[int, int]:
    for pos, ctype in _chunks(data):
        if ctype == b"IDAT":
            return pos, struct.unpack(">I", data[pos:pos + 4])[0]
    raise AssertionError("no IDAT")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- read errors


def _flipped_idat(folder: Path) -> Path:
    data = bytearray(_png_bytes(phantom_u8()))
    pos, length = _first_idat(bytes(data))
    data[pos + 8 + length // 3] ^= 0x5A  # a flipped byte inside the compressed image data
    return _write(folder / "flipped-idat.png", bytes(data))


def _flipped_idat_fixed_crc(folder: Path) -> Path:
    """A damaged IDAT whose CRC was recomputed: the zlib stream itself is then wrong."""
    data = bytearray(_png_bytes(phantom_u8()))
    pos, length = _first_idat(bytes(data))
    data[pos + 8 + length // 2] ^= 0x5A
    body = bytes(data[pos + 4:pos + 8 + length])
    data[pos + 8 + length:pos + 12 + length] = struct.pack(">I", zlib.crc32(body))
    return _write(folder / "flipped-idat-fixed-crc.png", bytes(data))


def _no_iend(folder: Path) -> Path:
    data = _png_bytes(phantom_u8())
    return _write(folder / "no-iend.png", data[:-12])


def _bad_ihdr_crc(folder: Path) -> Path:
    data = bytearray(_png_bytes(phantom_u8()))
    data[29] ^= 0xFF  # IHDR CRC
    return _write(folder / "bad-ihdr-crc.png", bytes(data))


def _zero_width_png(folder: Path) -> Path:
    data = bytearray(_png_bytes(phantom_u8()[:8, :8]))
    data[16:20] = b"\0\0\0\0"  # width 0, CRC fixed
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return _write(folder / "zero-width.png", bytes(data))


def _bomb_header(folder: Path) -> Path:
    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    return _write(folder / "bomb-header.png", data)


def _dicom(folder: Path, name: str, pixels: np.ndarray, spacing: float | None = 0.1, **tags) -> Path:
    path = folder / name
    write_dicom(path, pixels, spacing, uid_seed=name, **tags)
    return path


def _multiframe_dicom(folder: Path) -> Path:
    import pydicom

    base = (phantom_u8().astype(np.uint16) * 16)
    path = _dicom(folder, "multi-frame.dcm", base, BitsStored=12)
    ds = pydicom.dcmread(path)
    ds.set_pixel_data(np.stack([base, base[::-1].copy()]), "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)
    return path


def _truncated_dicom(folder: Path) -> Path:
    path = _dicom(folder, "truncated.dcm", phantom_u8().astype(np.uint16) * 16, BitsStored=12)
    data = path.read_bytes()
    return _write(path, data[: len(data) * 2 // 3])


def _dicom_no_pixels(folder: Path) -> Path:
    import pydicom

    path = _dicom(folder, "no-pixel-data.dcm", np.zeros((16, 16), np.uint16))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    return path


def _stretched_pixels_dicom(folder: Path) -> Path:
    path = folder / "pixel-aspect-3.dcm"
    write_dicom(path, phantom_u8().astype(np.uint16) * 16, None, uid_seed="aspect", BitsStored=12,
                PixelSpacing=[0.1, 0.3])
    return path


def _multipage_tiff(folder: Path) -> Path:
    pages = [Image.fromarray(phantom_u8(s)) for s in (7, 8)]
    path = folder / "multi-page.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def _animated_png(folder: Path) -> Path:
    frames = [Image.fromarray(phantom_u8(s)) for s in (7, 8)]
    path = folder / "animated.png"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def _truncated_tiff(folder: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(phantom_u8()).save(buf, format="TIFF")
    return _write(folder / "truncated.tif", buf.getvalue()[:-5000])


def _truncated_bmp(folder: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(phantom_u8()).save(buf, format="BMP")
    return _write(folder / "truncated.bmp", buf.getvalue()[: len(buf.getvalue()) // 2])


READ_ERRORS: dict[str, Callable[[Path], Path]] = {
    "empty-file": lambda d: _write(d / "empty.png", b""),
    "text-as-png": lambda d: _write(d / "notes.png", b"Patient notes: nothing to see\n" * 40),
    "html-as-jpeg": lambda d: _write(d / "page.jpg", b"<html><body><script>alert(1)</script></body></html>"),
    "random-bytes": lambda d: _write(d / "random.png", np.random.default_rng(1).bytes(4096)),
    "zip-as-png": lambda d: _write(d / "archive.png", b"PK\x03\x04" + b"\0" * 200),
    "pdf-as-tiff": lambda d: _write(d / "scan.tif", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" * 5),
    "png-signature-only": lambda d: _write(d / "signature-only.png", b"\x89PNG\r\n\x1a\n"),
    "truncated-png": lambda d: _write(d / "truncated.png", _png_bytes(phantom_u8())[:4000]),
    "png-flipped-idat-byte": _flipped_idat,
    "png-flipped-byte-crc-fixed": _flipped_idat_fixed_crc,
    "png-without-iend": _no_iend,
    "png-bad-ihdr-crc": _bad_ihdr_crc,
    "png-zero-width": _zero_width_png,
    "png-bomb-header": _bomb_header,
    "truncated-jpeg": lambda d: _write(d / "truncated.jpg", _jpeg_bytes(phantom_u8())[:3000]),
    "jpeg-without-eoi": lambda d: _write(d / "no-eoi.jpg", _jpeg_bytes(phantom_u8())[:-2]),
    "jpeg-header-only": lambda d: _write(d / "header-only.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
    "truncated-tiff": _truncated_tiff,
    "truncated-bmp": _truncated_bmp,
    "multi-page-tiff": _multipage_tiff,
    "animated-png": _animated_png,
    "multi-frame-dicom": _multiframe_dicom,
    "truncated-dicom": _truncated_dicom,
    "dicom-without-pixels": _dicom_no_pixels,
    "dicom-pixel-aspect-3": _stretched_pixels_dicom,
}


# ----------------------------------------------------------------------------- not radiographs


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def _grey(arr: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).convert("L"))


def _document() -> np.ndarray:
    import cv2

    page = np.full((700, 1400), 238, np.uint8)
    for i in range(20):
        cv2.putText(page, f"Referral letter line {i}: please book a bone density scan", (40, 40 + i * 32),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, 25, 2)
    return page


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 1200).astype(np.uint8), (600, 1))


def _noise() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (600, 1200), dtype=np.uint8)


def _blurred() -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(phantom_u8(), (0, 0), 25)


def _png(name: str, arr_fn: Callable[[], np.ndarray]) -> Callable[[Path], Path]:
    return lambda d: _write(d / f"{name}.png", _png_bytes(arr_fn()))


def _jpg(name: str, arr_fn: Callable[[], np.ndarray]) -> Callable[[Path], Path]:
    return lambda d: _write(d / f"{name}.jpg", _jpeg_bytes(arr_fn()))


NOT_RADIOGRAPHS: dict[str, Callable[[Path], Path]] = {
    "all-black": _png("black", lambda: np.zeros((600, 1200), np.uint8)),
    "all-white": _png("white", lambda: np.full((600, 1200), 255, np.uint8)),
    "uniform-grey": _png("grey", lambda: np.full((600, 1200), 128, np.uint8)),
    "noise": _png("noise", _noise),
    "noise-16-bit": lambda d: _write(d / "noise16.png", _png_bytes(
        np.random.default_rng(3).integers(0, 65536, (600, 1200), dtype=np.uint16))),
    "scanned-document": _png("document", _document),
    "one-pixel": _png("one-pixel", lambda: np.array([[128]], np.uint8)),
    "tiny": _png("tiny", lambda: np.asarray(Image.fromarray(phantom_u8()).resize((64, 31)))),
    "cat-photo": _jpg("cat", lambda: _skimage("chelsea")),
    "astronaut-photo": _jpg("astronaut", lambda: _skimage("astronaut")),
    "colour-photo": _jpg("coffee", lambda: _skimage("coffee")),
    "grey-photo-square": _png("astronaut-grey", lambda: _grey(_skimage("astronaut"))),
    "camera-photo": _png("camera", lambda: _skimage("camera")),
    "text-image": _png("text", lambda: _skimage("text")),
    "checkerboard": _png("checkerboard", lambda: _skimage("checkerboard")),
    "gradient": _png("gradient", _gradient),
    "inverted-radiograph": _png("inverted", lambda: 255 - phantom_u8()),
    "rotated-radiograph": _png("rotated", lambda: np.ascontiguousarray(np.rot90(phantom_u8()))),
    "upside-down-radiograph": _png("upside-down", lambda: np.ascontiguousarray(phantom_u8()[::-1])),
    "crop-of-teeth": _png("teeth-crop", lambda: phantom_u8()[130:260, 250:550].copy()),
    "blurred-radiograph": _png("blurred", _blurred),
    "rescale-slope-0-dicom": lambda d: _dicom(d, "slope-0.dcm", phantom_u8().astype(np.uint16) * 16,
                                              BitsStored=12, RescaleSlope=0, RescaleIntercept=100),
    "constant-dicom": lambda d: _dicom(d, "constant.dcm", np.full((400, 800), 2000, np.uint16), BitsStored=12),
}

ALL_KINDS = {**READ_ERRORS, **NOT_RADIOGRAPHS}


def make_all(folder: Path) -> dict[str, Path]:
    """Write every kind into ``folder``; kind -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {kind: make(folder) for kind, make in ALL_KINDS.items()}
