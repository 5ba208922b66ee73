"""The near-copy bound of ``gate_pixels`` measured against the bundled images: it must
recognise a gate image saved again as a camera app would, and must never take one
real picture for another."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scones_core.retraining.gate_pixels import COMPARE_SIDE, NEAR_COPY_RMS, Luma, luma
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
