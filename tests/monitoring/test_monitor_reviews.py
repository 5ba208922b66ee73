"""Reviewed records: outcome counts stay right, and accuracy is measured from the answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from scones_core.monitoring.metrics import window_metrics
from scones_core.monitoring.service import MonitorClients, measure_window
from scones_core.monitoring.settings import MonitorSettings
from scones_core.records import TERMINAL_STATUSES, Status

from tests.monitoring.conftest import WINDOW_END, WINDOW_START, Aws, monitor_env

# The deployed setting: threshold metrics need this many requests in a window.
MIN_REQUESTS = MonitorSettings.from_env(monitor_env()).min_requests
SIGNIFICANCE = MonitorSettings.from_env(monitor_env()).drift_alert_significance


def measure(aws: Aws, **overrides: str):  # type: ignore[no-untyped-def]
    settings = MonitorSettings.from_env(monitor_env(**overrides))
    report, _ = measure_window(settings, MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    return report


def test_reviewed_is_a_terminal_status_the_monitor_counts() -> None:
    assert Status.REVIEWED in TERMINAL_STATUSES


def test_reviewing_changes_no_outcome_rate_of_the_window(aws: Aws) -> None:
    minute = timedelta(minutes=1)
    for i in range(6):
        aws.put_result("ACCEPTED", WINDOW_START + i * minute, i)
    for i in range(6, 10):
        aws.put_result("NEEDS_REVIEW", WINDOW_START + i * minute, i)
    aws.put_result("REJECTED", WINDOW_START + 10 * minute, 10)
    before = measure(aws)
    before_points = {
        p.name: p.value
        for p in window_metrics(
            before, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }

    # People review two of the NEEDS_REVIEW records and one sampled ACCEPTED one,
    # during the window and after it: the records change status, the outcomes do not.
    table_rows = [
        (7, "NEEDS_REVIEW", "bicycle", WINDOW_START + 30 * minute),
        (8, "NEEDS_REVIEW", "motorcycle", WINDOW_END + 5 * minute),
        (2, "ACCEPTED", "bicycle", WINDOW_START + 40 * minute),
    ]
    for index, prior, answer, reviewed_at in table_rows:
        aws.put_review(
            index,
            recorded_at=WINDOW_START + index * minute,
            reviewed_at=reviewed_at,
            classified_status=prior,
            answer=answer,
        )
    after = measure(aws)
    after_points = {
        p.name: p.value
        for p in window_metrics(
            after, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }

    assert after.results.counts == {
        "ACCEPTED": 5,
        "NEEDS_REVIEW": 2,
        "REJECTED": 1,
        "FAILED": 0,
        "REVIEWED": 3,
    }
    assert after.results.reviewed_from == {"NEEDS_REVIEW": 2, "ACCEPTED": 1}
    assert after.results.total == before.results.total == 11
    for name in ("ResultsRecorded", "NeedsReviewRate", "RejectedRate", "FailedRate"):
        assert after_points[name] == pytest.approx(before_points[name]), name
    # Of the 10 images the model classified, not of the 11 uploads: a rejected upload
    # never reached it.
    assert after_points["NeedsReviewRate"] == pytest.approx(4 / 10)
    assert after_points["RejectedRate"] == pytest.approx(1 / 11)
    # Only the two answers given inside the window are tallied.
    assert after.reviews.reviewed == 2
    assert after.reviews.accepted_reviewed == 1
    assert after.to_json()["reviewed_from"] == {"NEEDS_REVIEW": 2, "ACCEPTED": 1}


def test_accuracy_counts_each_answer_once_in_the_window_it_was_given(aws: Aws) -> None:
    day = timedelta(days=1)
    lookback = int(monitor_env()["REVIEW_LOOKBACK_DAYS"])
    rows = [
        # (recorded_at, reviewed_at, classified status, answer); the model said bicycle.
        (WINDOW_START - 2 * day, WINDOW_START + timedelta(minutes=1), "NEEDS_REVIEW", "bicycle"),
        (WINDOW_START - 3 * day, WINDOW_START + timedelta(minutes=2), "NEEDS_REVIEW", "motorcycle"),
        (WINDOW_START - day, WINDOW_START + timedelta(minutes=3), "NEEDS_REVIEW", "neither"),
        (WINDOW_START - day, WINDOW_START + timedelta(minutes=4), "ACCEPTED", "bicycle"),
        (WINDOW_START - day, WINDOW_START + timedelta(minutes=5), "ACCEPTED", "bicycle"),
        (WINDOW_START - day, WINDOW_START + timedelta(minutes=6), "ACCEPTED", "motorcycle"),
        (WINDOW_START, WINDOW_START + timedelta(minutes=7), "ACCEPTED", "bicycle"),
        # Not in this window's tally: answered before it, after it, or classified
        # longer ago than the lookback.
        (WINDOW_START - day, WINDOW_START - timedelta(minutes=1), "NEEDS_REVIEW", "motorcycle"),
        (WINDOW_START, WINDOW_END, "ACCEPTED", "motorcycle"),
        (WINDOW_START - (lookback + 1) * day, WINDOW_START, "ACCEPTED", "motorcycle"),
    ]
    for index, (recorded, reviewed, prior, answer) in enumerate(rows):
        aws.put_review(
            index,
            recorded_at=recorded,
            reviewed_at=reviewed,
            classified_status=prior,
            answer=answer,
        )
    report = measure(aws)
    reviews = report.reviews
    assert (reviews.reviewed, reviews.correct, reviews.neither) == (7, 4, 1)
    assert (reviews.accepted_reviewed, reviews.accepted_correct) == (4, 3)
    points = {
        p.name: (p.unit, p.value)
        for p in window_metrics(
            report, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }
    assert points["ReviewedCount"] == ("Count", 7)
    assert points["AcceptedReviewedCount"] == ("Count", 4)
    assert points["ReviewedAccuracy"] == ("None", pytest.approx(4 / 7))
    assert points["AcceptedAccuracy"] == ("None", pytest.approx(3 / 4))
    # Two records were classified in the window; both are reviewed (one after it).
    assert report.results.counts["REVIEWED"] == 2
    assert report.to_json()["reviews"]["accepted_accuracy"] == pytest.approx(0.75)

    # A longer lookback reaches the old record too.
    longer = measure(aws, REVIEW_LOOKBACK_DAYS=str(lookback + 2))
    assert longer.reviews.accepted_reviewed == 5


def test_no_accuracy_without_answers(aws: Aws) -> None:
    aws.put_result("NEEDS_REVIEW", WINDOW_START, 1)
    names = {
        p.name
        for p in window_metrics(
            measure(aws), alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }
    assert {"ReviewedCount", "AcceptedReviewedCount"} <= names
    assert not names & {"ReviewedAccuracy", "AcceptedAccuracy"}


def test_lookback_is_validated() -> None:
    from scones_core.errors import SettingsError

    for bad in ("0", "x", "400"):
        with pytest.raises(SettingsError, match="REVIEW_LOOKBACK_DAYS"):
            MonitorSettings.from_env(monitor_env(REVIEW_LOOKBACK_DAYS=bad))
