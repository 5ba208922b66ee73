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
