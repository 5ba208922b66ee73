"""Uploads from phones and cameras, at their real sizes: what each one ends in.

A phone photo is 12-24 megapixels, turned upright by its EXIF Orientation, often a
multi-picture JPEG (a preview after the main image); a phone's RAW mode writes a DNG,
a TIFF whose first image is the sensor's raw samples or a small preview. Each upload
here goes through ``normalise_image``, the Serialize step's own path.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from conftest import template_limits
from PIL import Image
from scones_core import errors
from scones_core.image_rules import decode_image
from scones_core.image_structure import jpeg_layout
from scones_core.images import normalise_image

LIMITS = template_limits()
PHONE = (4032, 3024)  # a 12-megapixel phone photo, landscape as the sensor stores it
# Step Functions' limit on a state's input and output.
STATE_LIMIT = 256 * 1024


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def quadrants(size: tuple[int, int]) -> Image.Image:
    """Four colours, one a quarter: any turn or flip moves them."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (230, 20, 20)
    pixels[: height // 2, width // 2 :] = (20, 230, 20)
    pixels[height // 2 :, : width // 2] = (20, 20, 230)
    pixels[height // 2 :, width // 2 :] = (230, 230, 20)
    return Image.fromarray(pixels)


# ---- camera raw in a TIFF structure ---------------------------------------------------

_TIFF_FORMATS = {1: "B", 2: "B", 3: "H", 4: "I"}
TiffEntry = tuple[int, int, bytes | list[int]]  # tag, field type, values


def _directory(entries: list[TiffEntry], at: int) -> bytes:
    """A little-endian TIFF directory written at offset ``at``, its long values after it."""
    size = 2 + 12 * len(entries) + 4
    table, values = struct.pack("<H", len(entries)), b""
    for tag, kind, value in sorted(entries):
        raw = (
            value
            if isinstance(value, bytes)
            else struct.pack(f"<{len(value)}{_TIFF_FORMATS[kind]}", *value)
        )
        count = len(value)
        if len(raw) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, count, at + size + len(values))
            values += raw + b"\0" * (len(raw) & 1)
    return table + struct.pack("<I", 0) + values


def _cfa(width: int, height: int, offset: int, length: int) -> list[TiffEntry]:
    """A raw image's tags: 16-bit samples behind a 2x2 colour filter (Photometric CFA)."""
    return [
        (254, 4, [0]),
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [16]),
        (259, 3, [1]),
        (262, 3, [32803]),
        (273, 4, [offset]),
        (277, 3, [1]),
        (278, 4, [height]),
        (279, 4, [length]),
        (33421, 3, [2, 2]),
        (33422, 1, [0, 1, 1, 2]),
    ]


def dng(
    width: int,
    height: int,
    *,
    preview: tuple[int, int] | None = None,
    make: bytes = b"Google\0",
    dng_version: bool = True,
) -> bytes:
    """A DNG as phones write one: DNGVersion in the first directory, whose image is the
    raw sensor data, or (``preview``) an 8-bit RGB preview marked reduced-resolution with
    the raw image in a SubIFD. Without ``dng_version`` it is laid out as a Nikon NEF or a
    Sony ARW is (the maker in ``make``)."""
    mark: list[TiffEntry] = [(50706, 1, [1, 4, 0, 0])] if dng_version else []
    raw = np.random.default_rng(0).integers(0, 1024, (height, width)).astype("<u2").tobytes()
    if preview is None:
        first = 8 + len(raw)
        return (
            b"II*\0"
            + struct.pack("<I", first)
            + raw
            + _directory([*_cfa(width, height, 8, len(raw)), *mark, (271, 2, make)], first)
        )
    pw, ph = preview
    small = encode(quadrants(preview), "PPM").split(b"255\n", 1)[1]
    raw_at, first = 8 + len(small), 8 + len(small) + len(raw)

    def ifd0(sub: int) -> list[TiffEntry]:
        return [
            (254, 4, [1]),
            (256, 4, [pw]),
            (257, 4, [ph]),
            (258, 3, [8, 8, 8]),
            (259, 3, [1]),
            (262, 3, [2]),
            (273, 4, [8]),
            (277, 3, [3]),
            (278, 4, [ph]),
            (279, 4, [len(small)]),
            (330, 4, [sub]),
            (271, 2, make),
            *mark,
        ]

    sub = first + len(_directory(ifd0(0), first))
    return (
        b"II*\0"
        + struct.pack("<I", first)
        + small
        + raw
        + _directory(ifd0(sub), first)
        + _directory(_cfa(width, height, raw_at, len(raw)), sub)
    )


@pytest.mark.parametrize(
    "data",
    [dng(2000, 1500), dng(2000, 1500, preview=(256, 192))],
    ids=["raw-first", "preview-first"],
)
def test_a_phones_raw_dng_is_named_camera_raw(data: bytes) -> None:
    """Pillow cannot read the raw samples ("the header is truncated or corrupt" said the
    file was damaged), and a preview first was classified as a 256x192 TIFF upload."""
    assert data.startswith(b"II*\0") and len(data) < LIMITS.max_bytes
    with pytest.raises(errors.UnsupportedImageFormat, match=r"^camera raw \(DNG\) images"):
        normalise_image(data, LIMITS)


@pytest.mark.parametrize(
    ("make", "name", "preview"),
    [
        (b"NIKON CORPORATION\0", "NEF", (160, 120)),
        (b"SONY\0", "ARW", (160, 120)),
        (b"PENTAX Corporation\0", "PEF", None),
        (b"Acme Imaging\0", "TIFF-based", (160, 120)),
    ],
    ids=["nef-thumbnail-first", "arw-thumbnail-first", "pef-raw-first", "unknown-maker"],
)
def test_a_tiff_based_raw_without_dng_version_is_named_camera_raw(
    make: bytes, name: str, preview: tuple[int, int] | None
) -> None:
    """A NEF or an ARW begins with a 160x120 thumbnail marked reduced-resolution, the photo
    in a SubIFD: it was classified as a 160x120 TIFF upload. A PEF begins with the sensor's
    samples, which Pillow cannot read."""
    data = dng(600, 400, preview=preview, make=make, dng_version=False)
    with pytest.raises(errors.UnsupportedImageFormat, match=rf"^camera raw \({name}\) images"):
        normalise_image(data, LIMITS)


def test_a_tiff_whose_first_image_is_not_reduced_is_not_raw_for_its_subifds() -> None:
    """A pyramid TIFF keeps its reduced levels in SubIFDs after the full image: a photo."""
    pixels = quadrants((64, 48)).tobytes()
    first = 8 + len(pixels)
    tags: list[TiffEntry] = [
        (254, 4, [0]),
        (256, 4, [64]),
        (257, 4, [48]),
        (258, 3, [8, 8, 8]),
        (259, 3, [1]),
        (262, 3, [2]),
        (271, 2, b"NIKON CORPORATION\0"),
        (273, 4, [8]),
        (277, 3, [3]),
        (278, 4, [48]),
        (279, 4, [len(pixels)]),
        (330, 4, [0]),
    ]
    data = b"II*\0" + struct.pack("<I", first) + pixels + _directory(tags, first)
    assert decode_image(data, LIMITS).image.size == (64, 48)


def test_a_long8_where_the_raw_check_reads_one_integer_is_rejected_not_a_crash() -> None:
    """A classic TIFF's Photometric entry typed LONG8 (16) cannot hold its value: reading
    8 bytes from its 4 raised struct.error, which no rule caught, so the upload ended
    FAILED instead of REJECTED."""
    data = bytearray(encode(quadrants((8, 8)), "TIFF"))
    (first,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, first)
    entries = range(first + 2, first + 2 + 12 * count, 12)
    [at] = [at for at in entries if struct.unpack_from("<H", data, at)[0] == 262]
    struct.pack_into("<HHI", data, at, 262, 16, 1)
    with pytest.raises(errors.ImageRejected):
        normalise_image(bytes(data), LIMITS)


def test_a_16_bit_grey_tiff_marked_a_channel_at_a_time_is_read_as_it_is() -> None:
    """One sample a pixel is stored alike either way; Pillow took "I" for the raw mode of
    one marked PlanarConfiguration 2, and the upload was refused."""
    from PIL import TiffImagePlugin

    grey = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    results = []
    for planar in (1, 2):
        info = TiffImagePlugin.ImageFileDirectory_v2()
        info[284] = planar
        results.append(decode_image(encode(grey, "TIFF", tiffinfo=info), LIMITS).image)
    assert results[1].mode == results[0].mode and results[1].tobytes() == results[0].tobytes()


def _rgb_tiff(mark: bytes) -> bytes:
    """A 64x48 RGB TIFF whose first directory is at offset 16, after 8 bytes of ``mark``
    (where a CR2 says what it is)."""
    pixels = quadrants((64, 48)).tobytes()

    def tags(at: int) -> list[TiffEntry]:
        return [
            (256, 4, [64]),
            (257, 4, [48]),
            (258, 3, [8, 8, 8]),
            (259, 3, [1]),
            (262, 3, [2]),
            (273, 4, [at]),
            (277, 3, [3]),
            (278, 4, [48]),
            (279, 4, [len(pixels)]),
        ]

    at = 16 + len(_directory(tags(0), 16))
    return b"II*\0" + struct.pack("<I", 16) + mark + _directory(tags(at), 16) + pixels


def test_a_canon_cr2_is_named_camera_raw() -> None:
    assert decode_image(_rgb_tiff(bytes(8)), LIMITS).image.size == (64, 48)
    # A CR2's header: the TIFF header, then "CR", major version 2, minor 0, and the offset
    # of its raw image's directory.
    cr2 = _rgb_tiff(b"CR\x02\x00" + struct.pack("<I", 0))
    with pytest.raises(errors.UnsupportedImageFormat, match=r"^camera raw \(CR2\) images"):
        decode_image(cr2, LIMITS)


# ---- a JPEG whose frame is far larger than its data -----------------------------------


def _with_frame_size(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0") + 5  # marker, length, precision
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4 :]


def test_a_jpeg_declaring_millions_of_pixels_over_a_few_bytes_is_truncated(
    decoder_spy: list[str],
) -> None:
    """libjpeg fills a scan that ends early with grey and says nothing: a 700-byte file
    declaring 5000x4999 pixels (under MaxImagePixels) was classified as a grey photo."""
    small = encode(Image.new("RGB", (64, 64), (200, 30, 30)), "JPEG")
    bomb = _with_frame_size(small, 5000, 4999)
    assert len(bomb) < 1000 and LIMITS.max_pixels >= 5000 * 4999
    with pytest.raises(errors.CorruptImage, match=r"5000x4999 image has 586563 blocks"):
        normalise_image(bomb, LIMITS)
    assert decoder_spy == []
    # Past the pixel limit the pixel count names it, as before.
    side = int(LIMITS.max_pixels**0.5) + 1
    with pytest.raises(errors.ImageTooManyPixels):
        normalise_image(_with_frame_size(small, side, side), LIMITS)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_flat_photo_coded_in_the_fewest_bits_still_decodes(progressive: bool, mode: str) -> None:
    """A one-colour photo with optimised Huffman tables is the least data a whole JPEG
    can have: two bits a block, over the one-bit floor."""
    flat = Image.new("RGB", PHONE, (128, 128, 128)).convert(mode)
    data = encode(flat, "JPEG", quality=5, optimize=True, progressive=progressive)
    layout = jpeg_layout(data)
    assert layout.coded_bytes * 8 >= 2 * layout.frame_blocks
    assert normalise_image(data, LIMITS).source["width"] == PHONE[0]


# ---- a phone's photo: upright, whatever its Orientation; a small state ---------------

# Orientation -> the transpose that stores the upright photo as the phone's sensor did.
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def upright_input() -> bytes:
    return normalise_image(encode(quadrants(PHONE), "JPEG", quality=92), LIMITS).png


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
@pytest.mark.parametrize("orientation", sorted(STORED))
def test_a_phone_photo_reaches_the_model_upright(
    upright_input: bytes, orientation: int, fmt: str
) -> None:
    stored = quadrants(PHONE).transpose(STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    options: dict[str, object] = {"quality": 92, "exif": exif.tobytes()}
    if fmt == "MPO":  # the phone's preview after the main image
        options |= {"save_all": True, "append_images": [stored.resize((504, 378))]}
    normalised = normalise_image(encode(stored, fmt, **options), LIMITS)
    assert (normalised.source["width"], normalised.source["height"]) == stored.size
    assert normalised.png == upright_input


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_the_record_names_the_size_as_stored_in_every_format(fmt: str, orientation: int) -> None:
    """``source_width``/``source_height`` are the stored pixels, before the orientation is
    applied, whatever the format (Pillow reports a TIFF tagged with a quarter turn turned
    already); the model sees the same upright picture."""
    upright = quadrants((640, 480))
    stored = upright.transpose(STORED[orientation]) if orientation > 1 else upright
    lossless = {"lossless": True} if fmt == "WEBP" else {}

    def upload(image: Image.Image, turn: int) -> bytes:
        if fmt == "TIFF":
            return encode(image, fmt, tiffinfo={0x0112: turn})
        exif = Image.Exif()
        exif[0x0112] = turn
        return encode(image, fmt, exif=exif.tobytes(), **lossless)

    normalised = normalise_image(upload(stored, orientation), LIMITS)
    assert (normalised.source["width"], normalised.source["height"]) == stored.size
    if fmt != "JPEG":  # lossless: the very same model input as the upright upload's
        assert normalised.png == normalise_image(upload(upright, 1), LIMITS).png


def test_the_serialize_state_stays_small_for_the_largest_model_input() -> None:
    """The largest ModelInputSize (224x224) with incompressible content: the Serialize
    state is the PNG in base64 plus the upload's facts, well inside Step Functions' 256 KiB."""
    limits = template_limits()
    largest = type(limits)(**{**limits.__dict__, "model_input_size": (224, 224)})
    noise = np.random.default_rng(1).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    state = normalise_image(encode(Image.fromarray(noise), "PNG"), largest).to_state(1.0)
    assert len(json.dumps(state)) < STATE_LIMIT - 32 * 1024
