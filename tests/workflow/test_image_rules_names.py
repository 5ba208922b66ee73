"""Files that are not what they start like, or are valid but not decodable here, get the
error that names them (not "corrupt", not a video)."""

from __future__ import annotations

import io
import struct

import pytest
from conftest import template_limits
from PIL import Image
from scones_core import errors
from scones_core.image_rules import decode_image

LIMITS = template_limits()


def rejection(data: bytes) -> errors.ImageRejected:
    with pytest.raises(errors.ImageRejected) as raised:
        decode_image(data, LIMITS)
    return raised.value


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + bytes(600)


def tiff(mode: str, sample_format: int) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (16, 16), 7).save(out, "TIFF", tiffinfo={339: sample_format})
    data = out.getvalue()
    # Pillow writes its own SampleFormat for some modes; set the tag's one SHORT value.
    entry = struct.pack("<HHI", 339, 3, 1)
    at = data.index(entry) + len(entry)
    return data[:at] + struct.pack("<H", sample_format) + data[at + 2 :]


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"BMX bikes are small bicycles" + bytes(300), errors.NotAnImage, "is not an image"),
        (ftyp(b"mif2", b"mif2", b"heic"), errors.UnsupportedImageFormat, "HEIC images"),
        (ftyp(b"crx ", b"crx ", b"isom"), errors.UnsupportedImageFormat, "camera raw (CR3)"),
        (tiff("I", 1), errors.UnsupportedImageFormat, "unsigned 32-bit integer samples"),
        (tiff("L", 2), errors.UnsupportedImageFormat, "signed 8-bit integer samples"),
    ],
    ids=["text-starting-BM", "heif-mif2", "canon-cr3", "uint32-tiff", "int8-tiff"],
)
def test_each_is_named(data: bytes, error: type[errors.ImageRejected], words: str) -> None:
    rejected = rejection(data)
    assert isinstance(rejected, error), rejected
    assert words in str(rejected)


def test_a_12_bit_lossless_jpeg_is_named_unsupported_not_corrupt() -> None:
    out = io.BytesIO()
    Image.new("L", (16, 16), 7).save(out, "JPEG")
    data = out.getvalue()
    sof = data.index(b"\xff\xc0")
    # The frame marker says lossless (SOF3), its precision 12 bits: refused from the header.
    lossless = data[:sof] + b"\xff\xc3" + data[sof + 2 : sof + 4] + b"\x0c" + data[sof + 5 :]
    rejected = rejection(lossless)
    assert isinstance(rejected, errors.UnsupportedImageFormat)
    assert str(rejected).startswith("12-bit lossless JPEGs are not supported")


def test_ordinary_bmp_and_tiff_still_decode() -> None:
    for fmt, mode in (("BMP", "RGB"), ("TIFF", "I;16"), ("TIFF", "L")):
        out = io.BytesIO()
        Image.new(mode, (16, 16)).save(out, fmt)
        assert decode_image(out.getvalue(), LIMITS).image.size == (16, 16)
