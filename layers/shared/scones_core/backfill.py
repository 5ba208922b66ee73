"""Backfill: classify the objects that were already in the bucket before the workflow.

The backfill state machine (``statemachine/backfill.asl.json``) lists a prefix with a
Distributed Map (S3 ``ListObjectsV2`` item reader) and hands batches of listed objects to
the backfill function, which calls :func:`backfill_batch`. For each object it reads the
current version (``HeadObject``: the listing has no version id), skips the object when its
record already exists (one ``BatchGetItem`` per 100 keys, never a scan), and starts the
classification workflow for the rest through the start function's own code
(``ingest.start_workflow``: attempt 0, the deterministic execution name). So a second run
over the same prefix starts nothing for what is recorded or (Standard) already running:
the backfill is resumable, and a rerun after a partial failure only does what is left.

A Standard workflow refuses a *closed* execution's name for 90 days, whatever its input. An
object with no record whose first execution closed without writing one (stopped by hand, or
its record write failed) would so never be classified again; the backfill starts the next
attempt instead (``<name>-r<N>``, as a replay is named), up to :data:`MAX_ATTEMPT`. A running
execution the backfill itself started answers the same name and input with itself, so a
rerun starts nothing twice; one the start function started (another input) gets a second
run, whose record write is conditional like every other.

An object whose ``HeadObject`` fails for another reason than "not found" (access denied,
an SSE-C object without its key, throttling) is still started: its current version comes
from ``ListObjectVersions`` (a list of the bucket, which S3 answers whatever the object's
own permissions or encryption), and the workflow's own read then ends it in a record, a
FAILED one naming S3's error when the object stays unreadable, which ``scones redrive``
replays once the cause is fixed. So one unreadable object fails no batch: on AWS a failed
batch counts all its objects against the Map's tolerated failure percentage, and one such
object in a prefix of under twenty batches would fail the whole backfill. Only when the
listing fails too is the key left unread: the others are started first, then the batch
fails with ``ObjectsUnreadable`` naming each such key and both S3 errors, and the Map
counts it as failed without retrying it (the state machine's first retrier): the SDK has
retried the reads already, and a retry would start the batch's other objects again. A
later backfill reads the key again. A ``StartExecution``
that fails (throttled past the SDK's retries) fails the batch as ``WorkflowsNotStarted``,
which also names any unreadable objects; the Map retries that, and the objects the
first try started are started again (on Express a second run ends ``AlreadyRecorded``
if the first one recorded, else one record either way).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scones_core.errors import ObjectsUnreadable, WorkflowsNotStarted, aws_error_code
from scones_core.ingest import event_time_text, start_workflow
from scones_core.monitoring.timestamps import format_millis
from scones_core.objects import NULL_VERSION, ObjectRef, object_missing
from scones_core.records import (
    ERROR_CODE_ATTRIBUTE,
    PARTITION_KEY,
    STATUS_ATTRIBUTE,
    awaits_another_upload,
    record_from_item,
)
from scones_core.settings import StartSettings

BATCH_GET_LIMIT = 100
# The last attempt the backfill starts for an object with no record whose earlier execution
# names are all taken (closed without a record); past it the object is named as not started.
MAX_ATTEMPT = 3
# The backoff before asking again for keys BatchGetItem left unprocessed: full jitter under
# this many seconds, doubled each round, at most the cap.
UNPROCESSED_BACKOFF_SECONDS = 0.05
UNPROCESSED_BACKOFF_CAP_SECONDS = 2.0


@dataclass
class BatchReport:
    started: list[str] = field(default_factory=list)  # record ids
    recorded: list[str] = field(default_factory=list)  # already had a record
    # record id -> attempt, for objects started as a later attempt: every earlier execution
    # name was taken by one that wrote no record (or, still running, was started elsewhere).
    later_attempt: dict[str, int] = field(default_factory=dict)
    outside_prefix: list[str] = field(default_factory=list)  # keys, not classified here
    gone: list[str] = field(default_factory=list)  # keys deleted since the listing
    # key -> HeadObject's error, for keys started from their listed current version
    head_refused: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> both reads' errors
    not_started: dict[str, str] = field(default_factory=dict)  # key -> StartExecution's error
    malformed: int = 0  # items that are not an object with a string Key (never a listing's)

    def to_json(self) -> dict[str, Any]:
        return {
            "started": len(self.started),
            "recorded": len(self.recorded),
            "later_attempt": self.later_attempt,
            "outside_prefix": self.outside_prefix,
            "gone": self.gone,
            "head_refused": self.head_refused,
            "unreadable": self.unreadable,
            "not_started": self.not_started,
            "malformed": self.malformed,
        }


def listed_items(event: Any) -> tuple[str, list[Any]]:
    """The bucket and the listed objects of a Distributed Map batch
    (``{"Items": [...], "BatchInput": {"bucket": ...}}``)."""
    if not isinstance(event, Mapping):
        raise ValueError(
            f"expected {{'Items': [...], 'BatchInput': {{'bucket': ...}}}}, "
            f"got a JSON {type(event).__name__}"
        )
    items = event.get("Items")
    batch = event.get("BatchInput") or {}
    bucket = batch.get("bucket") if isinstance(batch, Mapping) else None
    if not isinstance(items, list) or not isinstance(bucket, str) or not bucket:
        raise ValueError("expected {'Items': [...], 'BatchInput': {'bucket': ...}}")
    return bucket, items


def _is_listed_object(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("Key"), str) and bool(item["Key"])


def _event_time(item: Mapping[str, Any]) -> str:
    """The listed object's ``LastModified`` written as an S3 event's ``eventTime`` is
    (``2026-11-30T08:15:00.000Z``), so records sort and compare alike whichever path
    started them. Step Functions' S3 item reader lists it in epoch seconds (a JSON number,
    ``1.789180622E9``), boto3 as a datetime and moto's reader as text; "" when unreadable."""
    modified = item.get("LastModified")
    try:
        if isinstance(modified, bool):
            return ""
        if isinstance(modified, int | float):
            return format_millis(datetime.fromtimestamp(modified, tz=UTC))
        if isinstance(modified, datetime):
            return format_millis(modified)
        if isinstance(modified, str):
            return event_time_text(modified)
    except (OverflowError, OSError, ValueError):
        pass
    return ""


def current_version(s3: Any, bucket: str, item: Mapping[str, Any]) -> tuple[ObjectRef, str] | None:
    """The listed key's current version, as an S3 event would name it, and its upload
    time as the event's ``eventTime`` (None when gone). Both come from one HeadObject: a
    key overwritten since the listing is the new version, uploaded at its own time."""
    try:
        head = s3.head_object(Bucket=bucket, Key=item["Key"])
    except ClientError as exc:
        if object_missing(exc):
            return None
        raise
    return _as_uploaded(
        bucket,
        item,
        version_id=head.get("VersionId"),
        etag=head.get("ETag"),
        size=head.get("ContentLength"),
        modified=head.get("LastModified"),
    )


def listed_current_version(
    s3: Any, bucket: str, item: Mapping[str, Any]
) -> tuple[ObjectRef, str] | None:
    """The listed key's current version from ``ListObjectVersions``, for a key S3 would not
    head (None when gone: no version, or a delete marker is current). One entry is asked
    for: S3 lists a prefix's versions by key, then newest first, so the key itself (a prefix
    of every longer key it starts) comes first, its current version or delete marker first."""
    key = str(item["Key"])
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key, MaxKeys=1)
    for marker in listing.get("DeleteMarkers", []):
        if marker.get("Key") == key and marker.get("IsLatest"):
            return None
    for version in listing.get("Versions", []):
        if version.get("Key") != key or not version.get("IsLatest"):
            continue
        modified = version.get("LastModified")
        if isinstance(modified, datetime):  # to HeadObject's precision, the whole second
            modified = modified.replace(microsecond=0)
        return _as_uploaded(
            bucket,
            item,
            version_id=version.get("VersionId"),
            etag=version.get("ETag"),
            size=version.get("Size"),
            modified=modified,
        )
    return None


def _as_uploaded(
    bucket: str,
    item: Mapping[str, Any],
    *,
    version_id: Any,
    etag: Any,
    size: Any,
    modified: Any,
) -> tuple[ObjectRef, str]:
    """The listed object as an S3 event would name it, and its upload time as the event's
    ``eventTime``, from what S3 said of its current version: one construction, so that
    HeadObject's answer and the version listing's name an upload alike."""
    version = str(version_id or NULL_VERSION)
    return ObjectRef(
        bucket=bucket,
        key=str(item["Key"]),
        version=version,
        # The item reader spells it ``Etag``; boto3's listing ``ETag``.
        etag=str(etag or item.get("Etag") or item.get("ETag") or "").strip('"'),
        size=int(size or item.get("Size") or 0),
        sequencer=_upload_mark(version, modified),
    ), _event_time({"LastModified": modified} if modified else item)


def _upload_mark(version: str, modified: Any) -> str:
    """What tells this upload of an unversioned key from another upload of the same bytes
    (a listing has no S3 sequencer): its LastModified, so the backfill's execution is a
    delivery of its own (``ObjectRef.delivery_id``) and may replace an ObjectChanged
    record an earlier delivery of those bytes left. A version id already tells them apart
    (S3 names the null version, a bucket never versioned or suspended, "null")."""
    if version != NULL_VERSION or not isinstance(modified, datetime):
        return ""
    return f"modified:{format_millis(modified)}"


def recorded_ids(
    dynamodb: Any,
    table: str,
    record_ids: Iterable[str],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> set[str]:
    """Which of ``record_ids`` have an item in the results table, of any status but an
    ObjectChanged rejection: an unversioned upload whose key was overwritten before it was
    read, and that may hold those bytes again now (``records.awaits_another_upload``).

    Keys DynamoDB could not read in time (``UnprocessedKeys``, a throttled table: the SDK
    does not retry them) are asked for again after an exponential backoff with full jitter,
    as DynamoDB asks; asked again at once they would only be throttled again.
    """
    ids = list(dict.fromkeys(record_ids))
    found: set[str] = set()
    for start in range(0, len(ids), BATCH_GET_LIMIT):
        request: dict[str, Any] = {
            table: {
                "Keys": [{PARTITION_KEY: {"S": i}} for i in ids[start : start + BATCH_GET_LIMIT]],
                "ProjectionExpression": "#pk, #status, #error",
                "ExpressionAttributeNames": {
                    "#pk": PARTITION_KEY,
                    "#status": STATUS_ATTRIBUTE,
                    "#error": ERROR_CODE_ATTRIBUTE,
                },
            }
        }
        rounds = 0
        while request:
            response = dynamodb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table, []):
                if not awaits_another_upload(record_from_item(item)):
                    found.add(item[PARTITION_KEY]["S"])
            request = response.get("UnprocessedKeys") or {}
            if request:
                ceiling = min(
                    UNPROCESSED_BACKOFF_CAP_SECONDS, UNPROCESSED_BACKOFF_SECONDS * 2**rounds
                )
                sleep(random.uniform(0, ceiling))
                rounds += 1
    return found


def start_first_free_attempt(
    sfn: Any, ref: ObjectRef, settings: StartSettings, event_time: str
) -> int | None:
    """Start the first attempt of ``ref`` (an object with no record) whose execution name
    Step Functions does not refuse; the attempt, or None when none up to ``MAX_ATTEMPT`` is
    free. A running execution with the same name and input counts as started."""
    for attempt in range(MAX_ATTEMPT + 1):
        if start_workflow(sfn, ref, settings, event_time, attempt).started:
            return attempt
    return None


def backfill_batch(
    event: Mapping[str, Any],
    *,
    s3: Any,
    dynamodb: Any,
    sfn: Any,
    table: str,
    prefix: str,
    settings: StartSettings,
) -> BatchReport:
    bucket, items = listed_items(event)
    report = BatchReport()
    refs: list[tuple[ObjectRef, str]] = []
    for item in items:
        if not _is_listed_object(item):
            report.malformed += 1
            continue
        key = str(item["Key"])
        if not key.startswith(prefix):
            report.outside_prefix.append(key)
            continue
        try:
            found = current_version(s3, bucket, item)
        except (ClientError, BotoCoreError) as exc:
            refused = _aws_error(exc)
            try:
                found = listed_current_version(s3, bucket, item)
            except (ClientError, BotoCoreError) as listing_exc:
                report.unreadable[key] = f"{refused}; ListObjectVersions: {_aws_error(listing_exc)}"
                continue
            if found is not None:
                report.head_refused[key] = refused
        if found is None:
            report.gone.append(key)
            continue
        refs.append(found)
    done = recorded_ids(dynamodb, table, (ref.record_id for ref, _ in refs))
    for ref, event_time in refs:
        if ref.record_id in done:
            report.recorded.append(ref.record_id)
            continue
        try:
            attempt = start_first_free_attempt(sfn, ref, settings, event_time)
        except (ClientError, BotoCoreError) as exc:
            # Throttled past the SDK's retries, or refused: the rest are still tried.
            report.not_started[ref.key] = _aws_error(exc)
            continue
        if attempt is None:
            report.not_started[ref.key] = (
                f"ExecutionAlreadyExists (attempts 0 to {MAX_ATTEMPT} were all started "
                "before and none wrote a record)"
            )
            continue
        report.started.append(ref.record_id)
        if attempt:
            report.later_attempt[ref.record_id] = attempt
    handled = (
        f"The batch's other objects were handled (started {len(report.started)}, "
        f"already recorded {len(report.recorded)})."
    )
    unreadable = "; ".join(f"s3://{bucket}/{k}: {e}" for k, e in report.unreadable.items())
    if report.not_started:
        named = "; ".join(f"s3://{bucket}/{k}: {e}" for k, e in report.not_started.items())
        also = (
            f" {len(report.unreadable)} could not be read (HeadObject, then "
            f"ListObjectVersions): {unreadable}."
            if report.unreadable
            else ""
        )
        raise WorkflowsNotStarted(
            f"the workflow could not be started (StartExecution) for {len(report.not_started)} "
            f"of {len(items)} listed objects: {named}.{also} {handled}",
            report,
        )
    if report.unreadable:
        raise ObjectsUnreadable(
            f"{len(report.unreadable)} of {len(items)} listed objects could not be read "
            f"(HeadObject, then ListObjectVersions), so they were not started: {unreadable}. "
            f"{handled}",
            report,
        )
    return report


def _aws_error(exc: Exception) -> str:
    """One line: the error code (or HTTP status) and message of a failed AWS call."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = aws_error_code(exc) or f"HTTP {status}"
        message = " ".join(str(exc.response.get("Error", {}).get("Message") or "").split())
        return f"{code} ({message[:160]})" if message and message != code else code
    return " ".join(str(exc).split())[:200]
