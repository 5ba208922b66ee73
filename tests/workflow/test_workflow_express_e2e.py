"""The same workflow deployed as an Express state machine (``WorkflowType=EXPRESS``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import SAMPLES

from scones.offline.stack import OfflineStack, StackOptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("express-stack")]


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    with OfflineStack(StackOptions(overrides={"WorkflowType": "EXPRESS"})) as running:
        yield running


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
    keys = [r["key"] for r in api.records()]
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
