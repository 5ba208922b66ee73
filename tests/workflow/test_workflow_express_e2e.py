"""The same workflow deployed as an Express state machine (``WorkflowType=EXPRESS``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import FAST_RETRIES, SAMPLES

from scones.offline.stack import OfflineStack, StackOptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("express-stack")]


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    overrides = {**FAST_RETRIES, "WorkflowType": "EXPRESS"}
    with OfflineStack(StackOptions(enable_faults=True, overrides=overrides)) as running:
        yield running


def test_a_batch_left_with_an_unrecorded_image_runs_again_and_records_it(
    stack: OfflineStack,
) -> None:
    """The start function waits for each Express run. Here the table refuses every write of
    one image through the first run (its classified record and its FAILED record, each past
    its retries): that run fails ImagesUnrecorded, the function sends the batch back, and
    the next run records the image. Each upload ends with one record; the first run's dead
    letter names the image, and a drain deletes it as already recorded."""
    from scones_core.redrive import Redriver

    api = stack.api()
    images = sorted(SAMPLES.glob("*/*.png"))[:3]
    attempts = 1 + int(stack.parameters["RetryMaxAttempts"])
    first = f"{stack.incoming_prefix}unrecorded/{images[0].name}"
    stack.throttle_table_writes(2 * attempts, f"{stack.bucket}/{first}#")
    with stack.delivery_paused():
        uploads = api.upload_files(images, key_prefix="unrecorded/")
    records = api.wait_for_records(uploads, timeout=120)

    assert {r["status"] for r in records.values()} <= {"ACCEPTED", "NEEDS_REVIEW"}
    assert sorted(r["key"] for r in api.records() if "/unrecorded/" in r["key"]) == sorted(
        u.key for u in uploads
    )
    log = stack.work_dir / "logs" / f"{stack.function_name('StartWorkflowFunction')}.log"
    unfinished = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and "message not processed" in line
    ]
    assert unfinished and all("ended FAILED (ImagesUnrecorded" in e["error"] for e in unfinished)
    sqs = api.client("sqs")
    url = stack.endpoints.dead_letter_queue_url
    letters = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    bodies = [json.loads(m["Body"]) for m in letters.get("Messages", [])]
    assert [b["object"]["key"] for b in bodies if b.get("kind") == "workflow_failed"] == [first]
    report = Redriver(
        stepfunctions=api.client("stepfunctions"),
        state_machine_arn=api.endpoints.state_machine_arn,
        dynamodb=api.client("dynamodb"),
        table_name=api.endpoints.table,
        sqs=sqs,
        dead_letter_queue_url=url,
        wait_seconds=0,
    ).drain_dead_letters()
    assert [(r.key, r.outcome.value) for r in report.replays] == [(first, "already_recorded")]


def test_express_workflow_records_each_upload_once(stack: OfflineStack) -> None:
    api = stack.api()
    machine = api.client("stepfunctions").describe_state_machine(
        stateMachineArn=api.endpoints.state_machine_arn
    )
    assert machine["type"] == "EXPRESS"
    images = sorted(SAMPLES.glob("*/*.png"))[:3]
    queue_url = stack.stack.outputs["IngestQueueUrl"]
    sqs = api.client("sqs")
    with stack.delivery_paused():
        uploads = api.upload_files(images, key_prefix="express/")
        # Deliver every notification twice, as S3's at-least-once delivery may.
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        for message in messages:
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    records = api.wait_for_records(uploads, timeout=90)

    assert {r["status"] for r in records.values()} <= {"ACCEPTED", "NEEDS_REVIEW"}
    keys = [r["key"] for r in api.records() if "/express/" in r["key"]]
    assert sorted(keys) == sorted(u.key for u in uploads)


def _run_express(stack: OfflineStack, name: str, document: dict[str, object]) -> None:
    import json
    import time

    sfn = stack.api().client("stepfunctions")
    sfn.start_execution(
        stateMachineArn=stack.api().endpoints.state_machine_arn,
        name=name,
        input=json.dumps(document),
    )
    time.sleep(0.1)


def test_express_runs_twice_and_still_writes_one_record(stack: OfflineStack) -> None:
    """AWS does not deduplicate Express execution names (moto does, so the duplicates here
    get names of their own): the same object version runs again, twice, and the conditional
    write keeps the first record. An Express execution cannot be described, so the proof is
    the table: one item, the first execution's, unchanged."""
    import time

    api = stack.api()
    path = sorted(SAMPLES.glob("*/*.png"))[4]
    upload = api.upload_file(path, f"express-dup/{path.name}")
    record = api.wait_for_records([upload], timeout=90)[upload]
    ref = {
        "bucket": upload.bucket,
        "key": upload.key,
        "version": upload.version_id,
        "etag": upload.etag,
        "size": path.stat().st_size,
        "sequencer": "",
        "record_id": record["pk"],
    }
    for n in range(2):  # a duplicate delivery, then a stale duplicate of attempt 0
        _run_express(
            stack,
            f"dup-{n}-{record['pk'][-20:].replace('#', '-')}",
            {
                "object": ref,
                "event_time": record["event_time"],
                "attempt": 0,
            },
        )
    time.sleep(5)  # room for the duplicates to finish (they end in AlreadyRecorded)
    items = [r for r in api.records() if r["key"] == upload.key]
    assert items == [record]


def test_an_execution_without_attempt_still_records_attempt_zero(stack: OfflineStack) -> None:
    """A start function older than `attempt` and `delivery` (during a deployment)
    sends neither."""
    import hashlib

    api = stack.api()
    path = sorted(SAMPLES.glob("*/*.png"))[5]
    with stack.delivery_paused():
        upload = api.upload_file(path, f"express-old-start/{path.name}")
        sqs = api.client("sqs")
        queue = stack.stack.outputs["IngestQueueUrl"]
        sqs.purge_queue(QueueUrl=queue)
    record_id = f"{upload.bucket}/{upload.key}#{upload.version_id}"
    ref = {
        "bucket": upload.bucket,
        "key": upload.key,
        "version": upload.version_id,
        "etag": upload.etag,
        "size": path.stat().st_size,
        "sequencer": "",
        "record_id": record_id,
    }
    name = "old-start-" + hashlib.sha256(record_id.encode()).hexdigest()[:20]
    _run_express(stack, name, {"object": ref, "event_time": "2026-01-01T00:00:00Z"})
    record = api.wait_for_records([upload], timeout=90)[upload]
    assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW")
    assert record["attempt"] == 0
    assert record["delivery"] == record_id
