"""Start the classification workflow for uploaded object versions.

The start function starts **one execution per SQS batch** (``start_batch``): the
state machine's Map runs every image of the batch side by side, each ending in its
own record. An Express workflow is billed per execution, so a batch of ten costs a
tenth of ten executions.

A single object gets an execution named after its version (``start_workflow``), so
Step Functions (Standard) refuses a second execution for it; a batch's name is
derived from its object versions, so a redelivered batch is refused the same way.
A duplicate that arrives in another batch, and every duplicate under Express (which
does not deduplicate names), is stopped by the record's conditional write. A replay
(``scones_core.redrive``) goes through ``start_workflow`` with ``attempt`` N > 0,
which names the execution ``<name>-r<N>``.

Under Express the start function *waits* for each execution (``StartSyncExecution``,
``StartSettings.waits``): the ingest mapping's ``MaximumConcurrency`` then bounds the
images in flight, so a burst of uploads waits on the queue instead of being throttled
by the functions' reserved concurrency, and an execution that ends without recording
every image (timed out, or failed before its records) sends its messages back to
the queue.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from scones_core.errors import CLASSIFICATION_FAILED, EventError, aws_error_code
from scones_core.monitoring.timestamps import format_millis, parse_timestamp
from scones_core.notifications import EVENTBRIDGE_KEY_FIELD, s3_notification
from scones_core.objects import NULL_VERSION, ObjectRef, holds_version, object_from_s3_record
from scones_core.records import WORKFLOW_FAILED_KIND, BatchInput, WorkflowInput
from scones_core.settings import StartSettings


@dataclass(frozen=True)
class StartResult:
    execution_name: str
    # False when an execution with this name but another input already existed.
    # A Standard workflow answers an identical repeat (same name, same input)
    # with the original execution, so that also counts as started.
    started: bool
    # A run waited on (``StartSettings.waits``): how it ended, its error and cause, and
    # when it started and ended.
    status: str | None = None
    error: str | None = None
    cause: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def left_images_unrecorded(self) -> bool:
        """Whether a run waited on ended before every image had its record: it timed out,
        or failed other than by ``ClassificationFailed`` (which the state machine raises
        only once every image is recorded, some of them FAILED): ``ImagesUnrecorded`` (an
        image whose FAILED record the table refused too), or an error of its own."""
        if self.status is None or self.status == "SUCCEEDED":
            return False
        return not (self.status == "FAILED" and self.error == CLASSIFICATION_FAILED)

    def describe_end(self) -> str:
        """How a run waited on ended, for a log line or a message's error."""
        detail = ": ".join(part for part in (self.error, self.cause) if part)
        return f"execution {self.execution_name} ended {self.status}" + (
            f" ({detail})" if detail else ""
        )


def workflow_input(ref: ObjectRef, event_time: str, attempt: int = 0) -> WorkflowInput:
    """The execution input. Every object goes through the workflow, whatever its
    name: the Serialize step judges it by its content, so none ends without a record."""
    return {"object": ref.to_json(), "event_time": event_time, "attempt": attempt}


def start_workflow(
    sfn: Any, ref: ObjectRef, settings: StartSettings, event_time: str = "", attempt: int = 0
) -> StartResult:
    """Start ``attempt`` of one object: an execution of one image, named after it."""
    name = ref.execution_name_for(attempt)
    return _start(sfn, settings, name, workflow_input(ref, event_time, attempt))


# An execution's input stays under this many bytes (UTF-8 JSON, as Step Functions counts
# them): a batch of worst-case keys (1,024 bytes of characters that JSON escapes six-fold)
# is split into several executions, so the batch level's state stays far below the 64 KiB
# the project allows a state (`scones bench payload`) and AWS's 256 KiB.
MAX_BATCH_INPUT_BYTES = 32 * 1024

# Express's bound on an execution's duration: a run waited on answers within it.
EXPRESS_MAX_SECONDS = 300


# The waiting client's timeouts: the run's answer comes right after Express ends it.
SYNC_CONNECT_SECONDS = 3
SYNC_READ_SECONDS = EXPRESS_MAX_SECONDS + 2
# A run waited on is started only with this much of the function's time left: the call at
# its longest, and then the messages' send-back (``delay_redeliveries``, SEND_BACK_CONFIG).
RUN_TIME_NEEDED_SECONDS = SYNC_CONNECT_SECONDS + SYNC_READ_SECONDS + 15

# A message the start function sends back stays hidden IngestRetrySeconds after its first
# receive, doubled after each of the next ones up to this many doublings. The queue's own
# visibility timeout covers a whole run under Express (about 34 minutes); with these delays
# the maxReceiveCount (5) receives of a message that keeps failing end in the dead-letter
# queue within minutes (30 s, 1, 2 and 4 minutes by default).
RETRY_DOUBLINGS = 3


def start_client_config(settings: StartSettings) -> Config:
    """The Step Functions client's settings for the start function.

    A run waited on answers only when it ends: botocore's default 60 s read timeout would
    cut it short, and any retry of the call (the SDK retries timeouts and dropped
    connections) would start a second run beside the first. So one attempt, and a failed
    call sends the batch back to the queue. A Standard start is idempotent by name, and
    keeps the SDK's retries."""
    if settings.waits:
        return Config(
            connect_timeout=SYNC_CONNECT_SECONDS,
            read_timeout=SYNC_READ_SECONDS,
            retries={"total_max_attempts": 1},
        )
    return Config(connect_timeout=5)


# The SQS client that sends messages back: short, so it fits the time a run leaves.
SEND_BACK_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2})


def retry_delay_seconds(receive_count: int, first_seconds: int) -> int:
    """How long a message sent back after its ``receive_count``-th receive stays hidden:
    ``first_seconds`` (IngestRetrySeconds) after the first, doubling."""
    doublings = min(max(receive_count, 1) - 1, RETRY_DOUBLINGS)
    return int(first_seconds) * 2**doublings


@dataclass(frozen=True)
class SentBack:
    """A message the start function reports failed: its receipt and receive count."""

    message_id: str
    receipt_handle: str
    receive_count: int


def sent_back(records: Sequence[dict[str, Any]], message_ids: set[str]) -> list[SentBack]:
    """The messages of an SQS batch (its ``Records``) named in ``message_ids``."""
    messages = []
    for record in records:
        if record.get("messageId") not in message_ids:
            continue
        attributes = record.get("attributes")
        count = attributes.get("ApproximateReceiveCount") if isinstance(attributes, dict) else None
        messages.append(
            SentBack(
                message_id=record["messageId"],
                receipt_handle=str(record.get("receiptHandle", "")),
                receive_count=int(str(count)) if str(count).isdigit() else 1,
            )
        )
    return messages


def delay_redeliveries(
    sqs: Any, queue_url: str, messages: Sequence[SentBack], first_seconds: int
) -> list[str]:
    """Hide each sent-back message for its retry delay (``retry_delay_seconds``) instead of
    the queue's visibility timeout; the ids of those SQS would not change (they come back
    after the visibility timeout, as Lambda would have them)."""
    unchanged: list[str] = []
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [
            {
                "Id": str(index),
                "ReceiptHandle": message.receipt_handle,
                "VisibilityTimeout": retry_delay_seconds(message.receive_count, first_seconds),
            }
            for index, message in enumerate(chunk)
        ]
        try:
            answer = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError):
            unchanged += [message.message_id for message in chunk]
            continue
        unchanged += [chunk[int(failed["Id"])].message_id for failed in answer.get("Failed", [])]
    return unchanged


@dataclass(frozen=True)
class PendingImage:
    """An object version to classify, the S3 event time it was announced with, and the
    SQS message that named it (so a failed start returns exactly that message)."""

    ref: ObjectRef
    event_time: str = ""
    message_id: str = ""
    # For an S3 EventBridge event whose key has "+" or "%": the object the key names read
    # URL-encoded, where ``ref`` reads it as stored (``notifications._notification_key``).
    # ``settle_key_readings`` keeps the one that holds the object version.
    encoded_reading: ObjectRef | None = None


@dataclass(frozen=True)
class BatchStart:
    """One execution of a batch: started (``result``) or not (``error``)."""

    images: tuple[PendingImage, ...]
    result: StartResult | None = None
    error: Exception | None = None
    # A waited call that failed after it was sent (a read timeout, a dropped connection):
    # its run may be going on, for up to Express's 5 minutes. Its messages must stay hidden
    # past that (the queue's visibility timeout), not come back after a short delay to
    # start a second run beside it.
    may_be_running: bool = False


def batch_execution_name(images: Sequence[PendingImage]) -> str:
    """A deterministic name for the execution of a batch of first attempts.

    Derived from the sorted delivery ids (``ObjectRef.delivery_id``: the record ids, with
    an unversioned upload's sequencer), so a redelivered batch gets the same name
    (Standard refuses it); at most 80 characters, as Step Functions requires. The ids
    are hashed as a JSON list: a key may hold any character, so ids joined by one
    could make two different batches one text, one name, and one "duplicate" start.
    """
    ids = sorted(image.ref.delivery_id for image in images)
    digest = hashlib.sha256(json.dumps(ids).encode("ascii")).hexdigest()[:40]
    return f"batch-{len(ids)}-{digest}"


def distinct_images(images: Sequence[PendingImage]) -> list[PendingImage]:
    """The first notification of each object version, in order: S3 delivers at least
    once, and a duplicate in the same batch is classified once."""
    seen: set[str] = set()
    distinct = []
    for image in images:
        if image.ref.record_id not in seen:
            seen.add(image.ref.record_id)
            distinct.append(image)
    return distinct


def _input_bytes(image: PendingImage) -> int:
    return len(json.dumps(workflow_input(image.ref, image.event_time), separators=(",", ":")))


def split_batch(
    images: Sequence[PendingImage], max_bytes: int = MAX_BATCH_INPUT_BYTES
) -> list[list[PendingImage]]:
    """Consecutive groups whose execution input stays within ``max_bytes`` (a group of
    one may not: one image's input is bounded by S3's 1,024-byte key)."""
    groups: list[list[PendingImage]] = []
    size = 0
    overhead = len('{"objects":[]}')
    for image in images:
        item = _input_bytes(image) + 1  # and its comma
        if groups and size + item <= max_bytes:
            groups[-1].append(image)
            size += item
        else:
            groups.append([image])
            size = overhead + item
    return groups


def start_batch(sfn: Any, images: Sequence[PendingImage], settings: StartSettings) -> StartResult:
    """Start one execution that classifies every image of ``images`` (attempt 0).

    A batch of one is started exactly as ``start_workflow`` starts it (same name, same
    input), so a lone upload's execution is named after its object version. The caller
    keeps the input small (``split_batch``).
    """
    if not images:
        raise ValueError("a batch needs at least one image")
    if len(images) == 1:
        return start_workflow(sfn, images[0].ref, settings, images[0].event_time)
    document: BatchInput = {
        "objects": [workflow_input(image.ref, image.event_time) for image in images]
    }
    return _start(sfn, settings, batch_execution_name(images), document)


class NotEnoughTime(RuntimeError):
    """The start function has too little time left to wait for a run: the batch goes back
    to the queue unstarted rather than be cut off mid-run."""


def start_batches(
    sfn: Any,
    images: Sequence[PendingImage],
    settings: StartSettings,
    seconds_left: Callable[[], float] | None = None,
) -> list[BatchStart]:
    """Classify ``images`` (one SQS batch): duplicates dropped, as few executions as the
    input size allows. One execution failing to start does not stop the others.

    Runs waited on (``settings.waits``) run side by side, so a batch split for its long
    keys still ends within one execution's time (the start function's timeout)."""
    groups = split_batch(distinct_images(images))

    def batch_start(group: list[PendingImage]) -> BatchStart:
        if settings.waits and seconds_left is not None:
            left = seconds_left()
            if left < RUN_TIME_NEEDED_SECONDS:
                message = f"{left:.0f} s left, and a run may take {RUN_TIME_NEEDED_SECONDS} s"
                return BatchStart(tuple(group), error=NotEnoughTime(message))
        try:
            return BatchStart(tuple(group), result=start_batch(sfn, group, settings))
        except ClientError as exc:
            return BatchStart(tuple(group), error=exc)
        except BotoCoreError as exc:
            unsent = isinstance(exc, (EndpointConnectionError, ConnectTimeoutError))
            return BatchStart(tuple(group), error=exc, may_be_running=settings.waits and not unsent)

    if settings.waits and len(groups) > 1:
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            return list(pool.map(batch_start, groups))
    return [batch_start(group) for group in groups]


def _start(
    sfn: Any, settings: StartSettings, name: str, document: WorkflowInput | BatchInput
) -> StartResult:
    text = json.dumps(document, separators=(",", ":"))
    if settings.waits:
        # Express does not deduplicate names, so a repeat runs again (and ends
        # AlreadyRecorded). A refusal (ClientError) started no run; a read timeout or a
        # dropped connection may have (``BatchStart.may_be_running``).
        run = sfn.start_sync_execution(
            stateMachineArn=settings.state_machine_arn, name=name, input=text
        )
        return StartResult(
            execution_name=name,
            started=True,
            status=run["status"],
            error=run.get("error"),
            cause=run.get("cause"),
            started_at=run.get("startDate"),
            ended_at=run.get("stopDate"),
        )
    try:
        sfn.start_execution(stateMachineArn=settings.state_machine_arn, name=name, input=text)
    except ClientError as exc:
        if aws_error_code(exc) == "ExecutionAlreadyExists":
            return StartResult(execution_name=name, started=False)
        raise
    return StartResult(execution_name=name, started=True)


def check_sqs_batch(event: Any) -> None:
    """``EventError`` unless ``event`` is an SQS batch (``Records[].messageId`` and
    ``body``), naming what it is instead: the start function reads the ingest queue."""
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list) and all(
        isinstance(r, dict) and isinstance(r.get("messageId"), str) and "body" in r for r in records
    ):
        return
    first = records[0] if isinstance(records, list) and records else None
    if isinstance(first, dict) and "s3" in first:
        seen = "an S3 event notification (Records[].s3): S3 must notify the ingest queue, "
        seen += "not the function"
    elif isinstance(event, dict) and event.get("source") == "aws.s3":
        seen = "an EventBridge event from S3: the rule must target the ingest queue"
    elif isinstance(first, dict) and "Sns" in first:
        seen = "an SNS notification: subscribe the ingest queue to the topic"
    elif isinstance(event, dict):
        seen = f"an object with keys {sorted(event)[:8]}"
    else:
        seen = f"a JSON {type(event).__name__}"
    raise EventError(
        "the start function reads SQS batches from the ingest queue "
        f"(Records[].messageId and body); this event is {seen}"
    )


def is_s3_test_event(body: Any) -> bool:
    """S3 sends ``s3:TestEvent`` once when a notification is configured: nothing to do."""
    try:
        body = s3_notification(body)
    except EventError:
        return False
    return isinstance(body, dict) and body.get("Event") == "s3:TestEvent"


def notification_records(body: Any) -> list[dict[str, Any]]:
    """The ``Records`` of an S3 event notification (an SQS message body, parsed; also
    inside an SNS envelope or as an S3 EventBridge event, ``notifications``).

    ``EventError`` when the body is not one, or has no records (S3 never sends that);
    ``s3:TestEvent`` has no records: ``[]``.
    """
    if is_s3_test_event(body):
        return []
    if isinstance(body, dict) and body.get("kind") == WORKFLOW_FAILED_KIND:
        # SQS's "start DLQ redrive" moved the workflow's dead letter back to the ingest queue.
        raise EventError(
            f"the message is the workflow's own dead letter ({WORKFLOW_FAILED_KIND}), not an "
            "S3 event notification; replay it with `scones redrive --dead-letters`"
        )
    body = s3_notification(body)
    records = body.get("Records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise EventError("the message is not an S3 event notification")
    if not records:
        raise EventError("the S3 event notification has no records")
    return records


# S3 names an upload ``ObjectCreated:Put`` (also ``:Post``, ``:Copy``,
# ``:CompleteMultipartUpload``) in notifications to SQS; the ``s3:`` form is how the
# bucket's notification configuration writes it. Every other S3 event (restore,
# lifecycle, tagging, ACL, removal) announces no new object version.
_UPLOAD_EVENT_PREFIXES = ("ObjectCreated:", "s3:ObjectCreated:")


def is_upload(record: dict[str, Any]) -> bool:
    """Whether one S3 event record announces a new object version (``EventError`` if it
    comes from another service). A record without ``eventName`` counts as an upload:
    the bucket's notification subscribes to uploads only."""
    source = record.get("eventSource", "aws:s3")
    if source != "aws:s3":
        raise EventError(f"the event record comes from {source!r}, not from S3 (aws:s3)")
    name = record.get("eventName")
    return name is None or str(name).startswith(_UPLOAD_EVENT_PREFIXES)


def ignored_events(body: Any) -> list[str]:
    """The ``eventName`` of every record of ``body`` that announces no upload."""
    return [str(r.get("eventName")) for r in notification_records(body) if not is_upload(r)]


def event_time_text(value: Any) -> str:
    """An upload's time as S3's notifications write it (``2026-11-25T12:00:00.123Z``), so
    records sort and compare alike whichever delivery or backfill started them: an
    EventBridge event's ``time`` has no fraction (``2026-11-25T12:00:00Z``), which sorts
    after every later millisecond of its second. "" when ``value`` is not a time."""
    try:
        return format_millis(parse_timestamp(value))
    except ValueError:
        return ""


def notification_images(body: Any, message_id: str = "") -> list[PendingImage]:
    """Every object version an S3 event notification announces as uploaded (``EventError``
    if it is not a notification or names an object improperly); other S3 events (see
    ``ignored_events``) name none."""
    images = []
    for record in notification_records(body):
        if is_upload(record):
            ref = object_from_s3_record(record)
            time = event_time_text(record.get("eventTime"))
            images.append(PendingImage(ref, time, message_id, _encoded_reading(record, ref)))
    return images


def _encoded_reading(record: dict[str, Any], ref: ObjectRef) -> ObjectRef | None:
    """The object an S3 EventBridge event names if its key is URL-encoded, where that
    differs from the stored reading ``ref`` (a key with ``+`` or ``%``); None for S3's own
    notifications, whose key is URL-encoded, and for keys both readings agree on."""
    sent = record["s3"]["object"].get(EVENTBRIDGE_KEY_FIELD)
    if not isinstance(sent, str) or ("+" not in sent and "%" not in sent):
        return None
    try:  # "%E9" alone is no UTF-8: then the key can only be meant as stored
        key = unquote_plus(sent, errors="strict")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        # "%00" or "%0A" read as a control character: not asked of S3 (a request S3 may
        # refuse as invalid would hold the message until the dead-letter queue), so the
        # stored reading stands and the upload ends in its record whichever it is.
        return None
    return replace(ref, key=key) if key and key != ref.key else None


def settle_key_readings(s3: Any, images: Sequence[PendingImage]) -> list[PendingImage]:
    """``images`` with each ambiguous EventBridge key settled: the URL-encoded reading
    where the object version is there (one HEAD each), the stored reading otherwise (also
    when neither is, since the upload was deleted: the workflow records it gone). Every
    delivery of one upload then names the same object, and the same execution. In an
    unversioned bucket both readings may hold the announced bytes (an ETag names content,
    not a key): then which upload the event meant cannot be told, and both are kept (a
    second HEAD), so neither upload goes without a record; the one announced by its own
    event too is started twice, and its conditional record write keeps one record. S3's
    refusals other than "not there" are raised (``holds_version``), so the message that
    carried the event is delivered again. Without a client (``s3`` None) nothing can be
    asked, and the stored reading stands."""
    return [settled for image in images for settled in _settled(s3, image)]


def _settled(s3: Any, image: PendingImage) -> list[PendingImage]:
    other = image.encoded_reading
    if other is None:
        return [image]
    as_stored = replace(image, encoded_reading=None)
    if s3 is None or not holds_version(s3, other):
        return [as_stored]
    encoded = replace(image, ref=other, encoded_reading=None)
    if other.version != NULL_VERSION or not holds_version(s3, image.ref):
        return [encoded]
    return [encoded, as_stored]


def split_by_scope(
    images: Sequence[PendingImage], settings: StartSettings
) -> tuple[list[PendingImage], list[PendingImage]]:
    """(this stack's uploads, the objects outside its bucket and incoming prefix). An SNS
    topic or EventBridge rule carries S3 events of every bucket and key; the bucket's own
    notification is filtered to the prefix. Both the start function and a replay of a
    dead-lettered notification start only the first. An EventBridge key not yet settled
    is here if either reading is (``incoming%2Fa.png`` names ``incoming/a.png`` when it is
    URL-encoded): split again once ``settle_key_readings`` has chosen."""
    here: list[PendingImage] = []
    elsewhere: list[PendingImage] = []
    for image in images:
        readings = (image.ref, image.encoded_reading) if image.encoded_reading else (image.ref,)
        inside = any(settings.is_upload_here(ref.bucket, ref.key) for ref in readings)
        (here if inside else elsewhere).append(image)
    return here, elsewhere


def uploads_in_scope(
    s3: Any, images: Sequence[PendingImage], settings: StartSettings
) -> tuple[list[PendingImage], list[PendingImage]]:
    """(this stack's uploads, the rest), as the start function and a replay of a
    dead-lettered notification both take them: split by scope, each EventBridge key of
    the uploads settled to the reading S3 holds (``settle_key_readings``, a HEAD each,
    asked only for keys in scope; S3's refusals other than "not there" are raised), then
    split again, since the reading S3 holds decides the scope."""
    here, elsewhere = split_by_scope(images, settings)
    here, settled_elsewhere = split_by_scope(settle_key_readings(s3, here), settings)
    return here, elsewhere + settled_elsewhere


@dataclass(frozen=True)
class NotificationStart:
    ref: ObjectRef
    result: StartResult


def start_first_executions(
    sfn: Any, images: Sequence[PendingImage], settings: StartSettings
) -> list[NotificationStart]:
    """Start the first execution of each of ``images`` (an S3 event notification's, in
    this stack's scope: ``split_by_scope``), one execution each: ``scones redrive
    --dead-letters`` replays a dead-lettered S3 event this way, for the objects it names
    that have no record yet (the start function gathers a whole SQS batch into one
    execution instead)."""
    return [
        NotificationStart(image.ref, start_workflow(sfn, image.ref, settings, image.event_time))
        for image in images
    ]
