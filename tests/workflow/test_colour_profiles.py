"""Colour profiles: what a phone's Display P3 photo shows is what the model gets.

A photo tagged with an RGB profile stores its colours in that profile's space; a viewer
converts them to the screen's. The model learned from untagged (sRGB) images, so the
preprocessing converts a tagged image to sRGB: the same scene gives the same model
input whether it was saved as sRGB or as Display P3, in every accepted format.
"""

from __future__ import annotations

import io
import random
import struct
import threading

import pytest
from conftest import template_limits
from PIL import Image, ImageChops, ImageCms
from scones_core import preprocess
from scones_core.images import normalise_image
from scones_core.preprocess import _MAX_PROFILE_BYTES, srgb_transform, without_float_pipelines

from scones.cli.bench_serialize import float_pipeline, with_tag

LIMITS = template_limits()
COLOUR = (200, 60, 40)  # an sRGB colour, inside the P3 gamut
FORMATS = [
    ("JPEG", {"quality": 98, "subsampling": 0}),
    ("PNG", {}),
    ("WEBP", {"lossless": True}),
    ("TIFF", {}),
]


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def srgb_curve(points: int = 1024) -> bytes:
    """IEC 61966-2-1's transfer function as a sampled curve, as camera profiles carry it."""

    def linear(v: float) -> float:
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    samples = [round(linear(i / (points - 1)) * 65535) for i in range(points)]
    return b"curv" + bytes(4) + struct.pack(f">I{points}H", points, *samples)


def matrix_profile(
    name: str,
    red: tuple[float, ...],
    green: tuple[float, ...],
    blue: tuple[float, ...],
    curve: bytes = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)),
    white: tuple[float, ...] = (0.9642, 1.0, 0.8249),
) -> bytes:
    """An ICC v2 display profile: D50 colorants and one tone curve (gamma 2.2 by default)
    for every channel."""

    def xyz(values: tuple[float, ...]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in values)

    text = name.encode() + b"\0"
    description = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(12 + 67)
    tags = [
        (b"desc", description),
        (b"wtpt", xyz(white)),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        body += bytes(-(offset + len(body)) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body))
        + b"none"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


DISPLAY_P3 = matrix_profile(
    "Display P3 (test)",
    red=(0.5151, 0.2412, -0.0011),
    green=(0.2920, 0.6922, 0.0419),
    blue=(0.1571, 0.0666, 0.7841),
)


def model_pixel(data: bytes) -> tuple[int, ...]:
    png = normalise_image(data, LIMITS).png
    pixel = Image.open(io.BytesIO(png)).getpixel((8, 8))
    assert isinstance(pixel, tuple)
    return pixel


def saved(image: Image.Image, fmt: str, options: dict[str, object], **extra: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options, **extra)
    return out.getvalue()


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def p3_samples() -> Image.Image:
    """The sRGB colour as a Display P3 photo stores it."""
    to_p3 = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"),
        ImageCms.ImageCmsProfile(io.BytesIO(DISPLAY_P3)),
        "RGB",
        "RGB",
    )
    converted = to_p3.apply(Image.new("RGB", (256, 256), COLOUR))
    converted.info.pop("icc_profile", None)  # tagged only where a test says so
    assert not close(converted.getpixel((0, 0)), COLOUR, 10)  # P3 stores other numbers
    return converted


@pytest.mark.parametrize(("fmt", "options"), FORMATS, ids=[f for f, _ in FORMATS])
def test_a_display_p3_photo_reaches_the_model_as_the_colour_it_shows(
    p3_samples: Image.Image, fmt: str, options: dict[str, object]
) -> None:
    tagged = model_pixel(saved(p3_samples, fmt, options, icc_profile=DISPLAY_P3))
    plain = model_pixel(saved(Image.new("RGB", (256, 256), COLOUR), fmt, options))
    assert close(plain, COLOUR, 1)
    assert close(tagged, COLOUR, 2), tagged
    # The same samples without their profile are another colour: the profile was applied.
    untagged = model_pixel(saved(p3_samples, fmt, options))
    assert not close(untagged, COLOUR, 10)


def test_an_srgb_or_unreadable_profile_leaves_the_pixels_as_they_are(
    p3_samples: Image.Image,
) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.new("RGB", (256, 256), COLOUR)
    assert close(model_pixel(saved(image, "PNG", {}, icc_profile=srgb)), COLOUR, 1)
    # A profile no colour engine can read is ignored, as a browser ignores it: the image
    # is still classified, as the untagged samples.
    junk = b"\x00\x00\x01\x00" + b"not a profile" * 30
    untagged = model_pixel(saved(p3_samples, "PNG", {}))
    assert model_pixel(saved(p3_samples, "PNG", {}, icc_profile=junk)) == untagged


def test_a_camera_srgb_profile_leaves_the_model_input_bit_identical() -> None:
    """Shaped like the version 2 "sRGB IEC61966-2.1" profile cameras embed (sampled
    curves, a D65 media white point): converting with it would move some samples by 1,
    so it is not applied at all."""
    camera_srgb = matrix_profile(
        "sRGB IEC61966-2.1 (test)",
        red=(0.43607, 0.22249, 0.01392),
        green=(0.38515, 0.71687, 0.09708),
        blue=(0.14307, 0.06061, 0.71410),
        curve=srgb_curve(),
        white=(0.95045, 1.0, 1.08905),
    )
    # Every colour at random: converted, about 1 sample in 250 would move by 1.
    photo = Image.frombytes("RGB", (256, 256), random.Random(0).randbytes(256 * 256 * 3))
    # Converted, it would move samples by 1: that is why it is not applied.
    converting = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(camera_srgb)),
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    moved = ImageChops.difference(converting.apply(photo), photo).getextrema()
    assert max(high for _, high in moved) == 1
    assert srgb_transform(camera_srgb) is None
    for fmt, options in FORMATS:
        tagged = normalise_image(saved(photo, fmt, options, icc_profile=camera_srgb), LIMITS)
        plain = normalise_image(saved(photo, fmt, options), LIMITS)
        assert tagged.png == plain.png, fmt


def test_a_profile_over_a_mebibyte_is_ignored() -> None:
    """RGB display profiles are a few KB: one of up to ``_MAX_PROFILE_BYTES`` is read, a
    larger one is ignored (as a broken one is), not handed to the colour engine."""

    def padded(size: int) -> bytes:
        return struct.pack(">I", size) + DISPLAY_P3[4:] + bytes(size - len(DISPLAY_P3))

    assert srgb_transform(padded(_MAX_PROFILE_BYTES)) is not None
    assert srgb_transform(padded(_MAX_PROFILE_BYTES + 1)) is None


def _tags(profile: bytes) -> list[bytes]:
    (count,) = struct.unpack_from(">I", profile, 128)
    return [profile[132 + 12 * i : 136 + 12 * i] for i in range(count)]


def test_a_floating_point_pipeline_is_read_as_if_absent(p3_samples: Image.Image) -> None:
    """LittleCMS prefers a profile's D2B0 tag to its matrix and curves; the project reads
    the profile without it, as browsers do (see ``_FLOAT_PIPELINE_TAGS``)."""
    blackening = with_tag(DISPLAY_P3, b"D2B0", float_pipeline((0,) * 9))
    honoured = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(blackening)),
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
    )
    assert honoured.apply(Image.new("RGB", (1, 1), COLOUR)).getpixel((0, 0)) == (0, 0, 0)
    read = without_float_pipelines(blackening)
    assert read is not None and _tags(read) == _tags(DISPLAY_P3)
    as_p3 = model_pixel(saved(p3_samples, "PNG", {}, icc_profile=DISPLAY_P3))
    assert model_pixel(saved(p3_samples, "PNG", {}, icc_profile=blackening)) == as_p3
    assert close(as_p3, COLOUR, 2)


def test_a_pipeline_of_thousands_of_elements_is_never_evaluated() -> None:
    """Its chain has no length limit, and LittleCMS evaluates all of it at every point of
    its grid (20,000 elements took 20 s of CPU to build: a serialize timeout, the model
    server's threads held). Left out, the sRGB profile around it converts nothing, and the
    upload is classified as its untagged pixels (``scones bench serialize`` times it)."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    hostile = with_tag(srgb, b"B2D0", float_pipeline((1, 0, 0, 0, 1, 0, 0, 0, 1), 20_000))
    hostile = with_tag(hostile, b"D2B0", float_pipeline((1, 0, 0, 0, 1, 0, 0, 0, 1), 20_000))
    read = without_float_pipelines(hostile)
    assert read is not None and _tags(read) == _tags(srgb)
    assert srgb_transform(hostile) is None
    image = Image.new("RGB", (64, 64), COLOUR)
    assert model_pixel(saved(image, "PNG", {}, icc_profile=hostile)) == model_pixel(
        saved(image, "PNG", {})
    )


def test_a_profile_whose_tag_table_is_not_one_is_ignored() -> None:
    """More tags than LittleCMS reads (100), or a table cut short: not a display profile,
    ignored as a broken one is. One tag that lies past the profile's end is skipped."""
    many = DISPLAY_P3
    for index in range(101 - len(_tags(DISPLAY_P3))):
        many = with_tag(many, f"z{index:03d}".encode(), b"text" + bytes(4) + b"x\0")
    assert len(_tags(many)) == 101 and without_float_pipelines(many) is None
    assert srgb_transform(many) is None
    fewer = many[:128] + struct.pack(">I", 100) + many[132:]
    assert without_float_pipelines(fewer) == fewer
    assert without_float_pipelines(DISPLAY_P3[:130]) is None
    # One tag past the profile's end is left out, as LittleCMS skips it: the rest converts.
    beyond = with_tag(DISPLAY_P3, b"zzzz", b"text" + bytes(4) + b"x\0")
    struct.pack_into(">I", beyond := bytearray(beyond), 132 + 12 * 9 + 8, 1 << 20)
    read = without_float_pipelines(bytes(beyond))
    assert read is not None and _tags(read) == _tags(DISPLAY_P3)
    assert srgb_transform(bytes(beyond)) is not None


def test_a_new_profile_does_not_hold_up_another_threads_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model server decodes in several threads: while one builds a transform for a
    profile it has not seen, another's image with a known profile goes on."""
    known = DISPLAY_P3
    assert srgb_transform(known) is not None  # kept
    new = matrix_profile("another (test)", (0.5, 0.25, 0.0), (0.3, 0.7, 0.05), (0.15, 0.05, 0.8))
    building = threading.Event()
    done = threading.Event()
    waited_for_the_other: list[bool] = []
    build = preprocess._build_srgb_transform

    def slow_build(profile: bytes) -> object:
        if profile == new:
            building.set()
            waited_for_the_other.append(done.wait(10))
        return build(profile)

    monkeypatch.setattr(preprocess, "_build_srgb_transform", slow_build)
    builder = threading.Thread(target=srgb_transform, args=(new,))
    builder.start()
    assert building.wait(30)
    other = threading.Thread(target=lambda: (srgb_transform(known), done.set()))
    other.start()
    other.join(30)
    builder.join(30)
    assert done.is_set() and not builder.is_alive()
    # The other thread's image was done while the build still went on.
    assert waited_for_the_other == [True]
