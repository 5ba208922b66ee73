"""Backfill step: start the classification workflow for a batch of listed objects that
have no record yet (the backfill state machine's Distributed Map calls this per batch)."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import function_logs, tracing
from scones_core.backfill import BatchReport, backfill_batch
from scones_core.errors import BatchIncomplete, EventError
from scones_core.failure_log import logs_failures
from scones_core.metric_logs import kept_by_log_level
from scones_core.settings import BackfillSettings

logger = function_logs.logger()  # Powertools' Logger; the SDK's loggers at WARNING
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
metrics = Metrics()
# Validated at cold start: a bad deployment fails naming every missing variable.
settings = BackfillSettings.from_env()


@cache
def clients() -> tuple[Any, Any, Any]:
    return boto3.client("s3"), boto3.client("dynamodb"), boto3.client("stepfunctions")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@logs_failures(logger)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    s3, dynamodb, sfn = clients()
    kept_by_log_level(metrics)
    try:
        report = backfill_batch(
            event,
            s3=s3,
            dynamodb=dynamodb,
            sfn=sfn,
            table=settings.results_table,
            prefix=settings.start.incoming_prefix,
            settings=settings.start,
            time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        )
    except ValueError as exc:
        raise EventError(str(exc)) from exc
    except BatchIncomplete as exc:  # what it did start still counts
        if isinstance(exc.report, BatchReport):
            count_batch(exc.report.to_json())
        raise
    summary = report.to_json()
    logger.info("backfill batch", extra=summary)
    count_batch(summary)
    return summary


def count_batch(summary: dict[str, Any]) -> None:
    """One metric document per batch of up to a thousand objects, not per image."""
    metrics.add_metric(name="BackfillStarted", unit=MetricUnit.Count, value=summary["started"])
    metrics.add_metric(name="BackfillRecorded", unit=MetricUnit.Count, value=summary["recorded"])
