"""Recognise a labelled copy of a gate image by its pixels, not only by its bytes.

The same picture saved again (another PNG encoder, metadata stripped or added, or a
lossless format of another kind) has other bytes and the same pixels: training on it
and then scoring the candidate on the gate image would flatter the candidate, so it is
left out as a byte-identical copy is. A lossy re-encode (JPEG) changes the pixels and is
not recognised here.

Cheap where it can be: an object is compared only if its header's size (read from its
first ``HEAD_BYTES``) is a gate image's size, and the gate images are read only once
some labelled object needs them. Both sides decode through the image rules, so they are
compared exactly as the model would see them before its preprocessing.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from PIL import Image, UnidentifiedImageError

from scones_core.errors import ImageRejected
from scones_core.image_rules import decode_image
from scones_core.settings import ImageLimits

HEAD_BYTES = 64 * 1024


def pixel_digest(data: bytes, limits: ImageLimits) -> tuple[tuple[int, int], str] | None:
    """(width, height) and SHA-256 of the first frame's RGB pixels (row by row, as the
    dataset manifest's ``sha256_rgb_pixels``); None for bytes the image rules refuse."""
    try:
        decoded = decode_image(data, limits)
    except ImageRejected:
        return None
    with decoded.image as image:
        rgb = image.convert("RGB")
        return rgb.size, hashlib.sha256(rgb.tobytes()).hexdigest()


def header_size(head: bytes) -> tuple[int, int] | None:
    """The size an image's header declares, from its first bytes; None when they do not
    say (not an image, or a header past them)."""
    try:
        with Image.open(io.BytesIO(head)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class GatePixels:
    """The gate set's pixel digests by image size, read on first use."""

    def __init__(self, s3: Any, bucket: str, gate_keys: list[str], limits: ImageLimits) -> None:
        self._s3, self._bucket, self._keys, self._limits = s3, bucket, gate_keys, limits
        self._by_size: dict[tuple[int, int], set[str]] | None = None

    def _read(self, key: str, head_only: bool = False) -> bytes:
        extra = {"Range": f"bytes=0-{HEAD_BYTES - 1}"} if head_only else {}
        return bytes(self._s3.get_object(Bucket=self._bucket, Key=key, **extra)["Body"].read())

    def _gate(self) -> dict[tuple[int, int], set[str]]:
        if self._by_size is None:
            self._by_size = {}
            for key in self._keys:
                found = pixel_digest(self._read(key), self._limits)
                if found is not None:
                    self._by_size.setdefault(found[0], set()).add(found[1])
        return self._by_size

    def holds_copy_of(self, key: str, size: int) -> bool:
        """Whether object ``key`` (``size`` bytes) shows exactly a gate image's pixels."""
        if not self._keys:
            return False
        head = self._read(key, head_only=True)
        dimensions = header_size(head)
        if dimensions is None or dimensions not in self._gate():
            return False
        data = head if size <= HEAD_BYTES else self._read(key)
        found = pixel_digest(data, self._limits)
        return found is not None and found[1] in self._gate().get(found[0], set())
