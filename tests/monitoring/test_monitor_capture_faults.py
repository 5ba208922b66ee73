"""Capture that is missing, broken or misfiled: each fault is said once, and named."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from scones_core.monitoring.capture import CaptureBatch, read_capture_window
from scones_core.monitoring.data_warnings import (
    CAPTURE_OFF,
    MALFORMED_CAPTURE_LINE,
    MISFILED_CAPTURE_RECORDS,
    NOT_A_CAPTURE_FILE,
    OTHER_VARIANT_CAPTURE,
    UNKNOWN_CAPTURE_VERSION,
    UNREADABLE_CAPTURE_FILE,
)
from scones_core.monitoring.locations import S3Location, S3ReadError, read_optional_object
from scones_core.monitoring.service import MonitorClients, measure_window, respond
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.window_report import CAPTURE_MISSING
from urllib3.exceptions import ProtocolError

from scones.reports.capture_source import CaptureSourceError, load_capture
from tests.monitoring.conftest import (
    BUCKET,
    CAPTURE_PREFIX,
    ENDPOINT,
    LABELS,
    VARIANT,
    WINDOW_END,
    WINDOW_START,
    Aws,
    CaptureWriterHelper,
    capture_key,
    capture_line,
    monitor_env,
)

CAPTURE = S3Location.parse(f"s3://{BUCKET}/{CAPTURE_PREFIX}")
LISTED = f"s3://{BUCKET}/{CAPTURE_PREFIX}/{ENDPOINT}/{VARIANT}/"
AT = WINDOW_START + timedelta(minutes=5)
DAY = timedelta(days=1)


def _window(aws: Aws, start: datetime, end: datetime) -> CaptureBatch:
    return read_capture_window(
        aws.s3, CAPTURE, endpoint=ENDPOINT, variant=VARIANT, labels=LABELS, start=start, end=end
    )


def _windows(first: datetime, length: timedelta, until: datetime) -> list[datetime]:
    """The starts of the windows consecutive runs measure, from ``first`` to ``until``."""
    starts = []
    while first < until:
        starts.append(first)
        first += length
    return starts


def _refuse(aws: Aws, operation: str, key: str) -> None:
    """S3 answers ``AccessDenied`` for ``key`` (say, an object under another KMS key)."""

    def deny(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, operation
            )

    aws.s3.meta.events.register(f"before-parameter-build.s3.{operation}", deny)


# ---- no capture at all -----------------------------------------------------------


def test_classified_images_with_no_capture_record_raise_capture_missing(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """The results table saw ``MonitorMinRequests`` images reach the endpoint (reviewed
    ones by their workflow outcome; REJECTED and FAILED never reached it), while the
    capture went to a variant the monitor does not read."""
    config = MonitorSettings.from_env(monitor_env(MONITOR_MIN_REQUESTS="10"))
    clients = MonitorClients(aws.s3, aws.dynamodb)
    for index in range(20):
        aws.put_result("REJECTED" if index % 2 else "FAILED", WINDOW_START, index)
    for index in range(20, 29):
        aws.put_result("ACCEPTED", WINDOW_START + timedelta(minutes=index), index)
    lines = [capture_line([0.4, 0.6], WINDOW_START + timedelta(minutes=i)) for i in range(30)]
    aws.s3.put_object(
        Bucket=BUCKET,
        Key=f"{CAPTURE_PREFIX}/{ENDPOINT}/Variant-2/2026/11/25/12/05-00-000-x.jsonl",
        Body="\n".join(lines).encode(),
    )

    report, alerts = measure_window(config, clients, WINDOW_END)
    assert (report.request_count, report.results.total) == (0, 29)
    assert alerts == []  # 9 reached the endpoint: below MonitorMinRequests

    aws.put_review(
        29,
        recorded_at=WINDOW_START + timedelta(minutes=40),
        reviewed_at=WINDOW_START + timedelta(minutes=50),
        classified_status="NEEDS_REVIEW",
        answer="bicycle",
    )
    report, alerts = measure_window(config, clients, WINDOW_END)
    (alert,) = alerts
    assert alert.code == CAPTURE_MISSING and not alert.starts_retraining
    assert alert.message.startswith("10 image(s) reached the endpoint in the window")
    assert f"under {LISTED} (variant {VARIANT}; 0 file(s) read)" in alert.message
    # The capture is found where it went, and the alert says so rather than "check it".
    assert (
        f"the window's capture is under s3://{BUCKET}/{CAPTURE_PREFIX}/{ENDPOINT}/Variant-2/: "
        "set EndpointVariantName (ENDPOINT_VARIANT)" in alert.message
    )
    assert [w.code for w in report.warnings] == [OTHER_VARIANT_CAPTURE]
    assert "at 100 % sampling 10 capture records" in alert.message
    assert respond(config, clients, report, alerts) is None
    # At 50 % sampling the same 10 images should have left 5 records, fewer than
    # MonitorMinRequests: chance, not an alert. At 0 % capture is off on purpose, and
    # the report says each window that the monitor measures nothing (no alert can fire).
    for percent in ("50", "0"):
        sampled = MonitorSettings.from_env(
            monitor_env(MONITOR_MIN_REQUESTS="10", DATA_CAPTURE_SAMPLING_PERCENTAGE=percent)
        )
        report, alerts = measure_window(sampled, clients, WINDOW_END)
        assert alerts == []
        off = [w for w in report.warnings if w.code == CAPTURE_OFF]
        assert len(off) == (percent == "0"), percent
        assert all(w.source == "DataCaptureSamplingPercentage" for w in off)
        assert all("captures 0 %" in w.reason for w in off)

    # Sampling may capture few of them: one record of the window is not a missing capture.
    captures.put(WINDOW_START, "one", [capture_line([0.9, 0.1], WINDOW_START)])
    report, alerts = measure_window(config, clients, WINDOW_END)
    assert (report.request_count, alerts) == (1, [])


def test_another_variants_capture_in_the_window_is_named_not_silently_left_out(
    aws: Aws, captures: CaptureWriterHelper, caplog: pytest.LogCaptureFixture
) -> None:
    """An A/B (or shadow) variant captures beside the monitored one, in its own folder as
    SageMaker files it: the monitored variant is measured, and the other variant's
    requests, which no number includes, are named once with the folder they are in. A
    variant whose capture is only in other hours (replaced long ago, or started after the
    window) is not named."""
    ours = [capture_line([0.9, 0.1], AT + timedelta(minutes=i)) for i in range(4)]
    captures.put(WINDOW_START, "05-00-000-ours", ours)
    canary = f"{CAPTURE_PREFIX}/{ENDPOINT}/Canary/"
    retired = f"{CAPTURE_PREFIX}/{ENDPOINT}/variant-1/"
    later = f"{CAPTURE_PREFIX}/{ENDPOINT}/variant-3/"
    # Files as SageMaker names them, a trailing newline after the last record.
    for prefix, hour, count in (
        (canary, WINDOW_START, 3),
        (retired, WINDOW_START - DAY, 2),
        (later, WINDOW_END, 1),
    ):
        body = "".join(
            capture_line([0.2, 0.8], hour + timedelta(minutes=i)) + "\n" for i in range(count)
        )
        aws.s3.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}{hour:%Y/%m/%d/%H}/07-13-512-{uuid.uuid4()}.jsonl",
            Body=body.encode(),
        )
    # Another endpoint whose name begins with this one's is not a variant of it.
    captures_of_other_endpoint = f"{CAPTURE_PREFIX}/{ENDPOINT}-staging/AllTraffic/"
    aws.s3.put_object(
        Bucket=BUCKET,
        Key=f"{captures_of_other_endpoint}{WINDOW_START:%Y/%m/%d/%H}/00-00-000-x.jsonl",
        Body=ours[0].encode(),
    )

    batch = _window(aws, WINDOW_START, WINDOW_END)

    assert (len(batch.records), batch.malformed_lines) == (4, 0)
    (warning,) = batch.warnings
    assert (warning.code, warning.source, warning.line) == (
        OTHER_VARIANT_CAPTURE,
        f"s3://{BUCKET}/{canary}",
        None,
    )
    assert warning.reason == (
        f"variant 'Canary' of endpoint {ENDPOINT} captured requests in the window's hours; "
        f"they are not read: the monitor measures variant {VARIANT!r} (ENDPOINT_VARIANT) only"
    )
    assert [r.message for r in caplog.records if getattr(r, "code", None)] == [
        "capture of another variant is not measured"
    ]
    # The retired variant's day is named by the window that measures it.
    day_before = _window(aws, WINDOW_START - DAY, WINDOW_END - DAY)
    assert [w.source for w in day_before.warnings] == [f"s3://{BUCKET}/{retired}"]


def test_the_summary_publishes_records_read_for_other_windows(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    late = [capture_line([0.9, 0.1], WINDOW_END + timedelta(minutes=i)) for i in range(3)]
    captures.put(WINDOW_END, "next-hour", late)
    config = MonitorSettings.from_env(monitor_env())
    report, _ = measure_window(config, MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    assert (report.request_count, report.to_json()["outside_window"]) == (0, 3)


# ---- a file's own faults are counted once -----------------------------------------


# When each file lands: SageMaker delivers a buffer minutes after it was opened, and a
# run measures its window MonitorSettleMinutes (10) after the window ends.
DELIVERY = timedelta(minutes=3)
SETTLE = timedelta(minutes=10)


@pytest.mark.parametrize(
    ("length", "offset"),
    [(60, 0), (60, 10), (60, 50), (30, 0), (15, 5), (120, 10)],
    ids=["hourly", "hourly-at-10", "hourly-at-50", "half-hourly", "quarter-hourly", "two-hourly"],
)
def test_a_files_own_faults_are_counted_by_one_window_of_consecutive_runs(
    aws: Aws, length: int, offset: int
) -> None:
    """A malformed line has no time, and a gzip file or an unknown format is the file's:
    each is counted and warned about by the one window that owns the hour folder, however
    many windows read the file (the hour before, for late files; the hour after, for its
    last minutes). Files land as the runs go on, so an owner that runs before its folder
    is complete (a window at :10 owning the hour it ends in the middle of) would miss the
    later files' faults."""
    document = json.loads(capture_line([0.9, 0.1], AT))
    document["eventVersion"] = "1"
    files = [  # (opened, name, body)
        (WINDOW_START - timedelta(minutes=5), "55-00-000-aaaa", b"{torn\n"),
        (WINDOW_START + timedelta(minutes=20), "20-00-000-bbbb", b"{torn\n"),
        (WINDOW_START + timedelta(minutes=30), "30-00-000-cccc", gzip.compress(b"{}\n")),
        (WINDOW_START + timedelta(minutes=40), "40-00-000-dddd", json.dumps(document).encode()),
        (WINDOW_START + timedelta(minutes=58), "58-00-000-eeee", b"{torn\n"),
    ]
    waiting = sorted(files)
    said: Counter[tuple[str, str, int | None]] = Counter()
    malformed = 0
    first = datetime(2026, 11, 25, 8, offset, tzinfo=UTC)
    step = timedelta(minutes=length)
    for start in _windows(first, step, datetime(2026, 11, 25, 17, tzinfo=UTC)):
        runs_at = start + step + SETTLE
        while waiting and waiting[0][0] + DELIVERY <= runs_at:
            opened, name, body = waiting.pop(0)
            aws.s3.put_object(Bucket=BUCKET, Key=capture_key(opened, name), Body=body)
        batch = _window(aws, start, start + step)
        malformed += batch.malformed_lines
        said.update((w.code, w.source.rsplit("/", 1)[-1], w.line) for w in batch.warnings)
    assert not waiting
    assert malformed == 4
    assert said == {
        (MALFORMED_CAPTURE_LINE, "55-00-000-aaaa.jsonl", 1): 1,
        (MALFORMED_CAPTURE_LINE, "20-00-000-bbbb.jsonl", 1): 1,
        (MALFORMED_CAPTURE_LINE, "30-00-000-cccc.jsonl", None): 1,
        (UNKNOWN_CAPTURE_VERSION, "40-00-000-dddd.jsonl", 1): 1,
        (MALFORMED_CAPTURE_LINE, "58-00-000-eeee.jsonl", 1): 1,
    }


def test_the_window_an_hour_folder_ends_in_counts_its_malformed_lines(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    captures.put(WINDOW_START - timedelta(minutes=5), "55-00-000-aaaa", ["{torn"])
    captures.put(WINDOW_START, "20-00-000-bbbb", ["{torn"])
    half = timedelta(minutes=30)
    counted = {
        f"{start:%H:%M}": _window(aws, start, start + timedelta(hours=1)).malformed_lines
        for start in _windows(
            WINDOW_START - timedelta(hours=2) + half, timedelta(hours=1), WINDOW_END + half
        )
    }
    # Folder 11 ends at 12:00, in [11:30, 12:30); folder 12 at 13:00, in [12:30, 13:30).
    assert counted == {"10:30": 0, "11:30": 1, "12:30": 1}


def test_a_record_timed_near_year_one_or_9999_is_named_not_a_crash(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    far = []
    for stamp in ("0001-01-01T00:05:00Z", "9999-12-31T23:30:00Z"):
        record = json.loads(capture_line([0.9, 0.1], AT))
        record["eventMetadata"]["inferenceTime"] = stamp
        far.append(json.dumps(record))
    far.append(capture_line([0.9, 0.1], AT))
    captures.put(WINDOW_START, "20-00-000-ffff", far)
    batch = _window(aws, WINDOW_START, WINDOW_END)
    assert len(batch.records) == 1
    (misfiled,) = [w for w in batch.warnings if w.code == MISFILED_CAPTURE_RECORDS]
    assert misfiled.reason.startswith("2 record(s) timed 0001-01-01")


def test_a_record_timed_past_datetimes_range_in_utc_is_skipped_not_fatal(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """Valid ISO 8601 with an offset that carries it past year 9999 (or before year 1) in
    UTC: that one line is malformed; the file's other records still count."""
    lines = [capture_line([0.9, 0.1], AT) for _ in range(3)]
    for stamp in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        record = json.loads(capture_line([0.9, 0.1], AT))
        record["eventMetadata"]["inferenceTime"] = stamp
        lines.insert(1, json.dumps(record))
    captures.put(WINDOW_START, "20-00-000-eeee", lines)
    batch = _window(aws, WINDOW_START, WINDOW_END)
    assert len(batch.records) == 3
    assert batch.malformed_lines == 2
    assert any("outside the years 1 to 9999 in UTC" in w.reason for w in batch.warnings)


# ---- records no window reads ------------------------------------------------------


def test_every_record_is_counted_by_one_window_or_named_once(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """A record far from its file's hour folder (a skewed clock), or in a file of the
    hour before opened too early or named outside SageMaker's layout, is read by no
    window measuring its time: the folder's owner names it, once."""
    skewed = {
        "in-hour": AT,
        "half-hour-early": WINDOW_START - timedelta(minutes=30),
        "three-hours-early": WINDOW_START - timedelta(hours=3),
        "two-hours-late": WINDOW_START + timedelta(hours=2, minutes=5),
        "epoch": datetime(1970, 1, 1, tzinfo=UTC),
    }
    for name, at in skewed.items():
        captures.put(
            WINDOW_START, f"05-00-000-{name}", [capture_line([0.9, 0.1], at, event_id=name)]
        )
    previous = WINDOW_START - timedelta(hours=1)
    next_minute = WINDOW_START + timedelta(minutes=1)
    for name in ("55-00-000-opened-1155", "45-00-000-opened-1145", "not-sagemakers-name"):
        captures.put(previous, name, [capture_line([0.9, 0.1], next_minute, event_id=name)])

    counted: Counter[str] = Counter()
    named: Counter[str] = Counter()
    day = datetime(2026, 11, 25, tzinfo=UTC)
    for start in _windows(day - timedelta(hours=2), timedelta(hours=1), day + timedelta(days=1)):
        batch = _window(aws, start, start + timedelta(hours=1))
        counted.update(str(record.event_id) for record in batch.records)
        for warning in batch.warnings:
            assert warning.code == MISFILED_CAPTURE_RECORDS and warning.line == 1
            named[warning.source.rsplit("/", 1)[-1].removesuffix(".jsonl")] += 1
            assert "1 record(s) timed " in warning.reason and " to " not in warning.reason
    assert counted == {"in-hour": 1, "half-hour-early": 1, "55-00-000-opened-1155": 1}
    assert named == {
        "05-00-000-three-hours-early": 1,
        "05-00-000-two-hours-late": 1,
        "05-00-000-epoch": 1,
        "45-00-000-opened-1145": 1,
        "not-sagemakers-name": 1,
    }


# ---- S3 errors name the object ------------------------------------------------------


def test_an_object_s3_refuses_stops_the_run_naming_it(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    for name in ("a", "b"):
        captures.put(WINDOW_START, name, [capture_line([0.9, 0.1], AT)])
    refused = captures.put(WINDOW_START, "other-kms-key", [capture_line([0.9, 0.1], AT)])
    _refuse(aws, "GetObject", refused)
    with pytest.raises(S3ReadError) as raised:
        _window(aws, WINDOW_START, WINDOW_END)
    assert str(raised.value).startswith(f"cannot read s3://{BUCKET}/{refused}: ")
    assert "AccessDenied" in str(raised.value)
    assert isinstance(raised.value.__cause__, ClientError)


def test_a_listing_s3_refuses_names_the_prefix(aws: Aws) -> None:
    with pytest.raises(S3ReadError, match=f"cannot list s3://no-such-bucket/{CAPTURE_PREFIX}/"):
        read_capture_window(
            aws.s3,
            S3Location("no-such-bucket", CAPTURE_PREFIX),
            endpoint=ENDPOINT,
            variant=VARIANT,
            labels=LABELS,
            start=WINDOW_START,
            end=WINDOW_END,
        )


def test_an_optional_object_s3_refuses_is_named(aws: Aws) -> None:
    key = "models/baseline.json"
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}")
    assert read_optional_object(aws.s3, S3Location(BUCKET, "models/missing.json")) is None
    _refuse(aws, "GetObject", key)
    with pytest.raises(S3ReadError, match=f"^cannot read s3://{BUCKET}/{key}: .*AccessDenied"):
        read_optional_object(aws.s3, S3Location(BUCKET, key))


class _BreaksOff:
    """A raw HTTP body that delivers ``data`` and then loses the connection."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, amt: int | None = None) -> bytes:
        if not self._data:
            raise ProtocolError("Connection broken: IncompleteRead(0 bytes read)")
        chunk, self._data = self._data, b""
        return chunk

    def close(self) -> None:
        pass


def test_a_stream_that_breaks_off_is_a_warning_and_the_window_is_still_counted(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    for minute in range(3):
        captures.put(WINDOW_START, f"good-{minute}", [capture_line([0.9, 0.1], AT)])
    lines = [capture_line([0.2, 0.8], AT + timedelta(seconds=i)) for i in range(3)]
    broken = captures.put(WINDOW_START, "big", lines)
    sent = ("\n".join(lines[:2]) + "\n" + lines[2][:40]).encode()

    def cut(params: dict[str, Any], **kwargs: Any) -> None:
        kwargs["context"]["cut"] = params.get("Key") == broken

    def replace_body(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if context.get("cut"):
            parsed["Body"] = StreamingBody(_BreaksOff(sent), 10 * len(sent))

    aws.s3.meta.events.register("before-parameter-build.s3.GetObject", cut)
    aws.s3.meta.events.register("after-call.s3.GetObject", replace_body)

    batch = _window(aws, WINDOW_START, WINDOW_END)
    assert (batch.files_read, len(batch.records)) == (4, 5)
    (warning,) = batch.warnings
    assert (warning.code, warning.source, warning.line) == (
        UNREADABLE_CAPTURE_FILE,
        f"s3://{BUCKET}/{broken}",
        None,
    )
    assert warning.reason.startswith("the read broke off after 2 line(s): ")
    assert "Connection broken" in warning.reason


def test_an_object_among_the_capture_files_that_is_not_one_is_named_once(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """A compressed or renamed copy of a capture file left its records out silently."""
    captures.put(WINDOW_START, "good", [capture_line([0.9, 0.1], AT)])
    folder = capture_key(WINDOW_START, "x").rsplit("/", 1)[0]
    others = [f"{folder}/old.jsonl.gz", f"{folder}/notes.txt"]
    for key in [*others, f"{folder}/marker/"]:
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"{}\n"))
    owner = _window(aws, WINDOW_START, WINDOW_END)
    assert (owner.files_read, len(owner.records)) == (1, 1)
    assert sorted((w.code, w.source, w.line) for w in owner.warnings) == sorted(
        (NOT_A_CAPTURE_FILE, f"s3://{BUCKET}/{key}", None) for key in others
    )
    assert all("end in .jsonl" in w.reason for w in owner.warnings)
    # A window the hour does not end in reads the folder too, but says nothing of it.
    assert _window(aws, WINDOW_START, WINDOW_START + timedelta(minutes=30)).warnings == []


# ---- scones report --capture s3://... -------------------------------------------------


def test_an_s3_endpoint_folder_without_a_slash_leaves_its_siblings_out(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    for name in ("a", "b"):
        captures.put(WINDOW_START, name, [capture_line([0.9, 0.1], AT)])
    sibling = f"{CAPTURE_PREFIX}/{ENDPOINT}-staging/{VARIANT}/2026/11/25/12/x.jsonl"
    aws.s3.put_object(Bucket=BUCKET, Key=sibling, Body=capture_line([0.9, 0.1], AT).encode())
    folder = f"s3://{BUCKET}/{CAPTURE_PREFIX}/{ENDPOINT}"
    for uri in (folder, f"{folder}/"):
        series = load_capture(uri, LABELS, s3_client=aws.s3)
        assert (series.files, len(series)) == (2, 2)


def test_the_report_names_an_object_s3_refuses(aws: Aws, captures: CaptureWriterHelper) -> None:
    refused = captures.put(WINDOW_START, "a", [capture_line([0.9, 0.1], AT)])
    _refuse(aws, "GetObject", refused)
    with pytest.raises(CaptureSourceError, match=f"cannot read s3://{BUCKET}/{refused}: "):
        load_capture(f"s3://{BUCKET}/{CAPTURE_PREFIX}", LABELS, s3_client=aws.s3)
