"""osteopano.io.images: round trips for every format, DICOM transforms, and every kind of bad file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from osteopano.errors import ImageReadError
from osteopano.io.images import (
    IMAGE_SUFFIXES,
    Radiograph,
    from_array,
    read_image,
    read_image_bytes,
    write_dicom,
    write_png16,
)


def _gradient_u8(height: int = 64, width: int = 96) -> np.ndarray:
    """A smooth 8-bit image (survives JPEG with small error)."""
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 2 + y) % 256).astype(np.uint8)


# ----------------------------------------------------------------------------- round trips


def test_png16_round_trip_preserves_values(tmp_path: Path, noise_u16: np.ndarray) -> None:
    path = tmp_path / "a.png"
    write_png16(path, noise_u16)
    image = read_image(path)
    assert isinstance(image, Radiograph)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == noise_u16.shape
    assert image.bit_depth == 16 and image.source_format == "png"
    assert image.path == str(path) and image.pixel_spacing_mm is None
    np.testing.assert_array_equal(np.round(image.pixels * 65535).astype(np.uint16), noise_u16)


def test_png16_holding_12_bit_data_maps_by_65535(tmp_path: Path) -> None:
    data = np.full((64, 64), 4095, dtype=np.uint16)
    write_png16(tmp_path / "a.png", data)
    image = read_image(tmp_path / "a.png")
    assert image.bit_depth == 16
    assert image.pixels.max() == pytest.approx(4095 / 65535)


def test_png8_round_trip(tmp_path: Path) -> None:
    data = _gradient_u8()
    Image.fromarray(data).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.bit_depth == 8 and image.source_format == "png"
    np.testing.assert_allclose(image.pixels, data / 255.0, atol=1e-7)


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 255.0), (np.uint16, 65535.0)])
def test_tiff_round_trip(tmp_path: Path, dtype: type, scale: float) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, int(scale) + 1, size=(80, 64)).astype(dtype)
    Image.fromarray(data).save(tmp_path / "a.tif")
    image = read_image(tmp_path / "a.tif")
    assert image.source_format == "tiff"
    assert image.bit_depth == np.dtype(dtype).itemsize * 8
    np.testing.assert_allclose(image.pixels, data / scale, atol=1e-7)


def test_bmp_round_trip(tmp_path: Path) -> None:
    data = _gradient_u8()
    Image.fromarray(data).save(tmp_path / "a.bmp")
    image = read_image(tmp_path / "a.bmp")
    assert image.source_format == "bmp" and image.bit_depth == 8
    np.testing.assert_allclose(image.pixels, data / 255.0, atol=1e-7)


def test_jpeg_round_trip_within_compression_error(tmp_path: Path) -> None:
    data = _gradient_u8()
    Image.fromarray(data).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.source_format == "jpeg" and image.bit_depth == 8
    assert image.pixels.shape == data.shape
    assert np.abs(image.pixels - data / 255.0).mean() < 0.02


def test_rgb_with_grey_content_becomes_that_grey(tmp_path: Path) -> None:
    grey = _gradient_u8()
    Image.fromarray(np.dstack([grey] * 3)).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png")
    assert image.pixels.ndim == 2
    np.testing.assert_allclose(image.pixels, grey / 255.0, atol=1e-6)


def test_real_colour_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    image = read_image(tmp_path / "red.png")
    np.testing.assert_allclose(image.pixels, 0.299, atol=1e-3)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((64, 128), dtype=np.uint8)  # 128 wide, 64 high
    stored[:, :64] = 255  # left half bright
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "rot.jpg")
    assert image.pixels.shape == (128, 64)
    # After a clockwise turn the stored left half is the displayed top half.
    assert image.pixels[:64].mean() > 0.9 and image.pixels[64:].mean() < 0.1


def test_png_phys_metric_spacing_is_read_but_screen_dpi_is_not(tmp_path: Path) -> None:
    data = _gradient_u8()
    Image.fromarray(data).save(tmp_path / "detector.png", dpi=(254, 254))  # 10000 px/m
    Image.fromarray(data).save(tmp_path / "screen.png", dpi=(96, 96))
    assert read_image(tmp_path / "detector.png").pixel_spacing_mm == pytest.approx(0.1)
    assert read_image(tmp_path / "screen.png").pixel_spacing_mm is None


def test_tiff_resolution_in_cm_is_read_but_inches_are_not(tmp_path: Path) -> None:
    data = _gradient_u8()
    Image.fromarray(data).save(tmp_path / "cm.tif", resolution=80.0, resolution_unit=3)
    Image.fromarray(data).save(tmp_path / "inch.tif", resolution=300.0, resolution_unit=2)
    assert read_image(tmp_path / "cm.tif").pixel_spacing_mm == pytest.approx(0.125)
    assert read_image(tmp_path / "inch.tif").pixel_spacing_mm is None


def test_from_array_scales_by_dtype() -> None:
    u8 = from_array(np.full((4, 4), 51, dtype=np.uint8), pixel_spacing_mm=0.1)
    assert u8.source_format == "array" and u8.bit_depth == 8
    assert u8.pixels.dtype == np.float32 and u8.pixels.max() == pytest.approx(0.2)
    assert u8.pixel_spacing_mm == 0.1
    assert from_array(np.full((4, 4), 65535, dtype=np.uint16)).pixels.min() == 1.0
    inside = np.linspace(0.2, 0.7, 16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(from_array(inside).pixels, inside)
    outside = from_array(np.arange(16, dtype=np.float64).reshape(4, 4) * 100)
    assert outside.pixels.min() == 0.0 and outside.pixels.max() == 1.0
    with pytest.raises(ValueError):
        from_array(np.zeros((4, 4), dtype=np.int64))


def test_image_suffixes_contract() -> None:
    assert IMAGE_SUFFIXES == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


# ----------------------------------------------------------------------------- DICOM


def _stored_12bit() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 4096, size=(64, 80)).astype(np.uint16)


def test_dicom_pixel_spacing_patient_id_and_no_name(tmp_path: Path) -> None:
    data = _stored_12bit()
    path = tmp_path / "a.dcm"
    write_dicom(path, data, 0.1, patient_id="P007", BitsStored=12)
    image = read_image(path)
    assert image.source_format == "dicom" and image.bit_depth == 12
    assert image.pixel_spacing_mm == pytest.approx(0.1)
    assert image.patient_id == "P007"
    np.testing.assert_allclose(image.pixels, data / 4095.0, atol=1e-6)
    assert str(pydicom.dcmread(path).PatientName) == ""  # present (type 2) and empty: no name is written


def test_dicom_imager_pixel_spacing_only(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    write_dicom(path, _stored_12bit(), None, BitsStored=12, ImagerPixelSpacing=[0.12, 0.12])
    assert "PixelSpacing" not in pydicom.dcmread(path)
    assert read_image(path).pixel_spacing_mm == pytest.approx(0.12)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    data = _stored_12bit()
    write_dicom(tmp_path / "m1.dcm", data, 0.1, photometric="MONOCHROME1", BitsStored=12)
    image = read_image(tmp_path / "m1.dcm")
    np.testing.assert_allclose(image.pixels, 1.0 - data / 4095.0, atol=1e-6)


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    # Stored 400/600/700 -> modality 2x-100 = 700/1100/1300; window 1000 +- 200.
    data = np.array([[400, 600, 700]] * 4, dtype=np.uint16)
    write_dicom(
        tmp_path / "w.dcm", data, 0.1, BitsStored=12,
        RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1000, WindowWidth=400,
    )
    row = read_image(tmp_path / "w.dcm").pixels[0]
    assert row[0] == pytest.approx(0.0, abs=1e-3)
    assert row[1] == pytest.approx(0.75, abs=0.01)
    assert row[2] == pytest.approx(1.0, abs=1e-3)


def test_dicom_rescale_without_window_uses_transformed_range(tmp_path: Path) -> None:
    data = np.array([[0, 1000, 4095]] * 4, dtype=np.uint16)
    write_dicom(tmp_path / "r.dcm", data, 0.1, BitsStored=12, RescaleSlope=-1, RescaleIntercept=0)
    row = read_image(tmp_path / "r.dcm").pixels[0]  # slope -1 flips the scale
    np.testing.assert_allclose(row, [1.0, 1 - 1000 / 4095, 0.0], atol=1e-6)


def test_dicom_window_centre_width(tmp_path: Path) -> None:
    data = np.array([[1536, 2048, 2560]] * 4, dtype=np.uint16)
    write_dicom(tmp_path / "w.dcm", data, 0.1, BitsStored=12, WindowCenter=2048, WindowWidth=1024)
    row = read_image(tmp_path / "w.dcm").pixels[0]
    np.testing.assert_allclose(row, [0.0, 0.5, 1.0], atol=2e-3)


def test_dicom_multiframe_needs_an_explicit_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((32, 48), v, dtype=np.uint16) for v in (1000, 3000)])
    path = tmp_path / "mf.dcm"
    write_dicom(path, frames[0], 0.1, BitsStored=12)
    ds = pydicom.dcmread(path)
    ds.set_pixel_data(frames, "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"multi-frame DICOM with 2 frames.*--frame \(0-1\)"):
        read_image(path)
    for index, value in enumerate((1000, 3000)):
        image = read_image(path, frame=index)
        assert image.pixels.shape == (32, 48)
        assert image.pixels.mean() == pytest.approx(value / 4095, abs=1e-6)
    with pytest.raises(ImageReadError, match="frame 2 requested but the file has 2 frames"):
        read_image(path, frame=2)


def _claim_compressed(path: Path, syntax: pydicom.uid.UID) -> None:
    """Rewrite a DICOM file so it claims a compressed transfer syntax (with junk fragments)."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really compressed data \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def test_compressed_syntax_without_decoder_names_the_packages(tmp_path: Path) -> None:
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).available_plugins:
        pytest.skip("a JPEG-LS decoder is installed, so 'no decoder' cannot be produced")
    path = tmp_path / "jls.dcm"
    write_dicom(path, _stored_12bit(), 0.1, BitsStored=12)
    _claim_compressed(path, JPEGLSLossless)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "jls.dcm" in message
    assert "JPEG-LS" in message and "needs a decoder" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message


def test_corrupt_jpeg2000_is_an_image_read_error_naming_a_decoder(tmp_path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    path = tmp_path / "j2k.dcm"
    write_dicom(path, _stored_12bit(), 0.1, BitsStored=12)
    _claim_compressed(path, JPEG2000Lossless)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "j2k.dcm" in str(info.value)
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in str(info.value)


def test_dicom_without_preamble_is_read_by_extension(tmp_path: Path) -> None:
    data = _stored_12bit()
    write_dicom(tmp_path / "a.dcm", data, 0.1, BitsStored=12)
    raw = (tmp_path / "a.dcm").read_bytes()
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.preamble = None  # write the bare data set: no preamble, no 'DICM', no file meta
    del ds.file_meta
    ds.save_as(tmp_path / "bare.dcm", implicit_vr=False, little_endian=True)
    assert (tmp_path / "bare.dcm").read_bytes()[128:132] != b"DICM" and raw[128:132] == b"DICM"
    np.testing.assert_allclose(read_image(tmp_path / "bare.dcm").pixels, data / 4095.0, atol=1e-6)


# ----------------------------------------------------------------------------- bad files


def _huge_png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height but holds no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
        + struct.pack(">I", zlib.crc32(chunk)) + b"\0\0\0\0IEND\xaeB`\x82"
    )


def _make_bad(kind: str, tmp_path: Path, noise_u16: np.ndarray) -> tuple[Path, int]:
    """Create a bad file of the given kind; return it and the max_pixels to read it with."""
    if kind == "missing":
        return tmp_path / "missing.png", 100_000_000
    if kind == "zero-byte":
        (tmp_path / "empty.png").touch()
        return tmp_path / "empty.png", 100_000_000
    if kind == "truncated":
        write_png16(tmp_path / "full.png", noise_u16)
        data = (tmp_path / "full.png").read_bytes()
        (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
        return tmp_path / "truncated.png", 100_000_000
    if kind == "text":
        (tmp_path / "notes.png").write_text("this is not an image\n")
        return tmp_path / "notes.png", 100_000_000
    if kind == "text-dcm":
        (tmp_path / "notes.dcm").write_text("this is not DICOM either\n")
        return tmp_path / "notes.dcm", 100_000_000
    if kind == "unsupported":
        (tmp_path / "data.xyz").write_text("x,y,z\n1,2,3\n")
        return tmp_path / "data.xyz", 100_000_000
    if kind == "too-many-pixels":
        write_png16(tmp_path / "big.png", noise_u16)
        return tmp_path / "big.png", 1000
    if kind == "too-many-pixels-dicom":
        write_dicom(tmp_path / "big.dcm", noise_u16, 0.1)
        return tmp_path / "big.dcm", 1000
    if kind == "decompression-bomb":
        _huge_png_header(tmp_path / "bomb.png", 40_000, 40_000)
        return tmp_path / "bomb.png", 10**12
    if kind == "gif":
        Image.fromarray(_gradient_u8()).save(tmp_path / "anim.gif")
        return tmp_path / "anim.gif", 100_000_000
    raise AssertionError(kind)


BAD_KINDS = {
    "missing": "not found",
    "zero-byte": "empty",
    "truncated": "truncated",
    "text": "not an image",
    "text-dcm": "not a DICOM image",
    "unsupported": "unsupported file type '.xyz'",
    "too-many-pixels": "above the limit of 1000",
    "too-many-pixels-dicom": "above the limit of 1000",
    "decompression-bomb": "too large",
    "gif": "unsupported image format GIF",
}


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_bad_files_raise_image_read_error_naming_the_file(
    kind: str, tmp_path: Path, noise_u16: np.ndarray
) -> None:
    path, max_pixels = _make_bad(kind, tmp_path, noise_u16)
    with pytest.raises(ImageReadError) as info:
        read_image(path, max_pixels=max_pixels)
    assert path.name in str(info.value)
    assert BAD_KINDS[kind] in info.value.reason


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    # The header claims 10000 x 10000 but there is no data: only a header check can refuse it.
    _huge_png_header(tmp_path / "claims.png", 10_000, 10_000)
    with pytest.raises(ImageReadError, match="above the limit"):
        read_image(tmp_path / "claims.png", max_pixels=1000)


# ----------------------------------------------------------------------------- from memory


def test_read_image_bytes_judges_by_content(tmp_path: Path, noise_u16: np.ndarray) -> None:
    write_png16(tmp_path / "a.png", noise_u16)
    image = read_image_bytes((tmp_path / "a.png").read_bytes(), name="scan.dcm")
    assert image.source_format == "png" and image.path == "scan.dcm"
    write_dicom(tmp_path / "a.dcm", noise_u16, 0.1, patient_id="P1")
    dicom = read_image_bytes((tmp_path / "a.dcm").read_bytes(), name="upload.png")
    assert dicom.source_format == "dicom" and dicom.patient_id == "P1"
    np.testing.assert_array_equal(np.round(dicom.pixels * 65535).astype(np.uint16), noise_u16)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n\0\0"])
def test_read_image_bytes_bad_content(data: bytes) -> None:
    with pytest.raises(ImageReadError, match="^my-upload: "):
        read_image_bytes(data, name="my-upload")


# ----------------------------------------------------------------------------- real samples


def test_real_samples_load(real_samples: Path) -> None:
    files = sorted(p for p in real_samples.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    assert files, f"no images in {real_samples}"
    for path in files:  # however many the folders hold
        image = read_image(path)
        assert image.bit_depth == 8, path
        assert image.pixels.dtype == np.float32
        assert 0.0 <= image.pixels.min() < image.pixels.max() <= 1.0, path
        if path.parent.name in ("native", "dc1000-more"):  # native detector resolution, about 2943 x 1435
            assert image.source_format == "png" and 2000 <= image.pixels.shape[1] <= 4000, path
            assert 1.6 <= image.pixels.shape[1] / image.pixels.shape[0] <= 2.6, path
        elif path.parent.name == "ufba-512":
            assert image.source_format == "jpeg" and image.pixels.shape == (512, 512), path


def test_written_dicom_is_a_dx_instance_that_dciodvfy_accepts_but_for_the_voi_window(tmp_path: Path) -> None:
    """The phantom's DICOM files (``write_dicom``) carry the DX IOD's attributes; dciodvfy (dicom3tools,
    installed by the Makefile) finds nothing missing except the VOI window a "For Presentation" DX asks
    for, which is left out so that reading stays the identity."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: make test installs it")
    path = tmp_path / "a.dcm"
    write_dicom(path, _stored_12bit(), 0.1, patient_id="P007", BitsStored=12)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True).stderr
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert errors and all("VOILUTSequence" in e or "WindowCenter" in e for e in errors), errors
