"""Replay objects whose workflow failed: FAILED records and dead-lettered messages.

This is what ``scones redrive`` does, with the clients injected, so it works the
same against AWS and the offline stack.

* **FAILED records** are found through the results table's status index
  (``records.STATUS_INDEX_NAME``; never a scan), optionally limited to a
  ``recorded_at`` range and a key prefix. Each gets a new execution of attempt
  N = its record's ``attempt`` + 1, named after the record, ``<its own execution
  name>-r<N>`` (``ObjectRef.execution_name_for``; also when attempt 0 ran in a
  batch). The name is deterministic, so a second
  redrive finds a Standard execution already running and starts nothing (an Express
  one cannot be described, so it is started again). One that has closed while the
  record is still FAILED at an earlier attempt wrote no record (stopped by hand), and
  Step Functions refuses its name for 90 days: the next attempt is started instead, up
  to ``MAX_CLOSED_ATTEMPTS`` of them. Either way the record's
  conditional write (``records.RECORD_CONDITION_EXPRESSION``) lets attempt N
  replace only the FAILED item of an earlier attempt, once.
* **The dead-letter queue** holds two replayable shapes: S3 event notifications
  the start function gave up on (after the ingest queue's ``maxReceiveCount``),
  which get their first execution through the start function's own code
  (``ingest.start_first_executions``: only those without a record; the objects it names
  outside the stack's scope are named in the report), and the workflow's ``workflow_failed``
  messages, which are replayed like a FAILED record of the message's attempt. Both
  are scoped to the stack's bucket and incoming prefix as the start function scopes
  an upload (``ingest.uploads_in_scope``); a message naming nothing in scope, or its
  object improperly (``objects.object_from_json``), is left on the queue.
  A third shape is a scheduled monitor run that failed every asynchronous attempt:
  Lambda sends its event (the scheduler's input, or an EventBridge rule's "Scheduled
  Event" where a rule runs the monitor) unchanged, with the error in the
  message's attributes. Given the monitor function, the run is invoked again with that
  event, so it measures the same window (its metrics are published once per window,
  ``monitoring.published``); without it, or when it fails again, the message stays.
  Anything else is left on the queue and reported. A message is deleted only
  after every replay it asks for was started or found already started, or its record
  shows the replay's write could not land (``records.may_replace``): a final status (a
  ``scones redrive`` of the records, or a duplicate delivery, got there first), or FAILED
  at the attempt the replay would run or a later one. An Express execution cannot be
  described, so without that look each such letter would be classified again, paid for,
  and thrown away by the conditional write.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scones_core.errors import EventError
from scones_core.ingest import (
    ignored_events,
    is_s3_test_event,
    notification_images,
    notification_records,
    start_first_executions,
    uploads_in_scope,
)
from scones_core.ingest import start_workflow as start_attempt
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.timestamps import (
    RULE_SCHEDULE_EVENT,
    RULE_TIME_FIELD,
    SCHEDULE_TIME_FIELD,
)
from scones_core.objects import (
    NULL_VERSION,
    ObjectRef,
    object_from_json,
    object_from_record,
    object_missing,
)
from scones_core.record_queries import records_with_status
from scones_core.records import (
    ATTEMPT_ATTRIBUTE,
    DELIVERY_ATTRIBUTE,
    ERROR_CODE_ATTRIBUTE,
    EVENT_TIME_ATTRIBUTE,
    KEY_ATTRIBUTE,
    PARTITION_KEY,
    REASON_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    WORKFLOW_FAILED_KIND,
    Status,
    may_replace,
    record_from_item,
    unreadable,
)
from scones_core.settings import StartSettings
from scones_core.shortened import shortened

REPLAYABLE_STATUSES: tuple[Status, ...] = (Status.FAILED,)
# How many closed executions that wrote no record a record's replay steps past.
MAX_CLOSED_ATTEMPTS = 3


class RedriveError(ValueError):
    """The redrive was asked for something it must not do; the message says why."""


class Outcome(StrEnum):
    STARTED = "started"  # a new execution was started
    ALREADY_STARTED = "already_started"  # its execution exists: replayed before
    ALREADY_RECORDED = "already_recorded"  # its record says it ran: nothing to replay
    WOULD_START = "would_start"  # dry run: would be started
    RAN = "ran"  # a failed monitor run was invoked again and succeeded
    LEFT = "left"  # a dead letter this redrive cannot replay: left on the queue
    # An object a replayed dead letter also names, outside this stack's bucket and prefix:
    # not this stack's to classify (the letter goes once its objects here are replayed).
    OUTSIDE = "outside"
    DELETED = "deleted"  # a dead letter a person named to be deleted (its body is shown)
    WOULD_DELETE = "would_delete"  # dry run: would be deleted
    ERROR = "error"  # starting failed (the message, if any, stays on the queue)


class Source(StrEnum):
    RECORD = "record"  # a FAILED record of the results table
    S3_EVENT = "s3_event"  # a dead-lettered S3 event notification
    WORKFLOW_FAILED = "workflow_failed"  # the workflow's own dead letter
    MONITOR_RUN = "monitor_run"  # a scheduled monitor run that failed every attempt
    OTHER = "other"  # any other dead letter


@dataclass(frozen=True)
class Selection:
    """Which records to replay: ``since <= recorded_at < until``, key prefix."""

    status: str = Status.FAILED.value
    since: datetime | None = None
    until: datetime | None = None
    prefix: str = ""

    def check(self) -> None:
        if self.status not in REPLAYABLE_STATUSES:
            final = Status(self.status).value if self.status in set(Status) else self.status
            # Named from the enum, so a status added later (REVIEWED was) is listed too.
            never = [status.value for status in Status if status not in REPLAYABLE_STATUSES]
            raise RedriveError(
                f"only FAILED records can be replayed; {final} records are final "
                f"({', '.join(never[:-1])} and {never[-1]} never run again)"
            )
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise RedriveError("since and until must be timezone-aware")
        if self.since and self.until and self.since >= self.until:
            raise RedriveError(f"since ({self.since}) must be before until ({self.until})")


@dataclass(frozen=True)
class Replay:
    """What happened to one object (or one unreplayable dead letter)."""

    source: Source
    outcome: Outcome
    record_id: str = ""
    key: str = ""
    attempt: int = 0  # the attempt the replay runs (0: a first execution)
    execution_name: str = ""
    detail: str = ""
    message_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(self).items()}


@dataclass
class RedriveReport:
    replays: list[Replay] = field(default_factory=list)
    messages_deleted: int = 0
    messages_left: int = 0
    # A dry run leaves every message on the queue: its verdict is the real run's.
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return dict(Counter(str(r.outcome) for r in self.replays))

    @property
    def started(self) -> list[Replay]:
        return [r for r in self.replays if r.outcome is Outcome.STARTED]

    @property
    def clean(self) -> bool:
        """Nothing failed and nothing was (or, in a dry run, would be) left for a person to
        look at: a dry run keeps every message, so only its replays tell."""
        return (self.dry_run or self.messages_left == 0) and not any(
            r.outcome in (Outcome.ERROR, Outcome.LEFT) for r in self.replays
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "messages_deleted": self.messages_deleted,
            "messages_left": self.messages_left,
            "replays": [r.to_json() for r in self.replays],
        }


# ---- finding FAILED records -------------------------------------------------------


def query_records(dynamodb: Any, table_name: str, selection: Selection) -> Iterator[dict[str, Any]]:
    """Records with ``selection.status`` through the status index (a low-level client)."""
    selection.check()
    yield from records_with_status(
        dynamodb,
        table_name,
        selection.status,
        since=selection.since,
        until=selection.until,
        prefix=selection.prefix,
    )


def record_attempt(record: Mapping[str, Any]) -> int:
    """The attempt that wrote a record (items written before attempts existed: 0)."""
    return int(record.get(ATTEMPT_ATTRIBUTE) or 0)


def execution_arn(state_machine_arn: str, name: str) -> str:
    """``arn:...:stateMachine:<machine>`` -> ``arn:...:execution:<machine>:<name>``."""
    parts = state_machine_arn.split(":")
    if len(parts) < 7 or parts[5] != "stateMachine":
        raise RedriveError(f"{state_machine_arn!r} is not a state machine ARN")
    return ":".join([*parts[:5], "execution", parts[6], name])


# ---- dead letters -------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter message, parsed: which source, and what to replay."""

    source: Source
    body: Any = None
    ref: ObjectRef | None = None  # workflow_failed only
    event_time: str = ""
    attempt: int = 0  # the attempt that failed (workflow_failed only)
    reason: str = ""  # why an OTHER message cannot be replayed
    scheduled_time: str = ""  # monitor_run only


def _monitor_time_field(body: Any) -> str | None:
    """The field of ``body`` that holds a monitor run's scheduled time, if it is a monitor
    run's event: the stack's schedule's (``scheduledTime``), or an EventBridge rule's
    "Scheduled Event" (``time``; an S3 event through EventBridge has one too)."""
    if not isinstance(body, dict) or "Records" in body:
        return None
    if SCHEDULE_TIME_FIELD in body:
        return SCHEDULE_TIME_FIELD
    rule = all(body.get(key) == value for key, value in RULE_SCHEDULE_EVENT.items())
    return RULE_TIME_FIELD if rule and RULE_TIME_FIELD in body else None


def parse_dead_letter(text: str) -> DeadLetter:
    try:
        body = load_json(text)
    except NotJSON as exc:
        return DeadLetter(Source.OTHER, reason=f"the message body is {exc}")
    if time_field := _monitor_time_field(body):
        scheduled = body[time_field]
        if not isinstance(scheduled, str) or not scheduled:
            return DeadLetter(
                Source.OTHER,
                body,
                reason=f"a monitor run's event whose {time_field} is {scheduled!r}",
            )
        return DeadLetter(Source.MONITOR_RUN, body, scheduled_time=scheduled)
    if isinstance(body, dict) and body.get("kind") == WORKFLOW_FAILED_KIND:
        try:
            ref = object_from_json(body.get("object"))
            attempt = int(body.get("attempt") or 0)
        except (EventError, TypeError, ValueError) as exc:
            return DeadLetter(Source.OTHER, body, reason=f"a {WORKFLOW_FAILED_KIND} message: {exc}")
        if attempt < 0:
            return DeadLetter(Source.OTHER, body, reason=f"attempt {attempt} is negative")
        return DeadLetter(
            Source.WORKFLOW_FAILED,
            body,
            ref=ref,
            event_time=str(body.get("event_time") or ""),
            attempt=attempt,
        )
    if is_s3_test_event(body):
        return DeadLetter(Source.OTHER, body, reason="an s3:TestEvent (nothing to replay)")
    try:
        records = notification_records(body)
        ignored = ignored_events(body)
    except EventError as exc:
        return DeadLetter(
            Source.OTHER,
            body,
            reason=f"neither an S3 event notification nor a workflow_failed message ({exc})",
        )
    if len(ignored) == len(records):
        events = ", ".join(ignored)
        return DeadLetter(Source.OTHER, body, reason=f"S3 events that announce no upload: {events}")
    return DeadLetter(Source.S3_EVENT, body)


# ---- the redrive ----------------------------------------------------------------------


class Redriver:
    """Replays failures; every client is a low-level boto3 client (or a stub)."""

    def __init__(
        self,
        *,
        stepfunctions: Any,
        state_machine_arn: str,
        dynamodb: Any = None,
        table_name: str = "",
        sqs: Any = None,
        dead_letter_queue_url: str = "",
        s3: Any = None,
        visibility_timeout: int = 300,
        wait_seconds: int = 1,
        image_bucket: str = "",
        incoming_prefix: str = "",
        lambda_client: Any = None,
        monitor_function: str = "",
    ) -> None:
        self.sfn = stepfunctions
        # The bucket and prefix scope a dead-lettered notification as the start function
        # scoped it (``ingest.uploads_in_scope``).
        self.settings = StartSettings(
            state_machine_arn=state_machine_arn,
            image_bucket=image_bucket,
            incoming_prefix=incoming_prefix,
        )
        self.dynamodb = dynamodb
        self.table_name = table_name
        self.sqs = sqs
        self.queue_url = dead_letter_queue_url
        self.s3 = s3
        self.visibility_timeout = visibility_timeout
        self.wait_seconds = wait_seconds
        self.lambda_client = lambda_client
        self.monitor_function = monitor_function

    # -- one replay ------------------------------------------------------------
    def replay(self, ref: ObjectRef, event_time: str, attempt: int, *, dry_run: bool) -> Outcome:
        """Start ``attempt`` of ``ref`` unless its execution exists already."""
        status = self._execution_status(ref.execution_name_for(attempt))
        return self._start_unless_described(status, ref, event_time, attempt, dry_run=dry_run)

    def _start_unless_described(
        self, status: str | None, ref: ObjectRef, event_time: str, attempt: int, *, dry_run: bool
    ) -> Outcome:
        """Start ``attempt`` of ``ref`` unless its (Standard) execution was described
        (``status``); starting would then start nothing.

        An Express workflow cannot be described: the start is tried, and the conditional
        write keeps a second run of the same attempt from writing.
        """
        if status is not None:
            return Outcome.ALREADY_STARTED
        if dry_run:
            return Outcome.WOULD_START
        result = start_attempt(self.sfn, ref, self.settings, event_time, attempt)
        return Outcome.STARTED if result.started else Outcome.ALREADY_STARTED

    def _recorded(self, ref: ObjectRef, attempt: int) -> str | None:
        """Why replaying ``attempt`` of ``ref`` would change nothing: its record (read
        consistently) is one the replay's conditional write could not replace
        (``records.may_replace``: a final status, FAILED at ``attempt`` or later, or an
        ObjectChanged rejection of this same delivery). None when the write could land (no
        record, an earlier FAILED one, another delivery's ObjectChanged), or the table is
        not known here."""
        if self.dynamodb is None or not self.table_name:
            return None
        names = {
            "#status": STATUS_ATTRIBUTE,
            "#attempt": ATTEMPT_ATTRIBUTE,
            "#error": ERROR_CODE_ATTRIBUTE,
            "#delivery": DELIVERY_ATTRIBUTE,
        }
        item = self.dynamodb.get_item(
            TableName=self.table_name,
            Key={PARTITION_KEY: {"S": ref.record_id}},
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return None
        existing = record_from_item(item)
        if may_replace(existing, attempt, ref.delivery):
            return None
        status = existing.get(STATUS_ATTRIBUTE, "")
        recorded = int(existing.get(ATTEMPT_ATTRIBUTE, 0))
        if status == Status.FAILED:
            return (
                f"already FAILED at attempt {recorded}, not earlier: its own dead letter, "
                "or `scones redrive` of the record, replays it"
            )
        return f"already recorded as {status} (attempt {recorded})"

    def _execution_status(self, name: str) -> str | None:
        """The status of the (Standard) execution of this name; None when there is none."""
        try:
            described = self.sfn.describe_execution(
                executionArn=execution_arn(self.settings.state_machine_arn, name)
            )
        except ClientError:
            return None
        return str(described.get("status", ""))

    def _first_attempt_not_closed(
        self, ref: ObjectRef, attempt: int
    ) -> tuple[int, str | None] | None:
        """``attempt``, or the first later one whose execution has not closed, with that
        execution's status (None: there is none): a closed execution of a record still
        FAILED at an earlier attempt wrote no record, and its name cannot be used again.
        None when ``MAX_CLOSED_ATTEMPTS`` of them have closed."""
        for candidate in range(attempt, attempt + MAX_CLOSED_ATTEMPTS + 1):
            status = self._execution_status(ref.execution_name_for(candidate))
            if status is None or status == "RUNNING":
                return candidate, status
        return None

    def _with_size(self, ref: ObjectRef) -> ObjectRef:
        """A record does not keep the object's size; read it like the S3 event had it.
        Only a gone object is replayed without it (the workflow records it gone): any
        other refusal is the replay's error, since the workflow would take a size of 0 for
        a folder placeholder under a key ending in ``/`` and record it as one."""
        if self.s3 is None:
            return ref
        request: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version != NULL_VERSION:
            request["VersionId"] = ref.version
        try:
            size = int(self.s3.head_object(**request).get("ContentLength") or 0)
        except ClientError as exc:
            if object_missing(exc):
                return ref
            raise
        return replace(ref, size=size)

    # -- FAILED records -----------------------------------------------------------
    def redrive_records(self, selection: Selection, *, dry_run: bool = False) -> RedriveReport:
        if self.dynamodb is None or not self.table_name:
            raise RedriveError("replaying records needs the results table")
        # Read the whole selection first: a replay that fails again moves its record to a
        # later recorded_at, where a still-running query would meet it a second time.
        records = list(query_records(self.dynamodb, self.table_name, selection))
        report = RedriveReport(dry_run=dry_run)
        for record in records:
            report.replays.append(self._replay_record(record, dry_run=dry_run))
        return report

    def _replay_record(self, record: Mapping[str, Any], *, dry_run: bool) -> Replay:
        if (bad := unreadable(record)) is not None:
            # Not as the stack writes records: which object, or which attempt, is not known.
            detail = f"unreadable record: {'; '.join(bad.problems)}"
            return Replay(Source.RECORD, Outcome.ERROR, bad.record_id, bad.record_id, detail=detail)
        record_id = str(record.get(PARTITION_KEY, ""))
        key = str(record.get(KEY_ATTRIBUTE, ""))
        attempt = record_attempt(record) + 1
        try:
            ref = object_from_record(record)
        except EventError as exc:
            return Replay(Source.RECORD, Outcome.ERROR, record_id, key, attempt, detail=str(exc))
        name = ref.execution_name_for(attempt)
        try:
            # The selection was read before any replay (and through an index, which lags):
            # a replay that ran since, this redrive's or another's, may have written it.
            if (why := self._recorded(ref, attempt)) is not None:
                return Replay(
                    Source.RECORD, Outcome.ALREADY_RECORDED, record_id, key, attempt, name, why
                )
            found = self._first_attempt_not_closed(ref, attempt)
            if found is None:
                detail = (
                    f"the executions of attempts {attempt} to {attempt + MAX_CLOSED_ATTEMPTS} "
                    "all closed without writing a record; look at their histories"
                )
                return Replay(Source.RECORD, Outcome.ERROR, record_id, key, attempt, name, detail)
            attempt, status = found
            name = ref.execution_name_for(attempt)
            outcome = self._start_unless_described(
                status,
                self._with_size(ref),
                str(record.get(EVENT_TIME_ATTRIBUTE) or ""),
                attempt,
                dry_run=dry_run,
            )
        except (ClientError, BotoCoreError) as exc:
            return Replay(Source.RECORD, Outcome.ERROR, record_id, key, attempt, name, str(exc))
        return Replay(Source.RECORD, outcome, record_id, key, attempt, name, _why_failed(record))

    # -- the dead-letter queue ----------------------------------------------------------
    def drain_dead_letters(
        self,
        *,
        dry_run: bool = False,
        max_messages: int | None = None,
        delete: frozenset[str] = frozenset(),
    ) -> RedriveReport:
        """Replay every replayable message of the dead-letter queue; delete only those,
        and the messages whose ids ``delete`` names (a person read them in an earlier
        report and decided: a stray message, say), which are not replayed.

        Messages that stay (unreplayable, failed to start, or a dry run) are made visible
        again at the end, so the next reader sees them at once.

        Each failed object is replayed at most once per drain. A replay that fails again
        sends a new dead letter, which this drain receives too: replaying that one as well
        would walk the object's attempts for as long as its fault lasts (an object S3
        refuses, a model that rejects it), billing an execution each time and never ending.
        That letter is left for a later drain, once what failed it is fixed.
        """
        if self.sqs is None or not self.queue_url:
            raise RedriveError("draining the dead-letter queue needs its URL")
        report = RedriveReport(dry_run=dry_run)
        seen: set[str] = set()
        kept: dict[str, str] = {}  # message id -> latest receipt handle
        replayed: dict[str, int] = {}  # record id -> the attempt this drain started (or would)
        try:
            while max_messages is None or len(seen) < max_messages:
                batch = 10 if max_messages is None else min(10, max_messages - len(seen))
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=batch,
                    MessageAttributeNames=["All"],  # Lambda's error, on a failed run
                    VisibilityTimeout=self.visibility_timeout,
                    WaitTimeSeconds=self.wait_seconds,
                ).get("Messages", [])
                fresh = [m for m in messages if m["MessageId"] not in seen]
                for message in messages:
                    if message["MessageId"] in kept:
                        kept[message["MessageId"]] = message["ReceiptHandle"]
                if not fresh:
                    break  # empty, or every message came round again
                for message in fresh:
                    seen.add(message["MessageId"])
                    try:
                        if message["MessageId"] in delete:
                            replays, done = [_named_for_deletion(message, dry_run)], not dry_run
                        else:
                            replays, done = self._handle(message, replayed, dry_run=dry_run)
                    except Exception as exc:  # one message must not stop the drain
                        replays, done = [self._unexpected(message, exc)], False
                    report.replays.extend(replays)
                    if done:
                        self.sqs.delete_message(
                            QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                        )
                        report.messages_deleted += 1
                    else:
                        kept[message["MessageId"]] = message["ReceiptHandle"]
        finally:
            for receipt in kept.values():
                # If this fails, the message becomes visible again when its timeout ends.
                with contextlib.suppress(ClientError):
                    self.sqs.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=0
                    )
        report.messages_left = len(kept)
        for missing in sorted(delete - seen):
            # Mistyped, already gone, or in flight with another reader: say so.
            report.replays.append(
                Replay(
                    Source.OTHER,
                    Outcome.ERROR,
                    detail="named for deletion but not received from the queue (gone, "
                    "in flight with another reader, or a mistyped id): nothing deleted",
                    message_id=missing,
                )
            )
        return report

    @staticmethod
    def _unexpected(message: Mapping[str, Any], exc: Exception) -> Replay:
        """A message this code failed on: left in the queue, the failure in its row."""
        return Replay(
            Source.OTHER,
            Outcome.ERROR,
            detail=f"not handled ({type(exc).__name__}: {exc})",
            message_id=str(message["MessageId"]),
        )

    def _handle(
        self, message: Mapping[str, Any], replayed: dict[str, int], *, dry_run: bool
    ) -> tuple[list[Replay], bool]:
        """The replays a message asks for, and whether it may be deleted. ``replayed`` maps
        the record ids whose failure this drain has replayed (a dry run: would replay) to
        the attempt it started, always 1 or later; it adds to them. A letter of that attempt
        or later came from that replay; an earlier one is a duplicate it answers."""
        message_id = str(message["MessageId"])
        letter = parse_dead_letter(str(message.get("Body", "")))
        if letter.source is Source.WORKFLOW_FAILED:
            assert letter.ref is not None
            attempt = letter.attempt + 1
            name = letter.ref.execution_name_for(attempt)
            base = Replay(
                Source.WORKFLOW_FAILED,
                Outcome.ERROR,
                letter.ref.record_id,
                letter.ref.key,
                attempt,
                name,
                message_id=message_id,
            )
            if not self.settings.is_upload_here(letter.ref.bucket, letter.ref.key):
                # As a dead-lettered notification is scoped (``_replay_notification``): the
                # prefix changed while it waited, or the letter names another bucket.
                where = f"s3://{letter.ref.bucket}/{letter.ref.key}"
                detail = f"names an object outside this stack's bucket and prefix: {where}"
                return [replace(base, outcome=Outcome.LEFT, detail=detail)], False
            try:
                recorded = self._recorded(letter.ref, attempt)
                if recorded is not None:
                    done = replace(base, outcome=Outcome.ALREADY_RECORDED, detail=recorded)
                    return [done], not dry_run
                started = replayed.get(letter.ref.record_id)
                if started is not None and letter.attempt >= started:
                    # The letter of the attempt this drain started: that replay failed too.
                    why = _why_letter_failed(letter) or "failed"
                    detail = (
                        f"this drain's replay of it {why}: left for the next drain, once "
                        "what failed it is fixed"
                    )
                    return [replace(base, outcome=Outcome.LEFT, detail=detail)], False
                if started is not None:
                    # An earlier letter (a duplicate) that this drain's replay answers.
                    done = replace(base, outcome=Outcome.ALREADY_STARTED, attempt=started)
                    return [done], not dry_run
                outcome = self.replay(letter.ref, letter.event_time, attempt, dry_run=dry_run)
            except (ClientError, BotoCoreError) as exc:
                return [replace(base, detail=str(exc))], False
            if outcome in (Outcome.STARTED, Outcome.WOULD_START):
                replayed[letter.ref.record_id] = attempt
            return [replace(base, outcome=outcome, detail=_why_letter_failed(letter))], _done(
                outcome
            )
        if letter.source is Source.S3_EVENT:
            return self._replay_notification(letter.body, message_id, dry_run=dry_run)
        failed_with = why_dead_lettered(message)
        if letter.source is Source.MONITOR_RUN:
            return self._replay_monitor_run(letter, failed_with, message_id, dry_run=dry_run)
        reason = letter.reason + (f"; {failed_with}" if failed_with else "")
        left = Replay(Source.OTHER, Outcome.LEFT, detail=reason, message_id=message_id)
        return [left], False

    def _replay_monitor_run(
        self, letter: DeadLetter, failed_with: str, message_id: str, *, dry_run: bool
    ) -> tuple[list[Replay], bool]:
        """Invoke the monitor again with the failed run's event, and wait for it: the
        message is deleted only when the run succeeds."""
        what = f"monitor run scheduled at {letter.scheduled_time}"
        if failed_with:
            what += f" ({failed_with})"
        base = Replay(Source.MONITOR_RUN, Outcome.LEFT, message_id=message_id)
        if self.lambda_client is None or not self.monitor_function:
            detail = f"{what}; name the monitor function to run it again"
            return [replace(base, detail=detail)], False
        if dry_run:
            return [replace(base, outcome=Outcome.WOULD_START, detail=what)], False
        try:
            response = self.lambda_client.invoke(
                FunctionName=self.monitor_function,
                InvocationType="RequestResponse",
                Payload=json.dumps(letter.body).encode(),
            )
            payload = load_json(response["Payload"].read() or b"null")
        except (ClientError, BotoCoreError, NotJSON) as exc:
            return [replace(base, outcome=Outcome.ERROR, detail=f"{what}; {exc}")], False
        if "FunctionError" in response:
            error = payload.get("errorMessage") if isinstance(payload, dict) else payload
            detail = f"{what}; it failed again: {error}"
            return [replace(base, outcome=Outcome.ERROR, detail=detail)], False
        measured = ""
        if isinstance(payload, dict) and "window_end" in payload:
            alerts = ", ".join(map(str, payload.get("alerts") or [])) or "none"
            measured = (
                f"; window {payload.get('window_start')} to {payload['window_end']}, "
                f"{payload.get('request_count')} requests, alerts {alerts}"
            )
        return [replace(base, outcome=Outcome.RAN, detail=what + measured)], True

    def _replay_notification(
        self, body: Any, message_id: str, *, dry_run: bool
    ) -> tuple[list[Replay], bool]:
        def failure(outcome: Outcome, exc: Exception) -> tuple[list[Replay], bool]:
            return [Replay(Source.S3_EVENT, outcome, detail=str(exc), message_id=message_id)], False

        try:
            images = notification_images(body)
            ignored = ignored_events(body)
        except EventError as exc:
            return failure(Outcome.LEFT, exc)
        try:  # the reading S3 holds decides the scope (without a client: the stored one)
            here, elsewhere = uploads_in_scope(self.s3, images, self.settings)
        except (ClientError, BotoCoreError) as exc:
            return failure(Outcome.ERROR, exc)
        if not here:
            # Nothing this stack classifies (the bucket or prefix changed since, or only
            # non-upload events): named and left on the queue, never deleted unseen.
            named = ", ".join(f"s3://{i.ref.bucket}/{i.ref.key}" for i in elsewhere)
            reason = (
                f"names only objects outside this stack's bucket and prefix: {named}"
                if elsewhere
                else f"announces no upload (events: {', '.join(ignored) or 'none'})"
            )
            left = Replay(Source.S3_EVENT, Outcome.LEFT, detail=reason, message_id=message_id)
            return [left], False
        try:
            recorded = {image.ref: self._recorded(image.ref, 0) for image in here}
        except (ClientError, BotoCoreError) as exc:
            return failure(Outcome.ERROR, exc)
        # Each object with its record ran after all: only the others are started.
        replays = [
            replace(
                self._notification_replay(ref, Outcome.ALREADY_RECORDED, message_id),
                detail=str(why),
            )
            for ref, why in recorded.items()
            if why is not None
        ] + [
            Replay(
                Source.S3_EVENT,
                Outcome.OUTSIDE,
                key=image.ref.key,
                detail=f"outside this stack's bucket and prefix: s3://{image.ref.bucket}/"
                f"{image.ref.key}",
                message_id=message_id,
            )
            for image in elsewhere
        ]
        pending = [image for image in here if recorded[image.ref] is None]
        if dry_run:
            for image in pending:
                outcome = self.replay(image.ref, "", 0, dry_run=True)
                replays.append(self._notification_replay(image.ref, outcome, message_id))
            return replays, False
        try:
            starts = start_first_executions(self.sfn, pending, self.settings)
        except (ClientError, BotoCoreError) as exc:
            return failure(Outcome.ERROR, exc)
        replays += [
            self._notification_replay(
                start.ref,
                Outcome.STARTED if start.result.started else Outcome.ALREADY_STARTED,
                message_id,
            )
            for start in starts
        ]
        return replays, True

    @staticmethod
    def _notification_replay(ref: ObjectRef, outcome: Outcome, message_id: str) -> Replay:
        return Replay(
            Source.S3_EVENT,
            outcome,
            ref.record_id,
            ref.key,
            0,
            ref.execution_name_for(0),
            message_id=message_id,
        )


def _done(outcome: Outcome) -> bool:
    return outcome in (Outcome.STARTED, Outcome.ALREADY_STARTED)


def why_dead_lettered(message: Mapping[str, Any]) -> str:
    """Why a message was dead-lettered, as a clause, from its attributes, or ``""``.
    Lambda names a run that failed in the function (``ErrorMessage``, cut to 1 KB, else
    ``ErrorCode``); EventBridge names an invocation it could not make at all (``ERROR_CODE``
    and ``ERROR_MESSAGE``: the schedule's role may not invoke the function, the function
    is gone, Lambda throttled the Invoke API)."""
    attributes = message.get("MessageAttributes") or {}

    def value(name: str) -> str:
        attribute = attributes.get(name) or {}
        return str(attribute.get("StringValue") or "")

    code, text = value("ErrorCode"), value("ErrorMessage")
    if text or code:
        return f"it had failed: {text or f'error code {code}'}"
    said = ": ".join(part for part in (value("ERROR_CODE"), value("ERROR_MESSAGE")) if part)
    return f"it was never invoked: {said}" if said else ""


def _why_failed(record: Mapping[str, Any]) -> str:
    """What the record says went wrong, shown beside its replay: a person deciding whether
    a replay can help (a throttled endpoint) or cannot (a model that refuses the image)."""
    return _failed_with(record.get(ERROR_CODE_ATTRIBUTE), record.get(REASON_ATTRIBUTE))


def _why_letter_failed(letter: DeadLetter) -> str:
    """The same from a ``workflow_failed`` letter: its ``failure`` (the record's fields)."""
    failure = letter.body.get("failure") if isinstance(letter.body, dict) else None
    if not isinstance(failure, dict):
        return ""
    cause = failure.get("cause")
    reason = cause.get("errorMessage") if isinstance(cause, dict) else cause
    return _failed_with(failure.get("error_code"), reason)


def _failed_with(code: Any, reason: Any) -> str:
    said = ": ".join(str(part) for part in (code, reason) if part)
    return f"was FAILED: {said}" if said else ""


# How much of a deleted message's body its row keeps: enough to recognise it later.
DELETED_BODY_SHOWN = 500


def _named_for_deletion(message: Mapping[str, Any], dry_run: bool) -> Replay:
    return Replay(
        Source.OTHER,
        Outcome.WOULD_DELETE if dry_run else Outcome.DELETED,
        detail=f"its body: {shortened(str(message.get('Body', '')), DELETED_BODY_SHOWN)}",
        message_id=str(message["MessageId"]),
    )
