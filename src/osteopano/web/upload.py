"""Reading an upload: the multipart body streamed into memory, its size capped, its type sniffed.

Starlette's own form parser would spool files over 1 MB to a temporary file on disk; this one keeps
everything in memory and counts the bytes, so a lying or missing ``Content-Length`` is still capped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import (
    MultipartParseError,
    MultipartParser,
    parse_options_header,
)
from starlette.requests import ClientDisconnect, Request

MULTIPART_OVERHEAD = 64 * 1024   # boundaries, part headers and small fields allowed on top of the file
FIELD_MAX_BYTES = 256            # a text field (e.g. pixel_spacing_mm) longer than this is refused

# Magic numbers of the formats we accept; anything else is refused with 415 before decoding.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"II+\x00", "tiff"),   # BigTIFF
    (0, b"MM\x00+", "tiff"),
    (0, b"BM", "bmp"),
    (128, b"DICM", "dicom"),
)
# A DICOM file without the 128-byte preamble (pydicom reads it with force=True; the CLI accepts it):
# the data set starts with a group 0x0002 (file meta), 0x0008 (identifying) tag, little endian.
_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")
_DICOM_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
              b"OF", b"OL", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"TM", b"UC", b"UI", b"UL", b"UN",
              b"UR", b"US", b"UT"}


def sniff_image_type(head: bytes) -> str | None:
    """The image format named by the file's first bytes ('png', 'jpeg', 'tiff', 'bmp', 'dicom'), or None."""
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    if _preambleless_dicom(head):
        return "dicom"
    return None


def _preambleless_dicom(head: bytes) -> bool:
    """True when ``head`` starts like a DICOM data set without preamble: a little-endian tag of group
    0x0002 or 0x0008 followed by a valid explicit VR, or (implicit VR) a small element length."""
    if len(head) < 8 or head[0:2] not in _DICOM_GROUPS:
        return False
    if head[4:6] in _DICOM_VRS:
        return True
    return int.from_bytes(head[4:8], "little") < 1024   # implicit VR: a plausible 32-bit length


def as_part10(data: bytes) -> bytes:
    """A DICOM upload as a Part 10 file: a preamble-less one gets the 128-byte preamble and ``DICM`` (and,
    when it has no file meta group, one naming its transfer syntax: explicit or implicit VR little
    endian, as its first element shows), so the decoder reads it like the CLI does."""
    if data[128:132] == b"DICM" or not _preambleless_dicom(data[:132]):
        return data
    head = bytes(128) + b"DICM"
    if data[0:2] == b"\x02\x00":
        return head + data
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if data[4:6] in _DICOM_VRS else ImplicitVRLittleEndian
    buf = DicomBytesIO()
    write_file_meta_info(buf, meta, enforce_standard=False)
    return head + buf.getvalue() + data


class WebError(Exception):
    """A request that ends with an error status and a message for the user."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


@dataclass
class Upload:
    data: bytes
    filename: str | None
    kind: str  # sniffed format
    fields: dict[str, str] = field(default_factory=dict)   # the small text fields sent with it


async def read_multipart_file(request: Request, field_name: str, limit: int, *, text_fields: tuple[str, ...] = (),
                              timeout_s: float | None = None) -> tuple[bytes, str | None, dict[str, str]]:
    """Stream a multipart/form-data body; (bytes, client file name, text fields) of ``field_name``.

    Everything stays in memory; more than ``limit`` file bytes (or a body far above it) -> 413. Only the
    text fields named in ``text_fields`` are kept (each at most ``FIELD_MAX_BYTES``). A body not
    received in full within ``timeout_s`` -> 408; a client that goes away -> ``ClientDisconnect``.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise WebError(400, f"send the image as multipart/form-data in a field named '{field_name}'")
    too_large = WebError(413, f"upload is larger than the limit of {limit / 2**20:g} MB")
    part: dict[str, Any] = {}
    found: dict[str, Any] = {}
    texts: dict[str, str] = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers=[], name=b"", value=b"", data=None, filename=None, text=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"].append((part["name"].lower(), part["value"]))
        part["name"], part["value"] = b"", b""

    def on_headers_finished() -> None:
        disposition = dict(part["headers"]).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == field_name and "file" not in found:
            part["data"] = bytearray()
            filename = options.get(b"filename")
            part["filename"] = filename.decode("utf-8", "replace") if filename is not None else None
        elif name in text_fields and name not in texts:
            part["text"], part["text_name"] = bytearray(), name

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("data") is not None:
            part["data"] += data[start:end]
            if len(part["data"]) > limit:
                raise too_large
        elif part.get("text") is not None:
            part["text"] += data[start:end]
            if len(part["text"]) > FIELD_MAX_BYTES:
                raise WebError(400, f"the form field '{part['text_name']}' is too long")

    def on_part_end() -> None:
        if part.get("data") is not None:
            found["file"], found["filename"] = bytes(part["data"]), part["filename"]
        elif part.get("text") is not None:
            texts[part["text_name"]] = part["text"].decode("utf-8", "replace").strip()

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    received = 0
    stream = request.stream().__aiter__()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), wait)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise WebError(408, f"the upload was not received within {timeout_s:g} s; send it again") from None
            received += len(chunk)
            if received > limit + MULTIPART_OVERHEAD:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise WebError(400, f"malformed multipart body ({exc})") from None
    if "file" not in found:
        raise WebError(400, f"no file in the upload (expected a multipart field named '{field_name}')")
    if not found["file"]:
        raise WebError(422, "the uploaded file is empty (0 bytes)")
    return found["file"], found["filename"], texts


def safe_filename(name: str | None) -> str | None:
    """The last path component of a client's file name, printable and at most 120 characters."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:120] or None


__all__ = [
    "FIELD_MAX_BYTES",
    "MULTIPART_OVERHEAD",
    "ClientDisconnect",
    "Upload",
    "WebError",
    "read_multipart_file",
    "safe_filename",
    "sniff_image_type",
]
