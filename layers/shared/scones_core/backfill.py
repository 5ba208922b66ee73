"""Backfill: classify the uploads that have no record (they came before the workflow, or
their S3 event was lost).

The backfill state machine (``statemachine/backfill.asl.json``) lists a prefix with a
Distributed Map (S3 ``ListObjectsV2`` item reader) and hands batches of listed keys to the
backfill function, which calls :func:`backfill_batch`. For each key it lists its uploads
(``ListObjectVersions``: the item reader names keys, not versions): the versions since its
newest delete marker, the newest :data:`MAX_VERSIONS_PER_KEY` of them. It skips each upload
whose record already exists (one ``BatchGetItem`` per 100, never a scan), and starts the
classification workflow for the rest through the start function's own code
(``ingest.start_workflow``: attempt 0, the deterministic execution name). Every version is
an upload with a record of its own, as its S3 event would have given it, so a key
overwritten after the event of an earlier version was lost still gets that version
classified. A second run over the same prefix starts nothing for what is recorded or
(Standard) already running: the backfill is resumable, and a rerun after a partial failure
only does what is left.

A Standard workflow refuses a *closed* execution's name for 90 days, whatever its input. A
version with no record whose first execution closed without writing one (stopped by hand,
or its record write failed) would so never be classified again; the backfill starts the
next attempt instead (``<name>-r<N>``, as a replay is named), up to :data:`MAX_ATTEMPT`. A
running execution the backfill itself started answers the same name and input with itself,
so a rerun starts nothing twice; one the start function started (another input) gets a
second run, whose record write is conditional like every other.

S3 answers a listing whatever an object's own permissions or encryption, so a version S3
will not let anyone read (a bucket policy denying the key, an SSE-C object) is started too,
and the workflow's own read ends it in a record: a FAILED one naming S3's error while it
stays unreadable, which ``scones redrive`` replays once the cause is fixed. One such object
fails no batch (on AWS a failed batch counts all its objects against the Map's tolerated
failure percentage). Only a key whose versions cannot be listed (after the SDK's own
retries) is left unread: the others are started first, then the batch fails with
``ObjectsUnreadable`` naming each such key and S3's error, and the Map counts it as failed
without retrying it (the state machine's first retrier): a retry would start the batch's
other objects again. A later backfill reads the key again. A ``StartExecution`` that fails
(throttled past the SDK's retries) fails the batch as ``WorkflowsNotStarted``, which also
names any unread keys; the Map retries that, and the versions the first try started are
started again (on Express a second run ends ``AlreadyRecorded`` if the first one recorded,
else one record either way).
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
from scones_core.objects import NULL_VERSION, ObjectRef
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
# The newest uploads of one key the backfill examines. A key overwritten in place every
# minute (a camera's "latest.jpg") keeps every version under the incoming prefix unless
# UploadRetentionDays expires them; a batch examines at most BackfillBatchSize times this
# many, so its lookups, its starts and its load on the endpoint stay bounded. Keys with more
# are named in the batch's log (``versions_beyond``).
MAX_VERSIONS_PER_KEY = 10
# No workflow is started with less of the function's time left than this: what is left of
# the batch then fails it as WorkflowsNotStarted, which the Map retries (the retry skips
# what has a record), instead of the function timing out part way, unlogged.
START_MARGIN_SECONDS = 10.0


@dataclass
class BatchReport:
    started: list[str] = field(default_factory=list)  # record ids (one per version)
    recorded: list[str] = field(default_factory=list)  # versions that already had a record
    # record id -> attempt, for objects started as a later attempt: every earlier execution
    # name was taken by one that wrote no record (or, still running, was started elsewhere).
    later_attempt: dict[str, int] = field(default_factory=dict)
    outside_prefix: list[str] = field(default_factory=list)  # keys, not classified here
    gone: list[str] = field(default_factory=list)  # keys deleted since the listing
    # keys with more than MAX_VERSIONS_PER_KEY uploads: only the newest were examined
    versions_beyond: list[str] = field(default_factory=list)
    # listed objects not read, and versions not started: the function's time ran short
    out_of_time: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> the listing's error
    # key (and version) -> StartExecution's error
    not_started: dict[str, str] = field(default_factory=dict)
    malformed: int = 0  # items that are not an object with a string Key (never a listing's)

    def to_json(self) -> dict[str, Any]:
        return {
            "started": len(self.started),
            "recorded": len(self.recorded),
            "later_attempt": self.later_attempt,
            "outside_prefix": self.outside_prefix,
            "gone": self.gone,
            "versions_beyond": self.versions_beyond,
            "out_of_time": self.out_of_time,
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


def key_versions(
    s3: Any, bucket: str, item: Mapping[str, Any], limit: int = MAX_VERSIONS_PER_KEY
) -> tuple[list[tuple[ObjectRef, str]], bool]:
    """The listed key's uploads, newest first and at most ``limit``, each as its S3 event
    would name it and with its upload time as the event's ``eventTime``, and whether it has
    more. An upload is a version newer than the key's newest delete marker: a deleted
    upload is not classified now, and a key whose current version is a delete marker
    (deleted since the listing) has none. S3 lists a prefix's versions by key, then newest
    first, so the key itself (a prefix of every longer key it starts) comes first, and the
    listing stops at the first other key."""
    key = str(item["Key"])
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": key, "MaxKeys": limit + 1}
    versions: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    while True:
        page = s3.list_object_versions(**request)
        versions += [v for v in page.get("Versions", []) if v.get("Key") == key]
        deleted += [m for m in page.get("DeleteMarkers", []) if m.get("Key") == key]
        if (
            deleted  # every later page is older than this marker
            or len(versions) > limit
            or not page.get("IsTruncated")
            or page.get("NextKeyMarker") != key
        ):
            break
        request.update(KeyMarker=key, VersionIdMarker=page.get("NextVersionIdMarker", ""))
    # S3 lists versions and delete markers as one list, newest first; boto3 parts them, so
    # their order is told by time (the current version is newer than every marker, even
    # within one tick of the clock).
    newest_deletion = max((_modified(m) for m in deleted), default=None)
    uploads = [
        v
        for v in versions
        if v.get("IsLatest") or newest_deletion is None or _modified(v) > newest_deletion
    ]
    found = [
        _as_uploaded(
            bucket,
            {"Key": key},
            version_id=version.get("VersionId"),
            etag=version.get("ETag"),
            size=version.get("Size"),
            # The whole second, as HeadObject and an S3 event give it: the upload mark of
            # an unversioned key stays the one earlier backfills gave it.
            modified=_modified(version).replace(microsecond=0)
            if version.get("LastModified")
            else None,
        )
        for version in uploads[:limit]
    ]
    return found, len(uploads) > limit


def _modified(entry: Mapping[str, Any]) -> datetime:
    """A listed version's or delete marker's LastModified (boto3 parses it)."""
    modified = entry.get("LastModified")
    return modified if isinstance(modified, datetime) else datetime.min.replace(tzinfo=UTC)


def _as_uploaded(
    bucket: str,
    item: Mapping[str, Any],
    *,
    version_id: Any,
    etag: Any,
    size: Any,
    modified: Any,
) -> tuple[ObjectRef, str]:
    """A listed version as an S3 event would name it, and its upload time as the event's
    ``eventTime``."""
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
    time_left: Callable[[], float] = lambda: float("inf"),
) -> BatchReport:
    """Start the workflow for every upload of the batch's keys that has no record.
    ``time_left`` is the seconds the function has left (Lambda's context)."""
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
        if time_left() < START_MARGIN_SECONDS:
            report.out_of_time += 1  # not even listed
            continue
        try:
            versions, more = key_versions(s3, bucket, item, MAX_VERSIONS_PER_KEY)
        except (ClientError, BotoCoreError) as exc:
            report.unreadable[key] = _aws_error(exc)
            continue
        if more:
            report.versions_beyond.append(key)
        if not versions:
            report.gone.append(key)
        refs += versions
    done = recorded_ids(dynamodb, table, (ref.record_id for ref, _ in refs))
    for ref, event_time in refs:
        if ref.record_id in done:
            report.recorded.append(ref.record_id)
            continue
        if time_left() < START_MARGIN_SECONDS:
            report.out_of_time += 1
            continue
        try:
            attempt = start_first_free_attempt(sfn, ref, settings, event_time)
        except (ClientError, BotoCoreError) as exc:
            # Throttled past the SDK's retries, or refused: the rest are still tried.
            report.not_started[_named(ref)] = _aws_error(exc)
            continue
        if attempt is None:
            report.not_started[_named(ref)] = (
                f"ExecutionAlreadyExists (attempts 0 to {MAX_ATTEMPT} were all started "
                "before and none wrote a record)"
            )
            continue
        report.started.append(ref.record_id)
        if attempt:
            report.later_attempt[ref.record_id] = attempt
    _fail_if_incomplete(report, bucket, len(items))
    return report


def _fail_if_incomplete(report: BatchReport, bucket: str, listed: int) -> None:
    """Raise the batch's failure, naming everything it left, when it left anything: the
    Map counts the batch as failed (and retries ``WorkflowsNotStarted``)."""
    handled = (
        f"The batch's other objects were handled (started {len(report.started)}, "
        f"already recorded {len(report.recorded)})."
    )
    unreadable = "; ".join(f"s3://{bucket}/{k}: {e}" for k, e in report.unreadable.items())
    if report.not_started or report.out_of_time:
        said = []
        if report.not_started:
            named = "; ".join(f"s3://{bucket}/{k}: {e}" for k, e in report.not_started.items())
            said.append(
                f"the workflow could not be started (StartExecution) for "
                f"{len(report.not_started)} of {listed} listed objects: {named}."
            )
        if report.out_of_time:
            said.append(
                f"{report.out_of_time} listed objects or versions without a record were not "
                "started: the function's time ran short (the Map's retry, or a later "
                "backfill, starts them)."
            )
        if report.unreadable:
            said.append(
                f"{len(report.unreadable)} could not be listed (ListObjectVersions): {unreadable}."
            )
        raise WorkflowsNotStarted(" ".join([*said, handled]), report)
    if report.unreadable:
        raise ObjectsUnreadable(
            f"the versions of {len(report.unreadable)} of {listed} listed objects could "
            f"not be listed (ListObjectVersions), so they were not started: {unreadable}. "
            f"{handled}",
            report,
        )


def _named(ref: ObjectRef) -> str:
    """A version as a failed batch names it: its key, and its version id but the null one."""
    return ref.key if ref.version == NULL_VERSION else f"{ref.key} (version {ref.version})"


def _aws_error(exc: Exception) -> str:
    """One line: the error code (or HTTP status) and message of a failed AWS call."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = aws_error_code(exc) or f"HTTP {status}"
        message = " ".join(str(exc.response.get("Error", {}).get("Message") or "").split())
        return f"{code} ({message[:160]})" if message and message != code else code
    return " ".join(str(exc).split())[:200]
