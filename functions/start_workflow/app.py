"""Start one classification workflow per SQS batch of S3 event notifications.

SQS delivers S3 event notifications in batches; Powertools' batch processor reads
each message (a message that is not an S3 notification is reported as failed) and
every object named by the good ones goes into one execution, whose Map classifies
them side by side (``scones_core.ingest.start_batch``). If that start fails, every
message of it is reported failed. Only reported messages are retried, and after the
queue's maxReceiveCount they move to the dead-letter queue.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import (
    PartialItemFailureResponse,
    PartialItemFailures,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import tracing
from scones_core.errors import EventError
from scones_core.ingest import PendingImage, is_s3_test_event, notification_images, start_batch
from scones_core.settings import StartSettings

logger = Logger()
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
settings = StartSettings.from_env()


@cache
def sfn_client() -> Any:
    return boto3.client("stepfunctions")


def images_of(record: SQSRecord) -> list[PendingImage]:
    """The objects one message names; ``EventError`` names the message if it is not an
    S3 event notification."""
    try:
        body = json.loads(record.body)
    except json.JSONDecodeError as exc:
        raise EventError(f"SQS message {record.message_id} is not JSON") from exc
    if is_s3_test_event(body):
        # S3 sends this once when the notification is configured.
        logger.info("ignoring s3:TestEvent", extra={"bucket": body.get("Bucket")})
        return []
    try:
        return notification_images(body)
    except EventError as exc:
        raise EventError(f"SQS message {record.message_id}: {exc}") from exc


def not_processed(message_id: str, receive_count: Any, exc: Exception) -> None:
    # Reported in batchItemFailures: only this message returns to the queue, and after
    # maxReceiveCount receives it moves to the dead-letter queue.
    logger.warning(
        "message not processed; SQS will deliver it again",
        extra={
            "message_id": message_id,
            "receive_count": receive_count,
            "error": f"{type(exc).__name__}: {exc}",
        },
    )


@tracer.capture_method
def start_images(batch: dict[str, list[PendingImage]]) -> list[str]:
    """Start one execution for every image of ``batch`` (message id -> images); return
    the ids of the messages to report as failed (all of them if the start failed)."""
    images = [image for message_images in batch.values() for image in message_images]
    if not images:
        return []
    try:
        result = start_batch(sfn_client(), images, settings)
    except Exception as exc:
        for message_id in batch:
            not_processed(message_id, None, exc)
        metrics.add_metric(name="WorkflowStartsFailed", unit=MetricUnit.Count, value=1)
        return list(batch)
    logger.info(
        "workflow started" if result.started else "duplicate batch: execution exists",
        # Every delivered record id, duplicates included (a batch classifies each once).
        extra={
            "execution_name": result.execution_name,
            "record_ids": [image.ref.record_id for image in images],
        },
    )
    metrics.add_metric(
        name="WorkflowsStarted" if result.started else "DuplicateEvents",
        unit=MetricUnit.Count,
        value=1,
    )
    metrics.add_metric(name="ImagesStarted", unit=MetricUnit.Count, value=len(images))
    return []


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    batch: dict[str, list[PendingImage]] = {}

    def record_handler(record: SQSRecord) -> None:
        try:
            batch[record.message_id] = images_of(record)
        except Exception as exc:
            not_processed(record.message_id, record.attributes.approximate_receive_count, exc)
            raise

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    failures = list(response["batchItemFailures"])
    failures += [
        PartialItemFailures(itemIdentifier=message_id) for message_id in start_images(batch)
    ]
    return {"batchItemFailures": failures}
