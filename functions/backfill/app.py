"""Backfill step: start the classification workflow for a batch of listed objects that
have no record yet (the backfill state machine's Distributed Map calls this per batch)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core.backfill import backfill_batch
from scones_core.errors import EventError
from scones_core.settings import StartSettings

logger = Logger()
settings = StartSettings.from_env()
TABLE = os.environ["RESULTS_TABLE_NAME"]


@cache
def clients() -> tuple[Any, Any, Any]:
    return boto3.client("s3"), boto3.client("dynamodb"), boto3.client("stepfunctions")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    s3, dynamodb, sfn = clients()
    try:
        report = backfill_batch(
            event,
            s3=s3,
            dynamodb=dynamodb,
            sfn=sfn,
            table=TABLE,
            prefix=settings.incoming_prefix,
            settings=settings,
        )
    except ValueError as exc:
        raise EventError(str(exc)) from exc
    summary = report.to_json()
    logger.info("backfill batch", extra=summary)
    return summary
