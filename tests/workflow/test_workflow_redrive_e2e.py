"""``scones redrive`` on the offline stack: outages replayed, dead letters drained.

The CLI is called in-process (``scones.cli.main.main``) and finds this module's
offline stack through the state file, as it finds the stack of ``scones up``; one
test goes the AWS way instead (``--stack`` outputs from CloudFormation).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scones_core.monitoring.published import window_metrics_key
from scones_core.monitoring.timestamps import parse_timestamp
from scones_core.objects import ObjectRef
from scones_core.redrive import Outcome, Redriver, RedriveReport
from workflow_helpers import (
    confident_image,
    drain_dead_letters,
    history_events,
    wait_for_execution,
)

from scones.cli import stack_state
from scones.cli.main import main
from scones.costs.workflow import load_workflow
from scones.offline.client import StackClient, Upload
from scones.offline.stack import OfflineStack

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-stack")]

CLASSIFIED = ("ACCEPTED", "NEEDS_REVIEW")


@pytest.fixture(autouse=True)
def state_file(
    stack: OfflineStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Point the CLI at this module's stack, as `scones up` would."""
    monkeypatch.setattr(stack_state, "STATE_DIR", tmp_path / ".scones")
    monkeypatch.setattr(stack_state, "STATE_FILE", tmp_path / ".scones" / "stack.json")
    stack_state.write_state(stack.endpoints, os.getpid(), stack.work_dir)
    yield
    stack.set_faults(None)
    # The module's tests share the queue: what one leaves (a test that failed half way)
    # must not fail the next.
    drain_dead_letters(stack)


def redrive(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["redrive", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def outcomes(report: dict[str, Any]) -> list[tuple[str, str, int]]:
    return sorted((r["key"], r["outcome"], r["attempt"]) for r in report["replays"])


def image(local_predictions: dict[Path, tuple[str, float]], threshold: float) -> bytes:
    return confident_image(local_predictions, threshold).read_bytes()


def wait_for_attempt(
    api: StackClient,
    uploads: list[Upload],
    attempt: int,
    statuses: tuple[str, ...],
    timeout: float = 90,
) -> dict[Upload, dict[str, Any]]:
    """Each upload's record once it is the one ``attempt`` wrote, with one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        by_version = {(r["key"], r.get("version_id")): r for r in api.records()}
        found = {u: by_version.get((u.key, u.version_id)) for u in uploads}
        done = {
            u: r
            for u, r in found.items()
            if r is not None and r.get("attempt") == attempt and r["status"] in statuses
        }
        if len(done) == len(uploads):
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"records not at attempt {attempt} in {statuses}: {found}")
        time.sleep(0.2)


def records_for(api: StackClient, key: str) -> list[dict[str, Any]]:
    return [r for r in api.records() if r.get("key") == key]


def execution_names(api: StackClient) -> list[str]:
    sfn = api.client("stepfunctions")
    names: list[str] = []
    kwargs: dict[str, Any] = {"stateMachineArn": api.endpoints.state_machine_arn}
    while True:
        page = sfn.list_executions(**kwargs)
        names += [e["name"] for e in page["executions"]]
        if not page.get("nextToken"):
            return names
        kwargs["nextToken"] = page["nextToken"]


def dead_letters(api: StackClient) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in api.dead_letters()]


def wait_for_letters(
    api: StackClient, wanted: list[tuple[str, int]], timeout: float = 60
) -> list[dict[str, Any]]:
    """The ``workflow_failed`` letters for the (key, attempt) pairs ``wanted``, once all
    are in the queue: an execution writes its FAILED record first and sends its letter
    after, so a test that saw the record may be ahead of the letter."""
    deadline = time.monotonic() + timeout
    while True:
        letters = [
            m
            for m in dead_letters(api)
            if m.get("kind") == "workflow_failed" and (m["object"]["key"], m["attempt"]) in wanted
        ]
        if len(letters) >= len(wanted) or time.monotonic() > deadline:
            return letters
        time.sleep(0.2)


def run_again(api: StackClient, execution_arn: str, name: str, **changes: Any) -> str:
    """Start another execution with ``execution_arn``'s input (changed): a duplicate run."""
    sfn = api.client("stepfunctions")
    document = json.loads(sfn.describe_execution(executionArn=execution_arn)["input"])
    document.update(changes)
    arn = str(
        sfn.start_execution(
            stateMachineArn=api.endpoints.state_machine_arn, name=name, input=json.dumps(document)
        )["executionArn"]
    )
    assert wait_for_execution(sfn, arn) == "SUCCEEDED"
    return arn


def ended_in(api: StackClient, execution_arn: str) -> str:
    """The last per-image state an execution of one image entered (a Record* state or
    AlreadyRecorded ends the image's flow; the batch level's states are left out)."""
    batch_level = set(load_workflow().definition["States"])
    events = history_events(api.client("stepfunctions"), execution_arn)
    entered = [
        str(e["stateEnteredEventDetails"]["name"])
        for e in events
        if e["type"].endswith("StateEntered")
        and e["stateEnteredEventDetails"]["name"] not in batch_level
    ]
    return entered[-1]


def test_an_outage_is_replayed_and_every_object_is_classified_exactly_once(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = stack.api()
    data = image(local_predictions, threshold)
    stack.set_faults({"unavailable": -1})
    uploads = [api.upload_bytes(f"outage/photo-{i}.png", data) for i in range(3)]
    failed = wait_for_attempt(api, uploads, 0, ("FAILED",))
    stack.set_faults(None)
    keys = sorted(u.key for u in uploads)
    assert {r["error_code"] for r in failed.values()} == {"EndpointUnavailable"}
    letters = wait_for_letters(api, [(key, 0) for key in keys])
    assert sorted(m["object"]["key"] for m in letters) == keys
    assert {m["attempt"] for m in letters} == {0}

    code, report = redrive(capsys)
    assert code == 0
    assert outcomes(report) == [(key, "started", 1) for key in keys]
    # Running it again at once starts nothing: the replays' names are taken.
    executions_before = len(execution_names(api))
    code, again = redrive(capsys)
    assert code == 0
    assert all(r["outcome"] == "already_started" for r in again["replays"]), again

    records = wait_for_attempt(api, uploads, 1, CLASSIFIED)
    for upload, record in records.items():
        # A replay is named by its record (whether the first attempt ran alone or in a
        # batch of several uploads): the record's own execution name plus -r1.
        ref = ObjectRef(upload.bucket, upload.key, upload.version_id, upload.etag, 0)
        assert record["execution_arn"].rsplit(":", 1)[-1] == ref.execution_name_for(0) + "-r1"
        assert ended_in(api, record["execution_arn"]) in ("RecordAccepted", "RecordNeedsReview")
        assert [r["pk"] for r in records_for(api, upload.key)] == [record["pk"]]

    code, third = redrive(capsys)
    assert (code, third["replays"]) == (0, [])  # nothing FAILED is left

    # The outage's dead letters ask for what the records already hold: deleted, nothing
    # new (the record is read first: an Express execution could not be described).
    code, drained = redrive(capsys, "--dead-letters")
    assert code == 0
    assert outcomes(drained) == [(key, "already_recorded", 1) for key in keys]
    assert drained["messages_deleted"] == 3 and drained["messages_left"] == 0
    assert not [m for m in dead_letters(api) if m.get("object", {}).get("key") in keys]
    assert len(execution_names(api)) == executions_before
    assert wait_for_attempt(api, uploads, 1, CLASSIFIED) == records


def test_a_dead_lettered_s3_event_is_replayed_and_other_messages_stay(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = stack.api()
    sqs = api.client("sqs")
    ingest_url = stack.stack.outputs["IngestQueueUrl"]
    dlq_url = api.endpoints.dead_letter_queue_url
    with stack.delivery_paused():
        upload = api.upload_bytes("dlq-event/photo.png", image(local_predictions, threshold))
        # As if the start function had failed maxReceiveCount times: SQS moves it over.
        message = sqs.receive_message(QueueUrl=ingest_url, WaitTimeSeconds=2)["Messages"][0]
        sqs.send_message(QueueUrl=dlq_url, MessageBody=message["Body"])
        sqs.delete_message(QueueUrl=ingest_url, ReceiptHandle=message["ReceiptHandle"])
    # A dry run exits as the real run would: 0, every letter would be replayed.
    code, dry = redrive(capsys, "--dead-letters", "--dry-run")
    assert (code, [r["outcome"] for r in dry["replays"]]) == (0, ["would_start"])
    assert dry["dry_run"] is True  # what a script tells a dry run's report by
    stranger = '{"hello": "not a replayable message"}'
    sqs.send_message(QueueUrl=dlq_url, MessageBody=stranger)
    code, dry = redrive(capsys, "--dead-letters", "--dry-run")
    assert (code, dry["messages_left"]) == (1, 2)  # the stranger would be left
    assert records_for(api, upload.key) == []

    code, report = redrive(capsys, "--dead-letters")

    assert code == 1  # something was left for a person to look at
    assert report["dry_run"] is False
    by_source = {r["source"]: r for r in report["replays"]}
    assert set(by_source) == {"s3_event", "other"}
    started = by_source["s3_event"]
    assert (started["key"], started["outcome"], started["attempt"]) == (upload.key, "started", 0)
    assert by_source["other"]["outcome"] == "left"
    assert report["messages_deleted"] == 1 and report["messages_left"] == 1
    record = api.wait_for_records([upload], timeout=60)[upload]
    assert record["status"] in CLASSIFIED and record["attempt"] == 0
    # The replay is the object's first execution, named as the start function names it.
    assert record["execution_arn"].rsplit(":", 1)[-1] == started["execution_name"]
    bodies = [m["Body"] for m in api.dead_letters()]
    assert stranger in bodies and message["Body"] not in bodies

    # The message that stayed is seen again at once, and again never deleted.
    code, again = redrive(capsys, "--dead-letters")
    assert code == 1
    assert [(r["source"], r["outcome"]) for r in again["replays"]] == [("other", "left")]
    assert stranger in [m["Body"] for m in api.dead_letters()]
    assert len(records_for(api, upload.key)) == 1


def test_a_failed_record_is_replaced_only_by_a_later_attempt(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = stack.api()
    stack.set_faults({"unavailable": -1})
    upload = api.upload_bytes("stale/photo.png", image(local_predictions, threshold))
    first = wait_for_attempt(api, [upload], 0, ("FAILED",))[upload]
    # The endpoint is still down: the replay fails too, and says so with attempt 1. (The
    # prefix as the tables show keys, without the stack's incoming prefix.)
    code, report = redrive(capsys, "--prefix", "stale/")
    assert (code, outcomes(report)) == (0, [(upload.key, "started", 1)])
    second = wait_for_attempt(api, [upload], 1, ("FAILED",))[upload]
    stack.set_faults(None)
    assert second["execution_arn"].endswith("-r1")

    # A stale duplicate of the first execution (a late re-delivery, an Express workflow
    # running twice) now succeeds, but must not replace the newer FAILED record.
    stale = run_again(api, first["execution_arn"], "stale-duplicate-of-attempt-0")
    assert ended_in(api, stale) == "AlreadyRecorded"
    assert records_for(api, upload.key) == [second]
    # Nor may a duplicate of attempt 1 (the same attempt) replace it.
    same = run_again(api, second["execution_arn"], "duplicate-of-attempt-1")
    assert ended_in(api, same) == "AlreadyRecorded"
    assert records_for(api, upload.key) == [second]

    # The AWS way: names from the stack's CloudFormation outputs.
    for name, value in (("AWS_ACCESS_KEY_ID", "offline"), ("AWS_SECRET_ACCESS_KEY", "offline")):
        monkeypatch.setenv(name, value)
    aws = ["--stack", stack.stack.stack_name, "--endpoint-url", stack.endpoint_url]
    code, report = redrive(capsys, *aws, "--region", "us-east-1", "--prefix", "incoming/stale/")
    assert (code, outcomes(report)) == (0, [(upload.key, "started", 2)])
    third = wait_for_attempt(api, [upload], 2, CLASSIFIED)[upload]
    assert third["execution_arn"].endswith("-r2")

    # A classified record is final: not even a later attempt replaces it.
    later = run_again(api, third["execution_arn"], "later-attempt-on-accepted", attempt=3)
    assert ended_in(api, later) == "AlreadyRecorded"
    assert records_for(api, upload.key) == [third]
    # The dead letters of attempts 0 and 1 ask for what the final record holds: nothing
    # starts.
    assert len(wait_for_letters(api, [(upload.key, 0), (upload.key, 1)])) == 2
    code, drained = redrive(capsys, "--dead-letters")
    assert code == 0
    assert outcomes(drained) == [
        (upload.key, "already_recorded", 1),
        (upload.key, "already_recorded", 2),
    ]
    assert records_for(api, upload.key) == [third]
    # Only FAILED records can be replayed.
    assert main(["redrive", "--status", third["status"]]) == 2
    assert "only FAILED records can be replayed" in capsys.readouterr().err


def test_a_dead_lettered_monitor_run_is_run_again_for_its_window(
    stack: OfflineStack, capsys: pytest.CaptureFixture[str]
) -> None:
    api = stack.api()
    sqs = api.client("sqs")
    dlq_url = api.endpoints.dead_letter_queue_url
    scheduled = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime())
    schedule_arn = "arn:aws:scheduler:us-east-1:123456789012:schedule/default/s-monitor"

    def dead_letter(scheduled_time: str, attributes: dict[str, str]) -> str:
        """A run's event, as its sender dead-letters it: the error beside it."""
        body = json.dumps({"scheduledTime": scheduled_time, "scheduleArn": schedule_arn})
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        )
        return body

    # A run the scheduler could not invoke (it sends the schedule's Input)...
    never_invoked = {"ERROR_CODE": "TooManyRequestsException", "ERROR_MESSAGE": "Rate Exceeded."}
    good = dead_letter(scheduled, never_invoked | {"SCHEDULE_ARN": schedule_arn})
    # ... and one that failed every attempt in Lambda, whose scheduler's placeholder was
    # left unresolved: the monitor refuses it every time.
    failed = {"RequestID": "9f4c", "ErrorCode": "200", "ErrorMessage": "Task timed out"}
    bad = dead_letter("<aws.scheduler.scheduled-time>", failed)

    code, report = redrive(capsys, "--dead-letters")

    assert code == 1  # the run that failed again stays for a person
    by_outcome = {r["outcome"]: r for r in report["replays"]}
    assert set(by_outcome) == {"ran", "error"}
    ran, failed = by_outcome["ran"], by_outcome["error"]
    assert ran["source"] == failed["source"] == "monitor_run"
    assert (
        f"scheduled at {scheduled} (it was never invoked: TooManyRequestsException: "
        "Rate Exceeded.); window"
    ) in ran["detail"]
    assert "(it had failed: Task timed out)" in failed["detail"]
    assert "requests, alerts" in ran["detail"]
    assert "it failed again" in failed["detail"] and "scheduledTime" in failed["detail"]
    assert report["messages_deleted"] == 1 and report["messages_left"] == 1
    bodies = [m["Body"] for m in api.dead_letters()]
    assert bad in bodies and good not in bodies
    # The run measured its own window (offline, it ends at the scheduled time): its
    # metrics were published, once, under that window's marker.
    marker = window_metrics_key(stack.parameters["EndpointName"], parse_timestamp(scheduled))
    item = api.client("dynamodb").get_item(
        TableName=stack.stack.physical_id("MonitorStateTable"), Key={"pk": {"S": marker}}
    )
    assert "Item" in item


def test_a_drain_replays_each_object_once_while_its_fault_lasts(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """A replay that fails again sends a new dead letter while the drain still reads the
    queue: the drain must leave it, not replay the object again and again until the fault
    ends (one execution and endpoint call each time, a drain that never returns)."""
    api = stack.api()
    stack.set_faults({"model_error": -1})  # the endpoint rejects every image, for good
    uploads = [
        api.upload_bytes(f"rejected/photo-{i}.png", image(local_predictions, threshold))
        for i in range(2)
    ]
    wait_for_attempt(api, uploads, 0, ("FAILED",))
    keys = sorted(u.key for u in uploads)
    assert len(wait_for_letters(api, [(key, 0) for key in keys])) == 2
    redriver = Redriver(
        stepfunctions=api.client("stepfunctions"),
        state_machine_arn=api.endpoints.state_machine_arn,
        dynamodb=api.client("dynamodb"),
        table_name=api.endpoints.table,
        sqs=api.client("sqs"),
        dead_letter_queue_url=api.endpoints.dead_letter_queue_url,
        image_bucket=api.endpoints.bucket,
        incoming_prefix=api.endpoints.incoming_prefix,
        # Long enough a wait that the replays' own new letters arrive within the drain.
        wait_seconds=5,
    )
    drains: list[RedriveReport] = []
    draining = threading.Thread(target=lambda: drains.append(redriver.drain_dead_letters()))
    draining.start()
    draining.join(120)
    assert not draining.is_alive(), "the drain kept replaying the objects its fault fails"
    (report,) = drains
    rows = sorted((r.key, r.outcome, r.attempt) for r in report.replays)
    assert rows == sorted(
        [(key, Outcome.STARTED, 1) for key in keys] + [(key, Outcome.LEFT, 2) for key in keys]
    ), report.replays
    left = [r for r in report.replays if r.outcome is Outcome.LEFT]
    assert all(
        r.detail.startswith("this drain's replay of it was FAILED: EndpointRejectedRequest: ")
        for r in left
    ), left
    assert (report.messages_deleted, report.messages_left) == (2, 2)
    # Each object ran once more, no further: its record is attempt 1's, and attempt 1's
    # letter waits on the queue for a drain once the endpoint takes the image.
    records = wait_for_attempt(api, uploads, 1, ("FAILED",))
    assert {r["attempt"] for r in records.values()} == {1}
    third_attempts = {
        ObjectRef(u.bucket, u.key, u.version_id, u.etag, 0).execution_name_for(2) for u in uploads
    }
    assert not third_attempts & set(execution_names(api))
    assert len(wait_for_letters(api, [(key, 1) for key in keys])) == 2
