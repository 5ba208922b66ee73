"""The model's preprocessing: decoded pixels in, the exact image the model sees out.

:func:`to_model_image` is the one place that decides orientation, colour and
size. The serialize step, the model server and training/evaluation all call it,
so the model is served images made exactly like the ones it learned from (a test
feeds one file through all three paths and compares the model input bit for bit).
It is idempotent: an RGB image already at the model's size comes back unchanged,
which is why the server can apply it again to the serialize step's PNG.

Memory: the decoded upload is the only full-size image it holds. Of a large image
only the part the resize reads (the centre crop and the filter's reach) is
converted to RGB and box-reduced, a strip of rows at a time, before it is oriented
and resized; a whole-image conversion, composite or ``exif_transpose`` would each
copy a 25-megapixel upload (100 MB or more).

Pillow failing on pixels that decoded (an operation it lacks for their mode) is the
upload's problem, not the caller's: ``CorruptImage``, which the server answers with a
400 and the workflow records as ``REJECTED``.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from PIL import ExifTags, Image, ImageChops, ImageMath

from scones_core.errors import CorruptImage, UnsupportedImageFormat
from scones_core.image_rules import DECODE_ERRORS

if TYPE_CHECKING:
    from PIL.ImageCms import ImageCmsTransform

# Transparent pixels are shown on white, as a viewer would show them.
BACKGROUND = (255, 255, 255)
# Downscaling: bicubic with Pillow's reducing gap (a box reduction first, then a
# bicubic pass), which keeps photos sharp and large images cheap.
RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 3.0

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "PA"}
# Modes whose tRNS colour key Pillow's RGBA conversion applies (a 16-bit one is matched
# here); ``image_rules`` puts a PNG's key on the decoded samples' scale.
_KEYED_MODES = {"P", "1", "L", "RGB"}
_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # and "F"
# The modes whose extrema Pillow reads in place (it has none for big-endian or native 16-bit).
_EXTREMA_MODES = {"I;16", "I", "F"}
# The largest finite float32: a sample beyond it is infinite.
_FLOAT_MAX = 3.4028234663852886e38
# What Pillow raises converting pixels it decoded. MemoryError is the host's, not the upload's.
_CONVERSION_ERRORS = tuple(error for error in DECODE_ERRORS if error is not MemoryError)
_DIRECT_MODES = {"1", "L", "P", "CMYK", "YCbCr", "RGBX"}
# Images of more pixels than this are reduced strip by strip; below it a full-size copy
# costs at most 4 MB and the image takes the direct path (a camera JPEG, drafted to an
# eighth of each side, is one).
STRIP_REDUCTION_PIXELS = 1_000_000
_STRIP_PIXELS = 1_000_000  # source pixels converted at a time (whole rows of boxes)
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Colour profiles: an RGB image tagged with one (a phone's Display P3 photo, an Adobe RGB
# export) is converted to sRGB, the space the model learned from and a browser shows it in.
# Untagged images are sRGB already, and so are images tagged with an sRGB profile: one
# whose conversion moves no sample by more than 1 is not applied, so a camera's sRGB photo
# reaches the model exactly as before. A profile that cannot be read, or one over
# _MAX_PROFILE_BYTES (RGB display profiles are a few KB), is ignored, as browsers ignore
# a broken one. Grey and CMYK profiles are left alone: their images' RGB is Pillow's.
_PROFILED_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P"}
_MAX_PROFILE_BYTES = 1 << 20
# A profile's floating-point pipelines (ICC v4's D2Bx and B2Dx tags, of the type
# multiProcessElementsType, "mpet") are read as if absent: their chain of elements has no
# length limit, and LittleCMS, which prefers them, evaluates the whole chain at every point
# of the grid it builds a transform into (a 600-byte PNG whose chain repeats one matrix
# 20,000 times took 20 s of CPU). Browsers (Chrome's skcms) do not read them either; the
# profile's A2B0 or matrix and curves describe the same colours. LittleCMS reads at most
# 100 tags; a profile that lists more is not a display profile and is ignored.
_FLOAT_PIPELINE_TAGS = frozenset(
    prefix + str(n).encode() for prefix in (b"D2B", b"B2D") for n in range(4)
)
_FLOAT_PIPELINE_TYPE = b"mpet"
_MAX_PROFILE_TAGS = 100
_PROFILE_HEADER = 128
_SRGB_TOLERANCE = 1
# A camera writes the same profile into every photo: a few transforms are kept, by digest.
_TRANSFORMS: dict[bytes, ImageCmsTransform | None] = {}
_TRANSFORMS_KEPT = 8
_TRANSFORMS_LOCK = threading.Lock()
_SWAPS_SIDES = {Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}
_SWAPS_SIDES |= {Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270}
# Whether the upright image runs the source's x and y axes backwards.
_REVERSED_AXES = {
    Image.Transpose.FLIP_LEFT_RIGHT: (True, False),
    Image.Transpose.ROTATE_180: (True, True),
    Image.Transpose.FLIP_TOP_BOTTOM: (False, True),
    Image.Transpose.TRANSPOSE: (False, False),
    Image.Transpose.ROTATE_270: (False, True),
    Image.Transpose.TRANSVERSE: (True, True),
    Image.Transpose.ROTATE_90: (True, False),
}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag, or 1 (upright) when it is missing, not a whole number,
    or the EXIF block cannot be read: broken metadata says nothing about the pixels,
    which decoded fine."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


def to_model_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An RGB image of ``size`` (width, height) from any decoded first frame.

    EXIF orientation is applied first; an RGB colour profile is converted to sRGB
    (:func:`srgb_transform`); transparency is composited on white;
    16-bit and float pixels are scaled, not clipped (a non-finite float takes a
    bound, see :func:`_finite`); the image is then centre-cropped to the target's
    aspect ratio and resized, so nothing is squashed (a wheel stays round). The
    result carries no metadata: the upload's colour profile, EXIF or transparency
    key would otherwise travel with the model input (a print profile alone can be
    megabytes).
    """
    try:
        return _model_image(image, size)
    except _CONVERSION_ERRORS as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CorruptImage(
            f"The image's {image.mode} pixels could not be converted: {detail.rstrip('.')}."
        ) from None


def display_size(image: Image.Image, max_side: int) -> tuple[int, int]:
    """The upright image's size fitted within ``max_side`` on each side, never enlarged."""
    transpose = _ORIENTATIONS.get(exif_orientation(image))
    width, height = image.size[::-1] if transpose in _SWAPS_SIDES else image.size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_display_image(image: Image.Image, max_side: int) -> Image.Image:
    """The whole upload as a person should see it, at most ``max_side`` on each side.

    The same orientation, colour and transparency handling as the model's input (it
    is :func:`to_model_image` at the upright image's own aspect ratio), so a reviewer
    sees what the model was given, uncropped.
    """
    return to_model_image(image, display_size(image, max_side))


def _model_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    transpose = _ORIENTATIONS.get(exif_orientation(image))
    upright = image.size[::-1] if transpose in _SWAPS_SIDES else image.size
    crop = centre_crop(upright, size)
    if upright[0] * upright[1] <= STRIP_REDUCTION_PIXELS:
        rgb, factor, origin = to_rgb(image), 1, (0, 0)
    else:
        factor = reduction_factor(upright, size)
        region = _read_region(crop, upright, size, factor)
        source = _source_box(region, image.size, transpose)
        rgb, origin = _reduced_rgb(image, factor, transpose, source), region[:2]
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    if rgb.size != size:
        # The crop is placed on the upright source, so a reduced image's partial last
        # block stays outside it, as in Pillow's own reducing resize.
        left, top, right, bottom = crop
        x, y = origin
        box = ((left - x) / factor, (top - y) / factor, (right - x) / factor, (bottom - y) / factor)
        rgb = rgb.resize(size, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    profile = image.info.get("icc_profile")
    if profile and image.mode in _PROFILED_MODES and (to_srgb := srgb_transform(profile)):
        # On the model-sized image: the colour conversion costs nothing next to the decode.
        rgb = to_srgb.apply(rgb)
    if rgb.info:
        rgb = rgb.copy() if rgb is image else rgb
        rgb.info = {}
    return rgb


def srgb_transform(profile: bytes) -> ImageCmsTransform | None:
    """The RGB-to-sRGB transform for an embedded profile; None where nothing is to be
    converted (see ``_PROFILED_MODES``'s note). LittleCMS is imported by the first
    tagged image: a cold start without one does not pay for it."""
    if len(profile) > _MAX_PROFILE_BYTES:
        return None
    digest = hashlib.sha256(profile).digest()
    with _TRANSFORMS_LOCK:  # the model server decodes in several threads
        if digest in _TRANSFORMS:
            return _TRANSFORMS[digest]
    # Built outside the lock: a new profile does not hold up the other threads' images.
    transform = _build_srgb_transform(profile)
    with _TRANSFORMS_LOCK:
        if digest not in _TRANSFORMS:
            if len(_TRANSFORMS) >= _TRANSFORMS_KEPT:
                del _TRANSFORMS[next(iter(_TRANSFORMS))]
            _TRANSFORMS[digest] = transform
        return _TRANSFORMS[digest]


def forget_transforms() -> None:
    """Drop the kept transforms, so the next image's profile is read anew (a benchmark of
    a profile's first image)."""
    with _TRANSFORMS_LOCK:
        _TRANSFORMS.clear()


def without_float_pipelines(profile: bytes) -> bytes | None:
    """``profile`` with its floating-point pipelines left out of its tag table (see
    ``_FLOAT_PIPELINE_TAGS``), their data left in place, and so is any tag that lies past
    the profile's end (which LittleCMS skips too); None when its tag table is not one (too
    short, more than ``_MAX_PROFILE_TAGS`` tags). Unchanged when it has none of these."""
    if len(profile) < _PROFILE_HEADER + 4:
        return None
    (count,) = struct.unpack_from(">I", profile, _PROFILE_HEADER)
    table = _PROFILE_HEADER + 4
    if count > _MAX_PROFILE_TAGS or table + 12 * count > len(profile):
        return None
    kept = []
    for index in range(count):
        entry = profile[table + 12 * index : table + 12 * (index + 1)]
        signature = entry[:4]
        offset, size = struct.unpack(">II", entry[4:])
        if offset + size > len(profile):
            continue
        kind = profile[offset : offset + 4]
        if signature not in _FLOAT_PIPELINE_TAGS and kind != _FLOAT_PIPELINE_TYPE:
            kept.append(entry)
    if len(kept) == count:
        return profile
    # The shorter table, then zeros where the left-out entries were: no offset moves.
    entries = b"".join(kept).ljust(12 * count, b"\0")
    return (
        profile[:_PROFILE_HEADER]
        + struct.pack(">I", len(kept))
        + entries
        + profile[table + 12 * count :]
    )


def _build_srgb_transform(profile: bytes) -> ImageCmsTransform | None:
    from PIL import ImageCms

    readable = without_float_pipelines(profile)
    if readable is None:
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(readable))
        if source.profile.xcolor_space.strip() != "RGB":
            return None
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        transform = ImageCms.buildTransform(
            source, srgb, "RGB", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
        )
        levels = _level_grid()
        moved = ImageChops.difference(transform.apply(levels), levels).getextrema()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    largest = max(int(band[1]) for band in moved)  # type: ignore[index]
    return None if largest <= _SRGB_TOLERANCE else transform


def _level_grid() -> Image.Image:
    """18 levels of each channel, 0 to 255 (5,832 colours): an sRGB profile moves none.
    Made only when a profile is first seen, not at import (every cold start)."""
    levels = range(0, 256, 15)
    grid = bytes(value for r in levels for g in levels for b in levels for value in (r, g, b))
    return Image.frombytes("RGB", (len(levels) ** 2, len(levels)), grid)


def reduction_factor(upright: tuple[int, int], target: tuple[int, int]) -> int:
    """The box reduction Pillow's ``resize(reducing_gap=REDUCING_GAP)`` applies to the
    centre crop of the upright image (1: none)."""
    left, top, right, bottom = centre_crop(upright, target)
    return max(
        1,
        min(
            int((right - left) / target[0] / REDUCING_GAP),
            int((bottom - top) / target[1] / REDUCING_GAP),
        ),
    )


def _read_region(
    crop: tuple[float, float, float, float],
    upright: tuple[int, int],
    target: tuple[int, int],
    factor: int,
) -> tuple[int, int, int, int]:
    """The part of the upright image the resize reads: the crop, the bicubic filter's
    reach around it, and whole boxes from the image's corner (so the box grid is the
    whole image's). A very long image is read only around its centre."""
    left, top, right, bottom = crop
    # Bicubic reads two source pixels (at the reduced scale) each side of each output
    # pixel's footprint; Pillow's resize was seen to read up to 20 beyond the box when
    # enlarging, so the margin is generous: a few rows, where only the crop is needed.
    reach_x = factor * (math.ceil(4 * max(1.0, (right - left) / target[0] / factor)) + 32)
    reach_y = factor * (math.ceil(4 * max(1.0, (bottom - top) / target[1] / factor)) + 32)
    return (
        max(0, math.floor((left - reach_x) / factor) * factor),
        max(0, math.floor((top - reach_y) / factor) * factor),
        min(upright[0], math.ceil((right + reach_x) / factor) * factor),
        min(upright[1], math.ceil((bottom + reach_y) / factor) * factor),
    )


def _source_box(
    region: tuple[int, int, int, int], size: tuple[int, int], transpose: Image.Transpose | None
) -> tuple[int, int, int, int]:
    """``region`` of the upright image, in the coordinates of the stored image of ``size``."""
    left, top, right, bottom = region
    if transpose in _SWAPS_SIDES:
        along_x, along_y = (top, bottom), (left, right)
    else:
        along_x, along_y = (left, right), (top, bottom)
    reverse_x, reverse_y = (False, False) if transpose is None else _REVERSED_AXES[transpose]
    if reverse_x:
        along_x = (size[0] - along_x[1], size[0] - along_x[0])
    if reverse_y:
        along_y = (size[1] - along_y[1], size[1] - along_y[0])
    return (along_x[0], along_y[0], along_x[1], along_y[1])


def _reduced_rgb(
    image: Image.Image,
    factor: int,
    transpose: Image.Transpose | None,
    box: tuple[int, int, int, int],
) -> Image.Image:
    """``to_rgb(image.crop(box)).reduce(factor)``, a strip of rows at a time and without
    a full-size copy. The box grid starts at the corner of ``box`` that becomes the
    upright image's origin, so a partial block falls at its far edge, as it does in
    Pillow's reducing resize of the upright image."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    scale = _full_scale(image) if image.mode in _HIGH_BIT_DEPTH_MODES | {"F"} else None
    reverse_x, reverse_y = (False, False) if transpose is None else _REVERSED_AXES[transpose]
    rows = max(1, _STRIP_PIXELS // width // factor) * factor
    columns = _spans(width, factor, reverse_x, width)
    reduced = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    for y0, y1 in _spans(height, factor, reverse_y, rows):
        strip = to_rgb(image.crop((left, top + y0, right, top + y1)), scale)
        for x0, x1 in columns:
            piece = strip if (x0, x1) == (0, width) else strip.crop((x0, 0, x1, strip.height))
            reduced.paste(piece.reduce(factor), (math.ceil(x0 / factor), math.ceil(y0 / factor)))
    return reduced


def _spans(length: int, factor: int, reverse: bool, step: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering ``length``, each a whole number of ``factor``
    blocks except one partial block: the first if ``reverse``, else the last."""
    first = length % factor if reverse else 0
    starts = ([0] if first else []) + list(range(first, length, step))
    return list(zip(starts, [*starts[1:], length], strict=True))


def centre_crop(
    source: tuple[int, int], target: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The largest centred box of ``source`` with ``target``'s aspect ratio."""
    width, height = source
    aspect = target[0] / target[1]
    if width / height > aspect:
        kept = height * aspect
        return ((width - kept) / 2, 0.0, (width + kept) / 2, float(height))
    kept = width / aspect
    return (0.0, (height - kept) / 2, float(width), (height + kept) / 2)


def to_rgb(image: Image.Image, full_scale: float | None = None) -> Image.Image:
    """8-bit RGB for every mode Pillow decodes the accepted formats into.

    ``full_scale`` is the sample value that becomes 255 in a high-bit-depth or float
    image (default: from the image itself, see :func:`_full_scale`); a strip of a
    larger image passes its whole image's."""
    mode = image.mode
    if mode == "La":  # grey with premultiplied alpha (a TIFF's associated alpha)
        image, mode = image.convert("LA"), "LA"
    key = image.info.get("transparency")
    if mode == "RGB" and key is None:
        return image
    if mode in _ALPHA_MODES or (mode in _KEYED_MODES and key is not None):
        rgba = image.convert("RGBA")
        return _on_background(rgba, rgba.getchannel("A"))
    if mode in _HIGH_BIT_DEPTH_MODES or mode == "F":
        rgb = _scaled_to_8_bit(image, full_scale).convert("RGB")
        if isinstance(key, int) and mode != "F":  # a 16-bit grey PNG's key, to the bit
            return _on_background(rgb, _key_alpha(image, key))
        return rgb
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    raise UnsupportedImageFormat(f"Images in colour mode {mode} are not supported.")


def _on_background(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """``image`` composited on ``BACKGROUND`` through ``alpha`` (mode L)."""
    background = Image.new("RGB", image.size, BACKGROUND)
    background.paste(image, mask=alpha)
    return background


def _key_alpha(image: Image.Image, key: int) -> Image.Image:
    """Alpha for a high-bit-depth image's colour key: 0 where a sample equals it."""
    samples = image if image.mode == "I" else image.convert("I")
    alpha = ImageMath.lambda_eval(lambda args: (args["samples"] != key) * 255, samples=samples)
    return alpha.convert("L")


def _scaled_to_8_bit(image: Image.Image, full_scale: float | None) -> Image.Image:
    """Scale high-bit-depth or float samples onto 0-255 instead of clipping them."""
    scale = _full_scale(image) if full_scale is None else full_scale
    if image.mode == "F":
        image = _finite(image, scale)
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.point(lambda value: value * (255.0 / scale)).convert("L")


def _full_scale(image: Image.Image) -> float:
    """The value shown as white. The nominal range is kept where the data fits it, so
    relative brightness survives: 16-bit modes use 0-65535, float 0-1; a 32-bit
    integer image uses the smallest of 0-255 and 0-65535 that holds its data, or its
    own maximum. Only finite samples count (see :func:`_finite`)."""
    high = _largest(image)
    nominal = (1.0, 255.0) if image.mode == "F" else (255.0, 65535.0)
    return next((top for top in nominal if high <= top), high)


def _largest(image: Image.Image) -> float:
    """The largest finite sample. Pillow's extrema of a float image skip NaN, unless the
    first pixel is one (then they are NaN), and count infinity: a non-finite answer is
    read again in strips of rows with the non-finite samples at 0 (which leaves every
    full scale as it was). Big-endian and native 16-bit images are read in strips as
    32-bit integers."""
    if image.mode in _EXTREMA_MODES:
        high = _high(image)
        if math.isfinite(high):
            return high
    return max(_high(strip) for strip in _comparable_strips(image))


def _high(image: Image.Image) -> float:
    return float(image.getextrema()[1])  # type: ignore[arg-type]


def _comparable_strips(image: Image.Image) -> Iterator[Image.Image]:
    """``image`` in strips of rows whose extrema Pillow reads right."""
    rows = max(1, _STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        strip = image.crop((0, top, image.width, min(image.height, top + rows)))
        yield _finite(strip, 0.0) if strip.mode == "F" else strip.convert("I")


def _finite(image: Image.Image, white: float) -> Image.Image:
    """A float image with its non-finite samples on the scale's bounds: +inf at ``white``,
    -inf at 0 (black), and NaN, which marks no data, at ``white``, as a transparent pixel
    shows the background. Scaling through them turned the whole image black (an infinite
    maximum) and left NaN to the platform's cast to 8 bits."""
    # x - x is 0 for a finite sample and NaN for the rest, and NaN is the one value
    # unequal to itself: one pass finds whether there is anything to replace.
    if not ImageMath.lambda_eval(
        lambda a: (a["x"] - a["x"]) != (a["x"] - a["x"]), x=image
    ).getbbox():
        return image
    finite = image.copy()
    for value, found in (
        (white, ImageMath.lambda_eval(lambda a: a["x"] > _FLOAT_MAX, x=image)),
        (0.0, ImageMath.lambda_eval(lambda a: a["x"] < -_FLOAT_MAX, x=image)),
        (white, ImageMath.lambda_eval(lambda a: a["x"] != a["x"], x=image)),  # NaN
    ):
        mask = found.point(lambda flag: flag * 255).convert("L")
        if mask.getbbox() is not None:
            finite.paste(value, mask=mask)
    return finite
