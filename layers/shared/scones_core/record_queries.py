"""Records of one status, read through the results table's status index (never a scan).

One home for the query that the redrive (FAILED records) and ``scones results`` (any
status) both make: a scan's cost grows with the whole table, the index's only with what
is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from scones_core.monitoring.timestamps import recorded_at_before, recorded_at_from
from scones_core.records import (
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
    ``prefix``, oldest first, as plain values (``dynamodb`` is a low-level client); with
    ``attributes``, only those attributes of each (less read, less held)."""
    names = {"#status": STATUS_ATTRIBUTE}
    values: dict[str, dict[str, str]] = {":status": {"S": status}}
    key_condition = "#status = :status"
    if since or until:
        names["#recorded"] = RECORDED_AT_ATTRIBUTE
        # recorded_at is compared as a string: bounds that hold both of its forms.
        if since:
            values[":since"] = {"S": recorded_at_from(since)}
        if until:
            values[":until"] = {"S": recorded_at_before(until)}
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
        names["#key"] = "key"
        values[":prefix"] = {"S": prefix}
        request["FilterExpression"] = "begins_with(#key, :prefix)"
    if attributes:
        projected = {f"#a{i}": name for i, name in enumerate(attributes)}
        names.update(projected)
        request["ProjectionExpression"] = ", ".join(projected)
    request["ExpressionAttributeNames"] = names
    request["ExpressionAttributeValues"] = values
    for page in dynamodb.get_paginator("query").paginate(**request):
        for item in page.get("Items", []):
            yield record_from_item(item)
