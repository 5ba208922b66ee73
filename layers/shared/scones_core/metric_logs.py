"""Metric documents that Lambda's log-level filter keeps.

Powertools prints each batch of custom metrics to stdout as a CloudWatch embedded metric
format document, and CloudWatch extracts the metrics from the log line. With the JSON log
format Lambda first drops every application line below the function's application log
level, and a line without a ``"level"`` key counts as INFO (Lambda Developer Guide,
"Log-level filtering"). At the template's default level (WARN) every metric document of
the start, serialize and backfill functions was dropped, so their metrics never existed.

A document that carries the level Lambda filters at (``AWS_LAMBDA_LOG_LEVEL``, which
Lambda sets from ``ApplicationLogLevel``) is always kept, whatever ``LogLevel`` is. It also
carries an RFC 3339 ``timestamp``: the same guide says a line without a valid one is
treated as INFO too (the metric's own time is ``_aws.Timestamp``, in epoch milliseconds).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

LEVEL_KEY = "level"
TIMESTAMP_KEY = "timestamp"
# What Lambda assumes for a JSON line without a level, and without ApplicationLogLevel.
DEFAULT_LEVEL = "INFO"


def filtered_at() -> str:
    """The application log level Lambda filters this function's lines at."""
    return os.environ.get("AWS_LAMBDA_LOG_LEVEL") or DEFAULT_LEVEL


def kept_by_log_level(metrics: Any) -> None:
    """Give the next metric document of ``metrics`` (a Powertools ``Metrics`` or a
    ``single_metric``) the level Lambda filters at. Metadata is a top-level key of the
    document that is no dimension; Powertools clears it with each flush, so call this in
    every invocation that adds a metric."""
    metrics.add_metadata(LEVEL_KEY, filtered_at())
    metrics.add_metadata(TIMESTAMP_KEY, rfc3339_now())


def rfc3339_now() -> str:
    """Now in UTC as RFC 3339 with milliseconds (``2026-12-05T06:40:00.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
