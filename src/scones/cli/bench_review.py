"""``scones bench review``: what the review page's images cost, and whether answers wait.

The review app (``scones.review.app``) is served by the real server (uvicorn, as
``scones review`` runs it) over an in-process moto table and bucket laid out as the
template lays them out. For each kind of upload it measures what the page receives
from ``GET /api/image`` (bytes and time) against what it used to download, the
uploaded object itself. Then it puts ``--burst`` images of ``--pixels`` pixels in
flight at once and times ``GET /api/queue`` and ``POST /api/answers`` meanwhile,
against the same requests on the idle server in the same run.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from scones.cli.arguments import check_writable_file, output_file, positive_int
from scones.cli.errors import CommandError
from scones.safe_files import write_json_file

TABLE = "scones-bench-review-results"
BUCKET = "scones-bench-review-images"
REGION = "us-east-1"


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "review",
        help="the review page's images: bytes and time per image, answers during a burst",
    )
    parser.add_argument(
        "--pixels",
        type=positive_int,
        default=25_000_000,
        help="size of the large PNG and WebP uploads (default: 25 MP, the largest WebP the "
        "serialize function decodes)",
    )
    parser.add_argument(
        "--burst", type=positive_int, default=12, help="large images in flight at once"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=3, help="timed requests per kind of upload"
    )
    parser.add_argument("--json", type=output_file, help="also write the results as JSON here")
    parser.set_defaults(handler=_run)


def _uploads(pixels: int) -> dict[str, bytes]:
    """name -> bytes of each kind of upload a reviewer may be shown."""
    from PIL import Image

    from scones.cli.bench_memory import _gradient
    from scones.costs.measure import photo_jpeg
    from scones.paths import PROJECT_ROOT

    side = max(8, int(pixels**0.5))
    large = _gradient((side, side))

    def encoded(image: Any, fmt: str, **options: Any) -> bytes:
        out = io.BytesIO()
        image.save(out, format=fmt, **options)
        return out.getvalue()

    cifar = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[0]
    with Image.open(cifar) as small:
        tiff = encoded(small, "TIFF")
    return {
        "CIFAR PNG 32x32": cifar.read_bytes(),
        "the same, as TIFF": tiff,
        "camera JPEG 4000x3000": photo_jpeg(3),
        f"PNG RGBA {side}x{side}": encoded(large, "PNG"),
        f"WebP lossless {side}x{side}": encoded(large, "WEBP", lossless=True, method=0),
    }


@contextmanager
def _fake_credentials() -> Iterator[None]:
    """moto's clients want credentials; the caller's own are neither needed nor changed."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _review_server() -> Iterator[tuple[str, Callable[[bytes], str], dict[str, str]]]:
    """(base URL, record(bytes) -> record id, the headers carrying its token) of a review
    app served by uvicorn over moto; the records wait for review."""
    import secrets

    import boto3
    from moto import mock_aws
    from scones_core.monitoring.timestamps import format_millis
    from scones_core.records import (
        BUCKET_ATTRIBUTE,
        CONFIDENCE_ATTRIBUTE,
        EVENT_TIME_ATTRIBUTE,
        KEY_ATTRIBUTE,
        LABEL_ATTRIBUTE,
        PARTITION_KEY,
        PROBABILITIES_ATTRIBUTE,
        RECORDED_AT_ATTRIBUTE,
        STATUS_ATTRIBUTE,
        VERSION_ATTRIBUTE,
        Status,
    )
    from scones_core.review import ReviewService, ReviewSettings

    from scones.review.app import TOKEN_HEADER, ReviewAppSettings, build_app
    from scones.review.target import image_limits
    from scones.serving.server import ModelServer
    from scones.template_params import parameter_default, parameter_defaults, table_definition

    with _fake_credentials(), mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        dynamodb.create_table(TableName=TABLE, **table_definition("ResultsTable"))
        table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
        count = iter(range(1_000_000))

        def record(data: bytes) -> str:
            key = f"incoming/bench-{next(count)}"
            version = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["VersionId"]
            record_id = f"{BUCKET}/{key}#{version}"
            now = format_millis(datetime.now(UTC))
            table.put_item(
                Item={
                    PARTITION_KEY: record_id,
                    BUCKET_ATTRIBUTE: BUCKET,
                    KEY_ATTRIBUTE: key,
                    VERSION_ATTRIBUTE: version,
                    STATUS_ATTRIBUTE: Status.NEEDS_REVIEW.value,
                    LABEL_ATTRIBUTE: "bicycle",
                    CONFIDENCE_ATTRIBUTE: Decimal("0.6"),
                    PROBABILITIES_ATTRIBUTE: {
                        "bicycle": Decimal("0.6"),
                        "motorcycle": Decimal("0.4"),
                    },
                    EVENT_TIME_ATTRIBUTE: now,
                    RECORDED_AT_ATTRIBUTE: now,
                }
            )
            return record_id

        settings = ReviewSettings(
            bucket=BUCKET,
            table_name=TABLE,
            labels=("bicycle", "motorcycle"),
            labelled_prefix=parameter_default("LabelledDataPrefix"),
            image_limits=image_limits(parameter_defaults()),
        )
        service = ReviewService(settings, s3=s3, dynamodb=dynamodb)
        token = secrets.token_urlsafe(18)
        server = ModelServer(
            build_app(service, ReviewAppSettings("bench", TABLE, token=token)),
            host="127.0.0.1",
            port=0,
        )
        url = server.start()
        try:
            yield url, record, {TOKEN_HEADER: token}
        finally:
            server.stop()


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def _run(args: argparse.Namespace) -> int:
    import httpx
    from scones_core.records import Status

    from scones.cli.bench_memory import MAX_PIXELS, WEBP_MAX_SIDE

    if args.pixels > MAX_PIXELS:
        raise CommandError(
            f"--pixels must be at most {MAX_PIXELS} ({WEBP_MAX_SIDE}x{WEBP_MAX_SIDE}, "
            f"the largest WebP image), got {args.pixels}"
        )
    if args.json:
        check_writable_file(args.json)
    uploads = _uploads(args.pixels)
    rows: list[dict[str, Any]] = []
    with (
        _review_server() as (url, record, token),
        httpx.Client(base_url=url, headers=token, timeout=120) as http,
    ):

        def image(record_id: str) -> httpx.Response:
            return http.get("/api/image", params={"record_id": record_id})

        print(
            f"review server on {url}; each kind timed {args.repeat} times (its first request "
            "reads and draws; the browser keeps what it got, so that is every request)"
        )
        print(f"{'upload':<30}{'upload KB':>11}{'page gets KB':>14}{'x upload':>10}{'ms p50':>9}")
        for name, data in uploads.items():
            times, sizes = [], set()
            for _ in range(args.repeat):
                elapsed, response = _timed(lambda: image(record(data)))  # noqa: B023
                if response.status_code != 200:
                    raise CommandError(f"{name}: {response.status_code} {response.text[:200]}")
                times.append(elapsed)
                sizes.add(len(response.content))
            served = max(sizes)
            row = {
                "upload": name,
                "upload_bytes": len(data),
                "served_bytes": served,
                "served_x_upload": round(served / len(data), 4),
                "ms_p50": round(statistics.median(times), 1),
            }
            rows.append(row)
            print(
                f"{name:<30}{len(data) / 1024:>11.1f}{served / 1024:>14.1f}"
                f"{row['served_x_upload']:>10.3f}{row['ms_p50']:>9.1f}"
            )

        large = uploads[next(name for name in uploads if name.startswith("PNG RGBA"))]
        burst = [record(large) for _ in range(args.burst)]
        answer_ids = [record(uploads["CIFAR PNG 32x32"]) for _ in range(2)]

        def answer(record_id: str) -> httpx.Response:
            body = {
                "record_id": record_id,
                "expected_status": Status.NEEDS_REVIEW.value,
                "answer": "bicycle",
            }
            return http.post("/api/answers", json=body)

        idle_queue, _ = _timed(lambda: http.get("/api/queue"))
        idle_answer, answered = _timed(lambda: answer(answer_ids[0]))
        with ThreadPoolExecutor(args.burst) as pool:
            started = time.perf_counter()
            pending = [
                pool.submit(
                    httpx.get,
                    f"{url}/api/image?record_id={quote(record_id, safe='')}",
                    headers=token,
                    timeout=300,
                )
                for record_id in burst
            ]
            time.sleep(0.3)  # the burst is in the server
            busy_queue, _ = _timed(lambda: http.get("/api/queue"))
            busy_answer, answered_busy = _timed(lambda: answer(answer_ids[1]))
            statuses = sorted({future.result().status_code for future in pending})
            drained = (time.perf_counter() - started) * 1000
    if answered.status_code != 200 or answered_busy.status_code != 200 or statuses != [200]:
        raise CommandError(
            f"the burst was not served: answers {answered.status_code}, "
            f"{answered_busy.status_code}; images {statuses}"
        )
    burst_row = {
        "burst": args.burst,
        "burst_upload": next(name for name in uploads if name.startswith("PNG RGBA")),
        "queue_ms_idle": round(idle_queue, 1),
        "queue_ms_during_burst": round(busy_queue, 1),
        "answer_ms_idle": round(idle_answer, 1),
        "answer_ms_during_burst": round(busy_answer, 1),
        "burst_drained_ms": round(drained, 1),
    }
    print(
        f"\n{args.burst} x {burst_row['burst_upload']} in flight "
        f"(drawn two at a time, drained in {drained / 1000:.1f} s):\n"
        f"  GET /api/queue     idle {idle_queue:7.1f} ms   during the burst {busy_queue:7.1f} ms\n"
        f"  POST /api/answers  idle {idle_answer:7.1f} ms   during the burst {busy_answer:7.1f} ms"
    )
    if args.json:
        payload = {"pixels": args.pixels, "images": rows, "burst": burst_row}
        write_json_file(args.json, payload)
    return 0
