"""The server's preprocessing of what decoded: a body it cannot convert is the request's
fault (400), never the model's (500)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.serving.conftest import AppFactory

IMAGE = {"Content-Type": "application/x-image"}


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


def _grey_16_bit(png: bytes, *, big_endian: bool) -> bytes:
    """The picture as an uncompressed 16-bit grey TIFF, stored in the byte order of the
    image's mode ("MM" for I;16B)."""
    grey = Image.open(io.BytesIO(png)).convert("L")
    samples = b"".join(
        (v * 257).to_bytes(2, "big" if big_endian else "little") for v in grey.tobytes()
    )
    out = io.BytesIO()
    Image.frombytes("I;16B" if big_endian else "I;16", grey.size, samples).save(out, "TIFF")
    assert out.getvalue()[:2] == (b"MM" if big_endian else b"II")
    return out.getvalue()


def test_a_big_endian_16_bit_tiff_is_answered_like_the_little_endian_one(
    client: TestClient, motorcycle_png: bytes
) -> None:
    """Its pixels decode as I;16B, which the preprocessing once could not scale (a 500)."""
    answers = [
        client.post(
            "/invocations", content=_grey_16_bit(motorcycle_png, big_endian=big), headers=IMAGE
        )
        for big in (False, True)
    ]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert answers[1].json() == answers[0].json()


def test_a_body_the_preprocessing_cannot_convert_is_a_400_that_names_it(
    client: TestClient, motorcycle_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow lacking an operation for the pixels' mode (as it lacked extrema for I;16B)
    is the body's problem: the model never ran."""

    def missing(self: Image.Image, *args: object) -> object:
        raise ValueError("image has wrong mode")

    body = _grey_16_bit(motorcycle_png, big_endian=False)
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "getextrema", missing)
        response = client.post("/invocations", content=body, headers=IMAGE)
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("CorruptImage: ") and "image has wrong mode" in message
    assert client.post("/invocations", content=body, headers=IMAGE).status_code == 200
