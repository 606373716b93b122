"""Check that an image file is whole before any library decodes it.

Decoders are lenient: Pillow does not check the CRC of PNG image-data chunks and stops inflating once
it has its rows, so a flipped byte in IDAT can turn most of an image into garbage without an error;
libpng warns about a bad ancillary-chunk CRC and decodes on; a JPEG cut short is padded with grey by
libjpeg. ``check_file`` reads the container itself:

* PNG: every chunk's CRC-32 (IDAT included; a flipped byte anywhere in a chunk fails it), IHDR first
  and valid, IDAT chunks consecutive, IEND present. With ``inflate=True`` (the default) also the zlib
  stream of the IDAT chunks, inflated to the end (its Adler-32 checked by zlib) and exactly the size
  IHDR implies; inflating is streamed in 1 MiB pieces, so a zip bomb costs time, not memory.
  ``osteopano.io.images`` checks the chunks only (``inflate=False``, about 1 ms for a 2943 x 1435 PNG,
  with ``keep=True`` handing IHDR and the IDAT bodies on) and leaves the stream to its decoder:
  ``osteopano.io.png_fast`` (non-interlaced 8/16-bit grey/RGB/RGBA whose rows use filters None, Sub or
  Up - what OpenCV writes, and every real radiograph at hand) inflates it to the end, Adler-32 and
  size checked, and refuses any damage; libpng (the other plain PNGs) refuses a stream that is cut
  short, inflates to too little data or fails its check while the rows are read; this module inflates
  it in full only for the files Pillow decodes (which checks nothing) and, to name the problem, where
  a decoder refused one. What that leaves to libpng alone, for files png_fast leaves to it (Average or
  Paeth rows, as Pillow and libpng's adaptive filtering write): damaged IDAT data whose chunk CRC was
  recomputed over the damage (so the chunk is "intact") and whose Adler-32 failure libpng only meets
  after the last row (a warning; it decodes). The full inflate (``inflate=True``) catches it too.
* JPEG: the marker structure from SOI to EOI, entropy-coded data included; a file that ends before
  its end-of-image marker is truncated. (JPEG carries no checksum: damaged entropy data that keeps
  the structure intact is only caught when the decoder fails on it.)
* TIFF strips/tiles lying past the end of the file (``check_tiff_extent``, given the opened image).

Each failure raises ``CorruptImage`` with a plain reason; ``osteopano.io.images`` turns it into an
``ImageReadError`` naming the file. ``check_file`` also returns what it learnt (e.g. PNG frames).
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any, BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
_INFLATE_STEP = 1 << 20
# a marker inside entropy-coded data: 0xFF followed by anything but a stuffed 0x00, RSTn or fill 0xFF
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


class CorruptImage(Exception):
    """The file's own structure says it is damaged or incomplete; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_file(fh: BinaryIO, head: bytes, *, max_pixels: int | None = None, inflate: bool = True,
               keep: bool = False) -> dict[str, Any]:
    """Check a PNG or JPEG (judged from ``head``, the first bytes); other formats pass through.

    Reads ``fh`` from the start and leaves it at the start. Raises ``CorruptImage``. A PNG whose
    header declares more than ``max_pixels`` is not inflated (the reader refuses it by its header);
    ``inflate=False`` checks a PNG's chunks and CRCs but not its zlib stream (see the module text);
    ``keep`` returns what the PNG chunk walk read (see ``check_png``).
    """
    try:
        if head.startswith(PNG_SIGNATURE):
            return check_png(fh, max_pixels=max_pixels, inflate=inflate, keep=keep)
        if head.startswith(JPEG_SOI):
            return check_jpeg(fh)
        return {}
    finally:
        fh.seek(0)


# ----------------------------------------------------------------------------- PNG


def check_png(fh: BinaryIO, *, max_pixels: int | None = None, inflate: bool = True, keep: bool = False
              ) -> dict[str, Any]:
    """Verify a PNG's chunks, CRCs and (``inflate``) image data; returns {'frames': n} (APNG: its frame
    count). Stops after IHDR (returning {'too_large': True}) when it declares more than ``max_pixels``.
    ``keep`` adds what the walk read, for a decoder (``osteopano.io.png_fast``): 'ihdr' (its body),
    'idat' (the IDAT bodies in order) and 'chunks' (the set of chunk types)."""
    fh.seek(0)
    if fh.read(8) != PNG_SIGNATURE:
        raise CorruptImage("not a PNG signature")
    inflater = zlib.decompressobj()
    inflated = 0
    expected: int | None = None
    frames = 1
    index = 0
    seen_idat = idat_done = False
    ihdr, idat, types = b"", [], set()
    while True:
        header = fh.read(8)
        if len(header) < 8:
            raise CorruptImage("truncated PNG: the file ends before its IEND chunk"
                               if header or index else "truncated PNG: no chunks after the signature")
        length, ctype = struct.unpack(">I4s", header)
        name = ctype.decode("latin-1")
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise CorruptImage(f"corrupt PNG: bad chunk header at chunk {index + 1}")
        if index == 0 and ctype != b"IHDR":
            raise CorruptImage("corrupt PNG: the first chunk is not IHDR")
        data = fh.read(length)
        crc = fh.read(4)
        if len(data) < length or len(crc) < 4:
            raise CorruptImage(f"truncated PNG: the file ends inside its {name} chunk")
        if zlib.crc32(data, zlib.crc32(ctype)) != struct.unpack(">I", crc)[0]:
            raise CorruptImage(f"corrupt PNG: CRC mismatch in the {name} chunk (damaged data)")
        types.add(name)
        if ctype == b"IHDR":
            ihdr = data
            expected = _png_data_size(data)
            if max_pixels is not None and len(data) >= 8:
                width, height = struct.unpack(">II", data[:8])
                if width * height > max_pixels:
                    return {"frames": 1, "too_large": True}
        elif ctype == b"acTL" and length >= 4:
            frames = max(1, struct.unpack(">I", data[:4])[0])
        elif ctype == b"IDAT":
            if idat_done:
                raise CorruptImage("corrupt PNG: image data (IDAT) chunks are not consecutive")
            seen_idat = True
            if keep:
                idat.append(data)
            if inflate:
                inflated += _inflate(inflater, data)
        elif seen_idat:
            idat_done = True
        if ctype == b"IEND":
            break
        index += 1
    if not seen_idat:
        raise CorruptImage("corrupt PNG: no image data (IDAT) chunk")
    found: dict[str, Any] = {"frames": frames}
    if keep:
        found.update(ihdr=ihdr, idat=idat, chunks=frozenset(types))
    if not inflate:
        return found
    try:
        inflated += len(inflater.flush())
    except zlib.error as exc:
        raise CorruptImage(f"corrupt PNG image data: {exc}") from None
    if not inflater.eof:
        raise CorruptImage("truncated PNG image data: the compressed stream is incomplete")
    if expected is not None and inflated != expected:
        raise CorruptImage(f"corrupt PNG image data: {inflated} bytes where IHDR implies {expected}")
    return found


def _inflate(inflater: Any, data: bytes) -> int:
    """Feed ``data`` to the zlib stream in bounded pieces; return the bytes produced."""
    produced = 0
    try:
        if inflater.eof:
            if data:
                raise CorruptImage("corrupt PNG image data: data after the end of the compressed stream")
            return 0
        chunk = inflater.decompress(data, _INFLATE_STEP)
        produced += len(chunk)
        while inflater.unconsumed_tail and not inflater.eof:
            chunk = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
            produced += len(chunk)
    except zlib.error as exc:
        raise CorruptImage(f"corrupt PNG image data: {exc}") from None
    return produced


def _png_data_size(ihdr: bytes) -> int | None:
    """Bytes of filtered scanlines the IHDR implies (interlaced: all seven Adam7 passes)."""
    if len(ihdr) < 13:
        raise CorruptImage("corrupt PNG: IHDR chunk too short")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[:13])
    channels = _PNG_CHANNELS.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16) or width == 0 or height == 0:
        raise CorruptImage("corrupt PNG: invalid IHDR (size, bit depth or colour type)")
    bits = channels * depth

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if interlace == 0:
        return rows(width, height)
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in passes)


# ----------------------------------------------------------------------------- JPEG


def check_jpeg(fh: BinaryIO) -> dict[str, Any]:
    """Walk a JPEG's markers from SOI to EOI (through the entropy-coded scans)."""
    fh.seek(0)
    data = fh.read()
    if not data.startswith(b"\xff\xd8"):
        raise CorruptImage("not a JPEG start-of-image marker")
    pos, n = 2, len(data)
    scans = 0
    while True:
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > n:
            raise CorruptImage("truncated JPEG: the file ends before its end-of-image marker")
        if data[pos] != 0xFF:
            raise CorruptImage(f"corrupt JPEG: no marker where one is expected (byte {pos})")
        marker = data[pos + 1]
        pos += 2
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            continue
        if pos + 2 > n:
            raise CorruptImage("truncated JPEG: the file ends inside a segment header")
        length = struct.unpack(">H", data[pos:pos + 2])[0]
        if length < 2:
            raise CorruptImage("corrupt JPEG: bad segment length")
        if pos + length > n:
            raise CorruptImage("truncated JPEG: the file ends inside a segment")
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data follows until the next real marker
            scans += 1
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                raise CorruptImage("truncated JPEG: the image data ends before the end-of-image marker")
            pos = found.start()
    if scans == 0:
        raise CorruptImage("corrupt JPEG: no image data (no scan)")
    return {"scans": scans}


# ----------------------------------------------------------------------------- TIFF


def check_tiff_extent(img: Any, file_size: int) -> None:
    """Refuse a TIFF whose strips or tiles (of the current page) reach past the end of the file."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # strips, tiles
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if not offsets or not counts:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        end = max(int(o) + int(c) for o, c in zip(offsets, counts))
        if end > file_size:
            raise CorruptImage(f"truncated TIFF: image data reaches byte {end} of a {file_size}-byte file")
