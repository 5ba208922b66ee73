"""Helpers shared by the workflow tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scones.offline.stack import OfflineStack


def wait_for_execution(sfn: Any, execution_arn: str, timeout: float = 60) -> str:
    """Poll until the execution leaves RUNNING; return its final status."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = str(sfn.describe_execution(executionArn=execution_arn)["status"])
        if status != "RUNNING":
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution_arn} still RUNNING after {timeout} s")
        time.sleep(0.1)


def history_events(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def image_events(sfn: Any, execution_arn: str, record_id: str) -> list[dict[str, Any]]:
    """The history events of one image's Map iteration in an execution of a batch.

    The images of a batch run side by side, so their events interleave; each event's
    ``previousEventId`` leads back to its own iteration's ``MapIterationStarted``.
    """
    import json

    document = json.loads(sfn.describe_execution(executionArn=execution_arn)["input"])
    items = document.get("objects", [document])
    (index,) = [i for i, item in enumerate(items) if item["object"]["record_id"] == record_id]
    events = history_events(sfn, execution_arn)
    by_id = {e["id"]: e for e in events}
    starts = {
        e["id"]: e["mapIterationStartedEventDetails"]["index"]
        for e in events
        if e["type"] == "MapIterationStarted"
    }

    def iteration(event: dict[str, Any]) -> int | None:
        while event["id"] not in starts:
            if event["previousEventId"] not in by_id:
                return None
            event = by_id[event["previousEventId"]]
        return int(starts[event["id"]])

    return [e for e in events if iteration(e) == index]


def confident_image(predictions: dict[Path, tuple[str, float]], threshold: float) -> Path:
    for path, (label, confidence) in predictions.items():
        if path.parent.name == label and confidence >= threshold:
            return path
    raise AssertionError("no sample image is classified confidently by the shipped model")


def uncertain_image(predictions: dict[Path, tuple[str, float]], threshold: float) -> Path:
    for path, (_, confidence) in sorted(predictions.items(), key=lambda kv: kv[1][1]):
        if confidence < threshold:
            return path
    raise AssertionError("every sample image is above the threshold")


def drain_dead_letters(stack: OfflineStack) -> list[dict[str, Any]]:
    """Receive and delete every message on the dead-letter queue."""
    sqs = stack.api().client("sqs")
    url = stack.endpoints.dead_letter_queue_url
    drained: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return drained
        drained.extend(messages)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
