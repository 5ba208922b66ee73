"""HEIC photos: a phone's grid of HEVC tiles decodes to its picture, turned once, and each
structure that would cost the decoder more than the image's pixels is refused from the
file's boxes, before libheif decodes a tile (``scones_core.heif_structure``).

The files are real: libheif's own encoder (pillow-heif, test environment only) codes the
HEVC, and ``scones.heic_writer`` boxes the tiles as a phone does, with one field broken
where a test says so. The product decodes through pi-heif, which has no encoder.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import template_limits
from heif_files import hevc_tile
from image_catalog import heic, heic_10_bit, heic_sideways
from PIL import Image
from scones_core import errors, heif_structure, image_rules
from scones_core.heif_structure import heif_layout
from scones_core.image_rules import FUNCTION_RESERVE_MB, decode_bytes, decode_image
from scones_core.images import normalise_image

from scones.heic_writer import (
    HEIC_TILE,
    HevcTile,
    Item,
    box,
    exif_item,
    full_box,
    grid_description,
    grid_heic,
    heic_file,
    ispe,
    single_heic,
    tile_from_heic,
)

LIMITS = template_limits()
SERIALIZE = dataclasses.replace(LIMITS, memory_mb=512)


def picture(width: int, height: int) -> Image.Image:
    """Four coloured quarters: where each lands shows how the picture was turned."""
    image = Image.new("RGB", (width, height), (220, 30, 30))
    image.paste((30, 30, 220), (width // 2, 0, width, height // 2))
    image.paste((30, 200, 30), (0, height // 2, width // 2, height))
    image.paste((240, 240, 240), (width // 2, height // 2, width, height))
    return image


def quarters(image: Image.Image) -> list[tuple[int, ...]]:
    width, height = image.size
    points = [(width // 4, height // 4), (3 * width // 4, height // 4)]
    points += [(width // 4, 3 * height // 4), (3 * width // 4, 3 * height // 4)]
    return [tuple(image.convert("RGB").getpixel(point)) for point in points]  # type: ignore[arg-type]


def close(found: list[tuple[int, ...]], expected: list[tuple[int, ...]]) -> bool:
    return all(
        max(abs(a - b) for a, b in zip(f, e, strict=True)) < 24
        for f, e in zip(found, expected, strict=True)
    )


@pytest.fixture(scope="module")
def tile() -> HevcTile:
    """A real 64x64 HEVC tile (libheif pads nothing at this size)."""
    return hevc_tile(picture(64, 64), quality=90)


# ---- what decodes --------------------------------------------------------------------


def test_a_phone_grid_decodes_to_its_picture_tile_by_tile() -> None:
    """A 256x192 picture cut into 4x3 tiles of 64x64, each coded on its own, cropped to
    250x190 by the grid as a phone crops its last row and column."""
    photo = picture(256, 192)
    tiles = [
        hevc_tile(photo.crop((x, y, x + 64, y + 64)), quality=95)
        for y in range(0, 192, 64)
        for x in range(0, 256, 64)
    ]
    decoded = decode_image(grid_heic(tiles, 3, 4, (250, 190)), LIMITS)
    assert decoded.source["format"] == "HEIC"
    assert (decoded.source["width"], decoded.source["height"]) == (250, 190)
    expected = np.asarray(photo.crop((0, 0, 250, 190)), dtype=np.int16)
    assert np.abs(np.asarray(decoded.image, dtype=np.int16) - expected).mean() < 4


@pytest.mark.parametrize(
    ("name", "encode", "mode"),
    [
        ("8-bit 4:2:0", lambda im: heic(im, quality=95), "RGB"),
        ("8-bit 4:4:4", lambda im: heic(im, quality=95, chroma=444), "RGB"),
        ("10-bit (a phone's HDR photo)", heic_10_bit, "RGB"),
        ("with an alpha plane", lambda im: heic(im.convert("RGBA"), quality=95), "RGBA"),
    ],
)
def test_libheifs_own_files_decode(name: str, encode: object, mode: str) -> None:
    photo = picture(96, 64)
    decoded = decode_image(encode(photo), LIMITS)  # type: ignore[operator]
    assert decoded.source["mode"] == mode, name
    assert (decoded.source["width"], decoded.source["height"]) == (96, 64)
    assert close(quarters(decoded.image), quarters(photo)), name


def test_a_photo_stored_sideways_is_turned_once() -> None:
    """A phone stores a portrait photo sideways, with an irot property and EXIF
    orientation 6 that both say turn it: libheif turns it, pi-heif resets the EXIF
    orientation, and the preprocessing must not turn it again."""
    photo = picture(96, 64)
    data = heic_sideways(photo)
    assert heif_layout(data).quarter_turns in (1, 3)
    decoded = decode_image(data, LIMITS)
    assert (decoded.source["width"], decoded.source["height"]) == (64, 96)  # as stored
    assert decoded.image.size == (96, 64)
    assert close(quarters(decoded.image), quarters(photo))
    model_input = Image.open(io.BytesIO(normalise_image(data, LIMITS).png))
    upright = Image.open(io.BytesIO(normalise_image(heic(photo, quality=95), LIMITS).png))
    assert close(quarters(model_input), quarters(upright))


def test_an_exif_orientation_without_an_irot_turns_nothing() -> None:
    """In a HEIC the irot property turns the image; its EXIF orientation only records what
    the camera saw (pi-heif resets it to 1), so the preprocessing must not turn it."""
    photo = picture(128, 64)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Phone maker"
    data = single_heic(hevc_tile(photo, quality=95), exif=exif)
    decoded = decode_image(data, LIMITS)
    assert decoded.image.getexif().get(0x010F) == "Phone maker"
    assert decoded.image.getexif().get(0x0112) == 1 and decoded.image.size == (128, 64)
    model_input = Image.open(io.BytesIO(normalise_image(data, LIMITS).png))
    upright = Image.open(io.BytesIO(normalise_image(heic(photo, quality=95), LIMITS).png))
    assert close(quarters(model_input), quarters(upright))


def test_a_heic_narrowed_away_is_refused_before_libheif_sees_it(tile: HevcTile) -> None:
    narrowed = dataclasses.replace(LIMITS, allowed_formats=("PNG", "JPEG"))
    with pytest.raises(errors.UnsupportedImageFormat, match="HEIC images are not accepted"):
        decode_image(single_heic(tile), narrowed)


# ---- what is refused from the boxes -------------------------------------------------


def refused(data: bytes, limits: object = LIMITS) -> errors.ImageRejected:
    with pytest.raises(errors.ImageRejected) as raised:
        decode_image(data, limits)  # type: ignore[arg-type]
    return raised.value


def test_tiles_whose_ispe_understates_their_coded_size_are_refused() -> None:
    """A grid of four tiles declaring 64x64, each coded 1024x1024: the decoder would
    allocate the coded size."""
    big = hevc_tile(Image.new("RGB", (1024, 1024), (90, 120, 200)), quality=40)
    error = refused(grid_heic(big, 2, 2, (128, 128), tile_size=(64, 64)))
    assert isinstance(error, errors.CorruptImage)
    assert "64x64 by its ispe, but its HEVC sequence parameter set codes a 1024x1024" in str(error)


def test_a_parameter_set_hidden_in_the_coded_data_is_read_too(tile: HevcTile) -> None:
    """The hvcC says 64x64; an SPS for 1024x1024 rides in the tile's own data, where a
    decoder takes the last one it saw."""
    big = hevc_tile(Image.new("RGB", (1024, 1024), (90, 120, 200)), quality=40)
    in_band = b"".join(struct.pack(">I", len(nal)) + nal for nal in configuration_nal_units(big))
    smuggled = HevcTile(tile.hvcc, 64, 64, in_band + big.data)
    error = refused(grid_heic(smuggled, 1, 1))
    assert isinstance(error, errors.CorruptImage) and "codes a 1024x1024 picture" in str(error)


def configuration_nal_units(tile: HevcTile) -> list[bytes]:
    config, units, pos = tile.hvcc[8:], [], 23
    for _ in range(config[22]):
        count = struct.unpack(">H", config[pos + 1 : pos + 3])[0]
        pos += 3
        for _ in range(count):
            length = struct.unpack(">H", config[pos : pos + 2])[0]
            units.append(config[pos + 2 : pos + 2 + length])
            pos += 2 + length
    return units


@pytest.mark.parametrize(
    ("case", "error", "words"),
    [
        ("tiles that do not cover the grid", errors.CorruptImage, "do not cover it exactly"),
        ("a tile wholly outside the grid", errors.CorruptImage, "do not cover it exactly"),
        ("a grid naming too few tiles", errors.CorruptImage, "grid of 2x2 tiles that names 3"),
        ("tiles of two sizes", errors.CorruptImage, "not all one size"),
        ("an alpha plane larger than its image", errors.CorruptImage, "alpha plane"),
        ("the primary image coded as AV1", errors.UnsupportedImageFormat, "AV1 (AVIF)"),
        ("a tile coded as JPEG", errors.UnsupportedImageFormat, "coded as JPEG"),
        ("no primary item", errors.CorruptImage, "no primary image"),
        ("a primary item that is not listed", errors.CorruptImage, "not in its item list"),
        ("a tile's data past the file's end", errors.CorruptImage, "truncated"),
        ("an image sequence", errors.UnsupportedImageFormat, "image sequences"),
        ("two meta boxes", errors.CorruptImage, "2 meta boxes"),
        ("a box longer than the file", errors.CorruptImage, "claims"),
        ("a tile without its size", errors.CorruptImage, "no size (ispe property)"),
    ],
)
def test_each_structure_rule_names_what_is_wrong(
    tile: HevcTile, case: str, error: type[errors.ImageRejected], words: str
) -> None:
    alpha = hevc_tile(Image.new("RGB", (128, 128), (128, 128, 128)), quality=80)
    larger = hevc_tile(Image.new("RGB", (128, 128), (1, 2, 3)), quality=80)
    data = {
        "tiles that do not cover the grid": lambda: grid_heic(tile, 2, 2, (300, 100)),
        "a tile wholly outside the grid": lambda: grid_heic(tile, 2, 3, (128, 128)),
        "a grid naming too few tiles": lambda: missing_tile(tile),
        "tiles of two sizes": lambda: grid_heic([tile, tile, tile, larger], 2, 2),
        "an alpha plane larger than its image": lambda: grid_heic(tile, 1, 1, alpha=alpha),
        "the primary image coded as AV1": lambda: heic_file(
            {1: Item(b"av01", tile.data, [tile.hvcc, ispe(64, 64)])}, 1
        ),
        "a tile coded as JPEG": lambda: jpeg_tile(tile),
        "no primary item": lambda: without_box(single_heic(tile), b"pitm"),
        "a primary item that is not listed": lambda: heic_file(
            {1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)])}, 7
        ),
        "a tile's data past the file's end": lambda: heic_file(
            {1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)], location=(40, 10**6))}, 1
        ),
        "an image sequence": lambda: heic_file(
            {1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)])}, 1, handler=b"vide"
        ),
        "two meta boxes": lambda: two_metas(single_heic(tile)),
        "a box longer than the file": lambda: single_heic(tile)[:-10],
        "a tile without its size": lambda: heic_file({1: Item(b"hvc1", tile.data, [tile.hvcc])}, 1),
    }[case]()
    rejected = refused(data)
    assert isinstance(rejected, error), (case, rejected)
    assert words in str(rejected), (case, str(rejected))


def missing_tile(tile: HevcTile) -> bytes:
    data = grid_heic(tile, 2, 2)
    # the dimg reference lists tiles 2 to 5: make it list three
    at = data.index(b"dimg") + 4
    count = struct.unpack(">H", data[at + 2 : at + 4])[0]
    assert count == 4
    return data[: at + 2] + struct.pack(">H", 3) + data[at + 4 :]


def jpeg_tile(tile: HevcTile) -> bytes:
    items = {
        1: Item(
            b"grid", bytes([0, 0, 0, 0]) + struct.pack(">HH", 64, 64), [ispe(64, 64)], in_idat=True
        ),
        2: Item(b"jpeg", tile.data, [ispe(64, 64)]),
    }
    return heic_file(items, 1, [(b"dimg", 1, [2])])


def without_box(data: bytes, kind: bytes) -> bytes:
    at = data.index(kind) - 4
    size = struct.unpack(">I", data[at : at + 4])[0]
    stripped = data[:at] + data[at + size :]
    meta = stripped.index(b"meta") - 4
    meta_size = struct.unpack(">I", stripped[meta : meta + 4])[0] - size
    return stripped[:meta] + struct.pack(">I", meta_size) + stripped[meta + 4 :]


def two_metas(data: bytes) -> bytes:
    return data + full_box(b"meta", b"")


def test_a_file_with_more_items_than_a_photo_has_is_refused(tile: HevcTile) -> None:
    items = {1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)])}
    for item_id in range(2, heif_structure.MAX_HEIF_ITEMS + 3):
        items[item_id] = Item(b"mime", b"x")
    error = refused(heic_file(items, 1))
    assert isinstance(error, errors.ImageTooComplex) and "items" in str(error)


def test_an_item_in_more_pieces_than_libheif_reads_is_refused(tile: HevcTile) -> None:
    data = single_heic(tile)
    iloc = data.index(b"iloc") + 4
    # version 1, 4-byte offsets and lengths: item 1's extent count follows its id,
    # construction method, data reference and (empty) base offset.
    entry = iloc + 4 + 2 + 2
    at = entry + 2 + 2 + 2
    assert struct.unpack(">H", data[at : at + 2])[0] == 1
    pieces = heif_structure.MAX_HEIF_EXTENTS + 1
    error = refused(data[:at] + struct.pack(">H", pieces) + data[at + 2 :])
    assert isinstance(error, errors.ImageTooComplex) and f"{pieces} pieces" in str(error)


@pytest.mark.parametrize("offset", [6, 0xFFFFFFFF], ids=["its offset", "an offset past it"])
def test_a_hostile_exif_block_is_walked_before_pillow_reads_it(tile: HevcTile, offset: int) -> None:
    """Pillow reads the EXIF block's first directory for the orientation: a directory
    of more entries than any camera writes is refused, as in every other format. pi-heif
    reads the block from byte 4 when its offset field points past it: an offset of
    0xFFFFFFFF had the walk check nothing while Pillow read the directory."""
    exif = Image.Exif()
    exif[0x0112] = 1
    block = bytearray(exif_item(exif).data)
    struct.pack_into(">I", block, 0, offset)
    tiff = 4 + 6  # past the offset field and "Exif\0\0"
    struct.pack_into(">H", block, tiff + 8, 0xFFFF)  # the first directory's entry count
    items = {
        1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]),
        2: Item(b"Exif", bytes(block) + bytes(12 * 5000)),
    }
    error = refused(heic_file(items, 1, [(b"cdsc", 2, [1])]))
    assert isinstance(error, errors.ImageTooComplex), error


def test_pixels_past_the_limit_are_refused_by_the_coded_size(tile: HevcTile) -> None:
    limits = dataclasses.replace(LIMITS, max_pixels=64 * 64 * 6 - 1)
    error = refused(grid_heic(tile, 2, 3), limits)
    assert isinstance(error, errors.ImageTooManyPixels)
    assert "128x192 = 24576 pixels" in str(error) or "192x128 = 24576 pixels" in str(error)


# ---- memory --------------------------------------------------------------------------


def test_the_decode_estimate_covers_what_the_decode_takes() -> None:
    """A 12 MP phone grid (48 copies of the shipped 512x512 tile) decoded in a fresh
    interpreter: the rise of its peak memory stays under the rules' estimate, which is
    what admits it to a function of 512 MB."""
    tile = tile_from_heic(HEIC_TILE.read_bytes())
    data = grid_heic(tile, 6, 8, (4032, 3024))
    estimate = decode_bytes("HEIC", "RGB", (4032, 3024), heif=heif_layout(data))
    child = (
        "import sys\n"
        "from scones_core.image_rules import decode_image\n"
        "from scones_core.settings import ImageLimits\n"
        "data = sys.stdin.buffer.read()\n"
        "limits = ImageLimits(10**8, 10**8, 8, ('HEIC',), (32, 32))\n"
        "decode_image(open(sys.argv[1], 'rb').read(), limits)  # loads libheif: one tile\n"
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec).
        "def peak():\n"
        "    status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "    return int(status.split()[0])\n"
        "before = peak()\n"
        "decode_image(data, limits)\n"
        "print(before, peak())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(HEIC_TILE)],
        input=data,
        capture_output=True,
        check=True,
    )
    before, after = (int(v) * 1024 for v in done.stdout.split())
    assert 40 * 2**20 < estimate < (512 - FUNCTION_RESERVE_MB) * 2**20
    # The decode's own rise (about 90 MB of 12 MP) is measured, under the estimate.
    assert 0.5 * estimate < after - before < estimate, (after - before, estimate)


def test_a_heic_whose_decode_would_not_fit_the_function_is_refused_before_decoding(
    tile: HevcTile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4:4:4 10-bit tiles cost most a pixel: at 5000x5000 the estimate passes 416 MB. (At
    512 MB a HEIC's decode time refuses it first; given the time, its memory still would.)"""
    monkeypatch.setattr(image_rules, "HEIC_DECODE_SECONDS", 1000)
    samples = np.asarray(picture(512, 512), dtype=np.uint16) << 8
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=(512, 512), data=samples.tobytes()).save(
        out, quality=60, chroma=444
    )
    deep = tile_from_heic(out.getvalue())
    data = grid_heic(deep, 10, 10, (5000, 5000))
    layout = heif_layout(data)
    assert layout.high_bit_depth and layout.tiles == 100
    error = refused(data, SERIALIZE)
    assert isinstance(error, errors.ImageTooManyPixels)
    assert "5000x5000 HEIC image takes about" in str(error) and "512 MB" in str(error)


def test_the_box_walk_is_not_fooled_by_a_box_of_the_same_name_inside_another(
    tile: HevcTile,
) -> None:
    """An ``mdat`` holding the bytes ``meta``: only top-level boxes are meta boxes."""
    data = heic_file(
        {
            1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]),
            2: Item(b"mime", box(b"meta", b"")),
        },
        1,
    )
    assert decode_image(data, LIMITS).source["width"] == 64


def test_a_heic_too_large_to_decode_within_the_functions_time_is_refused() -> None:
    """libheif decodes every tile whole, and the arm64 decoder has no SIMD: at 512 MB a
    phone's 12 MP photo (48 tiles, 12.6 M coded pixels) is decoded in SerializeImage's
    time, and its 24 MP photo (12x9 tiles, 28.3 M) is refused before decoding."""
    tile = tile_from_heic(HEIC_TILE.read_bytes())
    assert decode_image(grid_heic(tile, 6, 8, (4032, 3024)), SERIALIZE).image.size == (4032, 3024)
    error = refused(grid_heic(tile, 9, 12, (5712, 4284)), SERIALIZE)
    assert isinstance(error, errors.ImageTooManyPixels)
    limit = image_rules.heic_coded_pixel_limit(512)
    assert 12 * 9 * 512**2 > limit > 8 * 6 * 512**2
    assert f"coded in 108 tile(s) of {108 * 512**2} pixels in all" in str(error)
    assert f"at 512 MB (the function's MemorySize) at most {limit} are decoded" in str(error)
    # Without a function's memory (the model server, training) no time is budgeted.
    assert decode_image(grid_heic(tile, 9, 12, (5712, 4284)), LIMITS).source["width"] == 5712


def test_a_heic_of_costlier_samples_is_budgeted_by_what_its_decode_reconstructs() -> None:
    """A 12 MP grid of 4:4:4 tiles has a phone's 4:2:0 grid's coded pixels but twice its
    samples, and 10-bit samples take longer still: decoding either would outlast
    SerializeImage's time at 512 MB (measured at 2.2 and 2.6 s on one x86 core, against
    1.0 s for a phone's), so each is refused before decoding, and the 4:2:0 one is not."""
    picture = Image.linear_gradient("L").resize((512, 512)).convert("RGB")
    limit = image_rules.heic_coded_pixel_limit(512)
    coded = 8 * 6 * 512**2
    phone = grid_heic(hevc_tile(picture, quality=50), 6, 8, (4032, 3024))
    assert heif_layout(phone).decode_work == coded < limit
    assert decode_image(phone, SERIALIZE).image.size == (4032, 3024)
    wide = grid_heic(hevc_tile(picture, quality=50, chroma=444), 6, 8, (4032, 3024))
    layout = heif_layout(wide)
    assert (layout.coded_pixels, layout.decode_work) == (coded, 2 * coded)
    error = refused(wide, SERIALIZE)
    assert isinstance(error, errors.ImageTooManyPixels)
    assert f"coded in 48 tile(s) of {coded} pixels in all (by their chroma and bit depth" in (
        str(error)
    )
    assert f"as long to decode as {2 * coded} pixels of a phone's 8-bit 4:2:0 tiles" in str(error)
    deep = grid_heic(tile_from_heic(heic_10_bit(picture)), 6, 8, (4032, 3024))
    deep_work = heif_layout(deep).decode_work
    assert deep_work == int(coded * heif_structure.HIGH_BIT_DECODE_FACTOR) < limit
    # 10-bit 4:2:0 (a phone's HDR photo) still fits.
    assert decode_image(deep, SERIALIZE).image.size == (4032, 3024)
    # Without a function's memory (the model server, training) no time is budgeted.
    assert decode_image(wide, LIMITS).source["width"] == 4032


def test_the_heic_time_budget_is_within_the_serialize_functions_timeout() -> None:
    from scones.template_params import load_template

    function = load_template()["Resources"]["SerializeImageFunction"]["Properties"]
    assert int(function["Timeout"]) - 5 >= image_rules.HEIC_DECODE_SECONDS


def test_serialize_image_memory_size_admits_a_phones_24_megapixel_heic_from_1024_mb() -> None:
    """SerializeImageMemorySize is SerializeImage's MemorySize, and what its description
    promises holds: at the default 512 MB a phone's 24 MP HEIC (12x9 tiles of 512) is
    refused, at 1024 MB it decodes, in memory and in time."""
    from scones.costs.model import Settings
    from scones.template_params import parameter_defaults

    tile = tile_from_heic(HEIC_TILE.read_bytes())
    photo = grid_heic(tile, 9, 12, (5712, 4284))
    default = int(parameter_defaults()["SerializeImageMemorySize"])
    assert Settings.from_template().memory_mb["SerializeImageFunction"] == default == 512
    assert isinstance(
        refused(photo, dataclasses.replace(LIMITS, memory_mb=default)), errors.ImageTooManyPixels
    )
    larger = Settings.from_template({"SerializeImageMemorySize": "1024"})
    memory = larger.memory_mb["SerializeImageFunction"]
    assert memory == 1024
    decoded = decode_image(photo, dataclasses.replace(LIMITS, memory_mb=memory))
    assert decoded.image.size == (5712, 4284)


# ---- what a decoder and the walk could read differently ------------------------------


def twice(data: bytes, kind: bytes) -> bytes:
    """``data`` with its first ``kind`` box given again right after it (in the meta box,
    whose size grows by the copy)."""
    at = data.index(kind) - 4
    size = struct.unpack(">I", data[at : at + 4])[0]
    grown = data[: at + size] + data[at : at + size] + data[at + size :]
    meta = grown.index(b"meta") - 4
    meta_size = struct.unpack(">I", grown[meta : meta + 4])[0] + size
    shifted = grown[:meta] + struct.pack(">I", meta_size) + grown[meta + 4 :]
    # The copy sits before the mdat: every file offset in the iloc moves by its size.
    return relocated(shifted, size) if kind != b"iloc" else shifted


def relocated(data: bytes, shift: int) -> bytes:
    """``data`` with its (version 1, 4-byte) iloc offsets of method 0 moved by ``shift``."""
    at = data.index(b"iloc") + 4
    count = struct.unpack(">H", data[at + 6 : at + 8])[0]
    out, pos = bytearray(data), at + 8
    for _ in range(count):
        method = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        offset_at = pos + 8
        if method == 0:
            struct.pack_into(
                ">I",
                out,
                offset_at,
                struct.unpack(">I", data[offset_at : offset_at + 4])[0] + shift,
            )
        pos += 16
    return bytes(out)


@pytest.mark.parametrize("kind", [b"pitm", b"iinf", b"iref", b"iprp", b"idat"])
def test_a_box_a_meta_box_holds_once_given_twice_is_ambiguous(tile: HevcTile, kind: bytes) -> None:
    """libheif reads the first, and a walk that kept the last judged another image: two
    pitm boxes had libheif decode an 8192x8192 item the walk never saw (+451 MB)."""
    data = grid_heic(tile, 1, 2)
    assert decode_image(data, LIMITS).source["width"] == 128
    error = refused(twice(data, kind))
    assert isinstance(error, errors.CorruptImage), error
    assert f"its meta box has two '{kind.decode()}' boxes" in str(error)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("an item listed twice", "its item 1 is listed twice"),
        ("an item given properties twice", "its item 1 is given properties twice"),
        ("two property containers", "two property containers (ipco)"),
        ("two sizes for one item", "an item has two 'ispe' properties"),
        ("two turns for one item", "an item has two 'irot' properties"),
        ("two references of a kind", "its item 1 has two 'dimg' references"),
    ],
)
def test_an_entry_given_twice_is_ambiguous(tile: HevcTile, case: str, words: str) -> None:
    image = Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)])
    if case == "an item listed twice":
        data = single_heic(tile)
        at = data.index(b"infe") - 4
        size = struct.unpack(">I", data[at : at + 4])[0]
        data = data[: at + size] + data[at : at + size] + data[at + size :]
        data = grow(grow(data, b"iinf", size), b"meta", size)
        data = relocated(
            data.replace(b"iinf\x00\x00\x00\x00\x00\x01", b"iinf\x00\x00\x00\x00\x00\x02", 1), size
        )
    elif case == "an item given properties twice":
        data = single_heic(tile)
        at = data.index(b"ipma") + 8
        entry = data[at + 4 : at + 4 + 2 + 1 + 2]  # item 1: its id, a count and two indices
        data = data[:at] + struct.pack(">I", 2) + entry + entry + data[at + 4 + len(entry) :]
        data = relocated(
            grow(grow(grow(data, b"ipma", len(entry)), b"iprp", len(entry)), b"meta", len(entry)),
            len(entry),
        )
    elif case == "two property containers":
        data = single_heic(tile)
        at = data.index(b"ipco") - 4
        size = struct.unpack(">I", data[at : at + 4])[0]
        data = data[: at + size] + data[at : at + size] + data[at + size :]
        data = relocated(grow(grow(data, b"iprp", size), b"meta", size), size)
    elif case == "two sizes for one item":
        image.properties.append(ispe(8000, 8000))
        data = heic_file({1: image}, 1)
    elif case == "two turns for one item":
        data = single_heic(tile, extra=[box(b"irot", b"\x01"), box(b"irot", b"\x00")])
    else:
        grid = grid_description(1, 1, 64, 64)
        items = {1: Item(b"grid", grid, [ispe(64, 64)], in_idat=True), 2: image}
        data = heic_file(items, 1, [(b"dimg", 1, [2]), (b"dimg", 1, [2])])
    error = refused(data)
    assert isinstance(error, errors.CorruptImage), (case, error)
    assert words in str(error) and "ambiguous" in str(error), (case, str(error))


def grow(data: bytes, kind: bytes, by: int) -> bytes:
    at = data.index(kind) - 4
    size = struct.unpack(">I", data[at : at + 4])[0]
    return data[:at] + struct.pack(">I", size + by) + data[at + 4 :]


def test_a_grid_whose_size_is_not_its_ispe_is_refused(tile: HevcTile) -> None:
    """The pixel limit reads the ispe: a grid of 15872x15872 behind an ispe of 64x64 took
    20 s and 477 MB before libheif refused it."""
    data = grid_heic(tile, 2, 2, (128, 128)).replace(ispe(128, 128), ispe(64, 64), 1)
    error = refused(data)
    assert isinstance(error, errors.CorruptImage)
    assert "grid of 128x128 by its description and 64x64 by its ispe" in str(error)


def test_tiles_far_larger_than_their_grid_count_against_the_pixel_limit(tile: HevcTile) -> None:
    """One column of tiles covers a grid of any width: a 1000x1000 grid of one 11776x11776
    tile decoded 139 MP. The tiles' coded pixels are held to MaxImagePixels too."""
    big = hevc_tile(Image.new("RGB", (1024, 1024), (90, 120, 200)), quality=40)
    limits = dataclasses.replace(LIMITS, max_pixels=200 * 200 * 4)
    error = refused(grid_heic(big, 1, 1, (200, 200)), limits)
    assert isinstance(error, errors.ImageTooManyPixels)
    assert "coded in 1 tile(s) of 1048576 pixels in all" in str(error)
    assert "the limit is 160000 pixels" in str(error)


def test_nal_lengths_libheif_does_not_read_are_refused(tile: HevcTile) -> None:
    """libheif hands libde265 4-byte NAL lengths whatever the hvcC says, so a walk by the
    hvcC's 2-byte lengths counted 692 NAL units where the decoder got 2,000,003."""
    config = bytearray(tile.hvcc)
    config[8 + 21] = (config[8 + 21] & ~3) | 1
    data = single_heic(HevcTile(bytes(config), tile.width, tile.height, tile.data))
    error = refused(data)
    assert isinstance(error, errors.UnsupportedImageFormat)
    assert "2-byte lengths; libheif reads 4-byte ones" in str(error)


def test_a_configuration_that_understates_what_the_sps_codes_is_refused() -> None:
    """The memory estimate reads the hvcC's chroma format and bit depth: an hvcC saying
    8-bit 4:2:0 over an SPS coding 10-bit 4:4:4 was admitted at 414 MB and took 527."""
    samples = np.asarray(picture(64, 64), dtype=np.uint16) << 8
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=(64, 64), data=samples.tobytes()).save(
        out, quality=60, chroma=444
    )
    deep = tile_from_heic(out.getvalue())
    config = bytearray(deep.hvcc)
    config[8 + 16] = (config[8 + 16] & ~3) | 1  # chroma format 4:2:0
    config[8 + 17] &= ~7  # 8-bit luma
    config[8 + 18] &= ~7  # 8-bit chroma
    error = refused(single_heic(HevcTile(bytes(config), 64, 64, deep.data)))
    assert isinstance(error, errors.CorruptImage)
    assert "configured (hvcC) for chroma format 1 at 8/8 bits" in str(error)
    assert "codes chroma format 3 at 10/10 bits" in str(error)


def test_a_grid_naming_one_tile_in_every_cell_is_refused_before_any_walk(
    tile: HevcTile,
) -> None:
    """A grid naming one tile item in 19,881 cells kept the walk busy for minutes (its
    coded data walked per cell) before libheif refused the "double references". Each
    item is named once in a reference, and a grid names at most 1,000 tiles."""
    grid = grid_description(30, 30, 64 * 30, 64 * 30)
    items = {
        1: Item(b"grid", grid, [ispe(64 * 30, 64 * 30)], in_idat=True),
        2: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]),
    }
    error = refused(heic_file(items, 1, [(b"dimg", 1, [2] * 900)]))
    assert isinstance(error, errors.CorruptImage)
    assert "names an item twice in one reference" in str(error)
    error = refused(heic_file(items, 1, [(b"dimg", 1, [2] * 1001)]))
    assert isinstance(error, errors.ImageTooComplex) and "refers to 1001 others" in str(error)


def test_a_file_of_two_images_decodes_its_primary_once() -> None:
    """pi-heif treats a file of two top-level images as animated and copied the whole
    decoded image again at each strip the preprocessing loaded (3.2 s against 0.8 s for a
    41 MP image): the decoded pixels are kept as a plain image of their own."""
    first = hevc_tile(picture(128, 128), quality=90)
    second = hevc_tile(Image.new("RGB", (64, 64), (1, 2, 3)), quality=90)
    items = {
        1: Item(b"hvc1", first.data, [first.hvcc, ispe(128, 128)]),
        2: Item(b"hvc1", second.data, [second.hvcc, ispe(64, 64)]),
    }
    decoded = decode_image(heic_file(items, 1), LIMITS)
    assert type(decoded.image) is Image.Image and decoded.image.format == "HEIF"
    assert decoded.image.size == (128, 128)
    assert close(quarters(decoded.image), quarters(picture(128, 128)))


@pytest.mark.parametrize(
    ("extra", "stored"),
    [
        ([], (96, 64)),
        ([box(b"irot", b"\x01")], (96, 64)),
        ([box(b"clap", struct.pack(">IIIIiIiI", 80, 1, 48, 1, 0, 1, 0, 1))], (80, 48)),
        # Cropped (80x48), then turned: 48x80 shown, 80x48 as stored.
        (
            [
                box(b"clap", struct.pack(">IIIIiIiI", 80, 1, 48, 1, 0, 1, 0, 1)),
                box(b"irot", b"\x01"),
            ],
            (80, 48),
        ),
        # Turned (64x96), then a crop wider than that: libheif keeps what there is (64x48
        # shown), and the record is what was shown, turned back.
        (
            [
                box(b"irot", b"\x01"),
                box(b"clap", struct.pack(">IIIIiIiI", 80, 1, 48, 1, 0, 1, 0, 1)),
            ],
            None,
        ),
    ],
)
def test_the_record_gives_the_size_as_stored_before_the_turn(
    extra: list[bytes], stored: tuple[int, int] | None
) -> None:
    coded = hevc_tile(Image.new("RGB", (96, 64), (200, 10, 10)), quality=90)
    decoded = decode_image(single_heic(coded, extra=extra), LIMITS)
    shown = decoded.image.size
    recorded = (decoded.source["width"], decoded.source["height"])
    turned = any(b"irot" in e for e in extra)
    assert recorded == ((shown[1], shown[0]) if turned else shown)
    if stored is not None:
        assert recorded == stored


def test_a_decoders_runtime_error_is_a_corrupt_image(
    tile: HevcTile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pi-heif passes on libheif's decode-time refusals (a security limit) as RuntimeError,
    which reached the serialize step, the model server (500) and the review page (502)."""
    image_class = image_rules._heif_image_file()

    def refuse(self: object) -> None:
        raise RuntimeError("Memory allocation error: Security limit exceeded")

    monkeypatch.setattr(image_class, "load", refuse)
    error = refused(single_heic(tile))
    assert isinstance(error, errors.CorruptImage) and "Security limit exceeded" in str(error)


def test_tiles_that_share_their_bytes_are_refused() -> None:
    """Tiles naming one region of the file are read and decoded once each: 270 tiles naming
    one 14 MB region took 4 GB in the decoder. Items' bytes add up to the file's at most."""
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tile = hevc_tile(Image.fromarray(noise), quality=95)  # its data outweighs the boxes
    whole = grid_heic(tile, 2, 2)
    assert decode_image(whole, LIMITS).image.size == (128, 128)
    first = whole.index(tile.data)
    items = {
        1: Item(b"grid", grid_description(2, 2, 128, 128), [ispe(128, 128)], in_idat=True),
        2: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]),
        **{
            n: Item(b"hvc1", b"", [tile.hvcc, ispe(64, 64)], location=(first, len(tile.data)))
            for n in (3, 4, 5)
        },
    }
    shared = heic_file(items, 1, [(b"dimg", 1, [2, 3, 4, 5])])
    assert shared.index(tile.data) == first  # the one copy, where the others point
    error = refused(shared)
    assert isinstance(error, errors.ImageTooComplex)
    assert "name more bytes than the file holds" in str(error)


def test_metadata_shared_by_many_images_is_refused(tile: HevcTile) -> None:
    """pi-heif copies each top-level image's EXIF as it opens a file: 40 images sharing one
    15 MB EXIF block rose 647 MB. The copies may come to the file's size at most."""
    exif = Image.Exif()
    exif[0x010F] = "Phone maker"
    block = exif_item(exif)
    block.data += bytes(20_000)
    images = {n: Item(b"hvc1", tile.data, [tile.hvcc, ispe(64, 64)]) for n in range(1, 41)}
    data = heic_file({**images, 41: block}, 1, [(b"cdsc", 41, list(images))])
    error = refused(data)
    assert isinstance(error, errors.ImageTooComplex) and "shared by so many" in str(error)
    one = heic_file({1: images[1], 41: block}, 1, [(b"cdsc", 41, [1])])
    assert decode_image(one, LIMITS).source["width"] == 64
