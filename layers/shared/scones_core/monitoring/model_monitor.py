"""Model Monitor's verdicts: execution statuses and ``constraint_violations.json``.

Reports are found by S3 prefix (Model Monitor writes them under
``{output}/{endpoint}/{schedule}/yyyy/mm/dd/hh/``), so they are read whether or
not a schedule is configured here. The SageMaker API is used only when a
schedule name is configured: to list the window's executions, and to find the
report location when no reports URI is given. A missing report is not an error;
Model Monitor is closed to new AWS customers and the rest of the monitor works
without it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from scones_core.monitoring.locations import S3Location, list_objects, read_object

logger = logging.getLogger(__name__)

ALERT_STATUS = "CompletedWithViolations"
VIOLATIONS_FILE = "constraint_violations.json"
STATISTICS_FILE = "statistics.json"
_REPORT_HOUR = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})/" + re.escape(VIOLATIONS_FILE) + "$")


class ModelMonitorReportError(ValueError):
    """A report file exists but does not have Model Monitor's shape."""


@dataclass(frozen=True)
class Violation:
    feature_name: str
    constraint_check_type: str
    description: str


@dataclass(frozen=True)
class MonitoringExecution:
    scheduled_time: datetime
    status: str
    processing_job_arn: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class ModelMonitorFindings:
    """What Model Monitor said about the window, as far as it said anything."""

    executions: tuple[MonitoringExecution, ...] = ()
    violations: tuple[Violation, ...] | None = None  # None: no report in the window
    report_uri: str | None = None
    statistics_item_count: int | None = None

    @property
    def violations_count(self) -> int | None:
        return None if self.violations is None else len(self.violations)

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
        "ScheduledTimeAfter": start,
        "ScheduledTimeBefore": end,
        "SortBy": "ScheduledTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
    }
    while True:
        response = sagemaker.list_monitoring_executions(**request)
        for summary in response.get("MonitoringExecutionSummaries", []):
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


def reports_location_from_schedule(sagemaker: Any, schedule_name: str) -> S3Location | None:
    """Where the schedule writes its reports, when its job definition is inline."""
    response = sagemaker.describe_monitoring_schedule(MonitoringScheduleName=schedule_name)
    definition = response.get("MonitoringScheduleConfig", {}).get("MonitoringJobDefinition", {})
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


def find_latest_report(s3: Any, reports: S3Location, start: datetime, end: datetime) -> str | None:
    """The key of the newest ``constraint_violations.json`` whose time is in ``[start, end)``."""
    candidates = [
        (report_time(obj.key, obj.last_modified), obj.key)
        for obj in list_objects(s3, reports.bucket, reports.as_prefix())
        if obj.key.rsplit("/", 1)[-1] == VIOLATIONS_FILE
    ]
    in_window = [candidate for candidate in candidates if start <= candidate[0] < end]
    if not in_window:
        return None
    return max(in_window)[1]


def parse_violations(body: bytes) -> tuple[Violation, ...]:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelMonitorReportError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("violations", []), list):
        raise ModelMonitorReportError('expected {"violations": [...]}')
    violations = []
    for item in document.get("violations", []):
        if not isinstance(item, dict):
            raise ModelMonitorReportError(f"violation {item!r} is not an object")
        violations.append(
            Violation(
                feature_name=str(item.get("feature_name", "")),
                constraint_check_type=str(item.get("constraint_check_type", "")),
                description=str(item.get("description", "")),
            )
        )
    return tuple(violations)


def parse_statistics_item_count(body: bytes) -> int | None:
    """``dataset.item_count`` from ``statistics.json``, when present."""
    try:
        document = json.loads(body)
        return int(document["dataset"]["item_count"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        return None


def collect_findings(
    s3: Any,
    sagemaker: Any | None,
    *,
    schedule_name: str | None,
    reports: S3Location | None,
    start: datetime,
    end: datetime,
) -> ModelMonitorFindings | None:
    """Executions and the latest report for the window; ``None`` when nothing is configured."""
    if not schedule_name and reports is None:
        return None
    executions: tuple[MonitoringExecution, ...] = ()
    if schedule_name and sagemaker is not None:
        executions = list_executions(sagemaker, schedule_name, start, end)
        if reports is None:
            reports = reports_location_from_schedule(sagemaker, schedule_name)
            if reports is None:
                logger.warning(
                    "the monitoring schedule names no report location; "
                    "set MONITORING_REPORTS_S3_URI to read its reports",
                    extra={"schedule": schedule_name},
                )
    if reports is None:
        return ModelMonitorFindings(executions=executions)
    key = find_latest_report(s3, reports, start, end)
    if key is None:
        logger.info("no Model Monitor report in the window", extra={"reports": reports.uri})
        return ModelMonitorFindings(executions=executions)
    report_uri = f"s3://{reports.bucket}/{key}"
    try:
        violations = parse_violations(read_object(s3, reports.bucket, key))
    except ModelMonitorReportError as exc:
        logger.error(
            "Model Monitor report is unreadable", extra={"report": report_uri, "problem": str(exc)}
        )
        return ModelMonitorFindings(executions=executions)
    statistics_key = key[: -len(VIOLATIONS_FILE)] + STATISTICS_FILE
    try:
        item_count = parse_statistics_item_count(read_object(s3, reports.bucket, statistics_key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"NoSuchKey", "404"}:
            raise
        item_count = None
    return ModelMonitorFindings(
        executions=executions,
        violations=violations,
        report_uri=report_uri,
        statistics_item_count=item_count,
    )
