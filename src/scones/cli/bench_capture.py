"""``scones bench capture``: the monitor reading an hour of capture files, one at a time
against ``CAPTURE_READ_THREADS`` at once.

S3 is moto, in process, with each GetObject held for ``--latency-ms`` (S3's first byte
from Lambda is tens of milliseconds; moto answers in well under one). The same files are
read both ways, alternately, and must give the same records in the same order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from scones.cli.arguments import positive_int, whole_between

_BUCKET = "scones-bench-capture"
_PREFIX = "datacapture/scones-endpoint/AllTraffic/2026/12/01/11"
_HOUR = datetime(2026, 12, 1, 11, tzinfo=UTC)
# botocore's default read timeout: an S3 that took longer to answer would time out.
MAX_LATENCY_MS = 60_000


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "capture",
        help="the monitor reading an hour of capture files: one at a time vs concurrently",
    )
    parser.add_argument(
        "--files", type=positive_int, default=600, help="capture files in the hour (default 600)"
    )
    parser.add_argument(
        "--latency-ms",
        type=whole_between(1, MAX_LATENCY_MS),
        default=20,
        help=f"time S3 takes to answer each GetObject, 1 to {MAX_LATENCY_MS} (default 20)",
    )
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs of each way")
    parser.set_defaults(handler=_run)


def _lines(index: int) -> str:
    from scones.serving.capture import build_capture_record

    rows = []
    for n in range(5):
        record = build_capture_record(
            input_body=b"\x89PNG",
            input_content_type="image/png",
            output_body=json.dumps([0.9, 0.1]),
            output_content_type="application/json",
            event_id=f"e-{index}-{n}",
            inference_time=_HOUR + timedelta(seconds=index),
        )
        rows.append(json.dumps(record))
    return "\n".join(rows) + "\n"


def _run(args: argparse.Namespace) -> int:
    import boto3
    from moto import mock_aws
    from scones_core.monitoring import capture

    labels = ("bicycle", "motorcycle")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=_BUCKET)
        keys = []
        for index in range(args.files):
            minute, second = divmod(index * 3600 // args.files, 60)
            key = f"{_PREFIX}/{minute:02d}-{second:02d}-{index % 1000:03d}-{index:08x}.jsonl"
            s3.put_object(Bucket=_BUCKET, Key=key, Body=_lines(index).encode())
            keys.append(key)

        def slow_get(**_: Any) -> None:
            time.sleep(args.latency_ms / 1000)

        s3.meta.events.register("before-call.s3.GetObject", slow_get)
        concurrent = capture.CAPTURE_READ_THREADS
        results: dict[int, list[float]] = {1: [], concurrent: []}
        sources: dict[int, list[tuple[str | None, int | None]]] = {}
        for _ in range(args.repeat):
            for threads in (1, concurrent):  # alternate, so load on the machine hits both
                capture.CAPTURE_READ_THREADS = threads
                started = time.perf_counter()
                batch = capture.read_capture_objects(s3, _BUCKET, keys, labels)
                results[threads].append(time.perf_counter() - started)
                sources[threads] = [(r.source, r.line) for r in batch.records]
        capture.CAPTURE_READ_THREADS = concurrent
    same = sources[1] == sources[concurrent] and len(sources[1]) == 5 * args.files
    print(
        f"{args.files} capture files of 5 records, GetObject answered after "
        f"{args.latency_ms} ms; median of {args.repeat} runs each"
    )
    print(f"{'reads at once':<15}{'seconds':>9}{'files/s':>9}")
    for threads, times in results.items():
        median = statistics.median(times)
        print(f"{threads:<15}{median:>9.2f}{args.files / median:>9.0f}")
    ratio = statistics.median(results[1]) / statistics.median(results[concurrent])
    print(f"speed-up {ratio:.1f}x; same records in the same order both ways: {same}")
    return 0 if same else 1
