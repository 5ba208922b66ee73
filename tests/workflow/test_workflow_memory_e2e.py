"""Large images through the offline stack: decoded within SerializeImage's memory, or
refused before decoding when they would not fit it.

The offline Lambda runtime sets ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` from the template's
``MemorySize`` as Lambda does, so the image rules' memory bound runs as deployed.
``MaxImagePixels`` is raised here so that an image the pixel limit lets through can be
too large for the memory (with the defaults every format at the limit fits).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from conftest import FAST_RETRIES
from PIL import Image

from scones.offline.stack import OfflineStack, StackOptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-stack")]


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    overrides = {**FAST_RETRIES, "MaxImagePixels": "60000000"}
    with OfflineStack(StackOptions(overrides=overrides)) as running:
        yield running


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def test_a_large_image_is_classified_and_one_too_large_for_the_memory_is_rejected(
    stack: OfflineStack,
) -> None:
    ramp = Image.linear_gradient("L").resize((5000, 5000))
    rgba = Image.merge("RGBA", [ramp, ramp.rotate(90), ramp.rotate(180), ramp.rotate(270)])
    api = stack.api()
    fits = api.upload_bytes("large-25mp.png", encoded(rgba, "PNG"))
    # 7000 x 7000 WebP: about 800 MB to decode, more than SerializeImage's 512 MB.
    too_big = api.upload_bytes(
        "huge-49mp.webp",
        encoded(Image.new("RGB", (7000, 7000), (90, 90, 90)), "WEBP", lossless=True),
    )
    records = api.wait_for_records([fits, too_big], timeout=180)

    assert records[fits]["status"] in {"ACCEPTED", "NEEDS_REVIEW"}
    assert (records[fits]["source_format"], records[fits]["source_width"]) == ("PNG", 5000)
    refused = records[too_big]
    assert refused["status"] == "REJECTED"
    assert refused["error_code"] == "ImageTooManyPixels"
    assert "7000x7000 WEBP" in refused["reason"] and "512 MB (its MemorySize)" in refused["reason"]
