"""Waiting for records: as long as they keep coming, and no longer once they stop."""

from __future__ import annotations

from typing import Any

import pytest

from scones.offline.client import (
    POLL_RECORDS,
    StackClient,
    StackClientError,
    StackEndpoints,
    Upload,
    record_id,
)


class Draining(StackClient):
    """A stack whose table gains ``per_poll`` of the awaited records at each poll, up to
    ``stall_at`` (the rest never come)."""

    def __init__(self, uploads: list[Upload], per_poll: int, stall_at: int) -> None:
        super().__init__(StackEndpoints(*(["unused"] * 8)))
        self.uploads, self.per_poll, self.stall_at = uploads, per_poll, stall_at
        self.polls = 0

    def _records_by_id(self, ids: Any) -> dict[str, dict[str, Any]]:
        self.polls += 1
        ready = self.uploads[: min(self.polls * self.per_poll, self.stall_at)]
        return {record_id(u): {"status": "ACCEPTED"} for u in ready if record_id(u) in ids}


def uploads(count: int) -> list[Upload]:
    return [Upload("b", f"incoming/{i}.png", f"e{i}", "s", f"v{i}") for i in range(count)]


def test_a_backlog_that_keeps_draining_is_waited_for_past_the_timeout() -> None:
    """Forty polls at 10 ms each outlast a 50 ms timeout: a burst of thousands takes as long
    as it takes, while each poll brings new records."""
    items = uploads(40)
    stack = Draining(items, per_poll=1, stall_at=40)
    found = stack.wait_for_records(items, timeout=0.05, poll_seconds=0.01)
    assert len(found) == 40 and stack.polls == 40


def test_a_backlog_that_stops_draining_is_named_once_the_timeout_passes() -> None:
    items = uploads(10)
    stack = Draining(items, per_poll=2, stall_at=6)
    with pytest.raises(StackClientError, match=r"^4 upload\(s\) have no record, and no record"):
        stack.wait_for_records(items, timeout=0.05, poll_seconds=0.01)


def test_a_stall_with_nothing_in_flight_ends_without_waiting_out_the_timeout() -> None:
    """Two polls in a row that found nothing in flight and no new record: what is missing
    can no longer come (a lost S3 event), however long the timeout."""
    items = uploads(10)
    stack = Draining(items, per_poll=2, stall_at=6)
    asked: list[int] = []

    def in_flight() -> bool:
        asked.append(stack.polls)
        return False

    with pytest.raises(
        StackClientError,
        match=r"^4 upload\(s\) have no record, and nothing is in flight that could record them",
    ):
        stack.wait_for_records(items, timeout=600, poll_seconds=0.01, in_flight=in_flight)
    # Asked before each read: three reads brought records, then two found none.
    assert asked == [0, 1, 2, 3, 4] and stack.polls == 5


def test_records_that_keep_coming_are_all_waited_for_even_with_nothing_in_flight() -> None:
    """Each answer is read before the records: a record written after the stack was seen
    idle is still found by that poll's read, and every new one starts the count again."""
    items = uploads(8)
    stack = Draining(items, per_poll=1, stall_at=8)
    found = stack.wait_for_records(items, timeout=600, poll_seconds=0.01, in_flight=lambda: False)
    assert len(found) == 8 and stack.polls == 8


def test_something_in_flight_keeps_a_stalled_wait_going_until_the_timeout() -> None:
    items = uploads(10)
    stack = Draining(items, per_poll=2, stall_at=6)
    with pytest.raises(StackClientError, match=r"and no record came in the last 0\.05 s"):
        stack.wait_for_records(items, timeout=0.05, poll_seconds=0.01, in_flight=lambda: True)
    assert stack.polls > 5


class Ready(StackClient):
    """A table that holds the records of ``ready`` from the start and never the others;
    it notes how many ids each read asks for."""

    def __init__(self, ready: list[Upload]) -> None:
        super().__init__(StackEndpoints(*(["unused"] * 8)))
        self.ready = {record_id(u) for u in ready}
        self.reads: list[int] = []

    def _records_by_id(self, ids: Any) -> dict[str, dict[str, Any]]:
        self.reads.append(len(ids))
        return {i: {"status": "ACCEPTED"} for i in ids if i in self.ready}


def test_a_poll_reads_a_bounded_window_and_a_sweep_reads_every_awaited_record() -> None:
    """Reading every awaited record at each poll cost the stack's process a quarter of a
    second at 5,000 uploads; a poll's cost must not grow with the burst."""
    items = uploads(2 * POLL_RECORDS + 100)
    stack = Ready(items)

    assert len(stack.wait_for_records(items, timeout=600, poll_seconds=0.0)) == len(items)
    assert stack.reads == [POLL_RECORDS, POLL_RECORDS, 100]


def test_a_stall_across_windows_ends_after_two_idle_sweeps() -> None:
    """Idle is judged per sweep: a window that finds nothing new says nothing of the
    windows not read yet."""
    items = uploads(2 * POLL_RECORDS + 100)
    stack = Ready(items[: 2 * POLL_RECORDS])  # the last 100 never come
    asked: list[int] = []

    def in_flight() -> bool:
        asked.append(len(stack.reads))
        return False

    with pytest.raises(StackClientError, match=r"^100 upload\(s\) have no record, and nothing"):
        stack.wait_for_records(items, timeout=600, poll_seconds=0.0, in_flight=in_flight)
    # Sweep 1 reads three windows (and finds 600); sweeps 2 and 3 read the 100 left, idle.
    assert stack.reads == [POLL_RECORDS, POLL_RECORDS, 100, 100, 100]
    assert asked == [0, 3, 4]


def test_a_backlog_already_recorded_is_read_window_after_window_without_pausing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A poll pauses only when its window still lacks records: 3,000 uploads recorded by
    the time the wait began took ten pauses of 0.2 s (two seconds doing nothing), and the
    pause count grew with the burst."""
    from scones.offline import client

    pauses: list[float] = []
    monkeypatch.setattr(client.time, "sleep", pauses.append)
    items = uploads(10 * POLL_RECORDS)
    stack = Ready(items)
    assert len(stack.wait_for_records(items, timeout=600, poll_seconds=0.2)) == len(items)
    assert stack.reads == [POLL_RECORDS] * 10 and pauses == []

    # A window that lacks a record is behind the workflow: the wait pauses after it.
    items = uploads(2 * POLL_RECORDS)
    stack = Draining(items, per_poll=POLL_RECORDS // 2, stall_at=len(items))
    assert len(stack.wait_for_records(items, timeout=600, poll_seconds=0.2)) == len(items)
    assert pauses and set(pauses) == {0.2}
