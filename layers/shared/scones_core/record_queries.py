"""Records of one status, read through the results table's status index (never a scan).

One home for the query that the redrive (FAILED records) and ``scones results`` (any
status) both make: a scan's cost grows with the whole table, the index's only with what
is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from scones_core.monitoring.timestamps import (
    parse_timestamp,
    recorded_at_before,
    recorded_at_from,
)
from scones_core.records import (
    KEY_ATTRIBUTE,
    RECORDED_AT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    STATUS_INDEX_NAME,
    record_from_item,
)


def records_with_status(
    dynamodb: Any,
    table_name: str,
    status: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    prefix: str = "",
    attributes: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    """Records with ``status`` and ``since <= recorded_at < until`` whose key starts with
    ``prefix``, in the index's order (``recorded_at`` as a string), as plain values
    (``dynamodb`` is a low-level client); with ``attributes``, only those attributes of
    each (less read, less held), ``recorded_at`` among them when a bound is given.

    ``recorded_at`` is compared as a string, and Step Functions writes a whole second
    without its fraction (``12:00:00Z`` sorts after ``12:00:00.500Z``): the query reads a
    second more on each side and each record's own time decides, so a bound within a
    second neither drops nor takes a record of that second wrongly.

    Records are yielded as they are stored, also those this stack did not write: each
    reader checks them with ``records.unreadable`` and names the ones it cannot use."""
    names = {"#status": STATUS_ATTRIBUTE}
    values: dict[str, dict[str, str]] = {":status": {"S": status}}
    key_condition = "#status = :status"
    if since or until:
        names["#recorded"] = RECORDED_AT_ATTRIBUTE
        if since:
            values[":since"] = {"S": recorded_at_from(_widened(since, -_MARGIN))}
        if until:
            values[":until"] = {"S": recorded_at_before(_widened(until, _MARGIN))}
        if since and until:
            key_condition += " AND #recorded BETWEEN :since AND :until"
        elif since:
            key_condition += " AND #recorded >= :since"
        else:
            key_condition += " AND #recorded <= :until"
    request: dict[str, Any] = {
        "TableName": table_name,
        "IndexName": STATUS_INDEX_NAME,
        "KeyConditionExpression": key_condition,
    }
    if prefix:
        names["#key"] = KEY_ATTRIBUTE
        values[":prefix"] = {"S": prefix}
        request["FilterExpression"] = "begins_with(#key, :prefix)"
    if attributes:
        wanted = (*attributes, RECORDED_AT_ATTRIBUTE) if since or until else attributes
        projected = {f"#a{i}": name for i, name in enumerate(dict.fromkeys(wanted))}
        names.update(projected)
        request["ProjectionExpression"] = ", ".join(projected)
    request["ExpressionAttributeNames"] = names
    request["ExpressionAttributeValues"] = values
    for page in dynamodb.get_paginator("query").paginate(**request):
        for item in page.get("Items", []):
            record = record_from_item(item)
            if (since or until) and not _within(record, since, until):
                continue
            yield record


# How far past a bound the query reads, for the whole-second form of recorded_at.
_MARGIN = timedelta(seconds=1)


def _widened(moment: datetime, by: timedelta) -> datetime:
    """``moment + by``, or ``moment`` where that leaves the calendar (years 1 and 9999)."""
    try:
        return moment + by
    except OverflowError:
        return moment


def _within(record: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    """Whether the record's own time is in the range; a ``recorded_at`` that is no time
    is kept (the index put it in range), for the reader to name (``records.unreadable``)."""
    try:
        moment = parse_timestamp(record.get(RECORDED_AT_ATTRIBUTE))
    except ValueError:
        return True
    return (since is None or moment >= since) and (until is None or moment < until)
