"""The structure walks of ``scones_core.image_structure`` on real encoder output and on
hostile files, and what the image rules make of them."""

from __future__ import annotations

import dataclasses
import io

import pytest
from conftest import SAMPLES, template_limits
from image_catalog import (
    bmp_rle,
    bmp_rle_bomb,
    bmp_run_length,
    encode,
    jpeg_scan_per_component,
    jpeg_with_scans,
    lossless_jpeg,
    png_with_profiles,
    tiff_with_tiles,
)
from PIL import Image
from scones_core import errors
from scones_core.image_rules import (
    FUNCTION_RESERVE_MB,
    MAX_BMP_RLE_BYTES,
    MAX_BMP_RLE_PIXELS,
    MAX_JPEG_SCANS,
    decode_image,
)
from scones_core.image_structure import check_png_chunks, jpeg_layout
from scones_core.images import normalise_image

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


def test_one_profile_is_read_and_a_second_is_refused_before_pillow_opens_the_file() -> None:
    png = encode(PHOTO)
    normalise_image(png_with_profiles(png, 1), LIMITS)
    flood = png_with_profiles(png, 500)
    with pytest.raises(errors.CorruptImage, match="more than one iCCP chunk"):
        check_png_chunks(flood)
    opened: list[str] = []
    original = Image.open

    def spy(*args: object, **kwargs: object) -> Image.Image:
        opened.append("open")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "open", spy)
        with pytest.raises(errors.CorruptImage, match="iCCP"):
            decode_image(flood, LIMITS)
    assert opened == []


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda png: png[:-12], "ends before its IEND"),
        (lambda png: png[:60], "IDAT chunk is cut off"),
        (lambda png: png[:-1] + bytes([png[-1] ^ 0xFF]), "IEND chunk fails its CRC"),
    ],
)
def test_png_chunk_damage_is_named(damage, words: str) -> None:
    with pytest.raises(errors.CorruptImage, match=words):
        check_png_chunks(damage(encode(PHOTO)))


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
