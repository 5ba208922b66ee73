"""Read an uploaded object, check it is an image we accept, and normalise it.

Normalising to the model's input size before encoding keeps the state payload
small and bounded (a 32x32 PNG is about 3 KB of base64) whatever was uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import time
import warnings
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, ImageOps, UnidentifiedImageError

from scones_core.errors import (
    CorruptImage,
    EmptyObject,
    ImageTooLarge,
    ImageTooManyPixels,
    NotAnImage,
    ObjectNotFound,
    StorageUnavailable,
    UnsupportedImageFormat,
)
from scones_core.objects import NULL_VERSION, ObjectRef
from scones_core.settings import ImageLimits

NORMALISED_CONTENT_TYPE = "image/png"
# What Pillow's parsers and decoders raise on malformed files (seen in fuzzing:
# ValueError "Truncated IHDR chunk", struct.error, EOFError, SyntaxError ...).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}


@dataclass(frozen=True)
class NormalisedImage:
    png: bytes
    source_format: str
    source_width: int
    source_height: int
    source_bytes: int
    source_sha256: str

    def to_state(self, duration_ms: float) -> dict[str, Any]:
        """The Serialize state's output: base64 PNG plus what was uploaded."""
        return {
            "image_b64": base64.b64encode(self.png).decode("ascii"),
            "content_type": NORMALISED_CONTENT_TYPE,
            "source": {
                "format": self.source_format,
                "width": self.source_width,
                "height": self.source_height,
                "bytes": self.source_bytes,
                "sha256": self.source_sha256,
            },
            "duration_ms": round(duration_ms, 3),
        }


def read_object(s3: Any, ref: ObjectRef, limits: ImageLimits) -> bytes:
    """Fetch exactly the uploaded version, refusing oversized objects before reading them."""
    request: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version != NULL_VERSION:
        request["VersionId"] = ref.version
    try:
        response = s3.get_object(**request)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _MISSING_CODES:
            raise ObjectNotFound(
                f"s3://{ref.bucket}/{ref.key} (version {ref.version}) no longer exists: "
                "it was deleted before it could be read"
            ) from exc
        raise StorageUnavailable(f"reading s3://{ref.bucket}/{ref.key} failed: {code}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"reading s3://{ref.bucket}/{ref.key} failed: {exc}") from exc
    body = response["Body"]
    length = int(response.get("ContentLength") or 0)
    try:
        if length > limits.max_bytes:
            raise ImageTooLarge(
                f"object is {length} bytes; the limit is {limits.max_bytes} bytes (MaxImageBytes)"
            )
        # Read one byte past the limit so a wrong Content-Length cannot smuggle more in.
        data = bytes(body.read(limits.max_bytes + 1))
    finally:
        body.close()
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"object exceeds the limit of {limits.max_bytes} bytes (MaxImageBytes)")
    if not data:
        raise EmptyObject("object is empty (0 bytes)")
    return data


def normalise_image(data: bytes, limits: ImageLimits) -> NormalisedImage:
    """Validate the bytes as an accepted image and re-encode them at the model's size."""
    if not data:
        raise EmptyObject("object is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise NotAnImage("the object is not an image Pillow can identify") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooManyPixels(f"image dimensions are too large: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptImage(f"the image header is corrupt: {exc}") from exc
    with image:
        fmt = (image.format or "").upper()
        if fmt not in limits.allowed_formats:
            allowed = ", ".join(limits.allowed_formats)
            raise UnsupportedImageFormat(f"{fmt or 'unknown'} images are not accepted ({allowed})")
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ImageTooManyPixels(
                f"image is {width}x{height} = {width * height} pixels; "
                f"the limit is {limits.max_pixels} (MaxImagePixels)"
            )
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            rgb = _to_rgb(oriented)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooManyPixels(f"image dimensions are too large: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise CorruptImage(f"the {fmt} data is truncated or corrupt: {exc}") from exc
    size = limits.model_input_size
    if rgb.size != size:
        rgb = ImageOps.fit(rgb, size, method=Image.Resampling.BICUBIC)
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=1)
    return NormalisedImage(
        png=out.getvalue(),
        source_format=fmt,
        source_width=width,
        source_height=height,
        source_bytes=len(data),
        source_sha256=hashlib.sha256(data).hexdigest(),
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, compositing any transparency onto white rather than black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def serialize_object(s3: Any, ref: ObjectRef, limits: ImageLimits) -> dict[str, Any]:
    """The whole Serialize step: read, validate, normalise, encode."""
    started = time.perf_counter()
    normalised = normalise_image(read_object(s3, ref, limits), limits)
    return normalised.to_state((time.perf_counter() - started) * 1000)
