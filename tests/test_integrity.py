"""PNG integrity with one inflate: what osteopano.io.integrity checks itself (chunk structure and CRCs,
about 1 ms) and what it leaves to the decoder (the zlib stream: osteopano.io.png_fast, else libpng), on
a real radiograph when ../shared is there and on a phantom always. Every damage below must end as an
ImageReadError naming the problem."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from bad_inputs import phantom_u8
from PIL import Image

from osteopano.errors import ImageReadError
from osteopano.io.images import read_image, read_image_bytes
from osteopano.io.integrity import CorruptImage, check_png

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-samples" / "native"


def _phantom_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(phantom_u8()).save(buf, format="PNG")
    return buf.getvalue()


def _real_png() -> bytes:
    files = sorted(REAL.glob("*.png")) if REAL.is_dir() else []
    if not files:
        pytest.skip(f"no real PNG radiographs at {REAL} (they live beside the checkout)")
    return files[0].read_bytes()


@pytest.fixture(params=["phantom", "real"])
def png(request) -> bytes:
    return _phantom_png() if request.param == "phantom" else _real_png()


def _chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, type) of each chunk."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((pos, length, ctype))
        pos += 12 + length
    return out


def _idats(data: bytes) -> list[tuple[int, int]]:
    return [(pos, length) for pos, length, ctype in _chunks(data) if ctype == b"IDAT"]


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _replace_chunk(data: bytes, pos: int, length: int, ctype: bytes, body: bytes) -> bytes:
    """Chunk at ``pos`` replaced by a well-formed one (its CRC right for the new body)."""
    return data[:pos] + _chunk(ctype, body) + data[pos + 12 + length:]


def _after_ihdr(data: bytes, chunk: bytes) -> bytes:
    return data[:33] + chunk + data[33:]


def _reason(data: bytes, name: str = "x.png") -> str:
    with pytest.raises(ImageReadError) as info:
        read_image_bytes(data, name)
    assert name in str(info.value)
    return info.value.reason


def _decoded_by_libpng(data: bytes) -> bool:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None


# ----------------------------------------------------------------------------- what our CRC check catches


@pytest.mark.parametrize("where", [0.0, 0.25, 0.5, 0.999])
def test_a_flipped_byte_inside_idat_is_caught_by_its_crc(png, where):
    idats = _idats(png)
    pos, length = idats[min(len(idats) - 1, int(where * len(idats)))]
    data = bytearray(png)
    data[pos + 8 + int(where * (length - 1))] ^= 0x5A
    assert "CRC mismatch in the IDAT chunk" in _reason(bytes(data))


def test_a_file_cut_inside_idat_is_truncated(png):
    pos, length = _idats(png)[len(_idats(png)) // 2]
    assert "truncated PNG" in _reason(png[:pos + 8 + length // 2])


@pytest.mark.parametrize("ctype, body", [(b"tEXt", b"Comment\0scanned 2019"),
                                         (b"pHYs", struct.pack(">IIB", 10_000, 10_000, 1))])
def test_a_bad_crc_in_an_ancillary_chunk_is_caught(png, ctype, body):
    # libpng only warns about these and decodes on; a wrong pHYs would be a wrong pixel spacing
    data = bytearray(_after_ihdr(png, _chunk(ctype, body)))
    data[33 + 8 + len(body) // 2] ^= 0x01
    assert f"CRC mismatch in the {ctype.decode()} chunk" in _reason(bytes(data))


def test_the_chunk_check_does_not_inflate():
    """inflate=False checks chunks and CRCs only: a garbage zlib stream with right CRCs passes it."""
    png = _phantom_png()
    pos, length = _idats(png)[0]
    garbage = np.random.default_rng(0).bytes(length)
    data = _replace_chunk(png, pos, length, b"IDAT", garbage)
    assert check_png(io.BytesIO(data), inflate=False) == {"frames": 1}
    with pytest.raises(CorruptImage, match="PNG image data"):
        check_png(io.BytesIO(data))


# ----------------------------------------------------------------------------- what libpng catches


def _stream_cut(png: bytes, keep: float) -> bytes:
    """The last IDAT shortened to ``keep`` of its length, its length field and CRC made right."""
    pos, length = _idats(png)[-1]
    body = png[pos + 8:pos + 8 + length]
    return _replace_chunk(png, pos, length, b"IDAT", body[:int(len(body) * keep)])


@pytest.mark.parametrize("damage", ["half-of-last-idat", "adler32-missing", "last-idat-dropped"])
def test_a_truncated_zlib_stream_in_intact_chunks_is_refused_and_named(png, damage):
    if damage == "half-of-last-idat":
        data = _stream_cut(png, 0.5)
    elif damage == "adler32-missing":
        pos, length = _idats(png)[-1]
        data = _replace_chunk(png, pos, length, b"IDAT", png[pos + 8:pos + 8 + length - 4])
    else:
        if len(_idats(png)) < 2:
            pytest.skip("this PNG has a single IDAT chunk")
        pos, length = _idats(png)[-1]
        data = png[:pos] + png[pos + 12 + length:]
    assert not _decoded_by_libpng(data)  # the premise: the decoder refuses it (no second inflate needed)
    assert "PNG image data" in _reason(data)


def test_a_damaged_stream_with_fixed_crc_is_named_when_pillow_decodes(tmp_path):
    """A palette PNG goes to Pillow, which checks no zlib stream: the full inflate runs before it."""
    arr = (phantom_u8() // 16).astype(np.uint8)
    img = Image.fromarray(arr).convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    png = buf.getvalue()
    pos, length = _idats(png)[0]
    body = bytearray(png[pos + 8:pos + 8 + length])
    body[len(body) // 2] ^= 0x5A
    data = _replace_chunk(png, pos, length, b"IDAT", bytes(body))
    assert "corrupt PNG image data" in _reason(data)
    (tmp_path / "p.png").write_bytes(data)
    with pytest.raises(ImageReadError, match="p.png.*corrupt PNG image data"):
        read_image(tmp_path / "p.png")


# ----------------------------------------------------------------------------- what png_fast catches


@pytest.mark.parametrize("source", ["opencv-phantom", "real"])
def test_a_bad_adler32_met_after_the_last_row_is_refused(source):
    """The case libpng lets through: IDAT data damaged with its chunk CRC recomputed, here the Adler-32
    in an IDAT of its own, which libpng reads after the last row (a warning; it decodes). png_fast
    inflates the stream to its end, so where it decodes (rows filtered None/Sub/Up, as OpenCV writes
    them) the file is refused."""
    if source == "real":
        png = _real_png()
    else:
        _, buf = cv2.imencode(".png", phantom_u8())
        png = buf.tobytes()
    idats = _idats(png)
    stream = b"".join(png[pos + 8:pos + 8 + length] for pos, length in idats)
    start, end = idats[0][0], idats[-1][0] + 12 + idats[-1][1]
    bad_adler = bytes(b ^ 0xFF for b in stream[-4:])
    data = png[:start] + _chunk(b"IDAT", stream[:-4]) + _chunk(b"IDAT", bad_adler) + png[end:]
    assert _decoded_by_libpng(data)  # the premise: libpng alone would decode it
    assert "corrupt PNG image data" in _reason(data) and "incorrect data check" in _reason(data)


def test_an_intact_png_reads_the_same_pixels_as_pillow(png):
    image = read_image_bytes(png, "ok.png")
    with Image.open(io.BytesIO(png)) as img:
        expected = np.asarray(img.convert("L"), np.float32) / 255.0
    np.testing.assert_array_equal(image.pixels, expected)
