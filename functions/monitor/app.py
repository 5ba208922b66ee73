"""Scheduled monitor: measure the last window, publish metrics, start retraining.

EventBridge Scheduler invokes this function on a rate. The handler only turns
the event into the window's end time, calls ``scones_core.monitoring`` and
publishes the numbers as CloudWatch metrics (embedded metric format), once per
window however often the run is retried.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import function_logs, tracing
from scones_core.errors import EventError
from scones_core.monitoring.metrics import (
    label_metrics,
    metric_time,
    retraining_metric,
    window_metrics,
)
from scones_core.monitoring.published import claim_window_metrics
from scones_core.monitoring.service import MonitorClients, measure_window, respond
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.timestamps import SCHEDULED_TIME_FIELDS, parse_timestamp
from scones_core.monitoring.window_report import WindowReport

logger = function_logs.logger()  # Powertools' Logger; the SDK's loggers at WARNING
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
metrics = Metrics()

# The domain logs through the standard library; give it Powertools' JSON format.
logging.getLogger("scones_core")
copy_config_to_registered_loggers(source_logger=logger, include={"scones_core"})

# Validated at cold start: a bad deployment fails on its first invocation with
# a message naming every missing or invalid variable.
SETTINGS = MonitorSettings.from_env(os.environ)
metrics.set_default_dimensions(EndpointName=SETTINGS.endpoint_name)
# single_metric gets no automatic ``service`` dimension; add it so every metric
# shares the dimension set the alarms select on.
_LABEL_DIMENSIONS = {"EndpointName": SETTINGS.endpoint_name} | (
    {"service": os.environ["POWERTOOLS_SERVICE_NAME"]}
    if os.environ.get("POWERTOOLS_SERVICE_NAME")
    else {}
)


EARLIEST_SCHEDULE = datetime(1970, 1, 1, tzinfo=UTC)
# A schedule fires at its time; a time further ahead than this is not a schedule's (and
# near year 9999 the window's arithmetic would overflow).
LATEST_SCHEDULE_AHEAD = timedelta(days=1)


def clock() -> datetime:
    """Now: the run's one clock, for its window, its data points' stamp and its
    retraining start."""
    return datetime.now(UTC)


def window_end_from_event(event: Any, now: datetime, settle: timedelta) -> datetime:
    """A scheduled run measures the window that ended ``settle`` before its scheduled
    time: the same window when retried, and late capture files have arrived by then.
    A run without a time (an invocation by hand) measures the window that ended
    ``settle`` before ``now``, for the same reason; a hand run reads nothing else from
    its event, so its keys (a misspelt time field, say) are logged, not silently dropped."""
    if event is None:
        return now - settle
    if not isinstance(event, dict):
        raise EventError(f"expected a JSON object event, got {type(event).__name__}")
    for field in SCHEDULED_TIME_FIELDS:
        if field in event:
            try:
                scheduled = parse_timestamp(event[field])
            except ValueError as exc:
                raise EventError(f"event field {field!r}: {exc}") from exc
            if scheduled < EARLIEST_SCHEDULE:  # a window before it could not be computed
                raise EventError(f"event field {field!r}: {event[field]!r} is before 1970")
            if scheduled > now + LATEST_SCHEDULE_AHEAD:
                raise EventError(
                    f"event field {field!r}: {event[field]!r} is more than "
                    f"{LATEST_SCHEDULE_AHEAD.days} day after now ({now.isoformat()}); "
                    "a scheduled run measures a window that has ended"
                )
            return scheduled - settle
    if event:
        unknown = sorted(map(str, event))
        logger.warning(
            f"ignoring unknown keys in a manual event: {', '.join(unknown)} "
            f"(a time is read only from {' or '.join(SCHEDULED_TIME_FIELDS)})",
            extra={"unknown_keys": unknown},
        )
    return now - settle


def publish_window(report: WindowReport, *, alert_count: int, stamp: datetime) -> None:
    for point in window_metrics(
        report,
        alert_count=alert_count,
        min_requests=SETTINGS.min_requests,
        drift_significance=SETTINGS.drift_alert_significance,
    ):
        metrics.add_metric(name=point.name, unit=point.unit, value=point.value)
    metrics.flush_metrics()
    for label_point in label_metrics(report):
        with single_metric(
            name=label_point.name,
            unit=MetricUnit(label_point.unit),
            value=label_point.value,
            default_dimensions=_LABEL_DIMENSIONS,
        ) as metric:
            metric.add_dimension(name="Label", value=label_point.dimension)
            metric.set_timestamp(stamp)


@cache
def clients() -> MonitorClients:
    """Created on first use, so importing this module needs no region (tests import it)."""
    session = boto3.session.Session()
    return MonitorClients(
        s3=session.client("s3"),
        dynamodb=session.client("dynamodb"),
        sagemaker=session.client("sagemaker")
        if SETTINGS.monitoring_schedule_name or SETTINGS.retraining_job_config
        else None,
        stepfunctions=session.client("stepfunctions")
        if SETTINGS.retraining_state_machine_arn
        else None,
    )


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    window_end = window_end_from_event(event, clock(), SETTINGS.settle)
    report, alerts = measure_window(SETTINGS, clients(), window_end)
    logger.info("window measured", extra={"report": report.to_json()})
    # Every data point of this run, RetrainingStarted included (set on each run: the
    # Metrics object outlives the invocation).
    stamp = metric_time(window_end + SETTINGS.settle, clock())
    metrics.set_timestamp(stamp)

    # Published now, once per window: a retry of this run (starting retraining can fail
    # below) measures the same window and must not count it twice.
    if claim_window_metrics(
        clients().dynamodb,
        SETTINGS.state_table_name,
        SETTINGS.endpoint_name,
        report.window_end,
        clock(),
    ):
        publish_window(report, alert_count=len(alerts), stamp=stamp)

    for alert in alerts:
        logger.warning("quality alert", extra={"code": alert.code, "detail": alert.message})
    outcome = respond(SETTINGS, clients(), report, alerts, clock)
    started = retraining_metric(outcome is not None and outcome.started)
    metrics.add_metric(name=started.name, unit=started.unit, value=started.value)

    summary = report.to_json()
    return {
        "window_start": summary["window_start"],
        "window_end": summary["window_end"],
        "request_count": report.request_count,
        "malformed_lines": report.malformed_lines,
        "duplicate_records": report.duplicate_records,
        "label_drift": summary["label_drift"],
        "label_drift_p_value": summary["label_drift_p_value"],
        "alerts": [alert.code for alert in alerts],
        "retraining": None if outcome is None else outcome.to_json(),
        # Each warning was also logged on its own where it was found.
        "warnings": summary["warnings"],
        "warnings_omitted": summary["warnings_omitted"],
    }
