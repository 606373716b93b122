"""Read any supported radiograph file into one grey, [0, 1] ``Radiograph``; write test images.

Supported: PNG, JPEG, BMP, TIFF (8 and 16 bit, grey or RGB) through Pillow and DICOM through
pydicom. Pillow reads the header (format, size, frames, spacing, orientation); plain grey/RGB PNG and
JPEG pixels are then decoded outside Pillow, the same pixel values it gives, faster and with the GIL
released (so threads decode in parallel): a PNG by ``osteopano.io.png_fast`` (ISA-L inflate + numpy,
for the non-interlaced 8/16-bit files whose rows use filters None/Sub/Up - what OpenCV writes, and
every real radiograph at hand - about 14 instead of 32 CPU ms for 2943 x 1435) where it applies, else
by OpenCV (``cv2.imdecode``, libpng; also when ``isal`` is not installed), a JPEG by OpenCV;
everything else is decoded by Pillow. ``reduce_to`` lets a JPEG be decoded at 1/2, 1/4 or 1/8
resolution by the JPEG library itself (DCT scaling) when the caller needs only that many pixels. The
file's content decides how it is read (the DICOM ``DICM`` preamble, then Pillow); the extension only
matters for files without a preamble named ``.dcm``/``.dicom`` and for the error message. Every
failure is an ``ImageReadError`` naming the file and the reason, so a batch can record it and go on.

Intensity convention: 0 = black (air), 1 = white (bone). Integer images are scaled by the full
range of their dtype (uint8 / 255, uint16 / 65535) so that values are comparable across files;
a 16-bit PNG holding 12-bit data therefore stays dark - the preprocessing windows it later.
DICOM goes through the modality LUT (rescale) and the VOI LUT / window when present, is scaled by
the range those transforms can produce, and MONOCHROME1 is inverted.

Multi-frame DICOM, multi-page TIFF and animated PNG are refused with a message unless ``frame``
chooses one (0-based); a camera JPEG's MPO preview frames are ignored (the first is the photo).

Integrity: before decoding, ``osteopano.io.integrity`` checks PNG chunk CRCs (image data included)
and structure, and the JPEG marker structure up to end-of-image, so a damaged or truncated file is
refused with the reason rather than decoded into garbage; TIFF strips reaching past the end of the
file are refused too. A PNG's zlib stream is inflated once: by png_fast (to its end, Adler-32 and
size checked, so any damage is refused - even a bad Adler-32 that libpng meets only after the last
row and lets pass), else by libpng when OpenCV decodes it (libpng refuses a damaged stream while it
reads the rows), else by ``check_png`` before Pillow decodes (Pillow does not check it) - and when
png_fast or libpng refused a file, ``check_png`` names the problem (zlib's words whichever decoder
met it).

Non-square pixels (DICOM PixelSpacing / ImagerPixelSpacing row != column, PNG pHYs or TIFF
X/Y resolution differing by more than 1 %) are resampled along the columns to square pixels at the
row spacing, so distances are right in every direction; a ratio beyond 2:1 is refused.

Pixel spacing is only taken from metadata that can describe a detector: DICOM PixelSpacing
(else ImagerPixelSpacing), a PNG pHYs chunk or TIFF resolution in centimetres, between 0.01 and
1 mm, and - for PNG, whose pHYs is always per metre - not a round screen/print DPI (72, 96, 300...).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

from osteopano.errors import ImageReadError
from osteopano.io.files import atomic_path, atomic_write_bytes
from osteopano.io.integrity import (
    CorruptImage,
    check_file,
    check_png,
    check_tiff_extent,
)
from osteopano.io.png_fast import decode_png

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})

# Pillow format name -> our source_format. MPO is what Pillow calls many camera JPEGs.
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff"}
# Resolutions that are screen/print DPI settings, not detector spacings.
_ROUND_DPI = (72, 96, 100, 120, 144, 150, 200, 240, 300, 400, 600, 1200, 2400)
_SPACING_RANGE_MM = (0.01, 1.0)
# Row and column spacings within this relative difference count as square pixels; beyond
# _MAX_PIXEL_ASPECT the file is refused.
_SQUARE_PIXEL_TOLERANCE = 0.01
_MAX_PIXEL_ASPECT = 2.0
# Channels that differ by at most this (in 8-bit steps) are grey with JPEG chroma noise.
_GREY_TOLERANCE = 2 / 255

# pip packages that give pydicom a decoder for each compressed transfer syntax family.
_DECODER_PACKAGES = {
    "jpeg": "pylibjpeg pylibjpeg-libjpeg",
    "jpeg2000": "pylibjpeg pylibjpeg-openjpeg",
    "rle": "pylibjpeg pylibjpeg-rle",
}


@dataclass(frozen=True)
class Radiograph:
    """A grey radiograph with values in [0, 1] and what the file said about it."""

    pixels: np.ndarray  # float32, shape (H, W), values in [0, 1], 0 = black (air), 1 = white (bone)
    bit_depth: int  # original bits per sample (8, 12, 16, ...)
    pixel_spacing_mm: float | None  # mm per pixel (row spacing), None when unknown
    source_format: str  # 'png' | 'jpeg' | 'bmp' | 'tiff' | 'dicom' | 'array'
    path: str | None = None
    patient_id: str | None = None  # DICOM PatientID only (never the patient's name)
    chroma: float = 0.0  # how much the colour varied before conversion to grey (0 = grey; the gate)
    # DICOM PatientAge (years) / PatientSex / PatientWeight (kg) when present, for the clinical risk index
    # (osteopano.prepare.risk); patient data: never logged, never in a repr
    patient: dict[str, Any] | None = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------- public API


def read_image(path: str | Path, *, max_pixels: int = 100_000_000, frame: int | None = None,
               reduce_to: int | None = None) -> Radiograph:
    """Read a PNG/JPEG/BMP/TIFF/DICOM file into a Radiograph; raises ImageReadError.

    Images above ``max_pixels`` are refused from their header, before decoding. ``frame`` picks one
    frame (0-based) of a multi-frame DICOM / multi-page TIFF / animated PNG, which are refused without it.
    ``reduce_to``: the caller needs only this many pixels on each side, so a JPEG may be decoded at 1/2,
    1/4 or 1/8 of its size (the largest reduction keeping both sides >= ``reduce_to``; the pixel spacing
    is scaled to match); other formats ignore it.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with path.open("rb") as fh:
            head = fh.read(132)
            fh.seek(0)
            return _read(fh, head, path, path.suffix.lower(), max_pixels, frame, reduce_to)
    except OSError as exc:  # permission denied, I/O error while opening
        raise ImageReadError(path, f"cannot open file: {exc.strerror or exc}") from exc


def read_image_bytes(
    data: bytes, name: str = "upload", *, max_pixels: int = 100_000_000, frame: int | None = None,
    reduce_to: int | None = None,
) -> Radiograph:
    """Read an image held in memory (a web upload); the type is judged from the content only."""
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    return _read(io.BytesIO(data), data[:132], name, "", max_pixels, frame, reduce_to)


def from_array(pixels: np.ndarray, pixel_spacing_mm: float | None = None) -> Radiograph:
    """Wrap an array as a Radiograph: uint8 / 255, uint16 / 65535, float kept if already in [0, 1].

    A float array outside [0, 1] is min-max scaled; (H, W, 3|4) colour arrays become grey.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        bits, grey = 8, arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        bits, grey = 16, arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        bits, grey = 1, arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        grey = arr.astype(np.float32)
        if not np.isfinite(grey).all():
            raise ValueError("array contains NaN or infinite values")
        bits = 32
        lo, hi = float(grey.min()), float(grey.max())
        if lo < 0.0 or hi > 1.0:
            grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
    else:
        raise ValueError(f"unsupported array dtype {arr.dtype} (use uint8, uint16 or float)")
    return Radiograph(
        pixels=_to_grey(grey),
        bit_depth=bits,
        pixel_spacing_mm=_plausible_spacing(pixel_spacing_mm),
        source_format="array",
        chroma=_chroma(grey),
    )


def write_png16(path: str | Path, pixels_uint16: np.ndarray) -> None:
    """Write a 16-bit greyscale PNG atomically, every row Sub-filtered: ``png_fast`` decodes such a
    file without libpng (adaptive filters would choose Average/Paeth rows it leaves to libpng)."""
    arr = np.asarray(pixels_uint16)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise ValueError(f"write_png16 needs a 2-D uint16 array, got {arr.dtype} {arr.shape}")
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB])
    if not ok:
        raise ValueError(f"{path}: the PNG encoder refused the image")
    atomic_write_bytes(path, buf.tobytes())


def write_dicom(
    path: str | Path,
    pixels_uint16: np.ndarray,
    pixel_spacing_mm: float | None,
    *,
    patient_id: str | None = None,
    photometric: str = "MONOCHROME2",
    uid_seed: str | None = None,
    **extra_tags: Any,
) -> None:
    """Write an uncompressed (explicit VR little endian) DICOM X-ray image atomically.

    ``pixel_spacing_mm`` fills PixelSpacing (None leaves it out, e.g. to test ImagerPixelSpacing
    given through ``extra_tags``). ``extra_tags`` are set by DICOM keyword (``BitsStored=12``,
    ``RescaleSlope=2``, ``WindowCenter=...``). PatientName and the other type-2 patient and study
    attributes are written empty, the DX image attributes with neutral values (identity rescale, no
    VOI window: dciodvfy still asks for one in a "For Presentation" image). ``uid_seed`` derives
    the study/series/instance UIDs from that text instead of drawing random ones, so the same
    seed writes byte-identical files (the phantom uses it).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(pixels_uint16)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise ValueError(f"write_dicom needs a 2-D uint16 array, got {arr.dtype} {arr.shape}")
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, kind]) if uid_seed is not None else generate_uid()

    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "PX"  # panoramic X-ray
    ds.PatientID = patient_id or ""
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [float(pixel_spacing_mm), float(pixel_spacing_mm)]
    bits_stored = int(extra_tags.pop("BitsStored", 16))
    ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
    # the rest of a DX "For Presentation" instance (dciodvfy clean); extra_tags override any of them
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName", "Manufacturer"):
        setattr(ds, keyword, "")  # type 2: present, empty (no name, no date: nothing identifying)
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.PatientOrientation = ["L", "F"]  # an OPG viewed from the front: columns run to the patient's left
    ds.AnatomicRegionSequence = []
    ds.ImageLaterality = "B"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = ""
    ds.AcquisitionContextSequence = []
    if pixel_spacing_mm is not None:
        ds.ImagerPixelSpacing = [float(pixel_spacing_mm), float(pixel_spacing_mm)]
    for keyword, value in extra_tags.items():
        setattr(ds, keyword, value)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


# ----------------------------------------------------------------------------- dispatch


def _read(fh: BinaryIO, head: bytes, name: str | Path, suffix: str, max_pixels: int,
          frame: int | None = None, reduce_to: int | None = None) -> Radiograph:
    """Check the container, decide DICOM or Pillow from the content and decode; wrap every library error."""
    if frame is not None and frame < 0:
        raise ImageReadError(name, f"frame {frame}: frames are numbered from 0")
    try:
        if head[128:132] == b"DICM":
            return _read_dicom(fh, name, max_pixels, force=False, frame=frame)
        try:
            # a header beyond our limit or Pillow's bomb limit is refused by the decoder from the header
            limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
            # PNG: chunks and CRCs here (keeping IHDR and IDAT for png_fast); the zlib stream by png_fast
            # or libpng, or by check_png where Pillow decodes
            png = check_file(fh, head, max_pixels=limit, inflate=False, keep=True)
        except CorruptImage as exc:
            raise ImageReadError(name, exc.reason) from None
        try:
            return _read_pil(fh, name, max_pixels, frame, reduce_to, png)
        except _NotPillowImage:
            if suffix in DICOM_SUFFIXES:  # DICOM written without the 128-byte preamble
                fh.seek(0)
                return _read_dicom(fh, name, max_pixels, force=True, frame=frame)
            if suffix and suffix not in IMAGE_SUFFIXES:
                raise ImageReadError(
                    name, f"unsupported file type '{suffix}' (not a PNG/JPEG/BMP/TIFF/DICOM image)"
                ) from None
            raise ImageReadError(
                name, "not an image (content is not PNG/JPEG/BMP/TIFF/DICOM)"
            ) from None
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(name, "not enough memory to decode the image") from exc
    except Exception as exc:  # any decoder failure: corrupt data, truncated file, odd header
        raise ImageReadError(name, f"cannot decode image: {_describe(exc)}") from exc


class _NotPillowImage(Exception):
    """Pillow does not recognise the content."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- Pillow


def _read_pil(fh: BinaryIO, name: str | Path, max_pixels: int, frame: int | None = None,
              reduce_to: int | None = None, png: dict[str, Any] | None = None) -> Radiograph:
    with warnings.catch_warnings():
        # Our own max_pixels limit replaces Pillow's bomb warning; its hard error is caught below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh)  # lazy: reads the header only
        except Image.DecompressionBombError as exc:
            raise ImageReadError(name, f"image too large to decode safely ({exc})") from exc
        except Image.UnidentifiedImageError:
            raise _NotPillowImage from None
        with img:
            fmt = _PIL_FORMATS.get(img.format or "")
            if fmt is None:
                raise ImageReadError(name, f"unsupported image format {img.format}")
            width, height = img.size
            if width * height > max_pixels:
                raise ImageReadError(
                    name, f"image is {width}x{height} = {width * height} pixels, above the "
                    f"limit of {max_pixels}"
                )
            _choose_pil_frame(img, fmt, frame, name)
            if fmt == "tiff":
                try:
                    check_tiff_extent(img, fh.seek(0, io.SEEK_END))
                except CorruptImage as exc:
                    raise ImageReadError(name, exc.reason) from None
            try:
                fast = _cv2_decode(fh, img, fmt, reduce_to, png) if not frame else None
            except CorruptImage as exc:  # png_fast met a damaged zlib stream
                raise ImageReadError(name, exc.reason) from None
            if fast is None and fmt == "png":  # Pillow decodes (or libpng refused): inflate the stream here
                try:
                    check_png(fh)
                except CorruptImage as exc:
                    raise ImageReadError(name, exc.reason) from None
                finally:
                    fh.seek(0)
            if fast is not None:
                pixels, factor, chroma = fast
                spacing = _pil_spacing(img)
                if spacing is not None:
                    pixels, row_mm = _square_pixels(pixels, spacing[0], spacing[1], name)
                    spacing = None if row_mm is None else row_mm * factor
                return Radiograph(pixels=pixels, bit_depth=_pil_bit_depth(img), pixel_spacing_mm=spacing,
                                  source_format=fmt, path=str(name), chroma=chroma)
            # WeasyPrint (the PDF reports) sets this Pillow-wide flag on import, after which a truncated
            # file would decode silently with its missing rows grey: a radiograph must be whole
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                img.load()
            except Image.DecompressionBombError as exc:
                raise ImageReadError(name, f"image too large to decode safely ({exc})") from exc
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise ImageReadError(name, f"corrupt or truncated image: {_describe(exc)}") from exc
            spacing = _pil_spacing(img)
            bits = _pil_bit_depth(img)
            img = ImageOps.exif_transpose(img)
            pixels, chroma = _pil_to_unit(img)
            if spacing is not None:
                pixels, spacing = _square_pixels(pixels, spacing[0], spacing[1], name)
    return Radiograph(
        pixels=pixels,
        bit_depth=bits,
        pixel_spacing_mm=spacing,
        source_format=fmt,
        path=str(name),
        chroma=chroma,
    )


# Pillow modes whose pixels OpenCV decodes to the same values: mode -> (dtype, channels).
_CV2_MODES = {"L": (np.uint8, 1), "RGB": (np.uint8, 3), "RGBA": (np.uint8, 4),
              "I;16": (np.uint16, 1), "I": (np.uint16, 1)}
_CV2_REDUCED = {  # (factor, grey?) -> imdecode flag: the JPEG library's own DCT scaling
    (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2, (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8, (2, False): cv2.IMREAD_REDUCED_COLOR_2,
    (4, False): cv2.IMREAD_REDUCED_COLOR_4, (8, False): cv2.IMREAD_REDUCED_COLOR_8,
}


def _cv2_decode(fh: BinaryIO, img: Image.Image, fmt: str, reduce_to: int | None,
                png: dict[str, Any] | None = None) -> tuple[np.ndarray, int, float] | None:
    """Plain grey/RGB(A) single-frame PNG and JPEG pixels by ``cv2.imdecode`` in their native dtype, as
    float32 [0, 1] exactly as the Pillow path makes them; None (Pillow decodes) for anything else: other
    formats and modes, several frames, an EXIF rotation, a palette or tRNS, a file OpenCV cannot read.
    A PNG whose chunk walk (``png``, from ``check_png(keep=True)``) is at hand is decoded by
    ``png_fast.decode_png`` where that applies (the same array ``cv2.imdecode`` gives), which raises
    ``CorruptImage`` for a damaged zlib stream. Returns (pixels, reduction factor, chroma)."""
    expected = _CV2_MODES.get(img.mode)
    if fmt not in ("png", "jpeg") or expected is None or (fmt == "jpeg" and img.mode not in ("L", "RGB")):
        return None
    if "transparency" in img.info or (fmt == "png" and int(getattr(img, "n_frames", 1) or 1) > 1):
        return None
    arr = None
    if fmt == "png" and png and "chunks" in png:
        if "eXIf" in png["chunks"]:  # a rotation Pillow would apply (possibly after the pixels)
            return None
        arr = _png_fast(fh, png)
    if arr is None:
        fh.seek(0)
        data = fh.read()
        if fmt == "png" and b"eXIf" in data:  # (no chunk walk at hand)
            return None
        if fmt == "jpeg" and img.getexif().get(0x0112, 1) not in (1, None):
            return None
    factor, flag = 1, cv2.IMREAD_UNCHANGED
    if fmt == "jpeg" and reduce_to:
        width, height = img.size
        factor = next((k for k in (8, 4, 2) if min(width, height) // k >= reduce_to), 1)
        if factor > 1:
            flag = _CV2_REDUCED[factor, img.mode == "L"]
    if arr is None:
        if cv2.utils.logging.getLogLevel() > cv2.utils.logging.LOG_LEVEL_ERROR:
            # a damaged file goes on to Pillow, which names the problem; OpenCV's own warning would be noise
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    dtype, channels = expected
    if arr is None or arr.dtype != dtype or (arr.shape[2] if arr.ndim == 3 else 1) != channels:
        return None
    if factor == 1 and arr.shape[:2] != img.size[::-1]:
        return None
    if img.mode == "I":  # the Pillow path's float64 scaling, for identical rounding
        return np.clip(arr.astype(np.float64) / 65535.0, 0.0, 1.0).astype(np.float32), factor, 0.0
    unit = (arr if arr.ndim == 2 else arr[..., 2::-1]).astype(np.float32)  # BGR(A) -> RGB
    unit /= 65535.0 if dtype == np.uint16 else 255.0  # in place: the same values as Pillow's path
    return _to_grey(unit), factor, _chroma(unit)


def _png_fast(fh: BinaryIO, png: dict[str, Any]) -> np.ndarray | None:
    """``decode_png`` on the chunk walk's IHDR and IDAT; a damaged stream raises ``CorruptImage`` in the
    words ``check_png`` uses for it (zlib's, the same as where libpng decodes), else in png_fast's."""
    try:
        return decode_png(png["ihdr"], png["idat"])
    except CorruptImage:
        try:
            check_png(fh)
        except CorruptImage as named:
            raise named from None
        finally:
            fh.seek(0)
        raise


def _choose_pil_frame(img: Image.Image, fmt: str, frame: int | None, name: str | Path) -> None:
    """Seek to ``frame``; refuse a multi-frame file without one. MPO (camera JPEG) previews are ignored."""
    frames = 1 if fmt == "jpeg" else int(getattr(img, "n_frames", 1) or 1)
    if frame is None:
        if frames > 1:
            kind = {"tiff": "multi-page TIFF", "png": "animated PNG"}.get(fmt, f"multi-frame {fmt.upper()}")
            raise ImageReadError(name, f"{kind} with {frames} frames: which one to use is ambiguous; "
                                 f"choose one with --frame (0-{frames - 1})")
        return
    if frame >= frames:
        raise ImageReadError(name, f"frame {frame} requested but the file has {frames} "
                             f"frame{'s' if frames > 1 else ''} (0-{frames - 1})")
    if frame:
        img.seek(frame)


def _square_pixels(pixels: np.ndarray, row_mm: float | None, col_mm: float | None,
                   name: str | Path) -> tuple[np.ndarray, float | None]:
    """Resample columns so that pixels are square at the row spacing; (pixels, row spacing)."""
    if row_mm is None or col_mm is None or row_mm <= 0 or col_mm <= 0:
        return pixels, row_mm
    ratio = col_mm / row_mm
    if abs(ratio - 1.0) <= _SQUARE_PIXEL_TOLERANCE:
        return pixels, row_mm
    if not 1 / _MAX_PIXEL_ASPECT <= ratio <= _MAX_PIXEL_ASPECT:
        raise ImageReadError(name, f"non-square pixels {row_mm:g} x {col_mm:g} mm (row x column): a ratio "
                             f"beyond {_MAX_PIXEL_ASPECT:g}:1 is not a radiograph detector's")
    import cv2

    height, width = pixels.shape[:2]
    new_width = max(1, int(round(width * ratio)))
    interpolation = cv2.INTER_AREA if new_width < width else cv2.INTER_LINEAR
    resized = cv2.resize(pixels, (new_width, height), interpolation=interpolation)
    return np.clip(resized, 0.0, 1.0).astype(np.float32), row_mm


def _pil_bit_depth(img: Image.Image) -> int:
    if img.mode == "1":
        return 1
    if img.mode.startswith("I;16"):
        return 16
    if img.mode == "I":
        if img.format == "TIFF":
            bits = img.tag_v2.get(258, (32,))  # BitsPerSample
            return int(bits[0] if isinstance(bits, tuple) else bits)
        return 16  # PNG and others only reach mode I from 16-bit data
    if img.mode == "F":
        return 32
    return 8


def _pil_to_unit(img: Image.Image) -> tuple[np.ndarray, float]:
    """Pixels as float32 (H, W) in [0, 1], scaled by the dtype's full range, and their chroma."""
    mode = img.mode
    if mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGBA" if "A" in mode or "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("LA", "La"):
        img = img.getchannel("L")
        mode = "L"
    arr = np.asarray(img)
    if mode.startswith("I;16"):
        return (arr.astype(np.float32) / 65535.0).astype(np.float32), 0.0
    if mode == "I":
        arr = arr.astype(np.float64)
        scale = 65535.0 if arr.max(initial=0) <= 65535 else float(2**32 - 1)
        return np.clip(arr / scale, 0.0, 1.0).astype(np.float32), 0.0
    if mode == "F":
        return from_array(arr).pixels, 0.0
    grey = arr.astype(np.float32) / 255.0
    if grey.ndim == 3:
        grey = grey[..., :3]
    return _to_grey(grey), _chroma(grey)


def chroma_spread(rgb: np.ndarray) -> float:
    """How much the hue varies across an (H, W, 3) [0, 1] image: the standard deviation of the
    chromaticities r = R/(R+G+B) and g = G/(R+G+B) over pixels that are not dark. A grey image
    and a uniformly tinted one (sepia, a film photographed on a lightbox) score about 0."""
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    s = np.asarray(rgb[::step, ::step, :3], np.float32).reshape(-1, 3)
    total = s.sum(axis=1)
    s, total = s[total > 0.3], total[total > 0.3]
    if len(total) < 16:
        return 0.0
    r, g = s[:, 0] / total, s[:, 1] / total
    return float(math.hypot(float(r.std()), float(g.std())))


def _chroma(arr: np.ndarray) -> float:
    """Colour variation of an (H, W, 3) [0, 1] array (``osteopano.prepare.gate.chroma_spread``); 0 for grey."""
    if arr.ndim != 3:
        return 0.0
    return chroma_spread(arr)


def _to_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W) stays; (H, W, 3) becomes grey: channel mean if (nearly) equal, else luma (BT.601)."""
    if arr.ndim == 2:
        return np.ascontiguousarray(arr, dtype=np.float32)
    rgb = arr[..., :3].astype(np.float32)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    if float(spread.max(initial=0.0)) <= _GREY_TOLERANCE + 1e-6:
        grey = rgb.mean(axis=2)
    else:
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def _pil_spacing(img: Image.Image) -> tuple[float, float | None] | None:
    """(row, column) spacing from PNG pHYs (per metre, not a round DPI) or TIFF resolution in cm.

    None when the row spacing is unknown; the column spacing is None when it is not plausible."""
    if img.format == "PNG":
        dpi = img.info.get("dpi")  # Pillow sets it only for a per-metre pHYs chunk
        if not dpi:
            return None

        def from_dpi(value: float) -> float | None:
            per_metre = round(float(value) / 0.0254)
            if per_metre <= 0 or any(per_metre == int(d / 0.0254 + 0.5) for d in _ROUND_DPI):
                return None
            return _plausible_spacing(1000.0 / per_metre)

        row = from_dpi(dpi[1])
        return None if row is None else (row, from_dpi(dpi[0]))
    if img.format == "TIFF":
        tags = img.tag_v2
        if tags.get(296) != 3:  # ResolutionUnit: 3 = centimetre; inch or none is not a detector
            return None

        def from_res(tag: int) -> float | None:
            res = tags.get(tag)  # pixels per centimetre
            return _plausible_spacing(10.0 / float(res)) if res and float(res) > 0 else None

        row = from_res(283)  # YResolution
        return None if row is None else (row, from_res(282))  # XResolution
    return None


def _plausible_spacing(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    lo, hi = _SPACING_RANGE_MM
    return value if lo <= value <= hi else None


# ----------------------------------------------------------------------------- DICOM


def _read_dicom(fh: BinaryIO, name: str | Path, max_pixels: int, *, force: bool,
                frame: int | None = None) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(fh, force=force)
    except InvalidDicomError as exc:
        raise ImageReadError(name, f"not a valid DICOM file: {_describe(exc)}") from exc
    meta = getattr(ds, "file_meta", None)
    if force and (meta is None or "TransferSyntaxUID" not in meta):
        _guess_transfer_syntax(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        if force:
            raise ImageReadError(name, "not a DICOM image (no DICM header and no pixel data)")
        raise ImageReadError(name, "DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise ImageReadError(
            name, f"image is {cols}x{rows} = {rows * cols} pixels, above the limit of {max_pixels}"
        )
    frames = _dicom_frames(ds)
    if frame is None and frames > 1:
        raise ImageReadError(name, f"multi-frame DICOM with {frames} frames: which one to use is "
                             f"ambiguous; choose one with --frame (0-{frames - 1})")
    if frame is not None and frame >= frames:
        raise ImageReadError(name, f"frame {frame} requested but the file has {frames} "
                             f"frame{'s' if frames > 1 else ''} (0-{frames - 1})")
    arr = _dicom_pixels(ds, name)
    if frames > 1:
        arr = arr[frame]
    row_mm, col_mm = _dicom_spacings(ds)
    if arr.ndim == 3:  # colour DICOM (pydicom converts YBR to RGB)
        bits = int(ds.get("BitsStored", 8))
        rgb = arr.astype(np.float32) / float(2**bits - 1)
        pixels, spacing = _square_pixels(_to_grey(rgb), row_mm, col_mm, name)
        return Radiograph(
            pixels=pixels,
            chroma=_chroma(rgb),
            bit_depth=bits,
            pixel_spacing_mm=spacing,
            source_format="dicom",
            path=str(name),
            patient_id=_patient_id(ds),
            patient=_patient(ds),
        )
    unit, spacing = _square_pixels(_dicom_to_unit(ds, arr), row_mm, col_mm, name)
    return Radiograph(
        pixels=unit,
        bit_depth=int(ds.get("BitsStored", 16)),
        pixel_spacing_mm=spacing,
        source_format="dicom",
        path=str(name),
        patient_id=_patient_id(ds),
        patient=_patient(ds),
    )


def _guess_transfer_syntax(ds: Any) -> None:
    """A file without meta header: take the encoding pydicom detected while reading."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    implicit, little = ds.original_encoding
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _dicom_pixels(ds: Any, name: str | Path) -> np.ndarray:
    """Decode the pixel data; a compressed syntax without a decoder names what to install."""
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    try:
        return ds.pixel_array
    except Exception as exc:
        if tsyntax is None or not tsyntax.is_compressed:
            raise ImageReadError(name, f"cannot decode DICOM pixel data: {_describe(exc)}") from exc
        from pydicom.pixels.decoders.base import get_decoder

        try:
            decoder = get_decoder(tsyntax)
            has_plugin = bool(decoder.available_plugins)
        except NotImplementedError:
            has_plugin = False
        install = f"pip install {_decoder_packages(tsyntax)}"
        if not has_plugin:
            reason = f"{tsyntax.name} transfer syntax needs a decoder: {install}"
        else:
            reason = (
                f"cannot decode {tsyntax.name} pixel data ({_describe(exc)}); "
                f"if the file is valid another decoder may help: {install}"
            )
        raise ImageReadError(name, reason) from exc


def _decoder_packages(tsyntax: Any) -> str:
    uid = str(tsyntax)
    if uid.startswith("1.2.840.10008.1.2.4.9") or uid.startswith("1.2.840.10008.1.2.4.20"):
        return _DECODER_PACKAGES["jpeg2000"]
    if uid == "1.2.840.10008.1.2.5":
        return _DECODER_PACKAGES["rle"]
    return _DECODER_PACKAGES["jpeg"]  # JPEG baseline/extended/lossless and JPEG-LS


def _dicom_to_unit(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Modality LUT, then VOI LUT / window, scaled to [0, 1] by the range those can produce.

    MONOCHROME1 (white = low values) is inverted so that bone is always bright.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    lo, hi = _modality_range(ds)
    values = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        lo, hi = 0.0, float(2 ** int(descriptor[2]) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds)  # windowing maps onto the modality output range
    values = np.asarray(values, dtype=np.float64)
    unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    unit = np.clip(unit, 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return np.ascontiguousarray(unit, dtype=np.float32)


def _modality_range(ds: Any) -> tuple[float, float]:
    """The smallest and largest value the modality transform can output for the stored bits."""
    if "ModalityLUTSequence" in ds:
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return float(ends[0]), float(ends[1])


def _dicom_frames(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _dicom_spacings(ds: Any) -> tuple[float | None, float | None]:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; (None, None) if unknown."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value:
            try:
                row = _plausible_spacing(float(value[0]))
            except (TypeError, ValueError, IndexError):
                continue
            try:
                col = _plausible_spacing(float(value[1])) if len(value) > 1 else row
            except (TypeError, ValueError):
                col = None
            return row, col
    return None, None


def _patient(ds: Any) -> dict[str, Any] | None:
    return dicom_patient(ds) or None


PLAUSIBLE_WEIGHT_KG = (2.0, 400.0)  # kg; outside, a DICOM PatientWeight is ignored


def dicom_patient(ds: Any) -> dict[str, Any]:
    """age (years), sex and weight_kg from a pydicom dataset's PatientAge ('065Y', '018M', '20W',
    '100D'), PatientSex and PatientWeight (kg); what is absent or unreadable is left out."""
    out: dict[str, Any] = {}
    age = parse_dicom_age(str(ds.get("PatientAge", "") or ""))
    if age is not None:
        out["age"] = age
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in ("F", "M", "O"):
        out["sex"] = sex
    try:
        weight = float(ds.get("PatientWeight") or 0)
    except (TypeError, ValueError):
        weight = 0.0
    if PLAUSIBLE_WEIGHT_KG[0] <= weight <= PLAUSIBLE_WEIGHT_KG[1]:
        out["weight_kg"] = weight
    return out


def parse_dicom_age(text: str) -> float | None:
    """DICOM AS ('nnnD|W|M|Y') in years; None when empty or malformed."""
    text = text.strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in "DWMY":
        return None
    per_year = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[text[3]]
    return round(int(text[:3]) / per_year, 2)


def _patient_id(ds: Any) -> str | None:
    value = str(ds.get("PatientID", "") or "").strip()
    return value or None
