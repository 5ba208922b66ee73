"""Start retraining when quality drops, at most once per cooldown, backing off while
the alert persists.

One marker item per endpoint, ``pk = "monitor#retraining#<endpoint>"``, in the monitor's
own state table (never the results table, which holds one record per image), says which
window last started retraining (``window_end``, the end of the monitoring window whose
alert started it), how many starts in a row came as soon as the cooldown allowed
(``streak``) and when the next may (``next_allowed``). A start is claimed by a
conditional put on the marker as it was read, so of two runs at once only one starts
anything.

* The cooldown runs from the start, by the clock, not from the window's end:
  ``RetrainingCooldownHours`` after it. A run is due ``MonitorSettleMinutes`` after its
  window's end; one still within ``ON_TIME`` of that counts its start at its due time,
  so the cooldown ends on a later run's due time (seconds of delay never put the next
  start off a whole period). A later run (a retry) counts its start when it comes.
* A run that comes after the next window's run was due, and later than ``ON_TIME`` after
  its own (so a run slowly measuring a short window is not taken for a retry; a retry
  hours late, a dead letter replayed by ``scones redrive --dead-letters``), starts
  nothing (``SUPERSEDED``):
  newer windows have been measured since, and their runs start retraining if the alert
  still holds. Retraining assembles the data it has when it starts, so an old window's
  alert adds nothing but a trigger that may no longer be true.
* An alert that outlasts its retraining (a lasting change in what customers photograph,
  which new weights cannot undo; or a model the gate keeps rejecting) starts the next
  run as soon as the cooldown ends. Each such start doubles the next cooldown, up to
  ``RetrainingMaxCooldownHours``; a start that comes more than one cooldown after the
  last one was allowed is a new problem and begins again at the base cooldown. So a
  lasting shift costs a training job a day at first, then ever more rarely, not one
  a day for ever.
* A retried monitor run for the window that started a run finds the marker's
  ``window_end`` equal to its own and makes no further calls. If the marker records no
  start (the first run ended between its claim and StartExecution, a timeout), the
  retry claims it again, its cooldown from this start, and starts it: the Step
  Functions execution and the training job are named after the window, and both
  services reject a duplicate name, read here as "already started". A claim that
  recorded nothing for longer than a monitor run can live is looked up: if its
  execution or training job exists (the start answered, then the run ended before
  recording it), it is recorded and its cooldown holds; otherwise it holds no later
  window back.
* If starting fails, or another retraining run is still in progress, the marker is
  put back as it was, so the next scheduled run tries again.
* A marker this code cannot read (an older layout, a hand edit) is replaced, on the
  condition that it is still what was read.

The table's TTL removes the marker a cooldown after the streak could no longer grow.

Powertools' idempotency utility was the alternative. It keys on a hash of the
event, which differs on every scheduled invocation, needs its own table, and
would cache the handler's whole response; the cooldown is a value the monitor
computes, and one conditional put on it says exactly what is meant.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from scones_core.errors import aws_error_code
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.locations import S3Location, read_optional_object
from scones_core.monitoring.timestamps import format_millis, format_seconds, parse_timestamp
from scones_core.monitoring.window_report import Alert
from scones_core.sagemaker_names import MAX_NAME_LENGTH, is_sagemaker_name

logger = logging.getLogger(__name__)

STARTED = "STARTED"
COOLDOWN = "COOLDOWN"
NOT_CONFIGURED = "NOT_CONFIGURED"
# A retraining execution is still running (a short cooldown, a long canary): a second
# run would gate its candidate against the production model the first may replace.
ALREADY_RUNNING = "ALREADY_RUNNING"
# The run came after the next window's run was due: the newer window decides.
SUPERSEDED = "SUPERSEDED"

MARKER_TYPE = "MONITOR_RETRAINING"
# How long a claim may go unrecorded before it is known to have started nothing: no Lambda
# invocation, and so no monitor run, lives longer.
CLAIM_LIFETIME = timedelta(minutes=15)
# A run that reaches the launcher this soon after it was due is on time (it was measuring,
# within one invocation's lifetime): its start counts at the time it was due.
ON_TIME = CLAIM_LIFETIME
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
    # The longest the cooldown grows to while an alert persists (at least ``cooldown``).
    max_cooldown: timedelta
    # When monitor runs come: a window's run is due ``settle`` after its end, the next
    # window's ``period`` later (MonitorSettleMinutes, MonitorWindowMinutes).
    settle: timedelta
    period: timedelta
    state_machine_arn: str | None = None
    job_config: S3Location | None = None

    @property
    def configured(self) -> bool:
        return bool(self.state_machine_arn or self.job_config)


@dataclass(frozen=True)
class RetrainingOutcome:
    status: str  # STARTED, COOLDOWN, ALREADY_RUNNING, SUPERSEDED or NOT_CONFIGURED
    run_name: str | None = None
    # STARTED and COOLDOWN: when retraining may start next.
    cooldown_until: datetime | None = None
    # STARTED: how many starts in a row came as soon as the cooldown allowed.
    streak: int | None = None
    execution_arn: str | None = None
    training_job_name: str | None = None

    @property
    def started(self) -> bool:
        return self.status == STARTED

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "run_name": self.run_name,
            "cooldown_until": None
            if self.cooldown_until is None
            else format_seconds(self.cooldown_until),
            "streak": self.streak,
            "execution_arn": self.execution_arn,
            "training_job_name": self.training_job_name,
        }


@dataclass(frozen=True)
class _Marker:
    """The endpoint's last start, as the marker item holds it."""

    run_name: str
    window_end: datetime
    next_allowed: datetime
    streak: int
    # A start that was claimed but not yet made: the run that claimed it ended (a
    # timeout) before StartExecution/CreateTrainingJob answered.
    unrecorded: bool


def next_cooldown(cooldown: timedelta, max_cooldown: timedelta, streak: int) -> timedelta:
    """``cooldown`` doubled for each start of the streak after the first, at most
    ``max_cooldown`` (never below ``cooldown``)."""
    cap = max(cooldown, max_cooldown)
    length = cooldown
    for _ in range(streak - 1):
        if length >= cap:
            break
        length = min(length * 2, cap)
    return length


def run_name(endpoint_name: str, window_end: datetime) -> str:
    """``<endpoint>-retrain-YYYYMMDD-HHMM``: a valid, deterministic execution name."""
    suffix = f"retrain-{window_end.astimezone(UTC):%Y%m%d-%H%M}"
    prefix = re.sub(r"[^A-Za-z0-9-]+", "-", endpoint_name).strip("-")
    prefix = prefix[: _MAX_EXECUTION_NAME - len(suffix) - 1].rstrip("-")
    return f"{prefix}-{suffix}" if prefix else suffix


def execution_arn_of(state_machine_arn: str, name: str) -> str:
    """The ARN of the execution ``name`` of a (Standard) state machine."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def training_job_name(endpoint_name: str, window_end: datetime) -> str:
    """``<endpoint>-retrain-YYYYMMDD-HHMM``, the run's own name: the monitor's role may
    create training jobs named ``<EndpointName>-retrain-*`` and no others, whatever name
    the configured request carries."""
    name = run_name(endpoint_name, window_end)
    if len(name) > MAX_NAME_LENGTH or not is_sagemaker_name(name):
        raise RetrainingConfigError(
            f"endpoint {endpoint_name!r} gives no valid training job name ({name!r}): "
            f"SageMaker allows {MAX_NAME_LENGTH} characters, letters, digits and hyphens"
        )
    return name


def marker_key(endpoint_name: str) -> str:
    return f"monitor#retraining#{endpoint_name}"


class RetrainingLauncher:
    """Starts the configured retraining targets; clients and the clock are injected."""

    def __init__(
        self,
        targets: RetrainingTargets,
        *,
        dynamodb: Any,
        s3: Any,
        stepfunctions: Any | None = None,
        sagemaker: Any | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._targets = targets
        self._dynamodb = dynamodb
        self._s3 = s3
        self._stepfunctions = stepfunctions
        self._sagemaker = sagemaker
        self._clock = clock

    def _start_time(self, at: datetime) -> datetime | None:
        """When a start by the run for the window ending ``at`` counts as made: the time the
        run was due if it is on time, else now; None once the next window's run was due."""
        due = at + self._targets.settle
        now = self._clock()
        if now - due > max(self._targets.period, ON_TIME):
            return None
        return min(due, now) if now - due <= ON_TIME else now

    def start(
        self, alerts: Sequence[Alert], at: datetime, context: dict[str, Any]
    ) -> RetrainingOutcome:
        """Start retraining for ``alerts`` unless the cooldown holds it back.

        ``at`` is the end of the monitoring window, so a retried invocation computes
        the same names and finds its own start in the marker; the cooldown is counted
        from the start (``_start_time``).
        """
        targets = self._targets
        if not targets.configured:
            logger.warning(
                "retraining is needed but no retraining target is configured",
                extra={"alerts": [alert.code for alert in alerts]},
            )
            return RetrainingOutcome(NOT_CONFIGURED)
        name = run_name(targets.endpoint_name, at)
        item, last = self._read_marker()
        if last is not None and last.window_end == at and not last.unrecorded:
            return self._cooling(last)  # a retry of the run that started it
        started = self._start_time(at)
        if started is None:
            logger.warning(
                "retraining is needed but this run came after the next window's run was due; "
                "not starting: the newer windows' runs start it if the alert holds",
                extra={"run_name": name, "alerts": [alert.code for alert in alerts]},
            )
            return RetrainingOutcome(SUPERSEDED, run_name=name)
        job_request = self._job_request(at) if targets.job_config else None
        if last is not None and last.unrecorded and last.window_end != at and self._stale(item):
            # A claim whose run ended before recording its start, long enough ago that the
            # run cannot still be alive. It may have started (the start answered, then the
            # run timed out or its record failed): a start found holds its cooldown;
            # otherwise nothing started, and the claim holds nothing back.
            if self._record_lost_start(last):
                last = replace(last, unrecorded=False)
            else:
                logger.warning("a retraining claim that started nothing is set aside")
                last = None
        resumed = last is not None and last.window_end == at and last.unrecorded
        if last is not None and resumed:
            # This window's own claim, by a run that ended before it started anything (or
            # is still starting): claim it again, its cooldown from now, and start under
            # the same names (a duplicate reads as started).
            streak = last.streak
            logger.warning(
                "a retried monitor run resumes the retraining start its window claimed",
                extra={"run_name": name},
            )
        else:
            if last is not None and started < last.next_allowed:
                return self._cooling(last)
            persists = last is not None and started < last.next_allowed + targets.cooldown
            streak = last.streak + 1 if persists and last is not None else 1
        until = started + next_cooldown(targets.cooldown, targets.max_cooldown, streak)
        if not self._claim(item, name=name, at=at, until=until, streak=streak, alerts=alerts):
            _, now = self._read_marker()
            logger.info("another monitor run claimed retraining first")
            return self._cooling(now) if now else RetrainingOutcome(COOLDOWN)
        try:
            if running := self._running_execution(other_than=name):
                if not resumed:
                    self._release(item, name)
                logger.warning(
                    "retraining is needed but a retraining run is still in progress; not "
                    "starting another, and the cooldown does not begin",
                    extra={"running": running, "alerts": [alert.code for alert in alerts]},
                )
                return RetrainingOutcome(ALREADY_RUNNING, run_name=running)
            execution_arn = self._start_execution(name, alerts, until, streak, context)
            job_name = self._create_training_job(job_request)
        except Exception:
            # A resumed claim stays (another attempt of this window may be starting it);
            # once stale it holds nothing back.
            if not resumed:
                self._release(item, name)
            raise
        self._record(name, execution_arn, job_name)
        logger.info(
            "retraining started",
            extra={
                "run_name": name,
                "execution_arn": execution_arn,
                "training_job": job_name,
                "cooldown_until": format_seconds(until),
                "streak": streak,
            },
        )
        return RetrainingOutcome(
            STARTED,
            run_name=name,
            cooldown_until=until,
            streak=streak,
            execution_arn=execution_arn,
            training_job_name=job_name,
        )

    def _record_lost_start(self, last: _Marker) -> bool:
        """Whether the start an unrecorded claim named exists (its execution, or its training
        job); if so, it is recorded on the claim. A question that cannot be answered (an
        older stack's role, a network error) counts as no start: the claim is set aside,
        as before the question was asked."""
        targets = self._targets
        execution_arn = job_name = None
        if targets.state_machine_arn and (sfn := self._stepfunctions) is not None:
            arn = execution_arn_of(targets.state_machine_arn, last.run_name)
            if self._found(lambda: sfn.describe_execution(executionArn=arn), last):
                execution_arn = arn
        if targets.job_config and (sagemaker := self._sagemaker) is not None:
            try:
                name = training_job_name(targets.endpoint_name, last.window_end)
            except RetrainingConfigError:
                name = None  # no job could have been made under it
            if name and self._found(
                lambda: sagemaker.describe_training_job(TrainingJobName=name), last
            ):
                job_name = name
        if execution_arn is None and job_name is None:
            return False
        logger.warning(
            "an unrecorded retraining claim had started its run; its cooldown holds",
            extra={"run_name": last.run_name, "execution_arn": execution_arn, "job": job_name},
        )
        self._record(last.run_name, execution_arn, job_name)
        return True

    @staticmethod
    def _found(describe: Callable[[], object], last: _Marker) -> bool:
        """Whether ``describe`` finds what it asks for. Step Functions answers a missing
        execution ExecutionDoesNotExist; SageMaker a missing training job a
        ValidationException "Requested resource not found." (not the ResourceNotFound its
        model documents). A question that cannot be answered is logged and counts as not
        found."""
        try:
            describe()
        except ClientError as exc:
            code = aws_error_code(exc)
            if code in ("ExecutionDoesNotExist", "ResourceNotFound") or (
                code == "ValidationException" and "not found" in _error_message(exc)
            ):
                return False
            unanswered: Exception = exc
        except BotoCoreError as exc:
            unanswered = exc
        else:
            return True
        logger.warning(
            "could not ask whether an unrecorded retraining claim started its run",
            extra={"run_name": last.run_name, "error": repr(unanswered)},
        )
        return False

    def _stale(self, item: dict[str, Any] | None) -> bool:
        """The claim in ``item`` is older than any monitor run lives (Lambda's 15 minutes)."""
        try:
            claimed = parse_timestamp((item or {})["started_at"]["S"])
        except (KeyError, TypeError, ValueError):
            return True
        return self._clock() - claimed > CLAIM_LIFETIME

    @staticmethod
    def _cooling(last: _Marker) -> RetrainingOutcome:
        logger.info(
            "retraining is in its cooldown",
            extra={
                "run_name": last.run_name,
                "cooldown_until": format_seconds(last.next_allowed),
                "streak": last.streak,
            },
        )
        return RetrainingOutcome(COOLDOWN, run_name=last.run_name, cooldown_until=last.next_allowed)

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

    def _key(self) -> dict[str, Any]:
        return {"pk": {"S": marker_key(self._targets.endpoint_name)}}

    def _read_marker(self) -> tuple[dict[str, Any] | None, _Marker | None]:
        """The marker item as stored, and what it says (None when it is not a marker
        this code wrote: it is then replaced, on the condition that it is unchanged)."""
        item = self._dynamodb.get_item(
            TableName=self._targets.marker_table, Key=self._key(), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None, None
        try:
            return item, _Marker(
                run_name=item["run_name"]["S"],
                window_end=parse_timestamp(item["window_end"]["S"]),
                next_allowed=parse_timestamp(item["next_allowed"]["S"]),
                streak=int(item["streak"]["N"]),
                unrecorded="execution_arn" not in item and "training_job" not in item,
            )
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning(
                "the retraining marker is unreadable; it is replaced",
                extra={"pk": marker_key(self._targets.endpoint_name), "error": repr(exc)},
            )
            return item, None

    @staticmethod
    def _unchanged(item: dict[str, Any] | None) -> dict[str, Any]:
        """A condition that holds while the marker is still ``item`` as it was read: its
        ``started_at`` (to the millisecond, written by every claim) or, for an item
        without one, its absence."""
        if item is None:
            return {"ConditionExpression": "attribute_not_exists(pk)"}
        started = item.get("started_at")
        if not isinstance(started, dict) or "S" not in started:
            return {"ConditionExpression": "attribute_not_exists(started_at)"}
        return {
            "ConditionExpression": "started_at = :seen",
            "ExpressionAttributeValues": {":seen": started},
        }

    def _claim(
        self,
        item: dict[str, Any] | None,
        *,
        name: str,
        at: datetime,
        until: datetime,
        streak: int,
        alerts: Sequence[Alert],
    ) -> bool:
        """Put this start's marker over ``item`` as it was read; False if another run
        changed it since."""
        expires = until + self._targets.cooldown * 2
        try:
            self._dynamodb.put_item(
                TableName=self._targets.marker_table,
                Item={
                    **self._key(),
                    "record_type": {"S": MARKER_TYPE},
                    "endpoint_name": {"S": self._targets.endpoint_name},
                    "run_name": {"S": name},
                    "window_end": {"S": format_seconds(at)},
                    "next_allowed": {"S": format_seconds(until)},
                    "streak": {"N": str(streak)},
                    "started_at": {"S": format_millis(self._clock())},
                    "reasons": {"L": [{"S": alert.code} for alert in alerts]},
                    "expires_at": {"N": str(int(expires.timestamp()))},
                },
                **self._unchanged(item),
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _release(self, item: dict[str, Any] | None, name: str) -> None:
        """Put the marker back as it was before this run claimed it (only if it is
        still this run's); with nothing to put back, delete it."""
        mine = {
            "ConditionExpression": "run_name = :mine",
            "ExpressionAttributeValues": {":mine": {"S": name}},
        }
        try:
            if item is None:
                self._dynamodb.delete_item(
                    TableName=self._targets.marker_table, Key=self._key(), **mine
                )
            else:
                self._dynamodb.put_item(TableName=self._targets.marker_table, Item=item, **mine)
        except ClientError:
            logger.exception(
                "could not put the retraining marker back",
                extra={"pk": marker_key(self._targets.endpoint_name)},
            )

    def _record(self, name: str, execution_arn: str | None, job_name: str | None) -> None:
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
        names["#run"] = "run_name"
        values[":mine"] = {"S": name}
        try:
            self._dynamodb.update_item(
                TableName=self._targets.marker_table,
                Key=self._key(),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#run = :mine",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if aws_error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Never make a marker of a bare update: a later claim holds the key now.
            logger.warning("the retraining marker is no longer this run's", extra={"run": name})

    # ---- targets ----------------------------------------------------------------

    def _start_execution(
        self,
        name: str,
        alerts: Sequence[Alert],
        until: datetime,
        streak: int,
        context: dict[str, Any],
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
            "cooldown_until": format_seconds(until),
            "streak": streak,
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
            return execution_arn_of(arn, name)
        execution_arn: str = response["executionArn"]
        return execution_arn

    def _job_request(self, at: datetime) -> dict[str, Any]:
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
        request["TrainingJobName"] = training_job_name(self._targets.endpoint_name, at)
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


def _error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).lower()


def _already_exists(exc: ClientError) -> bool:
    code = aws_error_code(exc)
    return code == "ResourceInUse" or (
        code == "ValidationException" and "already exists" in _error_message(exc)
    )
