"""``scones serve`` and ``scones bench`` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scones.cli.main import build_parser, main
from scones.cli.serve import settings_from_args
from scones.serving.defaults import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_QUEUE_WAIT_S,
    RUNTIME_MAX_PAYLOAD_BYTES,
)
from scones.serving.server import bind_socket
from scones.template_params import parameter_default
from tests.serving.conftest import MODEL_DIR, ServeProcess


def scones(*args: str) -> list[str]:
    return [sys.executable, "-m", "scones.cli.main", *args]


@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.kill()


def test_serve_runs_answers_and_flushes_capture_on_ctrl_c(
    processes: list[ServeProcess], tmp_path: Path, bicycle_png: bytes
) -> None:
    server = ServeProcess(
        scones(
            "serve",
            "--model", str(MODEL_DIR),
            "--port", "0",
            "--capture-dest", str(tmp_path),
            "--capture-flush-seconds", "3600",
            "--enable-faults",
        )
    )  # fmt: skip
    processes.append(server)
    base_url = server.wait_ready()
    endpoint = parameter_default("EndpointName")
    assert httpx.get(f"{base_url}/ping").json()["endpoint"] == endpoint
    for _ in range(2):
        response = httpx.post(
            f"{base_url}/endpoints/{endpoint}/invocations",
            content=bicycle_png,
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200
    assert httpx.get(f"{base_url}/_faults").status_code == 200
    assert not list(tmp_path.rglob("*.jsonl"))  # buffered until shutdown
    assert server.stop(signal.SIGINT) == 0
    # One file per hour the two requests fell in: two when the clock crossed an hour.
    files = list(tmp_path.rglob("*.jsonl"))
    assert len(files) in (1, 2)
    assert sum(len(f.read_text().splitlines()) for f in files) == 2
    stopped = f"stopped; 2 capture records in {len(files)} files (0 errors)"
    assert stopped in "".join(server.stderr)


def test_serve_stops_cleanly_on_sigterm(processes: list[ServeProcess]) -> None:
    server = ServeProcess(scones("serve", "--model", str(MODEL_DIR), "--port", "0"))
    processes.append(server)
    base_url = server.wait_ready()
    assert httpx.get(f"{base_url}/_faults").status_code == 404
    assert server.stop(signal.SIGTERM) == 0
    stderr = "".join(server.stderr)
    assert "Application shutdown complete" in stderr
    assert "scones serve: stopped" in stderr


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    holder = bind_socket("127.0.0.1", 0)
    try:
        port = holder.getsockname()[1]
        status = main(["serve", "--model", str(MODEL_DIR), "--port", str(port)])
    finally:
        holder.close()
    assert status == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "/nonexistent/model"], "model manifest not found: /nonexistent/model"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--capture-percent", "150", "--capture-dest", "x"], "between 0 and 100"),
        (["--capture-dest", "ftp://x/y"], "neither s3://bucket/prefix nor a folder"),
        (["--capture-dest", "/proc/no/such"], "--capture-dest /proc/no/such: cannot write there"),
        (["--capture-dest", "/dev/null/capture"], "/dev/null/capture: /dev/null is not a folder"),
        (["--max-body-bytes", "0"], "--max-body-bytes must be a positive integer"),
        (["--max-image-pixels", "0"], "--max-image-pixels must be a positive integer"),
        (["--max-concurrency", "0"], "--max-concurrency must be a positive integer"),
        (["--queue-wait-seconds", "-1"], "--queue-wait-seconds must be a number of seconds"),
        (["--queue-wait-seconds", "nan"], "--queue-wait-seconds must be a number of seconds"),
        (["--header-timeout-seconds", "0"], "--header-timeout-seconds must be a positive"),
        (["--header-timeout-seconds", "inf"], "--header-timeout-seconds must be a positive"),
        (["--body-timeout-seconds", "-2"], "--body-timeout-seconds must be a positive"),
        (["--body-timeout-seconds", "nan"], "--body-timeout-seconds must be a positive"),
        (["--capture-flush-seconds", "nan"], "--capture-flush-seconds must be above 0"),
        # Past threading's limit the flusher thread died and the server went on serving.
        (["--capture-flush-seconds", "1e10"], "at most 86400 (a day), got 10000000000.0"),
        # Both are folders of the capture files: nothing may lead outside --capture-dest.
        (["--variant", "../../escaped"], "--variant '../../escaped' is not a SageMaker name"),
        (["--variant", ""], "--variant '' is not a SageMaker name"),
        (["--variant", "AllTraffic\n"], "--variant 'AllTraffic\\n' is not a SageMaker name"),
        (["--endpoint-name", "a/b"], "--endpoint-name 'a/b' is not a SageMaker name"),
        (["--endpoint-name", "e" * 64], "is not a SageMaker name: use 1-63 letters"),
    ],
)
def test_bad_arguments_name_the_problem(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "0", *args]) == 2
    assert words in capsys.readouterr().err


def test_defaults_come_from_the_template_parameters(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--capture-dest", str(tmp_path / "capture")])
    settings = settings_from_args(args)
    assert settings.endpoint_name == parameter_default("EndpointName")
    # The endpoint's own payload limit: MaxImageBytes guards the uploads, which the
    # workflow shrinks before it calls the endpoint.
    assert settings.max_body_bytes == RUNTIME_MAX_PAYLOAD_BYTES == 6 * 2**20
    # The pixel limit follows the model (derived when it loads), not MaxImagePixels.
    assert settings.max_image_pixels is None
    assert settings.capture_percent == float(parameter_default("DataCaptureSamplingPercentage"))
    overridden = settings_from_args(
        build_parser().parse_args(["serve", "--endpoint-name", "mine", "--max-body-bytes", "9"])
    )
    assert (overridden.endpoint_name, overridden.max_body_bytes) == ("mine", 9)


def test_the_variant_defaults_to_the_stacks_and_the_containers_is_sagemakers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``scones serve`` names the variant the stack's monitor and alarm read; the container
    (SageMaker does not tell it) keeps SageMaker's usual name, the template's default."""
    import scones.template_params
    from scones.serving.command import container_defaults
    from scones.serving.defaults import DEFAULT_VARIANT

    assert container_defaults({}).variant_name == DEFAULT_VARIANT
    assert parameter_default("EndpointVariantName") == DEFAULT_VARIANT
    template = scones.template_params.parameter_default
    monkeypatch.setattr(
        scones.template_params,
        "parameter_default",
        lambda name: "blue-1" if name == "EndpointVariantName" else template(name),
    )
    args = build_parser().parse_args(["serve"])
    assert settings_from_args(args).variant_name == "blue-1"
    given = build_parser().parse_args(["serve", "--variant", "green"])
    assert settings_from_args(given).variant_name == "green"


def test_request_limit_flags_reach_the_settings() -> None:
    defaults = settings_from_args(build_parser().parse_args(["serve", "--endpoint-name", "e"]))
    assert (defaults.max_concurrency, defaults.queue_wait_s) == (None, DEFAULT_QUEUE_WAIT_S)
    assert defaults.header_timeout_s == DEFAULT_HEADER_TIMEOUT_S
    assert defaults.body_timeout_s == DEFAULT_BODY_TIMEOUT_S
    flags = ["--max-image-pixels", "5000", "--max-concurrency", "3", "--queue-wait-seconds", "0"]
    flags += ["--header-timeout-seconds", "4.5", "--body-timeout-seconds", "7"]
    settings = settings_from_args(
        build_parser().parse_args(["serve", "--endpoint-name", "e", *flags])
    )
    assert (settings.max_image_pixels, settings.max_concurrency) == (5000, 3)
    assert (settings.queue_wait_s, settings.header_timeout_s, settings.body_timeout_s) == (
        0,
        4.5,
        7,
    )


def test_bench_is_a_group_and_server_benchmark_prints_the_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "server" in capsys.readouterr().out
    status = main(
        [
            "bench",
            "server",
            "--requests",
            "20",
            "--concurrency",
            "2",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    # Each path at concurrency 1 and 2; server paths again in the comparison table.
    for path, rows in (
        ("onnxruntime predict_bytes", 2),
        ("HTTP POST /invocations", 4),
        ("boto3 invoke_endpoint", 4),
    ):
        assert len(re.findall(rf"^\| {re.escape(path)}.* \| [12] \|", out, re.M)) == rows
    assert "largest difference between server and bare answers: 0.0e+00" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert {row["concurrency"] for row in result["rows"]} == {1, 2}
    assert all(row["requests"] == 20 for row in result["rows"])


def test_bound_sockets_are_tcp_so_asyncio_disables_nagle() -> None:
    """Without IPPROTO_TCP asyncio skips TCP_NODELAY and each answer waits for a delayed ACK."""
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_bench_without_a_name_runs_every_benchmark() -> None:
    args = build_parser().parse_args(["bench"])
    assert args.handler.__name__ == "_run_all"
    assert "server" in args.bench_parsers
    assert build_parser().parse_args(["bench", "server"]).handler.__name__ == "_run_server"
