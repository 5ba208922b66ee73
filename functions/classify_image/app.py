"""Classify step: send the normalised image to the SageMaker endpoint.

Retries are the state machine's job (with backoff and jitter), so the client
makes a single attempt and the errors say whether a retry can help.

No metric per image: the record carries the label, confidence and inference time, the
monitor publishes the window's numbers, and CloudWatch Logs would bill each image's EMF
document (docs/benchmarks.md, "Cost").
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from scones_core import function_logs, tracing
from scones_core.errors import EventError
from scones_core.failure_log import logs_failures
from scones_core.inference import classify_image, decode_image_b64
from scones_core.records import NORMALISED_CONTENT_TYPE, ClassificationState, capture_id
from scones_core.settings import EndpointSettings

logger = function_logs.logger()  # Powertools' Logger; the SDK's loggers at WARNING
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
settings = EndpointSettings.from_env()


@cache
def runtime_client() -> Any:
    return boto3.client(
        "sagemaker-runtime",
        config=Config(
            connect_timeout=settings.timeout_seconds,
            read_timeout=settings.timeout_seconds,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )


# clear_state: a warm invocation must never log the previous image's record_id.
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@logs_failures(logger, bound_messages=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> ClassificationState:
    if not isinstance(event, dict):
        raise EventError("expected {'image_b64': ..., 'content_type': ...} from the state machine")
    record_id = event.get("record_id")
    if not isinstance(record_id, str):
        record_id = None
    if record_id:  # names the image in every line, failures too
        logger.append_keys(record_id=record_id)
    image = decode_image_b64(event.get("image_b64"))
    content_type = str(event.get("content_type") or NORMALISED_CONTENT_TYPE)
    classification = classify_image(
        runtime_client(),
        image,
        settings,
        content_type,
        # The captured request names its record (by digest), for erasure and labels.
        inference_id=capture_id(record_id) if record_id else None,
    )
    logger.info(
        "classified",
        extra={"label": classification.label, "confidence": classification.confidence},
    )
    return classification.to_state()
