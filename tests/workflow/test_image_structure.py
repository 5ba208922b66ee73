"""The structure walks of ``scones_core.image_structure`` on real encoder output and on
hostile files, and what the image rules make of them."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import pytest
from conftest import SAMPLES, template_limits
from hypothesis import given, settings
from hypothesis import strategies as st
from image_catalog import (
    CAMERA_EXIF,
    bmp_rle,
    bmp_rle_bomb,
    bmp_run_length,
    encode,
    jpeg_cut_short,
    jpeg_scan_per_component,
    jpeg_with_scans,
    lossless_jpeg,
    png_chunk,
    png_header_only,
    png_with_profiles,
    tiff_in_strips,
    tiff_with_directories,
    tiff_with_tiles,
)
from PIL import ExifTags, Image, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational
from scones_core import errors
from scones_core.image_rules import (
    FUNCTION_RESERVE_MB,
    MAX_BMP_RLE_BYTES,
    MAX_BMP_RLE_PIXELS,
    MAX_JPEG_SCANS,
    decode_image,
)
from scones_core.image_structure import (
    DEFLATE_MAX_RATIO,
    MAX_TIFF_BLOCKS,
    MAX_TIFF_DIRECTORY_VALUES,
    PNG_SIGNATURE,
    TIFF_RATIONAL_COST,
    check_png_chunks,
    check_tiff_directories,
    jpeg_layout,
    png_image_data,
    png_inflated_size,
    tiff_block_count,
)
from scones_core.images import normalise_image
from scones_core.preprocess import exif_orientation

LIMITS = template_limits()
PHOTO = Image.linear_gradient("L").resize((96, 64)).convert("RGB")


def test_scans_are_counted_as_encoders_write_them() -> None:
    assert jpeg_layout(encode(PHOTO, "JPEG")).scans == 1
    progressive = jpeg_layout(encode(PHOTO, "JPEG", progressive=True))
    assert progressive.scans == 10 and progressive.frame_marker == 0xC2  # libjpeg's script
    assert jpeg_layout(jpeg_scan_per_component(64, 64)).scans == 3
    # Counted up to one past the limit: the walk stops there (the file is refused anyway).
    assert jpeg_layout(jpeg_with_scans(PHOTO, 250)).scans == MAX_JPEG_SCANS + 1
    lossless = jpeg_layout(lossless_jpeg(64, 64))
    assert lossless.lossless and lossless.scans == 1


def test_a_thumbnail_in_the_exif_block_is_not_a_scan() -> None:
    thumbnail = encode(PHOTO.resize((24, 16)), "JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x0201] = 0  # JPEGInterchangeFormat: the walk must skip APP1 by its length
    app1 = b"Exif\x00\x00" + exif.tobytes() + thumbnail
    photo = encode(PHOTO, "JPEG", exif=app1)
    assert jpeg_layout(photo).scans == 1


def test_thousands_of_scans_are_refused_before_decoding() -> None:
    at_limit = jpeg_with_scans(PHOTO, MAX_JPEG_SCANS)
    assert normalise_image(at_limit, LIMITS).source["format"] == "JPEG"
    with pytest.raises(errors.ImageTooComplex, match=r"more than 100 scans.*at most 100"):
        decode_image(jpeg_with_scans(PHOTO, 3000), LIMITS)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every file the image rules ask Pillow to open."""
    calls: list[str] = []
    original = Image.open

    def spy(*args: object, **kwargs: object) -> Image.Image:
        calls.append("open")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", spy)
    return calls


def test_one_profile_is_read_and_a_second_is_refused_before_pillow_opens_the_file(
    opened: list[str],
) -> None:
    png = encode(PHOTO)
    normalise_image(png_with_profiles(png, 1), LIMITS)
    flood = png_with_profiles(png, 500)
    with pytest.raises(errors.CorruptImage, match="more than one iCCP chunk"):
        check_png_chunks(flood)
    opened.clear()
    with pytest.raises(errors.CorruptImage, match="iCCP"):
        decode_image(flood, LIMITS)
    assert opened == []


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda png: png[:-12], "ends before its IEND"),
        (lambda png: png[:60], "IDAT chunk is cut off"),
        (lambda png: png[:-1] + bytes([png[-1] ^ 0xFF]), "IEND chunk fails its CRC"),
        # A damaged type is named in hex, not as Python's b'IEN\xab'.
        (lambda png: png[:-5] + b"\xab" + png[-4:], "its 0x49454eab chunk fails its CRC"),
    ],
)
def test_png_chunk_damage_is_named(damage, words: str) -> None:
    with pytest.raises(errors.CorruptImage, match=words):
        check_png_chunks(damage(encode(PHOTO)))


def test_a_png_whose_image_data_is_too_short_for_its_header_is_truncated(
    decoder_spy: list[str],
) -> None:
    """A deflate stream that ends before the image is full leaves Pillow's other rows
    black, and it says nothing: 120 bytes declaring 4999x4999 pixels decoded (75 MB) and
    were classified as a black image."""
    header = struct.pack(">IIBBBBB", 4999, 4999, 8, 2, 0, 0, 0)  # 8-bit RGB
    three_rows = zlib.compress(bytes(3 * (1 + 3 * 4999)))
    short = (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", three_rows)
        + png_chunk(b"IEND", b"")
    )
    assert len(short) < 200
    with pytest.raises(errors.CorruptImage, match=r"4999x4999 image inflates to 74975002 bytes"):
        normalise_image(short, LIMITS)
    assert decoder_spy == []


@pytest.mark.parametrize("padding", ["in its chunk", "in a later IDAT", "after IEND"])
def test_a_short_png_stream_padded_with_bytes_pillow_never_inflates_is_truncated(
    padding: str, decoder_spy: list[str]
) -> None:
    """Enough IDAT bytes for deflate's ratio, but a stream of three rows: the padding after
    the stream's end, in another IDAT after a text chunk, or in an IDAT after IEND, is
    never inflated, and the 2000x2000 image decoded as three rows and black."""
    header = struct.pack(">IIBBBBB", 2000, 2000, 8, 2, 0, 0, 0)  # 8-bit RGB
    three_rows = zlib.compress(b"".join(b"\0" + b"\xc8\x1e\x1e" * 2000 for _ in range(3)))
    padded = bytes(12_002_000 // DEFLATE_MAX_RATIO + 1)
    chunks = {
        "in its chunk": [(b"IDAT", three_rows + padded), (b"IEND", b"")],
        "in a later IDAT": [
            (b"IDAT", three_rows),
            (b"tEXt", b"Comment\0padding"),
            (b"IDAT", padded),
            (b"IEND", b""),
        ],
        "after IEND": [(b"IDAT", three_rows), (b"IEND", b""), (b"IDAT", padded)],
    }[padding]
    data = PNG_SIGNATURE + png_chunk(b"IHDR", header)
    data += b"".join(png_chunk(kind, payload) for kind, payload in chunks)
    assert png_image_data(data)[0] == len(three_rows) + (
        len(padded) if padding == "in its chunk" else 0
    )
    with pytest.raises(errors.CorruptImage, match=r"2000x2000 image inflates to 12002000 bytes"):
        normalise_image(data, LIMITS)
    assert decoder_spy == []


@pytest.mark.parametrize(
    ("mode", "options"),
    [("RGB", {"interlace": 1}), ("1", {}), ("1", {"interlace": 1}), ("I;16", {"interlace": 1})],
)
def test_whole_pngs_of_every_layout_inflate_to_their_image(
    mode: str, options: dict[str, int]
) -> None:
    """Interlaced images (more rows, each padded) and sub-byte samples inflate to at least
    the size the check asks for."""
    image = Image.effect_noise((333, 201), 90).convert(mode)
    data = encode(image, **options)
    _, needed = png_image_data(data)
    assert png_inflated_size(data, needed) == needed
    assert decode_image(data, LIMITS).image.size == (333, 201)


def test_the_most_compressible_pngs_stay_under_deflates_ratio() -> None:
    """All-zero images at zlib's best compression come within 0.2% of deflate's ratio,
    and still decode."""
    for data in (
        png_header_only(4999, 4999),
        encode(Image.new("RGBA", (4000, 3000)), compress_level=9),
        encode(Image.new("I;16", (2000, 2000)), compress_level=9),
    ):
        stored, needed = png_image_data(data)
        assert 900 * stored < needed < DEFLATE_MAX_RATIO * stored
        decode_image(data, LIMITS)


def test_a_tile_larger_than_the_pixel_limit_is_refused_from_the_header() -> None:
    side = int(LIMITS.max_pixels**0.5) + 1
    with pytest.raises(errors.ImageTooManyPixels, match=f"tiles are {side}x{side}"):
        decode_image(tiff_with_tiles(64, 64, side), LIMITS)


def test_a_tile_counts_towards_the_decodes_memory() -> None:
    """A 2048x2048 tile for a 64x64 image: 4 million pixels, within the pixel limit, but
    16 MB (at Pillow's 4 bytes a pixel) allocated whole."""
    limits = dataclasses.replace(LIMITS, memory_mb=FUNCTION_RESERVE_MB + 8)
    with pytest.raises(errors.ImageTooManyPixels, match="64x64 TIFF image takes about 16 MB"):
        decode_image(tiff_with_tiles(64, 64, 2048), limits)


def test_a_jpeg_with_a_scan_per_component_counts_its_coefficients() -> None:
    """Not progressive, yet libjpeg keeps every coefficient: 2400 x 1600 x 3 x 2 bytes."""
    limits = dataclasses.replace(LIMITS, memory_mb=FUNCTION_RESERVE_MB + 16)
    with pytest.raises(errors.ImageTooManyPixels, match="2400x1600 JPEG image takes about 2"):
        decode_image(jpeg_scan_per_component(2400, 1600), limits, draft_to=(32, 32))
    # The same image in one interleaved scan decodes at an eighth of each side.
    one_scan = encode(Image.new("RGB", (2400, 1600), (128, 128, 128)), "JPEG")
    assert decode_image(one_scan, limits, draft_to=(32, 32)).image.size == (300, 200)


def test_a_lossless_jpeg_decodes_at_full_size() -> None:
    """libjpeg has no reduced-scale decode for a lossless frame; asking for a draft made
    it fail as corrupt."""
    normalised = normalise_image(lossless_jpeg(200, 200), LIMITS)
    assert normalised.source["mode"] == "L"
    assert Image.open(io.BytesIO(normalised.png)).convert("L").getextrema() == (128, 128)


def test_a_tiff_turned_upright_while_loading_counts_two_copies() -> None:
    """Pillow turns a TIFF with an Orientation tag upright as it loads: the stored image
    and the upright one are held at once."""
    image = Image.new("RGB", (2000, 1000), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright_in_header = encode(image, "TIFF", compression="tiff_deflate")
    turned = encode(image, "TIFF", compression="tiff_deflate", exif=exif)
    limits = dataclasses.replace(LIMITS, memory_mb=FUNCTION_RESERVE_MB + 12)
    assert decode_image(upright_in_header, limits).image.size == (2000, 1000)
    with pytest.raises(errors.ImageTooManyPixels, match="takes about 15 MB"):
        decode_image(turned, limits)


# ---- BMP run-length coding ----------------------------------------------------------


@pytest.mark.parametrize(("rle4", "colours"), [(False, 256), (True, 16)], ids=["RLE8", "RLE4"])
def test_a_run_length_bmp_gives_the_same_model_input_as_the_uncompressed_one(
    rle4: bool, colours: int
) -> None:
    source = sorted((SAMPLES / "motorcycle").glob("*.png"))[0]
    image = Image.open(source).convert("RGB").quantize(colours)
    coded = normalise_image(bmp_run_length(image, rle4=rle4), LIMITS)
    plain = normalise_image(encode(image, "BMP"), LIMITS)
    assert coded.source["format"] == "BMP"
    assert coded.png == plain.png


@pytest.mark.parametrize("rle4", [False, True], ids=["RLE8", "RLE4"])
def test_a_run_length_bmp_over_the_pixel_budget_is_refused_from_its_header(
    rle4: bool, decoder_spy: list[str]
) -> None:
    """21 KB that Pillow's Python decoder took 7.6 s over (each row one pixel and an end
    of line): refused before a pixel is decoded."""
    bomb = bmp_rle_bomb(5000, 5000, rle4=rle4)
    assert len(bomb) < 25_000
    coding = "RLE4" if rle4 else "RLE8"
    words = rf"{coding}.*5000x5000 = 25000000 pixels.*at most {MAX_BMP_RLE_PIXELS}"
    with pytest.raises(errors.ImageTooComplex, match=words):
        decode_image(bomb, LIMITS)
    assert decoder_spy == []


def test_the_run_length_pixel_budget_is_inclusive() -> None:
    width = 2000
    height = MAX_BMP_RLE_PIXELS // width
    assert width * height == MAX_BMP_RLE_PIXELS
    row = b"\xff\x03" * 7 + bytes([width - 7 * 255, 3]) + b"\0\0"  # colour 3, then end of line

    def uniform(rows: int) -> bytes:
        return bmp_rle((width, rows), [0, 0, 0] * 256, row * rows + b"\0\1")

    assert decode_image(uniform(height), LIMITS).image.getextrema() == (3, 3)
    with pytest.raises(errors.ImageTooComplex, match=f"2000x{height + 1}"):
        decode_image(uniform(height + 1), LIMITS)


def test_run_length_data_over_the_byte_budget_is_refused_whatever_the_pixel_count(
    decoder_spy: list[str],
) -> None:
    """A command that writes no pixel (a run past the end of its row) still costs the
    decoder a loop: megabytes of them in an 8x8 image took seconds."""
    small = Image.new("P", (8, 8), 1)
    coded = bmp_run_length(small)
    data_bytes = len(coded) - int.from_bytes(coded[10:14], "little")
    at_budget = bmp_run_length(small, tail=bytes(MAX_BMP_RLE_BYTES - data_bytes))
    assert decode_image(at_budget, LIMITS).image.getextrema() == (1, 1)
    decoder_spy.clear()
    empty_runs = b"\x08\x01" + b"\xff\x00" * (MAX_BMP_RLE_BYTES // 2)
    with pytest.raises(
        errors.ImageTooComplex, match=f"RLE8 data is {MAX_BMP_RLE_BYTES + 2} bytes.*at most"
    ):
        decode_image(bmp_rle((8, 8), [0, 0, 0] * 256, empty_runs), LIMITS)
    assert decoder_spy == []


# ---- TIFF directories and EXIF blocks ------------------------------------------------

# Numbers that fill a directory's budget exactly, in SHORTs and in rationals (two numbers
# each in the builder's notation).
SHORTS_AT_BUDGET = [1] * MAX_TIFF_DIRECTORY_VALUES
RATIONALS_AT_BUDGET = [1, 3] * (MAX_TIFF_DIRECTORY_VALUES // TIFF_RATIONAL_COST)
LAYOUTS = [(False, False), (True, False), (False, True)]  # (big-endian, BigTIFF)
LAYOUT_IDS = ["II", "MM", "BigTIFF"]


@pytest.mark.parametrize(("big_endian", "bigtiff"), LAYOUTS, ids=LAYOUT_IDS)
def test_a_cameras_exif_gps_and_interoperability_directories_are_read(
    big_endian: bool, bigtiff: bool
) -> None:
    tiff = tiff_with_directories(PHOTO, CAMERA_EXIF, big_endian=big_endian, bigtiff=bigtiff)
    decoded = decode_image(tiff, LIMITS)
    assert decoded.image.tobytes() == PHOTO.tobytes()
    exif = decoded.image.getexif()
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[2] == (51, 30, 12.34)
    assert exif.get_ifd(ExifTags.IFD.Interop)[1] == "R98"


@pytest.mark.parametrize(
    ("directory", "tag", "kind", "values"),
    [
        ("EXIF", 42240, 5, RATIONALS_AT_BUDGET),  # Gamma: the probe's 2 million rationals
        ("GPS", 2, 3, SHORTS_AT_BUDGET),
        ("Interoperability", 4097, 4, SHORTS_AT_BUDGET),
        ("GPS", 6, 12, SHORTS_AT_BUDGET),  # GPSAltitude, as DOUBLEs (8 bytes a number)
        ("first", 282, 5, RATIONALS_AT_BUDGET),  # XResolution, which Pillow reads to open it
    ],
)
@pytest.mark.parametrize(("big_endian", "bigtiff"), LAYOUTS, ids=LAYOUT_IDS)
def test_a_directory_over_its_value_budget_is_refused_before_pillow_opens_the_tiff(
    directory: str,
    tag: int,
    kind: int,
    values: list[int],
    big_endian: bool,
    bigtiff: bool,
    opened: list[str],
) -> None:
    """Pillow made a Python object of each number: a 16 MB EXIF directory of 2 million
    rationals took 14 s and 600 MB. The first directory has the image's tags besides."""
    tags: dict[str, list] = {"EXIF": [], "GPS": [], "Interoperability": []}
    one_more = [*values, 1, 3] if kind == 5 else [*values, 1]
    tags[directory] = [(tag, kind, one_more)]
    tiff = tiff_with_directories(PHOTO, tags, big_endian=big_endian, bigtiff=bigtiff)
    with pytest.raises(errors.ImageTooComplex, match=f"TIFF's {directory} directory holds"):
        decode_image(tiff, LIMITS)
    assert opened == []


@pytest.mark.parametrize("kind", [3, 5], ids=["SHORT", "RATIONAL"])
def test_a_directory_at_its_value_budget_is_read(kind: int) -> None:
    values = SHORTS_AT_BUDGET if kind == 3 else RATIONALS_AT_BUDGET
    tiff = tiff_with_directories(PHOTO, {"EXIF": [(42240, kind, values)]})
    check_tiff_directories(tiff)
    assert decode_image(tiff, LIMITS).image.size == PHOTO.size


@pytest.mark.parametrize(
    "pointers",
    [
        {"GPS": "EXIF", "Interoperability": "EXIF"},  # the probe: one directory, read 3 times
        {"Interoperability": "EXIF"},  # the EXIF directory names itself
        {"EXIF": "first"},
        {"GPS": "first"},
    ],
    ids=["one for all", "itself", "exif to first", "gps to first"],
)
@pytest.mark.parametrize(("big_endian", "bigtiff"), LAYOUTS, ids=LAYOUT_IDS)
def test_a_directory_two_pointers_lead_to_is_refused(
    pointers: dict[str, str], big_endian: bool, bigtiff: bool, opened: list[str]
) -> None:
    tags: dict[str, list] = {"EXIF": [], "GPS": [], "Interoperability": []}
    tiff = tiff_with_directories(
        PHOTO, tags, big_endian=big_endian, bigtiff=bigtiff, pointers=pointers
    )
    with pytest.raises(errors.CorruptImage, match="directory, which would be read again"):
        decode_image(tiff, LIMITS)
    assert opened == []


def test_long_image_arrays_pass_and_strip_offsets_are_counted_by_the_block_limit() -> None:
    """A 16-bit transfer function (3 x 65,536 numbers) in a TIFF of the most strips read:
    with the strips' offsets and byte counts it would be over the budget."""
    transfer_function = (301, 3, [0] * 3 * 65_536)
    tiff = tiff_in_strips(8, MAX_TIFF_BLOCKS, 1, extra_tags=(transfer_function,))
    assert tiff_block_count(tiff) == MAX_TIFF_BLOCKS
    assert 2 * MAX_TIFF_BLOCKS + len(transfer_function[2]) > MAX_TIFF_DIRECTORY_VALUES
    check_tiff_directories(tiff)


def test_a_header_pillow_reads_another_way_is_walked_that_way(opened: list[str]) -> None:
    """Pillow opens "MM*\\0" and "II\\0*" headers as TIFFs, and reads a big-endian BigTIFF's
    header as a classic one (bytes 4-7 its first directory's offset)."""
    bomb = {"EXIF": [(42240, 5, [*RATIONALS_AT_BUDGET, 1, 3])]}
    big_endian = tiff_with_directories(PHOTO, bomb, big_endian=True)
    little_endian = tiff_with_directories(PHOTO, bomb)
    for variant in (
        b"MM*\x00" + big_endian[4:],
        b"II\x00*" + little_endian[4:],
        b"MM\x00+" + big_endian[4:],
    ):
        with pytest.raises(errors.ImageTooComplex, match="EXIF directory holds"):
            decode_image(variant, LIMITS)
    assert opened == []
    plain = tiff_with_directories(PHOTO, CAMERA_EXIF, big_endian=True)
    assert decode_image(b"MM*\x00" + plain[4:], LIMITS).image.tobytes() == PHOTO.tobytes()


def _exif_block(tags: dict[str, list]) -> bytes:
    """An EXIF block (a TIFF structure) of a 1x1 image with these directories."""
    return tiff_with_directories(Image.new("L", (1, 1)), tags)


def _png_text(key: str, value: bytes | str, *, compressed: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value, zip=compressed)
    return encode(PHOTO, pnginfo=info)


def _raw_profile(block: bytes) -> str:
    """ImageMagick's PNG text: three header lines, then the EXIF block in hex."""
    return f"\nexif\n{len(block):8d}\n{block.hex()}\n"


BOMB_BLOCK = _exif_block({"first": [(274, 5, [*RATIONALS_AT_BUDGET, 1, 3])]})


@pytest.mark.parametrize(
    "upload",
    [
        encode(PHOTO, exif=BOMB_BLOCK),
        encode(PHOTO, "WEBP", lossless=True, exif=BOMB_BLOCK),
        _png_text("exif", BOMB_BLOCK),
        _png_text("Raw profile type exif", _raw_profile(BOMB_BLOCK), compressed=True),
        _png_text("Raw profile type exif", _raw_profile(BOMB_BLOCK)),
    ],
    ids=["PNG eXIf", "WebP EXIF", "PNG tEXt exif", "PNG zTXt raw profile", "tEXt raw profile"],
)
def test_an_exif_block_over_the_budget_is_refused_in_png_and_webp(
    upload: bytes, opened: list[str]
) -> None:
    """The preprocessing asks Pillow for the block's Orientation tag, and a million
    rationals in that one tag took 4 s for an 8 MB PNG or WebP. A JPEG's EXIF fits in one
    64 KB segment, so at most 8,000 rationals: milliseconds."""
    with pytest.raises(errors.ImageTooComplex, match="EXIF block's first directory holds"):
        decode_image(upload, LIMITS)
    assert opened == []


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_a_bigtiff_exif_block_pillow_does_not_read_is_not_walked(
    fmt: str, options: dict[str, bool]
) -> None:
    """Pillow cannot read a BigTIFF in an EXIF block (it gives up on the header, and the
    image reads as upright), so the budget that block would break costs nothing: the
    image is classified."""
    block = tiff_with_directories(
        Image.new("L", (1, 1)), {"first": [(274, 5, [*RATIONALS_AT_BUDGET, 1, 3])]}, bigtiff=True
    )
    # The premise: a Pillow that reads such a block must have the walk read it too.
    with pytest.raises(struct.error):
        Image.Exif().load(block)
    decoded = decode_image(encode(PHOTO, fmt, exif=block, **options), LIMITS)
    assert decoded.image.size == PHOTO.size
    assert exif_orientation(decoded.image) == 1


def test_an_exif_text_past_pillows_inflate_limit_is_refused_as_pillow_refuses_it() -> None:
    """A compressed raw-profile text inflating past Pillow's MAX_TEXT_CHUNK is never read
    as EXIF (Pillow refuses the text first), so the walk inflates no more than that: the
    reason names the text's size, not the block it would have held."""
    padded = BOMB_BLOCK + bytes(PngImagePlugin.MAX_TEXT_CHUNK // 2)
    upload = _png_text("Raw profile type exif", _raw_profile(padded), compressed=True)
    with pytest.raises(errors.ImageTooComplex, match="text or colour-profile chunks inflate"):
        decode_image(upload, LIMITS)


def _camera_exif(orientation: int) -> Image.Exif:
    """A phone's EXIF as Pillow writes it: the EXIF directory with a 30 KB maker note, a
    GPS position, the Interoperability directory."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.XResolution] = IFDRational(72, 1)
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.ExposureTime] = IFDRational(1, 125)
    details[ExifTags.Base.MakerNote] = bytes(range(256)) * 120
    details[ExifTags.Base.LensSpecification] = tuple(IFDRational(v, 1) for v in (24, 105, 4, 4))
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitude] = (IFDRational(51, 1), IFDRational(30, 1), IFDRational(12))
    exif.get_ifd(ExifTags.IFD.Interop)[1] = "R98"
    return exif


@pytest.mark.parametrize(
    ("fmt", "options"), [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})]
)
def test_a_phones_exif_block_passes_and_still_turns_the_photo_upright(
    fmt: str, options: dict[str, object]
) -> None:
    upright = normalise_image(encode(PHOTO, fmt, exif=_camera_exif(1), **options), LIMITS)
    sideways = encode(PHOTO.rotate(90, expand=True), fmt, exif=_camera_exif(6), **options)
    assert normalise_image(sideways, LIMITS).png == upright.png


# ---- JPEG cut short -----------------------------------------------------------------


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("subsampling", [0, 2], ids=["4:4:4", "4:2:0"])
@pytest.mark.parametrize(
    "restart", [{"restart_marker_blocks": 1}, {"restart_marker_rows": 1}], ids=["blocks", "rows"]
)
def test_a_jpeg_cut_short_is_truncated_when_its_restart_markers_say_so(
    progressive: bool, subsampling: int, restart: dict[str, int], decoder_spy: list[str]
) -> None:
    """libjpeg fills the rest of a scan cut short with grey and reports nothing Pillow
    shows, so a JPEG cut and given its EOI again was classified; restart markers count
    the coded intervals."""
    photo = Image.open(sorted((SAMPLES / "bicycle").glob("*.png"))[0]).convert("RGB")
    photo = photo.resize((333, 250))
    data = encode(photo, "JPEG", progressive=progressive, subsampling=subsampling, **restart)
    assert jpeg_layout(data).short_scan is None
    assert decode_image(data, LIMITS).image.size == (333, 250)
    decoder_spy.clear()
    with pytest.raises(errors.CorruptImage, match="JPEG data is truncated: its scan"):
        decode_image(jpeg_cut_short(data), LIMITS)
    assert decoder_spy == []


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("size", [(8, 8), (17, 9), (641, 479), (1000, 23)], ids=str)
def test_restart_markers_of_whole_jpegs_are_all_there(mode: str, size: tuple[int, int]) -> None:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    for options in [
        {"restart_marker_blocks": 1},
        {"restart_marker_blocks": 7, "progressive": True},
        {"restart_marker_rows": 3, "subsampling": 1, "progressive": True},
    ]:
        data = encode(image, "JPEG", **options)
        assert jpeg_layout(data).short_scan is None, options
        assert decode_image(data, LIMITS).image.size == size


@pytest.mark.parametrize("options", [{}, {"restart_marker_blocks": 1}], ids=["plain", "restarts"])
def test_a_frame_of_zero_sampling_factors_is_named_corrupt_not_a_crash(
    options: dict[str, int],
) -> None:
    """Components that claim 0x0 sampling factors give the walk no MCU: it counts no
    blocks or restart intervals and leaves the damage to the decoder, which names it."""
    data = bytearray(encode(PHOTO, "JPEG", **options))
    frame = data.index(b"\xff\xc0")
    for at in range(frame + 11, frame + 19, 3):  # each component's H and V nibbles
        data[at] = 0
    layout = jpeg_layout(bytes(data))
    assert (layout.frame_blocks, layout.short_scan) == (0, None)
    with pytest.raises(errors.CorruptImage, match="JPEG data is truncated or corrupt"):
        decode_image(bytes(data), LIMITS)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"\x12", b"\x00", b"\xff", b"\xff\x00", b"\xff\xd3", b"\xff\xd7", b"\xff\xff"]
            + [bytes((0xFF, m)) for m in (0xD0, 0xD8, 0xC0)]
        ),
        max_size=60,
    ),
    st.integers(0, 8),
    st.integers(0, 8),
)
def test_restart_markers_are_counted_exactly_whatever_the_bytes_around_them(
    pieces: list[bytes], cut_start: int, cut_end: int
) -> None:
    """The two-pass shortcut (no RST marker when every 0xFF is stuffed) counts what a
    count per marker counts, for any bytes and any bounds, a 0xFF at either edge too."""
    from scones_core.image_structure import _RESTARTS, _restart_markers

    data = b"".join(pieces)
    start, stop = min(cut_start, len(data)), max(0, len(data) - cut_end)
    expected = sum(data.count(marker, start, stop) for marker in _RESTARTS)
    assert _restart_markers(data, start, stop) == expected
