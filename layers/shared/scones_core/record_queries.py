"""Records of one status, read through the results table's status index (never a scan).

One home for the index's query: the redrive (FAILED records), ``scones results`` (any
status), the monitor's counts and the review queue all ask it through
:func:`status_index_pages`. A scan's cost grows with the whole table, the index's only
with what is asked for.
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
    names: dict[str, str] = {}
    values: dict[str, dict[str, str]] = {}
    request: dict[str, Any] = {}
    if prefix:
        names["#key"] = KEY_ATTRIBUTE
        values[":prefix"] = {"S": prefix}
        request["FilterExpression"] = "begins_with(#key, :prefix)"
    if attributes:
        wanted = (*attributes, RECORDED_AT_ATTRIBUTE) if since or until else attributes
        projected = {f"#a{i}": name for i, name in enumerate(dict.fromkeys(wanted))}
        names.update(projected)
        request["ProjectionExpression"] = ", ".join(projected)
    pages = status_index_pages(
        dynamodb,
        table_name,
        status,
        at_least=recorded_at_from(_widened(since, -_MARGIN)) if since else None,
        at_most=recorded_at_before(_widened(until, _MARGIN)) if until else None,
        names=names,
        values=values,
        **request,
    )
    for page in pages:
        for item in page.get("Items", []):
            record = record_from_item(item)
            if (since or until) and not _within(record, since, until):
                continue
            yield record


def status_index_pages(
    dynamodb: Any,
    table_name: str,
    status: str,
    *,
    at_least: str | None = None,
    at_most: str | None = None,
    before: str | None = None,
    names: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    **request: Any,
) -> Iterator[dict[str, Any]]:
    """The pages of the status index's query for ``status``, with ``recorded_at`` (as a
    string) ``>= at_least``, ``<= at_most`` and ``< before`` where given: the one key
    condition every reader of the index asks. ``names`` and ``values`` add the caller's
    own placeholders (they may not reuse ``#status``, ``#recorded``, ``:status``,
    ``:at_least``, ``:at_most`` or ``:before``); ``request`` adds the rest of a query
    (a filter, a projection, ``Select``, ``PaginationConfig``)."""
    if before is not None and (at_least is not None or at_most is not None):
        raise ValueError("a key condition takes one range: before, or at_least/at_most")
    key_names = {"#status": STATUS_ATTRIBUTE}
    key_values: dict[str, Any] = {":status": {"S": str(status)}}
    condition = "#status = :status"
    bounds = {":at_least": at_least, ":at_most": at_most, ":before": before}
    if any(bound is not None for bound in bounds.values()):
        key_names["#recorded"] = RECORDED_AT_ATTRIBUTE
        key_values |= {name: {"S": bound} for name, bound in bounds.items() if bound is not None}
        if at_least is not None and at_most is not None:
            condition += " AND #recorded BETWEEN :at_least AND :at_most"
        elif at_least is not None:
            condition += " AND #recorded >= :at_least"
        elif at_most is not None:
            condition += " AND #recorded <= :at_most"
        else:
            condition += " AND #recorded < :before"
    if clash := (key_names.keys() & (names or {}).keys()) | (
        key_values.keys() & (values or {}).keys()
    ):
        raise ValueError(f"placeholders of the key condition reused: {sorted(clash)}")
    yield from dynamodb.get_paginator("query").paginate(
        TableName=table_name,
        IndexName=STATUS_INDEX_NAME,
        KeyConditionExpression=condition,
        ExpressionAttributeNames=key_names | (names or {}),
        ExpressionAttributeValues=key_values | (values or {}),
        **request,
    )


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
