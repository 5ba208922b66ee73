"""The backfill state machine on the offline stack: a Distributed Map over an S3 prefix.

moto runs the real ``statemachine/backfill.asl.json`` (S3 ListObjectsV2 item reader,
MaxConcurrency, ToleratedFailurePercentage, DISTRIBUTED processor); only ``ItemBatcher``
is emulated (one item per batch, ``scones.offline.asl_emulation``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLES
from workflow_helpers import wait_for_execution

from scones.cli import stack_state
from scones.cli.backfill import (
    failed_result_files,
    find_backfill_machine,
    has_objects,
    start_backfill,
)
from scones.cli.main import main
from scones.offline.stack import OfflineStack, StackOptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("backfill-stack")]


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    with OfflineStack(StackOptions(enable_faults=True)) as running:
        yield running


def put_without_events(stack: OfflineStack, objects: dict[str, bytes]) -> None:
    """Objects that were there before the workflow: no notification reaches the queue."""
    sqs, queue = stack.client("sqs"), stack.stack.outputs["IngestQueueUrl"]
    with stack.delivery_paused():
        for key, data in objects.items():
            stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data)
        # Deleted, not purged: SQS allows one purge a minute.
        while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            sqs.delete_message_batch(
                QueueUrl=queue,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(messages)
                ],
            )


def records_under(stack: OfflineStack, prefix: str) -> list[dict[str, Any]]:
    return [r for r in stack.api().records() if str(r.get("key", "")).startswith(prefix)]


def run_backfill(stack: OfflineStack, prefix: str) -> dict[str, Any]:
    sfn = stack.client("stepfunctions")
    execution = start_backfill(sfn, find_backfill_machine(sfn), prefix)
    assert wait_for_execution(sfn, execution, timeout=180) == "SUCCEEDED"
    return dict(json.loads(sfn.describe_execution(executionArn=execution)["output"]))


def test_backfill_classifies_what_has_no_record_and_a_rerun_starts_nothing(
    stack: OfflineStack,
) -> None:
    prefix = f"{stack.incoming_prefix}old/"
    images = sorted(SAMPLES.glob("*/*.png"))[:3]
    put_without_events(
        stack,
        {f"{prefix}{path.name}": path.read_bytes() for path in images[1:]}
        | {f"{prefix}notes.txt": b"not an image"},
    )
    # One object already has its record: the backfill must leave it alone.
    recorded = stack.api().upload_file(images[0], f"old/{images[0].name}")
    stack.api().wait_for_records([recorded], timeout=60)
    before = {r["pk"]: r for r in records_under(stack, prefix)}
    assert len(before) == 1

    output = run_backfill(stack, prefix)
    assert set(output) == {"map_run", "results"}
    assert output["map_run"].startswith(
        f"arn:aws:states:us-east-1:123456789012:mapRun:{stack.options.stack_name}-backfill/"
    )
    # The children's results went to the ResultWriter's prefix, not into the output.
    results = f"s3://{stack.bucket}/{stack.parameters['BackfillResultsPrefix']}"
    assert output["results"].startswith(results) and output["results"].endswith("/manifest.json")
    assert failed_result_files(stack.client("s3"), output["results"]) == []
    sfn = stack.client("stepfunctions")
    api = stack.api()
    deadline = time.monotonic() + 120
    while len(records_under(stack, prefix)) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    records = {r["key"].rsplit("/", 1)[-1]: r for r in records_under(stack, prefix)}
    assert set(records) == {p.name for p in images} | {"notes.txt"}
    assert records["notes.txt"]["status"] == "REJECTED"
    assert {records[p.name]["status"] for p in images} <= {"ACCEPTED", "NEEDS_REVIEW"}
    # The record that existed was not replaced (same execution).
    (old_pk,) = before
    assert next(r for r in records_under(stack, prefix) if r["pk"] == old_pk) == before[old_pk]

    # Resumable: a second run over the same prefix starts no classification.
    executions = sfn.list_executions(stateMachineArn=api.endpoints.state_machine_arn)
    count = len(executions["executions"])
    run_backfill(stack, prefix)
    again = sfn.list_executions(stateMachineArn=api.endpoints.state_machine_arn)
    assert len(again["executions"]) == count
    assert len(records_under(stack, prefix)) == 4


def test_an_object_s3_will_not_read_ends_in_a_failed_record_and_the_backfill_succeeds(
    stack: OfflineStack,
) -> None:
    """S3 refuses every read of one listed object (a bucket policy denying its key, say):
    the backfill starts it from its listed version all the same, and the
    workflow's own read records it FAILED, naming S3's error, while the others are
    classified. No batch fails, so nothing counts against the tolerated percentage."""
    prefix = f"{stack.incoming_prefix}denied/"
    images = sorted(SAMPLES.glob("*/*.png"))[3:5]
    objects = {f"{prefix}{path.name}": path.read_bytes() for path in images}
    keys = list(objects)
    put_without_events(stack, objects)
    faults = stack.deny_object_reads([keys[0]])
    try:
        output = run_backfill(stack, prefix)
        assert failed_result_files(stack.client("s3"), output["results"]) == []
        deadline = time.monotonic() + 120
        while len(records_under(stack, prefix)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        faults.clear()
    records = {r["key"]: r for r in records_under(stack, prefix)}
    assert set(records) == set(keys)
    denied = records[keys[0]]
    assert (denied["status"], denied["error_code"]) == ("FAILED", "StorageRefused")
    assert "AccessDenied" in denied["reason"]
    assert faults.refused >= 1  # the workflow's read (the backfill lists the versions)
    assert records[keys[1]]["status"] in {"ACCEPTED", "NEEDS_REVIEW"}
    # Named as S3 names the object: its current version.
    version = stack.client("s3").head_object(Bucket=stack.bucket, Key=keys[0])["VersionId"]
    assert denied["version_id"] == version


def test_an_upload_overwritten_after_its_event_was_lost_is_classified(
    stack: OfflineStack,
) -> None:
    """The first upload of a key lost its S3 event, and the key was overwritten since: the
    backfill classifies that first version, and not the recorded second one again."""
    prefix = f"{stack.incoming_prefix}overwritten/"
    first, second = sorted(SAMPLES.glob("*/*.png"))[5:7]
    key = f"{prefix}photo.png"
    put_without_events(stack, {key: first.read_bytes()})
    upload = stack.api().upload_file(second, key.removeprefix(stack.incoming_prefix))
    (recorded,) = stack.api().wait_for_records([upload], timeout=60).values()
    versions = stack.client("s3").list_object_versions(Bucket=stack.bucket, Prefix=key)
    (lost,) = [v["VersionId"] for v in versions["Versions"] if not v["IsLatest"]]

    run_backfill(stack, prefix)
    deadline = time.monotonic() + 120
    while len(records_under(stack, prefix)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    records = {r["version_id"]: r for r in records_under(stack, prefix)}
    assert set(records) == {lost, upload.version_id}
    assert records[upload.version_id] == recorded
    assert records[lost]["status"] in {"ACCEPTED", "NEEDS_REVIEW"}


def test_backfill_wait_says_what_its_map_run_did_and_when_it_is_still_running(
    stack: OfflineStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`scones backfill --wait` (the CLI, finding the stack as `scones up` leaves it): the
    Map Run's counts once it ends; a wait that runs out says the backfill goes on."""
    import os

    monkeypatch.setattr(stack_state, "STATE_DIR", tmp_path / ".scones")
    monkeypatch.setattr(stack_state, "STATE_FILE", tmp_path / ".scones" / "stack.json")
    stack_state.write_state(stack.endpoints, os.getpid(), stack.work_dir)
    prefix = f"{stack.incoming_prefix}waited/"
    images = sorted(SAMPLES.glob("*/*.png"))[7:9]
    put_without_events(stack, {f"{prefix}{path.name}": path.read_bytes() for path in images})
    capsys.readouterr()

    assert main(["backfill", prefix, "--wait", "--timeout", "0.001"]) == 1
    out = capsys.readouterr().out
    assert "still running after 0.001 s; it goes on" in out
    assert "`scones results` shows the records as they come." in out

    assert main(["backfill", prefix, "--wait"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("SUCCEEDED: ")
    assert lines[2] == (
        "2 objects handed to batches, 2 in batches that succeeded (started, or recorded already)"
    )


@pytest.mark.parametrize(
    "document",
    [{"prefix": "incoming"}, {"prefix": "elsewhere/"}, {"prefix": 7}, {}],
    ids=["no-slash", "elsewhere", "not-a-string", "no-prefix"],
)
def test_a_prefix_outside_the_incoming_one_fails_at_once_and_says_why(
    stack: OfflineStack, document: dict[str, Any]
) -> None:
    """The role may list only the incoming prefix; on AWS the item reader would fail with
    an AccessDenied that names nothing."""
    sfn = stack.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=find_backfill_machine(sfn), input=json.dumps(document)
    )["executionArn"]
    assert wait_for_execution(sfn, execution, timeout=60) == "FAILED"
    described = sfn.describe_execution(executionArn=execution)
    assert described["error"] == "PrefixOutsideIncoming"
    assert f'"prefix": "{stack.incoming_prefix}...' in described["cause"]


def test_an_empty_prefix_starts_no_backfill(stack: OfflineStack) -> None:
    s3 = stack.client("s3")
    empty = f"{stack.incoming_prefix}nothing-here/"
    assert not has_objects(s3, stack.bucket, empty)
    s3.put_object(Bucket=stack.bucket, Key=f"{stack.incoming_prefix}something/a.png", Body=b"x")
    assert has_objects(s3, stack.bucket, f"{stack.incoming_prefix}something/")


def test_a_backfill_of_an_empty_prefix_succeeds_with_nothing_started(stack: OfflineStack) -> None:
    """As on AWS, a Distributed Map over an empty listing runs no items and succeeds (moto's
    own item reader fails on it: ``interpreter_fixes`` lists every page, and none)."""
    sfn = stack.client("stepfunctions")
    machine = stack.api().endpoints.state_machine_arn
    # An upload of an earlier test may still be on its way to an execution of its own.
    deadline = time.monotonic() + 60
    while stack.in_flight() and time.monotonic() < deadline:
        time.sleep(0.2)
    before = len(sfn.list_executions(stateMachineArn=machine)["executions"])
    output = run_backfill(stack, f"{stack.incoming_prefix}never-uploaded/")
    assert failed_result_files(stack.client("s3"), output["results"]) == []
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == before
