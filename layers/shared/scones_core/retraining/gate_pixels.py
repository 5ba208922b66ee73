"""Recognise a labelled copy of a gate image by its pixels, not only by its bytes.

The same picture saved again has other bytes: another PNG encoder, metadata stripped or
added, a lossless format of another kind, or a JPEG re-encode (a camera app or a
browser saving it again). Training on it and then scoring the candidate on the gate
image would flatter the candidate, so it is left out as a byte-identical copy is.

Two images of one size are the same picture when their luma differs by at most
``NEAR_COPY_RMS`` levels (root mean square, out of 255), compared at most
``COMPARE_SIDE`` pixels on a side. Measured on the bundled 1,000 CIFAR-100 images: their
JPEG re-encodes at quality 75 (Pillow's default) differ by at most 8.9 levels and at
quality 90 by 4.1, while the two closest different images differ by 15.7 (and those two
are one photograph shifted by a few pixels). A copy saved at a lower quality, resized or
cropped is not recognised.

Cheap where it can be: an object is compared only if its header's size (read from its
first ``HEAD_BYTES``) is a gate image's size, and the gate images are read only once
some labelled object needs them. Both sides decode through the image rules, so they are
compared as the model would see them before its preprocessing.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

from scones_core.errors import ImageRejected
from scones_core.image_rules import decode_image
from scones_core.settings import ImageLimits

HEAD_BYTES = 64 * 1024
NEAR_COPY_RMS = 10.0
COMPARE_SIDE = 64
# Objects read at once (the S3 client's default pool holds 10 connections).
READERS = 10


@dataclass(frozen=True)
class Luma:
    """An image's luma at comparison scale, and its mean (a cheap lower bound on the
    root-mean-square difference to another: |mean(a) - mean(b)| <= rms(a - b))."""

    image: Image.Image
    mean: float

    def differs_from(self, other: Luma) -> float:
        return float(ImageStat.Stat(ImageChops.difference(self.image, other.image)).rms[0])


def luma(data: bytes, limits: ImageLimits) -> tuple[tuple[int, int], Luma] | None:
    """(width, height) and the first frame's luma, reduced to at most ``COMPARE_SIDE``
    pixels on a side; None for bytes the image rules refuse."""
    try:
        decoded = decode_image(data, limits)
    except ImageRejected:
        return None
    with decoded.image as image:
        size = image.size
        grey = image.convert("RGB").convert("L")
    factor = -(-max(size) // COMPARE_SIDE)
    if factor > 1:
        grey = grey.reduce(factor)
    return size, Luma(grey, float(ImageStat.Stat(grey).mean[0]))


def header_size(head: bytes) -> tuple[int, int] | None:
    """The size an image's header declares, from its first bytes; None when they do not
    say (not an image, or a header past them)."""
    try:
        with Image.open(io.BytesIO(head)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class GatePixels:
    """The gate set's luma by image size, read on first use."""

    def __init__(self, s3: Any, bucket: str, gate_keys: list[str], limits: ImageLimits) -> None:
        self._s3, self._bucket, self._keys, self._limits = s3, bucket, gate_keys, limits
        self._by_size: dict[tuple[int, int], list[Luma]] | None = None
        self._reading_gate = threading.Lock()
        self._gate_error: Exception | None = None
        self._decoding = threading.Lock()

    def _read(self, key: str, head_only: bool = False) -> bytes:
        extra = {"Range": f"bytes=0-{HEAD_BYTES - 1}"} if head_only else {}
        return bytes(self._s3.get_object(Bucket=self._bucket, Key=key, **extra)["Body"].read())

    def _gate(self) -> dict[tuple[int, int], list[Luma]]:
        with self._reading_gate:  # once, by whichever reader needs it first
            if self._gate_error is not None:
                raise self._gate_error  # not read again by each waiting reader
            if self._by_size is None:
                try:
                    by_size: dict[tuple[int, int], list[Luma]] = {}
                    for key in self._keys:
                        found = luma(self._read(key), self._limits)
                        if found is not None:
                            by_size.setdefault(found[0], []).append(found[1])
                except Exception as exc:
                    self._gate_error = exc
                    raise
                self._by_size = by_size
            return self._by_size

    def copies_among(self, objects: list[tuple[str, int]]) -> set[str]:
        """The keys of ``objects`` (key, size in bytes) that show a gate image's picture.

        Each object costs a ranged GET or two, and the labelled copies only grow with every
        review: their headers are read ``READERS`` at a time, so the dataset step's time
        grows with the copies divided by that (botocore clients are thread-safe); the few
        of a gate image's size are read whole and decoded one at a time."""
        if not self._keys or not objects:
            return set()
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            found = pool.map(lambda item: self.holds_copy_of(*item), objects)
            return {key for (key, _), copy in zip(objects, found, strict=True) if copy}

    def holds_copy_of(self, key: str, size: int) -> bool:
        """Whether object ``key`` (``size`` bytes) shows a gate image's picture."""
        if not self._keys:
            return False
        head = self._read(key, head_only=True)
        dimensions = header_size(head)
        if dimensions is None or dimensions not in self._gate():
            return False
        # One object read whole and decoded at a time: the limits budget no memory, and a
        # phone photo's decode takes tens of MB (ten at once would not fit the function).
        with self._decoding:
            found = luma(head if size <= HEAD_BYTES else self._read(key), self._limits)
        if found is None:
            return False
        copy = found[1]
        return any(
            abs(copy.mean - gate.mean) <= NEAR_COPY_RMS and copy.differs_from(gate) <= NEAR_COPY_RMS
            for gate in self._gate().get(found[0], [])
        )
