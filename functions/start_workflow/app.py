"""Start one classification workflow per S3 object named in the ingest queue.

SQS delivers S3 event notifications in batches; ``scones_core.sqs_batch`` reports
the records that failed, so only those are retried (and after the queue's
maxReceiveCount they move to the dead-letter queue). It follows Powertools' batch
processor, whose import would cost a seventh of ``import boto3`` at every cold start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import tracing
from scones_core.errors import EventError
from scones_core.ingest import is_s3_test_event, start_notification
from scones_core.settings import StartSettings
from scones_core.sqs_batch import PartialBatchResponse, process_sqs_batch

logger = Logger()
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
metrics = Metrics()
settings = StartSettings.from_env()


@cache
def sfn_client() -> Any:
    return boto3.client("stepfunctions")


def report_failure(record: Mapping[str, Any], exc: Exception) -> None:
    # Reported in batchItemFailures: only this message returns to the queue, and after
    # maxReceiveCount receives it moves to the dead-letter queue.
    logger.warning(
        "message not processed; SQS will deliver it again",
        extra={
            "message_id": record.get("messageId"),
            "receive_count": (record.get("attributes") or {}).get("ApproximateReceiveCount"),
            "error": f"{type(exc).__name__}: {exc}",
        },
    )


@tracer.capture_method
def start_workflows(record: Mapping[str, Any]) -> None:
    message_id = record.get("messageId")
    try:
        body = json.loads(record.get("body") or "")
    except json.JSONDecodeError as exc:
        raise EventError(f"SQS message {message_id} is not JSON") from exc
    if is_s3_test_event(body):
        # S3 sends this once when the notification is configured.
        logger.info("ignoring s3:TestEvent", extra={"bucket": body.get("Bucket")})
        return
    # The same code path as a replay of a dead-lettered notification (scones redrive).
    try:
        starts = start_notification(sfn_client(), body, settings)
    except EventError as exc:
        raise EventError(f"SQS message {message_id}: {exc}") from exc
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
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialBatchResponse:
    return process_sqs_batch(event, start_workflows, on_failure=report_failure)
