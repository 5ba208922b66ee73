"""The start function on SQS batches as Lambda delivers them, whatever carried the S3 event."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import EVENTS, start_function
from moto import mock_aws
from scones_core.ingest import event_time_text, notification_images

from scones.offline.lambda_worker import LambdaContext

REGION = "us-east-1"
DELIVERIES = ("start_workflow", "start_workflow_sns", "start_workflow_eventbridge")


def context() -> LambdaContext:
    return LambdaContext("test-request", time.time() * 1000 + 30_000)


def event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / f"{name}.json").read_text()))


def s3_event_time() -> str:
    """The upload's ``eventTime`` in S3's own notification (events/start_workflow.json)."""
    (message,) = event("start_workflow")["Records"]
    return str(json.loads(message["body"])["Records"][0]["eventTime"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
        "POWERTOOLS_METRICS_NAMESPACE": "SconesUnlimited",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "test-function",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_an_upload_starts_with_the_event_time_s3_wrote_whichever_delivery_carried_it(
    aws: None, monkeypatch: pytest.MonkeyPatch, delivery: str
) -> None:
    """EventBridge writes an event's time without a fraction (``12:00:00Z``), S3's
    notification with milliseconds (``12:00:00.000Z``), as the backfill writes it too. The
    record's ``event_time`` is compared and sorted as text, so ``12:00:00Z`` sorted after
    every later millisecond of its second; and the same upload delivered both ways was two
    different execution inputs under one name."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)

    assert app.lambda_handler(event(delivery), context()) == {"batchItemFailures": []}

    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert document["event_time"] == s3_event_time() == "2026-11-25T12:00:00.000Z"


def test_every_delivery_of_one_upload_names_the_same_pending_image() -> None:
    images = []
    for delivery in DELIVERIES:
        (message,) = event(delivery)["Records"]
        images += notification_images(json.loads(message["body"]))
    assert len(images) == 3 and images[0] == images[1] == images[2]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2026-11-25T12:00:00.123Z", "2026-11-25T12:00:00.123Z"),
        ("2026-11-25T12:00:00Z", "2026-11-25T12:00:00.000Z"),
        ("2026-11-25T13:00:00+01:00", "2026-11-25T12:00:00.000Z"),
        ("yesterday", ""),
        ("", ""),
        (None, ""),
        (1796026500, ""),
        ({"time": "2026-11-25T12:00:00Z"}, ""),
    ],
)
def test_an_event_time_is_written_as_s3_writes_it_or_not_at_all(value: Any, text: str) -> None:
    assert event_time_text(value) == text


def test_an_empty_sqs_batch_starts_nothing_and_fails_nothing(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda never polls an empty batch, but a hand-made test event can be one; it used to
    fail the invocation with Powertools' "Unexpected batch event type ... Possible values
    are: SQS, ...", which names the one type the event is."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)

    assert app.lambda_handler({"Records": []}, context()) == {"batchItemFailures": []}

    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []
