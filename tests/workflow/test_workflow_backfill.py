"""The backfill function's domain on moto: current versions, records skipped, starts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.awsrequest
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from scones_core import backfill
from scones_core.backfill import (
    MAX_ATTEMPT,
    MAX_VERSIONS_PER_KEY,
    START_MARGIN_SECONDS,
    UNPROCESSED_BACKOFF_SECONDS,
    backfill_batch,
    key_versions,
    recorded_ids,
)
from scones_core.errors import ObjectsUnreadable, SettingsError, WorkflowsNotStarted
from scones_core.objects import ObjectRef
from scones_core.records import may_replace
from scones_core.settings import StartSettings

from scones.offline.lambda_worker import LambdaContext
from scones.template_params import PROJECT_ROOT

BUCKET = "scones-123456789012-us-east-1-images"
TABLE = "results"


def backfill_world(*, versioned: bool) -> tuple[Any, Any, Any, str]:
    """The bucket, the results table and a stand-in classification state machine, in moto:
    (s3, dynamodb, stepfunctions clients, the state machine's ARN)."""
    s3 = boto3.client("s3", region_name="us-east-1")
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    if versioned:
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    machine = sfn.create_state_machine(
        name="classify",
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/r",
    )["stateMachineArn"]
    return s3, ddb, sfn, machine


@mock_aws
def test_a_batch_starts_only_objects_without_a_record_and_a_rerun_starts_nothing() -> None:
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    keys = ["incoming/a.png", "incoming/b.png", "incoming/c.png", "elsewhere/d.png"]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    head = s3.head_object(Bucket=BUCKET, Key="incoming/a.png")
    done = ObjectRef(BUCKET, "incoming/a.png", head["VersionId"], head["ETag"].strip('"'), 1)
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": done.record_id}, "status": {"S": "ACCEPTED"}})
    listing = s3.list_objects_v2(Bucket=BUCKET)["Contents"] + [
        {"Key": "incoming/gone.png", "Size": 1}
    ]
    event = {"Items": listing, "BatchInput": {"bucket": BUCKET}}
    settings = StartSettings(state_machine_arn=machine)
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}

    report = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    assert report.recorded == [done.record_id]
    assert len(report.started) == 2
    assert report.outside_prefix == ["elsewhere/d.png"]
    assert report.gone == ["incoming/gone.png"]
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    started = {
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["object"]["key"]
        for e in executions
    }
    assert started == {"incoming/b.png", "incoming/c.png"}
    # Resumable: the same batch again starts nothing new. A Standard workflow answers a
    # running execution's name and input with that execution, and refuses a finished one's.
    again = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)
    assert len(again.started) == 2 and again.later_attempt == {}
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 2


@mock_aws
def test_an_unversioned_key_holding_bytes_recorded_as_overwritten_is_started_again() -> None:
    """Unversioned, A then B then A: A's record says its bytes were overwritten before they
    were read (ObjectChanged), and the key holds them again. A record of any other status
    is done; that one may be replaced by another delivery, so the backfill starts it."""
    s3, ddb, sfn, machine = backfill_world(versioned=False)
    for key in ("incoming/changed.png", "incoming/rejected.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"the same bytes again")
    refs = {}
    for key, code in (
        ("incoming/changed.png", "ObjectChanged"),
        ("incoming/rejected.png", "NotAnImage"),
    ):
        etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        refs[code] = ObjectRef(BUCKET, key, "null", etag, 1)
        item = {"status": {"S": "REJECTED"}, "error_code": {"S": code}}
        # Written by an earlier backfill, whose delivery was the record id alone.
        item["delivery"] = {"S": refs[code].delivery}
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": refs[code].record_id}, **item})
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }
    settings = StartSettings(state_machine_arn=machine)
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}

    report = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    assert report.started == [refs["ObjectChanged"].record_id]
    assert report.recorded == [refs["NotAnImage"].record_id]
    # Its execution is a delivery of its own (the upload's LastModified), so its record
    # write may replace the one an earlier delivery of those bytes left.
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    started = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    delivery = started["object"]["delivery"]
    assert delivery != refs["ObjectChanged"].delivery
    existing = {"status": "REJECTED", "error_code": "ObjectChanged"}
    assert may_replace(existing | {"delivery": refs["ObjectChanged"].delivery}, 0, delivery)


@mock_aws
def test_items_that_name_no_object_are_counted_and_a_batch_that_is_not_one_is_named() -> None:
    s3, ddb, sfn, machine = backfill_world(versioned=False)
    event = json.loads((PROJECT_ROOT / "events" / "backfill.json").read_text())
    (item,) = event["Items"]
    s3.put_object(Bucket=BUCKET, Key=item["Key"], Body=b"x")
    event["Items"] += ["incoming/a.png", {"Key": 7}, {"Key": ""}, {"Size": 3}]
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}
    settings = StartSettings(state_machine_arn=machine)

    report = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    assert (len(report.started), report.malformed) == (1, 4)
    assert report.to_json()["malformed"] == 4
    for not_a_batch in ([], "incoming/", None):
        with pytest.raises(ValueError, match=r"expected \{'Items'"):
            backfill_batch(
                not_a_batch, **clients, table=TABLE, prefix="incoming/", settings=settings
            )


def refusal(status: int, code: str, message: str) -> Any:
    """What a botocore before-call handler returns for S3 or Step Functions to refuse."""
    error = {"Error": {"Code": code, "Message": message}}
    error["ResponseMetadata"] = {"HTTPStatusCode": status}
    return (botocore.awsrequest.AWSResponse("", status, {}, None), error)


def started_objects(sfn: Any, machine: str) -> dict[str, dict[str, Any]]:
    """key -> the object each started execution was given."""
    found = {}
    for execution in sfn.list_executions(stateMachineArn=machine)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        given = json.loads(described["input"])["object"]
        found[given["key"]] = given
    return found


@pytest.mark.parametrize("versioned", [True, False])
@mock_aws
def test_an_object_s3_will_not_let_anyone_read_is_started_from_its_listing(
    versioned: bool,
) -> None:
    """Every read of one key refused (as for an SSE-C object read without its key: 400 with
    code "400"): its versions come from ListObjectVersions, which S3 answers whatever the
    object's own permissions, and they are started like the others, so the workflow's own
    read ends each in a record. The batch succeeds: on AWS a failed batch would count its
    every object against the Map's tolerance."""
    s3, ddb, sfn, machine = backfill_world(versioned=versioned)
    keys = ["incoming/a.png", "incoming/locked.png", "incoming/locked.png.bak", "incoming/c.png"]
    s3.put_object(Bucket=BUCKET, Key="incoming/locked.png", Body=b"older")
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    current = s3.head_object(Bucket=BUCKET, Key="incoming/locked.png")

    def refuse_locked(params: dict[str, Any], **_: Any) -> Any:
        if str(params.get("url_path", "")).endswith("/incoming/locked.png"):  # the request
            return refusal(400, "400", "Bad Request")
        return None

    for operation in ("HeadObject", "GetObject"):
        s3.meta.events.register(f"before-call.s3.{operation}", refuse_locked)
    listing = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    event = {"Items": listing, "BatchInput": {"bucket": BUCKET}}
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}
    settings = StartSettings(state_machine_arn=machine)

    report = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    # Versioned, the overwritten first upload of the locked key is an upload of its own.
    assert report.unreadable == {} and len(report.started) == (5 if versioned else 4)
    started = started_objects(sfn, machine)
    assert set(started) == set(keys)
    locked = [
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["object"]
        for e in sfn.list_executions(stateMachineArn=machine)["executions"]
    ]
    locked = [o for o in locked if o["key"] == "incoming/locked.png"]
    (newest,) = [o for o in locked if o["size"] == 1]
    # Named as HeadObject names the current version (the same record and delivery).
    assert newest["version"] == str(current.get("VersionId") or "null")
    assert (newest["etag"], newest["size"]) == (current["ETag"].strip('"'), 1)
    assert sorted(o["size"] for o in locked) == ([1, 5] if versioned else [1])


@mock_aws
def test_every_version_of_an_overwritten_key_without_a_record_is_started() -> None:
    """A key overwritten after the S3 event of its first upload was lost: the first upload
    is a version of its own, with no record, and is classified; the recorded one is not."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    first = s3.put_object(Bucket=BUCKET, Key="incoming/a.png", Body=b"first")["VersionId"]
    second = s3.put_object(Bucket=BUCKET, Key="incoming/a.png", Body=b"second")
    done = ObjectRef(BUCKET, "incoming/a.png", second["VersionId"], second["ETag"].strip('"'), 6)
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": done.record_id}, "status": {"S": "ACCEPTED"}})
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}
    settings = StartSettings(state_machine_arn=machine)

    report = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    assert report.recorded == [done.record_id] and len(report.started) == 1
    started = started_objects(sfn, machine)["incoming/a.png"]
    assert (started["version"], started["size"]) == (first, 5)
    again = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)
    assert again.started == report.started
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1


@pytest.mark.parametrize("versioned", [True, False])
@mock_aws
def test_a_key_deleted_since_the_listing_is_gone_not_started(versioned: bool) -> None:
    """A delete marker is current (versioned), or nothing is left (unversioned): the key was
    deleted, and a deleted upload is not classified now, not even its older versions."""
    s3, ddb, sfn, machine = backfill_world(versioned=versioned)
    s3.put_object(Bucket=BUCKET, Key="incoming/a.png", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="incoming/a.png", Body=b"y")
    listing = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    s3.delete_object(Bucket=BUCKET, Key="incoming/a.png")
    event = {"Items": listing, "BatchInput": {"bucket": BUCKET}}
    settings = StartSettings(state_machine_arn=machine)
    report = backfill_batch(
        event, s3=s3, dynamodb=ddb, sfn=sfn, table=TABLE, prefix="incoming/", settings=settings
    )
    assert report.gone == ["incoming/a.png"] and report.started == []


@mock_aws
def test_an_object_whose_versions_s3_will_not_list_is_named_after_the_others_are_started() -> None:
    """ListObjectVersions refused for one key (throttled past the SDK's retries, say): the
    batch's other objects still start, then the batch fails with every such key and S3's
    error named, so the Map counts it."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    keys = ["incoming/a.png", "incoming/locked.png", "incoming/c.png"]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    def refuse_listing(params: dict[str, Any], **_: Any) -> Any:
        if "locked.png" in str(params.get("query_string", "")):
            return refusal(503, "SlowDown", "Please reduce your request rate.")
        return None

    s3.meta.events.register("before-call.s3.ListObjectVersions", refuse_listing)
    listing = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    event = {"Items": listing, "BatchInput": {"bucket": BUCKET}}
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}
    settings = StartSettings(state_machine_arn=machine)

    with pytest.raises(ObjectsUnreadable) as raised:
        backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    message = str(raised.value)
    slow = "SlowDown (Please reduce your request rate.)"
    assert f"s3://{BUCKET}/incoming/locked.png: {slow}" in message
    assert "the versions of 1 of 3 listed objects" in message and "started 2" in message
    assert set(started_objects(sfn, machine)) == {"incoming/a.png", "incoming/c.png"}
    # The Map's retry starts nothing twice and names the key again.
    with pytest.raises(ObjectsUnreadable, match=r"incoming/locked\.png"):
        backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 2


@mock_aws
def test_a_start_that_fails_is_named_and_the_rest_of_the_batch_still_starts() -> None:
    """StartExecution throttled past the SDK's retries for one object: the objects after it
    are still started, and the batch fails naming it and any object whose versions S3 would
    not list."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    keys = ["incoming/a.png", "incoming/locked.png", "incoming/busy.png", "incoming/d.png"]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    def refuse_locked(params: dict[str, Any], **_: Any) -> Any:
        if "locked.png" in str(params.get("url_path", "")) + str(params.get("query_string")):
            return refusal(403, "403", "Forbidden")
        return None

    def throttle_busy(params: dict[str, Any], **_: Any) -> Any:
        if b"incoming/busy.png" in params["body"]:
            return refusal(400, "ThrottlingException", "Rate exceeded")
        return None

    s3.meta.events.register("before-call.s3.ListObjectVersions", refuse_locked)
    sfn.meta.events.register("before-call.states.StartExecution", throttle_busy)
    listing = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    event = {"Items": listing, "BatchInput": {"bucket": BUCKET}}
    settings = StartSettings(state_machine_arn=machine)

    with pytest.raises(WorkflowsNotStarted) as raised:
        backfill_batch(
            event, s3=s3, dynamodb=ddb, sfn=sfn, table=TABLE, prefix="incoming/", settings=settings
        )

    message = str(raised.value)
    busy = s3.head_object(Bucket=BUCKET, Key="incoming/busy.png")["VersionId"]
    assert (
        f"s3://{BUCKET}/incoming/busy.png (version {busy}): ThrottlingException (Rate exceeded)"
        in message
    )
    assert "for 1 of 4 listed objects" in message
    assert f"could not be listed (ListObjectVersions): s3://{BUCKET}/incoming/locked.png: 403" in (
        message
    )
    assert "started 2" in message
    started = {
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["object"]["key"]
        for e in sfn.list_executions(stateMachineArn=machine)["executions"]
    }
    assert started == {"incoming/a.png", "incoming/d.png"}


def test_the_event_file_is_a_batch_the_function_reads() -> None:
    from scones_core.backfill import listed_items

    event = json.loads((PROJECT_ROOT / "events" / "backfill.json").read_text())
    bucket, items = listed_items(event)
    assert bucket == BUCKET and [i["Key"] for i in items] == [
        "incoming/camera-7/delivery photo 1.png"
    ]


@mock_aws
def test_an_item_as_the_s3_item_reader_lists_it_is_started_at_its_versions_upload_time() -> None:
    """Step Functions' S3 item reader lists ``Etag`` and ``LastModified`` in epoch
    seconds (not boto3's ``ETag`` and datetime). The event time is ISO 8601, and it is the
    upload time of the version HeadObject found: here the key was written again after
    the listing (the event file's item is from 2026-11-30), and the execution names the
    new version, so it carries that version's time, not the listing's."""
    from scones_core.monitoring.timestamps import format_millis

    s3, ddb, sfn, machine = backfill_world(versioned=False)
    event = json.loads((PROJECT_ROOT / "events" / "backfill.json").read_text())
    (item,) = event["Items"]
    s3.put_object(Bucket=BUCKET, Key=item["Key"], Body=b"x")
    assert "ETag" not in item and isinstance(item["LastModified"], int)
    uploaded = s3.head_object(Bucket=BUCKET, Key=item["Key"])["LastModified"]

    report = backfill_batch(
        event,
        s3=s3,
        dynamodb=ddb,
        sfn=sfn,
        table=TABLE,
        prefix="incoming/",
        settings=StartSettings(state_machine_arn=machine),
    )

    assert len(report.started) == 1
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert document["event_time"] == format_millis(uploaded)
    assert document["event_time"] != "2026-11-30T08:15:00.000Z"


@pytest.mark.parametrize(
    ("modified", "event_time"),
    [
        (1.789180622e9, "2026-09-12T02:37:02.000Z"),  # as AWS's item reader writes it
        (1796026500.25, "2026-11-30T08:15:00.250Z"),
        ("2026-11-30 08:15:00+00:00", "2026-11-30T08:15:00.000Z"),  # moto's reader
        ("yesterday", ""),
        (True, ""),
        (1e300, ""),
    ],
)
def test_the_listed_time_is_written_as_s3_writes_an_event_time(
    modified: Any, event_time: str
) -> None:
    """Records started by an S3 event and by the backfill carry one ``event_time`` format
    (``eventTime``'s), which the review queue sorts as text."""
    from scones_core.backfill import _event_time

    assert _event_time({"Key": "incoming/a.png", "LastModified": modified}) == event_time


@mock_aws
def test_an_object_whose_execution_closed_without_a_record_is_started_as_the_next_attempt() -> None:
    """Standard refuses a closed execution's name, whatever the input. An upload whose first
    execution was stopped before its record is started as attempt 1 (``-r1``); one whose
    backfill execution is still running is not started twice; one whose every attempt
    closed without a record is named, and the batch fails."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    for key in ("incoming/stopped.png", "incoming/running.png", "incoming/stuck.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    listing = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    event = {"Items": listing, "BatchInput": {"bucket": BUCKET}}
    settings = StartSettings(state_machine_arn=machine)
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}

    def ref_of(key: str) -> ObjectRef:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        return ObjectRef(BUCKET, key, head["VersionId"], head["ETag"].strip('"'), 1)

    def stop(name: str, document: dict[str, Any]) -> None:
        arn = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(document))
        sfn.stop_execution(executionArn=arn["executionArn"])

    stopped, stuck = ref_of("incoming/stopped.png"), ref_of("incoming/stuck.png")
    # The start function's execution (the S3 event's time), stopped before its record.
    stop(stopped.execution_name, {"object": stopped.to_json(), "event_time": "t", "attempt": 0})
    for attempt in range(MAX_ATTEMPT + 1):
        stop(stuck.execution_name_for(attempt), {"attempt": attempt})

    with pytest.raises(WorkflowsNotStarted) as raised:
        backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)

    named = f"s3://{BUCKET}/incoming/stuck.png (version {stuck.version}): ExecutionAlreadyExists"
    assert named in str(raised.value)
    assert "for 1 of 3 listed objects" in str(raised.value)
    running = {
        e["name"]: json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])
        for e in sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING")["executions"]
    }
    replay = running[stopped.execution_name_for(1)]
    assert (replay["attempt"], replay["object"]["record_id"]) == (1, stopped.record_id)
    assert {d["object"]["key"] for d in running.values()} == {
        "incoming/stopped.png",
        "incoming/running.png",
    }

    # The Map's retry of the batch: both still running, nothing new started.
    with pytest.raises(WorkflowsNotStarted, match=r"incoming/stuck\.png"):
        backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)
    again = sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING")["executions"]
    assert {e["name"] for e in again} == set(running)


@mock_aws
def test_keys_a_throttled_table_leaves_unprocessed_are_asked_again_after_a_backoff() -> None:
    """BatchGetItem answers a throttled table's keys as ``UnprocessedKeys`` (200, so the SDK
    does not retry): they are asked for again after a growing, jittered pause, not at once,
    and a record found on a later round still counts."""
    _, ddb, _, _ = backfill_world(versioned=False)
    ids = [f"{BUCKET}/incoming/{n}.png#etag:{n}" for n in range(3)]
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": ids[2]}, "status": {"S": "ACCEPTED"}})
    answers = iter([ids[1:], ids[2:]])  # two throttled rounds, then all read

    def throttle(params: dict[str, Any], **_: Any) -> Any:
        unprocessed = next(answers, None)
        if unprocessed is None:
            return None
        keys = [{"pk": {"S": i}} for i in unprocessed]
        body = {
            "Responses": {TABLE: []},
            "UnprocessedKeys": {TABLE: {"Keys": keys, "ProjectionExpression": "pk"}},
        }
        return (botocore.awsrequest.AWSResponse("", 200, {}, None), body)

    ddb.meta.events.register("before-call.dynamodb.BatchGetItem", throttle)
    pauses: list[float] = []

    found = recorded_ids(ddb, TABLE, ids, sleep=pauses.append)

    assert found == {ids[2]}
    assert len(pauses) == 2
    assert 0 <= pauses[0] <= UNPROCESSED_BACKOFF_SECONDS
    assert 0 <= pauses[1] <= 2 * UNPROCESSED_BACKOFF_SECONDS


def backfill_handler(monkeypatch: pytest.MonkeyPatch, machine: str) -> Any:
    """The deployed handler, configured as the template configures it."""
    from conftest import load_handler

    for name, value in {
        "STATE_MACHINE_ARN": machine,
        "IMAGE_BUCKET": BUCKET,
        "INCOMING_PREFIX": "incoming/",
        "RESULTS_TABLE_NAME": TABLE,
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "SconesUnlimited",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return load_handler("backfill")


@mock_aws
def test_the_backfill_handler_starts_a_batch_and_counts_it_in_its_metrics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployed handler, configured as the template configures it."""

    s3, ddb, sfn, machine = backfill_world(versioned=True)
    for key in ("incoming/a.png", "incoming/b.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    head = s3.head_object(Bucket=BUCKET, Key="incoming/a.png")
    done = ObjectRef(BUCKET, "incoming/a.png", head["VersionId"], head["ETag"].strip('"'), 1)
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": done.record_id}, "status": {"S": "ACCEPTED"}})
    app = backfill_handler(monkeypatch, machine)
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }

    context = LambdaContext("backfill-request", time.time() * 1000 + 30_000)
    summary = app.lambda_handler(json.loads(json.dumps(event, default=str)), context)

    assert (summary["started"], summary["recorded"]) == (1, 1)
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    (document,) = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    assert (document["BackfillStarted"], document["BackfillRecorded"]) == ([1.0], [1.0])


@mock_aws
def test_a_batch_that_fails_part_way_still_counts_what_it_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One StartExecution throttled: the batch fails naming it, and the executions it did
    start are in BackfillStarted all the same (the metric was only added on success)."""

    s3, ddb, sfn, machine = backfill_world(versioned=True)
    for key in ("incoming/a.png", "incoming/busy.png", "incoming/c.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    def throttle_busy(params: dict[str, Any], **_: Any) -> Any:
        if b"incoming/busy.png" in params["body"]:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            error["ResponseMetadata"] = {"HTTPStatusCode": 400}
            return (botocore.awsrequest.AWSResponse("", 400, {}, None), error)
        return None

    sfn.meta.events.register("before-call.states.StartExecution", throttle_busy)
    app = backfill_handler(monkeypatch, machine)
    monkeypatch.setattr(app, "clients", lambda: (s3, ddb, sfn))
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }
    context = LambdaContext("backfill-request", time.time() * 1000 + 30_000)
    with pytest.raises(WorkflowsNotStarted, match=r"incoming/busy\.png"):
        app.lambda_handler(json.loads(json.dumps(event, default=str)), context)
    (document,) = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    assert (document["BackfillStarted"], document["BackfillRecorded"]) == ([2.0], [0.0])


@pytest.mark.parametrize("variable", ["RESULTS_TABLE_NAME", "STATE_MACHINE_ARN"])
def test_the_backfill_handler_names_a_missing_setting_at_cold_start(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    from conftest import load_handler

    for name in ("STATE_MACHINE_ARN", "IMAGE_BUCKET", "INCOMING_PREFIX", "RESULTS_TABLE_NAME"):
        monkeypatch.setenv(name, "x")
    monkeypatch.delenv(variable)
    with pytest.raises(SettingsError, match=f"backfill settings: {variable} is missing"):
        load_handler("backfill")


def test_a_listing_in_pages_is_followed_to_the_keys_last_version_and_no_further() -> None:
    """Real S3's answers (Stubber): a key with more versions than a page holds, then a
    longer key the prefix also matches. Every version of the key is named, newest first,
    the null version (a bucket whose versioning was suspended) with its upload mark at
    HeadObject's whole second, as earlier backfills named it; the longer key is not."""
    s3 = boto3.client("s3", region_name="us-east-1")
    modified = datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
    key = "incoming/x.png"

    def version(version_id: str, etag: str, size: int, latest: bool, name: str = key) -> dict:
        return {
            "Key": name,
            "VersionId": version_id,
            "IsLatest": latest,
            "ETag": f'"{etag}"',
            "Size": size,
            "LastModified": modified,
        }

    with Stubber(s3) as stub:
        stub.add_response(
            "list_object_versions",
            {
                "IsTruncated": True,
                "NextKeyMarker": key,
                "NextVersionIdMarker": "v2",
                "Versions": [version("null", "aa", 5, True), version("v2", "bb", 6, False)],
            },
            {"Bucket": BUCKET, "Prefix": key, "MaxKeys": MAX_VERSIONS_PER_KEY + 1},
        )
        stub.add_response(
            "list_object_versions",
            {
                "IsTruncated": True,
                "NextKeyMarker": f"{key}.bak",
                "NextVersionIdMarker": "v9",
                "Versions": [
                    version("v1", "cc", 7, False),
                    version("v9", "dd", 8, True, f"{key}.bak"),
                ],
            },
            {
                "Bucket": BUCKET,
                "Prefix": key,
                "MaxKeys": MAX_VERSIONS_PER_KEY + 1,
                "KeyMarker": key,
                "VersionIdMarker": "v2",
            },
        )
        found, more = key_versions(s3, BUCKET, {"Key": key, "Size": 5, "Etag": '"aa"'})
        stub.assert_no_pending_responses()
    refs = [ref for ref, _ in found]
    assert not more
    assert [(r.version, r.etag, r.size) for r in refs] == [
        ("null", "aa", 5),
        ("v2", "bb", 6),
        ("v1", "cc", 7),
    ]
    assert refs[0].sequencer == "modified:2026-01-02T03:04:05.000Z"
    assert [r.sequencer for r in refs[1:]] == ["", ""]  # a version id tells them apart
    assert {when for _, when in found} == {"2026-01-02T03:04:05.000Z"}


@mock_aws
def test_a_key_with_more_versions_than_one_page_is_named_and_its_newest_examined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key overwritten in place over and over (a camera's "latest.jpg"): only its newest
    versions are examined, so the batch fits the function's time, and the key is named."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    uploads = [
        s3.put_object(Bucket=BUCKET, Key="incoming/latest.jpg", Body=bytes([n]))["VersionId"]
        for n in range(5)
    ]
    # A longer key the prefix also lists: the page is cut after exactly the key's versions.
    s3.put_object(Bucket=BUCKET, Key="incoming/latest.jpg.bak", Body=b"x")
    item = s3.list_objects_v2(Bucket=BUCKET)["Contents"][0]
    found, more = key_versions(s3, BUCKET, item, limit=5)
    assert not more and [ref.version for ref, _ in found] == uploads[::-1]
    monkeypatch.setattr(backfill, "MAX_VERSIONS_PER_KEY", 3)
    event = {"Items": [item], "BatchInput": {"bucket": BUCKET}}
    settings = StartSettings(state_machine_arn=machine)

    report = backfill_batch(
        event, s3=s3, dynamodb=ddb, sfn=sfn, table=TABLE, prefix="incoming/", settings=settings
    )

    assert report.versions_beyond == ["incoming/latest.jpg"]
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    started = {
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["object"][
            "version"
        ]
        for e in executions
    }
    assert started == set(uploads[2:])


@mock_aws
def test_versions_left_when_the_functions_time_runs_short_fail_the_batch_for_a_retry() -> None:
    """No start with less than the margin of the function's time left: the batch fails as
    WorkflowsNotStarted (which the Map retries) naming how many versions are left, and the
    retry, with time enough, starts only those."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    for key in ("incoming/a.png", "incoming/b.png", "incoming/c.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }
    clients = {"s3": s3, "dynamodb": ddb, "sfn": sfn}
    settings = StartSettings(state_machine_arn=machine)
    # Time for listing the three keys and starting one version, then no more.
    left = iter([60.0] * 4 + [START_MARGIN_SECONDS - 0.1] * 2)

    with pytest.raises(WorkflowsNotStarted) as raised:
        backfill_batch(
            event,
            **clients,
            table=TABLE,
            prefix="incoming/",
            settings=settings,
            time_left=lambda: next(left),
        )

    assert str(raised.value) == (
        "2 listed objects or versions without a record were not started: the function's "
        "time ran short (the Map's retry, or a later backfill, starts them). The batch's "
        "other objects were handled (started 1, already recorded 0)."
    )
    assert set(started_objects(sfn, machine)) == {"incoming/a.png"}
    retry = backfill_batch(event, **clients, table=TABLE, prefix="incoming/", settings=settings)
    assert len(retry.started) == 3 and retry.out_of_time == 0
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 3


@mock_aws
def test_an_upload_deleted_before_the_key_was_used_again_is_not_classified() -> None:
    """First upload, deleted (a delete marker), then a new upload under the same key: the
    deleted one is not classified now, only the one after the deletion."""
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    s3.put_object(Bucket=BUCKET, Key="incoming/a.png", Body=b"deleted")
    time.sleep(1.1)  # moto lists LastModified to the second
    s3.delete_object(Bucket=BUCKET, Key="incoming/a.png")
    kept = s3.put_object(Bucket=BUCKET, Key="incoming/a.png", Body=b"kept")["VersionId"]
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }
    settings = StartSettings(state_machine_arn=machine)
    report = backfill_batch(
        event, s3=s3, dynamodb=ddb, sfn=sfn, table=TABLE, prefix="incoming/", settings=settings
    )
    assert len(report.started) == 1
    assert started_objects(sfn, machine)["incoming/a.png"]["version"] == kept


@mock_aws
def test_keys_not_listed_before_the_functions_time_runs_short_fail_the_batch() -> None:
    s3, ddb, sfn, machine = backfill_world(versioned=True)
    for key in ("incoming/a.png", "incoming/b.png"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    event = {
        "Items": s3.list_objects_v2(Bucket=BUCKET)["Contents"],
        "BatchInput": {"bucket": BUCKET},
    }
    settings = StartSettings(state_machine_arn=machine)
    with pytest.raises(WorkflowsNotStarted, match=r"^2 listed objects or versions") as raised:
        backfill_batch(
            event,
            s3=s3,
            dynamodb=ddb,
            sfn=sfn,
            table=TABLE,
            prefix="incoming/",
            settings=settings,
            time_left=lambda: START_MARGIN_SECONDS / 2,
        )
    assert raised.value.report.out_of_time == 2
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
