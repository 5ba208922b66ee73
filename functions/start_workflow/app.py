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
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core.errors import EventError
from scones_core.ingest import start_workflow
from scones_core.objects import object_from_s3_record
from scones_core.settings import StartSettings

logger = Logger()
tracer = Tracer()
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
    if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
        # S3 sends this once when the notification is configured.
        logger.info("ignoring s3:TestEvent", extra={"bucket": body.get("Bucket")})
        return
    if not isinstance(body, dict) or "Records" not in body:
        raise EventError(f"SQS message {record.message_id} is not an S3 event notification")
    for s3_record in S3Event(body).records:
        ref = object_from_s3_record(s3_record.raw_event)
        result = start_workflow(sfn_client(), ref, settings, event_time=s3_record.event_time)
        logger.info(
            "workflow started" if result.started else "duplicate event: execution exists",
            extra={"record_id": ref.record_id, "execution_name": result.execution_name},
        )
        metrics.add_metric(
            name="WorkflowsStarted" if result.started else "DuplicateEvents",
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
