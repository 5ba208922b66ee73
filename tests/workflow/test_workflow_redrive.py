"""``scones_core.redrive`` and the record condition, on moto (no workflow runs here).

The end-to-end behaviour (real executions, real conditional writes by the state
machine) is in ``test_workflow_redrive_e2e.py``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import boto3
import botocore.awsrequest
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws
from scones_core.objects import ObjectRef
from scones_core.records import (
    RECORD_CONDITION_EXPRESSION,
    RECORD_CONDITION_NAMES,
    STATUS_INDEX_NAME,
    Status,
    condition_values,
    may_replace,
    record_from_item,
)
from scones_core.redrive import (
    MAX_CLOSED_ATTEMPTS,
    Outcome,
    RedriveError,
    Redriver,
    Selection,
    Source,
    execution_arn,
    parse_dead_letter,
    query_records,
)

from scones.cli.arguments import parse_moment

REGION = "us-east-1"
TABLE = "results"
BUCKET = "images"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Aws:
    def __init__(self) -> None:
        self.ddb = boto3.client("dynamodb", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.ddb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": n, "AttributeType": "S"} for n in ("pk", "status", "recorded_at")
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": STATUS_INDEX_NAME,
                    "KeySchema": [
                        {"AttributeName": "status", "KeyType": "HASH"},
                        {"AttributeName": "recorded_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        self.machine = self.sfn.create_state_machine(
            name="classify",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        self.queue = self.sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
        self.s3.create_bucket(Bucket=BUCKET)
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.operations: list[tuple[str, dict[str, Any]]] = []
        self.ddb.meta.events.register("before-call.dynamodb.*", self._seen)

    def _seen(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.operations.append((model.name, params.get("body", {})))

    def upload(self, key: str, data: bytes = b"x" * 1234) -> ObjectRef:
        response = self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        return ObjectRef(BUCKET, key, response["VersionId"], response["ETag"].strip('"'), len(data))

    def record(
        self,
        ref: ObjectRef,
        status: Status = Status.FAILED,
        recorded_at: datetime = T0,
        attempt: int | None = 0,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": {"S": ref.record_id},
            "bucket": {"S": ref.bucket},
            "key": {"S": ref.key},
            "version_id": {"S": ref.version},
            "etag": {"S": ref.etag},
            "status": {"S": status.value},
            "event_time": {"S": "2026-12-01T09:59:59.000Z"},
            "recorded_at": {"S": stamp(recorded_at)},
        }
        if attempt is not None:
            item["attempt"] = {"N": str(attempt)}
        self.ddb.put_item(TableName=TABLE, Item=item)
        return item

    def redriver(self, **overrides: Any) -> Redriver:
        settings: dict[str, Any] = {
            "stepfunctions": self.sfn,
            "state_machine_arn": self.machine,
            "dynamodb": self.ddb,
            "table_name": TABLE,
            "sqs": self.sqs,
            "dead_letter_queue_url": self.queue,
            "s3": self.s3,
            "wait_seconds": 0,
        }
        return Redriver(**{**settings, **overrides})

    def executions(self) -> dict[str, dict[str, Any]]:
        listed = self.sfn.list_executions(stateMachineArn=self.machine)["executions"]
        return {
            e["name"]: json.loads(
                self.sfn.describe_execution(executionArn=e["executionArn"])["input"]
            )
            for e in listed
        }

    def visible_bodies(self) -> list[str]:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        return sorted(m["Body"] for m in messages)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    # Nothing runs: the executions a redrive starts stay RUNNING, whatever ran before.
    with mock_aws(config={"stepfunctions": {"execute_state_machine": False}}):
        yield Aws()


# ---- selecting records ------------------------------------------------------------


def test_failed_records_come_from_the_status_index_never_a_scan(aws: Aws) -> None:
    refs = {name: aws.upload(f"incoming/{name}.png") for name in ("a", "b", "c", "d")}
    aws.record(refs["a"], recorded_at=T0 - timedelta(hours=2))
    aws.record(refs["b"], recorded_at=T0)
    aws.record(refs["c"], recorded_at=T0 + timedelta(hours=1))
    aws.record(refs["d"], status=Status.ACCEPTED, recorded_at=T0)
    other = aws.upload("elsewhere/e.png")
    aws.record(other, recorded_at=T0)
    aws.operations.clear()

    def keys(**selection: Any) -> list[str]:
        return sorted(r["key"] for r in query_records(aws.ddb, TABLE, Selection(**selection)))

    assert keys() == ["elsewhere/e.png", "incoming/a.png", "incoming/b.png", "incoming/c.png"]
    assert keys(prefix="incoming/") == ["incoming/a.png", "incoming/b.png", "incoming/c.png"]
    # since is inclusive, until exclusive (to the millisecond, as recorded_at is written).
    assert keys(since=T0, prefix="incoming/") == ["incoming/b.png", "incoming/c.png"]
    assert keys(until=T0) == ["incoming/a.png"]
    assert keys(until=T0 + timedelta(milliseconds=1), prefix="incoming/") == [
        "incoming/a.png",
        "incoming/b.png",
    ]
    assert keys(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1)) == [
        "elsewhere/e.png",
        "incoming/b.png",
    ]
    names = {name for name, _ in aws.operations}
    assert names == {"Query"}, names
    assert all(
        json.loads(body or "{}").get("IndexName") == STATUS_INDEX_NAME for _, body in aws.operations
    )


def test_a_record_stamped_on_a_whole_second_is_selected_by_the_range_it_falls_in(
    aws: Aws,
) -> None:
    # Step Functions leaves ".000" out of EnteredTime: "09:59:59Z" sorts after every
    # "09:59:59.xxxZ", so a bound of until minus a millisecond would never select it.
    for name, recorded_at in (("before", "2026-12-01T09:59:59Z"), ("at", "2026-12-01T10:00:00Z")):
        item = aws.record(aws.upload(f"incoming/{name}.png"))
        aws.ddb.put_item(TableName=TABLE, Item={**item, "recorded_at": {"S": recorded_at}})

    def keys(**selection: Any) -> list[str]:
        return sorted(r["key"] for r in query_records(aws.ddb, TABLE, Selection(**selection)))

    assert keys(until=T0) == ["incoming/before.png"]
    assert keys(since=T0) == ["incoming/at.png"]
    assert keys(since=T0 - timedelta(hours=1), until=T0) == ["incoming/before.png"]
    assert keys(since=T0, until=T0 + timedelta(hours=1)) == ["incoming/at.png"]


@pytest.mark.parametrize("status", ["ACCEPTED", "NEEDS_REVIEW", "REJECTED", "REVIEWED", "PENDING"])
def test_only_failed_records_may_be_replayed(aws: Aws, status: str) -> None:
    aws.record(aws.upload("incoming/a.png"), status=Status.ACCEPTED)
    with pytest.raises(RedriveError, match="only FAILED records can be replayed") as refused:
        aws.redriver().redrive_records(Selection(status=status))
    assert aws.executions() == {}
    # The refusal names every final status, a person's answer (REVIEWED) included.
    assert "(ACCEPTED, NEEDS_REVIEW, REJECTED and REVIEWED never run again)" in str(refused.value)


def test_a_time_range_must_be_a_range() -> None:
    with pytest.raises(RedriveError, match="before"):
        Selection(since=T0, until=T0).check()


# ---- replaying records --------------------------------------------------------------


def test_a_replay_is_the_next_attempt_under_a_deterministic_name_and_starts_once(
    aws: Aws,
) -> None:
    first, legacy, third = (aws.upload(f"incoming/{n}.png") for n in ("first", "legacy", "third"))
    aws.record(first, attempt=0)
    aws.record(legacy, attempt=None)  # written before records carried an attempt
    aws.record(third, attempt=2)

    report = aws.redriver().redrive_records(Selection())

    assert sorted((r.key, r.outcome, r.attempt) for r in report.replays) == [
        ("incoming/first.png", Outcome.STARTED, 1),
        ("incoming/legacy.png", Outcome.STARTED, 1),
        ("incoming/third.png", Outcome.STARTED, 3),
    ]
    assert report.clean
    executions = aws.executions()
    assert set(executions) == {
        f"{first.execution_name}-r1",
        f"{legacy.execution_name}-r1",
        f"{third.execution_name}-r3",
    }
    document = executions[f"{first.execution_name}-r1"]
    assert document == {
        "object": first.to_json() | {"sequencer": ""},
        "event_time": "2026-12-01T09:59:59.000Z",
        "attempt": 1,
    }
    assert document["object"]["size"] == 1234  # read back from S3: the record lacks it

    # The records are still FAILED (nothing runs in this moto): a second redrive finds
    # every execution there already and starts nothing.
    again = aws.redriver().redrive_records(Selection())
    assert {r.outcome for r in again.replays} == {Outcome.ALREADY_STARTED}
    assert len(aws.executions()) == 3


def test_a_replay_whose_execution_closed_without_a_record_is_followed_by_the_next_attempt(
    aws: Aws,
) -> None:
    """A Standard replay stopped by hand wrote no record, and its name is refused for 90
    days: the next redrive starts the attempt after it, not "already started" forever."""
    ref = aws.upload("incoming/a.png")
    aws.record(ref, attempt=0)
    first = aws.redriver().redrive_records(Selection())
    assert [(r.outcome, r.attempt) for r in first.replays] == [(Outcome.STARTED, 1)]
    # Still running: a second redrive starts nothing.
    running = aws.redriver().redrive_records(Selection())
    assert [(r.outcome, r.attempt) for r in running.replays] == [(Outcome.ALREADY_STARTED, 1)]

    def stop(attempt: int) -> None:
        arn = execution_arn(aws.machine, ref.execution_name_for(attempt))
        aws.sfn.stop_execution(executionArn=arn)

    stop(1)
    dry = aws.redriver().redrive_records(Selection(), dry_run=True)
    assert [(r.outcome, r.attempt) for r in dry.replays] == [(Outcome.WOULD_START, 2)]
    second = aws.redriver().redrive_records(Selection())
    assert [(r.outcome, r.attempt, r.execution_name) for r in second.replays] == [
        (Outcome.STARTED, 2, ref.execution_name_for(2))
    ]
    assert aws.executions()[ref.execution_name_for(2)]["attempt"] == 2

    for attempt in range(2, 2 + MAX_CLOSED_ATTEMPTS):
        if attempt > 2:
            aws.redriver().redrive_records(Selection())
        stop(attempt)
    exhausted = aws.redriver().redrive_records(Selection())
    [replay] = exhausted.replays
    assert replay.outcome is Outcome.ERROR
    assert "all closed without writing a record" in replay.detail


def test_a_dry_run_starts_nothing_and_says_why_each_record_failed(aws: Aws) -> None:
    """What a person reads before replaying: a replay helps a throttled endpoint, not a
    model that refuses the image."""
    ref = aws.upload("incoming/a.png")
    item = aws.record(ref)
    item |= {
        "error_code": {"S": "EndpointUnavailable"},
        "reason": {"S": "endpoint scones-test: ServiceUnavailable: try later"},
    }
    aws.ddb.put_item(TableName=TABLE, Item=item)
    report = aws.redriver().redrive_records(Selection(), dry_run=True)
    assert [(r.outcome, r.execution_name, r.detail) for r in report.replays] == [
        (
            Outcome.WOULD_START,
            f"{ref.execution_name}-r1",
            "was FAILED: EndpointUnavailable: endpoint scones-test: ServiceUnavailable: try later",
        )
    ]
    assert aws.executions() == {}


def test_a_record_whose_fields_disagree_with_its_key_is_reported_not_replayed(aws: Aws) -> None:
    ref = aws.upload("incoming/a.png")
    item = aws.record(ref)
    item["key"] = {"S": "incoming/other.png"}
    aws.ddb.put_item(TableName=TABLE, Item=item)
    report = aws.redriver().redrive_records(Selection())
    (replay,) = report.replays
    assert replay.outcome is Outcome.ERROR and "names another object" in replay.detail
    assert not report.clean
    assert aws.executions() == {}


def test_a_record_not_as_the_stack_writes_it_is_named_not_replayed_and_the_rest_are(
    aws: Aws,
) -> None:
    """An item written by hand or by another tool (an attempt that is no number) ended the
    whole redrive with a ValueError; it is reported, and every other record replayed."""
    good = aws.upload("incoming/good.png")
    aws.record(good)
    item = aws.record(aws.upload("incoming/bad.png"), recorded_at=T0 + timedelta(seconds=1))
    aws.ddb.put_item(TableName=TABLE, Item={**item, "attempt": {"S": "one"}})
    report = aws.redriver().redrive_records(Selection())
    assert [(r.outcome, r.record_id, r.detail) for r in report.replays] == [
        (Outcome.STARTED, good.record_id, ""),
        (
            Outcome.ERROR,
            item["pk"]["S"],
            "unreadable record: attempt is a string, not a number",
        ),
    ]
    assert not report.clean
    assert list(aws.executions()) == [f"{good.execution_name}-r1"]


@given(st.text(min_size=1, max_size=300), st.integers(min_value=1, max_value=10_000))
def test_replay_names_are_valid_distinct_and_extend_the_first_name(key: str, attempt: int) -> None:
    ref = ObjectRef("images", key, "v", "e", 1)
    original, name = ref.execution_name, ref.execution_name_for(attempt)
    assert len(name) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+", name)
    assert name.endswith(f"-r{attempt}") and name != ref.execution_name_for(attempt + 1)
    assert name[-len(f"-r{attempt}") - 32 :].startswith(original[-32:])  # the identity digest
    if len(original) + len(f"-r{attempt}") <= 80:
        assert name == f"{original}-r{attempt}"
    assert ref.execution_name_for(0) == original


def test_execution_arns_follow_the_state_machine() -> None:
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:classify"
    assert execution_arn(machine, "x-r1") == (
        "arn:aws:states:us-east-1:123456789012:execution:classify:x-r1"
    )
    with pytest.raises(RedriveError):
        execution_arn("arn:aws:sqs:us-east-1:123456789012:queue", "x")


# ---- the record condition ---------------------------------------------------------------

WRITER = "images/a.png#etag:e@0062E99A88DC407460"  # the writing execution's delivery id
# The writing execution's own id.
WRITER_EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:classify:a-1"

EXISTING: dict[str, dict[str, Any] | None] = {
    "none": None,
    "FAILED attempt 0": {"status": "FAILED", "attempt": 0},
    "FAILED attempt 1": {"status": "FAILED", "attempt": 1},
    "FAILED without attempt": {"status": "FAILED"},
    # The writer's own write, applied though DynamoDB answered 500: its retry meets it.
    "FAILED attempt 2, this execution's own": {
        "status": "FAILED",
        "attempt": 2,
        "execution_arn": WRITER_EXECUTION,
    },
    "FAILED attempt 2, another execution's": {
        "status": "FAILED",
        "attempt": 2,
        "execution_arn": WRITER_EXECUTION + "-duplicate",
    },
    "ACCEPTED attempt 2, this execution's own": {
        "status": "ACCEPTED",
        "attempt": 2,
        "execution_arn": WRITER_EXECUTION,
    },
    "ACCEPTED attempt 0": {"status": "ACCEPTED", "attempt": 0},
    "NEEDS_REVIEW attempt 1": {"status": "NEEDS_REVIEW", "attempt": 1},
    "REJECTED attempt 0": {"status": "REJECTED", "attempt": 0, "error_code": "NotAnImage"},
    # An unversioned upload overwritten before it was read: the same bytes uploaded again
    # (another S3 event) may replace it; a duplicate of its own event may not.
    "ObjectChanged, this delivery": {
        "status": "REJECTED",
        "attempt": 0,
        "error_code": "ObjectChanged",
        "delivery": WRITER,
    },
    "ObjectChanged, another delivery": {
        "status": "REJECTED",
        "attempt": 0,
        "error_code": "ObjectChanged",
        "delivery": WRITER + "0",
    },
    "ObjectChanged, before deliveries were kept": {
        "status": "REJECTED",
        "attempt": 0,
        "error_code": "ObjectChanged",
    },
}
# Which (existing item, writer's attempt) may write: written out by hand, not derived.
ALLOWED = {
    ("none", 0),
    ("none", 1),
    ("none", 2),
    ("FAILED attempt 0", 1),
    ("FAILED attempt 0", 2),
    ("FAILED attempt 1", 2),
    ("FAILED without attempt", 0),  # written before attempts: any attempt may replace it
    ("FAILED without attempt", 1),
    ("FAILED without attempt", 2),
    ("FAILED attempt 2, this execution's own", 0),
    ("FAILED attempt 2, this execution's own", 1),
    ("FAILED attempt 2, this execution's own", 2),
    *(
        (f"ObjectChanged, {which}", n)
        for n in (0, 1, 2)
        for which in ("another delivery", "before deliveries were kept")
    ),
}


@pytest.mark.parametrize("existing", sorted(EXISTING))
@pytest.mark.parametrize("attempt", [0, 1, 2])
def test_the_record_condition_replaces_only_a_failed_item_of_an_earlier_attempt(
    aws: Aws, existing: str, attempt: int
) -> None:
    """The condition the Record* states send, evaluated by DynamoDB (moto): a FAILED item
    of an earlier attempt or of the writing execution itself, or an ObjectChanged
    rejection of another delivery."""
    before = EXISTING[existing]
    item: dict[str, Any] | None = None
    if before is not None:
        item = {
            "pk": {"S": "images/a.png#v"},
            "status": {"S": before["status"]},
            "label": {"S": "the item before"},
        }
        if "attempt" in before:
            item["attempt"] = {"N": str(before["attempt"])}
        for text in ("error_code", "delivery", "execution_arn"):
            if text in before:
                item[text] = {"S": before[text]}
        aws.ddb.put_item(TableName=TABLE, Item=item)
    allowed = (existing, attempt) in ALLOWED
    assert may_replace(before, attempt, WRITER, WRITER_EXECUTION) is allowed
    write = {
        "pk": {"S": "images/a.png#v"},
        "status": {"S": "ACCEPTED"},
        "attempt": {"N": str(attempt)},
        "delivery": {"S": WRITER},
    }
    try:
        aws.ddb.put_item(
            TableName=TABLE,
            Item=write,
            ConditionExpression=RECORD_CONDITION_EXPRESSION,
            ExpressionAttributeNames=RECORD_CONDITION_NAMES,
            ExpressionAttributeValues=condition_values(attempt, WRITER, WRITER_EXECUTION),
        )
        written = True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
        written = False
    assert written is allowed
    stored = aws.ddb.get_item(TableName=TABLE, Key={"pk": {"S": "images/a.png#v"}})["Item"]
    assert stored == (write if allowed else item)


# ---- the dead-letter queue ----------------------------------------------------------------


def s3_event(*refs: ObjectRef) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventTime": "2026-12-01T09:00:00.000Z",
                    "s3": {
                        "bucket": {"name": ref.bucket},
                        "object": {
                            "key": ref.key.replace(" ", "+"),
                            "size": ref.size,
                            "eTag": ref.etag,
                            "versionId": ref.version,
                            "sequencer": "01",
                        },
                    },
                }
                for ref in refs
            ]
        }
    )


def workflow_failed(ref: ObjectRef, attempt: int | None) -> str:
    message: dict[str, Any] = {
        "kind": "workflow_failed",
        "object": ref.to_json(),
        "event_time": "2026-12-01T09:00:00.000Z",
        "failure": {"error_code": "EndpointUnavailable", "cause": {"errorMessage": "down"}},
        "execution_arn": "arn:aws:states:us-east-1:123456789012:execution:classify:x",
    }
    if attempt is not None:
        message["attempt"] = attempt
    return json.dumps(message)


STRANGERS = [
    '{"hello": "not a replayable message"}',
    "not json at all",
    json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}),
    json.dumps({"Records": []}),
    json.dumps({"kind": "workflow_failed", "object": "nope"}),
    # A restore announces no upload: nothing to replay (the start function ignores it).
    json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectRestore:Completed",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": "incoming/cold.png"}},
                }
            ]
        }
    ),
]


# JSON the parser itself cannot read: past the interpreter's digit and recursion limits.
UNREADABLE = ['{"Records": ' + "9" * 5000 + "}", "[" * 50_000 + "]" * 50_000]


def test_draining_replays_s3_events_and_workflow_failures_and_leaves_the_rest(aws: Aws) -> None:
    photo, other, failed, legacy, fanned = (
        aws.upload(f"incoming/{n}.png")
        for n in ("my photo", "other", "failed", "legacy", "fanned out")
    )
    # Through an SNS topic without raw message delivery: S3's notification in an envelope.
    sns = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": s3_event(fanned),
    }
    for body in [
        s3_event(photo, other),
        workflow_failed(failed, 1),
        workflow_failed(legacy, None),
        json.dumps(sns),
    ]:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    for body in STRANGERS + UNREADABLE:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    report = aws.redriver().drain_dead_letters()

    replayed = sorted((r.source, r.key, r.outcome, r.attempt) for r in report.replays if r.key)
    assert replayed == [
        (Source.S3_EVENT, "incoming/fanned out.png", Outcome.STARTED, 0),
        (Source.S3_EVENT, "incoming/my photo.png", Outcome.STARTED, 0),
        (Source.S3_EVENT, "incoming/other.png", Outcome.STARTED, 0),
        (Source.WORKFLOW_FAILED, "incoming/failed.png", Outcome.STARTED, 2),
        (Source.WORKFLOW_FAILED, "incoming/legacy.png", Outcome.STARTED, 1),
    ]
    left = [r for r in report.replays if r.outcome is Outcome.LEFT]
    assert len(left) == len(STRANGERS + UNREADABLE) and all(r.detail for r in left)
    assert (report.messages_deleted, report.messages_left) == (4, len(STRANGERS + UNREADABLE))
    assert not report.clean
    executions = aws.executions()
    assert set(executions) == {
        photo.execution_name,
        other.execution_name,
        fanned.execution_name,
        f"{failed.execution_name}-r2",
        f"{legacy.execution_name}-r1",
    }
    # An S3 event starts the object's first execution, exactly as the start function does.
    assert executions[photo.execution_name] == {
        "object": photo.to_json() | {"sequencer": "01"},
        "event_time": "2026-12-01T09:00:00.000Z",
        "attempt": 0,
    }
    assert executions[f"{failed.execution_name}-r2"]["attempt"] == 2
    # What stays is visible again at once, for the next reader.
    assert aws.visible_bodies() == sorted(STRANGERS + UNREADABLE)

    again = aws.redriver().drain_dead_letters()
    assert {r.outcome for r in again.replays} == {Outcome.LEFT}
    assert (again.messages_deleted, again.messages_left) == (0, len(STRANGERS + UNREADABLE))
    assert len(aws.executions()) == 5


def test_a_dead_letter_whose_execution_exists_is_deleted_without_a_second_start(aws: Aws) -> None:
    ref = aws.upload("incoming/a.png")
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=workflow_failed(ref, 0))
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=s3_event(ref))
    aws.record(ref)
    aws.redriver().redrive_records(Selection())  # starts attempt 1
    aws.sfn.start_execution(  # the first execution, as the start function ran it
        stateMachineArn=aws.machine, name=ref.execution_name, input="{}"
    )

    report = aws.redriver().drain_dead_letters()

    # The S3 event's first execution wrote the FAILED record: it ran.
    assert sorted((r.source, r.outcome) for r in report.replays) == [
        (Source.S3_EVENT, Outcome.ALREADY_RECORDED),
        (Source.WORKFLOW_FAILED, Outcome.ALREADY_STARTED),
    ]
    assert (report.messages_deleted, report.messages_left) == (2, 0)
    assert len(aws.executions()) == 2
    assert aws.visible_bodies() == []


def test_a_dead_letter_whose_record_says_it_ran_is_deleted_without_a_start(aws: Aws) -> None:
    """An Express execution cannot be described, so the execution's name proves nothing
    there: the record does. A letter whose object is already classified (a redrive of the
    records, or a duplicate delivery, got there first), or FAILED at the letter's own
    attempt or later, is deleted and nothing is started, so nothing is paid for twice.
    Only a record FAILED at an earlier attempt, or none, is replayed."""
    done, reviewed, later, earlier, unrecorded = (
        aws.upload(f"incoming/{n}.png") for n in ("done", "reviewed", "later", "earlier", "new")
    )
    aws.record(done, Status.ACCEPTED, attempt=1)
    aws.record(reviewed, Status.REVIEWED, attempt=0)
    aws.record(later, Status.FAILED, attempt=2)
    aws.record(earlier, Status.FAILED, attempt=0)
    # Unversioned, overwritten before it was read: REJECTED ObjectChanged, which another
    # delivery of the key (the same bytes uploaded again) may replace, not this one.
    reuploaded, same = aws.upload("incoming/reuploaded.png"), aws.upload("incoming/same.png")
    for ref, delivery in ((reuploaded, "an earlier delivery"), (same, same.delivery)):
        item = aws.record(ref, Status.REJECTED)
        aws.ddb.put_item(
            TableName=TABLE,
            Item=item | {"error_code": {"S": "ObjectChanged"}, "delivery": {"S": delivery}},
        )
    bodies = [
        workflow_failed(done, 0),
        s3_event(done),
        workflow_failed(reviewed, 0),
        workflow_failed(later, 1),
        workflow_failed(earlier, 0),
        s3_event(unrecorded),
        s3_event(reuploaded),
        s3_event(same),
    ]
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    dry = aws.redriver().drain_dead_letters(dry_run=True)
    assert dry.messages_deleted == 0 and len(aws.visible_bodies()) == len(bodies)
    report = aws.redriver().drain_dead_letters()

    rows = sorted((r.key, r.source, r.outcome, r.detail) for r in report.replays)
    assert rows == [
        ("incoming/done.png", Source.S3_EVENT, Outcome.ALREADY_RECORDED,
         "already recorded as ACCEPTED (attempt 1)"),
        ("incoming/done.png", Source.WORKFLOW_FAILED, Outcome.ALREADY_RECORDED,
         "already recorded as ACCEPTED (attempt 1)"),
        ("incoming/earlier.png", Source.WORKFLOW_FAILED, Outcome.STARTED,
         "was FAILED: EndpointUnavailable: down"),
        ("incoming/later.png", Source.WORKFLOW_FAILED, Outcome.ALREADY_RECORDED,
         "already FAILED at attempt 2, not earlier: its own dead letter, or `scones redrive` "
         "of the record, replays it"),
        ("incoming/new.png", Source.S3_EVENT, Outcome.STARTED, ""),
        ("incoming/reuploaded.png", Source.S3_EVENT, Outcome.STARTED, ""),
        ("incoming/reviewed.png", Source.WORKFLOW_FAILED, Outcome.ALREADY_RECORDED,
         "already recorded as REVIEWED (attempt 0)"),
        ("incoming/same.png", Source.S3_EVENT, Outcome.ALREADY_RECORDED,
         "already recorded as REJECTED (attempt 0)"),
    ]  # fmt: skip
    assert (report.messages_deleted, report.messages_left) == (len(bodies), 0)
    assert report.clean
    assert set(aws.executions()) == {
        f"{earlier.execution_name}-r1",
        unrecorded.execution_name,
        reuploaded.execution_name,
    }


def test_a_message_stays_when_its_replay_could_not_start(aws: Aws) -> None:
    ref = aws.upload("incoming/a.png")
    bodies = sorted([workflow_failed(ref, 0), s3_event(ref)])
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    missing = aws.machine.replace(":classify", ":deleted-machine")

    report = aws.redriver(state_machine_arn=missing).drain_dead_letters()

    assert {r.outcome for r in report.replays} == {Outcome.ERROR}
    assert all("StateMachineDoesNotExist" in r.detail for r in report.replays)
    assert (report.messages_deleted, report.messages_left) == (0, 2)
    assert aws.visible_bodies() == bodies


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("key", 5, "object key is 5, not an object key"),
        ("key", None, "object key is None"),
        ("bucket", None, "s3.bucket or s3.object is not an object"),
    ],
)
def test_an_s3_event_naming_its_object_wrongly_is_left_and_the_rest_replayed(
    aws: Aws, field: str, value: object, reason: str
) -> None:
    ref = aws.upload("incoming/a.png")
    bad = json.loads(s3_event(ref))
    s3 = bad["Records"][0]["s3"]
    if field == "key":
        s3["object"]["key"] = value
    else:
        s3["bucket"] = value
    for body in (json.dumps(bad), s3_event(ref)):
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    report = aws.redriver().drain_dead_letters()

    (left,) = [r for r in report.replays if r.outcome is Outcome.LEFT]
    assert reason in left.detail
    assert [r.outcome for r in report.replays if r is not left] == [Outcome.STARTED]
    assert (report.messages_deleted, report.messages_left) == (1, 1)


def test_a_message_the_code_fails_on_is_left_and_the_drain_goes_on(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever one message does to the code, the others are still replayed."""
    ref = aws.upload("incoming/a.png")
    handle = Redriver._handle

    def failing_on_one(self: Redriver, message: dict, replayed: dict, *, dry_run: bool):
        if message["Body"] == "the message that breaks the code":
            raise RuntimeError("unforeseen")
        return handle(self, message, replayed, dry_run=dry_run)

    monkeypatch.setattr(Redriver, "_handle", failing_on_one)
    for body in ("the message that breaks the code", s3_event(ref)):
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    report = aws.redriver().drain_dead_letters()

    assert sorted((r.outcome, r.detail) for r in report.replays) == [
        (Outcome.ERROR, "not handled (RuntimeError: unforeseen)"),
        (Outcome.STARTED, ""),
    ]
    assert (report.messages_deleted, report.messages_left) == (1, 1)
    assert aws.visible_bodies() == ["the message that breaks the code"]


def test_a_dead_letter_is_replayed_only_for_the_stacks_uploads(aws: Aws) -> None:
    """As the start function scopes a notification (an SNS topic or EventBridge rule can
    carry other buckets' and prefixes' events), so does its replay."""
    upload = aws.upload("incoming/a.png")
    labelled = ObjectRef(BUCKET, "labelled/bicycle/a.png", "v1", "e1", 3)
    foreign = ObjectRef("someone-elses", "incoming/a.png", "v1", "e1", 3)
    body = s3_event(upload, labelled, foreign)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    scoped = aws.redriver(image_bucket=BUCKET, incoming_prefix="incoming/")
    dry = scoped.drain_dead_letters(dry_run=True)
    report = scoped.drain_dead_letters()

    outside = [
        (Outcome.OUTSIDE, f"outside this stack's bucket and prefix: s3://{BUCKET}/{labelled.key}"),
        (
            Outcome.OUTSIDE,
            "outside this stack's bucket and prefix: s3://someone-elses/incoming/a.png",
        ),
    ]
    for run, outcome in ((dry, Outcome.WOULD_START), (report, Outcome.STARTED)):
        assert [(r.outcome, r.detail) for r in run.replays if r.outcome is Outcome.OUTSIDE] == (
            outside
        )
        assert [
            (r.record_id, r.outcome) for r in run.replays if r.outcome is not Outcome.OUTSIDE
        ] == [(upload.record_id, outcome)]
    assert [e["object"]["key"] for e in aws.executions().values()] == ["incoming/a.png"]
    assert (report.messages_deleted, report.messages_left) == (1, 0)
    assert report.clean  # the objects outside are named, not a fault


def _eventbridge_letter(upload: ObjectRef, sent: str) -> str:
    """A dead-lettered S3 EventBridge "Object Created" event for ``upload``, its key as
    ``sent``."""
    detail = {
        "bucket": {"name": upload.bucket},
        "object": {
            "key": sent,
            "size": upload.size,
            "etag": upload.etag,
            "version-id": upload.version,
        },
        "reason": "PutObject",
    }
    return json.dumps(
        {
            "version": "0",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "time": "2026-12-01T09:59:59Z",
            "detail": detail,
        }
    )


def test_a_dead_lettered_eventbridge_event_replays_the_stored_key_in_either_reading(
    aws: Aws,
) -> None:
    """A dead-lettered S3 EventBridge event whose key has "+" or "%" is settled as the
    start function settles it: S3 says which reading holds the version, so the replay
    classifies the upload, whether the event sent the key URL-encoded or as stored."""
    upload = aws.upload("incoming/c++/a b.png")
    # Slashes encoded too: read as stored, outside the prefix; read URL-encoded, the upload.
    for sent in (upload.key, quote_plus(upload.key, safe="/"), quote_plus(upload.key, safe="")):
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=_eventbridge_letter(upload, sent))

    report = aws.redriver(image_bucket=BUCKET, incoming_prefix="incoming/").drain_dead_letters()

    # The later ones are the same start (name and input): Step Functions answers each with
    # the first execution.
    assert [(r.record_id, r.outcome) for r in report.replays] == [
        (upload.record_id, Outcome.STARTED)
    ] * 3
    assert [e["object"]["key"] for e in aws.executions().values()] == [upload.key]
    assert (report.messages_deleted, report.messages_left) == (3, 0)


@pytest.mark.parametrize("with_s3", [True, False], ids=["s3-asked", "no-s3-client"])
def test_a_dead_lettered_eventbridge_key_outside_the_prefix_stays_outside(
    aws: Aws, with_s3: bool
) -> None:
    """``incoming%2Fa+b.png`` stored at the bucket's root is outside IncomingPrefix; read
    URL-encoded it would be inside, but no such object is there. With S3 to ask, the
    stored reading holds; without a client, the stored reading stands. Either way the
    letter is left, named, and nothing starts."""
    stored = "incoming%2Fa+b.png"
    upload = aws.upload(stored)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=_eventbridge_letter(upload, stored))
    overrides: dict[str, Any] = {"image_bucket": BUCKET, "incoming_prefix": "incoming/"}
    if not with_s3:
        overrides["s3"] = None

    report = aws.redriver(**overrides).drain_dead_letters()

    assert [(r.outcome, r.detail) for r in report.replays] == [
        (
            Outcome.LEFT,
            f"names only objects outside this stack's bucket and prefix: s3://{BUCKET}/{stored}",
        )
    ]
    assert aws.executions() == {}
    assert (report.messages_deleted, report.messages_left) == (0, 1)


def test_a_dead_letter_naming_recorded_and_unrecorded_objects_starts_only_the_unrecorded(
    aws: Aws,
) -> None:
    """One notification can name several uploads: those with their record ran after all,
    and starting them again would classify them twice on Express."""
    done, new = aws.upload("incoming/done.png"), aws.upload("incoming/new.png")
    aws.record(done, Status.ACCEPTED, attempt=0)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=s3_event(done, new))

    dry = aws.redriver().drain_dead_letters(dry_run=True)
    report = aws.redriver().drain_dead_letters()

    for run, outcome in ((dry, Outcome.WOULD_START), (report, Outcome.STARTED)):
        assert sorted((r.key, r.outcome) for r in run.replays) == [
            ("incoming/done.png", Outcome.ALREADY_RECORDED),
            ("incoming/new.png", outcome),
        ]
    assert set(aws.executions()) == {new.execution_name}
    assert (report.messages_deleted, report.messages_left) == (1, 0)


def test_a_record_replayed_since_the_selection_was_read_is_not_started_again(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selection comes from the status index, read before any replay: a replay that
    ran meanwhile (another redrive's) may have written the record, which is read again,
    consistently, before anything starts."""
    from scones_core import redrive

    ref = aws.upload("incoming/a.png")
    stale = record_from_item(aws.record(ref, Status.FAILED, attempt=0))
    aws.record(ref, Status.ACCEPTED, attempt=1)
    monkeypatch.setattr(redrive, "query_records", lambda *_: iter([stale]))

    report = aws.redriver().redrive_records(Selection())

    [replay] = report.replays
    assert replay.outcome is Outcome.ALREADY_RECORDED
    assert replay.detail == "already recorded as ACCEPTED (attempt 1)"
    assert aws.executions() == {}


def test_a_replay_whose_object_s3_refuses_to_size_is_an_error_not_a_folder_placeholder(
    aws: Aws,
) -> None:
    """A record keeps no size, and the workflow reads a size of 0 under a key ending in
    "/" as a folder placeholder: a final REJECTED for an object nobody read. So a HeadObject
    refused for any reason but "gone" is the replay's error; a gone object is replayed
    (the workflow records it gone)."""
    folder_like = aws.upload("incoming/scans/", data=b"an image that ends in a slash")
    gone = aws.upload("incoming/gone.png")
    aws.record(folder_like, attempt=0)
    aws.record(gone, attempt=0)
    aws.s3.delete_object(Bucket=BUCKET, Key=gone.key, VersionId=gone.version)

    def refuse(params: dict[str, Any], **_: Any) -> Any:
        if str(params.get("url_path", "")).split("?")[0].endswith("/incoming/scans/"):
            error = {"Error": {"Code": "403", "Message": "Forbidden"}}
            error["ResponseMetadata"] = {"HTTPStatusCode": 403}
            return (botocore.awsrequest.AWSResponse("", 403, {}, None), error)
        return None

    aws.s3.meta.events.register("before-call.s3.HeadObject", refuse)
    report = aws.redriver().redrive_records(Selection())

    rows = {r.key: r for r in report.replays}
    assert rows[folder_like.key].outcome is Outcome.ERROR
    assert "HeadObject" in rows[folder_like.key].detail and "403" in rows[folder_like.key].detail
    assert rows[gone.key].outcome is Outcome.STARTED
    assert set(aws.executions()) == {f"{gone.execution_name}-r1"}


def test_a_dead_letter_with_nothing_this_stack_classifies_is_named_and_kept(aws: Aws) -> None:
    """A dead letter whose objects are all outside the bucket and prefix (the prefix changed
    while it waited on the queue) is neither replayed nor deleted unseen: a LEFT row names
    its objects, in a dry run too."""
    labelled = ObjectRef(BUCKET, "labelled/bicycle/a.png", "v1", "e1", 3)
    foreign = ObjectRef("someone-elses", "incoming/a.png", "v1", "e1", 3)
    body = s3_event(labelled, foreign)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    scoped = aws.redriver(image_bucket=BUCKET, incoming_prefix="incoming/")
    for report in (scoped.drain_dead_letters(dry_run=True), scoped.drain_dead_letters()):
        (left,) = report.replays
        assert left.outcome is Outcome.LEFT
        assert left.detail == (
            "names only objects outside this stack's bucket and prefix: "
            f"s3://{BUCKET}/labelled/bicycle/a.png, s3://someone-elses/incoming/a.png"
        )
        assert (report.messages_deleted, report.messages_left) == (0, 1)
    assert aws.executions() == {}
    assert aws.visible_bodies() == [body]


def workflow_failed_of(obj: dict[str, Any]) -> str:
    """A ``workflow_failed`` letter whose ``object`` is ``obj`` as it stands."""
    letter = json.loads(workflow_failed(ObjectRef(BUCKET, "incoming/a.png", "v1", "e1", 3), 0))
    return json.dumps(letter | {"object": obj})


GOOD_OBJECT = {"bucket": BUCKET, "key": "incoming/a.png", "version": "v1", "etag": "e1", "size": 3}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"bucket": None}, "object reference's bucket is None, not a bucket name"),
        ({"bucket": "0"}, "object reference's bucket is '0', not a bucket name"),
        ({"bucket": "Images_2"}, "object reference's bucket is 'Images_2', not a bucket name"),
        ({"key": None}, "object reference's key is None, not an object key"),
        ({"key": ""}, "object reference's key is '', not an object key"),
        ({"key": 5}, "object reference's key is 5, not an object key"),
        ({"size": -5}, "object reference's size is -5, not a size in bytes"),
        ({"size": 2.5}, "object reference's size is 2.5, not a size in bytes"),
        ({"size": True}, "object reference's size is True, not a size in bytes"),
        ({"version": 7}, "object reference's version is 7, not text"),
        ({"key": "incoming/\ud800.png"}, "object reference's object key 'incoming/\\ud800.png' "
         "is not valid Unicode (a lone surrogate at 9)"),
        ({"key": "incoming/" + "k" * 1100}, "object reference's object key is 1109 UTF-8 bytes"),
    ],
)  # fmt: skip
def test_a_workflow_failed_letter_naming_its_object_wrongly_is_left_not_replayed(
    aws: Aws, changes: dict[str, Any], reason: str
) -> None:
    """A letter's object is replayed as it stands: one S3 could not hold must not start an
    execution (or write a FAILED record under a bucket named "None") and lose the letter."""
    aws.upload("incoming/a.png")
    body = workflow_failed_of(GOOD_OBJECT | changes)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    report = aws.redriver(image_bucket=BUCKET, incoming_prefix="incoming/").drain_dead_letters()

    (left,) = report.replays
    assert (left.source, left.outcome) == (Source.OTHER, Outcome.LEFT)
    assert left.detail.startswith("a workflow_failed message: ") and reason in left.detail
    assert (report.messages_deleted, report.messages_left) == (0, 1)
    assert aws.executions() == {}
    assert aws.visible_bodies() == [body]


def test_a_workflow_failed_letter_outside_the_stacks_bucket_and_prefix_is_named_and_kept(
    aws: Aws,
) -> None:
    """As a dead-lettered notification is scoped (the prefix changed while it waited, or a
    letter names another bucket), so is the workflow's own letter: left with a row naming
    its object, in a dry run too, never started and deleted."""
    elsewhere = [
        GOOD_OBJECT | {"key": "labelled/bicycle/a.png"},
        GOOD_OBJECT | {"bucket": "someone-elses-bucket", "key": "private/x.png"},
    ]
    bodies = sorted(workflow_failed_of(obj) for obj in elsewhere)
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)

    scoped = aws.redriver(image_bucket=BUCKET, incoming_prefix="incoming/")
    for report in (scoped.drain_dead_letters(dry_run=True), scoped.drain_dead_letters()):
        rows = sorted((r.source, r.outcome, r.key, r.detail) for r in report.replays)
        assert rows == [
            (Source.WORKFLOW_FAILED, Outcome.LEFT, "labelled/bicycle/a.png",
             f"names an object outside this stack's bucket and prefix: "
             f"s3://{BUCKET}/labelled/bicycle/a.png"),
            (Source.WORKFLOW_FAILED, Outcome.LEFT, "private/x.png",
             "names an object outside this stack's bucket and prefix: "
             "s3://someone-elses-bucket/private/x.png"),
        ]  # fmt: skip
        assert (report.messages_deleted, report.messages_left) == (0, 2)
        assert not report.clean
    assert aws.executions() == {}
    assert aws.visible_bodies() == bodies


def test_a_dry_run_drain_starts_and_deletes_nothing(aws: Aws) -> None:
    ref = aws.upload("incoming/a.png")
    bodies = sorted([workflow_failed(ref, 0), s3_event(ref), STRANGERS[0]])
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    report = aws.redriver().drain_dead_letters(dry_run=True)
    assert sorted(r.outcome for r in report.replays) == sorted(
        [Outcome.WOULD_START, Outcome.WOULD_START, Outcome.LEFT]
    )
    assert report.messages_deleted == 0
    assert aws.executions() == {}
    assert aws.visible_bodies() == bodies


def test_a_dry_run_drain_is_clean_exactly_when_the_real_drain_would_be(aws: Aws) -> None:
    """A dry run keeps every message on the queue; its verdict (``scones redrive
    --dead-letters --dry-run``'s exit code) is still the real run's: clean when every letter
    would be replayed or is already recorded, not when one would be left."""
    ref = aws.upload("incoming/a.png")
    for body in (workflow_failed(ref, 0), s3_event(ref)):
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    dry = aws.redriver().drain_dead_letters(dry_run=True)
    assert dry.messages_left == 2 and dry.clean
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=STRANGERS[0])
    dry = aws.redriver().drain_dead_letters(dry_run=True)
    assert dry.messages_left == 3 and not dry.clean
    real = aws.redriver().drain_dead_letters()
    assert real.messages_left == 1 and not real.clean


def test_a_message_a_person_names_is_deleted_with_its_body_shown_and_nothing_else(
    aws: Aws,
) -> None:
    """A stray message keeps DeadLetterAlarm in ALARM, and then a new dead letter pages
    nobody: once read, a person deletes it by the id the report gave. Only that message;
    a dry run deletes nothing; the rest of the queue is drained as ever."""
    ref = aws.upload("incoming/a.png")
    stray = STRANGERS[0]
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=stray)
    (left,) = aws.redriver().drain_dead_letters().replays
    assert left.outcome is Outcome.LEFT
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=workflow_failed(ref, 0))

    named = frozenset({left.message_id})
    dry = aws.redriver().drain_dead_letters(dry_run=True, delete=named)
    assert sorted((r.outcome, r.message_id == left.message_id) for r in dry.replays) == [
        (Outcome.WOULD_DELETE, True),
        (Outcome.WOULD_START, False),
    ]
    assert len(aws.visible_bodies()) == 2

    report = aws.redriver().drain_dead_letters(delete=named)
    deleted = [r for r in report.replays if r.message_id == left.message_id]
    assert [(r.outcome, r.detail) for r in deleted] == [(Outcome.DELETED, f"its body: {stray}")]
    # The image's letter is replayed, its row saying why it failed.
    [replayed] = [r for r in report.replays if r.source is Source.WORKFLOW_FAILED]
    assert replayed.detail == "was FAILED: EndpointUnavailable: down"
    assert report.clean and report.messages_deleted == 2
    assert aws.visible_bodies() == []
    assert list(aws.executions()) == [f"{ref.execution_name}-r1"]

    # A named id the drain never received (mistyped, gone) is said, not silently passed.
    missed = aws.redriver().drain_dead_letters(delete=frozenset({"no-such-id"}))
    assert [(r.outcome, r.message_id) for r in missed.replays] == [(Outcome.ERROR, "no-such-id")]
    assert "nothing deleted" in missed.replays[0].detail and not missed.clean


def test_dead_letters_are_sorted_by_shape() -> None:
    ref = ObjectRef("images", "incoming/a.png", "v", "e", 3)
    assert parse_dead_letter(s3_event(ref)).source is Source.S3_EVENT
    sns = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": s3_event(ref),
    }
    assert parse_dead_letter(json.dumps(sns)).source is Source.S3_EVENT
    eventbridge = {
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-12-01T09:00:00Z",
        "detail": {"bucket": {"name": ref.bucket}, "object": {"key": ref.key, "size": 3}},
    }
    assert parse_dead_letter(json.dumps(eventbridge)).source is Source.S3_EVENT
    stranger = parse_dead_letter(json.dumps(eventbridge | {"source": "aws.ec2"}))
    assert stranger.source is Source.OTHER and "comes from 'aws.ec2'" in stranger.reason
    letter = parse_dead_letter(workflow_failed(ref, 4))
    assert (letter.source, letter.ref, letter.attempt) == (Source.WORKFLOW_FAILED, ref, 4)
    for body in STRANGERS:
        assert parse_dead_letter(body).source is Source.OTHER, body
    reasons = [parse_dead_letter(body).reason for body in STRANGERS]
    assert "has no records" in reasons[3]
    assert reasons[-1] == "S3 events that announce no upload: ObjectRestore:Completed"
    assert parse_dead_letter(workflow_failed(ref, -1)).source is Source.OTHER
    digits, nested = (parse_dead_letter(body) for body in UNREADABLE)
    assert (digits.source, nested.source) == (Source.OTHER, Source.OTHER)
    assert "an integer longer than" in digits.reason and "nested deeper" in nested.reason


# ---- the command's time arguments -----------------------------------------------------------


def test_since_and_until_take_timestamps_or_ages() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_moment("2h", now) == now - timedelta(hours=2)
    assert parse_moment("30m", now) == now - timedelta(minutes=30)
    assert parse_moment("1d", now) == now - timedelta(days=1)
    assert parse_moment("2026-12-01T10:00:00Z", now) == T0
    assert parse_moment("2026-12-01T10:00:00", now) == T0  # no zone: UTC
    assert parse_moment(None, now) is None
    from scones.cli.errors import CommandError

    with pytest.raises(CommandError, match="age"):
        parse_moment("yesterday", now)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999d", "'99999999d' reaches back before the year 1"),
        ("1000000000000000000000d", "reaches back before the year 1"),
        ("9999-12-31T23:59:59-14:00", "is outside the years 1 to 9999 in UTC"),
        ("0001-01-01T00:00:00+14:00", "is outside the years 1 to 9999 in UTC"),
    ],
)
def test_moments_beyond_the_calendar_are_named_not_a_traceback(text: str, message: str) -> None:
    from scones.cli.errors import CommandError

    with pytest.raises(CommandError) as raised:
        parse_moment(text, datetime(2026, 12, 2, tzinfo=UTC))
    assert message in str(raised.value)


# ---- failed monitor runs ---------------------------------------------------------------------

SCHEDULED = "2026-12-01T10:00:00Z"
MONITOR_EVENT = {
    "scheduledTime": SCHEDULED,
    "scheduleArn": "arn:aws:scheduler:us-east-1:123456789012:schedule/default/s-monitor",
}
# What Lambda puts beside a dead-lettered asynchronous event (its error cut to 1 KB).
LAMBDA_ERROR = {
    "RequestID": {"DataType": "String", "StringValue": "9f4c"},
    "ErrorCode": {"DataType": "Number", "StringValue": "200"},
    "ErrorMessage": {"DataType": "String", "StringValue": "Task timed out after 120.00 seconds"},
}


def _strings(**values: str) -> dict[str, dict[str, str]]:
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


# The attributes EventBridge Scheduler puts beside the Input of a run it could not invoke
# at all (here Lambda's throttle of the Invoke API, after the schedule's two retries).
SCHEDULER_ERROR = _strings(
    ERROR_CODE="TooManyRequestsException",
    ERROR_MESSAGE="Rate Exceeded.",
    EXECUTION_ID="6f1e2c0a-5b7d-4c1e-9a3f-2d8e7b6c5a41",
    EXHAUSTED_RETRY_CONDITION="MaximumRetryAttempts",
    IS_PAYLOAD_TRUNCATED="false",
    RETRY_ATTEMPTS="2",
    SCHEDULED_TIME=SCHEDULED,
    SCHEDULE_ARN=MONITOR_EVENT["scheduleArn"],
    TARGET_ARN="arn:aws:lambda:us-east-1:123456789012:function:s-MonitorFunction",
)


# The same run from an EventBridge rule's schedule instead of the stack's Scheduler.
RULE_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": SCHEDULED,
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/monitor"],
    "detail": {},
}


def test_a_failed_monitor_runs_event_is_told_from_other_dead_letters() -> None:
    for event in (MONITOR_EVENT, RULE_EVENT):
        letter = parse_dead_letter(json.dumps(event))
        assert (letter.source, letter.scheduled_time) == (Source.MONITOR_RUN, SCHEDULED)
    unusable = parse_dead_letter(json.dumps(MONITOR_EVENT | {"scheduledTime": 7}))
    assert unusable.source is Source.OTHER and "scheduledTime is 7" in unusable.reason
    unusable = parse_dead_letter(json.dumps(RULE_EVENT | {"time": ""}))
    assert unusable.source is Source.OTHER and "time is ''" in unusable.reason
    # An S3 upload through EventBridge has a time too: it is an upload, not a run.
    upload = RULE_EVENT | {"source": "aws.s3", "detail-type": "Object Created"}
    assert parse_dead_letter(json.dumps(upload)).source is not Source.MONITOR_RUN


def test_a_failed_monitor_run_stays_named_with_its_error_when_no_function_is_given(
    aws: Aws,
) -> None:
    body = json.dumps(MONITOR_EVENT)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body, MessageAttributes=LAMBDA_ERROR)
    aws.sqs.send_message(
        QueueUrl=aws.queue, MessageBody=STRANGERS[0], MessageAttributes=LAMBDA_ERROR
    )

    report = aws.redriver().drain_dead_letters()

    run, stranger = sorted(report.replays, key=lambda r: r.source != Source.MONITOR_RUN)
    assert (run.source, run.outcome) == (Source.MONITOR_RUN, Outcome.LEFT)
    assert run.detail == (
        f"monitor run scheduled at {SCHEDULED} (it had failed: Task timed out after 120.00 "
        "seconds); name the monitor function to run it again"
    )
    # Any dead letter Lambda sent says what its function failed with.
    assert stranger.detail.endswith("; it had failed: Task timed out after 120.00 seconds")
    assert (report.messages_deleted, report.messages_left) == (0, 2)
    assert aws.visible_bodies() == sorted([body, STRANGERS[0]])


def monitor_invoke(body: str) -> dict[str, Any]:
    """The Invoke request a monitor run's replay makes of the monitor function "m"."""
    return {"FunctionName": "m", "InvocationType": "RequestResponse", "Payload": body.encode()}


def test_a_run_the_scheduler_never_invoked_is_named_and_run_again(aws: Aws) -> None:
    """The schedule's own dead letter: its Input as the body, the scheduler's error beside
    it. It is run again like a run that failed in Lambda, and deleted once it ran."""
    body = json.dumps(MONITOR_EVENT)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body, MessageAttributes=SCHEDULER_ERROR)
    lambda_client = boto3.client("lambda", region_name=REGION)
    with Stubber(lambda_client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(b"{}"), 2)},
            expected_params=monitor_invoke(body),
        )
        report = aws.redriver(
            lambda_client=lambda_client, monitor_function="m"
        ).drain_dead_letters()
        stub.assert_no_pending_responses()
    [replay] = report.replays
    assert (replay.source, replay.outcome) == (Source.MONITOR_RUN, Outcome.RAN)
    assert replay.detail == (
        f"monitor run scheduled at {SCHEDULED} (it was never invoked: "
        "TooManyRequestsException: Rate Exceeded.)"
    )
    assert (report.messages_deleted, report.messages_left) == (1, 0)
    assert aws.visible_bodies() == []


def test_a_failed_monitor_run_is_kept_when_its_rerun_cannot_start_and_a_dry_run_invokes_nothing(
    aws: Aws,
) -> None:
    body = json.dumps(MONITOR_EVENT)
    aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    lambda_client = boto3.client("lambda", region_name=REGION)
    with Stubber(lambda_client) as stub:  # a dry run makes no call: any would fail here
        dry = aws.redriver(lambda_client=lambda_client, monitor_function="m").drain_dead_letters(
            dry_run=True
        )
        stub.add_client_error(
            "invoke",
            service_error_code="TooManyRequestsException",
            service_message="Rate Exceeded.",
            http_status_code=429,
            expected_params=monitor_invoke(body),
        )
        report = aws.redriver(
            lambda_client=lambda_client, monitor_function="m"
        ).drain_dead_letters()
        stub.assert_no_pending_responses()
    assert [(r.outcome, r.detail) for r in dry.replays] == [
        (Outcome.WOULD_START, f"monitor run scheduled at {SCHEDULED}")
    ]
    [replay] = report.replays
    assert replay.outcome is Outcome.ERROR and "TooManyRequestsException" in replay.detail
    assert (report.messages_deleted, report.messages_left) == (0, 1)
    assert aws.visible_bodies() == [body]


def test_draining_without_the_table_warns_that_records_cannot_be_read(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named resources instead of --stack, without --table: the drain still runs, and says
    what it cannot check (an Express execution cannot be described either)."""
    from scones.cli.main import main

    where = ["--state-machine-arn", aws.machine, "--dead-letter-queue-url", aws.queue]
    # Without the stack's bucket and prefix every letter would be replayed: refused.
    code = main(["redrive", "--dead-letters", *where, "--region", "us-east-1"])
    assert code == 2
    assert "no image bucket: pass --stack (output ImageBucketName) or --image-bucket" in (
        capsys.readouterr().err
    )
    where += ["--image-bucket", BUCKET, "--incoming-prefix", "incoming/"]
    code = main(["redrive", "--dead-letters", *where, "--region", "us-east-1"])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: no results table (--stack or --table)" in err
    code = main(["redrive", "--dead-letters", *where, "--table", TABLE, "--region", "us-east-1"])
    assert code == 0 and "warning" not in capsys.readouterr().err


def test_deleting_a_named_message_from_the_command_line_prints_its_body(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    from scones.cli.main import main

    where = ["--state-machine-arn", aws.machine, "--dead-letter-queue-url", aws.queue]
    where += ["--table", TABLE, "--region", "us-east-1"]
    where += ["--image-bucket", BUCKET, "--incoming-prefix", "incoming/"]
    assert main(["redrive", "--delete-message", "m-1", *where]) == 2
    assert "--delete-message deletes dead letters: it needs --dead-letters" in (
        capsys.readouterr().err
    )
    message_id = aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=STRANGERS[0])["MessageId"]
    assert main(["redrive", "--dead-letters", *where]) == 1  # left on the queue
    assert main(["redrive", "--dead-letters", "--delete-message", message_id, *where]) == 0
    out = capsys.readouterr().out
    assert f"deleted as asked  other           message {message_id}  (its body: " in out
    assert "messages deleted: 1, left on the queue: 0" in out
    assert aws.visible_bodies() == []


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_duplicate_dead_letter_is_answered_by_the_drains_one_replay(
    aws: Aws, dry_run: bool
) -> None:
    """The same failure's letter twice (SQS delivered the send twice, or an Express workflow
    ran twice): one replay, and the duplicate is answered by it, not left as if that replay
    had failed; a dry run's verdict is the real run's."""
    ref = aws.upload("incoming/a.png")
    aws.record(ref)  # FAILED at attempt 0
    for _ in range(2):
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=workflow_failed(ref, 0))
    report = aws.redriver().drain_dead_letters(dry_run=dry_run)
    first = Outcome.WOULD_START if dry_run else Outcome.STARTED
    assert sorted((r.outcome, r.attempt) for r in report.replays) == sorted(
        [(first, 1), (Outcome.ALREADY_STARTED, 1)]
    )
    assert report.clean
    assert report.messages_left == (2 if dry_run else 0)
