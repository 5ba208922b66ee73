"""How the server frames its answers to requests HTTP clients and proxies get wrong.

Raw sockets against a real server on 127.0.0.1: a refusal sent before the body is
read closes the connection (so nothing sent next is read as a request), a request
whose framing is ambiguous is refused, and a body still arriving when the server
stops gets a retryable 503 rather than uvicorn's bare 500.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from scones.serving.command import ServeError, container_defaults
from scones.serving.server import ModelServer
from tests.serving.conftest import (
    ENDPOINT,
    MAX_BODY,
    AppFactory,
    LiveServer,
    read_records,
    runtime_client,
)

PING = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
def server(make_app: AppFactory) -> Iterator[ModelServer]:
    running = ModelServer(make_app(), graceful_shutdown_s=1)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def exchange(port: int, data: bytes, wait_s: float = 10.0) -> bytes:
    """Send ``data``, then read until the server closes the connection (or ``wait_s``)."""
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        sock.settimeout(wait_s)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            raise AssertionError(
                f"the server kept the connection open; it sent {bytes(answer)!r}"
            ) from None
    return bytes(answer)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Each response in ``raw``: status, headers (lower-cased names) and body."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def post_head(path: str, headers: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        pytest.param(
            f"Content-Type: image/png\r\nContent-Length: {MAX_BODY + 1}\r\n"
            "Expect: 100-continue\r\n",
            413,
            f"request body is {MAX_BODY + 1} bytes",
            id="over-the-limit-expect-100-continue",
        ),
        pytest.param(
            "Content-Type: text/plain\r\nContent-Length: 5\r\n",
            415,
            "unsupported Content-Type 'text/plain'",
            id="unsupported-content-type",
        ),
        pytest.param(
            "Content-Type: image/png\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n",
            415,
            "unsupported Content-Encoding 'gzip'",
            id="content-encoding",
        ),
        pytest.param(
            "Content-Type: image/png\r\nContent-Encoding: identity\r\n"
            "Content-Encoding: gzip\r\nContent-Length: 5\r\n",
            415,
            "unsupported Content-Encoding 'identity, gzip'",
            id="content-encoding-on-two-lines",
        ),
        pytest.param(
            "Content-Type: image/png\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n",
            400,
            "the header Content-Type was sent 2 times; send it once",
            id="content-type-on-two-lines",
        ),
        pytest.param(
            "Content-Type: image/png\r\nAccept: text/csv\r\nContent-Length: 5\r\n",
            406,
            "cannot answer with Accept 'text/csv'",
            id="unacceptable-accept",
        ),
        pytest.param(
            "Content-Type: image/png\r\n",
            411,
            "no Content-Length",
            id="no-length",
        ),
    ],
)
def test_a_refusal_before_the_body_closes_the_connection(
    server: ModelServer, headers: str, status: int, named: str
) -> None:
    # The client's next request follows at once; it must not be read as the body or as a
    # request: the refusal says Connection: close, and the server closes.
    raw = exchange(server.port, post_head("/invocations", headers) + PING)
    ((code, response_headers, body),) = responses(raw)
    assert code == status
    assert response_headers["connection"] == "close"
    assert named in json.loads(body)["message"]


def test_both_transfer_encoding_and_content_length_are_refused(server: ModelServer) -> None:
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    raw = exchange(
        server.port,
        post_head(
            "/invocations",
            "Content-Type: image/png\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        )
        + chunked
        + PING,
    )
    ((code, headers, body),) = responses(raw)  # the pipelined ping is not answered
    assert code == 400 and headers["connection"] == "close"
    assert json.loads(body)["message"] == (
        "the request has both Transfer-Encoding and Content-Length; send one of them"
    )


def test_unknown_routes_and_methods_answer_in_the_servers_shape(server: ModelServer) -> None:
    head = exchange(server.port, b"HEAD /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")  # no body
    raw = exchange(
        server.port,
        b"DELETE /ping HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    delete, nowhere = responses(raw)
    assert delete[0] == 405
    assert json.loads(delete[2]) == {"message": "DELETE /ping: method not allowed"}
    assert nowhere[0] == 404
    assert json.loads(nowhere[2]) == {"message": "GET /nowhere: no such route"}
    # A trailing slash is another route, not a redirect a POST client would not follow.
    slash = exchange(
        server.port, post_head("/invocations/", "Content-Length: 0\r\nConnection: close\r\n")
    )
    assert responses(slash)[0][0] == 404


def test_a_body_still_arriving_at_shutdown_gets_a_retryable_503(server: ModelServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            post_head("/invocations", "Content-Type: image/png\r\nContent-Length: 5000\r\n")
        )
        sock.sendall(b"\x89PNG" + bytes(96))
        deadline = time.monotonic() + 10
        while server.app.state.endpoint.bodies.held < 100:  # the body read has started
            assert time.monotonic() < deadline, "the server never read the body's first bytes"
            time.sleep(0.01)
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        sock.settimeout(15)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
        stopping.join(30)
    ((code, headers, body),) = responses(bytes(answer))
    assert code == 503 and headers["connection"] == "close"
    assert json.loads(body)["message"] == (
        "the model server is shutting down (100 bytes of the body had arrived); "
        "send the request again"
    )


@pytest.mark.parametrize(
    ("parameter", "value", "problem", "accepted"),
    [
        (
            "InferenceId",
            "i" * 65,
            "InferenceId (header X-Amzn-SageMaker-Inference-Id) is 65 characters; "
            "at most 64 are allowed",
            "i" * 64,
        ),
        (
            "InferenceId",
            "id\twith-a-tab",
            "InferenceId (header X-Amzn-SageMaker-Inference-Id) 'id\\twith-a-tab' does not "
            "match the pattern \\A\\S[\\x20-\\x7e]*\\Z",
            "id with a space",
        ),
        (
            "CustomAttributes",
            "a" * 1025,
            "CustomAttributes (header X-Amzn-SageMaker-Custom-Attributes) is 1025 characters; "
            "at most 1024 are allowed",
            "a" * 1024,
        ),
    ],
)
def test_the_runtime_route_refuses_what_sagemaker_refuses(
    server: ModelServer,
    bicycle_png: bytes,
    parameter: str,
    value: str,
    problem: str,
    accepted: str,
) -> None:
    """botocore checks only minimum lengths; SageMaker checks the rest of its model."""
    client = runtime_client(server.base_url)
    with pytest.raises(ClientError) as raised:
        client.invoke_endpoint(
            EndpointName=ENDPOINT, ContentType="image/png", Body=bicycle_png, **{parameter: value}
        )
    assert raised.value.response["Error"] == {"Code": "ValidationError", "Message": problem}
    answered = client.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="image/png", Body=bicycle_png, **{parameter: accepted}
    )
    assert answered["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_the_container_takes_its_concurrency_from_sagemaker_model_server_workers() -> None:
    assert container_defaults({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}).max_concurrency == 3
    assert container_defaults({"SAGEMAKER_MODEL_SERVER_WORKERS": ""}).max_concurrency is None
    for bad in ("0", "two", "-1"):
        with pytest.raises(ServeError) as raised:
            container_defaults({"SAGEMAKER_MODEL_SERVER_WORKERS": bad})
        assert str(raised.value) == (
            f"SAGEMAKER_MODEL_SERVER_WORKERS={bad!r} is not a positive whole number"
        )


@pytest.mark.parametrize(
    ("path", "headers", "error"),
    [
        ("/endpoints/elsewhere/invocations", "", "Endpoint elsewhere not found"),
        (
            f"/endpoints/{ENDPOINT}/invocations",
            "X-Amzn-SageMaker-Target-Variant: nope\r\n",
            "nope",
        ),
    ],
    ids=["unknown-endpoint", "unknown-variant"],
)
def test_a_runtime_refusal_before_the_body_closes_the_connection(
    server: ModelServer, path: str, headers: str, error: str
) -> None:
    head = post_head(
        path, f"Content-Type: image/png\r\nContent-Length: 100\r\nExpect: 100-continue\r\n{headers}"
    )
    ((code, response_headers, body),) = responses(exchange(server.port, head + PING))
    assert code == 400 and response_headers["connection"] == "close"
    assert response_headers["x-amzn-errortype"] == "ValidationError"
    assert error in json.loads(body)["message"]


def test_a_header_sent_on_two_lines_is_read_as_http_says(
    live_server: LiveServer, bicycle_png: bytes, tmp_path: Path
) -> None:
    """RFC 9110 section 5.3: a list field's lines are one comma-joined value (an empty one is
    no value, 5.6.1); a field that may be sent once is refused on two lines, so the
    InferenceId checked is the one captured."""
    path = f"/endpoints/{ENDPOINT}/invocations"
    length = f"Content-Type: image/png\r\nContent-Length: {len(bicycle_png)}\r\n"
    accepted = exchange(
        live_server.server.port,
        post_head(
            path,
            f"{length}Accept: text/csv\r\nAccept:\r\nAccept: application/json\r\n"
            "X-Amzn-SageMaker-Inference-Id: kept\r\nConnection: close\r\n",
        )
        + bicycle_png,
    )
    ((code, _, _),) = responses(accepted)
    assert code == 200
    empty = exchange(
        live_server.server.port,
        post_head(path, f"{length}Accept:\r\nAccept:\r\nConnection: close\r\n") + bicycle_png,
    )
    assert responses(empty)[0][0] == 200  # no Accept at all, as one empty line is
    refused = exchange(
        live_server.server.port,
        post_head(
            path,
            f"{length}X-Amzn-SageMaker-Inference-Id: {'i' * 300}\r\n"
            "X-Amzn-SageMaker-Inference-Id: short\r\n",
        )
        + bicycle_png,
    )
    ((code, headers, body),) = responses(refused)
    assert (code, headers["x-amzn-errortype"]) == (400, "ValidationError")
    assert json.loads(body)["message"] == (
        "the header X-Amzn-SageMaker-Inference-Id was sent 2 times; send it once"
    )
    live_server.server.stop()
    captured = [r["eventMetadata"].get("inferenceId") for r in read_records(tmp_path / "capture")]
    assert captured == ["kept", None]  # the two requests answered; not the refused one
