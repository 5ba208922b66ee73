"""A label mix is drifted only when it is far from the baseline's and beyond chance.

The false-alert rate is computed exactly, not sampled: every window of ``n`` requests drawn
from the shipped baseline's own mix, weighted by its binomial probability, run through the
real window report and alert rules at the template's defaults. A distance alone alerted on
about 7 % of 20-request windows of unchanged traffic: most days at 20 requests an hour, and
each alert starts retraining.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from scones_core.monitoring.capture import CaptureBatch, CaptureRecord
from scones_core.monitoring.drift import Baseline, chi_square_p_value
from scones_core.monitoring.metrics import window_metrics
from scones_core.monitoring.results import ResultCounts
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.window_report import (
    LABEL_DRIFT,
    build_window_report,
    evaluate_alerts,
)

from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import parameter_defaults
from tests.monitoring.conftest import WINDOW_END, WINDOW_START, monitor_env

DEFAULTS = parameter_defaults()
SETTINGS = MonitorSettings.from_env(
    monitor_env(
        MONITOR_MIN_REQUESTS=DEFAULTS["MonitorMinRequests"],
        DRIFT_ALERT_THRESHOLD=DEFAULTS["DriftAlertThreshold"],
        DRIFT_ALERT_SIGNIFICANCE=DEFAULTS["DriftAlertSignificance"],
    )
)
BASELINE = Baseline.from_json(json.loads((SHIPPED_MODEL_DIR / "baseline.json").read_text()))
BICYCLE = BASELINE.label_mix["bicycle"]


def window(bicycles: int, requests: int) -> tuple[bool, bool]:
    """(LABEL_DRIFT raised, LabelDriftAlarm breached by what is published) for a window of
    these predictions."""
    records = [
        CaptureRecord(
            WINDOW_START + timedelta(seconds=i),
            (0.99, 0.01) if i < bicycles else (0.01, 0.99),
            "bicycle" if i < bicycles else "motorcycle",
            0.99,
            event_id=f"e{i}",
        )
        for i in range(requests)
    ]
    report = build_window_report(
        SETTINGS,
        start=WINDOW_START,
        end=WINDOW_END,
        capture=CaptureBatch(records=records),
        results=ResultCounts(counts={}),
        baseline=BASELINE,
        model_monitor=None,
    )
    alerted = any(a.code == LABEL_DRIFT for a in evaluate_alerts(report, SETTINGS))
    published = {
        p.name: p.value
        for p in window_metrics(
            report,
            alert_count=0,
            min_requests=SETTINGS.min_requests,
            drift_significance=SETTINGS.drift_alert_significance,
        )
    }
    # The alarm: LabelDrift GreaterThanThreshold DriftAlertThreshold, missing not breaching.
    breached = published.get("LabelDrift", 0.0) > SETTINGS.drift_alert_threshold
    return alerted, breached


def chance_of_alert(requests: int, bicycle_share: float) -> float:
    total = 0.0
    for bicycles in range(requests + 1):
        alerted, breached = window(bicycles, requests)
        assert alerted == breached, (bicycles, requests)  # the alarm fires where it alerts
        if alerted:
            total += (
                math.comb(requests, bicycles)
                * bicycle_share**bicycles
                * (1 - bicycle_share) ** (requests - bicycles)
            )
    return total


@pytest.mark.parametrize("requests", [SETTINGS.min_requests, 30, 50, 100])
def test_unchanged_traffic_alerts_at_most_at_the_configured_rate(requests: int) -> None:
    assert chance_of_alert(requests, BICYCLE) <= SETTINGS.drift_alert_significance


def test_a_real_shift_still_alerts_once_there_are_enough_requests() -> None:
    # 80 % bicycles against the baseline's 48.5 %: a distance of 0.315.
    assert chance_of_alert(50, 0.8) > 0.9
    assert chance_of_alert(100, 0.8) > 0.99


def test_a_window_far_from_the_baseline_by_chance_alone_does_not_alert() -> None:
    # 14 of 20: 0.215 from the baseline, past the distance threshold, and within chance.
    assert SETTINGS.drift_alert_threshold < 14 / 20 - BICYCLE
    assert window(14, 20) == (False, False)
    assert window(20, 20) == (True, True)


def test_the_p_value_is_pearsons_chi_square() -> None:
    # One degree of freedom: exact through erfc; three: the 0.001 critical value 16.27.
    counts = {"a": 14, "b": 6}
    statistic = (14 - 20 * BICYCLE) ** 2 / (20 * BICYCLE) + (6 - 20 * (1 - BICYCLE)) ** 2 / (
        20 * (1 - BICYCLE)
    )
    expected = {"a": BICYCLE, "b": 1 - BICYCLE}
    assert chi_square_p_value(counts, expected, ["a", "b"]) == pytest.approx(
        math.erfc(math.sqrt(statistic / 2))
    )
    uniform = dict.fromkeys("abcd", 0.25)
    # Three degrees of freedom, 100 requests: statistics of 16.56 and 16.08, either side
    # of the 0.001 critical value 16.27; the survival function's closed form for 3 is
    # erfc(sqrt(x/2)) + sqrt(2x/pi) exp(-x/2).
    for counts, statistic in (((41, 26, 19, 14), 16.56), ((41, 25, 20, 14), 16.08)):
        exact = math.erfc(math.sqrt(statistic / 2)) + math.sqrt(2 * statistic / math.pi) * math.exp(
            -statistic / 2
        )
        got = chi_square_p_value(dict(zip("abcd", counts, strict=True)), uniform, "abcd")
        assert got == pytest.approx(exact, rel=1e-9)
        assert (got < 0.001) == (statistic > 16.27)
    # Even degrees of freedom: two, whose survival function is exp(-x/2).
    thirds = dict.fromkeys("abc", 1 / 3)
    got = chi_square_p_value({"a": 20, "b": 5, "c": 5}, thirds, "abc")
    assert got == pytest.approx(math.exp(-15 / 2), rel=1e-9)
    # A label the baseline never saw, seen now, is beyond chance; an empty window is not.
    assert chi_square_p_value({"a": 1, "b": 9}, {"a": 0.0, "b": 1.0}, "ab") == 0.0
    assert chi_square_p_value({"a": 0, "b": 0}, expected, "ab") == 1.0
