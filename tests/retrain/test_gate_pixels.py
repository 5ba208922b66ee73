"""The near-copy bound of ``gate_pixels`` measured against the bundled images: it must
recognise a gate image saved again as a camera app would, and must never take one
real picture for another; and the labelled copies are read several at a time."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from PIL import Image
from scones_core.retraining import gate_pixels
from scones_core.retraining.gate_pixels import (
    COMPARE_SIDE,
    NEAR_COPY_RMS,
    READERS,
    GatePixels,
    Luma,
    luma,
)
from scones_core.settings import ImageLimits

from scones.costs.measure import photo_jpeg
from scones.template_params import PROJECT_ROOT

BUNDLED = sorted((PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train").glob("*/*.png"))
LIMITS = ImageLimits.unrestricted(224)


def _luma(data: bytes) -> Luma:
    found = luma(data, LIMITS)
    assert found is not None
    return found[1]


def _jpeg(path: Path, quality: int) -> bytes:
    out = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _as_array(item: Luma) -> np.ndarray:
    return np.asarray(item.image, dtype=np.float64).ravel()


def test_no_two_bundled_pictures_are_taken_for_copies_of_each_other() -> None:
    assert len(BUNDLED) == 1000
    rows = np.stack([_as_array(_luma(path.read_bytes())) for path in BUNDLED])
    squares = (rows**2).sum(axis=1)
    mean_square = (squares[:, None] + squares[None, :] - 2 * rows @ rows.T) / rows.shape[1]
    np.fill_diagonal(mean_square, np.inf)
    closest = float(np.sqrt(np.maximum(mean_square, 0)).min())
    assert closest > NEAR_COPY_RMS * 1.5, f"two bundled pictures differ by only {closest:.1f}"


@pytest.mark.parametrize("quality", [75, 90, 95])
def test_every_bundled_picture_saved_as_a_jpeg_is_recognised(quality: int) -> None:
    worst = 0.0
    for path in BUNDLED:
        original, again = _luma(path.read_bytes()), _luma(_jpeg(path, quality))
        difference = original.differs_from(again)
        assert abs(original.mean - again.mean) <= difference + 1e-6  # the bound used to skip
        worst = max(worst, difference)
    assert worst <= NEAR_COPY_RMS, f"a quality-{quality} JPEG differs by {worst:.1f}"


def test_camera_photos_are_compared_at_a_small_scale_and_told_apart() -> None:
    """A 4000x3000 photo is compared at most COMPARE_SIDE pixels on a side: its re-encode
    is recognised and another photo of the same size is not."""
    photo = photo_jpeg(1, quality=90)
    first = _luma(photo)
    assert max(first.image.size) <= COMPARE_SIDE
    with Image.open(io.BytesIO(photo)) as image:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=75)
    assert first.differs_from(_luma(out.getvalue())) <= NEAR_COPY_RMS
    assert first.differs_from(_luma(photo_jpeg(2, quality=90))) > NEAR_COPY_RMS * 1.5


def test_bytes_the_image_rules_refuse_have_no_luma() -> None:
    assert luma(b"not an image", LIMITS) is None
    assert (
        luma((PROJECT_ROOT / "samples" / "not-images" / "delivery-note.png").read_bytes(), LIMITS)
        is None
    )


class _CountingS3:
    """A real (moto) S3 client whose GETs take a little while, counting how many run at
    once: the labelled copies grow with every review, so they must not be read one by one."""

    def __init__(self, client: Any) -> None:
        self._client, self._lock = client, threading.Lock()
        self.running = self.most_at_once = self.gets = 0
        self.keys: list[str] = []

    def get_object(self, **request: Any) -> Any:
        with self._lock:
            self.running += 1
            self.gets += 1
            self.keys.append(request["Key"])
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.02)  # a GET's round trip, for the reads to overlap
            return self._client.get_object(**request)
        finally:
            with self._lock:
                self.running -= 1


def test_labelled_copies_are_compared_with_the_gate_several_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate_paths, others = BUNDLED[:4], BUNDLED[4:40]
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bucket")
        gate_keys = []
        for path in gate_paths:
            gate_keys.append(f"gate/{path.parent.name}/{path.name}")
            client.put_object(Bucket="bucket", Key=gate_keys[-1], Body=path.read_bytes())
        objects, copies = [], set()
        for i, path in enumerate([*gate_paths, *others]):
            key = f"labelled/{path.parent.name}/{i}.jpg"
            body = _jpeg(path, 90)
            client.put_object(Bucket="bucket", Key=key, Body=body)
            objects.append((key, len(body)))
            if path in gate_paths:
                copies.add(key)
        s3 = _CountingS3(client)
        decoding = _Concurrency(gate_pixels.luma)
        monkeypatch.setattr(gate_pixels, "luma", decoding)
        found = GatePixels(s3, "bucket", gate_keys, LIMITS).copies_among(objects)
    assert found == copies
    assert s3.gets >= len(objects)  # every object's header was read
    assert s3.most_at_once > 1
    assert s3.most_at_once <= READERS
    # Decodes, which the limits budget no memory for, run one at a time.
    assert decoding.calls > len(gate_paths) and decoding.most_at_once == 1


class _Concurrency:
    """A function, counting how many of its calls run at once."""

    def __init__(self, function: Any) -> None:
        self._function, self._lock = function, threading.Lock()
        self.running = self.most_at_once = self.calls = 0

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.01)
            return self._function(*args)
        finally:
            with self._lock:
                self.running -= 1


def test_a_gate_set_that_cannot_be_read_fails_once_not_once_per_reader() -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bucket")
        objects = []
        for i, path in enumerate(BUNDLED[:20]):
            key = f"labelled/{path.parent.name}/{i}.png"
            client.put_object(Bucket="bucket", Key=key, Body=path.read_bytes())
            objects.append((key, path.stat().st_size))
        s3 = _CountingS3(client)
        pixels = GatePixels(s3, "bucket", ["gate/bicycle/deleted.png"], LIMITS)
        with pytest.raises(ClientError, match="NoSuchKey"):
            pixels.copies_among(objects)
    assert s3.keys.count("gate/bicycle/deleted.png") == 1
