"""Benchmark: the model server over HTTP against bare onnxruntime on the same images.

The server runs as its own process (``python -m scones.serving --port 0``), as in
production, so client and server do not share a GIL. Every path classifies the same
sequence of bundled PNGs; each row reports latency per request (p50/p95/p99)
and throughput, at concurrency 1 and at the requested concurrency. The server
answers are checked against the bare model's, so a fast wrong server cannot pass.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

BENCH_ENDPOINT = "scones-bench"
_READY = re.compile(r"at (http://\S+)")


@dataclass(frozen=True)
class Row:
    """One measured path at one concurrency."""

    path: str
    concurrency: int
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_rps: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def measure(
    path: str, call: Callable[[bytes], Any], payloads: Sequence[bytes], concurrency: int
) -> tuple[Row, list[Any]]:
    """Run ``call`` once per payload with ``concurrency`` threads; time each call."""
    latencies = [0.0] * len(payloads)
    results: list[Any] = [None] * len(payloads)

    def one(index: int) -> None:
        started = time.perf_counter()
        results[index] = call(payloads[index])
        latencies[index] = time.perf_counter() - started

    wall_started = time.perf_counter()
    if concurrency == 1:
        for index in range(len(payloads)):
            one(index)
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(len(payloads))))
    wall = time.perf_counter() - wall_started
    ordered = sorted(latencies)
    row = Row(
        path=path,
        concurrency=concurrency,
        requests=len(payloads),
        p50_ms=percentile(ordered, 50) * 1000,
        p95_ms=percentile(ordered, 95) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        mean_ms=sum(ordered) / len(ordered) * 1000,
        throughput_rps=len(payloads) / wall,
    )
    return row, results


def load_payloads(data_dir: Path, count: int) -> list[bytes]:
    """``count`` PNG bodies cycling through the bundled images in a fixed order."""
    files = sorted(data_dir.glob("*/*.png"))
    if not files:
        raise FileNotFoundError(f"no PNG images under {data_dir}/<label>/")
    images = [path.read_bytes() for path in files]
    return [images[i % len(images)] for i in range(count)]


class ServerProcess:
    """The server as the container runs it (``python -m scones.serving``), on a free port."""

    def __init__(self, model_dir: Path, max_body_bytes: int) -> None:
        self.model_dir = model_dir
        self.max_body_bytes = max_body_bytes
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "scones.serving",
            "--model",
            str(self.model_dir),
            "--port",
            "0",
            "--endpoint-name",
            BENCH_ENDPOINT,
            "--max-body-bytes",
            str(self.max_body_bytes),
            "--max-image-pixels",
            str(1 << 24),
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        self.base_url = _read_ready_line(self.process.stdout, timeout_s=60)
        threading.Thread(target=_drain, args=(self.process.stdout,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _read_ready_line(stream: IO[str], timeout_s: float) -> str:
    lines: list[str] = []
    found: list[str] = []

    def reader() -> None:
        for line in stream:
            lines.append(line)
            match = _READY.search(line)
            if match and line.startswith("scones serve:"):
                found.append(match.group(1))
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not found:
        raise RuntimeError("the benchmark server did not start:\n" + "".join(lines[-20:]))
    return found[0]


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def run_benchmark(
    model_dir: Path, data_dir: Path, requests: int, concurrency: int, warmup: int = 50
) -> dict[str, Any]:
    """Measure every path; return rows, ratios and the environment, JSON-ready."""
    import boto3
    import httpx
    from botocore.config import Config

    from scones.model.artifact import OnnxClassifier

    load_before = os.getloadavg()[0]
    payloads = load_payloads(data_dir, requests)
    warm = payloads[: max(1, min(warmup, len(payloads)))]
    levels = sorted({1, concurrency})
    rows: list[Row] = []

    classifier = OnnxClassifier(model_dir)
    for payload in warm:
        classifier.predict_bytes(payload)
    expected: list[Any] = []
    for level in levels:
        row, expected = measure(
            "onnxruntime predict_bytes", classifier.predict_bytes, payloads, level
        )
        rows.append(row)

    max_body = max(len(p) for p in payloads) * 4
    with ServerProcess(model_dir, max_body) as server:
        local = threading.local()

        def via_http(payload: bytes) -> list[float]:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=server.base_url, timeout=30)
            response = client.post(
                "/invocations", content=payload, headers={"Content-Type": "image/png"}
            )
            response.raise_for_status()
            return [float(v) for v in response.json()]

        runtime = boto3.client(
            "sagemaker-runtime",
            endpoint_url=server.base_url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 - loopback server ignores it
            config=Config(max_pool_connections=max(10, concurrency), retries={"max_attempts": 0}),
        )

        def via_boto3(payload: bytes) -> list[float]:
            response = runtime.invoke_endpoint(
                EndpointName=BENCH_ENDPOINT, ContentType="image/png", Body=payload
            )
            return [float(v) for v in json.loads(response["Body"].read())]

        for payload in warm:
            via_http(payload)
            via_boto3(payload)
        max_diff = 0.0
        for path, call in (
            ("HTTP POST /invocations (httpx)", via_http),
            ("boto3 invoke_endpoint (runtime route)", via_boto3),
        ):
            for level in levels:
                row, got = measure(path, call, payloads, level)
                rows.append(row)
                max_diff = max(max_diff, _max_abs_diff(expected, got))
    if max_diff > 1e-6:
        raise RuntimeError(f"server answers differ from the bare model by up to {max_diff}")

    bare = {row.concurrency: row for row in rows if row.path.startswith("onnxruntime")}
    ratios = [
        {
            "path": row.path,
            "concurrency": row.concurrency,
            "p50_ratio": row.p50_ms / bare[row.concurrency].p50_ms,
            "throughput_ratio": row.throughput_rps / bare[row.concurrency].throughput_rps,
        }
        for row in rows
        if not row.path.startswith("onnxruntime")
    ]
    return {
        "rows": [asdict(row) for row in rows],
        "ratios": ratios,
        "max_abs_diff": max_diff,
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "python": sys.version.split()[0],
            "model": str(model_dir),
            "images": str(data_dir),
            "requests": requests,
            "concurrency": concurrency,
        },
    }


def _max_abs_diff(expected: list[Any], got: list[Any]) -> float:
    return max(
        (
            abs(a - b)
            for want, have in zip(expected, got, strict=True)
            for a, b in zip(want, have, strict=True)
        ),
        default=0.0,
    )


def format_report(result: dict[str, Any]) -> str:
    """The result as a Markdown table, printed and pasted into docs/benchmarks.md."""
    env = result["environment"]
    lines = [
        f"model server benchmark: {env['requests']} requests per row, "
        f"{env['cpus']} CPUs, Python {env['python']}, 1-minute load average "
        f"{env['load_average_1min'][0]} before and {env['load_average_1min'][1]} after",
        "",
        "| path | concurrency | p50 ms | p95 ms | p99 ms | mean ms | requests/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['path']} | {row['concurrency']} | {row['p50_ms']:.3f} | "
            f"{row['p95_ms']:.3f} | {row['p99_ms']:.3f} | {row['mean_ms']:.3f} | "
            f"{row['throughput_rps']:.0f} |"
        )
    lines += ["", "| compared with bare onnxruntime | concurrency | p50 x | throughput x |"]
    lines.append("|---|---:|---:|---:|")
    for ratio in result["ratios"]:
        lines.append(
            f"| {ratio['path']} | {ratio['concurrency']} | {ratio['p50_ratio']:.1f} | "
            f"{ratio['throughput_ratio']:.2f} |"
        )
    lines += [
        "",
        f"largest difference between server and bare answers: {result['max_abs_diff']:.1e}",
    ]
    return "\n".join(lines)
