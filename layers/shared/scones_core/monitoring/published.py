"""A window's metrics are published once, however often its run is retried.

The scheduler retries a failed run with the same ``scheduledTime``, so the same window,
and a run that fails after measuring (starting retraining, say) has already published.
CloudWatch adds up every data point it is sent: a window published three times would
count three times in a day's sums, skewing ``AcceptedAccuracyAlarm``'s ratio of correct
to reviewed images towards that window. A conditional put of one marker per window in the
monitor's state table lets exactly one run publish; the table's TTL removes the marker.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from scones_core.errors import aws_error_code
from scones_core.monitoring.timestamps import format_millis, format_seconds

logger = logging.getLogger(__name__)

MARKER_TYPE = "MONITOR_WINDOW_METRICS"
# Longer than any rerun of a scheduled run: Lambda retries an asynchronous event for at
# most 6 hours, the scheduler holds one for at most 24, and ``scones redrive
# --dead-letters`` runs a failed one again while the dead-letter queue keeps it (SQS keeps
# a message at most 14 days).
MARKER_LIFETIME = timedelta(days=15)


def window_metrics_key(endpoint_name: str, window_end: datetime) -> str:
    return f"monitor#metrics#{endpoint_name}#{format_seconds(window_end)}"


def claim_window_metrics(
    dynamodb: Any, table: str, endpoint_name: str, window_end: datetime, now: datetime
) -> bool:
    """True when this run is the first to publish the window ending at ``window_end``.

    Any other DynamoDB error propagates: the run fails before publishing anything and
    its retry publishes.
    """
    key = window_metrics_key(endpoint_name, window_end)
    try:
        dynamodb.put_item(
            TableName=table,
            Item={
                "pk": {"S": key},
                "record_type": {"S": MARKER_TYPE},
                "endpoint_name": {"S": endpoint_name},
                "window_end": {"S": format_seconds(window_end)},
                "published_at": {"S": format_millis(now)},
                "expires_at": {"N": str(int((now + MARKER_LIFETIME).timestamp()))},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as exc:
        if aws_error_code(exc) == "ConditionalCheckFailedException":
            logger.info(
                "this window's metrics were published by an earlier run; not publishing again",
                extra={"pk": key},
            )
            return False
        raise
    return True
