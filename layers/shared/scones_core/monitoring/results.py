"""Outcome counts and review accuracy for a window, from the results table's status index.

The workflow writes one item per image version with ``status`` and
``recorded_at``; the GSI (partition ``status``, sort ``recorded_at``) lets the
monitor count each status in a time range with ``Query`` and ``Select=COUNT``,
so it never scans the table.

A review (``scones_core.review``) moves a NEEDS_REVIEW record, or a sampled
ACCEPTED one, to ``REVIEWED`` and keeps the workflow's status in
``classified_status``. Two numbers come from the ``REVIEWED`` partition:

- the window's outcome counts: a record recorded in the window and reviewed since
  still counts as the workflow's outcome (``review_rate()`` does not drop as
  people work through the queue), and as ``REVIEWED`` in ``counts``;
- the review tally: the reviews *made* in the window (``reviewed_at``), so each
  answer is counted once, whenever the image was classified. The index is sorted
  by ``recorded_at``, so the query reads the reviewed records classified in the
  last ``review_lookback`` and filters on ``reviewed_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scones_core.monitoring.timestamps import format_millis, parse_timestamp, recorded_at_bounds
from scones_core.record_queries import status_index_pages
from scones_core.records import (
    CLASSIFIED_STATUS_ATTRIBUTE,
    LABEL_ATTRIBUTE,
    NEITHER,
    RECORDED_AT_ATTRIBUTE,
    REVIEW_LABEL_ATTRIBUTE,
    REVIEWED_AT_ATTRIBUTE,
    TERMINAL_STATUSES,
    Status,
    record_from_item,
)


@dataclass(frozen=True)
class ResultCounts:
    """How many images ended in each status during the window (by ``recorded_at``).

    ``counts`` holds each record's current status (``REVIEWED`` included);
    ``reviewed_from`` splits the ``REVIEWED`` ones by the status the workflow gave them.
    """

    counts: dict[str, int]
    reviewed_from: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def outcome(self, status: str) -> int:
        """How many the workflow recorded with ``status``, reviewed since or not."""
        return self.counts.get(status, 0) + self.reviewed_from.get(status, 0)

    def rate(self, status: str) -> float | None:
        """The share of results the workflow gave ``status``; ``None`` when there were none."""
        total = self.total
        return self.outcome(status) / total if total else None

    def review_rate(self) -> float | None:
        """The share of the images the model classified that it sent to review: of
        ACCEPTED and NEEDS_REVIEW only, so rejected uploads (never shown to the model) and
        failures do not dilute it; ``None`` when the model classified none."""
        classified = self.outcome(Status.ACCEPTED) + self.outcome(Status.NEEDS_REVIEW)
        return self.outcome(Status.NEEDS_REVIEW) / classified if classified else None


@dataclass(frozen=True)
class ReviewTally:
    """The answers people gave during the window (by ``reviewed_at``).

    An answer is correct when it names the model's label; ``neither`` (the image
    shows no bicycle and no motorcycle) is counted as a wrong prediction.
    ``accepted_*`` are the reviews of sampled ACCEPTED records: the accuracy of what
    the workflow accepts, measured rather than assumed.
    """

    reviewed: int = 0
    correct: int = 0
    accepted_reviewed: int = 0
    accepted_correct: int = 0
    neither: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.reviewed if self.reviewed else None

    @property
    def accepted_accuracy(self) -> float | None:
        return self.accepted_correct / self.accepted_reviewed if self.accepted_reviewed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "reviewed": self.reviewed,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "accepted_reviewed": self.accepted_reviewed,
            "accepted_correct": self.accepted_correct,
            "accepted_accuracy": self.accepted_accuracy,
            "neither": self.neither,
        }


def count_results(
    dynamodb: Any,
    *,
    table_name: str,
    start: datetime,
    end: datetime,
    review_lookback: timedelta = timedelta(0),
) -> tuple[ResultCounts, ReviewTally]:
    """Count items per status with ``start <= recorded_at < end`` (a low-level client),
    and tally the reviews made in ``[start, end)`` of records recorded at most
    ``review_lookback`` before ``start``."""
    low, high = recorded_at_bounds(start, end)
    counts: dict[str, int] = {}
    for status in TERMINAL_STATUSES:
        if status is Status.REVIEWED:
            continue
        total = 0
        for page in status_index_pages(
            dynamodb, table_name, status, at_least=low, at_most=high, Select="COUNT"
        ):
            total += int(page.get("Count", 0))
        counts[status.value] = total
    reviewed_from: dict[str, int] = {}
    in_window = 0
    tally = _Tally()
    pages = status_index_pages(
        dynamodb,
        table_name,
        Status.REVIEWED,
        at_least=format_millis(start - review_lookback),
        at_most=high,
        ProjectionExpression="#recorded, #prior, #reviewed, #answer, #label",
        names={
            "#prior": CLASSIFIED_STATUS_ATTRIBUTE,
            "#reviewed": REVIEWED_AT_ATTRIBUTE,
            "#answer": REVIEW_LABEL_ATTRIBUTE,
            "#label": LABEL_ATTRIBUTE,
        },
    )
    for page in pages:
        for raw in page.get("Items", []):
            record = record_from_item(raw)
            prior = str(record.get(CLASSIFIED_STATUS_ATTRIBUTE, ""))
            if low <= str(record.get(RECORDED_AT_ATTRIBUTE, "")) <= high:
                in_window += 1
                reviewed_from[prior] = reviewed_from.get(prior, 0) + 1
            if _within(record.get(REVIEWED_AT_ATTRIBUTE), start, end):
                tally.add(record, prior)
    counts[Status.REVIEWED.value] = in_window
    return ResultCounts(counts=counts, reviewed_from=reviewed_from), tally.freeze()


def _within(value: Any, start: datetime, end: datetime) -> bool:
    try:
        moment = parse_timestamp(value)
    except ValueError:
        return False
    return start <= moment < end


@dataclass
class _Tally:
    reviewed: int = 0
    correct: int = 0
    accepted_reviewed: int = 0
    accepted_correct: int = 0
    neither: int = 0

    def add(self, record: dict[str, Any], prior: str) -> None:
        answer = record.get(REVIEW_LABEL_ATTRIBUTE)
        right = answer is not None and answer == record.get(LABEL_ATTRIBUTE)
        self.reviewed += 1
        self.correct += right
        if prior == Status.ACCEPTED:
            self.accepted_reviewed += 1
            self.accepted_correct += right
        self.neither += answer == NEITHER

    def freeze(self) -> ReviewTally:
        return ReviewTally(
            reviewed=self.reviewed,
            correct=self.correct,
            accepted_reviewed=self.accepted_reviewed,
            accepted_correct=self.accepted_correct,
            neither=self.neither,
        )
