"""The monitor's configuration, read from the environment once at cold start.

Every problem is collected and reported in one ``SettingsError`` that names the
variables, so a misconfigured deployment fails on its first invocation with a
message that says what to fix. Values come from ``template.yaml`` parameters;
nothing here has a default of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from scones_core.errors import SettingsError
from scones_core.monitoring.locations import S3Location
from scones_core.settings import EnvReader, parse_labels, positive_int

T = TypeVar("T")

_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$")
_MAX_WINDOW_MINUTES = 7 * 24 * 60
MAX_COOLDOWN_HOURS = 8760
_MAX_LOOKBACK_DAYS = 366
_MAX_DELAY_MINUTES = 24 * 60

# Every variable from_env reads; template.yaml sets each one (a test checks).
ENVIRONMENT_VARIABLES = (
    "RESULTS_TABLE_NAME",
    "MONITOR_STATE_TABLE_NAME",
    "DATA_CAPTURE_S3_URI",
    "DATA_CAPTURE_SAMPLING_PERCENTAGE",
    "ENDPOINT_NAME",
    "ENDPOINT_VARIANT",
    "LABELS",
    "CONFIDENCE_THRESHOLD",
    "MONITOR_WINDOW_MINUTES",
    "MONITOR_SETTLE_MINUTES",
    "MODEL_MONITOR_LAG_MINUTES",
    "MONITOR_MIN_REQUESTS",
    "LOW_CONFIDENCE_ALERT_SHARE",
    "DRIFT_ALERT_THRESHOLD",
    "DRIFT_ALERT_SIGNIFICANCE",
    "BASELINE_S3_URI",
    "MONITORING_SCHEDULE_NAME",
    "MONITORING_REPORTS_S3_URI",
    "RETRAINING_STATE_MACHINE_ARN",
    "RETRAINING_JOB_CONFIG_S3_URI",
    "RETRAINING_COOLDOWN_HOURS",
    "RETRAINING_MAX_COOLDOWN_HOURS",
    "REVIEW_LOOKBACK_DAYS",
)


@dataclass(frozen=True)
class MonitorSettings:
    """What one monitor run reads, compares against and may start."""

    results_table_name: str
    state_table_name: str  # the monitor's own small table (retraining markers, TTL)
    data_capture: S3Location
    # The endpoint's InitialSamplingPercentage: how many capture records the window's
    # classified images should have left (CAPTURE_MISSING).
    capture_sampling_percent: float
    endpoint_name: str
    endpoint_variant: str
    labels: tuple[str, ...]
    confidence_threshold: float
    window: timedelta
    # A scheduled run measures the window that ended this long before its scheduled time:
    # SageMaker delivers capture files minutes after the requests.
    settle: timedelta
    # Model Monitor's executions are read for the window moved back by this much: only
    # then has an hourly execution ended, with its status and report.
    model_monitor_lag: timedelta
    min_requests: int
    low_confidence_alert_share: float
    drift_alert_threshold: float
    drift_alert_significance: float
    baseline: S3Location | None
    monitoring_schedule_name: str | None
    monitoring_reports: S3Location | None
    retraining_state_machine_arn: str | None
    retraining_job_config: S3Location | None
    retraining_cooldown: timedelta
    # The longest the cooldown grows to while an alert outlasts its retraining runs.
    retraining_max_cooldown: timedelta
    # A review made in the window counts when its image was classified at most this
    # long before the window (the status index is sorted by classification time).
    review_lookback: timedelta

    @property
    def retraining_configured(self) -> bool:
        return bool(self.retraining_state_machine_arn or self.retraining_job_config)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MonitorSettings:
        """Validate ``environ``; raise ``SettingsError`` listing every bad variable."""
        reader = EnvReader(environ)
        settings = cls(
            results_table_name=reader.required("RESULTS_TABLE_NAME"),
            state_table_name=reader.required("MONITOR_STATE_TABLE_NAME"),
            data_capture=reader.parsed("DATA_CAPTURE_S3_URI", S3Location.parse),
            capture_sampling_percent=reader.parsed("DATA_CAPTURE_SAMPLING_PERCENTAGE", _percentage),
            endpoint_name=reader.required("ENDPOINT_NAME"),
            endpoint_variant=reader.required("ENDPOINT_VARIANT"),
            labels=reader.parsed("LABELS", parse_labels),
            confidence_threshold=reader.parsed("CONFIDENCE_THRESHOLD", parse_fraction),
            window=reader.parsed("MONITOR_WINDOW_MINUTES", _window_minutes),
            settle=reader.parsed("MONITOR_SETTLE_MINUTES", _delay_minutes),
            model_monitor_lag=reader.parsed("MODEL_MONITOR_LAG_MINUTES", _delay_minutes),
            min_requests=reader.parsed("MONITOR_MIN_REQUESTS", positive_int),
            low_confidence_alert_share=reader.parsed("LOW_CONFIDENCE_ALERT_SHARE", parse_fraction),
            drift_alert_threshold=reader.parsed("DRIFT_ALERT_THRESHOLD", parse_fraction),
            drift_alert_significance=reader.parsed("DRIFT_ALERT_SIGNIFICANCE", parse_fraction),
            baseline=reader.optional("BASELINE_S3_URI", S3Location.parse),
            monitoring_schedule_name=reader.optional("MONITORING_SCHEDULE_NAME", str),
            monitoring_reports=reader.optional("MONITORING_REPORTS_S3_URI", S3Location.parse),
            retraining_state_machine_arn=reader.optional(
                "RETRAINING_STATE_MACHINE_ARN", _state_machine_arn
            ),
            retraining_job_config=reader.optional("RETRAINING_JOB_CONFIG_S3_URI", _object_uri),
            retraining_cooldown=reader.parsed("RETRAINING_COOLDOWN_HOURS", _cooldown_hours),
            retraining_max_cooldown=reader.parsed("RETRAINING_MAX_COOLDOWN_HOURS", _cooldown_hours),
            review_lookback=reader.parsed("REVIEW_LOOKBACK_DAYS", _lookback_days),
        )
        if reader.problems:
            raise SettingsError(
                "the monitor's environment is invalid: " + "; ".join(reader.problems)
            )
        return settings


def _percentage(value: str) -> float:
    number = _number(value)
    if not 0 <= number <= 100:
        raise ValueError("must be between 0 and 100")
    return number


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def parse_fraction(value: str) -> float:
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be between 0 and 1")
    return number


def _window_minutes(value: str) -> timedelta:
    minutes = positive_int(value)
    if minutes > _MAX_WINDOW_MINUTES:
        raise ValueError(f"must be at most {_MAX_WINDOW_MINUTES} (one week)")
    return timedelta(minutes=minutes)


def _delay_minutes(value: str) -> timedelta:
    """A whole number of minutes from 0 to one day."""
    try:
        minutes = int(value)
    except ValueError:
        raise ValueError("not a whole number") from None
    if not 0 <= minutes <= _MAX_DELAY_MINUTES:
        raise ValueError(f"must be between 0 and {_MAX_DELAY_MINUTES} (one day)")
    return timedelta(minutes=minutes)


def _cooldown_hours(value: str) -> timedelta:
    hours = _number(value)
    if hours <= 0:
        raise ValueError("must be greater than 0")
    if hours > MAX_COOLDOWN_HOURS:
        raise ValueError(f"must be at most {MAX_COOLDOWN_HOURS} (a year)")
    return timedelta(hours=hours)


def _lookback_days(value: str) -> timedelta:
    days = positive_int(value)
    if days > _MAX_LOOKBACK_DAYS:
        raise ValueError(f"must be at most {_MAX_LOOKBACK_DAYS}")
    return timedelta(days=days)


def _state_machine_arn(value: str) -> str:
    if not _ARN.match(value):
        raise ValueError("not a Step Functions state machine ARN")
    return value


def _object_uri(value: str) -> S3Location:
    location = S3Location.parse(value)
    if not location.key or location.key.endswith("/"):
        raise ValueError("must name an object, not a bucket or a folder")
    return location
