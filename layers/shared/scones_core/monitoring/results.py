"""Outcome counts for a window, from the results table's status index.

The workflow writes one item per image version with ``status`` and
``recorded_at``; the GSI (partition ``status``, sort ``recorded_at``) lets the
monitor count each status in a time range with ``Query`` and ``Select=COUNT``,
so it never scans the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scones_core.monitoring.timestamps import format_millis
from scones_core.records import (
    RECORDED_AT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    STATUS_INDEX_NAME,
    TERMINAL_STATUSES,
)

_ONE_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class ResultCounts:
    """How many images ended in each status during the window."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def rate(self, status: str) -> float | None:
        """The share of results with ``status``; ``None`` when there were none at all."""
        total = self.total
        return self.counts.get(status, 0) / total if total else None


def count_results(
    dynamodb: Any, *, table_name: str, start: datetime, end: datetime
) -> ResultCounts:
    """Count items per status with ``start <= recorded_at < end`` (a low-level client)."""
    low = format_millis(start)
    high = format_millis(end - _ONE_MILLISECOND)
    paginator = dynamodb.get_paginator("query")
    counts: dict[str, int] = {}
    for status in TERMINAL_STATUSES:
        total = 0
        for page in paginator.paginate(
            TableName=table_name,
            IndexName=STATUS_INDEX_NAME,
            Select="COUNT",
            KeyConditionExpression="#status = :status AND #recorded BETWEEN :low AND :high",
            ExpressionAttributeNames={
                "#status": STATUS_ATTRIBUTE,
                "#recorded": RECORDED_AT_ATTRIBUTE,
            },
            ExpressionAttributeValues={
                ":status": {"S": status.value},
                ":low": {"S": low},
                ":high": {"S": high},
            },
        ):
            total += int(page.get("Count", 0))
        counts[status.value] = total
    return ResultCounts(counts=counts)
