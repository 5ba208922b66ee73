"""Slow and vanishing clients against a real server on 127.0.0.1, with raw sockets.

A trickling client must be cut off at its deadline (head or body) while a normal
client on another connection is served at once; a client hanging up mid-body
must leave no traceback behind.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from scones.model.artifact import OnnxClassifier
from scones.serving.server import ModelServer
from tests.serving.conftest import ENDPOINT, AppFactory, LiveServer

# Long enough that a normal request, sent while the tricklers hold their connections, is
# answered before any is cut off on a loaded machine.
HEAD_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
# How late a cut-off may come on a shared, loaded machine (timers, thread scheduling).
SLACK_S = 1.5
DRIP_INTERVAL_S = 0.1
# The earliest a cut may come as the client times it: its clock starts at its first byte,
# which a loaded machine can send well after the server's deadline started.
EARLIEST_CUT_S = HEAD_TIMEOUT_S / 2
RUNTIME_PATH = f"/endpoints/{ENDPOINT}/invocations"


@pytest.fixture
def guarded(make_app: AppFactory) -> Iterator[ModelServer]:
    server = ModelServer(make_app(body_timeout_s=BODY_TIMEOUT_S), header_timeout_s=HEAD_TIMEOUT_S)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Trickled:
    """What a trickling client saw: every byte the server sent, and when it hung up."""

    answer: bytes
    seconds: float  # from the first trickled byte (or the connect, without one)
    sent: int


def trickle(port: int, prefix: bytes, drip: bytes, give_up_s: float = 15.0) -> Trickled:
    """Send ``prefix`` at once, then ``drip`` one byte per interval until the server hangs up."""
    answer = bytearray()
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(prefix)
        started = time.monotonic()
        deadline = started + give_up_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], DRIP_INTERVAL_S)
            try:
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        return Trickled(bytes(answer), time.monotonic() - started, sent)
                    answer += data
                    continue
                if drip:
                    if not sent:
                        started = time.monotonic()
                    sock.sendall(drip[sent % len(drip) : sent % len(drip) + 1])
                    sent += 1
            except (ConnectionResetError, BrokenPipeError):
                return Trickled(bytes(answer), time.monotonic() - started, sent)
    raise AssertionError(f"the server kept a trickling connection open for {give_up_s} s")


def request_head(path: str, content_length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


def served_meanwhile(
    server: ModelServer, png: bytes, expected: object, tricklers: list[Future[Trickled]]
) -> None:
    """A normal request, sent while the tricklers hold their connections, is answered at once
    (``expected`` is worked out before the tricklers start: their clocks are running)."""
    with httpx.Client(timeout=10) as client:
        time.sleep(3 * DRIP_INTERVAL_S)
        assert not any(f.done() for f in tricklers), "a trickler finished before the request"
        response = client.post(
            f"{server.base_url}/invocations", content=png, headers={"Content-Type": "image/png"}
        )
        # Answered while every trickler still held its connection: it did not wait behind
        # them (checked at once: the rest of the tricklers' time is not the request's).
        waited = any(f.done() for f in tricklers)
    assert response.status_code == 200, response.text
    assert not waited, "the normal request waited for the tricklers"
    assert response.json() == expected


@pytest.mark.parametrize("connection", ["fresh", "kept alive"])
def test_a_trickled_request_head_is_cut_off_while_others_are_served(
    guarded: ModelServer, classifier: OnnxClassifier, bicycle_png: bytes, connection: str
) -> None:
    first = b""
    if connection == "kept alive":
        # One complete request first: the deadline applies to every head on a connection.
        first = request_head("/invocations", len(bicycle_png)) + bicycle_png
    head = b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
    expected = classifier.predict_bytes(bicycle_png)
    with ThreadPoolExecutor(max_workers=3) as pool:
        tricklers = [pool.submit(trickle, guarded.port, first, head) for _ in range(3)]
        served_meanwhile(guarded, bicycle_png, expected, tricklers)
        results = [f.result() for f in tricklers]
    for result in results:
        assert EARLIEST_CUT_S <= result.seconds <= HEAD_TIMEOUT_S + SLACK_S, result
        assert 0 < result.sent < len(head)
        if connection == "kept alive":
            assert result.answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"HTTP/1.1 408 Request Timeout\r\n" in result.answer
        assert result.answer.endswith(b"request head not received in time\n")


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(
    guarded: ModelServer,
) -> None:
    result = trickle(guarded.port, b"", b"")
    assert EARLIEST_CUT_S <= result.seconds <= HEAD_TIMEOUT_S + SLACK_S
    # Nothing was asked, so nothing is answered: the connection is just closed.
    assert result.answer == b""


@pytest.mark.parametrize("path", ["/invocations", RUNTIME_PATH])
def test_a_trickled_body_is_cut_off_with_408_while_others_are_served(
    guarded: ModelServer, classifier: OnnxClassifier, bicycle_png: bytes, path: str
) -> None:
    head = request_head(path, len(bicycle_png))
    expected = classifier.predict_bytes(bicycle_png)
    with ThreadPoolExecutor(max_workers=2) as pool:
        tricklers = [pool.submit(trickle, guarded.port, head, bicycle_png) for _ in range(2)]
        served_meanwhile(guarded, bicycle_png, expected, tricklers)
        results = [f.result() for f in tricklers]
    for result in results:
        assert BODY_TIMEOUT_S - 0.2 <= result.seconds <= BODY_TIMEOUT_S + SLACK_S, result
        assert 0 < result.sent < len(bicycle_png)
        status_line, _, rest = result.answer.partition(b"\r\n")
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout"
        header_lines = headers.lower().split(b"\r\n")
        assert b"connection: close" in header_lines
        message = json.loads(body)["message"]
        assert f"request body not received within {BODY_TIMEOUT_S:g} s" in message
        arrived = int(message.rsplit("(", 1)[1].split()[0])
        assert 0 < arrived <= result.sent
        if path == RUNTIME_PATH:
            # botocore raises this code as a ClientError and retries it as transient.
            assert b"x-amzn-errortype: requesttimeoutexception" in header_lines


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n", b"200 OK"),
        # (A refused Content-Type closes the connection instead: test_serving_http_framing.py.)
        (
            b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000\r\n\r\n",
            b"404 Not Found",
        ),
    ],
)
def test_a_trickled_body_the_app_never_reads_is_cut_off_after_the_answer(
    guarded: ModelServer, classifier: OnnxClassifier, bicycle_png: bytes, head: bytes, status: bytes
) -> None:
    """uvicorn drains an unread body after the answer; the head deadline bounds that too."""
    expected = classifier.predict_bytes(bicycle_png)
    with ThreadPoolExecutor(max_workers=2) as pool:
        tricklers = [pool.submit(trickle, guarded.port, head, b"x") for _ in range(2)]
        served_meanwhile(guarded, bicycle_png, expected, tricklers)
        results = [f.result() for f in tricklers]
    for result in results:
        # Answered at once, then the drain runs into the deadline.
        assert EARLIEST_CUT_S <= result.seconds <= HEAD_TIMEOUT_S + SLACK_S, result
        assert result.answer.startswith(b"HTTP/1.1 " + status + b"\r\n")
        assert 0 < result.sent < 5000


@pytest.mark.parametrize("path", ["/invocations", RUNTIME_PATH])
def test_a_client_hanging_up_mid_body_leaves_no_traceback(
    live_server: LiveServer,
    bicycle_png: bytes,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    path: str,
) -> None:
    caplog.set_level(logging.INFO)
    port = live_server.server.port
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request_head(path, len(bicycle_png)) + bicycle_png[:100])
            time.sleep(0.2)  # the app is now reading the body
    deadline = time.monotonic() + 10
    noticed: list[logging.LogRecord] = []
    while len(noticed) < 3 and time.monotonic() < deadline:
        noticed = [r for r in caplog.records if "disconnected before sending" in r.getMessage()]
        time.sleep(0.05)
    assert len(noticed) == 3, caplog.text
    assert all(r.levelno == logging.INFO and path in r.getMessage() for r in noticed)
    response = httpx.post(
        f"{live_server.base_url}{path}", content=bicycle_png, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text
    assert "Traceback" not in capfd.readouterr().err
