"""Files that are not what they start like, or are valid but not decodable here, get the
error that names them (not "corrupt", not a video)."""

from __future__ import annotations

import io
import struct

import pytest
from conftest import template_limits
from image_catalog import tiff_in_strips
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


def bmp_a4r4g4b4(width: int, height: int) -> bytes:
    """A 16-bit BMP whose masks are A4R4G4B4: valid, and a layout Pillow does not read."""
    body = bytes(-(-width * 2 // 4) * 4 * height)
    info = struct.pack("<IiiHHIIiiII", 56, width, height, 1, 16, 3, len(body), 2835, 2835, 0, 0)
    info += struct.pack("<IIII", 0xF00, 0xF0, 0xF, 0xF000)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + body


FLOAT = ((339, 3, [3, 3, 3]),)  # SampleFormat: IEEE floating point


def with_software(text: bytes) -> bytes:
    """A float RGB TIFF whose Software tag (ASCII) holds ``text``, up to 4 bytes, in its
    entry (as a TIFF stores a value that fits)."""
    value = int.from_bytes(text.ljust(4, b"\0"), "little")
    data = tiff_in_strips(8, 8, 8, samples=3, bits=32, extra_tags=(*FLOAT, (305, 2, [value])))
    entry = struct.pack("<HHI", 305, 2, 1)
    return data.replace(entry, struct.pack("<HHI", 305, 2, len(text)), 1)


def jpeg_cut_at(size: int) -> bytes:
    """A photo's first ``size`` bytes: a JPEG whose header is cut off (a partial upload)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()[:size]


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        # Cut inside its header: named as a JPEG, not as "the image" of no format.
        (jpeg_cut_at(300), errors.CorruptImage, "The JPEG header is truncated or corrupt"),
        (b"BMX bikes are small bicycles" + bytes(300), errors.NotAnImage, "is not an image"),
        # A HEIC's file type and nothing more: no metadata says where an image is.
        (ftyp(b"mif2", b"mif2", b"heic"), errors.CorruptImage, "0 meta boxes"),
        (ftyp(b"crx ", b"crx ", b"isom"), errors.UnsupportedImageFormat, "camera raw (CR3)"),
        (tiff("I", 1), errors.UnsupportedImageFormat, "unsigned 32-bit integer samples"),
        (tiff("L", 2), errors.UnsupportedImageFormat, "signed 8-bit integer samples"),
        # Valid TIFFs Pillow does not read ("unknown pixel mode"): they were "corrupt".
        (
            tiff_in_strips(8, 8, 8, samples=3, bits=32, extra_tags=FLOAT),
            errors.UnsupportedImageFormat,
            "TIFFs of RGB in 32-bit floating-point samples are not supported",
        ),
        (
            tiff_in_strips(8, 8, 8, samples=3, bits=16, extra_tags=FLOAT),
            errors.UnsupportedImageFormat,
            "TIFFs of RGB in 16-bit floating-point samples are not supported",
        ),
        (
            tiff_in_strips(8, 8, 8, samples=3, bits=32),
            errors.UnsupportedImageFormat,
            "TIFFs of RGB in 32-bit unsigned integer samples are not supported",
        ),
        (
            with_software(b"abc\0"),
            errors.UnsupportedImageFormat,
            "TIFFs of RGB in 32-bit floating-point samples are not supported",
        ),
        (bmp_a4r4g4b4(8, 8), errors.UnsupportedImageFormat, "Unsupported BMP bitfields layout;"),
        # Text holding an <svg> element is no SVG document unless <svg> is its root.
        (
            b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body>'
            + b"<p>text</p>" * 100
            + b'<svg width="16" height="16"/></body></html>',
            errors.NotAnImage,
            "is not an image",
        ),
        (
            b"<!-- saved page -->\n<!DOCTYPE html><html><svg></svg></html>",
            errors.NotAnImage,
            "is not",
        ),
        (b'<?xml version="1.0"?><feed><svg-icon/></feed>', errors.NotAnImage, "is not an image"),
        (
            b'<?xml version="1.0"?><!-- editor --><!DOCTYPE svg [<!ENTITY a "]">]>\n<svg/>',
            errors.NotARasterImage,
            "an SVG vector image",
        ),
    ],
    ids=[
        "jpeg-cut-in-its-header",
        "text-starting-BM",
        "heif-mif2",
        "canon-cr3",
        "uint32-tiff",
        "int8-tiff",
        "float32-rgb-tiff",
        "float16-rgb-tiff",
        "uint32-rgb-tiff",
        "float32-rgb-tiff-short-text",
        "a4r4g4b4-bmp",
        "xhtml-with-inline-svg",
        "html-with-svg",
        "feed-with-svg-icon",
        "svg-with-entities",
    ],
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
