"""The image rules and the one preprocessing, on files built here and real CIFAR-100 images.

Every catalog entry goes through the Serialize step's domain code against real S3
(moto) and real Pillow decoding; the same files go through the offline stack in
``test_workflow_catalog_e2e.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from conftest import SAMPLES, template_limits
from image_catalog import (
    SAME_INPUT,
    Entry,
    awkward_keys,
    bad_inputs,
    encode,
    heic,
    png_header_only,
    png_keyed,
    tiff_grey_16,
    tiff_in_strips,
    unusual_images,
)
from moto import mock_aws
from PIL import Image, ImageOps
from scones_core import errors
from scones_core.heif_structure import HeifLayout, decode_work
from scones_core.image_rules import (
    FUNCTION_RESERVE_MB,
    SUPPORTED_IMAGE_FORMATS,
    decode_bytes,
    decode_image,
)
from scones_core.images import normalise_image, read_object, serialize_object
from scones_core.objects import ObjectRef
from scones_core.preprocess import (
    REDUCING_GAP,
    RESAMPLE,
    STRIP_REDUCTION_PIXELS,
    centre_crop,
    reduction_factor,
    to_display_image,
    to_model_image,
    to_rgb,
)
from scones_core.settings import ImageLimits

from scones.costs.model import Settings
from scones.model.artifact import OnnxClassifier, images_to_tensor
from scones.model.folders import load_images
from scones.paths import SHIPPED_MODEL_DIR
from scones.serving.app import decode_request_image
from scones.template_params import function_environment, load_template, parameter_defaults

LIMITS = template_limits()
SOURCE = sorted((SAMPLES / "motorcycle").glob("*.png"))[0]
BAD = bad_inputs(SOURCE, LIMITS.max_bytes, LIMITS.max_pixels)
UNUSUAL = unusual_images(SOURCE)
KEYS = awkward_keys(SOURCE)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="images")
        client.put_bucket_versioning(Bucket="images", VersioningConfiguration={"Status": "Enabled"})
        yield client


def serialize(s3: Any, entry: Entry, limits: ImageLimits = LIMITS) -> dict[str, Any]:
    response = s3.put_object(Bucket="images", Key=entry.key, Body=entry.data)
    ref = ObjectRef(
        "images", entry.key, response["VersionId"], response["ETag"].strip('"'), len(entry.data)
    )
    return dict(serialize_object(s3, ref, limits))


def model_input(state: dict[str, Any]) -> bytes:
    """The pixels the endpoint receives from the Serialize step."""
    with Image.open(io.BytesIO(base64.b64decode(state["image_b64"]))) as image:
        assert image.mode == "RGB" and image.size == LIMITS.model_input_size
        return image.tobytes()


@pytest.fixture(scope="module")
def classifier() -> OnnxClassifier:
    return OnnxClassifier(SHIPPED_MODEL_DIR)


# ---- the catalog -----------------------------------------------------------------


@pytest.mark.parametrize("entry", BAD, ids=[e.name for e in BAD])
def test_every_rule_gives_its_own_code_and_a_one_sentence_reason(s3: Any, entry: Entry) -> None:
    state = serialize(s3, entry)

    assert set(state) == {"rejection", "duration_ms"}
    rejection = state["rejection"]
    assert rejection["error_code"] == entry.error_code
    assert entry.reason_words in rejection["reason"]
    reason = rejection["reason"]
    assert "\n" not in reason and "Traceback" not in reason and len(reason) < 300
    assert reason.endswith(".")


def test_the_catalog_covers_every_rejection_code() -> None:
    # Both need a second S3 request between the event and the read: test_workflow_domain.py.
    covered = {entry.error_code for entry in BAD} | {"ObjectNotFound", "ObjectChanged"}
    assert covered == set(errors.rejection_error_names())


@pytest.mark.parametrize("entry", UNUSUAL + KEYS, ids=[e.name for e in UNUSUAL + KEYS])
def test_valid_unusual_files_give_the_same_prediction_as_their_png_source(
    s3: Any, entry: Entry, classifier: OnnxClassifier
) -> None:
    state = serialize(s3, entry)
    source_state = serialize(
        s3, dataclasses.replace(entry, key=entry.key + ".source.png", data=entry.source)
    )

    assert "rejection" not in state, state.get("rejection")
    got, expected = model_input(state), model_input(source_state)
    if entry.compare == SAME_INPUT:
        assert got == expected
    size = LIMITS.model_input_size
    shape = (size[1], size[0], 3)
    pixels = [np.frombuffer(raw, np.uint8).reshape(shape) for raw in (got, expected)]
    labels = [
        classifier.labels[int(classifier.predict_images([Image.fromarray(p)])[0].argmax())]
        for p in pixels
    ]
    assert labels[0] == labels[1] == SOURCE.parent.name


def test_the_first_frame_of_an_animation_is_the_one_classified(s3: Any) -> None:
    (gif,) = [e for e in UNUSUAL if e.name == "animated.gif"]
    state = serialize(s3, gif)
    pixels = np.frombuffer(model_input(state), np.uint8)
    assert pixels.mean() > 20  # the second frame is black


def test_source_facts_come_from_the_header(s3: Any) -> None:
    (photo,) = [e for e in UNUSUAL if e.name == "photo-640.jpg"]
    source = serialize(s3, photo)["source"]
    assert (source["format"], source["width"], source["height"], source["mode"]) == (
        "JPEG",
        640,
        640,
        "RGB",
    )
    assert source["bytes"] == len(photo.data) and len(source["sha256"]) == 64


# ---- one preprocessing for the workflow, the server and training ------------------


@pytest.mark.parametrize(
    "entry",
    [
        e
        for e in UNUSUAL
        if e.name
        in {
            "photo-640.jpg",
            "cmyk.tiff",
            "exif-rotated.png",
            "palette.png",
            "gray16.png",
            "gray16-big-endian.tif",
            "rgb16-trns.png",
            "rle8.bmp",
            "cmyk.jpg",
            "animated.gif",
        }
    ],
    ids=lambda e: e.name,
)
def test_one_file_gives_identical_model_input_through_all_three_paths(
    s3: Any, entry: Entry, tmp_path: Path, classifier: OnnxClassifier
) -> None:
    input_size = classifier.manifest.input_size
    # 1. the workflow: Serialize's PNG, decoded by the server as the endpoint receives it
    png = base64.b64decode(serialize(s3, entry)["image_b64"])
    workflow = images_to_tensor([decode_request_image(png, 10**8, input_size)], input_size)
    # 2. the server, called directly with the original file
    direct = images_to_tensor([decode_request_image(entry.data, 10**8, input_size)], input_size)
    # 3. training: the file in a class folder
    folder = tmp_path / "motorcycle"
    folder.mkdir()
    (tmp_path / "bicycle").mkdir()
    (tmp_path / "bicycle" / "other.png").write_bytes(SOURCE.read_bytes())
    (folder / f"file{Path(entry.name).suffix or '.png'}").write_bytes(entry.data)
    training = load_images(tmp_path, ("bicycle", "motorcycle"), input_size)
    (row,) = [i for i, p in enumerate(training.paths) if p.parent == folder]

    assert workflow.dtype == direct.dtype == training.pixels.dtype == np.float32
    assert np.array_equal(workflow, direct)
    assert np.array_equal(workflow[0], training.pixels[row])


# ---- refused from the header or the size, never decoded ---------------------------


def test_a_decompression_bomb_is_refused_without_decoding(decoder_spy: list[str]) -> None:
    bomb = png_header_only(20_000, 20_000)  # 400 megapixels in about 60 KB
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(errors.ImageTooManyPixels, match="400000000 pixels"):
            decode_image(bomb, LIMITS, draft_to=LIMITS.model_input_size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoder_spy == []
    assert peak < 5_000_000  # decoding would need 50 MB for 1-bit pixels, 1.6 GB as RGB


def test_the_band_where_pillow_only_warns_is_refused_too(decoder_spy: list[str]) -> None:
    side = int((Image.MAX_IMAGE_PIXELS or 0) ** 0.5) + 100  # above Pillow's limit, below twice it
    generous = dataclasses.replace(LIMITS, max_pixels=10 * side * side)
    with pytest.raises(errors.ImageTooManyPixels, match="more than the decoder takes"):
        decode_image(png_header_only(side, side), generous)
    assert decoder_spy == []


def test_an_oversized_object_is_refused_from_its_size_unread() -> None:
    s3 = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    reads: list[int] = []

    class Body(StreamingBody):
        def read(self, amt: int | None = None) -> bytes:
            reads.append(amt or -1)
            return super().read(amt)

    size = LIMITS.max_bytes + 1
    with Stubber(s3) as stub:
        stub.add_response(
            "get_object",
            {"Body": Body(io.BytesIO(b"x"), 1), "ContentLength": size},
            {"Bucket": "images", "Key": "incoming/huge.jpg", "VersionId": "v1"},
        )
        with pytest.raises(errors.ImageTooLarge, match=f"{size} bytes"):
            read_object(s3, ObjectRef("images", "incoming/huge.jpg", "v1", "e", size), LIMITS)
    assert reads == []


# ---- normalisation of every mode ---------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("1", 1, (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 0), (255, 255, 255)),  # fully transparent: the white background
        ("LA", (77, 255), (77, 77, 77)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("I;16", 60000, (233, 233, 233)),  # scaled, not clipped to white
        ("I;16", 257 * 40, (40, 40, 40)),
        ("I", 40000, (155, 155, 155)),
        ("F", 0.5, (127, 127, 127)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("YCbCr", (100, 128, 128), (100, 100, 100)),
        ("La", (100, 255), (100, 100, 100)),  # premultiplied alpha (a TIFF's associated)
    ],
)
def test_every_mode_becomes_rgb_at_the_model_size(
    mode: str, value: Any, expected: tuple[int, int, int]
) -> None:
    out = to_model_image(Image.new(mode, (48, 40), value), (32, 32))
    assert out.mode == "RGB" and out.size == (32, 32)
    assert out.getpixel((16, 16)) == expected


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (16, 16), 3)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 3
    assert to_model_image(image, (8, 8)).getpixel((4, 4)) == (255, 255, 255)


def _model_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(normalise_image(data, LIMITS).png)) as image:
        return np.asarray(image.convert("RGB"), dtype=int)


def _grey_pattern(levels: int) -> list[list[int]]:
    """Every sample value of ``levels`` in stripes, at the model's size."""
    width, height = LIMITS.model_input_size
    return [[(x + y // 4) % levels for x in range(width)] for y in range(height)]


@pytest.mark.parametrize("depth", [1, 2, 4, 16])
def test_a_grey_colour_key_is_transparent_at_every_bit_depth(depth: int) -> None:
    """Pillow spreads 1-, 2- and 4-bit samples over 0-255 (and keeps 16-bit ones) but
    left the tRNS key as stored: it never matched, and the keyed pixels showed grey."""
    levels = 2**depth if depth < 16 else 4
    eight_bit = [[round(v * 255 / (levels - 1)) for v in row] for row in _grey_pattern(levels)]
    if depth == 16:
        stored, key = [[v * 257 for v in row] for row in eight_bit], 85 * 257
    else:  # black is the 1-bit key: a white one is white on white
        stored, key = _grey_pattern(levels), min(1, levels - 2)
    key_8 = 85 if depth == 16 else round(key * 255 / (levels - 1))
    equivalent = _model_pixels(png_keyed(eight_bit, 8, key_8))
    got = _model_pixels(png_keyed(stored, depth, key))
    keyed = np.asarray(eight_bit) == key_8
    assert keyed.any() and (equivalent[keyed] == 255).all()
    assert np.array_equal(got, equivalent)


def test_a_16_bit_rgb_colour_key_is_transparent_like_the_8_bit_one() -> None:
    width, height = LIMITS.model_input_size
    eight_bit = [[(x * 8, y * 8, (x + y) % 3 * 100) for x in range(width)] for y in range(height)]
    key = eight_bit[5][9]  # the only pixel of its colour
    # Pillow keeps a 16-bit sample's high byte; the low bytes differ from the high ones.
    stored = [
        [(r << 8 | 0x5A, g << 8 | 0x5A, b << 8 | 0x5A) for r, g, b in row] for row in eight_bit
    ]
    equivalent = _model_pixels(png_keyed(eight_bit, 8, key))
    got = _model_pixels(png_keyed(stored, 16, tuple(v << 8 | 0x5A for v in key)))
    assert (equivalent[5, 9] == 255).all() and not (equivalent == 255).all()
    assert np.array_equal(got, equivalent)


@pytest.mark.parametrize("deflate", [False, True], ids=["raw", "deflate"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_16_bit_grey_tiff_gives_the_same_model_input_in_either_byte_order(
    signed: bool, deflate: bool
) -> None:
    """A big-endian unsigned TIFF decodes as I;16B, whose extrema Pillow lacks (it was
    refused as corrupt); a compressed big-endian signed one came out byte-swapped."""
    grey = Image.open(SOURCE).convert("L")
    samples = [v * 257 - (32768 if signed else 0) for v in grey.tobytes()]
    little, big = (
        normalise_image(
            tiff_grey_16(grey.size, samples, big_endian=order, signed=signed, deflate=deflate),
            LIMITS,
        )
        for order in (False, True)
    )
    assert big.png == little.png
    assert (big.source["mode"], little.source["mode"]) == (
        ("I", "I") if signed else ("I;16B", "I;16")
    )


@pytest.mark.parametrize("size", [(48, 40), (1201, 1000)], ids=["direct", "strips"])
def test_every_16_bit_mode_preprocesses_like_the_little_endian_image(
    size: tuple[int, int],
) -> None:
    samples = np.random.default_rng(16).integers(0, 65536, (size[1], size[0]), dtype=np.uint16)
    little = Image.frombytes("I;16", size, samples.astype("<u2").tobytes())
    expected = to_model_image(little, (32, 32)).tobytes()
    for mode, dtype in [("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")]:
        image = Image.frombytes(mode, size, samples.astype(dtype).tobytes())
        assert to_model_image(image, (32, 32)).tobytes() == expected, mode


def _float_tiff(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels.astype(np.float32)), "TIFF")


@pytest.mark.parametrize("top", [0.8, 300.0], ids=["nominal range", "own range"])
def test_non_finite_float_pixels_take_the_bounds_and_leave_the_rest_alone(top: float) -> None:
    """One NaN or infinity made the whole image black; now +inf is white, -inf black and
    NaN (no data) the background, and every finite pixel is the clean file's."""
    width, height = LIMITS.model_input_size
    # The brightest pixel (the last) stays finite, so the clean file's scale is kept.
    clean = np.linspace(0, top, width * height, dtype=np.float32).reshape(height, width)
    dirty = clean.copy()
    dirty[0, 0], dirty[5, 9], dirty[9, 3] = np.nan, np.inf, -np.inf
    expected = _model_pixels(_float_tiff(clean))
    expected[0, 0], expected[5, 9], expected[9, 3] = 255, 255, 0
    assert np.array_equal(_model_pixels(_float_tiff(dirty)), expected)


@pytest.mark.parametrize("top", [1.0, 300.0], ids=["nominal range", "own range"])
@pytest.mark.parametrize("size", [(48, 40), (1201, 1000)], ids=["direct", "strips"])
def test_a_float_image_with_non_finite_pixels_is_the_image_with_them_at_the_bounds(
    size: tuple[int, int], top: float
) -> None:
    values = np.random.default_rng(4).random((size[1], size[0]), dtype=np.float32) * top
    values[::7, ::5], values[3::11, ::3], values[1::13, 2::9] = np.nan, np.inf, -np.inf
    values[0, 0] = np.nan  # Pillow's extrema of a float image start from the first pixel
    white = 1.0 if top <= 1 else float(values[np.isfinite(values)].max())
    bounded = np.nan_to_num(values, nan=white, posinf=white, neginf=0.0)
    got = to_model_image(Image.fromarray(values), (32, 32))
    assert got.tobytes() == to_model_image(Image.fromarray(bounded), (32, 32)).tobytes()


def test_wide_images_are_centre_cropped_not_squashed() -> None:
    wide = Image.new("RGB", (96, 32), (255, 0, 0))
    wide.paste((0, 0, 255), (32, 0, 64, 32))  # the middle third is blue
    out = to_model_image(wide, (32, 32))
    assert out.getpixel((0, 16)) == out.getpixel((31, 16)) == (0, 0, 255)


def test_a_model_input_of_another_shape_is_centre_cropped_to_its_aspect_ratio() -> None:
    """A 4:3 model input takes the middle 4:3 of a wide image (its full height) and of a
    tall one (its full width): green marks where each crop ends, blue its middle."""
    assert centre_crop((120, 40), (64, 48)) == pytest.approx((100 / 3, 0, 260 / 3, 40))
    assert centre_crop((40, 120), (64, 48)) == pytest.approx((0, 45, 40, 75))
    wide = Image.new("RGB", (120, 40), (255, 0, 0))
    wide.paste((0, 255, 0), (25, 0, 95, 40))  # the crop is x 33.3 to 86.7
    wide.paste((0, 0, 255), (40, 0, 80, 40))
    out = to_model_image(wide, (64, 48))
    assert [out.getpixel((x, 24)) for x in (0, 32, 63)] == [(0, 255, 0), (0, 0, 255), (0, 255, 0)]
    tall = Image.new("RGB", (40, 120), (255, 0, 0))
    tall.paste((0, 255, 0), (0, 40, 40, 80))  # the crop is y 45 to 75
    tall.paste((0, 0, 255), (0, 50, 40, 70))
    out = to_model_image(tall, (64, 48))
    assert [out.getpixel((32, y)) for y in (0, 24, 47)] == [(0, 255, 0), (0, 0, 255), (0, 255, 0)]


def test_a_sliver_is_shown_fitted_down_to_a_pixel_on_its_short_side() -> None:
    """The reviewer's copy fits within its box on each side, however thin the image: an
    8x4000 sliver at 256 is 1 pixel across (8 x 256 / 4000 = 0.51), not 2."""
    assert to_display_image(Image.new("RGB", (8, 4000)), 256).size == (1, 256)
    assert to_display_image(Image.new("RGB", (4000, 8)), 256).size == (256, 1)


def test_a_phones_full_resolution_photo_is_classified_by_default(s3: Any) -> None:
    """A 24-megapixel JPEG (5712x4284, a phone's full resolution) with its video clip
    appended after the image, as a motion photo is stored: over the 5 MiB the limit used
    to be, within the template's MaxImageBytes, and the model sees the photo itself."""
    from scones.costs.measure import photo_jpeg

    photo = photo_jpeg(7, size=(5712, 4284), quality=85)
    clip = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + np.random.default_rng(7).bytes(
        6 * 2**20 - len(photo)
    )
    motion = photo + clip
    assert 5 * 2**20 < len(motion) <= LIMITS.max_bytes
    state = serialize(s3, Entry("motion.jpg", "incoming/motion.jpg", motion, "CLASSIFIED"))
    assert "rejection" not in state, state
    assert state["source"]["width"] == 5712 and state["source"]["bytes"] == len(motion)
    plain = serialize(s3, Entry("photo.jpg", "incoming/photo.jpg", photo, "CLASSIFIED"))
    assert model_input(state) == model_input(plain)


def test_preprocessing_is_idempotent_at_the_model_size() -> None:
    with Image.open(SOURCE) as image:
        once = to_model_image(image, (32, 32))
    assert to_model_image(once, (32, 32)).tobytes() == once.tobytes()


# ---- memory: large images ----------------------------------------------------------


def _whole_image_reference(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The preprocessing done on full-size copies: orient, convert, then Pillow's reducing
    resize of the centre crop (what the strip path must reproduce)."""
    rgb = to_rgb(ImageOps.exif_transpose(image) or image)
    return rgb.resize(size, RESAMPLE, box=centre_crop(rgb.size, size), reducing_gap=REDUCING_GAP)


def _blocky(mode: str, size: tuple[int, int], orientation: int) -> Image.Image:
    """Random 40-pixel blocks (sharp edges show any misplaced box grid), in ``mode``, with
    an EXIF orientation."""
    rng = np.random.default_rng(orientation)
    cells = rng.integers(0, 256, (size[1] // 40 + 1, size[0] // 40 + 1, 4), dtype=np.uint8)
    rgba = Image.fromarray(cells).resize(size, Image.Resampling.NEAREST)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgba.convert("L"), dtype=np.uint16) * 200)
    elif mode == "P":
        image = rgba.convert("RGB").quantize(32)
        image.info["transparency"] = 0
    elif mode == "F":
        image = rgba.convert("L").convert("F").point(lambda v: v / 300)
    else:
        image = rgba.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    return image


@pytest.mark.parametrize(
    "shape", [(2501, 1999), (12, 400_001), (600, 3001)], ids=["photo", "long", "tall"]
)
@pytest.mark.parametrize("orientation", [1, 2, 3, 6, 8])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "I;16", "P", "F", "CMYK"])
def test_large_images_are_reduced_in_strips_to_the_same_model_input(
    mode: str, orientation: int, shape: tuple[int, int]
) -> None:
    # Over STRIP_REDUCTION_PIXELS; an odd side leaves a partial box at the far edge; the
    # long image is read only around its centre crop, and so is the tall one, whose boxes
    # (3 or 6 pixels) do not divide its height: the region read differs on a flipped axis.
    image = _blocky(mode, shape, orientation)
    assert image.width * image.height > STRIP_REDUCTION_PIXELS
    for size in [(32, 32), (64, 48)]:
        ours = np.asarray(to_model_image(image, size), dtype=int)
        whole = np.asarray(_whole_image_reference(image, size), dtype=int)
        difference = np.abs(ours - whole)
        # Pillow aligns its box grid to the crop, the strips to the upright image's corner,
        # and it orders its two resize passes by the image's size: a few grey levels where
        # sharp blocks meet, never a shifted or mis-oriented image.
        assert difference.mean() < 1.0 and difference.max() <= 16, (size, difference.max())


def test_a_square_upload_gives_the_whole_image_path_bit_for_bit() -> None:
    image = _blocky("RGBA", (2400, 2400), 3)
    reference = _whole_image_reference(image, (32, 32))
    assert to_model_image(image, (32, 32)).tobytes() == reference.tobytes()


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (24, 32)])
@pytest.mark.parametrize("upright", [(2501, 1999), (1999, 2501), (600, 3001)])
def test_the_strips_are_reduced_by_the_factor_pillows_resize_uses(
    upright: tuple[int, int], size: tuple[int, int]
) -> None:
    """Image.resize(reducing_gap=REDUCING_GAP) box-reduces the crop by int(side / model
    side / gap) on each axis; the strips must reduce by the same factor, whatever the
    model input's shape, or they give another image than the whole-image path."""
    left, top, right, bottom = centre_crop(upright, size)
    along_x = int((right - left) / size[0] / REDUCING_GAP)
    along_y = int((bottom - top) / size[1] / REDUCING_GAP)
    assert reduction_factor(upright, size) == along_x == along_y


def test_a_long_image_whose_crop_is_near_the_model_size_is_not_box_reduced() -> None:
    """Over STRIP_REDUCTION_PIXELS, but its centre crop is under REDUCING_GAP times the
    model input: Pillow's resize reduces nothing, and neither do the strips, so even
    pixel-fine noise gives the whole-image path bit for bit."""
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 256, (20_001, 90, 3), dtype=np.uint8))
    assert noise.width * noise.height > STRIP_REDUCTION_PIXELS
    for size in [(32, 32), (64, 48)]:
        reference = _whole_image_reference(noise, size)
        assert to_model_image(noise, size).tobytes() == reference.tobytes(), size


def test_an_image_whose_decode_would_not_fit_the_function_is_refused_before_decoding(
    decoder_spy: list[str],
) -> None:
    webp = encode(Image.new("RGBA", (2000, 2000), (10, 20, 30, 40)), "WEBP", lossless=True)
    needed_mb = decode_bytes("WEBP", "RGBA", (2000, 2000)) / 2**20  # 4 MP x 17 bytes
    small = dataclasses.replace(LIMITS, memory_mb=FUNCTION_RESERVE_MB + int(needed_mb) - 1)
    with pytest.raises(errors.ImageTooManyPixels, match=r"2000x2000 WEBP.*\(its MemorySize\)"):
        decode_image(webp, small)
    assert decoder_spy == []
    enough = dataclasses.replace(small, memory_mb=FUNCTION_RESERVE_MB + int(needed_mb) + 1)
    assert decode_image(webp, enough).image.size == (2000, 2000)


def test_a_progressive_jpeg_counts_its_full_size_coefficients(decoder_spy: list[str]) -> None:
    photo = Image.new("RGB", (3000, 2000), (120, 130, 140))
    limits = dataclasses.replace(LIMITS, memory_mb=FUNCTION_RESERVE_MB + 16)
    # Baseline: the draft decodes an eighth of each side, well inside 16 MB.
    assert decode_image(encode(photo, "JPEG"), limits, draft_to=(32, 32)).image.size == (375, 250)
    # Progressive: libjpeg holds 3000 x 2000 x 3 coefficients of 2 bytes (34 MB) meanwhile.
    with pytest.raises(errors.ImageTooManyPixels, match="3000x2000 JPEG"):
        decode_image(encode(photo, "JPEG", progressive=True), limits, draft_to=(32, 32))


@pytest.mark.parametrize(
    "size",
    [
        (8064, 6048),  # a 48 MP sensor
        (8160, 6120),
        (8192, 6144),  # 50 MP sensors (IMX766, IMX890, GN2), 50.3 M pixels
        (8768, 6144),  # a 1-inch 50 MP sensor (IMX800), 53.9 M pixels
    ],
)
def test_a_phones_50_megapixel_jpeg_is_normalised_at_an_eighth_of_its_size(
    size: tuple[int, int],
) -> None:
    """A phone's largest photo: within MaxImagePixels (the template's default) and the
    function's memory, because the JPEG draft decodes an eighth of each side."""
    assert size[0] * size[1] <= int(parameter_defaults()["MaxImagePixels"])
    photo = Image.linear_gradient("L").resize(size).convert("RGB")
    data = encode(photo, "JPEG", quality=85)
    del photo
    limits = dataclasses.replace(LIMITS, memory_mb=512)
    normalised = normalise_image(data, limits)
    assert (normalised.source["width"], normalised.source["height"]) == size
    assert Image.open(io.BytesIO(normalised.png)).size == LIMITS.model_input_size


def fits(needed_bytes: int) -> bool:
    memory_mb = Settings.from_template().memory_mb["SerializeImageFunction"]
    return needed_bytes / 2**20 + FUNCTION_RESERVE_MB <= memory_mb


def phone_heic(width: int, height: int, *, ten_bit: bool) -> HeifLayout:
    """A phone's HEIC layout: 4:2:0 tiles of 512x512, covering the image with less than a
    tile to spare, at 8 bits or at an HDR photo's 10."""
    tiles = (-(-width // 512) * 512) * (-(-height // 512) * 512)
    per_pixel = 3.0 if ten_bit else 1.5  # plane bytes: 4:2:0, 2 bytes a sample at 10 bits
    return HeifLayout(
        width,
        height,
        tiles=tiles // 512**2,
        coded_pixels=tiles,
        plane_bytes=int(tiles * per_pixel),
        decode_work=int(decode_work(tiles, per_pixel, ten_bit)),
        tile_plane_bytes=int(512**2 * per_pixel),
        high_bit_depth=ten_bit,
    )


def test_what_fits_the_serialize_functions_memory_at_the_pixel_limit() -> None:
    """With the template's defaults, an image Pillow keeps at 4 bytes a pixel or fewer
    (a JPEG at its draft) fits at MaxImagePixels, a phone's 48 or 50 MP photo, even turned
    upright into a second copy (a TIFF's Orientation). A TIFF of 16-bit samples in one
    strip, which libtiff decodes into a buffer of its own, fits about 36 to 44 MP; WebP
    and HEIC, decoded whole with buffers of their own, fit a phone's 24 MP photo in memory
    and are refused past about 25 MP (WebP) or 29-41 MP (HEIC). (A HEIC's decode time
    refuses it sooner: ``heic_coded_pixel_limit``.)"""
    pixels = int(parameter_defaults()["MaxImagePixels"])
    assert pixels >= 8768 * 6144  # the largest 50 MP sensor's photo
    side = (int(pixels**0.5), int(pixels**0.5))
    for fmt in set(SUPPORTED_IMAGE_FORMATS) - {"WEBP", "HEIC"}:
        for mode in ["RGBA", "CMYK", "F", "I;16", "P"]:
            assert fits(decode_bytes(fmt, mode, side, copies=2)), (fmt, mode)
    one_strip = {"RGB": 6, "RGBA": 8}  # 16-bit samples, bytes a pixel of the raw strip
    for mode, strip in one_strip.items():
        pixels_in = 36_000_000
        square = (int(pixels_in**0.5), int(pixels_in**0.5))
        assert fits(decode_bytes("TIFF", mode, square, strip_bytes=pixels_in * strip)), mode
        assert not fits(decode_bytes("TIFF", mode, side, strip_bytes=pixels * strip)), mode
    for width, height in ((5712, 4284), (6000, 4000)):  # a phone's 24 MP photo, 4:3 and 3:2
        assert fits(decode_bytes("WEBP", "RGBA", (width, height)))
        for ten_bit in (False, True):
            layout = phone_heic(width, height, ten_bit=ten_bit)
            assert fits(decode_bytes("HEIC", "RGB", (width, height), heif=layout)), ten_bit
    assert not fits(decode_bytes("WEBP", "RGB", side))
    for ten_bit in (False, True):
        layout = phone_heic(8064, 6048, ten_bit=ten_bit)
        assert not fits(decode_bytes("HEIC", "RGB", (8064, 6048), heif=layout)), ten_bit


def test_the_pixel_limit_can_be_raised_no_higher_than_pillow_decodes() -> None:
    """Past Pillow's own bomb limit every image is refused, whatever MaxImagePixels says."""
    assert load_template()["Parameters"]["MaxImagePixels"]["MaxValue"] == Image.MAX_IMAGE_PIXELS


def test_the_function_memory_comes_from_lambdas_environment() -> None:
    env = {
        **function_environment("SerializeImageFunction"),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    }
    assert ImageLimits.from_env(env).memory_mb == 512
    assert ImageLimits.from_env(function_environment("SerializeImageFunction")).memory_mb is None
    with pytest.raises(
        errors.SettingsError, match=r"AWS_LAMBDA_FUNCTION_MEMORY_SIZE='lots' is invalid"
    ):
        ImageLimits.from_env({**env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots"})


def test_image_limits_no_image_could_meet_are_a_cold_start_error() -> None:
    """MIN_IMAGE_SIDE squared past MAX_IMAGE_PIXELS would reject every upload, each named
    as a bad image: the function refuses to start instead, naming both settings."""
    env = function_environment("SerializeImageFunction")
    env.update(MIN_IMAGE_SIDE="8000", MAX_IMAGE_PIXELS=str(8000 * 8000 - 1))
    with pytest.raises(
        errors.SettingsError, match="MIN_IMAGE_SIDE and MAX_IMAGE_PIXELS: the smallest"
    ):
        ImageLimits.from_env(env)
    env.update(MAX_IMAGE_PIXELS=str(8000 * 8000))
    assert ImageLimits.from_env(env).min_side == 8000


# ---- settings --------------------------------------------------------------------


def test_allowed_formats_narrow_the_supported_set(s3: Any) -> None:
    narrow = dataclasses.replace(LIMITS, allowed_formats=("PNG", "JPEG"))
    (webp,) = [e for e in UNUSUAL if e.name == "lossless.webp"]
    rejection = serialize(s3, webp, narrow)["rejection"]
    assert rejection["error_code"] == "UnsupportedImageFormat"
    assert "WEBP" in rejection["reason"] and "PNG, JPEG" in rejection["reason"]


def test_the_template_accepts_every_supported_format_by_default() -> None:
    assert LIMITS.allowed_formats == SUPPORTED_IMAGE_FORMATS
    assert LIMITS.min_side == 8


def test_an_unknown_format_in_the_settings_is_named() -> None:
    env = {
        "MAX_IMAGE_BYTES": "10",
        "MAX_IMAGE_PIXELS": "10",
        "MIN_IMAGE_SIDE": "0",
        "ALLOWED_IMAGE_FORMATS": "PNG,AVIF",
        "MODEL_INPUT_SIZE": "32x32",
    }
    with pytest.raises(errors.SettingsError) as raised:
        ImageLimits.from_env(env)
    assert "AVIF" in str(raised.value) and "MIN_IMAGE_SIDE" in str(raised.value)


def test_an_eight_pixel_image_is_the_smallest_accepted() -> None:
    smallest = encode(Image.new("RGB", (8, 8), (200, 30, 30)))
    decoded = decode_image(smallest, LIMITS)
    assert (decoded.source["width"], decoded.source["height"]) == (8, 8)


def test_the_model_input_carries_none_of_the_uploads_metadata(s3: Any) -> None:
    """A colour profile or transparency key in the normalised PNG would put the upload's
    metadata (megabytes in a print profile) into the workflow's state."""
    one_bit = Image.open(SOURCE).convert("1")
    keyed_one_bit = Entry("gray1-trns.png", "catalog/gray1-trns.png", b"", "CLASSIFIED")
    keyed_one_bit = dataclasses.replace(keyed_one_bit, data=encode(one_bit, transparency=1))
    plain_one_bit = dataclasses.replace(
        keyed_one_bit, key="catalog/gray1.png", data=encode(one_bit)
    )
    by_name = {entry.name: entry for entry in UNUSUAL} | {keyed_one_bit.name: keyed_one_bit}
    for name in ("print-profile.jpg", "gray1-trns.png", "rgb-trns.png"):
        png = base64.b64decode(serialize(s3, by_name[name])["image_b64"])
        assert len(png) < 10_000, name
        assert b"iCCP" not in png and b"tRNS" not in png, name
    # A 1-bit image's key (white, here) is composited on white: the plain image's input.
    assert model_input(serialize(s3, keyed_one_bit)) == model_input(serialize(s3, plain_one_bit))
    image = Image.new("RGB", (32, 32))
    image.info.update(icc_profile=b"profile", transparency=(0, 0, 0), exif=b"Exif")
    assert to_model_image(image, (32, 32)).info == {}
    assert image.info["icc_profile"] == b"profile"  # the caller's image is left alone
    del image.info["transparency"]  # nothing to convert: the input is the image's copy
    assert to_model_image(image, (32, 32)).info == {}
    assert image.info["icc_profile"] == b"profile"


def test_a_tiffs_strip_buffer_counts_toward_the_functions_memory(decoder_spy: list[str]) -> None:
    """libtiff decodes a strip's raw samples into a buffer of their own: a single 16-bit
    RGBA strip is twice the unpacked image."""
    tiff = tiff_in_strips(1000, 1000, 1000, samples=4, bits=16)
    unpacked_mb = decode_bytes("TIFF", "RGBA", (1000, 1000)) / 2**20
    strip_mb = 1000 * 1000 * 8 / 2**20
    tight = dataclasses.replace(LIMITS, memory_mb=FUNCTION_RESERVE_MB + int(unpacked_mb) + 2)
    with pytest.raises(errors.ImageTooManyPixels, match="1000x1000 TIFF"):
        decode_image(tiff, tight)
    assert decoder_spy == []
    enough = dataclasses.replace(tight, memory_mb=tight.memory_mb + int(strip_mb) + 1)
    assert decode_image(tiff, enough).image.size == (1000, 1000)


def test_a_tiff_of_too_many_strips_is_refused_before_pillow_reads_its_offsets() -> None:
    with pytest.raises(errors.ImageTooComplex, match="70000 strips"):
        decode_image(tiff_in_strips(8, 70_000, 1), LIMITS)
    assert decode_image(tiff_in_strips(8, 60_000, 1), LIMITS).image.size == (8, 60_000)


@pytest.mark.parametrize(
    "size", ["1x1", "32x32", "224x224", "9x224", "225x224", "32x225", "0x32", "1000x1", "32", "x"]
)
def test_the_model_input_size_bound_is_the_templates(size: str) -> None:
    """The normalised image travels in the workflow's state (256 KiB): the settings and
    the template's AllowedPattern refuse the same sizes."""
    pattern = load_template()["Parameters"]["ModelInputSize"]["AllowedPattern"]
    env = {**function_environment("SerializeImageFunction"), "MODEL_INPUT_SIZE": size}
    try:
        ImageLimits.from_env(env)
        accepted = True
    except errors.SettingsError as exc:
        assert "MODEL_INPUT_SIZE" in str(exc)
        accepted = False
    assert accepted == (re.fullmatch(pattern, size) is not None)
    assert accepted == (size in {"1x1", "32x32", "224x224", "9x224"})


def test_a_bigtiff_pointing_past_any_file_is_corrupt_not_a_crash() -> None:
    """Its first directory's offset does not fit a signed 64-bit number: the pre-open
    count gives up and Pillow names the file corrupt."""
    data = b"II+\x00\x08\x00\x00\x00" + (2**63 + 5).to_bytes(8, "little") + bytes(24)
    with pytest.raises(errors.CorruptImage):
        decode_image(data, LIMITS)


def test_every_accepted_format_has_one_media_type_that_the_server_and_review_share() -> None:
    """The image rules' table is the only one: the server's Content-Type check and the
    labelled copies of the review derive from it, and a camera JPEG (MPO) is image/jpeg."""
    from scones_core import image_rules, review

    from scones.serving import media

    assert set(image_rules.MEDIA_TYPES) == set(image_rules.SUPPORTED_IMAGE_FORMATS)
    assert image_rules.pillow_formats("image/bmp") == {"BMP", "DIB"}
    assert {"image/png": {"PNG"}, "image/jpeg": {"JPEG", "MPO"}} == media.FORMATS_BY_MEDIA_TYPE
    assert media.media_type_for("MPO") == "image/jpeg"
    # What the container does not take as its own type goes as the generic image type,
    # so a 415's advice is one the server accepts.
    assert media.media_type_for("WEBP") == media.GENERIC_MEDIA_TYPE
    assert media.media_type_for("EPS") == media.GENERIC_MEDIA_TYPE
    for fmt, media_type in image_rules.MEDIA_TYPES.items():
        if fmt == "HEIC":  # Pillow has no HEIC encoder; the rules register their decoder
            decoded = image_rules.decode_image(heic(Image.new("RGB", (16, 16))), LIMITS).image
        else:
            encoded = io.BytesIO()
            Image.new("RGB", (16, 16)).save(encoded, format=fmt)
            decoded = Image.open(io.BytesIO(encoded.getvalue()))
        with decoded:
            assert decoded.format in image_rules.pillow_formats(media_type)
    assert review.MEDIA_TYPES is image_rules.MEDIA_TYPES
