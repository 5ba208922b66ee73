"""The offline stack's AWS emulator serves its own clients, never a page in a browser.

moto's server answers every web origin's CORS preflight and any Host: without the guard a
page open in the user's browser could read the records, plant an upload or wipe the stack
(``POST /moto-api/reset`` needs no preflight), and a DNS-rebinding page could do the same.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from scones.offline.moto_guard import guarded_moto_server
from scones.serving.loopback import host_name, is_loopback_host

REGION = "us-east-1"


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    moto = guarded_moto_server("127.0.0.1", 0)
    moto.start()
    try:
        yield moto.get_host_and_port()
    finally:
        moto.stop()


def request(
    address: tuple[str, int], method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, str]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_the_stacks_own_clients_are_served(server: tuple[str, int]) -> None:
    host, port = server
    for name in ("127.0.0.1", "localhost"):
        s3 = boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=f"http://{name}:{port}",
            aws_access_key_id="offline",
            aws_secret_access_key="offline",
        )
        s3.create_bucket(Bucket=f"images-{name.replace('.', '-')}")
        s3.put_object(Bucket=f"images-{name.replace('.', '-')}", Key="incoming/a.png", Body=b"x")
    assert len(s3.list_buckets()["Buckets"]) == 2
    status, _ = request(server, "POST", "/moto-api/reset", {"Host": f"{host}:{port}"})
    assert status == 200  # the stack resets moto itself between runs


@pytest.mark.parametrize(
    "headers",
    [
        # A page's fetch() (CORS preflight first), and a no-cors POST, which needs none.
        {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        # An <img src> or a navigation: no Origin, but fetch metadata.
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    ],
)
def test_a_browsers_request_is_refused(server: tuple[str, int], headers: dict[str, str]) -> None:
    host, port = server
    boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="offline",
        aws_secret_access_key="offline",
    ).create_bucket(Bucket="images")
    for method, path in (("OPTIONS", "/images"), ("GET", "/images"), ("POST", "/moto-api/reset")):
        status, body = request(server, method, path, {"Host": f"{host}:{port}", **headers})
        assert status == 403 and "serves its own clients only" in body, (method, body)
        assert "Access-Control-Allow-Origin" not in body
    # Nothing was reset: the bucket is still there.
    status, body = request(server, "GET", "/images", {"Host": f"{host}:{port}"})
    assert status == 200, body


def test_a_client_that_is_no_browser_is_served_whatever_its_fetch_mode(
    server: tuple[str, int],
) -> None:
    """Node's built-in fetch (undici) sends ``Sec-Fetch-Mode: cors`` on every request, and
    neither Origin nor Sec-Fetch-Site: an SDK using it is a client like boto3."""
    host, port = server
    status, body = request(server, "GET", "/", {"Host": f"{host}:{port}", "Sec-Fetch-Mode": "cors"})
    assert status == 200, body


def test_a_dns_rebinding_host_is_refused(server: tuple[str, int]) -> None:
    _, port = server
    status, body = request(server, "POST", "/moto-api/reset", {"Host": f"rebind.evil:{port}"})
    assert status == 403 and "not a loopback name" in body


def test_loopback_host_names() -> None:
    assert host_name("[::1]:5000") == "::1" and host_name("localhost:80") == "localhost"
    assert host_name("::1") == "::1"
    for host in ("127.0.0.1:4566", "localhost", "images.localhost:4566", "LOCALHOST.", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("evil.example:4566", "127.0.0.1.evil.example", "localhost.evil", ""):
        assert not is_loopback_host(host), host


def test_a_closed_door_answers_every_request_503_and_the_stacks_own_endpoint_goes_on() -> None:
    """A stopping stack closes its published endpoint first: an upload (or a
    StartExecution) acknowledged after the stop has counted what has no record would be
    lost without a word. Its own clients (poller, Lambda workers, interpreter, the records'
    save) use the other endpoint, which stays open until the emulator stops."""
    moto = guarded_moto_server("127.0.0.1", 0)
    moto.start()
    try:
        published = "http://{}:{}".format(*moto.get_host_and_port())
        own = "http://{}:{}".format(*moto.own_host_and_port())
        assert own != published

        def client(service: str, endpoint: str) -> Any:
            return boto3.client(
                service,
                region_name=REGION,
                endpoint_url=endpoint,
                aws_access_key_id="offline",
                aws_secret_access_key="offline",
                config=Config(retries={"total_max_attempts": 1}),
            )

        client("s3", published).create_bucket(Bucket="images")
        assert moto.close_door(5) == 0
        calls: list[Callable[[], Any]] = [
            lambda: client("s3", published).put_object(
                Bucket="images", Key="incoming/a", Body=b"x"
            ),
            lambda: client("stepfunctions", published).start_execution(
                stateMachineArn=f"arn:aws:states:{REGION}:123456789012:stateMachine:m"
            ),
            lambda: client("dynamodb", published).list_tables(),
            lambda: client("sqs", published).list_queues(),
        ]
        for call in calls:
            with pytest.raises(ClientError) as refused:
                call()
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
            assert refused.value.response["Error"]["Message"] == "the offline stack is stopping"
        s3 = client("s3", own)
        s3.put_object(Bucket="images", Key="capture/b", Body=b"y")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="images")["Contents"]] == ["capture/b"]
    finally:
        moto.stop()


def test_an_endpoint_that_cannot_be_had_fails_the_start_instead_of_hanging_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto's start() waits for its server thread with no timeout: the stack's own
    endpoint failing to bind (no descriptor left) must be raised there, and the
    published port given back."""
    import errno
    import socket
    import threading

    import werkzeug.serving

    real = werkzeug.serving.make_server

    def make_server(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if port == 0:  # the stack's own endpoint
            raise OSError(errno.EMFILE, "Too many open files")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(werkzeug.serving, "make_server", make_server)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = guarded_moto_server("127.0.0.1", port)
    raised: list[BaseException] = []

    def start() -> None:
        try:
            moto.start()
        except OSError as exc:
            raised.append(exc)

    starting = threading.Thread(target=start, daemon=True)
    starting.start()
    starting.join(10)
    assert not starting.is_alive(), "the start hung"
    assert [getattr(exc, "errno", None) for exc in raised] == [errno.EMFILE]
    with socket.socket() as again:  # the published port is free again
        again.bind(("127.0.0.1", port))
