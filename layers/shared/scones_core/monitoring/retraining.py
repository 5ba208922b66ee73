"""Start retraining when quality drops, at most once per cooldown window.

Two mechanisms make this safe when the monitor runs again, is retried, or runs
twice at once:

* A conditional DynamoDB put of a marker item, ``pk = "monitor#retraining#
  <endpoint>#<window start>"``, in the monitor's own state table (never the
  results table, which holds one record per image). Only the run whose put
  succeeds starts anything; every later run in the same cooldown window sees the
  marker and makes no further calls. The table's TTL on ``expires_at`` removes
  markers two cooldowns after they were written.
* Deterministic names derived from the cooldown window for the Step Functions
  execution and the SageMaker training job. Both services reject a duplicate
  name, and that answer is read as "already started", so even a run that lost
  its marker cannot start a second retraining.

If starting fails, the marker is deleted again so the next scheduled run
retries. Cooldown windows are aligned to the Unix epoch: with a 24-hour
cooldown, retraining starts at most once per UTC day.

Powertools' idempotency utility was the alternative. It keys on a hash of the
event, which differs on every scheduled invocation, needs its own table, and
would cache the handler's whole response; the cooldown window is a value the
monitor computes, and one conditional put on it says exactly what is meant.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from scones_core.errors import aws_error_code
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.locations import S3Location, read_optional_object
from scones_core.monitoring.timestamps import format_millis, format_seconds
from scones_core.monitoring.window_report import Alert
from scones_core.sagemaker_names import MAX_NAME_LENGTH, is_sagemaker_name

logger = logging.getLogger(__name__)

STARTED = "STARTED"
COOLDOWN = "COOLDOWN"
NOT_CONFIGURED = "NOT_CONFIGURED"
# A retraining execution is still running (a short cooldown, a long canary): a second
# run would gate its candidate against the production model the first may replace.
ALREADY_RUNNING = "ALREADY_RUNNING"

MARKER_TYPE = "MONITOR_RETRAINING"
# Running executions asked for: this window's own may be among them, and one other is enough.
_RUNNING_PAGE = 2
_MAX_EXECUTION_NAME = 80


class RetrainingConfigError(ValueError):
    """The retraining job template is missing or is not a usable request."""


@dataclass(frozen=True)
class RetrainingTargets:
    """What to start, and where the cooldown marker lives."""

    endpoint_name: str
    marker_table: str
    cooldown: timedelta
    state_machine_arn: str | None = None
    job_config: S3Location | None = None

    @property
    def configured(self) -> bool:
        return bool(self.state_machine_arn or self.job_config)


@dataclass(frozen=True)
class RetrainingOutcome:
    status: str  # STARTED, COOLDOWN, ALREADY_RUNNING or NOT_CONFIGURED
    run_name: str | None = None
    cooldown_window_start: datetime | None = None
    execution_arn: str | None = None
    training_job_name: str | None = None

    @property
    def started(self) -> bool:
        return self.status == STARTED

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "run_name": self.run_name,
            "cooldown_window_start": None
            if self.cooldown_window_start is None
            else format_seconds(self.cooldown_window_start),
            "execution_arn": self.execution_arn,
            "training_job_name": self.training_job_name,
        }


def cooldown_window_start(moment: datetime, cooldown: timedelta) -> datetime:
    """The start of the epoch-aligned cooldown window that holds ``moment``."""
    seconds = int(cooldown.total_seconds())
    if seconds < 1:
        raise ValueError("the cooldown must be at least one second")
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def run_name(endpoint_name: str, window_start: datetime) -> str:
    """``<endpoint>-retrain-YYYYMMDD-HHMM``: a valid, deterministic execution name."""
    suffix = f"retrain-{window_start.astimezone(UTC):%Y%m%d-%H%M}"
    prefix = re.sub(r"[^A-Za-z0-9-]+", "-", endpoint_name).strip("-")
    prefix = prefix[: _MAX_EXECUTION_NAME - len(suffix) - 1].rstrip("-")
    return f"{prefix}-{suffix}" if prefix else suffix


def training_job_name(endpoint_name: str, window_start: datetime) -> str:
    """``<endpoint>-retrain-YYYYMMDD-HHMM``, the run's own name: the monitor's role may
    create training jobs named ``<EndpointName>-retrain-*`` and no others, whatever name
    the configured request carries."""
    name = run_name(endpoint_name, window_start)
    if len(name) > MAX_NAME_LENGTH or not is_sagemaker_name(name):
        raise RetrainingConfigError(
            f"endpoint {endpoint_name!r} gives no valid training job name ({name!r}): "
            f"SageMaker allows {MAX_NAME_LENGTH} characters, letters, digits and hyphens"
        )
    return name


def marker_key(endpoint_name: str, window_start: datetime) -> str:
    return f"monitor#retraining#{endpoint_name}#{format_seconds(window_start)}"


class RetrainingLauncher:
    """Starts the configured retraining targets; clients are injected."""

    def __init__(
        self,
        targets: RetrainingTargets,
        *,
        dynamodb: Any,
        s3: Any,
        stepfunctions: Any | None = None,
        sagemaker: Any | None = None,
    ) -> None:
        self._targets = targets
        self._dynamodb = dynamodb
        self._s3 = s3
        self._stepfunctions = stepfunctions
        self._sagemaker = sagemaker

    def start(
        self, alerts: Sequence[Alert], at: datetime, context: dict[str, Any]
    ) -> RetrainingOutcome:
        """Start retraining for ``alerts`` unless this cooldown window already did.

        ``at`` is the end of the monitoring window, so a retried invocation maps
        to the same cooldown window and the same names as the first attempt.
        """
        targets = self._targets
        if not targets.configured:
            logger.warning(
                "retraining is needed but no retraining target is configured",
                extra={"alerts": [alert.code for alert in alerts]},
            )
            return RetrainingOutcome(NOT_CONFIGURED)
        window = cooldown_window_start(at, targets.cooldown)
        name = run_name(targets.endpoint_name, window)
        job_request = self._job_request(window) if targets.job_config else None
        key = marker_key(targets.endpoint_name, window)
        if not self._claim(key, name, window, alerts):
            logger.info(
                "retraining already started in this cooldown window",
                extra={"run_name": name, "cooldown_window_start": format_seconds(window)},
            )
            return RetrainingOutcome(COOLDOWN, run_name=name, cooldown_window_start=window)
        try:
            if running := self._running_execution(other_than=name):
                self._release(key)
                logger.warning(
                    "retraining is needed but a retraining run is still in progress; not "
                    "starting another, and this cooldown window stays open",
                    extra={"running": running, "alerts": [alert.code for alert in alerts]},
                )
                return RetrainingOutcome(ALREADY_RUNNING, run_name=running)
            execution_arn = self._start_execution(name, alerts, window, context)
            job_name = self._create_training_job(job_request)
        except Exception:
            self._release(key)
            raise
        self._record(key, execution_arn, job_name)
        logger.info(
            "retraining started",
            extra={"run_name": name, "execution_arn": execution_arn, "training_job": job_name},
        )
        return RetrainingOutcome(
            STARTED,
            run_name=name,
            cooldown_window_start=window,
            execution_arn=execution_arn,
            training_job_name=job_name,
        )

    def _running_execution(self, *, other_than: str) -> str | None:
        """The name of a running execution of the retraining state machine other than this
        window's own (a retried monitor run goes on to find it by name), if any. If the
        question cannot be asked (an older stack's role, a network error), the cooldown
        alone guards."""
        arn = self._targets.state_machine_arn
        if not arn or self._stepfunctions is None:
            return None
        try:
            response = self._stepfunctions.list_executions(
                stateMachineArn=arn, statusFilter="RUNNING", maxResults=_RUNNING_PAGE
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "could not list running retraining executions",
                extra={"state_machine_arn": arn, "error": f"{type(exc).__name__}: {exc}"},
            )
            return None
        names = [
            str(e.get("name") or e.get("executionArn")) for e in response.get("executions", [])
        ]
        return next((n for n in names if n != other_than), None)

    # ---- cooldown marker ------------------------------------------------------

    def _claim(self, key: str, name: str, window: datetime, alerts: Sequence[Alert]) -> bool:
        expires = window + 2 * self._targets.cooldown
        try:
            self._dynamodb.put_item(
                TableName=self._targets.marker_table,
                Item={
                    "pk": {"S": key},
                    "record_type": {"S": MARKER_TYPE},
                    "endpoint_name": {"S": self._targets.endpoint_name},
                    "run_name": {"S": name},
                    "cooldown_window_start": {"S": format_seconds(window)},
                    "started_at": {"S": format_millis(datetime.now(UTC))},
                    "reasons": {"L": [{"S": alert.code} for alert in alerts]},
                    "expires_at": {"N": str(int(expires.timestamp()))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _release(self, key: str) -> None:
        try:
            self._dynamodb.delete_item(TableName=self._targets.marker_table, Key={"pk": {"S": key}})
        except ClientError:
            logger.exception("could not delete the retraining marker", extra={"pk": key})

    def _record(self, key: str, execution_arn: str | None, job_name: str | None) -> None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets: list[str] = []
        for attribute, value in (("execution_arn", execution_arn), ("training_job", job_name)):
            if value:
                names[f"#{attribute}"] = attribute
                values[f":{attribute}"] = {"S": value}
                sets.append(f"#{attribute} = :{attribute}")
        if not sets:
            return
        self._dynamodb.update_item(
            TableName=self._targets.marker_table,
            Key={"pk": {"S": key}},
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    # ---- targets ----------------------------------------------------------------

    def _start_execution(
        self, name: str, alerts: Sequence[Alert], window: datetime, context: dict[str, Any]
    ) -> str | None:
        arn = self._targets.state_machine_arn
        if not arn:
            return None
        if self._stepfunctions is None:
            raise RetrainingConfigError("a state machine is configured but no client was given")
        execution_input = {
            "source": "scones.monitor",
            "run_name": name,
            "endpoint_name": self._targets.endpoint_name,
            "cooldown_window_start": format_seconds(window),
            "reasons": [{"code": alert.code, "message": alert.message} for alert in alerts],
            "window": context,
        }
        try:
            response = self._stepfunctions.start_execution(
                stateMachineArn=arn, name=name, input=json.dumps(execution_input, sort_keys=True)
            )
        except ClientError as exc:
            if aws_error_code(exc) != "ExecutionAlreadyExists":
                raise
            logger.info("retraining execution already exists", extra={"execution_name": name})
            return arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"
        execution_arn: str = response["executionArn"]
        return execution_arn

    def _job_request(self, window: datetime) -> dict[str, Any]:
        location = self._targets.job_config
        assert location is not None
        body = read_optional_object(self._s3, location)
        if body is None:
            raise RetrainingConfigError(
                f"the retraining job template {location.uri} does not exist"
            )
        try:
            template = load_json(body)
        except NotJSON as exc:
            raise RetrainingConfigError(f"{location.uri} is {exc}") from exc
        if not isinstance(template, dict):
            raise RetrainingConfigError(f"{location.uri} must be a CreateTrainingJob request")
        request = copy.deepcopy(template)
        request["TrainingJobName"] = training_job_name(self._targets.endpoint_name, window)
        return request

    def _create_training_job(self, request: dict[str, Any] | None) -> str | None:
        if request is None:
            return None
        if self._sagemaker is None:
            raise RetrainingConfigError("a training job is configured but no client was given")
        name: str = request["TrainingJobName"]
        try:
            self._sagemaker.create_training_job(**request)
        except ParamValidationError as exc:
            raise RetrainingConfigError(f"the retraining job template is invalid: {exc}") from exc
        except ClientError as exc:
            if not _already_exists(exc):
                raise
            logger.info("retraining job already exists", extra={"training_job": name})
        return name


def _already_exists(exc: ClientError) -> bool:
    code = aws_error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return code == "ResourceInUse" or (
        code == "ValidationException" and "already exists" in message
    )
