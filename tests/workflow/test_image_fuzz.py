"""Hostile uploads made from real encoder output by changing its structure: length fields,
directory entries and offsets set to edge values, units removed, repeated or cut short.

Whatever the bytes, ``normalise_image`` returns model input or raises an
``ImageRejected`` that says what is wrong: never another exception. The regressions
below are inputs such mutations found.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from collections.abc import Callable
from types import FrameType

import pytest
from conftest import template_limits
from heif_files import hevc_tile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_catalog import bmp_run_length, encode, heic
from PIL import Image, TiffImagePlugin
from scones_core import errors, image_structure
from scones_core.image_structure import jpeg_layout
from scones_core.images import normalise_image

from scones.heic_writer import Item, exif_item, full_box, heic_file, ispe

LIMITS = template_limits()
PHOTO = Image.linear_gradient("L").resize((24, 20)).convert("RGB")
PHOTO.paste((200, 40, 10), (4, 4, 12, 12))


def normalised_or_rejected(data: bytes) -> None:
    try:
        result = normalise_image(data, LIMITS)
    except errors.ImageRejected as rejected:
        assert str(rejected).strip()
        return
    assert result.png.startswith(b"\x89PNG")


# ---- regressions ----------------------------------------------------------------------


def tiff_with_long8_strip_offset(offset: int, *, big: bool) -> bytes:
    """An uncompressed TIFF whose strip offset is a LONG8 (type 16) of ``offset``: stored
    after the directory in a classic TIFF (8 bytes do not fit its entry), in the entry in
    a BigTIFF."""
    data = bytearray(encode(PHOTO, "TIFF", big_tiff=big))
    order = "<" if data[:2] == b"II" else ">"
    first = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    count = struct.unpack_from(order + ("Q" if big else "H"), data, first)[0]
    entry_size = 20 if big else 12
    for at in range(first + (8 if big else 2), first + count * entry_size, entry_size):
        if struct.unpack_from(order + "H", data, at)[0] != 273:  # StripOffsets
            continue
        if big:
            struct.pack_into(order + "HQQ", data, at + 2, 16, 1, offset)
        else:
            struct.pack_into(order + "HII", data, at + 2, 16, 1, len(data))
            data += struct.pack(order + "Q", offset)
        return bytes(data)
    raise AssertionError("no StripOffsets entry")


@pytest.mark.parametrize(
    ("offset", "big"),
    [(2**64 - 1, False), (2**63, True), (2**64 - 1, True)],
    ids=["classic TIFF", "BigTIFF at 2**63", "BigTIFF at 2**64-1"],
)
def test_a_strip_offset_past_any_file_position_is_corrupt(offset: int, big: bool) -> None:
    """Pillow seeks to it and Python raised OverflowError, which no rule caught."""
    data = tiff_with_long8_strip_offset(offset, big=big)
    with Image.open(io.BytesIO(data)) as opened:  # Pillow reads the offset as written
        assert opened.tile[0].offset == offset
    with pytest.raises(errors.CorruptImage) as raised:
        normalise_image(data, LIMITS)
    assert str(raised.value) == (
        "The TIFF data is truncated or corrupt: an offset or size in it is larger than any file."
    )


def python_steps(function: Callable[[], object], module: str) -> int:
    """How many Python frames of ``module`` run (a generator counts a frame each time it
    resumes): the cost a file can multiply, counted instead of timed."""
    steps = 0

    def tracer(frame: FrameType, event: str, arg: object) -> None:
        nonlocal steps
        if event == "call" and frame.f_globals.get("__name__") == module:
            steps += 1

    sys.setprofile(tracer)
    try:
        function()
    finally:
        sys.setprofile(None)
    return steps


def test_a_scan_of_restart_markers_costs_the_walk_no_step_a_marker() -> None:
    """16 MB of restart markers took the walk 1.8 s, one Python step a marker, before the
    rule refused the file (6 s of SerializeImage's 15 at Lambda's speed)."""
    data = encode(PHOTO, "JPEG", restart_marker_blocks=1)
    eoi = data.rindex(b"\xff\xd9")
    flood = bytes(byte for marker in range(0xD0, 0xD8) for byte in (0xFF, marker)) * 4096
    flooded = data[:eoi] + flood + data[eoi:]
    ordinary = jpeg_layout(data)
    assert jpeg_layout(flooded).restarts == ordinary.restarts + 8 * 4096
    steps = python_steps(lambda: jpeg_layout(flooded), image_structure.__name__)
    assert steps <= python_steps(lambda: jpeg_layout(data), image_structure.__name__) + 16
    with pytest.raises(errors.ImageTooComplex, match="restart markers, more than"):
        normalise_image(flooded, LIMITS)


# ---- structural mutations ----------------------------------------------------------------

Field = tuple[int, int, str]  # offset, width in bytes, byte order


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each chunk."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((pos, length))
        pos += 12 + length
    return chunks


def _png_recrc(data: bytes) -> bytes:
    """Every chunk's CRC made right again, so a change reaches the decoder."""
    out = bytearray(data)
    for pos, length in _png_chunks(data):
        end = pos + 8 + length
        if end + 4 <= len(out):
            out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4 : end])))
    return bytes(out)


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset, length field) of each marker segment before the first scan's data."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((pos, length))
        if data[pos + 1] == 0xDA:
            break
        pos += 2 + length
    return segments


def _tiff_fields(data: bytes) -> list[Field]:
    """The first directory's entry count, each entry's type, count and value or offset,
    and the next directory's offset."""
    order, big, first = image_structure.tiff_headers(data)[-1]
    word, entry = (8, 20) if big else (4, 12)
    count_size = 8 if big else 2
    declared = struct.unpack_from(order + ("Q" if big else "H"), data, first)[0]
    count = min(declared, (len(data) - first - count_size) // entry)
    fields: list[Field] = [(8 if big else 4, word, order), (first, count_size, order)]
    for at in range(first + count_size, first + count_size + count * entry, entry):
        fields += [(at + 2, 2, order), (at + 4, word, order), (at + 4 + word, word, order)]
    fields.append((first + count_size + count * entry, word, order))
    return fields


def structure(data: bytes) -> tuple[list[Field], list[tuple[int, int]]]:
    """A file's length, size and offset fields, and its units as (offset, size); none
    where an earlier change left too little to find them."""
    try:
        return _structure(data)
    except (IndexError, ValueError, OverflowError, struct.error):
        return [], []


def _structure(data: bytes) -> tuple[list[Field], list[tuple[int, int]]]:
    if data.startswith(b"\x89PNG"):
        chunks = _png_chunks(data)
        header = chunks[0][0] + 8
        fields = [(pos, 4, ">") for pos, _ in chunks] + [(header, 4, ">"), (header + 4, 4, ">")]
        return fields, [(pos, 12 + length) for pos, length in chunks]
    if data.startswith(b"\xff\xd8"):
        segments = _jpeg_segments(data)
        fields = [(pos + 2, 2, ">") for pos, _ in segments]
        frame = next((pos for pos, _ in segments if data[pos + 1] in (0xC0, 0xC2)), None)
        if frame is not None:
            fields += [(frame + 5, 2, ">"), (frame + 7, 2, ">"), (frame + 9, 1, ">")]
        return fields, [(pos, 2 + length) for pos, length in segments]
    if data[:4] in image_structure.TIFF_SIGNATURES:
        return _tiff_fields(data), []
    if data.startswith(b"RIFF"):
        fields, units, pos = [(4, 4, "<")], [], 12
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos + 4 : pos + 8], "little")
            fields += [(pos + 4, 4, "<"), (pos + 8, 4, "<"), (pos + 14, 2, "<")]
            units.append((pos, 8 + length + length % 2))
            pos += 8 + length + length % 2
        return fields, units
    if data[4:8] == b"ftyp":
        return _heif_fields(data)
    if data.startswith(b"GIF"):
        image = data.index(b",", 13)
        fields = [(6, 2, "<"), (8, 2, "<"), (10, 1, "<")]
        return fields + [(image + at, 2, "<") for at in (1, 3, 5, 7)], []
    # BMP: file size, pixel offset, header size, width, height, bits, compression, colours
    fields = [(at, 4, "<") for at in (2, 10, 14, 18, 22, 30, 34, 46)] + [(28, 2, "<")]
    return fields, []


# Boxes holding boxes, and where their children start in their bodies.
_HEIF_CONTAINERS = {b"meta": 4, b"iinf": 6, b"iprp": 0, b"ipco": 0, b"iref": 4}


def _heif_fields(
    data: bytes, start: int = 0, end: int | None = None
) -> tuple[list[Field], list[tuple[int, int]]]:
    """Every box's size field, the numbers of the boxes the rules read (sizes, item ids,
    locations, references), and each box as a unit; into the containers."""
    fields: list[Field] = []
    units: list[tuple[int, int]] = []
    pos, end = start, len(data) if end is None else end
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I", data, pos)[0], data[pos + 4 : pos + 8]
        if size < 8 or pos + size > end:
            break
        fields.append((pos, 4, ">"))
        units.append((pos, size))
        body = pos + 8
        if kind in _HEIF_CONTAINERS:
            inner_fields, inner_units = _heif_fields(
                data, body + _HEIF_CONTAINERS[kind], pos + size
            )
            fields += inner_fields
            units += inner_units
        elif kind in (b"ispe", b"pitm", b"iloc", b"ipma", b"dimg", b"auxl", b"cdsc", b"hvcC"):
            fields += [(at, 2, ">") for at in range(body, min(pos + size, body + 32) - 1, 2)]
        pos += size
    return fields, units


EDGES = {
    1: [0, 1, 0x7F, 0x80, 0xFF],
    2: [0, 1, 0x7FFF, 0x8000, 0xFFFF],
    4: [0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF],
    8: [0, 1, 2**63 - 1, 2**63, 2**64 - 1],
}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One structural change: a field set to an edge value or off by one, a unit removed,
    repeated or cut short, or the file cut at a unit's boundary."""
    fields, units = structure(data)
    if not fields and not units:
        return data[: rng.randrange(1, len(data))] if len(data) > 1 else data
    choice = rng.randrange(1, 4) if not fields else rng.randrange(4) if units else 0
    if choice == 0:
        at, width, order = rng.choice(fields)
        if at + width > len(data):
            return data[:at]
        code = order + {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
        value = (struct.unpack_from(code, data, at)[0] + rng.choice([-1, 1])) % 256**width
        changed = bytearray(data)
        edge = rng.choice([*EDGES[width], value, len(data)]) % 256**width
        struct.pack_into(code, changed, at, edge)
        return bytes(changed)
    at, size = rng.choice(units)
    if choice == 1:
        return data[:at] + data[at + size :]
    if choice == 2:
        return data[:at] + data[at : at + size] * rng.choice([2, 3]) + data[at:]
    return data[: at + rng.randrange(size)]


def _seeds() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [PHOTO, PHOTO.rotate(90), PHOTO.rotate(180)]
    palette = PHOTO.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    grey16 = Image.linear_gradient("L").resize((24, 20)).convert("I").point(lambda v: v * 257)
    upright = TiffImagePlugin.ImageFileDirectory_v2()
    upright[274] = 8
    return {
        "PNG": encode(PHOTO, "PNG"),
        "PNG palette, keyed": encode(palette, "PNG", transparency=3),
        "PNG 16-bit grey": encode(grey16.convert("I;16"), "PNG"),
        "APNG": encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "PNG with EXIF": encode(PHOTO, "PNG", exif=exif),
        "JPEG with EXIF": encode(PHOTO, "JPEG", exif=exif),
        "JPEG progressive": encode(PHOTO, "JPEG", progressive=True),
        "JPEG with restart markers": encode(PHOTO, "JPEG", restart_marker_blocks=1),
        "TIFF": encode(PHOTO, "TIFF"),
        "TIFF LZW pages": encode(
            frames[0], "TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw"
        ),
        "TIFF deflate turned": encode(PHOTO, "TIFF", compression="tiff_deflate", tiffinfo=upright),
        "TIFF JPEG": encode(PHOTO, "TIFF", compression="jpeg"),
        "BigTIFF": encode(PHOTO, "TIFF", big_tiff=True),
        "GIF animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "WebP lossy": encode(PHOTO, "WEBP"),
        "WebP lossless with EXIF": encode(PHOTO, "WEBP", lossless=True, exif=exif.tobytes()),
        "BMP": encode(PHOTO, "BMP"),
        "BMP palette": encode(palette, "BMP"),
        "BMP RLE8": bmp_run_length(palette),
        "HEIC": heic(PHOTO, quality=90),
        "HEIC grid with alpha and EXIF": _heic_grid_seed(exif),
    }


def _heic_grid_seed(exif: Image.Exif) -> bytes:
    """A phone-like HEIC: a grid of two tiles, an alpha plane and an EXIF block."""
    tile = hevc_tile(PHOTO.resize((64, 64)), quality=80)
    alpha = hevc_tile(Image.new("RGB", (64, 64), (200, 200, 200)), quality=80)
    grid = bytes([0, 0, 0, 1]) + struct.pack(">HH", 120, 64)
    auxc = full_box(b"auxC", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha\0")
    items = {
        1: Item(b"grid", grid, [ispe(120, 64)], in_idat=True),
        2: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]),
        3: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]),
        4: Item(b"hvc1", alpha.data, [alpha.hvcc, ispe(64, 64), auxc]),
        5: exif_item(exif),
    }
    return heic_file(items, 1, [(b"dimg", 1, [2, 3]), (b"auxl", 4, [1]), (b"cdsc", 5, [1])])


SEEDS = _seeds()


@pytest.mark.parametrize("name", SEEDS)
def test_every_seed_decodes(name: str) -> None:
    """The mutations start from files the rules accept."""
    assert normalise_image(SEEDS[name], LIMITS).source["width"] in (20, 24, 120)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(st.sampled_from(sorted(SEEDS)), st.randoms(use_true_random=False), st.integers(1, 3))
def test_structural_mutations_are_normalised_or_rejected(
    name: str, rng: random.Random, changes: int
) -> None:
    data = SEEDS[name]
    for _ in range(changes):
        data = mutate(data, rng) or data
    normalised_or_rejected(data)
    if data.startswith(b"\x89PNG"):  # and with the CRCs right, past the chunk check
        normalised_or_rejected(_png_recrc(data))


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(sorted(SEEDS)), st.integers(8, 64), st.binary(max_size=1024))
def test_a_real_header_over_arbitrary_bytes_is_normalised_or_rejected(
    name: str, kept: int, tail: bytes
) -> None:
    """Past the signature, so each format's own walk and Pillow's parser see the bytes."""
    normalised_or_rejected(SEEDS[name][:kept] + tail)
