"""Small files whose markers or chunks would cost a decoder far more than their pixels.

Each is refused by the image rules from the structure walk, in milliseconds, before
Pillow's own header parser (Python, a byte or a segment at a time) or libjpeg sees
it; the ordinary files next to them still decode.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from unittest import mock

import pytest
from conftest import template_limits
from image_catalog import gif_extension, gif_with_blocks, gif_xmp
from PIL import Image, ImageFile
from scones_core import errors
from scones_core.image_rules import decode_image
from scones_core.image_structure import (
    MAX_GIF_PADDING_BYTES,
    MAX_GIF_SUB_BLOCKS,
    MAX_JPEG_PADDING_BYTES,
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    jpeg_layout,
)

LIMITS = template_limits()


def jpeg(size: tuple[int, int] = (64, 64), **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 90, 40)).save(out, "JPEG", **options)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(extra: bytes) -> bytes:
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
    pixels = png_chunk(b"IDAT", zlib.compress(bytes(17 * 16)))
    return b"\x89PNG\r\n\x1a\n" + header + extra + pixels + png_chunk(b"IEND")


def rejected(data: bytes, *, before_pillow: bool = False) -> errors.ImageRejected:
    """The rules' refusal of ``data``, from the walk: no decoder ran (a flood that reached
    libjpeg or Pillow's GIF reader would cost its time there), and with ``before_pillow``
    Pillow did not even open the file."""
    never = AssertionError("Pillow decoded a file the walk should have refused")
    with (
        mock.patch.object(ImageFile.ImageFile, "load", side_effect=never),
        mock.patch.object(Image, "open", side_effect=never) if before_pillow else nullcontext(),
        pytest.raises(errors.ImageRejected) as raised,
    ):
        decode_image(data, LIMITS)
    return raised.value


def hide_scans_behind_stuffed_zeros(data: bytes) -> bytes:
    """Each scan inside a "segment" that starts FF 00: a walk that reads FF 00 as a
    marker with a length jumps over the scans; libjpeg and Pillow discard FF 00."""
    first = data.index(b"\xff\xda")
    body, hidden = data[first:-2], bytearray(data[:first])
    for start in range(0, len(body), 60_000):
        part = body[start : start + 60_000]
        hidden += b"\xff\xfe\x00\x02" + b"\xff\x00" + struct.pack(">H", len(part) + 2) + part
    return bytes(hidden + b"\xff\xfe\x00\x02\xff\xd9")


def many_scans(count: int) -> bytes:
    """A progressive JPEG whose last scan is repeated up to ``count`` scans."""
    base = jpeg((256, 256), progressive=True, quality=90)
    starts = [m.start() for m in re.finditer(b"\xff\xda", base)]
    last = base[starts[-1] : -2]
    return base[:-2] + last * (count - len(starts)) + b"\xff\xd9"


def test_scans_hidden_behind_stuffed_zeros_are_still_counted() -> None:
    plain = many_scans(MAX_JPEG_SCANS + 50)
    hidden = hide_scans_behind_stuffed_zeros(plain)
    assert jpeg_layout(hidden).scans == jpeg_layout(plain).scans == MAX_JPEG_SCANS + 1
    assert isinstance(rejected(hidden), errors.ImageTooComplex)
    # Hiding fewer scans than the limit changes nothing a decoder sees: it still decodes.
    assert decode_image(hide_scans_behind_stuffed_zeros(many_scans(20)), LIMITS).image.size == (
        256,
        256,
    )


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "fill bytes",
            jpeg()[:2] + b"\xff" * (MAX_JPEG_PADDING_BYTES + 2) + jpeg()[2:],
            f"more than {MAX_JPEG_PADDING_BYTES} bytes of padding",
        ),
        (
            "empty comment segments",
            jpeg()[:2] + b"\xff\xfe\x00\x02" * (MAX_JPEG_SEGMENTS + 1) + jpeg()[2:],
            f"more than {MAX_JPEG_SEGMENTS} marker segments",
        ),
        (
            "restart markers outside a scan",
            jpeg()[:2] + b"\xff\xd0" * (MAX_JPEG_SEGMENTS + 1) + jpeg()[2:],
            f"more than {MAX_JPEG_SEGMENTS} marker segments",
        ),
        (
            "empty ancillary PNG chunks",
            png_with(png_chunk(b"prVt") * MAX_PNG_CHUNKS),
            f"more than {MAX_PNG_CHUNKS} chunks",
        ),
    ],
)
def test_floods_of_empty_markers_are_refused_from_the_walk(
    name: str, data: bytes, message: str
) -> None:
    error = rejected(data)
    assert isinstance(error, errors.ImageTooComplex), name
    assert message in str(error)


def test_the_jpeg_padding_budget_is_the_documented_64_kib_inclusive() -> None:
    """docs/reliability.md: at most 64 KiB of padding (here fill bytes before a marker)."""
    padded = jpeg()[:2] + b"\xff" * 64 * 1024 + jpeg()[2:]
    assert jpeg_layout(padded).padding == 64 * 1024
    assert decode_image(padded, LIMITS).image.size == (64, 64)
    over = jpeg()[:2] + b"\xff" * (64 * 1024 + 1) + jpeg()[2:]
    assert isinstance(rejected(over), errors.ImageTooComplex)


def test_more_restart_markers_than_blocks_are_refused() -> None:
    data = jpeg((16, 16))  # 4 blocks of 8x8 a component
    scan = data.index(b"\xff\xda")
    scan_end = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    flooded = data[:scan_end] + b"\xff\xd0" * 5 + data[scan_end:]
    error = rejected(flooded)
    assert isinstance(error, errors.ImageTooComplex)
    assert "5 restart markers, more than its 1 scan(s) of 4 blocks" in str(error)


@pytest.mark.parametrize(
    ("options", "restarts"),
    [
        ({"restart_marker_rows": 1}, 480 // 16 - 1),  # 4:2:0: 16x16 pixels an MCU
        ({"restart_marker_blocks": 1}, 40 * 30 - 1),  # after every MCU, the most there are
    ],
)
def test_ordinary_restart_intervals_still_decode(options: dict[str, int], restarts: int) -> None:
    data = jpeg((640, 480), **options)
    assert jpeg_layout(data).restarts == restarts
    assert decode_image(data, LIMITS).image.size == (640, 480)


def test_unknown_critical_png_chunks_and_arithmetic_jpegs_are_named() -> None:
    critical = rejected(png_with(png_chunk(b"CgBI", b"\x50\x00\x20\x06")))
    assert isinstance(critical, errors.UnsupportedImageFormat)
    assert "critical chunk CgBI" in str(critical)
    baseline = jpeg()
    sof0 = baseline.index(b"\xff\xc0")
    arithmetic = baseline[: sof0 + 1] + b"\xc9" + baseline[sof0 + 2 :]  # SOF9
    error = rejected(arithmetic)
    assert isinstance(error, errors.UnsupportedImageFormat)
    assert str(error).startswith("Arithmetic-coded JPEGs are not supported")


def test_a_flood_of_empty_scans_is_refused_from_the_walk() -> None:
    data = jpeg()
    scan = data.index(b"\xff\xda")
    flooded = data[:scan] + b"\xff\xda\x00\x00" * 200_000 + data[scan:]
    error = rejected(flooded)  # the walk stops one scan past the limit
    assert isinstance(error, errors.ImageTooComplex)
    assert f"more than {MAX_JPEG_SCANS} scans" in str(error)


def test_fill_bytes_before_a_restart_marker_are_part_of_the_scan() -> None:
    """The specification allows 0xFF fill bytes before any marker, RSTn too."""
    data = jpeg((320, 240), restart_marker_blocks=1)
    first = data.index(b"\xff\xd0")
    filled = data[:first] + b"\xff\xff" + data[first:]
    layout = jpeg_layout(filled)
    assert layout.padding == 0 and layout.restarts == jpeg_layout(data).restarts
    assert decode_image(filled, LIMITS).image.size == (320, 240)


# ---- GIF ----------------------------------------------------------------------------


def gif(**options: object) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(out, "GIF", **options)
    return out.getvalue()


COMMENT = 0xFE


def one_byte_sub_blocks(count: int) -> bytes:
    """A comment extension of ``count`` one-byte sub-blocks."""
    return b"!\xfe" + b"\x01C" * count + b"\x00"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # 8 million of them in 16 MB took 3.3 s and 900 MB
        (lambda: one_byte_sub_blocks(8_000_000), "extension blocks"),
        (lambda: gif_extension(COMMENT, b"") * (MAX_GIF_SUB_BLOCKS + 1), "extension blocks"),
        (lambda: bytes(16_000_000), "bytes between its blocks"),  # 16 MB took 3.1 s
    ],
    ids=["one-byte comment sub-blocks", "empty extensions", "stray bytes between blocks"],
)
def test_gif_floods_before_the_first_image_are_refused_from_the_walk(
    make: Callable[[], bytes], message: str
) -> None:
    data = gif_with_blocks(gif(), make())
    error = rejected(data, before_pillow=True)  # Pillow reads them a block at a time
    assert isinstance(error, errors.ImageTooComplex)
    assert message in str(error)


def test_the_gif_budgets_are_inclusive() -> None:
    plain = gif()
    # A comment of n sub-blocks is n + 1 blocks with its terminator.
    at_budget = gif_with_blocks(plain, one_byte_sub_blocks(MAX_GIF_SUB_BLOCKS - 1))
    padded = gif_with_blocks(plain, bytes(MAX_GIF_PADDING_BYTES))
    for data in (at_budget, padded):
        assert decode_image(data, LIMITS).image.size == (64, 48)
    for data in (
        gif_with_blocks(plain, one_byte_sub_blocks(MAX_GIF_SUB_BLOCKS)),
        gif_with_blocks(plain, bytes(MAX_GIF_PADDING_BYTES + 1)),
    ):
        assert isinstance(rejected(data), errors.ImageTooComplex)


def test_ordinary_gifs_still_decode() -> None:
    """Animations, comments, XMP (read as if it were sub-blocks), and a whole 16 MB of
    comment in full sub-blocks."""
    frames = [Image.new("RGB", (64, 48), (i, 255 - i, 0)) for i in range(0, 250, 5)]
    animated = gif(save_all=True, append_images=frames, duration=40, loop=0, comment=b"hi")
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b"<rdf:RDF/>" * 20_000 + b"</x:xmpmeta>"
    for data in (
        animated,
        gif(comment=b"a comment " * 1000),
        gif_with_blocks(gif(), gif_xmp(xmp)),
        gif_with_blocks(gif(), gif_extension(COMMENT, b"C" * 16_000_000)),
    ):
        assert decode_image(data, LIMITS).image.size == (64, 48)
