"""Metric documents that Lambda's log-level filter keeps.

Powertools prints each batch of custom metrics to stdout as a CloudWatch embedded metric
format document, and CloudWatch extracts the metrics from the log line. With the JSON log
format Lambda first drops every application line below the function's application log
level, and a line without a ``"level"`` key counts as INFO (Lambda Developer Guide,
"Log-level filtering"). At the template's default level (WARN) every metric document of
the start, serialize and backfill functions was dropped, so their metrics never existed.

A document that carries the level Lambda filters at (``AWS_LAMBDA_LOG_LEVEL``, which
Lambda sets from ``ApplicationLogLevel``) is always kept, whatever ``LogLevel`` is.
"""

from __future__ import annotations

import os
from typing import Any

LEVEL_KEY = "level"
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
