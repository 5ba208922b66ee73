"""Data capture: SageMaker's record layout, file layout, sampling, S3, flushing, failures."""

from __future__ import annotations

import base64
import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from scones_core.monitoring.capture import parse_capture_line

from scones.model.artifact import OnnxClassifier
from scones.serving.capture import (
    CaptureConfigError,
    CaptureWriter,
    LocalCaptureSink,
    S3CaptureSink,
    sink_for_destination,
)
from scones.serving.server import ModelServer
from tests.serving.conftest import (
    ENDPOINT,
    VARIANT,
    AppFactory,
    LiveServer,
    jsonl_files,
    read_records,
    runtime_client,
)

KEY_PATTERN = re.compile(
    rf"^{ENDPOINT}/{VARIANT}/(\d{{4}})/(\d{{2}})/(\d{{2}})/(\d{{2}})/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$"
)
AT = datetime(2026, 11, 25, 13, 59, 58, 250_000, tzinfo=UTC)


def writer(sink: Any, **options: Any) -> CaptureWriter:
    return CaptureWriter(sink, endpoint_name=ENDPOINT, variant_name=VARIANT, **options)


def check_record(record: dict[str, Any], body: bytes, content_type: str, output: str) -> None:
    """Every field, as SageMaker writes it."""
    assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
    assert record["eventVersion"] == "0"
    assert set(record["captureData"]) == {"endpointInput", "endpointOutput"}
    assert record["captureData"]["endpointInput"] == {
        "observedContentType": content_type,
        "mode": "INPUT",
        "data": base64.b64encode(body).decode("ascii"),
        "encoding": "BASE64",
    }
    assert record["captureData"]["endpointOutput"] == {
        "observedContentType": "application/json",
        "mode": "OUTPUT",
        "data": output,
        "encoding": "JSON",
    }
    metadata = record["eventMetadata"]
    assert set(metadata) == {"eventId", "inferenceTime"}
    assert str(uuid.UUID(metadata["eventId"])) == metadata["eventId"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", metadata["inferenceTime"])


def test_server_captures_each_request_as_sagemaker_does(
    live_server: LiveServer, classifier: OnnxClassifier, sample_pngs: list[bytes], tmp_path: Path
) -> None:
    client = runtime_client(live_server.base_url)
    sent = []
    before = datetime.now(UTC).replace(microsecond=0)
    for png in sample_pngs:
        response = client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=png)
        sent.append((png, response["Body"].read().decode()))
    # A refused request is not captured.
    with pytest.raises(client.exceptions.ModelError):
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=b"junk")
    live_server.server.stop()
    after = datetime.now(UTC)

    files = jsonl_files(tmp_path / "capture")
    records = read_records(tmp_path / "capture")
    assert len(records) == len(sample_pngs)
    # One file per hour the requests fell in: two when the clock crossed an hour.
    hours = {r["eventMetadata"]["inferenceTime"][:13] for r in records}
    assert len(files) == len(hours) and len(hours) <= 2
    assert all(KEY_PATTERN.match(f.relative_to(tmp_path / "capture").as_posix()) for f in files)
    for record, (png, output) in zip(records, sent, strict=True):
        check_record(record, png, "image/png", output)
        assert json.loads(output) == classifier.predict_bytes(png)
        when = datetime.fromisoformat(record["eventMetadata"]["inferenceTime"])
        assert before <= when <= after
        # The monitoring Lambda reads exactly these lines.
        parsed = parse_capture_line(json.dumps(record), classifier.labels)
        assert list(parsed.probabilities) == json.loads(output)
    assert len({r["eventMetadata"]["eventId"] for r in records}) == len(records)
    assert live_server.capture.stats().records_written == len(sample_pngs)


def test_inference_id_is_kept_in_the_event_metadata(
    live_server: LiveServer, bicycle_png: bytes, tmp_path: Path
) -> None:
    client = runtime_client(live_server.base_url)
    client.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="image/png", Body=bicycle_png, InferenceId="img-42"
    )
    live_server.server.stop()
    (record,) = read_records(tmp_path / "capture")
    assert record["eventMetadata"]["inferenceId"] == "img-42"


def test_records_are_split_into_hourly_folders_in_order(tmp_path: Path) -> None:
    moments = iter([AT, AT + timedelta(seconds=1), AT + timedelta(seconds=3)])
    capture = writer(LocalCaptureSink(tmp_path), clock=lambda: next(moments))
    for index in range(3):
        assert capture.capture(
            input_body=bytes([index]), input_content_type="image/png", output_body=f"[{index}]"
        )
    assert capture.flush() == 3
    files = jsonl_files(tmp_path)
    hours = [KEY_PATTERN.match(p.relative_to(tmp_path).as_posix()).groups() for p in files]  # type: ignore[union-attr]
    assert hours == [("2026", "11", "25", "13"), ("2026", "11", "25", "14")]
    assert files[0].name.startswith("59-58-250-")
    outputs = [
        [r["captureData"]["endpointOutput"]["data"] for r in read_records(p.parent)] for p in files
    ]
    assert outputs == [["[0]", "[1]"], ["[2]"]]
    assert capture.stats().files_written == 2


@pytest.mark.parametrize("percent", [0, 50, 100])
def test_sampling_percentage_with_a_seeded_generator(tmp_path: Path, percent: int) -> None:
    capture = writer(LocalCaptureSink(tmp_path), sampling_percentage=percent, rng=random.Random(7))
    kept = [
        capture.capture(input_body=b"x", input_content_type="image/png", output_body="[1]")
        for _ in range(200)
    ]
    # The same draws from a generator of the same seed: a record is kept when its draw is
    # below the percentage, as SageMaker samples.
    reference = random.Random(7)
    decisions = [reference.random() * 100 < percent for _ in range(200)]
    expected = sum(decisions)
    if percent == 50:
        assert 70 < expected < 130
    else:
        assert expected == {0: 0, 100: 200}[percent]
    assert kept == decisions
    capture.close()
    assert len(read_records(tmp_path)) == expected
    assert capture.stats().sampled_out == 200 - expected


def test_the_background_flusher_writes_on_its_interval_and_when_full(tmp_path: Path) -> None:
    periodic = writer(LocalCaptureSink(tmp_path / "periodic"), flush_interval_s=0.05)
    periodic.start()
    periodic.capture(input_body=b"a", input_content_type="image/png", output_body="[1]")
    wait_for(lambda: len(jsonl_files(tmp_path / "periodic")) == 1)
    periodic.close()

    by_size = writer(
        LocalCaptureSink(tmp_path / "full"),
        flush_interval_s=3600,
        max_buffered_records=3,
        clock=lambda: AT,  # one hour's file, whenever the test runs
    )
    by_size.start()
    for _ in range(3):
        by_size.capture(input_body=b"b", input_content_type="image/png", output_body="[1]")
    wait_for(lambda: len(read_records(tmp_path / "full")) == 3)
    by_size.close()
    assert by_size.stats().files_written == 1


def test_a_request_answered_after_its_writer_closed_is_still_captured(tmp_path: Path) -> None:
    """A canary removed (rolled back) while one of its requests is in inference: the
    answered request was buffered in the closed writer, and nothing ever wrote it."""
    capture = writer(LocalCaptureSink(tmp_path), flush_interval_s=3600)
    capture.start()
    capture.capture(input_body=b"before", input_content_type="image/png", output_body="[1]")
    capture.close()
    capture.capture(input_body=b"after", input_content_type="image/png", output_body="[2]")

    # Two files written in the same millisecond are ordered by their random suffix.
    records = read_records(tmp_path)
    assert sorted(base64.b64decode(r["captureData"]["endpointInput"]["data"]) for r in records) == [
        b"after",
        b"before",
    ]
    assert capture.stats().buffered == 0 and capture.stats().records_written == 2


def wait_for(condition: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="capture-bucket")
        yield client


def test_s3_destination_layout_and_content(s3: Any) -> None:
    sink = sink_for_destination("s3://capture-bucket/datacapture", s3_client=s3)
    assert isinstance(sink, S3CaptureSink)
    capture = writer(sink, clock=lambda: AT)
    for index in range(5):
        capture.capture(
            input_body=bytes([index]) * 3, input_content_type="image/png", output_body="[0.5,0.5]"
        )
    capture.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="capture-bucket")["Contents"]]
    assert len(keys) == 1
    assert keys[0].startswith("datacapture/")
    assert KEY_PATTERN.match(keys[0].removeprefix("datacapture/"))
    lines = s3.get_object(Bucket="capture-bucket", Key=keys[0])["Body"].read().decode().splitlines()
    assert len(lines) == 5
    for index, line in enumerate(lines):
        check_record(json.loads(line), bytes([index]) * 3, "image/png", "[0.5,0.5]")


def test_failed_writes_are_counted_and_retried_never_raised(s3: Any) -> None:
    capture = writer(S3CaptureSink("missing-bucket", "p", s3))
    assert capture.capture(input_body=b"1", input_content_type="image/png", output_body="[1]")
    assert capture.flush() == 0  # NoSuchBucket: logged, counted, kept
    stats = capture.stats()
    assert (stats.errors, stats.buffered, stats.records_written) == (1, 1, 0)
    s3.create_bucket(Bucket="missing-bucket")
    capture.close()
    assert capture.stats().records_written == 1
    assert s3.list_objects_v2(Bucket="missing-bucket")["KeyCount"] == 1


class OutageSink:
    """A destination that refuses every write until it is repaired (an S3 outage,
    expired credentials), then writes to a local folder."""

    def __init__(self, root: Path) -> None:
        self.local = LocalCaptureSink(root)
        self.down = True

    def write(self, key: str, payload: bytes) -> str:
        if self.down:
            raise ConnectionError("could not connect to the S3 endpoint")
        return self.local.write(key, payload)

    def describe(self) -> str:
        return "s3://capture-bucket/dc"


def test_records_kept_through_failed_writes_are_bounded_in_bytes_oldest_dropped_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests keep coming while every write fails: what waits for a retry must stay
    within its byte limit (a 6 MB body is an 8 MB line), not grow until the server dies."""
    body = bytes(range(256)) * 400  # 100 KiB, a 137 KB line
    limit = 1024 * 1024
    sink = OutageSink(tmp_path)
    capture = writer(sink, max_pending_bytes=limit)
    sent = 40
    for index in range(sent):
        assert capture.capture(
            input_body=body, input_content_type="image/png", output_body=f"[{index}]"
        )
        if index % 5 == 4:
            assert capture.flush() == 0
    stats = capture.stats()
    line_bytes = len(base64.b64encode(body))
    assert 0 < stats.buffered <= limit // line_bytes
    assert stats.dropped == sent - stats.buffered
    assert "dropped" in caplog.text
    sink.down = False
    capture.close()
    # The newest records survive, in order, and still read as SageMaker's records.
    records = read_records(tmp_path)
    outputs = [record["captureData"]["endpointOutput"]["data"] for record in records]
    assert outputs == [f"[{index}]" for index in range(sent - stats.buffered, sent)]
    for record, output in zip(records, outputs, strict=True):
        check_record(record, body, "image/png", output)
    assert capture.stats().records_written == stats.buffered


def test_a_capture_that_cannot_be_built_does_not_raise(tmp_path: Path) -> None:
    capture = writer(LocalCaptureSink(tmp_path))
    assert not capture.capture(input_body=None, input_content_type="image/png", output_body="[1]")  # type: ignore[arg-type]
    assert capture.stats().errors == 1


def test_server_with_s3_capture_flushes_on_stop(
    s3: Any, make_app: AppFactory, bicycle_png: bytes
) -> None:
    capture = writer(
        sink_for_destination("s3://capture-bucket/dc", s3_client=s3),
        flush_interval_s=3600,
        clock=lambda: AT,  # one hour's file, whenever the test runs
    )
    server = ModelServer(make_app(capture=capture))
    base_url = server.start()
    client = runtime_client(base_url)
    for _ in range(3):
        client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/png", Body=bicycle_png)
    assert s3.list_objects_v2(Bucket="capture-bucket")["KeyCount"] == 0  # still buffered
    server.stop()
    listing = s3.list_objects_v2(Bucket="capture-bucket", Prefix=f"dc/{ENDPOINT}/{VARIANT}/")
    assert listing["KeyCount"] == 1
    body = s3.get_object(Bucket="capture-bucket", Key=listing["Contents"][0]["Key"])["Body"].read()
    assert len(body.decode().splitlines()) == 3


@pytest.mark.parametrize(
    ("destination", "words"),
    [
        ("s3://", "names no bucket"),
        ("ftp://host/x", "neither"),
        ("", "empty"),
        ("s3://Bad Bucket/x", "'Bad Bucket' is not an S3 bucket name"),
        ("s3://my..bucket/x", "'my..bucket' is not an S3 bucket name"),
        ("s3://ab/x", "'ab' is not an S3 bucket name"),
    ],
)
def test_bad_destinations_are_refused(destination: str, words: str) -> None:
    with pytest.raises(CaptureConfigError, match=words):
        sink_for_destination(destination)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"sampling_percentage": 101}, "between 0 and 100"),
        ({"sampling_percentage": -1}, "between 0 and 100"),
        ({"flush_interval_s": 0}, "above 0 and at most 86400 s"),
        ({"flush_interval_s": 1e10}, "above 0 and at most 86400 s"),
        ({"flush_interval_s": float("nan")}, "above 0 and at most 86400 s"),
        ({"max_buffered_records": 0}, "positive"),
        ({"max_pending_bytes": 0}, "positive"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, options: dict[str, Any], words: str) -> None:
    with pytest.raises(CaptureConfigError, match=words):
        writer(LocalCaptureSink(tmp_path), **options)
