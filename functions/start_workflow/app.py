"""Start one classification workflow per S3 object named in the ingest queue.

SQS delivers S3 event notifications in batches; Powertools' batch processor
reports the records that failed, so only those are retried (and after the
queue's maxReceiveCount they move to the dead-letter queue).
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
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import tracing
from scones_core.errors import EventError
from scones_core.ingest import is_s3_test_event, start_notification
from scones_core.settings import StartSettings

logger = Logger()
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
settings = StartSettings.from_env()


@cache
def sfn_client() -> Any:
    return boto3.client("stepfunctions")


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    try:
        start_workflows(record)
    except Exception as exc:
        # Reported in batchItemFailures: only this message returns to the queue, and after
        # maxReceiveCount receives it moves to the dead-letter queue.
        logger.warning(
            "message not processed; SQS will deliver it again",
            extra={
                "message_id": record.message_id,
                "receive_count": record.attributes.approximate_receive_count,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )
        raise


def start_workflows(record: SQSRecord) -> None:
    try:
        body = json.loads(record.body)
    except json.JSONDecodeError as exc:
        raise EventError(f"SQS message {record.message_id} is not JSON") from exc
    if is_s3_test_event(body):
        # S3 sends this once when the notification is configured.
        logger.info("ignoring s3:TestEvent", extra={"bucket": body.get("Bucket")})
        return
    # The same code path as a replay of a dead-lettered notification (scones redrive).
    try:
        starts = start_notification(sfn_client(), body, settings)
    except EventError as exc:
        raise EventError(f"SQS message {record.message_id}: {exc}") from exc
    for start in starts:
        logger.info(
            "workflow started" if start.result.started else "duplicate event: execution exists",
            extra={"record_id": start.ref.record_id, "execution_name": start.result.execution_name},
        )
        metrics.add_metric(
            name="WorkflowsStarted" if start.result.started else "DuplicateEvents",
            unit=MetricUnit.Count,
            value=1,
        )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
