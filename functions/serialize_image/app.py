"""Serialize step: read the uploaded image, apply the image rules, normalise and encode it.

Bad input comes back as data, ``{"rejection": {"error_code", "reason"}}``, which
the state machine records as REJECTED; S3 trouble raises ``StorageUnavailable``,
which it retries, or ``StorageRefused`` (a 4xx no retry can fix), which it records
as FAILED at once.

No metric per image: the record carries the duration and the outcome, and CloudWatch
Logs would bill each image's EMF document (docs/benchmarks.md, "Cost"). Only a rejection,
the exception, emits ``ImagesRejected``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any, cast

import boto3
from aws_lambda_powertools import single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import function_logs, tracing
from scones_core.errors import EventError
from scones_core.failure_log import logs_failures
from scones_core.images import serialize_object
from scones_core.metric_logs import kept_by_log_level
from scones_core.objects import object_from_json
from scones_core.records import RejectedImage, SerializedImage
from scones_core.settings import ImageLimits

logger = function_logs.logger()  # Powertools' Logger; the SDK's loggers at WARNING
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
limits = ImageLimits.from_env()
# The dimension Metrics() would add (single_metric adds none of its own).
METRIC_DIMENSIONS = (
    {"service": os.environ["POWERTOOLS_SERVICE_NAME"]}
    if os.environ.get("POWERTOOLS_SERVICE_NAME")
    else {}
)


@cache
def s3_client() -> Any:
    return boto3.client("s3")


# clear_state: the record_id appended below must not name the previous image in a warm
# invocation that fails before it is set. The response (the image, base64) is kept out
# of X-Ray's trace metadata: a large image would overflow the segment.
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@logs_failures(logger, bound_messages=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext
) -> SerializedImage | RejectedImage:
    if not isinstance(event, dict) or "object" not in event:
        raise EventError("expected {'object': {...}} from the state machine")
    ref = object_from_json(event["object"])
    logger.append_keys(record_id=ref.record_id)
    result = serialize_object(s3_client(), ref, limits)
    if "rejection" in result:
        logger.warning("image rejected", extra=dict(cast(RejectedImage, result)["rejection"]))
        with single_metric(
            name="ImagesRejected",
            unit=MetricUnit.Count,
            value=1,
            default_dimensions=METRIC_DIMENSIONS,
        ) as metric:
            kept_by_log_level(metric)  # written when the block ends
    return result
