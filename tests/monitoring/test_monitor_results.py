"""The results table's windows: every record counted by exactly one window.

``recorded_at`` is Step Functions' ``$$.State.EnteredTime``, compared as a string. AWS
writes it with milliseconds, except that a time on a whole second has none at all
(``2026-11-25T12:59:59Z``, not ``...59.000Z``), and such a string sorts after every
``...59.xxxZ`` of the same second.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from scones_core.monitoring.results import count_results
from scones_core.monitoring.timestamps import format_step_functions, recorded_at_bounds
from scones_core.records import Status

from .conftest import BUCKET, TABLE, WINDOW_END, WINDOW_START, Aws

# Every way Step Functions writes a time near the bounds of [12:00, 13:00) and the next hour.
IN_WINDOW = (
    "2026-11-25T12:00:00Z",
    "2026-11-25T12:00:00.001Z",
    "2026-11-25T12:30:00Z",
    "2026-11-25T12:59:59Z",
    "2026-11-25T12:59:59.500Z",
    "2026-11-25T12:59:59.999Z",
)
NEXT_WINDOW = ("2026-11-25T13:00:00Z", "2026-11-25T13:00:00.000Z", "2026-11-25T13:59:59Z")
EARLIER = ("2026-11-25T11:59:59Z", "2026-11-25T11:59:59.999Z")


def _put(aws: Aws, index: int, status: str, recorded_at: str, **extra: Any) -> None:
    """An item as the workflow writes it, ``recorded_at`` verbatim."""
    item = {
        "pk": {"S": f"{BUCKET}/incoming/{index}.png#v1"},
        "status": {"S": status},
        "recorded_at": {"S": recorded_at},
        "label": {"S": "bicycle"},
    } | {name: {"S": value} for name, value in extra.items()}
    aws.dynamodb.put_item(TableName=TABLE, Item=item)


def test_a_record_on_a_whole_second_is_counted_by_the_window_it_falls_in(aws: Aws) -> None:
    times = IN_WINDOW + NEXT_WINDOW + EARLIER
    for index, recorded_at in enumerate(times):
        _put(aws, index, Status.ACCEPTED.value, recorded_at)
    # A reviewed record counts under the workflow's outcome in its window too.
    _put(aws, 99, Status.REVIEWED.value, "2026-11-25T12:59:59Z", classified_status="ACCEPTED")

    counts = {}
    for name, start in (("earlier", WINDOW_START - timedelta(hours=1)), ("window", WINDOW_START)):
        results, _ = count_results(
            aws.dynamodb, table_name=TABLE, start=start, end=start + timedelta(hours=1)
        )
        counts[name] = results
    following, _ = count_results(
        aws.dynamodb, table_name=TABLE, start=WINDOW_END, end=WINDOW_END + timedelta(hours=1)
    )

    assert counts["window"].counts[Status.ACCEPTED.value] == len(IN_WINDOW)
    assert counts["window"].reviewed_from == {"ACCEPTED": 1}
    assert counts["window"].outcome(Status.ACCEPTED.value) == len(IN_WINDOW) + 1
    assert following.counts[Status.ACCEPTED.value] == len(NEXT_WINDOW)
    assert counts["earlier"].counts[Status.ACCEPTED.value] == len(EARLIER)


@pytest.mark.parametrize(
    ("end", "high"),
    [
        # A window ending on a whole second: its last second written without milliseconds.
        (WINDOW_END, "2026-11-25T12:59:59Z"),
        # A run by hand ends anywhere: the last millisecond before it.
        (WINDOW_END + timedelta(microseconds=500_700), "2026-11-25T13:00:00.500Z"),
        (WINDOW_END + timedelta(milliseconds=500), "2026-11-25T13:00:00.499Z"),
        # `scones results --until` at the last moment Python has: no ceiling past it.
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
    ],
)
def test_the_bounds_hold_every_form_of_a_time_in_the_window(end: Any, high: str) -> None:
    low, upper = recorded_at_bounds(WINDOW_START, end)
    assert (low, upper) == ("2026-11-25T12:00:00.000Z", high)


def test_windows_meeting_within_a_second_count_each_record_once() -> None:
    """Consecutive runs by hand share a bound: each millisecond, and the whole-second form
    of the bound's second (which sorts after its milliseconds), is counted by one of them."""
    bound = WINDOW_END + timedelta(microseconds=500_700)
    first = recorded_at_bounds(WINDOW_START, bound)
    second = recorded_at_bounds(bound, bound + timedelta(hours=1))
    assert first[1] == "2026-11-25T13:00:00.500Z"
    assert second[0] == "2026-11-25T13:00:00.501Z"
    for recorded_at in (
        "2026-11-25T13:00:00Z",
        "2026-11-25T13:00:00.500Z",
        "2026-11-25T13:00:00.501Z",
    ):
        windows = [low <= recorded_at <= high for low, high in (first, second)]
        assert windows.count(True) == 1, recorded_at


def test_every_time_as_step_functions_writes_it_falls_in_the_window_holding_it() -> None:
    """The offline stack writes ``recorded_at`` with ``format_step_functions``; across the
    bounds, each millisecond's text is inside the bounds exactly when its time is."""
    assert format_step_functions(WINDOW_END) == "2026-11-25T13:00:00Z"
    assert format_step_functions(WINDOW_END + timedelta(milliseconds=7)) == (
        "2026-11-25T13:00:00.007Z"
    )
    windows = [(WINDOW_START, WINDOW_END), (WINDOW_END, WINDOW_END + timedelta(hours=1))]
    bounds = [recorded_at_bounds(start, end) for start, end in windows]
    for edge in (WINDOW_START, WINDOW_END):
        for step in range(-1500, 1500):
            moment = edge + timedelta(milliseconds=step)
            text = format_step_functions(moment)
            for (start, end), (low, high) in zip(windows, bounds, strict=True):
                assert (low <= text <= high) == (start <= moment < end), text
