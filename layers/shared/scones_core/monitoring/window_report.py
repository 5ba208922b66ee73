"""One monitoring window's numbers, and the alerts they raise.

A report combines three sources that each stand alone: the endpoint's captured
traffic, the results table, and (when it exists) Model Monitor. Alerts compare
the numbers with the deployment's thresholds; low confidence and label drift
only count once the window has enough requests to mean something.

Four alerts say the monitoring itself is broken rather than the model: a window
whose captured lines exist but none can be used (say, capture set to Input only),
a window whose classified images reached the endpoint but left no capture record
(capture written elsewhere, under another variant, or turned off), a Model Monitor
execution that ended ``Failed``/``Stopped`` for a reason other than an idle hour (a
"no data" for an hour whose capture folder holds files is one), and a report that
cannot be read. They count as alerts (a person must look) but do not start
retraining, which would fix none of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scones_core.monitoring.capture import CaptureBatch, capture_prefix
from scones_core.monitoring.data_warnings import (
    CAPTURE_OFF,
    MALFORMED_CAPTURE_LINE,
    OTHER_VARIANT_CAPTURE,
    DataWarning,
)
from scones_core.monitoring.drift import Baseline, DriftResult, compare_with_baseline
from scones_core.monitoring.model_monitor import (
    ModelMonitorFindings,
    MonitoringExecution,
    Violation,
)
from scones_core.monitoring.results import ResultCounts, ReviewTally
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.statistics import ConfidenceSummary, label_counts, label_mix
from scones_core.monitoring.timestamps import format_seconds
from scones_core.records import Status

LOW_CONFIDENCE = "LOW_CONFIDENCE"
LABEL_DRIFT = "LABEL_DRIFT"
MODEL_MONITOR_VIOLATIONS = "MODEL_MONITOR_VIOLATIONS"
MODEL_MONITOR_EXECUTION_FAILED = "MODEL_MONITOR_EXECUTION_FAILED"
MODEL_MONITOR_REPORT_UNREADABLE = "MODEL_MONITOR_REPORT_UNREADABLE"
CAPTURE_UNUSABLE = "CAPTURE_UNUSABLE"
CAPTURE_MISSING = "CAPTURE_MISSING"
# How many distinct reasons the CAPTURE_UNUSABLE alert names, most frequent first:
# one cause usually explains every line, and the alert goes into one SNS message.
UNUSABLE_REASONS_NAMED = 3
logger = logging.getLogger(__name__)

# How many warnings the JSON summary lists: it goes into one log event and the
# handler's response, and a broken writer can produce a warning per line. Every
# warning is still logged on its own and kept in ``WindowReport.warnings``.
SUMMARY_WARNING_LIMIT = 50
# A Model Monitor alert names this many violations, each description cut to this length.
NAMED_VIOLATIONS = 3
VIOLATION_DESCRIPTION_CHARS = 200


@dataclass(frozen=True)
class Alert:
    code: str
    message: str
    # False for alerts about the monitoring itself: retraining would not fix them.
    starts_retraining: bool = True


@dataclass(frozen=True)
class WindowReport:
    """Everything the monitor measured about ``[window_start, window_end)``."""

    endpoint_name: str
    window_start: datetime
    window_end: datetime
    request_count: int
    capture_files: int
    malformed_lines: int
    confidence: ConfidenceSummary | None
    label_counts: dict[str, int]
    label_mix: dict[str, float]
    drift: DriftResult | None
    results: ResultCounts
    model_monitor: ModelMonitorFindings | None
    duplicate_records: int = 0
    # Every skipped capture line and unreadable report, in the order found.
    warnings: tuple[DataWarning, ...] = ()
    # The answers people gave in the window (``scones review``).
    reviews: ReviewTally = field(default_factory=ReviewTally)
    # ``model_monitor`` covers the executions scheduled in the window moved back by this.
    model_monitor_lag: timedelta = timedelta(0)
    # Usable records read from the neighbouring hours' files (they belong to other windows).
    outside_window: int = 0
    # Unusable lines read from files another window owns (and counts), by reason.
    unusable_elsewhere: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_rate(self) -> float | None:
        return self.results.rate(Status.REJECTED)

    @property
    def failed_rate(self) -> float | None:
        return self.results.rate(Status.FAILED)

    def to_json(self) -> dict[str, Any]:
        """A compact, JSON-safe summary for logs and the handler's response."""
        confidence = self.confidence
        monitor = self.model_monitor
        return {
            "endpoint_name": self.endpoint_name,
            "window_start": format_seconds(self.window_start),
            "window_end": format_seconds(self.window_end),
            "request_count": self.request_count,
            "capture_files": self.capture_files,
            "malformed_lines": self.malformed_lines,
            "duplicate_records": self.duplicate_records,
            "outside_window": self.outside_window,
            "confidence": None
            if confidence is None
            else {
                "mean": confidence.mean,
                "p10": confidence.p10,
                "p50": confidence.p50,
                "p90": confidence.p90,
                "low_confidence_share": confidence.low_confidence_share,
            },
            "label_counts": self.label_counts,
            "label_mix": self.label_mix,
            "label_drift": None if self.drift is None else self.drift.label_distance,
            "label_drift_p_value": None if self.drift is None else self.drift.p_value,
            "results": self.results.counts,
            "reviewed_from": self.results.reviewed_from,
            "needs_review_rate": self.results.review_rate(),
            "reviews": self.reviews.to_json(),
            "rejected_rate": self.rejected_rate,
            "failed_rate": self.failed_rate,
            "model_monitor_scheduled": None
            if monitor is None
            else [
                format_seconds(self.window_start - self.model_monitor_lag),
                format_seconds(self.window_end - self.model_monitor_lag),
            ],
            "model_monitor_violations": None if monitor is None else monitor.violations_count,
            # The first SUMMARY_WARNING_LIMIT, as the report's warnings are bounded.
            "model_monitor_violation_details": None
            if monitor is None or monitor.violations is None
            else [v.to_json() for v in monitor.violations[:SUMMARY_WARNING_LIMIT]],
            "model_monitor_reports": None if monitor is None else list(monitor.report_uris),
            "model_monitor_failed_executions": None
            if monitor is None
            else len(monitor.failed_executions),
            "model_monitor_no_data_executions": None
            if monitor is None
            else len(monitor.no_data_executions),
            "model_monitor_unreadable_reports": None
            if monitor is None
            else len(monitor.unreadable_reports),
            "warnings": [w.to_json() for w in self.warnings[:SUMMARY_WARNING_LIMIT]],
            "warnings_omitted": max(0, len(self.warnings) - SUMMARY_WARNING_LIMIT),
        }


def build_window_report(
    settings: MonitorSettings,
    *,
    start: datetime,
    end: datetime,
    capture: CaptureBatch,
    results: ResultCounts,
    baseline: Baseline | None,
    reviews: ReviewTally | None = None,
    model_monitor: ModelMonitorFindings | None,
) -> WindowReport:
    confidences = [record.confidence for record in capture.records]
    summary = ConfidenceSummary.of(confidences, settings.confidence_threshold)
    counts = label_counts((record.label for record in capture.records), settings.labels)
    mix = label_mix(counts)
    drift = None
    if baseline is not None:
        drift = compare_with_baseline(
            baseline, counts, None if summary is None else summary.mean, settings.labels
        )
    return WindowReport(
        endpoint_name=settings.endpoint_name,
        window_start=start,
        window_end=end,
        request_count=len(capture.records),
        capture_files=capture.files_read,
        malformed_lines=capture.malformed_lines,
        outside_window=capture.outside_window,
        unusable_elsewhere=Counter(capture.unusable_elsewhere),
        confidence=summary,
        label_counts=counts,
        label_mix=mix,
        drift=drift,
        results=results,
        model_monitor=model_monitor,
        duplicate_records=capture.duplicate_records,
        reviews=reviews or ReviewTally(),
        model_monitor_lag=settings.model_monitor_lag,
        warnings=_capture_off(settings)
        + tuple(capture.warnings)
        + (() if model_monitor is None else model_monitor.unreadable_reports),
    )


def _capture_off(settings: MonitorSettings) -> tuple[DataWarning, ...]:
    """A warning, each window, that a sampling of 0 % leaves the monitor blind."""
    if settings.capture_sampling_percent > 0:
        return ()
    warning = DataWarning(
        CAPTURE_OFF,
        "DataCaptureSamplingPercentage",
        None,
        "the endpoint captures 0 % of its requests, so the monitor reads none: no low "
        "confidence, label drift or missing capture is measured or alerted on",
    )
    warning.log(logger, "capture is off: the monitor measures nothing")
    return (warning,)


def evaluate_alerts(report: WindowReport, settings: MonitorSettings) -> list[Alert]:
    """The thresholds this window exceeded (``>``, as the alarms compare), in order."""
    alerts: list[Alert] = []
    enough = report.request_count >= settings.min_requests
    confidence = report.confidence
    if (
        enough
        and confidence is not None
        and confidence.low_confidence_share > settings.low_confidence_alert_share
    ):
        alerts.append(
            Alert(
                LOW_CONFIDENCE,
                f"{confidence.low_confidence_share:.1%} of {report.request_count} requests were "
                f"below the confidence threshold {settings.confidence_threshold} "
                f"(alert at {settings.low_confidence_alert_share:.1%})",
            )
        )
    drift = report.drift
    if (
        enough
        and drift is not None
        and drift.drifted(settings.drift_alert_threshold, settings.drift_alert_significance)
    ):
        alerts.append(
            Alert(
                LABEL_DRIFT,
                f"the label mix of {report.request_count} requests moved "
                f"{drift.label_distance:.3f} (total variation distance) from the baseline of "
                f"model {drift.baseline_model_version} (alert at "
                f"{settings.drift_alert_threshold}); traffic with the baseline's mix lands "
                f"this far with chance {drift.p_value:.2g} (alert below "
                f"{settings.drift_alert_significance})",
            )
        )
    alerts += _capture_alerts(report) or _missing_capture_alerts(report, settings)
    monitor = report.model_monitor
    if monitor is not None:
        alerts += _model_monitor_alerts(monitor, settings.min_requests)
    return alerts


def _capture_alerts(report: WindowReport) -> list[Alert]:
    """Captured lines were read but not one is usable: 0 requests here is a fault, not a
    quiet window, and is below ``min_requests``, so no threshold alert would say so.

    A line that cannot be read has no time; it is counted by the window that owns its
    file's hour folder. One usable record anywhere (in the window or not) shows the
    capture works, and then nothing is raised."""
    if report.request_count or report.outside_window or not report.malformed_lines:
        return []
    reasons = Counter(w.reason for w in report.warnings if w.code == MALFORMED_CAPTURE_LINE)
    return [
        Alert(
            CAPTURE_UNUSABLE,
            f"none of the {report.malformed_lines} captured line(s) read for the window could "
            "be used: " + _named_reasons(reasons),
            starts_retraining=False,
        )
    ]


def _named_reasons(reasons: Counter[str]) -> str:
    return "; ".join(
        f"{reason} ({count} line(s))"
        for reason, count in reasons.most_common(UNUSABLE_REASONS_NAMED)
    )


def _missing_capture_alerts(report: WindowReport, settings: MonitorSettings) -> list[Alert]:
    """The results table says at least ``min_requests`` images reached the endpoint in the
    window, yet not one capture record of the window was read: capture goes elsewhere or
    nowhere, and a window of 0 requests would otherwise look like a quiet hour.

    Reviewed records count by the workflow's outcome. With sampling, the alert needs
    ``min_requests`` *expected* capture records (at 20, none by chance is e**-20)."""
    reached = report.results.outcome(Status.ACCEPTED) + report.results.outcome(Status.NEEDS_REVIEW)
    expected = reached * settings.capture_sampling_percent / 100
    if report.request_count or expected < settings.min_requests:
        return []
    reached_text = (
        f"{reached} image(s) reached the endpoint in the window (ACCEPTED or NEEDS_REVIEW "
        f"in the results table; at {settings.capture_sampling_percent:g} % sampling "
        f"{expected:g} capture records)"
    )
    if report.outside_window == 0 and report.unusable_elsewhere:
        # The capture is there, in a file another window owns (and names line by line):
        # the fix is what makes its lines unusable, not where capture goes.
        unusable = report.unusable_elsewhere
        return [
            Alert(
                CAPTURE_UNUSABLE,
                f"{reached_text} but none of the {unusable.total()} captured line(s) read for "
                "the window could be used: " + _named_reasons(unusable) + " (the window that "
                "owns their files' hour folder counts and names each line)",
                starts_retraining=False,
            )
        ]
    listed = capture_prefix(
        settings.data_capture, settings.endpoint_name, settings.endpoint_variant
    ).as_prefix()
    # Capture under another variant's folder most often means ENDPOINT_VARIANT is not the
    # endpoint's variant name: say where it is rather than only what to check.
    elsewhere = [w.source for w in report.warnings if w.code == OTHER_VARIANT_CAPTURE]
    return [
        Alert(
            CAPTURE_MISSING,
            f"{reached_text} but no capture record of the window was found under "
            f"s3://{settings.data_capture.bucket}/{listed} (variant "
            f"{settings.endpoint_variant}; {report.capture_files} file(s) read): "
            + (
                f"the window's capture is under {', '.join(elsewhere)}: set "
                "EndpointVariantName (ENDPOINT_VARIANT) to the variant to monitor"
                if elsewhere
                else "check the endpoint's DataCaptureConfig (EnableCapture, "
                "DestinationS3Uri, the variant name, InitialSamplingPercentage)"
            ),
            starts_retraining=False,
        )
    ]


def _model_monitor_alerts(monitor: ModelMonitorFindings, min_requests: int) -> list[Alert]:
    alerts: list[Alert] = []
    if monitor.alert:
        alerts.append(_violations_alert(monitor, min_requests))
    failed = monitor.failed_executions
    if failed:
        details = "; ".join(
            f"{format_seconds(e.scheduled_time)} {e.status}"
            + (f" ({e.processing_job_arn})" if e.processing_job_arn else "")
            + (f": {e.failure_reason}" if e.failure_reason else "")
            + (
                ": not ended when the window was read, so its verdict is never read "
                "(raise ModelMonitorLagMinutes)"
                if e.unfinished
                else ""
            )
            + (_missed_capture_text(e) if e.missed_capture else "")
            for e in failed
        )
        alerts.append(
            Alert(
                MODEL_MONITOR_EXECUTION_FAILED,
                f"{len(failed)} Model Monitor execution(s) in the window did not complete: "
                + details,
                starts_retraining=False,
            )
        )
    unreadable = monitor.unreadable_reports
    if unreadable:
        details = "; ".join(
            f"{w.source}" + (f" line {w.line}" if w.line is not None else "") + f": {w.reason}"
            for w in unreadable
        )
        alerts.append(
            Alert(
                MODEL_MONITOR_REPORT_UNREADABLE,
                f"{len(unreadable)} Model Monitor report(s) could not be read: {details}",
                starts_retraining=False,
            )
        )
    return alerts


def _violations_alert(monitor: ModelMonitorFindings, min_requests: int) -> Alert:
    """The violations named (the first few), and whether they start retraining: only a
    drift or model-quality violation (``Violation.is_drift``), found in at least
    ``min_requests`` records when the statistics of the reports that found it count them
    (a clean report's records do not count), as the monitor's own alerts need that many
    requests."""
    violations = monitor.violations or ()
    message = "Model Monitor reported constraint violations"
    if monitor.violations is not None:
        message += f" ({len(violations)} in {', '.join(monitor.report_uris)})"
    if violations:
        named = [_violation_text(v) for v in violations[:NAMED_VIOLATIONS]]
        more = len(violations) - len(named)
        message += ": " + "; ".join(named) + (f"; and {more} more" if more else "")
    checked = monitor.drift_item_count
    if monitor.violations is None:
        reason = "its report was not read (see the warnings), so nothing says what to retrain for"
    elif not any(v.is_drift for v in violations):
        reason = (
            "none is a drift or model-quality check, which new weights could answer: the "
            "analysed records do not have the baseline's shape (check the endpoint's capture "
            "and the schedule's record preprocessor)"
        )
    elif checked is not None and checked < min_requests:
        reason = (
            f"the reports that found the drift checked {checked} record(s), fewer than the "
            f"{min_requests} "
            "(MonitorMinRequests) the monitor judges a window by"
        )
    else:
        return Alert(MODEL_MONITOR_VIOLATIONS, message)
    return Alert(
        MODEL_MONITOR_VIOLATIONS, f"{message}; not retraining: {reason}", starts_retraining=False
    )


def _violation_text(violation: Violation) -> str:
    what = violation.feature_name or "(no feature named)"
    check = violation.constraint_check_type or "(no check type)"
    description = violation.description
    if len(description) > VIOLATION_DESCRIPTION_CHARS:
        description = description[: VIOLATION_DESCRIPTION_CHARS - 1] + "…"
    return f"{what} {check}" + (f": {description}" if description else "")


def _missed_capture_text(execution: MonitoringExecution) -> str:
    return (
        f", yet the capture folder of the hour it analysed ({execution.capture_folder}) holds "
        f"{execution.capture_files} capture file(s), so Model Monitor does not see the "
        "endpoint's capture (check that the schedule's job definition names this endpoint "
        "in EndpointInput, that the endpoint's DataCaptureConfig writes there, and that the "
        "job's role may read that prefix and decrypt it with its KMS key)"
    )
