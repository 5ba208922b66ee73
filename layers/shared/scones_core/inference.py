"""Call the SageMaker endpoint and turn its answer into a classification.

The endpoint speaks the built-in image-classification algorithm's contract:
image bytes in, a JSON list of class probabilities out, in label order.
Errors are sorted into retryable (throttling, unavailability) and permanent
ones so the state machine retries only what can succeed later.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from scones_core.endpoint_response import UNREPORTED, model_version, probabilities
from scones_core.errors import (
    EndpointRejectedRequest,
    EndpointThrottled,
    EndpointUnavailable,
    EventError,
    ModelResponseInvalid,
)
from scones_core.json_text import NotJSON, load_json
from scones_core.records import NORMALISED_CONTENT_TYPE, ClassificationState, number_attribute
from scones_core.settings import EndpointSettings
from scones_core.shortened import shortened

_THROTTLING_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException"}
# SageMaker returns every non-2xx answer of the model's container as ModelError (424),
# with the container's own status in OriginalStatusCode: a busy container's 429 and a
# gateway's 502-504 are worth a retry, as the same answers from SageMaker itself are.
_MODEL_ERROR = "ModelError"
_CONTAINER_BUSY = 429
_CONTAINER_UNAVAILABLE = {502, 503, 504}
_UNAVAILABLE_CODES = {
    "ServiceUnavailable",
    "InternalFailure",
    "InternalDependencyException",
    "InternalServerError",
    "ModelNotReadyException",
    # The request's body arrived too slowly (a 408): a retry sends it again.
    "RequestTimeoutException",
}
_REQUEST_TIMEOUT = 408
# How much of SageMaker's error message an error keeps. A ModelError's message carries
# the container's answer, of any size; the error becomes a Lambda error whose Cause Step
# Functions keeps only up to 32,768 characters, and a cut Cause is no longer the JSON the
# workflow's DescribeFailure reads (States.Runtime, which no Catch takes).
MAX_SERVICE_MESSAGE = 1000


@dataclass(frozen=True)
class Classification:
    label: str
    confidence: float
    probabilities: dict[str, float]
    endpoint_name: str
    variant: str
    duration_ms: float
    model_version: str = UNREPORTED

    def to_state(self) -> ClassificationState:
        """ClassifyImage's result, as the state machine reads it (``records`` holds the
        shape)."""
        return {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            # The same map as DynamoDB attribute values, so the state machine can
            # write it with a direct putItem whatever the labels are.
            "probabilities_attribute": {
                label: number_attribute(p) for label, p in self.probabilities.items()
            },
            "endpoint_name": self.endpoint_name,
            "variant": self.variant,
            "model_version": self.model_version,
            "duration_ms": round(self.duration_ms, 3),
        }


def decode_image_b64(image_b64: Any) -> bytes:
    if not isinstance(image_b64, str) or not image_b64:
        raise EventError("image_b64 must be a non-empty base64 string")
    try:
        return base64.b64decode(image_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventError(f"image_b64 is not valid base64: {exc}") from exc


def parse_probabilities(body: bytes, labels: tuple[str, ...]) -> dict[str, float]:
    """Validate the endpoint's answer (``endpoint_response.probabilities``) and pair it
    with the labels."""
    try:
        answer = load_json(body)
    except NotJSON as exc:
        raise ModelResponseInvalid(f"endpoint response is {exc}: {body[:80]!r}") from exc
    try:
        return dict(zip(labels, probabilities(answer, labels), strict=True))
    except (ValueError, RecursionError) as exc:
        raise ModelResponseInvalid(f"endpoint response: {exc}") from exc


def endpoint_error(endpoint_name: str, exc: ClientError) -> Exception:
    """The workflow's error for an InvokeEndpoint failure: ``EndpointThrottled`` and
    ``EndpointUnavailable`` are retried, ``EndpointRejectedRequest`` is FAILED at once.
    A ``ModelError`` is sorted by the status the container answered, and its message keeps
    that status and the container's log stream."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    said = shortened(str(error.get("Message", "")), MAX_SERVICE_MESSAGE)
    message = f"endpoint {endpoint_name}: {code}: {said}"
    if code == _MODEL_ERROR:
        original = _status(exc.response.get("OriginalStatusCode"))
        logs = exc.response.get("LogStreamArn")
        message += f" (the model's container answered {original or 'an unknown status'}"
        message += f"; its log: {logs})" if logs else ")"
        if original == _CONTAINER_BUSY:
            return EndpointThrottled(message)
        if original in _CONTAINER_UNAVAILABLE:
            return EndpointUnavailable(message)
        return EndpointRejectedRequest(message)
    if code in _THROTTLING_CODES:
        return EndpointThrottled(message)
    status = _status(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    if code in _UNAVAILABLE_CODES or status >= 500 or status == _REQUEST_TIMEOUT:
        return EndpointUnavailable(message)
    return EndpointRejectedRequest(message)


def _status(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def classify_image(
    runtime: Any,
    image: bytes,
    settings: EndpointSettings,
    content_type: str = NORMALISED_CONTENT_TYPE,
    *,
    inference_id: str | None = None,
) -> Classification:
    """Invoke the endpoint once; retries belong to the state machine. ``inference_id``
    (``records.capture_id``) goes into the endpoint's captured request."""
    started = time.perf_counter()
    extra = {"InferenceId": inference_id} if inference_id else {}
    try:
        response = runtime.invoke_endpoint(
            EndpointName=settings.endpoint_name,
            ContentType=content_type,
            Accept="application/json",
            Body=image,
            **extra,
        )
        body = response["Body"].read()
    except ClientError as exc:
        raise endpoint_error(settings.endpoint_name, exc) from exc
    except (BotoConnectionError, ReadTimeoutError) as exc:
        raise EndpointUnavailable(
            f"endpoint {settings.endpoint_name} is unreachable: {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise EndpointUnavailable(f"endpoint {settings.endpoint_name}: {exc}") from exc
    duration_ms = (time.perf_counter() - started) * 1000
    probabilities = parse_probabilities(body, settings.labels)
    label = max(probabilities, key=lambda name: probabilities[name])
    return Classification(
        label=label,
        confidence=probabilities[label],
        probabilities=probabilities,
        endpoint_name=settings.endpoint_name,
        variant=str(response.get("InvokedProductionVariant") or ""),
        duration_ms=duration_ms,
        model_version=model_version(response.get("CustomAttributes")),
    )
