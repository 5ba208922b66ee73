"""One monitor run in two steps, so the handler can publish between them.

``measure_window`` reads the three sources and returns the report with its
alerts; ``respond`` starts retraining when an alert asks for it. The handler
publishes the report's metrics before ``respond``, so a failed retraining call
never loses the window's numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from scones_core.monitoring.capture import capture_files_in_hour, read_capture_window
from scones_core.monitoring.drift import load_baseline
from scones_core.monitoring.model_monitor import collect_findings
from scones_core.monitoring.results import count_results
from scones_core.monitoring.retraining import (
    RetrainingLauncher,
    RetrainingOutcome,
    RetrainingTargets,
)
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.window_report import (
    Alert,
    WindowReport,
    build_window_report,
    evaluate_alerts,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorClients:
    """boto3 clients (low-level); ``sagemaker`` and ``stepfunctions`` may be unused."""

    s3: Any
    dynamodb: Any
    sagemaker: Any | None = None
    stepfunctions: Any | None = None


def measure_window(
    settings: MonitorSettings, clients: MonitorClients, window_end: datetime
) -> tuple[WindowReport, list[Alert]]:
    """The report for ``[window_end - window, window_end)`` and the alerts it raises
    (Model Monitor's findings for that window moved back by ``model_monitor_lag``)."""
    start = window_end - settings.window
    capture = read_capture_window(
        clients.s3,
        settings.data_capture,
        endpoint=settings.endpoint_name,
        variant=settings.endpoint_variant,
        labels=settings.labels,
        start=start,
        end=window_end,
    )
    results, reviews = count_results(
        clients.dynamodb,
        table_name=settings.results_table_name,
        start=start,
        end=window_end,
        review_lookback=settings.review_lookback,
    )
    baseline = None
    if settings.baseline is None:
        logger.warning("BASELINE_S3_URI is not set; label drift is not computed")
    else:
        baseline = load_baseline(clients.s3, settings.baseline)
    # Model Monitor's verdicts on this traffic are not final yet: read the executions
    # that are, the same window's length earlier (each is read by exactly one run).
    findings = collect_findings(
        clients.s3,
        clients.sagemaker,
        endpoint=settings.endpoint_name,
        schedule_name=settings.monitoring_schedule_name,
        reports=settings.monitoring_reports,
        start=start - settings.model_monitor_lag,
        end=window_end - settings.model_monitor_lag,
    )
    if findings is not None:
        # "No data" is believed only of an hour whose capture folder is empty.
        findings = findings.with_capture_files(
            partial(
                capture_files_in_hour,
                clients.s3,
                settings.data_capture,
                endpoint=settings.endpoint_name,
                variant=settings.endpoint_variant,
            )
        )
    report = build_window_report(
        settings,
        start=start,
        end=window_end,
        capture=capture,
        results=results,
        reviews=reviews,
        baseline=baseline,
        model_monitor=findings,
    )
    return report, evaluate_alerts(report, settings)


def respond(
    settings: MonitorSettings,
    clients: MonitorClients,
    report: WindowReport,
    alerts: list[Alert],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RetrainingOutcome | None:
    """Start retraining for the alerts that ask for it; ``None`` when none does.

    Alerts about the monitoring itself (unusable or missing capture, a failed Model
    Monitor execution, an unreadable report) are left out: new weights would not fix them.
    ``clock`` says when the start happens: the cooldown runs from it.
    """
    alerts = [alert for alert in alerts if alert.starts_retraining]
    if not alerts:
        return None
    launcher = RetrainingLauncher(
        RetrainingTargets(
            endpoint_name=settings.endpoint_name,
            marker_table=settings.state_table_name,
            cooldown=settings.retraining_cooldown,
            max_cooldown=settings.retraining_max_cooldown,
            settle=settings.settle,
            period=settings.window,
            state_machine_arn=settings.retraining_state_machine_arn,
            job_config=settings.retraining_job_config,
        ),
        dynamodb=clients.dynamodb,
        s3=clients.s3,
        stepfunctions=clients.stepfunctions,
        sagemaker=clients.sagemaker,
        clock=clock,
    )
    return launcher.start(alerts, report.window_end, report.to_json())
