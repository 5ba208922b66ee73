"""Drain SQS queues into Lambda the way Lambda's own SQS poller does.

moto invokes an SQS-mapped function inside ``SendMessage``, one message at a
time, and ignores ``batchItemFailures``. This poller reads the deployed
event source mappings instead and applies them: batches of ``BatchSize``
messages, an Invoke API call per batch, deletion of the messages that
succeeded (all of them, unless ``ReportBatchItemFailures`` names some), and
failed messages left to reappear after their visibility timeout until the
queue's redrive policy moves them to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mapping:
    queue_arn: str
    queue_url: str
    function_arn: str
    batch_size: int
    report_item_failures: bool


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda builds for a batch of SQS messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def failed_message_ids(
    payload: bytes, errored: bool, messages: list[dict[str, Any]], report_item_failures: bool
) -> set[str]:
    """Which messages of the batch must stay on the queue, by Lambda's rules."""
    all_ids = {m["MessageId"] for m in messages}
    if errored:
        return all_ids
    if not report_item_failures:
        return set()
    try:
        response = json.loads(payload or b"null")
    except json.JSONDecodeError:
        return all_ids
    if response is None or response == {}:
        return set()
    if not isinstance(response, dict):
        return all_ids
    failures = response.get("batchItemFailures")
    if failures is None:  # no list, or a null one: a complete success, as on AWS
        return set()
    if not isinstance(failures, list):
        return all_ids
    ids = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or identifier not in all_ids:
            return all_ids  # an invalid response fails the whole batch, as on AWS
        ids.add(identifier)
    return ids


class SqsPoller:
    """Background threads that drain every SQS event source mapping."""

    def __init__(
        self, sqs: Any, lambda_client: Any, region: str, *, threads_per_mapping: int = 2
    ) -> None:
        self.sqs = sqs
        self.lambda_client = lambda_client
        self.region = region
        self.threads_per_mapping = threads_per_mapping
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def mappings(self) -> list[Mapping]:
        found = []
        for esm in self.lambda_client.list_event_source_mappings()["EventSourceMappings"]:
            arn = esm["EventSourceArn"]
            if ":sqs:" not in arn:
                continue
            account, name = arn.split(":")[4], arn.split(":")[5]
            url = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
            found.append(
                Mapping(
                    queue_arn=arn,
                    queue_url=url["QueueUrl"],
                    function_arn=esm["FunctionArn"],
                    batch_size=int(esm.get("BatchSize") or 10),
                    report_item_failures="ReportBatchItemFailures"
                    in esm.get("FunctionResponseTypes", []),
                )
            )
        return found

    def start(self) -> None:
        for mapping in self.mappings():
            for index in range(self.threads_per_mapping):
                thread = threading.Thread(
                    target=self._run, args=(mapping,), name=f"sqs-poller-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._stop = threading.Event()

    def _run(self, mapping: Mapping) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                self.poll_once(mapping, wait_seconds=1)
            except Exception:  # keep polling, as Lambda does, and say why
                if stop.is_set():
                    return
                logger.exception("SQS poller error on %s", mapping.queue_arn)
                stop.wait(0.5)

    def poll_once(self, mapping: Mapping, wait_seconds: int = 0) -> int:
        """Receive one batch and deliver it; returns the number of messages received."""
        received = self.sqs.receive_message(
            QueueUrl=mapping.queue_url,
            MaxNumberOfMessages=min(mapping.batch_size, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = received.get("Messages", [])
        if not messages:
            return 0
        response = self.lambda_client.invoke(
            FunctionName=mapping.function_arn,
            InvocationType="RequestResponse",
            Payload=json.dumps(sqs_event(messages, mapping.queue_arn, self.region)).encode(),
        )
        payload = response["Payload"].read()
        failed = failed_message_ids(
            payload, "FunctionError" in response, messages, mapping.report_item_failures
        )
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        return len(messages)
