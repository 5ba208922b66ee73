"""Retraining steps the state machine calls: assemble the dataset, judge the candidate.

Two handlers in one package (two functions in ``template.yaml``, each with only the
permissions its step needs):

* ``assemble_handler``: the original training channel plus the labelled copies that
  finished answers name, pinned as manifest channels for the training job
  (``scones_core.retraining.dataset``);
* ``judge_handler``: read the evaluation step's report (``scones_core.retraining.evaluation``)
  and apply the promotion gate (``scones_core.retraining.gate``).

A failure of the step itself (an event, a dataset or a report it cannot use, an S3 or
DynamoDB call that failed) is returned as data, ``{"failure": {"Error", "Cause"}}`` with
the message bounded (``scones_core.errors.step_failure``): the state machine records its
message without parsing a Lambda error payload, which Step Functions may have cut.
Anything else (a bug) is raised, and its stack trace stays in the log group.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from scones_core import function_logs, tracing
from scones_core.errors import EventError, SconesError, step_failure
from scones_core.monitoring.locations import S3Location
from scones_core.retraining.dataset import assemble_dataset, parse_started_at
from scones_core.retraining.evaluation import read_evaluation
from scones_core.retraining.gate import GateRules, judge
from scones_core.retraining.settings import RetrainingSettings
from scones_core.training_split import TrainingSplit

logger = function_logs.logger()  # Powertools' Logger; the SDK's loggers at WARNING
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active

SETTINGS = RetrainingSettings.from_env(os.environ)


@cache
def _session() -> Any:
    """One session for both clients: each session loads the SDK's data anew."""
    return boto3.session.Session()


@cache
def s3_client() -> Any:
    return _session().client("s3")


@cache
def dynamodb_client() -> Any:
    return _session().client("dynamodb")


def _field(event: Any, name: str) -> Any:
    if not isinstance(event, dict) or name not in event:
        raise EventError(f"the event needs {name!r}")
    return event[name]


# The step's own failures. An AWS call that failed (a bucket or a table it cannot read or
# write, throttling past the SDK's retries) is one: the service's message says which call
# and why, where a raised error would be recorded only as a bug to look up in the log group.
STEP_FAILURES = (SconesError, ClientError, BotoCoreError)


def _failed(exc: Exception) -> dict[str, Any]:
    logger.exception("step failed")  # the whole message and its trace, in the log group
    return {"failure": step_failure(exc)}


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def assemble_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return _assemble(event)
    except STEP_FAILURES as exc:
        return _failed(exc)


def _assemble(event: Any) -> dict[str, Any]:
    run_name = str(_field(event, "run_name"))
    started_at = parse_started_at(_field(event, "started_at"))
    try:
        # The state machine's job trains with the training program's defaults; a run
        # that trains another recipe (the offline rehearsal's) says how it splits.
        split = TrainingSplit.parse(event.get("training_split"))
    except ValueError as exc:
        raise EventError(str(exc)) from exc
    result = assemble_dataset(
        s3_client(), dynamodb_client(), SETTINGS, started_at, run_name, split=split
    )
    logger.info("dataset assembled", extra={"dataset": result["dataset_uri"]})
    return result


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def judge_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return _judge(event)
    except STEP_FAILURES as exc:
        return _failed(exc)


def _judge(event: Any) -> dict[str, Any]:
    try:
        location = S3Location.parse(str(_field(event, "evaluation_uri")))
    except ValueError as exc:
        raise EventError(str(exc)) from exc
    if location.bucket != SETTINGS.bucket or not location.key.startswith(
        SETTINGS.retraining_prefix
    ):
        raise EventError(f"{location.uri} is not under this stack's retraining prefix")
    evaluation = read_evaluation(s3_client(), location)
    decision = judge(evaluation, GateRules.of(SETTINGS))
    logger.info("gate decision", extra={"passed": decision["passed"], "gate": decision["summary"]})
    return decision
