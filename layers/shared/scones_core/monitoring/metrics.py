"""The CloudWatch metrics one window becomes.

Kept apart from Powertools so the numbers are plain data a test can compare;
the handler hands each point to ``Metrics.add_metric``. Shares and rates are
fractions in ``[0, 1]`` (unit ``None``), the same scale as the template's
``LowConfidenceAlertShare`` and ``DriftAlertThreshold``, so an alarm uses the
parameter itself as its threshold. Metrics that need requests (confidence,
mix) are left out of empty windows rather than published as zeros that would
look like perfect or terrible health; the two that alarms compare with a
threshold (``LowConfidenceShare``, ``LabelDrift``) are left out of windows with
fewer than ``MonitorMinRequests`` requests too, as the monitor's own alerts are,
so two requests in a quiet hour cannot page anyone; ``LabelDrift`` is also left out
of a window whose mix is within chance of the baseline's (``DriftAlertSignificance``,
see ``drift``), so ``LabelDriftAlarm`` fires on the windows the ``LABEL_DRIFT`` alert
does and no others. A value that is not finite is never published (``finite``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import quote

from scones_core.monitoring.window_report import WindowReport
from scones_core.records import Status

logger = logging.getLogger(__name__)

COUNT = "Count"
NO_UNIT = "None"
# CloudWatch drops an embedded-metric data point stamped more than 14 days ago (an hour
# of margin for the clocks and the run itself) or more than 2 hours ahead.
OLDEST_STAMP = timedelta(days=14) - timedelta(hours=1)


def metric_time(scheduled: datetime, now: datetime) -> datetime:
    """When a run's data points are stamped: at the time it was scheduled for, so a late
    run (a retry, or ``scones redrive`` of a failed run days later) counts in the period
    it was due in, not the day it ran, while an on-time run lands in the alarms' current
    period whatever ``MonitorSettleMinutes`` is; ``now`` for a time CloudWatch would not
    take (older than 14 days, or ahead of now)."""
    return scheduled if timedelta(0) <= now - scheduled <= OLDEST_STAMP else now


@dataclass(frozen=True)
class MetricPoint:
    name: str
    unit: str
    value: float


@dataclass(frozen=True)
class LabelMetricPoint:
    """A metric with an extra ``Label`` dimension."""

    name: str
    label: str
    unit: str
    value: float

    @property
    def dimension(self) -> str:
        """The label as a ``Label`` dimension value: CloudWatch takes only ASCII there, at
        most 1,024 characters, and drops the metric otherwise. A label that is not ASCII
        ("vélo") is percent-encoded as UTF-8 ("v%C3%A9lo"), and so is a "%" (as "%25"), so
        no two labels share a value; any other ASCII label is itself."""
        value = ""
        for character in self.label:  # whole characters only, however long the label
            encoded = quote(character, safe=_PRINTABLE_ASCII)
            if len(value) + len(encoded) > MAX_DIMENSION_VALUE:
                break
            value += encoded
        return value


MAX_DIMENSION_VALUE = 1024
_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


Point = TypeVar("Point", MetricPoint, LabelMetricPoint)


def finite(points: list[Point]) -> list[Point]:
    """``points`` without the NaN or infinite values, each logged. JSON (RFC 8259) has no
    such numbers: one would make the whole embedded-metric document unreadable, and
    CloudWatch would take none of its metrics."""
    kept = []
    for point in points:
        if math.isfinite(point.value):
            kept.append(point)
        else:
            label = {"label": point.label} if isinstance(point, LabelMetricPoint) else {}
            logger.error(
                "metric value is not finite; not published",
                extra={"metric": point.name, "value": str(point.value), **label},
            )
    return kept


def window_metrics(
    report: WindowReport, *, alert_count: int, min_requests: int, drift_significance: float
) -> list[MetricPoint]:
    """The window's numbers; ``RetrainingStarted`` follows once retraining was tried."""
    enough = report.request_count >= min_requests
    points = [
        MetricPoint("CapturedRequests", COUNT, report.request_count),
        MetricPoint("CaptureFilesRead", COUNT, report.capture_files),
        MetricPoint("MalformedCaptureLines", COUNT, report.malformed_lines),
        MetricPoint("DuplicateCaptureRecords", COUNT, report.duplicate_records),
        MetricPoint("ResultsRecorded", COUNT, report.results.total),
        MetricPoint("QualityAlerts", COUNT, alert_count),
    ]
    confidence = report.confidence
    if confidence is not None:
        points += [
            MetricPoint("MeanConfidence", NO_UNIT, confidence.mean),
            MetricPoint("ConfidenceP10", NO_UNIT, confidence.p10),
            MetricPoint("ConfidenceP50", NO_UNIT, confidence.p50),
            MetricPoint("ConfidenceP90", NO_UNIT, confidence.p90),
        ]
        if enough:
            points.append(
                MetricPoint("LowConfidenceShare", NO_UNIT, confidence.low_confidence_share)
            )
    if report.drift is not None and enough:
        if report.drift.p_value < drift_significance:
            points.append(MetricPoint("LabelDrift", NO_UNIT, report.drift.label_distance))
        if report.drift.mean_confidence_shift is not None:
            points.append(
                MetricPoint("MeanConfidenceShift", NO_UNIT, report.drift.mean_confidence_shift)
            )
    rates = (
        ("RejectedRate", report.results.rate(Status.REJECTED)),
        ("FailedRate", report.results.rate(Status.FAILED)),
        ("NeedsReviewRate", report.results.review_rate()),
    )
    points += [MetricPoint(name, NO_UNIT, rate) for name, rate in rates if rate is not None]
    points += review_metrics(report)
    monitor = report.model_monitor
    if monitor is not None:
        # Zeros are published too, so the fault alarms see "fine" rather than no data.
        points += [
            MetricPoint("ModelMonitorFailedExecutions", COUNT, len(monitor.failed_executions)),
            # Idle hours: not a fault, so counted apart (and unalarmed).
            MetricPoint("ModelMonitorNoDataExecutions", COUNT, len(monitor.no_data_executions)),
            MetricPoint("ModelMonitorUnreadableReports", COUNT, len(monitor.unreadable_reports)),
        ]
        if monitor.violations_count is not None:
            points.append(MetricPoint("ModelMonitorViolations", COUNT, monitor.violations_count))
    return finite(points)


def review_metrics(report: WindowReport) -> list[MetricPoint]:
    """The reviews made in the window; accuracies only when something was reviewed.

    ``AcceptedAccuracy`` is measured on the sampled ACCEPTED images (``review_sampled``):
    what the workflow accepts without a person, checked by one. Its alarm divides the
    day's sums of ``AcceptedCorrectCount`` and ``AcceptedReviewedCount``: an average of
    the windows' ratios would let one window's single wrong answer outweigh hundreds.
    """
    reviews = report.reviews
    points = [
        MetricPoint("ReviewedCount", COUNT, reviews.reviewed),
        MetricPoint("AcceptedReviewedCount", COUNT, reviews.accepted_reviewed),
        MetricPoint("AcceptedCorrectCount", COUNT, reviews.accepted_correct),
    ]
    if reviews.accuracy is not None:
        points.append(MetricPoint("ReviewedAccuracy", NO_UNIT, reviews.accuracy))
    if reviews.accepted_accuracy is not None:
        points.append(MetricPoint("AcceptedAccuracy", NO_UNIT, reviews.accepted_accuracy))
    return points


def retraining_metric(started: bool) -> MetricPoint:
    """1 when this run started retraining, else 0; an alarm can watch it directly."""
    return MetricPoint("RetrainingStarted", COUNT, 1 if started else 0)


def label_metrics(report: WindowReport) -> list[LabelMetricPoint]:
    """Each label's share of the window's requests; none for an empty window."""
    return finite(
        [
            LabelMetricPoint("LabelShare", label, NO_UNIT, share)
            for label, share in report.label_mix.items()
        ]
    )
