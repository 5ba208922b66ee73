"""Drain SQS queues into Lambda the way Lambda's own SQS poller does.

moto invokes an SQS-mapped function inside ``SendMessage``, one message at a
time, and ignores ``batchItemFailures``. This poller reads the deployed
event source mappings instead and applies them: batches of ``BatchSize``
messages, an Invoke API call per batch, deletion of the messages that
succeeded (all of them, unless ``ReportBatchItemFailures`` names some), and
failed messages left to reappear after their visibility timeout until the
queue's redrive policy moves them to the dead-letter queue. A mapping with
``ScalingConfig.MaximumConcurrency`` has that many batches delivered at once, as on
AWS (the start function waits for each Express execution, so this bounds the images
in flight); one without has ``threads_per_mapping``.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

logger = logging.getLogger(__name__)

# How long a stop waits for the batches being delivered (each is one Invoke).
DELIVERY_WAIT_SECONDS = 5.0

# The Lambda client's settings for delivering a batch, as Lambda's poller invokes: once,
# waiting as long as a function may run (900 s). botocore's 60 s read timeout and retries
# would invoke the function again on a batch it is still working on (the start function
# waits for its Express run).
INVOKE_CONFIG = Config(connect_timeout=5, read_timeout=905, retries={"total_max_attempts": 1})


@dataclass(frozen=True)
class Mapping:
    queue_arn: str
    queue_url: str
    function_arn: str
    batch_size: int
    report_item_failures: bool
    maximum_concurrency: int | None = None


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


def _maximum_concurrency(esm: dict[str, Any]) -> int | None:
    value = (esm.get("ScalingConfig") or {}).get("MaximumConcurrency")
    return int(value) if value else None


class SqsPoller:
    """Background threads that drain every SQS event source mapping.

    A batch a poll receives after ``stop`` is not delivered: it is made visible again at
    once. So the stack's stop need not wait for the one-second long polls
    (``wait_for_polls=False``), only for the batches being delivered."""

    def __init__(
        self, sqs: Any, lambda_client: Any, region: str, *, threads_per_mapping: int = 2
    ) -> None:
        self.sqs = sqs
        self.lambda_client = lambda_client
        self.region = region
        self.threads_per_mapping = threads_per_mapping
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Batches being delivered now; a thread counts one in only while not stopped.
        self._delivering = 0
        self._delivery_changed = threading.Condition()

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
                    maximum_concurrency=_maximum_concurrency(esm),
                )
            )
        return found

    def start(self) -> None:
        for mapping in self.mappings():
            for index in range(mapping.maximum_concurrency or self.threads_per_mapping):
                thread = threading.Thread(
                    target=self._run, args=(mapping,), name=f"sqs-poller-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(
        self, *, wait_for_polls: bool = True, timeout_s: float = DELIVERY_WAIT_SECONDS
    ) -> None:
        """No batch is delivered from now on; the ones being delivered end first.

        With ``wait_for_polls`` (a pause: nothing may touch the queue until ``start``) the
        threads' long polls end too, and what they received is visible again; without
        (the stack's stop) they end on their own within a second."""
        with self._delivery_changed:
            self._stop.set()
            if not self._delivery_changed.wait_for(lambda: self._delivering == 0, timeout_s):
                logger.warning(
                    "%d SQS batch(es) were still being delivered %.0f s after the poller stopped",
                    self._delivering,
                    timeout_s,
                )
        if wait_for_polls:
            for thread in self._threads:
                thread.join(timeout=timeout_s)
        self._threads.clear()
        self._stop = threading.Event()

    def _run(self, mapping: Mapping) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                messages = self.receive(mapping, wait_seconds=1)
                if not messages:
                    continue
                if not self._begin_delivery(stop):
                    self.release(mapping, messages)
                    return
                try:
                    self.deliver(mapping, messages)
                finally:
                    self._end_delivery()
            except Exception:  # keep polling, as Lambda does, and say why
                if stop.is_set():
                    return
                logger.exception("SQS poller error on %s", mapping.queue_arn)
                stop.wait(0.5)

    def _begin_delivery(self, stop: threading.Event) -> bool:
        with self._delivery_changed:
            if stop.is_set():
                return False
            self._delivering += 1
            return True

    def _end_delivery(self) -> None:
        with self._delivery_changed:
            self._delivering -= 1
            self._delivery_changed.notify_all()

    def poll_once(self, mapping: Mapping, wait_seconds: int = 0) -> int:
        """Receive one batch and deliver it; returns the number of messages received."""
        messages = self.receive(mapping, wait_seconds)
        if messages:
            self.deliver(mapping, messages)
        return len(messages)

    def receive(self, mapping: Mapping, wait_seconds: int = 0) -> list[dict[str, Any]]:
        received = self.sqs.receive_message(
            QueueUrl=mapping.queue_url,
            MaxNumberOfMessages=min(mapping.batch_size, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = received.get("Messages", [])
        return messages

    def release(self, mapping: Mapping, messages: list[dict[str, Any]]) -> None:
        """Make a batch visible again at once (visibility timeout 0), for the next poller
        (after ``delivery_paused``) or for the stop to find on the queue."""
        self.sqs.change_message_visibility_batch(
            QueueUrl=mapping.queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)
            ],
        )

    def deliver(self, mapping: Mapping, messages: list[dict[str, Any]]) -> None:
        """Invoke the function on the batch, then delete what Lambda's rules call done."""
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
