"""Model Monitor's verdicts: execution statuses and ``constraint_violations.json``.

Reports are found by S3 prefix (Model Monitor writes them under
``{output}/{endpoint}/{schedule}/yyyy/mm/dd/hh/``), so they are read whether or
not a schedule is configured here. Only this endpoint's reports are listed: the
window's hour folders of its schedule, or its whole endpoint folder when no
schedule is named; another endpoint's or schedule's violations under the same
prefix would otherwise start this endpoint's retraining. The SageMaker API is
used only when a schedule name is configured: to list the window's executions,
and to find the report location when no reports URI is given. A missing report
is not an error; Model Monitor is closed to new AWS customers and the rest of the
monitor works without it.

Every report in the window is read (an hourly schedule writes several in a long
window) and their violations are merged. Three faults are kept apart from "no
report": an execution that ended ``Failed`` or ``Stopped``, a scheduled hour with no
execution at all (the schedule stopped, failed or was deleted: ``Missing``, found by
reading the schedule's cron expression when an hour of the window lacks its execution), and a
report that exists but cannot be read. Each means Model Monitor said nothing about the
traffic it was meant to check, so each is reported rather than read as health.
An execution that failed only because its hour captured no traffic is neither:
it is "no report", counted on its own. Unless the capture folder of the hour it analysed
holds capture files: then Model Monitor did not see traffic that exists (it reads another
endpoint, variant or prefix, or cannot read or decrypt the capture), and it is a fault
like the others (``ModelMonitorFindings.with_capture_files``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from scones_core.errors import aws_error_code
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.data_warnings import UNREADABLE_REPORT, DataWarning
from scones_core.monitoring.locations import (
    S3Location,
    S3ReadError,
    list_objects,
    read_optional_object,
)
from scones_core.monitoring.timestamps import (
    floor_hour,
    format_seconds,
    hour_folder_name,
    hours_between,
)

logger = logging.getLogger(__name__)

ALERT_STATUS = "CompletedWithViolations"
FAILED_STATUS = "Failed"
# Executions that ended without a verdict on the traffic they were meant to check.
FAULT_STATUSES = frozenset({FAILED_STATUS, "Stopped"})
# Executions that had not ended when the window was read: each window is read once, so
# their verdict is never seen (ModelMonitorLagMinutes is shorter than they take).
UNFINISHED_STATUSES = frozenset({"Pending", "InProgress", "Stopping"})
COMPLETED_STATUSES = frozenset({"Completed", ALERT_STATUS})
# ListMonitoringExecutions does not say whether its time filters include their bounds,
# and executions are scheduled on the hour, often a window's bound: the request is
# widened by this much and the window applied here, as [start, end).
LISTING_MARGIN = timedelta(minutes=1)
# SageMaker's FailureReason for an execution whose hour captured no requests (an idle
# hour): nothing was there to check, so it is not a fault of the monitoring.
NO_DATA_FAILURE_REASON = "Job inputs had no data"
# The capture an hourly execution analyses: the hour before its scheduled time (offsets
# -PT1H and -PT0H, which a schedule without DataAnalysisStartTime/EndTime, the stack's,
# keeps). Its job downloads that hour's capture folder, {endpoint}/{variant}/yyyy/mm/dd/hh.
ANALYSED_SPAN = timedelta(hours=1)
# A schedule's hours with no execution at all: the schedule is stopped, failed, or was
# removed, and Model Monitor checks nothing while every other number looks healthy.
MISSING_STATUS = "Missing"
# Model Monitor's schedules run on the hour: "cron(0 <hours> ? * * *)", where <hours> is
# "*", "*/N", "A/N" or a list of hours. Other expressions are not second-guessed.
_HOURLY_CRON = re.compile(r"^cron\(0 ([0-9*/,]+) \? \* \* \*\)$")

VIOLATIONS_FILE = "constraint_violations.json"
STATISTICS_FILE = "statistics.json"
# Violations new weights can answer: the analysed traffic moved from the baseline's (data
# quality's distribution and category checks), or a model-quality metric crossed its
# threshold (model quality names its comparison: LessThanThreshold, ...). The schema checks
# (data_type_check, completeness_check, missing_column_check, extra_column_check) say the
# analysed records lack the baseline's shape, a capture or record-preprocessor fault that
# retraining cannot mend, and a check this code does not know is for a person to judge.
DRIFT_CHECK_TYPES = frozenset({"baseline_drift_check", "categorical_values_check"})
MODEL_QUALITY_CHECK_SUFFIX = "Threshold"
_REPORT_HOUR = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})/" + re.escape(VIOLATIONS_FILE) + "$")


class ModelMonitorReportError(ValueError):
    """A report file exists but does not have Model Monitor's shape."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


@dataclass(frozen=True)
class Violation:
    feature_name: str
    constraint_check_type: str
    description: str
    report_uri: str | None = None

    @property
    def is_drift(self) -> bool:
        """A violation retraining can answer (``DRIFT_CHECK_TYPES``)."""
        check = self.constraint_check_type
        return check in DRIFT_CHECK_TYPES or check.endswith(MODEL_QUALITY_CHECK_SUFFIX)

    def to_json(self) -> dict[str, str | None]:
        return {
            "feature_name": self.feature_name,
            "constraint_check_type": self.constraint_check_type,
            "description": self.description,
            "report_uri": self.report_uri,
        }


@dataclass(frozen=True)
class MonitoringExecution:
    scheduled_time: datetime
    status: str
    processing_job_arn: str | None = None
    failure_reason: str | None = None
    # The capture folder of ``analysed_hour`` and how many capture files it holds
    # (``with_capture_files``); None when not looked at: only a "no data" execution is.
    capture_folder: str | None = None
    capture_files: int | None = None

    @property
    def analysed_hour(self) -> datetime:
        """The start of the hour of capture this execution analysed."""
        return self.scheduled_time - ANALYSED_SPAN

    @property
    def had_no_data(self) -> bool:
        """Failed saying its hour held no captured requests (SageMaker's word for it;
        ``missed_capture`` says whether the capture folder agrees)."""
        return (
            self.status == FAILED_STATUS
            and (self.failure_reason or "").strip() == NO_DATA_FAILURE_REASON
        )

    @property
    def missed_capture(self) -> bool:
        """Said "no data" for an hour whose capture folder holds capture files: Model
        Monitor does not see the endpoint's capture."""
        return self.had_no_data and bool(self.capture_files)

    @property
    def idle(self) -> bool:
        """Failed only because its hour held no captured requests, as far as is known."""
        return self.had_no_data and not self.missed_capture

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED_STATUSES

    @property
    def is_fault(self) -> bool:
        """Gave no verdict the monitor will read, for a reason other than an idle hour:
        it ended ``Failed`` or ``Stopped``, or had not ended when the window was read."""
        return (
            (self.status in FAULT_STATUSES and not self.idle)
            or self.unfinished
            or self.status == MISSING_STATUS
        )


@dataclass(frozen=True)
class ModelMonitorFindings:
    """What Model Monitor said about the window, as far as it said anything."""

    executions: tuple[MonitoringExecution, ...] = ()
    violations: tuple[Violation, ...] | None = None  # None: no readable report in the window
    report_uris: tuple[str, ...] = ()  # the readable reports, oldest first
    unreadable_reports: tuple[DataWarning, ...] = ()
    # The records checked by the reports that found a drift or model-quality violation
    # (their statistics' item_count, summed): None when no report found one, or one of
    # them has no count. A clean report's records are not evidence of a drift.
    drift_item_count: int | None = None

    @property
    def violations_count(self) -> int | None:
        return None if self.violations is None else len(self.violations)

    @property
    def failed_executions(self) -> tuple[MonitoringExecution, ...]:
        """Executions in the window without a verdict (``is_fault``), idle hours aside."""
        return tuple(e for e in self.executions if e.is_fault)

    @property
    def no_data_executions(self) -> tuple[MonitoringExecution, ...]:
        """Executions in the window that failed only because their hour had no traffic."""
        return tuple(e for e in self.executions if e.idle)

    def with_capture_files(
        self, count: Callable[[datetime], tuple[str, int]]
    ) -> ModelMonitorFindings:
        """These findings with each "no data" execution given ``count`` of its analysed
        hour: that hour's capture folder and how many capture files it holds, as the
        execution's job would download them."""

        def looked_at(execution: MonitoringExecution) -> MonitoringExecution:
            if not execution.had_no_data:
                return execution
            folder, files = count(execution.analysed_hour)
            return replace(execution, capture_folder=folder, capture_files=files)

        return replace(self, executions=tuple(looked_at(e) for e in self.executions))

    @property
    def alert(self) -> bool:
        """An execution ended ``CompletedWithViolations`` or the report lists violations."""
        return any(e.status == ALERT_STATUS for e in self.executions) or bool(self.violations)


def list_executions(
    sagemaker: Any, schedule_name: str, start: datetime, end: datetime
) -> tuple[MonitoringExecution, ...]:
    """The schedule's executions scheduled in ``[start, end)``, newest first."""
    executions: list[MonitoringExecution] = []
    request: dict[str, Any] = {
        "MonitoringScheduleName": schedule_name,
        "ScheduledTimeAfter": start - LISTING_MARGIN,
        "ScheduledTimeBefore": end + LISTING_MARGIN,
        "SortBy": "ScheduledTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
    }
    while True:
        response = sagemaker.list_monitoring_executions(**request)
        for summary in response.get("MonitoringExecutionSummaries", []):
            if not start <= summary["ScheduledTime"] < end:
                continue
            executions.append(
                MonitoringExecution(
                    scheduled_time=summary["ScheduledTime"],
                    status=summary["MonitoringExecutionStatus"],
                    processing_job_arn=summary.get("ProcessingJobArn"),
                    failure_reason=summary.get("FailureReason"),
                )
            )
        token = response.get("NextToken")
        if not token:
            return tuple(executions)
        request["NextToken"] = token


def reports_location_from_schedule(description: dict[str, Any]) -> S3Location | None:
    """Where the schedule writes its reports, when its job definition is inline
    (``description``: DescribeMonitoringSchedule's answer)."""
    config = description.get("MonitoringScheduleConfig", {})
    definition = config.get("MonitoringJobDefinition", {})
    outputs = definition.get("MonitoringOutputConfig", {}).get("MonitoringOutputs", [])
    for output in outputs:
        uri = output.get("S3Output", {}).get("S3Uri")
        if uri:
            return S3Location.parse(uri)
    return None


def report_time(key: str, last_modified: datetime) -> datetime:
    """The execution's scheduled hour from the report's ``yyyy/mm/dd/hh`` folder.

    Model Monitor files each report under the hour its execution was scheduled
    for, the same time ``ListMonitoringExecutions`` filters on; objects outside
    that layout fall back to their S3 ``LastModified`` time.
    """
    match = _REPORT_HOUR.search(key)
    if match is None:
        return last_modified
    year, month, day, hour = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return last_modified


def report_prefixes(
    reports: S3Location,
    *,
    endpoint: str,
    schedule_name: str | None,
    start: datetime,
    end: datetime,
) -> list[str]:
    """The folders that can hold this endpoint's reports for ``[start, end)``.

    With a schedule name, only its ``yyyy/mm/dd/hh`` folders in the window (one
    listing per hour, however long the history); without one, the endpoint's folder.
    """
    if not schedule_name:
        return [reports.child(endpoint).as_prefix()]
    base = reports.child(endpoint, schedule_name)
    return [base.child(hour_folder_name(hour)).as_prefix() for hour in hours_between(start, end)]


def find_reports(
    s3: Any,
    reports: S3Location,
    start: datetime,
    end: datetime,
    *,
    endpoint: str,
    schedule_name: str | None,
) -> list[str]:
    """This endpoint's ``constraint_violations.json`` keys timed in ``[start, end)``, oldest
    first."""
    prefixes = report_prefixes(
        reports, endpoint=endpoint, schedule_name=schedule_name, start=start, end=end
    )
    candidates = [
        (report_time(obj.key, obj.last_modified), obj.key)
        for prefix in prefixes
        for obj in list_objects(s3, reports.bucket, prefix)
        if obj.key.rsplit("/", 1)[-1] == VIOLATIONS_FILE
    ]
    return [key for time, key in sorted(candidates) if start <= time < end]


def parse_violations(body: bytes, report_uri: str | None = None) -> tuple[Violation, ...]:
    """The report's violations; ``ModelMonitorReportError`` when it is not Model Monitor's shape.

    The contract's ``{"violations": [...]}`` is required, so a truncated or
    foreign file (``{}``, an error page) is never read as "no violations".
    """
    try:
        document = load_json(body)
    except NotJSON as exc:
        raise ModelMonitorReportError(str(exc), line=exc.line) from exc
    if not isinstance(document, dict) or not isinstance(document.get("violations"), list):
        raise ModelMonitorReportError('expected {"violations": [...]}')
    violations = []
    for index, item in enumerate(document["violations"]):
        if not isinstance(item, dict):
            raise ModelMonitorReportError(f"violations[{index}] is not an object: {item!r}")
        violations.append(
            Violation(
                # Data quality names a feature; model quality names a metric.
                feature_name=str(item.get("feature_name") or item.get("metric_name") or ""),
                constraint_check_type=str(item.get("constraint_check_type") or ""),
                description=str(item.get("description") or ""),
                report_uri=report_uri,
            )
        )
    return tuple(violations)


def parse_statistics_item_count(body: bytes) -> int | None:
    """``dataset.item_count`` from ``statistics.json``, when present."""
    try:
        return int(load_json(body)["dataset"]["item_count"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _warn_of_missing_reports(
    executions: tuple[MonitoringExecution, ...],
    keys: list[str],
    reports: S3Location,
    endpoint: str,
    schedule_name: str,
) -> None:
    """A completed execution with baseline constraints writes ``constraint_violations.json``:
    none in its hour folder means the reports are looked for in the wrong place
    (``MONITORING_REPORTS_S3_URI``), or the schedule has no constraints to check."""
    for execution in executions:
        if execution.status not in COMPLETED_STATUSES:
            continue
        hour = hour_folder_name(execution.scheduled_time)
        folder = reports.child(endpoint, schedule_name, hour).as_prefix()
        if not any(key.startswith(folder) for key in keys):
            logger.warning(
                "Model Monitor execution completed, but no constraint_violations.json is "
                "where the monitor looks: check MONITORING_REPORTS_S3_URI, or give the "
                "schedule baseline constraints (ModelMonitorBaselineUri); without them it "
                "compares nothing and writes only statistics.json",
                extra={
                    "status": execution.status,
                    "scheduled_time": format_seconds(execution.scheduled_time),
                    "looked_in": f"s3://{reports.bucket}/{folder}",
                },
            )


def _newest_first(execution: MonitoringExecution) -> float:
    return -execution.scheduled_time.timestamp()


def scheduled_hours(expression: str, start: datetime, end: datetime) -> list[datetime] | None:
    """The hours in ``[start, end)`` an on-the-hour cron expression runs at; None for an
    expression this does not read (then no execution is expected of it)."""
    match = _HOURLY_CRON.match(expression.strip())
    if match is None:
        return None
    hours: set[int] = set()
    for part in match.group(1).split(","):
        first, _, step = part.partition("/")
        try:
            begin = 0 if first == "*" else int(first)
            every = int(step) if step else (1 if first == "*" else 24)
        except ValueError:
            return None
        if not 0 <= begin <= 23 or every < 1:
            return None
        hours.update(range(begin, 24, every))
    return [h for h in _hours_starting_in(start, end) if h.hour in hours]


def _hours_starting_in(start: datetime, end: datetime) -> list[datetime]:
    """The whole hours in ``[start, end)``: when an hourly schedule's executions fall."""
    return [hour for hour in hours_between(start, end) if hour >= start]


def missing_executions(
    description: dict[str, Any],
    executions: tuple[MonitoringExecution, ...],
    start: datetime,
    end: datetime,
) -> tuple[MonitoringExecution, ...]:
    """The window's scheduled hours, after the schedule was created, that have no
    execution: each a ``Missing`` one naming the schedule's status."""
    config = description.get("MonitoringScheduleConfig", {})
    expression = str(config.get("ScheduleConfig", {}).get("ScheduleExpression", ""))
    hours = scheduled_hours(expression, start, end)
    created = description.get("CreationTime")
    if hours is None or not isinstance(created, datetime):
        return ()
    status = description.get("MonitoringScheduleStatus", "unknown")
    reason = f"no execution was scheduled; the schedule is {status}"
    if description.get("FailureReason"):
        reason += f" ({description['FailureReason']})"
    return _missing([hour for hour in hours if hour > created], executions, reason)


def _unscheduled_hours(
    schedule_name: str,
    executions: tuple[MonitoringExecution, ...],
    start: datetime,
    end: datetime,
) -> tuple[MonitoringExecution, ...]:
    """The window's whole hours without an execution, each ``Missing`` because the
    schedule itself does not exist."""
    reason = (
        f"the monitoring schedule {schedule_name} does not exist (deleted?): nothing checks "
        "the endpoint's traffic; recreate it, or stop naming it in MONITORING_SCHEDULE_NAME "
        "if Model Monitor is no longer used"
    )
    return _missing(_hours_starting_in(start, end), executions, reason)


def _missing(
    hours: list[datetime], executions: tuple[MonitoringExecution, ...], reason: str
) -> tuple[MonitoringExecution, ...]:
    """A ``Missing`` execution, newest first, for each of ``hours`` that has none."""
    seen = {floor_hour(e.scheduled_time.astimezone(UTC)) for e in executions}
    return tuple(
        MonitoringExecution(scheduled_time=hour, status=MISSING_STATUS, failure_reason=reason)
        for hour in sorted(hours, reverse=True)
        if hour not in seen
    )


def _log_faults(executions: tuple[MonitoringExecution, ...], schedule_name: str) -> None:
    for ended in executions:
        if ended.had_no_data:
            log, message = logger.info, "Model Monitor execution had no data to check"
        elif ended.unfinished:
            log, message = (
                logger.warning,
                "Model Monitor execution had not ended when its window was read; "
                "its verdict will not be read (ModelMonitorLagMinutes is too short)",
            )
        elif ended.status == MISSING_STATUS:
            log, message = logger.warning, "Model Monitor has no execution for a scheduled hour"
        elif ended.is_fault:
            log, message = logger.warning, "Model Monitor execution did not complete"
        else:
            continue
        log(
            message,
            extra={
                "schedule": schedule_name,
                "status": ended.status,
                "scheduled_time": format_seconds(ended.scheduled_time),
                "processing_job_arn": ended.processing_job_arn,
                "failure_reason": ended.failure_reason,
            },
        )


def _schedule_executions(
    sagemaker: Any, schedule_name: str, start: datetime, end: datetime, *, describe: bool
) -> tuple[tuple[MonitoringExecution, ...], dict[str, Any] | None]:
    """The window's executions, newest first, with a ``Missing`` one for each scheduled
    hour that has none; and the schedule's description when it was read (``describe``, or
    an hour lacks its execution) and the schedule exists."""
    executions: tuple[MonitoringExecution, ...] = ()
    try:
        executions = list_executions(sagemaker, schedule_name, start, end)
    except ClientError as exc:
        if aws_error_code(exc) != "ResourceNotFound":
            raise
        # No schedule has no executions: the description below says so for the hours.
    _log_faults(executions, schedule_name)
    if len(executions) >= len(_hours_starting_in(start, end)) and not describe:
        return executions, None
    description: dict[str, Any] | None = None
    try:
        description = sagemaker.describe_monitoring_schedule(MonitoringScheduleName=schedule_name)
    except ClientError as exc:
        if aws_error_code(exc) != "ResourceNotFound":
            raise
        # Deleted (or never made): every hour of the window went unchecked. Said as
        # Missing executions, so the rest of the window is still measured.
        missing = _unscheduled_hours(schedule_name, executions, start, end)
    else:
        missing = missing_executions(description, executions, start, end)
    _log_faults(missing, schedule_name)
    return tuple(sorted(executions + missing, key=_newest_first)), description


def collect_findings(
    s3: Any,
    sagemaker: Any | None,
    *,
    endpoint: str,
    schedule_name: str | None,
    reports: S3Location | None,
    start: datetime,
    end: datetime,
) -> ModelMonitorFindings | None:
    """Executions and every report of ``endpoint`` for the window; ``None`` when nothing
    is configured."""
    if not schedule_name and reports is None:
        return None
    executions: tuple[MonitoringExecution, ...] = ()
    if schedule_name and sagemaker is not None:
        executions, description = _schedule_executions(
            sagemaker, schedule_name, start, end, describe=reports is None
        )
        if reports is None and description is not None:
            reports = reports_location_from_schedule(description)
            if reports is None:
                logger.warning(
                    "the monitoring schedule names no report location; "
                    "set MONITORING_REPORTS_S3_URI to read its reports",
                    extra={"schedule": schedule_name},
                )
    if reports is None:
        return ModelMonitorFindings(executions=executions)
    keys = find_reports(s3, reports, start, end, endpoint=endpoint, schedule_name=schedule_name)
    if schedule_name:
        _warn_of_missing_reports(executions, keys, reports, endpoint, schedule_name)
    if not keys:
        logger.info("no Model Monitor report in the window", extra={"reports": reports.uri})
        return ModelMonitorFindings(executions=executions)

    violations: list[Violation] = []
    readable: list[str] = []
    unreadable: list[DataWarning] = []
    drift_counts: list[int | None] = []
    for key in keys:
        report_uri = f"s3://{reports.bucket}/{key}"
        body = read_optional_object(s3, S3Location(reports.bucket, key))
        if body is None:
            # Deleted between listing and reading (a lifecycle rule): as if missing.
            logger.info("Model Monitor report vanished before it was read", extra={"key": key})
            continue
        try:
            found = parse_violations(body, report_uri)
        except ModelMonitorReportError as exc:
            warning = DataWarning(UNREADABLE_REPORT, report_uri, exc.line, str(exc))
            warning.log(logger, "Model Monitor report is unreadable")
            unreadable.append(warning)
            continue
        readable.append(report_uri)
        violations.extend(found)
        if not any(v.is_drift for v in found):
            continue
        statistics_key = key[: -len(VIOLATIONS_FILE)] + STATISTICS_FILE
        try:
            statistics = read_optional_object(s3, S3Location(reports.bucket, statistics_key))
        except S3ReadError as exc:
            # Only the count of records checked comes from it: unknown, not a failed run.
            logger.warning("Model Monitor statistics could not be read: %s", exc)
            statistics = None
        drift_counts.append(None if statistics is None else parse_statistics_item_count(statistics))
    return ModelMonitorFindings(
        executions=executions,
        violations=tuple(violations) if readable else None,
        report_uris=tuple(readable),
        unreadable_reports=tuple(unreadable),
        drift_item_count=_sum_if_known(drift_counts),
    )


def _sum_if_known(counts: list[int | None]) -> int | None:
    """The total, or None when there is nothing to add up or a part is unknown (the total
    could then be anything above the known parts)."""
    if not counts or any(c is None for c in counts):
        return None
    return sum(c for c in counts if c is not None)
