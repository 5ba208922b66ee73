"""The structure walks of ``scones_core.image_structure`` on real encoder output and on
hostile files, and what the image rules make of them."""

from __future__ import annotations

import dataclasses
import io

import pytest
from conftest import template_limits
from image_catalog import (
    encode,
    jpeg_scan_per_component,
    jpeg_with_scans,
    lossless_jpeg,
    png_with_profiles,
    tiff_with_tiles,
)
from PIL import Image
from scones_core import errors
from scones_core.image_rules import FUNCTION_RESERVE_MB, MAX_JPEG_SCANS, decode_image
from scones_core.image_structure import check_png_chunks, jpeg_layout
from scones_core.images import normalise_image

LIMITS = template_limits()
PHOTO = Image.linear_gradient("L").resize((96, 64)).convert("RGB")


def test_scans_are_counted_as_encoders_write_them() -> None:
    assert jpeg_layout(encode(PHOTO, "JPEG")).scans == 1
    progressive = jpeg_layout(encode(PHOTO, "JPEG", progressive=True))
    assert progressive.scans == 10 and progressive.frame_marker == 0xC2  # libjpeg's script
    assert jpeg_layout(jpeg_scan_per_component(64, 64)).scans == 3
    assert jpeg_layout(jpeg_with_scans(PHOTO, 250)).scans == 250
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
    with pytest.raises(errors.ImageTooComplex, match=r"3000 scans.*at most 100"):
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
