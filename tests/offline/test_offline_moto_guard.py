"""The offline stack's AWS emulator serves its own clients, never a page in a browser.

moto's server answers every web origin's CORS preflight and any Host: without the guard a
page open in the user's browser could read the records, plant an upload or wipe the stack
(``POST /moto-api/reset`` needs no preflight), and a DNS-rebinding page could do the same.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import boto3
import pytest

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
