"""Parsing data capture: every line of every file, lenient on layout, strict on content."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from scones_core.monitoring.capture import (
    EARLY_FILE_ALLOWANCE,
    OUTPUT_NOT_CAPTURED,
    CaptureBatch,
    CaptureFormatError,
    capture_folders,
    file_opened_at,
    parse_capture_line,
    parse_capture_text,
    read_capture_objects,
    read_capture_window,
)
from scones_core.monitoring.data_warnings import UNKNOWN_CAPTURE_VERSION
from scones_core.monitoring.locations import S3Location
from scones_core.monitoring.timestamps import floor_hour

from scones.serving.capture import capture_file_key
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
    Prediction,
    capture_key,
    capture_line,
)

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _read_window(aws: Aws) -> CaptureBatch:
    """Every capture record of [WINDOW_START, WINDOW_END) under the test's capture prefix."""
    return read_capture_window(
        aws.s3,
        S3Location.parse(f"s3://{BUCKET}/{CAPTURE_PREFIX}"),
        endpoint=ENDPOINT,
        variant=VARIANT,
        labels=LABELS,
        start=WINDOW_START,
        end=WINDOW_END,
    )


def test_parses_the_model_servers_line() -> None:
    record = parse_capture_line(capture_line([0.97, 0.03], AT, event_id="e-1"), LABELS)
    assert record.inference_time == AT
    assert record.probabilities == (0.97, 0.03)
    assert (record.label, record.confidence, record.event_id) == ("bicycle", 0.97, "e-1")


def test_base64_output_and_metadata_inside_capture_data_are_accepted() -> None:
    document = json.loads(capture_line([0.2, 0.8], AT, output_encoding="BASE64"))
    document["captureData"]["eventMetadata"] = document.pop("eventMetadata")
    record = parse_capture_line(json.dumps(document), LABELS)
    assert (record.label, record.confidence, record.inference_time) == ("motorcycle", 0.8, AT)


def test_sagemaker_fractional_times_csv_encoding_and_batch_of_one_are_accepted() -> None:
    """``CSV`` encoding keeps the body verbatim: the endpoint's JSON answer under a content
    type listed in ``CsvContentTypes`` is still that answer."""
    document = json.loads(capture_line([0.6, 0.4], AT))
    document["eventMetadata"]["inferenceTime"] = "2026-11-25T12:00:00.250+00:00"
    document["captureData"]["endpointOutput"].update(data="[0.6, 0.4]\n", encoding="CSV")
    record = parse_capture_line(json.dumps(document), LABELS)
    assert record.inference_time == AT + timedelta(milliseconds=250)
    assert record.probabilities == (0.6, 0.4)
    document["captureData"]["endpointOutput"].update(data="[[0.6, 0.4]]", encoding="JSON")
    assert parse_capture_line(json.dumps(document), LABELS).probabilities == (0.6, 0.4)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: "not json {", "not JSON"),
        (lambda d: json.dumps([1, 2]), "not a JSON object"),
        (lambda d: json.dumps({"eventMetadata": d["eventMetadata"]}), "no captureData"),
        (lambda d: _set(d, ["captureData", "endpointOutput"], None), "endpointOutput"),
        (lambda d: _set(d, ["eventMetadata", "inferenceTime"], "yesterday"), "inferenceTime"),
        (lambda d: _set(d, ["captureData", "endpointOutput", "data"], "[0.5]"), "expected 2"),
        (lambda d: _set(d, ["captureData", "endpointOutput", "data"], "[0.5, 1.5]"), "outside"),
        (lambda d: _set(d, ["captureData", "endpointOutput", "data"], '["a", 1]'), "number"),
        (lambda d: _set(d, ["captureData", "endpointOutput", "data"], "{}"), "not a list"),
        (lambda d: _set(d, ["captureData", "endpointOutput", "encoding"], "BASE64"), "base64"),
        (lambda d: _set(d, ["captureData", "endpointOutput", "encoding"], "XML"), "unknown"),
        # Not SageMaker's, but a line a reader must survive (the parser's own limits):
        (lambda d: '{"n": ' + "9" * 5000 + "}", "an integer longer than"),
        (lambda d: "[" * 50_000 + "]" * 50_000, "nested deeper"),
        (
            lambda d: _set(d, ["captureData", "endpointOutput", "data"], "[" + "1" * 5000 + "]"),
            "an integer",
        ),
        (
            lambda d: _set(d, ["captureData", "endpointOutput", "data"], "[" * 50_000),
            "nested deeper",
        ),
    ],
)
def test_malformed_lines_say_what_is_wrong(mutate, problem: str) -> None:
    line = mutate(json.loads(capture_line([0.9, 0.1], AT)))
    with pytest.raises(CaptureFormatError, match=problem):
        parse_capture_line(line, LABELS)


_ACCEPTED_ANSWERS: list[object] = [[0.25, 0.75], {"predictions": [0.25, 0.75]}, [[0.25, 0.75]]]
_REJECTED_ANSWERS: list[object] = [
    [0.5],
    [0.5, 0.6],
    [True, False],
    ["0.5", "0.5"],
    {"scores": [0.25, 0.75]},
    [1.5, -0.5],
]


def _set(document: dict, path: list[str], value: object) -> str:
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(document)


def test_an_input_only_record_is_named_for_what_it_is() -> None:
    """``CaptureMode: Input`` writes valid records with no ``endpointOutput``."""
    document = json.loads(capture_line([0.9, 0.1], AT))
    del document["captureData"]["endpointOutput"]
    with pytest.raises(CaptureFormatError) as caught:
        parse_capture_line(json.dumps(document), LABELS)
    assert (
        str(caught.value) == OUTPUT_NOT_CAPTURED == "output not captured (CaptureMode Input only)"
    )


def test_a_file_is_read_to_its_last_line_and_bad_lines_are_counted(caplog) -> None:
    good = [capture_line([0.9, 0.1], AT + timedelta(seconds=i)) for i in range(5)]
    text = "\n".join([good[0], "garbage", good[1], "", good[2], '{"captureData": 1}', *good[3:]])
    batch = parse_capture_text(text, LABELS, source="memory")
    assert len(batch.records) == 5
    assert (batch.lines_read, batch.malformed_lines, batch.files_read) == (7, 2, 1)
    assert [r.inference_time for r in batch.records] == [
        AT + timedelta(seconds=i) for i in range(5)
    ]
    warnings = [r for r in caplog.records if r.getMessage() == "skipping malformed capture line"]
    assert [(w.source, w.line) for w in warnings] == [("memory", 2), ("memory", 6)]
    # The log's location is the code that found the bad line, not the helper that logs it.
    assert {(w.module, w.funcName) for w in warnings} == {("capture", "parse_capture_lines")}


def test_a_capture_format_version_it_does_not_know_is_read_and_named_once_per_file() -> None:
    lines = [json.loads(capture_line([0.9, 0.1], AT + timedelta(seconds=i))) for i in range(3)]
    assert {line["eventVersion"] for line in lines} == {"0"}  # what SageMaker writes today
    quiet = parse_capture_text("\n".join(json.dumps(x) for x in lines), LABELS, source="m")
    assert (len(quiet.records), quiet.warnings) == (3, [])
    for line in lines[1:]:
        line["eventVersion"] = "1"
    batch = parse_capture_text("\n".join(json.dumps(x) for x in lines), LABELS, source="m")
    assert len(batch.records) == 3 and batch.malformed_lines == 0
    [warning] = batch.warnings
    assert (warning.code, warning.source, warning.line) == (UNKNOWN_CAPTURE_VERSION, "m", 2)
    assert "eventVersion '1'" in warning.reason


def test_hour_folders_cover_the_window_and_the_hour_after() -> None:
    capture = S3Location.parse(f"s3://{BUCKET}/{CAPTURE_PREFIX}/")
    folders = capture_folders(
        capture, ENDPOINT, VARIANT, WINDOW_START - timedelta(minutes=30), WINDOW_END
    )
    base = f"{CAPTURE_PREFIX}/{ENDPOINT}/{VARIANT}/2026/11/25"
    # 11:30 is more than EARLY_FILE_ALLOWANCE after 11:00: no earlier folder is needed.
    assert [(f.prefix, f.opened_from) for f in folders] == [
        (f"{base}/11/", None),
        (f"{base}/12/", None),
        (f"{base}/13/", None),
    ]


def test_a_window_on_the_hour_also_reads_the_previous_folders_last_minutes() -> None:
    capture = S3Location.parse(f"s3://{BUCKET}/{CAPTURE_PREFIX}")
    tail, *rest = capture_folders(capture, ENDPOINT, VARIANT, WINDOW_START, WINDOW_END)
    base = f"{CAPTURE_PREFIX}/{ENDPOINT}/{VARIANT}/2026/11/25"
    assert (tail.prefix, tail.opened_from) == (f"{base}/11/", WINDOW_START - EARLY_FILE_ALLOWANCE)
    assert tail.start_after == f"{base}/11/{(WINDOW_START - EARLY_FILE_ALLOWANCE).minute:02d}"
    assert [f.prefix for f in rest] == [f"{base}/12/", f"{base}/13/"]


def test_file_names_are_read_as_the_model_server_and_sagemaker_write_them() -> None:
    opened = datetime(2026, 11, 25, 11, 59, 58, 123000, tzinfo=UTC)
    key = capture_file_key(ENDPOINT, VARIANT, opened)  # the offline server's writer
    assert file_opened_at(key, floor_hour(opened)) == opened
    hour = floor_hour(opened)
    sagemaker_key = f"{ENDPOINT}/{VARIANT}/2026/11/25/11/07-31-009-9c4b5ab8-4b4c-4e53-8c1e.jsonl"
    assert file_opened_at(sagemaker_key, hour) == hour + timedelta(minutes=7, seconds=31.009)
    for name in ("big.jsonl", "59-58-000-x.json", "61-00-000-x.jsonl", "5-58-000-x.jsonl"):
        assert file_opened_at(f"{ENDPOINT}/{VARIANT}/2026/11/25/11/{name}", hour) is None


def opened_name(at: datetime) -> str:
    """SageMaker's capture file name (without ``.jsonl``) for a buffer opened ``at``."""
    return f"{at:%M-%S}-{at.microsecond // 1000:03d}-{uuid.uuid4()}"


def test_records_of_the_window_in_the_previous_hours_last_file_are_read_once(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """A buffer opened at 11:59:58 is filed and named in the 11 o'clock folder but holds
    a request of 12:00:05; a window starting at 12:00 must count it (once)."""
    last = WINDOW_START - timedelta(seconds=2)
    straddling = captures.put(
        last,
        opened_name(last),
        [
            capture_line([0.9, 0.1], last, event_id="before"),
            capture_line([0.8, 0.2], WINDOW_START + timedelta(seconds=5), event_id="after"),
        ],
    )
    tail = WINDOW_START - EARLY_FILE_ALLOWANCE + timedelta(seconds=1)
    captures.put(tail, opened_name(tail), [capture_line([0.7, 0.3], tail, event_id="tail")])
    # Older files of that hour cannot hold the window's records: never listed or read.
    early = WINDOW_START - EARLY_FILE_ALLOWANCE - timedelta(minutes=1)
    captures.put(early, opened_name(early), [capture_line([0.6, 0.4], early, event_id="x")])
    captures.put(last, "not-in-sagemakers-layout", ["{never read"])
    # The same request again in the window's own folder (a copied file) counts once.
    copy = captures.put(
        WINDOW_START,
        opened_name(WINDOW_START + timedelta(seconds=6)),
        [capture_line([0.8, 0.2], WINDOW_START + timedelta(seconds=5), event_id="after")],
    )
    listings: list[dict] = []
    aws.s3.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: listings.append(params)
    )

    batch = _read_window(aws)
    assert [(r.event_id, r.source) for r in batch.records] == [
        ("after", f"s3://{BUCKET}/{straddling}")
    ]
    assert (batch.files_read, batch.outside_window, batch.malformed_lines) == (3, 2, 0)
    assert batch.duplicate_records == 1
    assert batch.warnings[0].source == f"s3://{BUCKET}/{copy}"
    previous = f"{CAPTURE_PREFIX}/{ENDPOINT}/{VARIANT}/2026/11/25/11/"
    assert listings[0]["Prefix"] == previous
    assert listings[0]["StartAfter"] == f"{previous}{tail.minute:02d}"


def test_window_reads_every_line_of_every_file_across_hours(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    bikes = predictions["bicycle"]
    motos = predictions["motorcycle"]
    before = WINDOW_START - timedelta(minutes=5)
    # 11:00 folder: two lines before the window, one inside (written late).
    captures.put(before, "a", [capture_line(bikes[0].probabilities, before)] * 2)
    captures.put(before, "b", [capture_line(bikes[1].probabilities, WINDOW_START)])
    # 12:00 folder: three files of several lines, one with two malformed lines.
    inside = [
        capture_line(p.probabilities, WINDOW_START + timedelta(minutes=i), event_id=f"m{i}")
        for i, p in enumerate(motos[:20])
    ]
    captures.put(WINDOW_START, "c", inside[:7])
    captures.put(WINDOW_START, "d", [*inside[7:12], "{oops", "", "[]"])
    captures.put(WINDOW_START, "e", inside[12:])
    # 13:00 folder: a record from 12:59 written late, and one after the window.
    captures.put(
        WINDOW_END,
        "f",
        [
            capture_line(bikes[2].probabilities, WINDOW_END - timedelta(seconds=1)),
            capture_line(bikes[3].probabilities, WINDOW_END),
        ],
    )
    aws.s3.put_object(
        Bucket=BUCKET, Key=f"{CAPTURE_PREFIX}/{ENDPOINT}/{VARIANT}/notes.txt", Body=b"x"
    )

    batch = _read_window(aws)
    # The 11:00 folder's files are not named as opened in that hour's last minutes: not read.
    assert batch.files_read == 4
    assert batch.malformed_lines == 2
    assert batch.outside_window == 1
    assert len(batch.records) == 21
    assert sorted(
        str(r.event_id) for r in batch.records if str(r.event_id).startswith("m")
    ) == sorted(f"m{i}" for i in range(20))
    expected = [max(p.probabilities) for p in motos[:20]] + [max(bikes[2].probabilities)]
    assert sorted(r.confidence for r in batch.records) == pytest.approx(sorted(expected))


def test_every_bad_line_of_a_flood_is_named_in_a_warning_and_a_log(caplog) -> None:
    text = "\n".join(["bad"] * 50 + [capture_line([0.9, 0.1], AT)])
    batch = parse_capture_text(text, LABELS, source="s3://b/flood.jsonl")
    assert (batch.malformed_lines, len(batch.records)) == (50, 1)
    assert [(w.code, w.source, w.line) for w in batch.warnings] == [
        ("MALFORMED_CAPTURE_LINE", "s3://b/flood.jsonl", n) for n in range(1, 51)
    ]
    assert all(w.reason.startswith("not JSON") for w in batch.warnings)
    logged = [r for r in caplog.records if r.getMessage() == "skipping malformed capture line"]
    assert [(r.source, r.line, r.reason) for r in logged] == [
        (w.source, w.line, w.reason) for w in batch.warnings
    ]


def test_a_repeated_event_id_keeps_the_first_record_and_names_the_copy(caplog) -> None:
    first = capture_line([0.9, 0.1], AT, event_id="e-1")
    other = capture_line([0.3, 0.7], AT + timedelta(seconds=1), event_id="e-2")
    copy = capture_line([0.2, 0.8], AT + timedelta(seconds=2), event_id="e-1")
    batch = parse_capture_text("\n".join([first, other, "", copy]), LABELS, source="s3://b/k")
    assert [(r.event_id, r.probabilities) for r in batch.records] == [
        ("e-1", (0.9, 0.1)),
        ("e-2", (0.3, 0.7)),
    ]
    assert (batch.lines_read, batch.duplicate_records, batch.malformed_lines) == (3, 1, 0)
    (warning,) = batch.warnings
    # Line 4: blank lines count, so the number matches the file in an editor.
    assert (warning.code, warning.source, warning.line) == (
        "DUPLICATE_CAPTURE_RECORD",
        "s3://b/k",
        4,
    )
    assert warning.reason == "eventId 'e-1' was already read at s3://b/k line 1"
    (logged,) = [r for r in caplog.records if r.getMessage() == "skipping duplicate capture record"]
    assert (logged.source, logged.line, logged.reason) == ("s3://b/k", 4, warning.reason)


@pytest.mark.parametrize("event_id", [None, "", "  "])
def test_records_without_an_event_id_cannot_be_matched_and_are_all_kept(
    event_id: str | None,
) -> None:
    """No eventId, or an empty one (a replay tool's): no identity to match on."""
    document = json.loads(capture_line([0.9, 0.1], AT))
    if event_id is None:
        del document["eventMetadata"]["eventId"]
    else:
        document["eventMetadata"]["eventId"] = event_id
    line = json.dumps(document)
    batch = parse_capture_text(f"{line}\n{line}\n", LABELS, source="memory")
    assert (len(batch.records), batch.duplicate_records, batch.warnings) == (2, 0, [])


def test_a_capture_file_copied_under_another_key_counts_once(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    rows = predictions["bicycle"][:6]
    lines = [
        capture_line(row.probabilities, WINDOW_START + timedelta(minutes=i), event_id=f"b{i}")
        for i, row in enumerate(rows)
    ]
    original = captures.put(WINDOW_START, "a-original", lines)
    # A replay copied the whole file into the same hour, and half of it into the next.
    copied = captures.put(WINDOW_START, "b-copy", [*lines, "{torn"])
    late = captures.put(WINDOW_END, "late-copy", lines[3:])

    batch = _read_window(aws)
    assert (batch.files_read, batch.lines_read) == (3, 16)
    assert [r.event_id for r in batch.records] == [f"b{i}" for i in range(6)]
    assert {r.source for r in batch.records} == {f"s3://{BUCKET}/{original}"}
    assert [r.confidence for r in batch.records] == [max(r.probabilities) for r in rows]
    assert (batch.duplicate_records, batch.malformed_lines) == (9, 1)
    assert [(w.code, w.source, w.line) for w in batch.warnings] == [
        # A file's own warnings come first; its duplicates are found when it joins the window.
        ("MALFORMED_CAPTURE_LINE", f"s3://{BUCKET}/{copied}", 7),
        *(("DUPLICATE_CAPTURE_RECORD", f"s3://{BUCKET}/{copied}", n) for n in range(1, 7)),
        *(("DUPLICATE_CAPTURE_RECORD", f"s3://{BUCKET}/{late}", n) for n in range(1, 4)),
    ]
    assert batch.warnings[-1].reason == (
        f"eventId 'b5' was already read at s3://{BUCKET}/{original} line 6"
    )


def test_files_are_read_at_once_but_merged_in_key_order(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """Several GETs wait on S3 together; the first file in key order still keeps a record
    both files hold, though its read is the slowest to answer."""
    import threading
    import time

    from scones_core.monitoring.capture import CAPTURE_READ_THREADS

    shared = capture_line([0.9, 0.1], WINDOW_START, event_id="same")
    keys = [
        captures.put(WINDOW_START, f"f{i:02d}", [shared, capture_line([0.2, 0.8], WINDOW_START)])
        for i in range(12)
    ]
    flight = {"now": 0, "most": 0}
    lock = threading.Lock()

    def before(params: dict, **_: object) -> None:
        with lock:
            flight["now"] += 1
            flight["most"] = max(flight["most"], flight["now"])
        time.sleep(0.3 if params["Key"] == keys[0] else 0.05)  # the first answers last

    def after(**_: object) -> None:
        with lock:
            flight["now"] -= 1

    aws.s3.meta.events.register("provide-client-params.s3.GetObject", before)
    aws.s3.meta.events.register("after-call.s3.GetObject", after)
    try:
        batch = read_capture_objects(aws.s3, BUCKET, keys, LABELS)
    finally:
        aws.s3.meta.events.unregister("provide-client-params.s3.GetObject", before)
        aws.s3.meta.events.unregister("after-call.s3.GetObject", after)
    assert 1 < flight["most"] <= CAPTURE_READ_THREADS
    assert (batch.files_read, len(batch.records), batch.duplicate_records) == (12, 13, 11)
    kept = next(r for r in batch.records if r.event_id == "same")
    assert kept.source == f"s3://{BUCKET}/{keys[0]}"
    assert [w.source for w in batch.warnings] == [f"s3://{BUCKET}/{k}" for k in keys[1:]]


def test_the_capture_benchmark_reads_the_same_records_both_ways(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scones.cli.main import main

    assert main(["bench", "capture", "--files", "24", "--latency-ms", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "same records in the same order both ways: True" in out


def test_a_file_deleted_after_listing_is_skipped(aws: Aws, captures: CaptureWriterHelper) -> None:
    kept = captures.put(WINDOW_START, "kept", [capture_line([0.9, 0.1], WINDOW_START)])
    batch = read_capture_objects(aws.s3, BUCKET, [capture_key(WINDOW_START, "gone"), kept], LABELS)
    assert (batch.files_read, len(batch.records)) == (1, 1)


def test_a_gzip_compressed_file_is_one_warning_not_a_line_per_chunk(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    good = captures.put(WINDOW_START, "good", [capture_line([0.9, 0.1], WINDOW_START)])
    lines = [capture_line([0.9, 0.1], WINDOW_START + timedelta(seconds=i)) for i in range(50)]
    packed = capture_key(WINDOW_START, "packed")
    aws.s3.put_object(Bucket=BUCKET, Key=packed, Body=gzip.compress("\n".join(lines).encode()))
    batch = read_capture_objects(aws.s3, BUCKET, [good, packed], LABELS)
    assert (batch.files_read, len(batch.records), batch.malformed_lines) == (2, 1, 1)
    (warning,) = batch.warnings
    assert (warning.code, warning.source, warning.line) == (
        "MALFORMED_CAPTURE_LINE",
        f"s3://{BUCKET}/{packed}",
        None,
    )
    assert "gzip-compressed" in warning.reason


@pytest.mark.parametrize("encoding", ["JSON", "CSV", "BASE64"])
@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        *((json.dumps(answer), True) for answer in _ACCEPTED_ANSWERS),
        *((json.dumps(answer), False) for answer in _REJECTED_ANSWERS),
        ("[0.25, 0.75]\n", True),
        # A text/csv answer: not the endpoint's contract, so it classified nothing.
        ("0.25,0.75", False),
        ("0.25,0.75\n", False),
    ],
)
def test_the_monitor_reads_back_exactly_the_answers_the_classify_step_accepts(
    body: str, accepted: bool, encoding: str
) -> None:
    """One contract for the endpoint's body (``inference.parse_probabilities``): an
    answer that classified an image is never a malformed capture line, and the reverse,
    however SageMaker encoded it in the capture (verbatim for JSON and CSV content
    types, base64 otherwise)."""
    from scones_core.errors import ModelResponseInvalid
    from scones_core.inference import parse_probabilities

    try:
        classified = tuple(parse_probabilities(body.encode(), LABELS).values())
    except ModelResponseInvalid:
        classified = None
    line = json.loads(capture_line([0.5, 0.5], AT))
    line["captureData"]["endpointOutput"].update(
        data=base64.b64encode(body.encode()).decode() if encoding == "BASE64" else body,
        encoding=encoding,
    )
    try:
        captured = parse_capture_line(json.dumps(line), LABELS).probabilities
    except CaptureFormatError:
        captured = None
    assert classified == captured
    assert (classified == (0.25, 0.75)) is accepted
