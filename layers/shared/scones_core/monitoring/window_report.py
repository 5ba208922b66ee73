"""One monitoring window's numbers, and the alerts they raise.

A report combines three sources that each stand alone: the endpoint's captured
traffic, the results table, and (when it exists) Model Monitor. Alerts compare
the numbers with the deployment's thresholds; low confidence and label drift
only count once the window has enough requests to mean something.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scones_core.monitoring.capture import CaptureBatch
from scones_core.monitoring.drift import Baseline, DriftResult, compare_with_baseline
from scones_core.monitoring.model_monitor import ModelMonitorFindings
from scones_core.monitoring.results import ResultCounts
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.statistics import ConfidenceSummary, label_counts, label_mix
from scones_core.monitoring.timestamps import format_seconds
from scones_core.records import Status

LOW_CONFIDENCE = "LOW_CONFIDENCE"
LABEL_DRIFT = "LABEL_DRIFT"
MODEL_MONITOR_VIOLATIONS = "MODEL_MONITOR_VIOLATIONS"


@dataclass(frozen=True)
class Alert:
    code: str
    message: str


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
            "results": self.results.counts,
            "rejected_rate": self.rejected_rate,
            "failed_rate": self.failed_rate,
            "model_monitor_violations": None if monitor is None else monitor.violations_count,
        }


def build_window_report(
    settings: MonitorSettings,
    *,
    start: datetime,
    end: datetime,
    capture: CaptureBatch,
    results: ResultCounts,
    baseline: Baseline | None,
    model_monitor: ModelMonitorFindings | None,
) -> WindowReport:
    confidences = [record.confidence for record in capture.records]
    summary = ConfidenceSummary.of(confidences, settings.confidence_threshold)
    counts = label_counts(capture.records, settings.labels)
    mix = label_mix(counts)
    drift = None
    if baseline is not None:
        drift = compare_with_baseline(
            baseline, mix, None if summary is None else summary.mean, settings.labels
        )
    return WindowReport(
        endpoint_name=settings.endpoint_name,
        window_start=start,
        window_end=end,
        request_count=len(capture.records),
        capture_files=capture.files_read,
        malformed_lines=capture.malformed_lines,
        confidence=summary,
        label_counts=counts,
        label_mix=mix,
        drift=drift,
        results=results,
        model_monitor=model_monitor,
    )


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
    if enough and report.drift is not None:
        distance = report.drift.label_distance
        if distance > settings.drift_alert_threshold:
            alerts.append(
                Alert(
                    LABEL_DRIFT,
                    f"the label mix moved {distance:.3f} (total variation distance) from the "
                    f"baseline of model {report.drift.baseline_model_version} "
                    f"(alert at {settings.drift_alert_threshold})",
                )
            )
    monitor = report.model_monitor
    if monitor is not None and monitor.alert:
        count = monitor.violations_count
        alerts.append(
            Alert(
                MODEL_MONITOR_VIOLATIONS,
                "Model Monitor reported constraint violations"
                + ("" if count is None else f" ({count} in {monitor.report_uri})"),
            )
        )
    return alerts
