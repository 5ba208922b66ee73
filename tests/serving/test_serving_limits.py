"""Inference slots, the pixel limit and the declared format, on the real model.

The pixel limit is proven three ways: the refusal names the numbers, a spy on
Pillow's image allocation (``ImageFile.load_prepare``) sees none, and a real server
process's peak memory (``VmHWM``) does not grow. ``tracemalloc`` cannot prove it:
Pillow allocates pixels with C ``malloc``, which it does not trace.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from scones.model.artifact import OnnxClassifier
from scones.serving.app import create_app
from scones.serving.defaults import PIXELS_PER_INPUT_PIXEL
from scones.serving.server import ModelServer
from tests.serving.conftest import (
    ENDPOINT,
    MAX_BODY,
    MODEL_DIR,
    AppFactory,
    ServeProcess,
    runtime_client,
)

PNG = {"Content-Type": "image/png"}
RUNTIME_PATH = f"/endpoints/{ENDPOINT}/invocations"
# The shipped model's input is 32x32: 64x per side.
DEFAULT_LIMIT = 2048 * 2048


def one_colour_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of one colour, compressed row by row.

    Pillow would have to allocate the whole image to write it, which is what the
    tests must not do; the format is simple enough to write directly.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then all-zero (black) pixels
    compressor = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 20) // len(row))
    pieces = []
    for start in range(0, height, rows_per_piece):
        pieces.append(compressor.compress(row * min(rows_per_piece, height - start)))
    pieces.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(pieces))
        + chunk(b"IEND", b"")
    )


@cache
def bomb(width: int, height: int) -> bytes:
    return one_colour_png(width, height)


def encoded(png: bytes, image_format: str) -> bytes:
    out = io.BytesIO()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image_format == "MPO":
        # What a camera writes: a JPEG with a second picture (Pillow reads it as MPO).
        mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(out, format="MPO", save_all=True, append_images=[mirrored])
    else:
        image.save(out, format=image_format)
    return out.getvalue()


def png_of(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 128).save(out, format="PNG")
    return out.getvalue()


# -- inference slots -----------------------------------------------------------------


class Gated:
    """The real model behind a gate: requests stay inside the model until it opens."""

    def __init__(self, model: OnnxClassifier) -> None:
        self.model = model
        self.labels = model.labels
        self.manifest = model.manifest
        self.input_size = model.input_size
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered = 0

    def predict_images(self, images: list[Image.Image]) -> np.ndarray:
        with self._lock:
            self.inside += 1
            self.entered += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            assert self.gate.wait(30), "the test never opened the gate"
            return self.model.predict_images(images)
        finally:
            with self._lock:
                self.inside -= 1


def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_at_most_n_requests_are_in_inference_and_the_rest_wait_or_are_throttled(
    make_app: AppFactory, classifier: OnnxClassifier, sample_pngs: list[bytes]
) -> None:
    model = Gated(classifier)
    wait_s = 2.0  # long enough for a loaded machine to free a slot while one waits
    server = ModelServer(make_app(classifier=model, max_concurrency=2, queue_wait_s=wait_s))
    base_url = server.start()

    def post(body: bytes) -> httpx.Response:
        return httpx.post(f"{base_url}/invocations", content=body, headers=PNG, timeout=30)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            holding = [pool.submit(post, png) for png in sample_pngs[:2]]
            wait_until(lambda: model.inside == 2)

            # Both slots are taken: the next request waits its bounded time, then is refused.
            started = time.monotonic()
            refused = post(sample_pngs[2])
            waited = time.monotonic() - started
            assert refused.status_code == 429
            assert refused.json()["message"] == (
                "the model server is busy: the request waited 2 s for one of its 2 "
                "inference slots, behind 0 other waiting requests; retry with backoff"
            )
            # It waited its bounded time first (refused while the gate stays shut, so the
            # wait did not last forever); no upper bound in seconds: machines are noisy.
            assert waited >= wait_s - 0.05
            with pytest.raises(ClientError) as raised:
                runtime_client(base_url).invoke_endpoint(
                    EndpointName=ENDPOINT, ContentType="image/png", Body=sample_pngs[3]
                )
            # SageMaker returns the container's 429 as ModelError (424), the status inside.
            error = raised.value.response
            assert error["Error"]["Code"] == "ModelError"
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
            assert error["OriginalStatusCode"] == 429
            assert model.entered == 2  # refused requests never reached a worker thread

            # A request that finds the slots taken is served once one frees within its wait.
            waiting = pool.submit(post, sample_pngs[4])
            time.sleep(0.1)
            assert not waiting.done() and model.entered == 2
            model.gate.set()
            answers = [f.result() for f in [*holding, waiting]]
        # Then a stream of requests from two clients: every one served, never more than
        # two inside (a burst wider than the slots is the refusal case above).
        with ThreadPoolExecutor(max_workers=2) as pair:
            answers += list(pair.map(post, sample_pngs))
    finally:
        server.stop()
    bodies = [*sample_pngs[:2], sample_pngs[4], *sample_pngs]
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert [a.json() for a in answers] == [classifier.predict_bytes(b) for b in bodies]
    assert model.most_inside == 2


def test_bodies_held_at_once_stay_within_the_budget_and_the_rest_are_throttled(
    make_app: AppFactory, classifier: OnnxClassifier, sample_pngs: list[bytes]
) -> None:
    """Bodies are read before an inference slot is taken, so the slots alone bound CPU,
    not memory: a burst of large bodies is refused as busy (429, retried) once the bodies
    held pass the budget, and the budget is given back as requests end."""
    model = Gated(classifier)
    first, second, third = sample_pngs[:3]
    app = make_app(
        classifier=model,
        max_concurrency=1,
        queue_wait_s=20,
        max_buffered_bytes=len(first) + len(second),
    )
    server = ModelServer(app)
    base_url = server.start()

    def post(body: bytes) -> httpx.Response:
        return httpx.post(f"{base_url}/invocations", content=body, headers=PNG, timeout=30)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            # One in inference, one waiting for the slot: both bodies held.
            holding = [pool.submit(post, body) for body in (first, second)]
            wait_until(lambda: model.inside == 1)
            wait_until(lambda: app.state.endpoint.bodies.held == len(first) + len(second))
            refused = post(third)  # at once: it does not wait for a slot
            assert refused.status_code == 429
            assert refused.json()["message"] == (
                f"the model server is busy: {len(first) + len(second)} bytes of request "
                f"bodies are being received or classified, and {len(third)} more would pass "
                f"its {len(first) + len(second)}-byte budget; retry with backoff"
            )
            # Refused before its body was read: the connection closes, so a client that
            # sent Expect: 100-continue never sends the body into the next request.
            assert refused.headers["connection"] == "close"
            model.gate.set()
            answers = [f.result() for f in holding]
        assert app.state.endpoint.bodies.held == 0
        # Connections that declare the largest body and send none of it hold nothing:
        # bytes are held as they arrive, so idle sockets cannot lock every client out.
        host, port = base_url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(4)]
        try:
            for connection in idle:
                connection.sendall(
                    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    + f"Content-Length: {len(first) + len(second)}\r\n\r\n".encode()
                )
            time.sleep(0.3)
            assert app.state.endpoint.bodies.held == 0
            answers.append(post(third))
        finally:
            for connection in idle:
                connection.close()
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert model.entered == 3


def test_inference_slot_settings_are_checked(classifier: OnnxClassifier) -> None:
    options: dict[str, Any] = {"endpoint_name": ENDPOINT, "max_body_bytes": MAX_BODY}
    with pytest.raises(ValueError, match="at least 1"):
        create_app(classifier, max_concurrency=0, **options)
    with pytest.raises(ValueError, match="must not be negative"):
        create_app(classifier, queue_wait_s=-1, **options)
    with pytest.raises(ValueError, match="body_timeout_s must be positive"):
        create_app(classifier, body_timeout_s=0, **options)
    with pytest.raises(ValueError, match="the body budget must be at least 1 byte"):
        create_app(classifier, max_buffered_bytes=0, **options)


# -- the declared format -------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_format", "declared", "suggested"),
    [
        ("PNG", "image/jpeg", "image/png or application/x-image"),
        ("JPEG", "image/png", "image/jpeg or application/x-image"),
        ("MPO", "image/png", "image/jpeg or application/x-image"),
        ("GIF", "image/png", "application/x-image"),
        ("WEBP", "image/jpeg", "application/x-image"),
        ("BMP", "image/png", "application/x-image"),
    ],
)
def test_a_body_in_another_format_than_declared_is_refused_naming_both(
    make_app: AppFactory,
    bicycle_png: bytes,
    image_format: str,
    declared: str,
    suggested: str,
) -> None:
    body = encoded(bicycle_png, image_format)
    assert Image.open(io.BytesIO(body)).format == image_format
    expected = (
        f"Content-Type {declared} does not match the body, which is a {image_format} image; "
        f"send it as {suggested}"
    )
    headers = {"Content-Type": f"{declared}; charset=binary"}
    with TestClient(make_app()) as client:
        response = client.post("/invocations", content=body, headers=headers)
        assert response.status_code == 415
        assert response.json()["message"] == expected
        wrapped = client.post(RUNTIME_PATH, content=body, headers=headers)
        assert wrapped.status_code == 424
        assert wrapped.json()["OriginalStatusCode"] == 415
        assert wrapped.json()["OriginalMessage"] == response.text


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP"])
def test_application_x_image_accepts_every_supported_format(
    make_app: AppFactory, classifier: OnnxClassifier, bicycle_png: bytes, image_format: str
) -> None:
    body = encoded(bicycle_png, image_format)
    with TestClient(make_app()) as client:
        response = client.post(
            "/invocations", content=body, headers={"Content-Type": "application/x-image"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == classifier.predict_bytes(body)
        if image_format in {"JPEG", "MPO"}:
            # A multi-picture JPEG is a JPEG to its declared type as well.
            jpeg = client.post("/invocations", content=body, headers={"Content-Type": "image/jpeg"})
            assert jpeg.status_code == 200, jpeg.text


# -- the pixel limit -----------------------------------------------------------------


def test_the_bomb_builder_writes_real_pngs() -> None:
    image = Image.open(io.BytesIO(one_colour_png(37, 5)))
    image.load()
    assert (image.format, image.mode, image.size) == ("PNG", "1", (37, 5))
    assert image.getextrema() == (0, 0)


def test_the_default_pixel_limit_follows_the_model_input_size(
    classifier: OnnxClassifier,
) -> None:
    options: dict[str, Any] = {"endpoint_name": ENDPOINT, "max_body_bytes": MAX_BODY}
    height, width = classifier.manifest.input_size
    shipped = create_app(classifier, **options).state.endpoint.max_image_pixels
    assert shipped == height * width * PIXELS_PER_INPUT_PIXEL == DEFAULT_LIMIT

    class Wider:
        """The real model under a manifest that declares a 48x64 input."""

        labels = classifier.labels
        input_size = (48, 64)

        def predict_images(self, images: list[Image.Image]) -> np.ndarray:
            return classifier.predict_images(images)

    wider = create_app(Wider(), **options).state.endpoint.max_image_pixels
    assert wider == 48 * 64 * PIXELS_PER_INPUT_PIXEL
    overridden = create_app(classifier, max_image_pixels=100, **options)
    assert overridden.state.endpoint.max_image_pixels == 100


def test_an_image_at_the_default_limit_is_served_and_one_pixel_column_more_is_not(
    classifier: OnnxClassifier,
) -> None:
    app = create_app(classifier, endpoint_name=ENDPOINT, max_body_bytes=MAX_BODY)
    with TestClient(app) as client:
        at_limit = client.post("/invocations", content=png_of((2048, 2048)), headers=PNG)
        assert at_limit.status_code == 200, at_limit.text
        over = client.post("/invocations", content=png_of((2049, 2048)), headers=PNG)
        assert over.status_code == 400
        assert over.json()["message"] == (
            f"ImageTooManyPixels: The image is 2049x2048 = {2049 * 2048} pixels; "
            f"the limit is {DEFAULT_LIMIT} pixels."
        )


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Sizes of the images Pillow allocates to decode into (every format's load goes here)."""
    seen: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load_prepare

    def spy(self: ImageFile.ImageFile) -> None:
        seen.append(self.size)
        original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", spy)
    yield seen


@pytest.mark.parametrize(
    ("width", "height", "words"),
    [
        (5000, 4000, f"The image is 5000x4000 = 20000000 pixels; the limit is {DEFAULT_LIMIT}"),
        # Past twice Pillow's own limit Image.open itself refuses, still from the header.
        (20000, 20000, f"declares 400000000 pixels; the limit is {DEFAULT_LIMIT} pixels"),
    ],
)
def test_pixel_bombs_are_refused_from_the_header_without_allocating(
    classifier: OnnxClassifier,
    allocations: list[tuple[int, int]],
    bicycle_png: bytes,
    width: int,
    height: int,
    words: str,
) -> None:
    body = bomb(width, height)
    assert len(body) < 64 * 1024  # tens of kilobytes claim tens of megapixels or more
    app = create_app(classifier, endpoint_name=ENDPOINT, max_body_bytes=MAX_BODY)
    with TestClient(app) as client:
        for path in ("/invocations", RUNTIME_PATH):
            response = client.post(path, content=body, headers=PNG)
            answer = response.json()
            if path == RUNTIME_PATH:
                answer = json.loads(answer["OriginalMessage"])
            message = answer["message"]
            assert words in message
            assert f"the limit is {DEFAULT_LIMIT} pixels" in message
        assert allocations == []
        # The spy does see decoding: a real image is allocated at its size.
        assert client.post("/invocations", content=bicycle_png, headers=PNG).status_code == 200
        assert allocations == [(32, 32)]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def post_measured(server: ServeProcess, body: bytes) -> tuple[httpx.Response, float]:
    """POST ``body`` and say how far it raised the server's peak memory, in MB (``VmHWM``)."""
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to the current size
    before = _status_kb(pid, "VmRSS")
    response = httpx.post(f"{server.base_url}/invocations", content=body, headers=PNG, timeout=60)
    return response, (_status_kb(pid, "VmHWM") - before) / 1024


def test_a_pixel_bomb_does_not_raise_the_server_processs_peak_memory(bicycle_png: bytes) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to read and reset a process's peak memory")

    def serve(*flags: str) -> ServeProcess:
        command = ["-m", "scones.serving", "--model", str(MODEL_DIR), "--host", "127.0.0.1"]
        command += ["--port", "0"]
        return ServeProcess([sys.executable, *command, "--endpoint-name", ENDPOINT, *flags])

    guarded = serve("--log-level", "warning")
    # The former default: the template's MaxImagePixels (25 Mpx), shown here to decode the bomb.
    control = serve("--log-level", "warning", "--max-image-pixels", "25000000")
    try:
        growth: dict[str, float] = {}
        for name, server in (("guarded", guarded), ("control", control)):
            server.wait_ready()
            warm, _ = post_measured(server, bicycle_png)  # model and pools are loaded
            assert warm.status_code == 200
            answer, growth[name] = post_measured(server, bomb(5000, 4000))
            assert answer.status_code == (400 if name == "guarded" else 200), answer.text
        huge, growth["guarded 400 Mpx"] = post_measured(guarded, bomb(20000, 20000))
        assert huge.status_code == 400
    finally:
        guarded.kill()
        control.kill()
    # Decoding 20 Mpx costs 19 MB (mode 1, a byte a pixel); the preprocessing adds strips
    # only, no full-size RGB copy (scones_core.preprocess).
    assert growth["control"] > 15, growth
    assert growth["guarded"] < 8, growth
    assert growth["guarded 400 Mpx"] < 8, growth
