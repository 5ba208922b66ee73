"""The model's preprocessing: decoded pixels in, the exact image the model sees out.

:func:`to_model_image` is the one place that decides orientation, colour and
size. The serialize step, the model server and training/evaluation all call it,
so the model is served images made exactly like the ones it learned from (a test
feeds one file through all three paths and compares the model input bit for bit).
It is idempotent: an RGB image already at the model's size comes back unchanged,
which is why the server can apply it again to the serialize step's PNG.
"""

from __future__ import annotations

from PIL import Image, ImageOps

from scones_core.errors import UnsupportedImageFormat

# Transparent pixels are shown on white, as a viewer would show them.
BACKGROUND = (255, 255, 255)
# Downscaling: bicubic with Pillow's reducing gap (a box reduction first, then a
# bicubic pass), which keeps photos sharp and large images cheap.
RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 3.0

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "PA"}
_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # and "F"
_DIRECT_MODES = {"1", "L", "P", "CMYK", "YCbCr", "RGBX"}


def to_model_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An RGB image of ``size`` (width, height) from any decoded first frame.

    EXIF orientation is applied first; transparency is composited on white;
    16-bit and float pixels are scaled, not clipped; the image is then
    centre-cropped to the target's aspect ratio and resized, so nothing is
    squashed (a wheel stays round).
    """
    oriented = ImageOps.exif_transpose(image) or image
    rgb = to_rgb(oriented)
    if rgb.size != size:
        rgb = rgb.resize(size, RESAMPLE, box=centre_crop(rgb.size, size), reducing_gap=REDUCING_GAP)
    return rgb


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


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for every mode Pillow decodes the accepted formats into."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in _HIGH_BIT_DEPTH_MODES or mode == "F":
        return _scaled_to_8_bit(image).convert("RGB")
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    raise UnsupportedImageFormat(f"Images in colour mode {mode} are not supported.")


def _scaled_to_8_bit(image: Image.Image) -> Image.Image:
    """Scale high-bit-depth or float samples onto 0-255 instead of clipping them.

    The nominal range is kept where the data fits it, so relative brightness
    survives: 16-bit modes use 0-65535, float 0-1; a 32-bit integer image uses the
    smallest of 0-255 and 0-65535 that holds its data, or its own maximum.
    """
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    high = float(image.getextrema()[1])  # type: ignore[arg-type]
    nominal = (1.0, 255.0) if image.mode == "F" else (255.0, 65535.0)
    full_scale = next((top for top in nominal if high <= top), high)
    return image.point(lambda value: value * (255.0 / full_scale)).convert("L")
