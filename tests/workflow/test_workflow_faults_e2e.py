"""Faults on the offline stack: each ends in exactly one terminal record per object version.

Every test counts what it may: the records of its key (exactly one per version),
the endpoint calls (the execution history's ClassifyImage attempts and the model
server's own invocation counter) and the dead-letter queue's messages. The table
"Faults" in docs/reliability.md lists each fault with its test.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_RETRIES, HISTORY
from scones_core.errors import IMAGES_UNRECORDED
from scones_core.ingest import workflow_input
from scones_core.objects import object_from_s3_record
from workflow_helpers import (
    confident_image,
    drain_dead_letters,
    history_events,
    wait_for_execution,
)

from scones.offline.client import Upload
from scones.offline.packaging import zip_folder
from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import PROJECT_ROOT
from tests.full_disk import disk_full_after_one_file

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-stack")]

# One endpoint attempt gives up after 3 s, so a hung endpoint costs seconds, not minutes,
# while an ordinary answer from a model server on a loaded 2-core machine still fits: with
# 1 s, a slow but healthy answer was sometimes retried as a timeout, and the cases that count
# attempts saw one too many.
ENDPOINT_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    overrides = {
        **FAST_RETRIES,
        **HISTORY,
        "EndpointTimeoutSeconds": str(ENDPOINT_TIMEOUT_S),
        # These tests read the start function's INFO lines ("workflow started"); the
        # template's default is WARNING.
        "LogLevel": "INFO",
    }
    with OfflineStack(StackOptions(enable_faults=True, overrides=overrides)) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_slate(stack: OfflineStack) -> Iterator[None]:
    """No fault and no dead letter is left over from another test."""
    drain_dead_letters(stack)
    yield
    stack.set_faults(None)
    stack.throttle_table_writes(0, "")


# ---- helpers -------------------------------------------------------------------------


def attempts(stack: OfflineStack) -> int:
    """How many tries a transient error gets: the first one plus RetryMaxAttempts."""
    return 1 + int(stack.parameters["RetryMaxAttempts"])


def endpoint_invocations(stack: OfflineStack) -> int:
    """The model server's own count of invocations (faulted or not)."""
    with urllib.request.urlopen(f"{stack.model_url}/_faults", timeout=10) as response:
        return int(json.loads(response.read())["invocations"])


def records_of(stack: OfflineStack, key: str) -> list[dict[str, Any]]:
    return [r for r in stack.api().records() if r.get("key") == key]


def state_failures(events: list[dict[str, Any]], state: str) -> list[str]:
    """The error of each failed attempt of a Task state (Lambda or service integration)."""
    current, errors = "", []
    for event in events:
        entered = event.get("stateEnteredEventDetails")
        if entered:
            current = entered["name"]
        elif current == state and event["type"] in ("LambdaFunctionFailed", "TaskFailed"):
            details = event.get("lambdaFunctionFailedEventDetails") or event.get(
                "taskFailedEventDetails", {}
            )
            errors.append(details.get("error", ""))
    return errors


def state_attempts(events: list[dict[str, Any]], state: str) -> int:
    """How many times a Lambda Task state invoked its function."""
    current, count = "", 0
    for event in events:
        entered = event.get("stateEnteredEventDetails")
        if entered:
            current = entered["name"]
        elif current == state and event["type"] == "LambdaFunctionScheduled":
            count += 1
    return count


def finished_history(stack: OfflineStack, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Wait for the execution behind a record to end (the DLQ send comes after the record)."""
    sfn = stack.api().client("stepfunctions")
    wait_for_execution(sfn, record["execution_arn"])
    return history_events(sfn, record["execution_arn"])


def workflow_letters(messages: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    bodies = [json.loads(m["Body"]) for m in messages]
    return [b for b in bodies if b.get("object", {}).get("key") == key]


def upload(stack: OfflineStack, name: str, data: bytes) -> Upload:
    return stack.api().upload_bytes(name, data)


def by_id(stack: OfflineStack) -> dict[str, dict[str, Any]]:
    return {record["pk"]: record for record in stack.api().records()}


def wait_one(stack: OfflineStack, item: Upload, timeout: float = 60) -> dict[str, Any]:
    return stack.api().wait_for_records([item], timeout=timeout)[item]


def s3_event(
    bucket: str, key: str, etag: str, size: int, version: str | None, sequencer: str = "00"
) -> str:
    """An S3 event notification as S3 sends it to SQS (AWS omits versionId when unversioned)."""
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": etag, "sequencer": sequencer}
    if version:
        obj["versionId"] = version
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }
    return json.dumps({"Records": [record]})


def start_function_log(stack: OfflineStack) -> list[dict[str, Any]]:
    """The start function's structured (Powertools) log entries."""
    name = stack.function_name("StartWorkflowFunction")
    lines = (stack.work_dir / "logs" / f"{name}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def start_function_handled(stack: OfflineStack) -> list[str]:
    """The record id of every S3 record the start function handled, once per delivery
    (before duplicates within a batch are dropped)."""
    return [
        str(record_id)
        for e in start_function_log(stack)
        if e.get("message") == "notifications received"
        for record_id in e["record_ids"]
    ]


def send_to_ingest(stack: OfflineStack, body: str) -> None:
    stack.api().client("sqs").send_message(
        QueueUrl=stack.stack.outputs["IngestQueueUrl"], MessageBody=body
    )


# ---- the endpoint ----------------------------------------------------------------------

CLASSIFIED = ("ACCEPTED", "NEEDS_REVIEW")


@pytest.mark.parametrize(
    ("plan", "status", "error", "tries"),
    [
        pytest.param({"throttle": 2}, CLASSIFIED, None, 3, id="throttled-twice"),
        # The container's own 429, which SageMaker returns as ModelError (OriginalStatusCode).
        pytest.param({"busy": 2}, CLASSIFIED, None, 3, id="container-busy-twice"),
        pytest.param({"internal_failure": 1}, CLASSIFIED, None, 2, id="internal-failure-once"),
        pytest.param(
            {"model_error": 1}, ("FAILED",), "EndpointRejectedRequest", 1, id="model-error"
        ),
        pytest.param(
            {"throttle": -1}, ("FAILED",), "EndpointThrottled", None, id="throttled-throughout"
        ),
        pytest.param(
            {"unavailable": -1}, ("FAILED",), "EndpointUnavailable", None, id="long-outage"
        ),
        pytest.param(
            {"latency_ms": 2500 * ENDPOINT_TIMEOUT_S},
            ("FAILED",),
            "EndpointUnavailable",
            None,
            id="timeouts",
        ),
    ],
)
def test_endpoint_faults_are_retried_only_while_a_retry_can_help(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    plan: dict[str, int],
    status: tuple[str, ...],
    error: str | None,
    tries: int | None,
    request: pytest.FixtureRequest,
) -> None:
    tries = tries or attempts(stack)  # None: every attempt fails, retries run out
    path = confident_image(local_predictions, threshold)
    before = endpoint_invocations(stack)
    stack.set_faults(plan)

    record = wait_one(
        stack, upload(stack, f"endpoint/{request.node.callspec.id}.png", path.read_bytes())
    )
    events = finished_history(stack, record)

    assert record["status"] in status
    assert records_of(stack, record["key"]) == [record]
    assert state_attempts(events, "ClassifyImage") == tries
    assert endpoint_invocations(stack) - before == tries
    letters = workflow_letters(drain_dead_letters(stack), record["key"])
    if error is None:
        assert record["label"] == local_predictions[path][0]
        assert len(state_failures(events, "ClassifyImage")) == tries - 1
        assert letters == []
        return
    assert record["error_code"] == error
    assert state_failures(events, "ClassifyImage") == [error] * tries
    assert "\n" not in record["reason"] and "Traceback" not in record["reason"]
    if "latency_ms" in plan:
        assert "Read timeout" in record["reason"]
    (letter,) = letters
    assert letter["kind"] == "workflow_failed"
    assert letter["failure"]["error_code"] == error
    assert letter["execution_arn"] == record["execution_arn"]


# ---- the results table -------------------------------------------------------------------


def test_table_throttling_is_retried_into_exactly_one_record(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    path = confident_image(local_predictions, threshold)
    key = f"{stack.incoming_prefix}table/throttled.png"
    faults = stack.throttle_table_writes(2, f"{stack.bucket}/{key}#")
    before = endpoint_invocations(stack)

    record = wait_one(stack, upload(stack, key, path.read_bytes()))
    events = finished_history(stack, record)

    assert record["status"] in CLASSIFIED
    assert faults.remaining() == 0
    assert (
        state_failures(events, "RecordAccepted")
        == ["DynamoDB.ProvisionedThroughputExceededException"] * 2
    )
    assert records_of(stack, key) == [record]
    assert endpoint_invocations(stack) - before == 1  # the write is retried, not the workflow
    assert workflow_letters(drain_dead_letters(stack), key) == []


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "InternalServerError"])
def test_a_busy_or_failing_table_is_retried_into_exactly_one_record(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    code: str,
) -> None:
    """The account's request quota and DynamoDB's HTTP 500 are retried like throttling.
    Step Functions names them after the raw code (as offline) or with an ``Exception``
    suffix: the Retry lists both spellings."""
    path = confident_image(local_predictions, threshold)
    key = f"{stack.incoming_prefix}table/{code}.png"
    faults = stack.throttle_table_writes(1, f"{stack.bucket}/{key}#", code)

    record = wait_one(stack, upload(stack, key, path.read_bytes()))

    assert record["status"] in CLASSIFIED
    assert faults.remaining() == 0
    assert state_failures(finished_history(stack, record), "RecordAccepted") == [f"DynamoDB.{code}"]
    assert records_of(stack, key) == [record]
    assert workflow_letters(drain_dead_letters(stack), key) == []


def test_table_throttling_that_outlasts_its_retries_gives_one_failed_record(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    path = confident_image(local_predictions, threshold)
    key = f"{stack.incoming_prefix}table/throttled-throughout.png"
    stack.throttle_table_writes(attempts(stack), f"{stack.bucket}/{key}#")

    record = wait_one(stack, upload(stack, key, path.read_bytes()))
    events = finished_history(stack, record)

    assert record["status"] == "FAILED"
    assert record["error_code"] == "DynamoDB.ProvisionedThroughputExceededException"
    assert len(state_failures(events, "RecordAccepted")) == attempts(stack)
    assert state_attempts(events, "ClassifyImage") == 1
    assert records_of(stack, key) == [record]
    (letter,) = workflow_letters(drain_dead_letters(stack), key)
    assert letter["failure"]["error_code"] == "DynamoDB.ProvisionedThroughputExceededException"


# ---- S3 events and objects -----------------------------------------------------------------


def test_the_same_event_three_times_gives_one_execution_and_one_record(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    api = stack.api()
    sqs = api.client("sqs")
    queue_url = stack.stack.outputs["IngestQueueUrl"]
    path = confident_image(local_predictions, threshold)
    before = endpoint_invocations(stack)
    with stack.delivery_paused():
        item = upload(stack, "dup3/photo.png", path.read_bytes())
        message = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"][0]
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        for _ in range(3):
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
    record = wait_one(stack, item)
    finished_history(stack, record)
    # All three deliveries reach the start function (a poller may take a duplicate late),
    # and then there is room for a late duplicate to show itself.
    deadline = time.monotonic() + 30
    while start_function_handled(stack).count(record["pk"]) < 3:
        assert time.monotonic() < deadline, start_function_handled(stack)
        time.sleep(0.2)
    time.sleep(1)

    sfn = api.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=api.endpoints.state_machine_arn)["executions"]
    name = record["execution_arn"].rsplit(":", 1)[-1]
    assert [e["name"] for e in executions].count(name) == 1
    assert records_of(stack, item.key) == [record]
    assert endpoint_invocations(stack) - before == 1
    assert start_function_handled(stack).count(record["pk"]) == 3  # all three were delivered


def test_deleted_or_overwritten_before_the_read(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """Versioned bucket: each event reads its own version, whatever happened to the key since."""
    s3 = stack.api().client("s3")
    bicycle, motorcycle = (
        next(p for p, (lbl, c) in local_predictions.items() if lbl == label and c >= threshold)
        for label in ("bicycle", "motorcycle")
    )
    with stack.delivery_paused():
        gone = upload(stack, "race/deleted.png", bicycle.read_bytes())
        s3.delete_object(Bucket=gone.bucket, Key=gone.key, VersionId=gone.version_id)
        marked = upload(stack, "race/delete-marker.png", bicycle.read_bytes())
        s3.delete_object(Bucket=marked.bucket, Key=marked.key)  # a delete marker only
        first = upload(stack, "race/overwritten.png", bicycle.read_bytes())
        second = upload(stack, "race/overwritten.png", motorcycle.read_bytes())
    records = stack.api().wait_for_records([gone, marked, first, second], timeout=60)

    assert records[gone]["status"] == "REJECTED"
    assert records[gone]["error_code"] == "ObjectNotFound"
    assert records[marked]["status"] in CLASSIFIED  # the version is still there to read
    for item, path in ((first, bicycle), (second, motorcycle)):
        record = records[item]
        assert record["version_id"] == item.version_id
        assert record["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["label"] == local_predictions[path][0]
    assert len(records_of(stack, first.key)) == 2
    assert len(records_of(stack, gone.key)) == 1 and len(records_of(stack, marked.key)) == 1


def test_an_unversioned_event_for_an_overwritten_key_is_rejected_as_changed(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """No version id in the event: the read is pinned to its ETag (IfMatch) and S3 says 412."""
    path = confident_image(local_predictions, threshold)
    with stack.delivery_paused():
        older = upload(stack, "unversioned/photo.png", path.read_bytes())
        upload(stack, "unversioned/photo.png", b"newer bytes under the same key")
        sqs = stack.api().client("sqs")
        queue_url = stack.stack.outputs["IngestQueueUrl"]
        # The two real (versioned) events are not what this test is about.
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        send_to_ingest(stack, s3_event(older.bucket, older.key, older.etag, 10, version=None))
    unversioned = Upload(older.bucket, older.key, older.etag, older.source)

    record = wait_one(stack, unversioned)

    assert record["pk"] == f"{older.bucket}/{older.key}#etag:{older.etag}"
    assert record["status"] == "REJECTED"
    assert record["error_code"] == "ObjectChanged"
    assert record["reason"].endswith(
        "was overwritten before it could be read; the newer version has its own event and record."
    )

    # The same event run again (AWS does not deduplicate an Express execution's name; moto
    # does, so the duplicate is started under a name of its own) leaves the record as it is.
    event = json.loads(s3_event(older.bucket, older.key, older.etag, 10, None))
    duplicate = (
        stack.api()
        .client("stepfunctions")
        .start_execution(
            stateMachineArn=stack.api().endpoints.state_machine_arn,
            name="duplicate-delivery",
            input=json.dumps(workflow_input(object_from_s3_record(event["Records"][0]), "")),
        )
    )
    wait_for_execution(stack.api().client("stepfunctions"), duplicate["executionArn"])
    assert by_id(stack)[record["pk"]] == record
    # The first bytes uploaded to the key again: the same ETag, so the same record, which
    # their execution replaces with their classification (it stayed "changed" for good).
    with stack.delivery_paused():
        again = upload(stack, "unversioned/photo.png", path.read_bytes())
        assert again.etag == older.etag
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        # S3's sequencer grows with each event of a key.
        again_event = s3_event(older.bucket, older.key, older.etag, 10, None, "0062E99A88DC407460")
        send_to_ingest(stack, again_event)
    deadline = time.monotonic() + 60
    while (now := by_id(stack)[record["pk"]])["status"] == "REJECTED":
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    assert now["status"] == "ACCEPTED" and now["label"] == local_predictions[path][0]
    assert "error_code" not in now


@pytest.mark.parametrize("case", ["archived-object", "deleted-bucket"])
def test_s3_refusals_fail_at_once_without_retries(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    case: str,
) -> None:
    path = confident_image(local_predictions, threshold)
    before = endpoint_invocations(stack)
    if case == "archived-object":
        # A GLACIER object cannot be read until it is restored: S3 answers 403.
        key = f"{stack.incoming_prefix}refused/archived.png"
        put = (
            stack.api()
            .client("s3")
            .put_object(
                Bucket=stack.bucket, Key=key, Body=path.read_bytes(), StorageClass="GLACIER"
            )
        )
        item = Upload(stack.bucket, key, put["ETag"].strip('"'), key, put["VersionId"])
        code = "InvalidObjectState"
    else:
        # A replay (`scones redrive` starts the next attempt itself) of an object whose
        # bucket has been deleted since. (The start function ignores a notification that
        # names another bucket than the stack's, so it cannot bring one in.)
        from scones_core.ingest import start_workflow
        from scones_core.objects import ObjectRef
        from scones_core.settings import StartSettings

        item = Upload(
            "scones-deleted-bucket", f"{stack.incoming_prefix}refused/x.png", "0f", "x", "v1"
        )
        ref = ObjectRef(item.bucket, item.key, item.version_id, item.etag, 10)
        settings = StartSettings(state_machine_arn=stack.api().endpoints.state_machine_arn)
        assert start_workflow(stack.api().client("stepfunctions"), ref, settings, attempt=1).started
        code = "NoSuchBucket"

    record = wait_one(stack, item)
    events = finished_history(stack, record)

    assert record["status"] == "FAILED"
    assert record["error_code"] == "StorageRefused"
    assert code in record["reason"] and "a retry cannot fix that" in record["reason"]
    assert state_attempts(events, "SerializeImage") == 1
    assert state_failures(events, "SerializeImage") == ["StorageRefused"]
    assert endpoint_invocations(stack) - before == 0
    assert [
        r["pk"]
        for r in stack.api().records()
        if r.get("key") == item.key and r.get("bucket") == item.bucket
    ] == [record["pk"]]
    (letter,) = workflow_letters(drain_dead_letters(stack), item.key)
    assert letter["failure"]["error_code"] == "StorageRefused"


# ---- the start function ----------------------------------------------------------------------


def test_a_crash_on_one_message_retries_only_that_message_into_the_dead_letter_queue(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    api = stack.api()
    sqs = api.client("sqs")
    queue_url = stack.stack.outputs["IngestQueueUrl"]
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    max_receives = int(redrive["maxReceiveCount"])
    # An S3 notification whose record has no object: processing it raises (EventError).
    crash = json.dumps(
        {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": stack.bucket}}}]}
    )
    images = [p for p, (lbl, c) in local_predictions.items() if c >= threshold][:3]
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "1"})
    try:
        with stack.delivery_paused():
            uploads = [
                upload(stack, f"batch-crash/{i}-{p.name}", p.read_bytes())
                for i, p in enumerate(images)
            ]
            crash_id = sqs.send_message(QueueUrl=queue_url, MessageBody=crash)["MessageId"]
        records = api.wait_for_records(uploads, timeout=60)
        letters: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not letters and time.monotonic() < deadline:
            letters = [m for m in drain_dead_letters(stack) if m["Body"] == crash]
            time.sleep(0.5)
    finally:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "180"})

    assert len(letters) == 1
    # Delivered (and failed) exactly maxReceiveCount times, then moved to the DLQ.
    failures = [
        e
        for e in start_function_log(stack)
        if e.get("message_id") == crash_id and e.get("level") == "WARN"
    ]
    assert [int(f["receive_count"]) for f in failures] == list(range(1, max_receives + 1))
    assert all("EventError" in f["error"] for f in failures)
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    # The good messages of the crashing batch were handled once each (started, or found
    # a duplicate); a whole-batch retry would have handled them again.
    handled = start_function_handled(stack)
    for item in uploads:
        record = records[item]
        assert record["status"] in CLASSIFIED
        assert handled.count(record["pk"]) == 1
        assert records_of(stack, item.key) == [record]


# ---- a function whose runtime cannot start ------------------------------------------------
# The stack's work folder is full while a new version of a function is unpacked: Lambda's
# function error (Runtime.Unknown) reaches the caller, whose retries, catches and redrive
# apply as on AWS.


@contextmanager
def new_version_unpacked_on_a_full_disk(
    stack: OfflineStack, logical_id: str, folder: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Deploy the function's code again with one file more (a package its runtime has not
    unpacked yet) while the disk is full; afterwards the deployed package is back."""
    lam = stack.api().client("lambda")
    name = stack.function_name(logical_id)
    deployed = zip_folder(PROJECT_ROOT / "functions" / folder)
    buffer = io.BytesIO(deployed)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("RELEASE", "next")
    lam.update_function_code(FunctionName=name, ZipFile=buffer.getvalue())
    disk_full_after_one_file(monkeypatch)
    try:
        yield
    finally:
        monkeypatch.undo()
        lam.update_function_code(FunctionName=name, ZipFile=deployed)


def partial_folders(stack: OfflineStack) -> list[str]:
    return [p.name for p in (stack.work_dir / "lambda").rglob("*") if ".partial-" in p.name]


def event_key(message: dict[str, Any]) -> str | None:
    """The key of the S3 event a message carries (S3 URL-encodes it), or None."""
    try:
        record = json.loads(message["Body"])["Records"][0]
        return urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    except (ValueError, LookupError, TypeError):
        return None


def runtime_start_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"{name}: the function's runtime could not start")
    ]


def test_an_upload_whose_serialize_function_cannot_start_ends_in_one_failed_record(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = confident_image(local_predictions, threshold)
    with new_version_unpacked_on_a_full_disk(
        stack, "SerializeImageFunction", "serialize_image", monkeypatch
    ):
        record = wait_one(stack, upload(stack, "no-room/serialize.png", path.read_bytes()))
        events = finished_history(stack, record)

    assert record["status"] == "FAILED" and record["error_code"] == "Runtime.Unknown"
    assert records_of(stack, record["key"]) == [record]
    # Not a retried error on AWS either: one try, then the FAILED record.
    assert state_failures(events, "SerializeImage") == ["Runtime.Unknown"]
    (failed,) = [e for e in events if e["type"] == "LambdaFunctionFailed"]
    cause = json.loads(failed["lambdaFunctionFailedEventDetails"]["cause"])
    assert "[Errno 28] No space left on device" in cause["errorMessage"]
    assert str(stack.work_dir) in cause["errorMessage"]
    (letter,) = workflow_letters(drain_dead_letters(stack), record["key"])
    assert letter["failure"]["error_code"] == "Runtime.Unknown"
    (said,) = runtime_start_warnings(caplog, stack.function_name("SerializeImageFunction"))
    assert "No space left on device" in said
    assert partial_folders(stack) == []
    # With room again, the next upload is classified.
    again = wait_one(stack, upload(stack, "no-room/serialize-again.png", path.read_bytes()))
    assert again["status"] in CLASSIFIED


def test_an_upload_whose_start_function_cannot_start_reaches_the_dead_letter_queue(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each delivery of the S3 event is a failed batch, by Lambda's rules, until the ingest
    queue's redrive policy moves it to the dead-letter queue (`scones redrive
    --dead-letters` replays it); the poller never meets an API error."""
    sqs = stack.api().client("sqs")
    queue_url = stack.stack.outputs["IngestQueueUrl"]
    path = confident_image(local_predictions, threshold)
    letters: list[dict[str, Any]] = []
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "1"})
    try:
        with new_version_unpacked_on_a_full_disk(
            stack, "StartWorkflowFunction", "start_workflow", monkeypatch
        ):
            # Paused: a receive already waiting would take the event with the old timeout.
            with stack.delivery_paused():
                item = upload(stack, "no-room/start.png", path.read_bytes())
            deadline = time.monotonic() + 45
            while not letters and time.monotonic() < deadline:
                letters = [m for m in drain_dead_letters(stack) if event_key(m) == item.key]
                time.sleep(0.5)
    finally:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "180"})

    assert len(letters) == 1
    assert records_of(stack, item.key) == []
    (said,) = runtime_start_warnings(caplog, stack.function_name("StartWorkflowFunction"))
    assert "No space left on device" in said
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert partial_folders(stack) == []


# ---- the record writes and the dead-letter send --------------------------------------------
# moto's DynamoDB and SQS run in this process (as `table_faults` uses), so a test can make
# them refuse a call with the error the real service sends.


@contextmanager
def refusing(
    owner: type, method: str, refuse: Callable[[dict[str, Any]], Exception | None]
) -> Iterator[None]:
    """Make ``owner.method`` raise what ``refuse(arguments by name)`` returns, if anything."""
    original = getattr(owner, method)
    signature = inspect.signature(original)

    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        error = refuse(signature.bind(self, *args, **kwargs).arguments)
        if error is not None:
            raise error
        return original(self, *args, **kwargs)

    setattr(owner, method, patched)
    try:
        yield
    finally:
        setattr(owner, method, original)


def execution_of(stack: OfflineStack, key: str, timeout: float = 60) -> dict[str, Any]:
    """The finished execution whose input names ``key`` (when no record names it)."""
    sfn = stack.api().client("stepfunctions")
    arn = stack.api().endpoints.state_machine_arn
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for execution in sfn.list_executions(stateMachineArn=arn)["executions"]:
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if key in described["input"] and described["status"] != "RUNNING":
                return dict(described)
        time.sleep(0.2)
    raise AssertionError(f"no finished execution names {key}")


def test_a_batch_image_the_table_refuses_throughout_is_dead_lettered_and_replayed_once(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    """Its classified write and its FAILED write both outlast their retries: the image has
    no record, only its dead letter, while the batch's other images keep theirs; replaying
    the dead letter gives that image its one record and touches no other image's."""
    from scones_core.redrive import Redriver

    api = stack.api()
    paths = list(local_predictions)[:3]
    keys = [f"{stack.incoming_prefix}refused-batch/{i}-{p.name}" for i, p in enumerate(paths)]
    stack.throttle_table_writes(2 * attempts(stack), f"{stack.bucket}/{keys[0]}#")
    with stack.delivery_paused():
        uploads = [upload(stack, key, p.read_bytes()) for key, p in zip(keys, paths, strict=True)]
    kept = api.wait_for_records(uploads[1:], timeout=90)
    execution = execution_of(stack, keys[0])

    assert {r["execution_arn"] for r in kept.values()} == {execution["executionArn"]}
    assert (execution["status"], execution.get("error")) == ("FAILED", IMAGES_UNRECORDED)
    assert "scones redrive --dead-letters" in execution["cause"]  # no FAILED record to find
    assert records_of(stack, keys[0]) == []
    sqs = api.client("sqs")
    url = stack.endpoints.dead_letter_queue_url
    peeked = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
    ).get("Messages", [])
    (letter,) = [json.loads(m["Body"]) for m in peeked]
    assert letter["object"]["key"] == keys[0] and letter["attempt"] == 0
    assert letter["object"]["version"] == uploads[0].version_id
    assert letter["failure"]["error_code"] == "DynamoDB.ProvisionedThroughputExceededException"
    for item in uploads[1:]:
        assert records_of(stack, item.key) == [kept[item]]

    # The dead letter is all that names the image: drain it as `scones redrive
    # --dead-letters` does.
    redriver = Redriver(
        stepfunctions=api.client("stepfunctions"),
        state_machine_arn=api.endpoints.state_machine_arn,
        sqs=sqs,
        dead_letter_queue_url=url,
        wait_seconds=0,
    )
    report = redriver.drain_dead_letters()
    assert [(r.key, r.attempt, r.outcome.value) for r in report.replays] == [
        (keys[0], 1, "started")
    ]
    replayed = wait_one(stack, uploads[0])
    assert replayed["status"] in CLASSIFIED and replayed["attempt"] == 1
    assert records_of(stack, keys[0]) == [replayed]
    for item in uploads[1:]:
        assert records_of(stack, item.key) == [kept[item]]


def test_a_dead_letter_queue_that_refuses_the_message_leaves_the_failed_record(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """The dead-letter send is retried, then caught: the image still ends in ImageFailed
    with its one FAILED record (which `scones redrive` replays) and the execution fails."""
    from moto.sqs.exceptions import QueueDoesNotExist
    from moto.sqs.models import SQSBackend

    queue_name = stack.endpoints.dead_letter_queue_url.rsplit("/", 1)[-1]
    path = confident_image(local_predictions, threshold)
    stack.set_faults({"model_error": 1})
    with refusing(
        SQSBackend,
        "send_message",
        lambda call: QueueDoesNotExist() if call["queue_name"] == queue_name else None,
    ):
        record = wait_one(stack, upload(stack, "refused-letter/photo.png", path.read_bytes()))
        events = finished_history(stack, record)

    assert (record["status"], record["error_code"]) == ("FAILED", "EndpointRejectedRequest")
    assert records_of(stack, record["key"]) == [record]
    assert len(state_failures(events, "NotifyDeadLetter")) == attempts(stack)
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert entered[-3:] == ["ImageFailed", "FailIfAnyImageFailed", "ClassificationFailed"]
    described = (
        stack.api().client("stepfunctions").describe_execution(executionArn=record["execution_arn"])
    )
    assert (described["status"], described.get("error")) == ("FAILED", "ClassificationFailed")
    assert workflow_letters(drain_dead_letters(stack), record["key"]) == []


def test_a_record_write_the_table_refuses_outright_ends_in_one_failed_record(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """A write DynamoDB refuses for what it holds (here its own message for a number below
    1E-130) is no throttling: the image still ends in one FAILED record and one dead letter,
    and the endpoint is not called again."""
    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.models import DynamoDBBackend

    path = confident_image(local_predictions, threshold)
    key = f"{stack.incoming_prefix}refused-write/photo.png"
    before = endpoint_invocations(stack)

    def refuse(call: dict[str, Any]) -> Exception | None:
        item = call["item_attrs"]
        classified = item.get("status", {}).get("S") in CLASSIFIED
        if classified and item["pk"]["S"].startswith(f"{stack.bucket}/{key}#"):
            return MockValidationException(
                "Number underflow. Attempting to store a number with magnitude smaller "
                "than supported range"
            )
        return None

    with refusing(DynamoDBBackend, "put_item", refuse):
        record = wait_one(stack, upload(stack, key, path.read_bytes()))
        events = finished_history(stack, record)

    (refused,) = set(state_failures(events, "RecordAccepted"))
    assert record["status"] == "FAILED" and record["error_code"] == refused
    assert refused.startswith("DynamoDB.")
    assert records_of(stack, key) == [record]
    assert endpoint_invocations(stack) - before == 1
    (letter,) = workflow_letters(drain_dead_letters(stack), key)
    assert letter["failure"]["error_code"] == refused


def test_a_failed_record_whose_write_answer_was_lost_still_sends_its_dead_letter(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """DynamoDB answered the FAILED write with HTTP 500 after applying it (a 500 does not
    say whether it did). The retry meets the execution's own record: it rewrites it, and
    the image still ends as a failure, with its dead letter and a failed execution, not as
    a duplicate in AlreadyRecorded."""
    path = confident_image(local_predictions, threshold)
    key = f"{stack.incoming_prefix}table/lost-answer.png"
    stack.set_faults({"model_error": -1})
    faults = stack.throttle_table_writes(
        1, f"{stack.bucket}/{key}#", "InternalServerError", landed=True
    )

    record = wait_one(stack, upload(stack, key, path.read_bytes()))
    events = finished_history(stack, record)

    assert faults.remaining() == 0
    assert (record["status"], record["error_code"]) == ("FAILED", "EndpointRejectedRequest")
    assert state_failures(events, "RecordFailure") == ["DynamoDB.InternalServerError"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert "AlreadyRecorded" not in entered and "NotifyDeadLetter" in entered
    assert wait_for_execution(stack.api().client("stepfunctions"), record["execution_arn"]) == (
        "FAILED"
    )
    assert records_of(stack, key) == [record]
    (letter,) = workflow_letters(drain_dead_letters(stack), key)
    assert letter["execution_arn"] == record["execution_arn"]


def test_the_same_failure_run_twice_writes_one_failed_record_and_one_dead_letter(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """At-least-once delivery can run one object version's attempt twice at the same time
    (an Express workflow, or a duplicate in another batch). When both fail, one FAILED
    write wins; the other ends in AlreadyRecorded, so there is one dead letter, not two."""
    from scones_core.ingest import workflow_input
    from scones_core.objects import ObjectRef

    path = confident_image(local_predictions, threshold)
    key = "direct/failed-twice.png"  # outside the incoming prefix: no notification
    put = stack.api().client("s3").put_object(Bucket=stack.bucket, Key=key, Body=path.read_bytes())
    ref = ObjectRef(stack.bucket, key, put["VersionId"], put["ETag"].strip('"'), 10)
    document = json.dumps(workflow_input(ref, "2026-12-01T12:00:00.000Z"))
    sfn = stack.api().client("stepfunctions")
    stack.set_faults({"model_error": -1})
    arns = [
        sfn.start_execution(
            stateMachineArn=stack.api().endpoints.state_machine_arn, name=name, input=document
        )["executionArn"]
        for name in ("failed-twice-a", "failed-twice-b")
    ]
    statuses = sorted(wait_for_execution(sfn, arn) for arn in arns)

    (record,) = records_of(stack, key)
    assert (record["status"], record["error_code"]) == ("FAILED", "EndpointRejectedRequest")
    assert record["execution_arn"] in arns
    ended = {arn: history_events(sfn, arn) for arn in arns}
    duplicate = next(arn for arn in arns if arn != record["execution_arn"])
    assert "AlreadyRecorded" in [
        e["stateEnteredEventDetails"]["name"]
        for e in ended[duplicate]
        if "stateEnteredEventDetails" in e
    ]
    assert statuses == ["FAILED", "SUCCEEDED"]
    (letter,) = workflow_letters(drain_dead_letters(stack), key)
    assert letter["execution_arn"] == record["execution_arn"]


# ---- errors no Catch names: the record carries the error's own message -----------------


def killing_itself() -> bytes:
    """A function package whose handler is killed as Lambda kills one that outgrows its
    memory: SIGKILL mid-call."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "app.py",
            "import os, signal\n\n\ndef lambda_handler(event, context):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n",
        )
    return buffer.getvalue()


def test_a_function_killed_mid_call_ends_failed_at_once_with_the_runtimes_message(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """A crash or a memory kill (Runtime.ExitError) is retried by no Retry: the FAILED record
    says so without claiming retries, and carries the runtime's own message."""
    path = confident_image(local_predictions, threshold)
    lam = stack.api().client("lambda")
    name = stack.function_name("ClassifyImageFunction")
    deployed = zip_folder(PROJECT_ROOT / "functions" / "classify_image")
    lam.update_function_code(FunctionName=name, ZipFile=killing_itself())
    try:
        record = wait_one(stack, upload(stack, "killed/photo.png", path.read_bytes()))
        events = finished_history(stack, record)
    finally:
        lam.update_function_code(FunctionName=name, ZipFile=deployed)

    assert (record["status"], record["error_code"]) == ("FAILED", "Runtime.ExitError")
    assert state_failures(events, "ClassifyImage") == ["Runtime.ExitError"]  # one try
    assert record["reason"].startswith("The workflow stopped with Runtime.ExitError (")
    assert "Runtime exited with error: exit status -9" in record["reason"]
    assert "retries" not in record["reason"]
    assert records_of(stack, record["key"]) == [record]
    (letter,) = workflow_letters(drain_dead_letters(stack), record["key"])
    assert letter["failure"]["cause"]["errorMessage"] == record["reason"]


def image_flow_from(stack: OfflineStack, state: str) -> str:
    """The deployed per-image flow (the Map's item processor) as a state machine of its
    own, started at ``state``: runs the real failure states with any error Step Functions
    can give, the ones no fault of the offline stack makes too."""
    sfn = stack.api().client("stepfunctions")
    described = sfn.describe_state_machine(stateMachineArn=stack.api().endpoints.state_machine_arn)
    definition = json.loads(described["definition"])
    flow = definition["States"]["ClassifyEachImage"]["ItemProcessor"]
    machine = {"StartAt": state, "States": flow["States"]}
    name = f"image-flow-from-{state}"
    existing = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    if name in existing:
        return existing[name]
    return sfn.create_state_machine(
        name=name, definition=json.dumps(machine), roleArn=described["roleArn"]
    )["stateMachineArn"]


_KILLED = "RequestId: 5c1d Error: Runtime exited with error: signal: killed"
_TIMED_OUT = "RequestId: 5c1d Error: Task timed out after 32.00 seconds"
_TRACE = '  File "/var/task/app.py", line 9, in lambda_handler\n'


def _payload(error_type: str, message: str) -> str:
    """A Lambda error payload as Lambda writes it for a crash or a timeout."""
    return json.dumps({"errorType": error_type, "errorMessage": message}, separators=(",", ":"))


@pytest.mark.parametrize(
    ("error", "said"),
    [
        # Lambda's error payload is the Cause, as JSON (errorType first, as Lambda writes it),
        # written as it is: never parsed, since a cut one would fail the execution.
        pytest.param(
            {"Error": "Runtime.ExitError", "Cause": _payload("Runtime.ExitError", _KILLED)},
            f"Runtime.ExitError ({_payload('Runtime.ExitError', _KILLED)})",
            id="memory-kill",
        ),
        pytest.param(
            {"Error": "Sandbox.Timedout", "Cause": _payload("Sandbox.Timedout", _TIMED_OUT)},
            f"Sandbox.Timedout ({_payload('Sandbox.Timedout', _TIMED_OUT)})",
            id="function-timeout",
        ),
        # A cut payload is text like any other.
        pytest.param(
            {"Error": "Runtime.ExitError", "Cause": _payload("Runtime.ExitError", _KILLED)[:40]},
            f"Runtime.ExitError ({_payload('Runtime.ExitError', _KILLED)[:40]})",
            id="cut-payload",
        ),
        # A bug: the Python runtime's payload has the stack trace, left to the log group.
        pytest.param(
            {
                "Error": "KeyError",
                "Cause": json.dumps(
                    {
                        "errorMessage": "'image_b64'",
                        "errorType": "KeyError",
                        "requestId": "5c1d",
                        "stackTrace": [_TRACE],
                    }
                ),
            },
            "KeyError;",
            id="bug",
        ),
        # A service's own message is the Cause, as text.
        pytest.param(
            {
                "Error": "Lambda.ServiceException",
                "Cause": "Lambda is unavailable (Service: Lambda, Status Code: 500)",
            },
            "Lambda.ServiceException (Lambda is unavailable (Service: Lambda, Status Code: 500))",
            id="service-error",
        ),
        # A task's TimeoutSeconds: Step Functions gives an empty Cause.
        pytest.param(
            {"Error": "States.Timeout", "Cause": ""}, "States.Timeout;", id="task-timeout"
        ),
        pytest.param({"Error": "States.TaskFailed"}, "States.TaskFailed;", id="no-cause"),
    ],
)
def test_an_error_no_catch_names_is_recorded_with_its_own_message(
    stack: OfflineStack, error: dict[str, str], said: str
) -> None:
    from scones_core.objects import ObjectRef

    key = f"{stack.incoming_prefix}unexpected/{error['Error']}-{len(error.get('Cause', ''))}.png"
    ref = ObjectRef(stack.bucket, key, "v1", "e" * 32, 10)
    state = {**workflow_input(ref, "2026-12-01T12:00:00.000Z"), "error": error}
    sfn = stack.api().client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=image_flow_from(stack, "DescribeUnexpectedFailure"),
        input=json.dumps(state),
    )["executionArn"]
    assert wait_for_execution(sfn, arn) == "SUCCEEDED"  # ImageFailed ends the flow

    (record,) = records_of(stack, key)
    assert (record["status"], record["error_code"]) == ("FAILED", error["Error"])
    assert record["reason"].startswith(f"The workflow stopped with {said}")
    assert record["reason"].endswith(
        f"the log group of the state machine (and, for a Standard workflow, the execution "
        f"history of {arn.rsplit(':', 1)[-1]}) has the details."
    )
    assert "retries" not in record["reason"] and "File" not in record["reason"]
    (letter,) = workflow_letters(drain_dead_letters(stack), key)
    assert letter["failure"] == {
        "error_code": error["Error"],
        "cause": {"errorMessage": record["reason"]},
    }
