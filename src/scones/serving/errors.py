"""Error answers, in the two shapes the server speaks.

* The **container** routes (``/invocations``) answer like a model container:
  an HTTP 4xx/5xx with ``{"message": ...}``.
* The **runtime** route (``/endpoints/{name}/invocations``) answers like the
  sagemaker-runtime service, so botocore raises the exception it raises on AWS:
  the code goes in the ``x-amzn-ErrorType`` header, the text in ``message``, and
  the HTTP status is the one botocore's service model gives the code. A container
  error reaches a runtime caller wrapped as ``ModelError`` (HTTP 424) carrying
  ``OriginalStatusCode`` and ``OriginalMessage`` (the container's body), as SageMaker
  wraps it.

``ThrottlingException`` and ``RequestTimeoutException`` are not in the
sagemaker-runtime model; botocore still raises them as a ``ClientError`` with
that code and retries them (as throttling and as a transient error).
"""

from __future__ import annotations

import json
import os
from enum import Enum
from typing import Any

from fastapi.responses import JSONResponse
from scones_core.sagemaker_names import endpoint_log_group


class ContainerError(Exception):
    """The model container refuses or fails a request (HTTP ``status``).

    ``close``: the answer comes before the body was read (a refused Content-Type, a
    declared size over the limit), so the connection is closed after it rather than
    drained: a client that sent ``Expect: 100-continue`` knows not to send the body
    on it, and nothing it sends next is read as the next request.
    """

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


class ServiceCode(Enum):
    """sagemaker-runtime error codes and their HTTP status (from botocore's service model)."""

    VALIDATION_ERROR = ("ValidationError", 400)
    MODEL_ERROR = ("ModelError", 424)
    THROTTLING = ("ThrottlingException", 400)
    # A body that arrives too slowly; botocore retries this code as a transient error.
    REQUEST_TIMEOUT = ("RequestTimeoutException", 408)
    SERVICE_UNAVAILABLE = ("ServiceUnavailable", 503)
    INTERNAL_FAILURE = ("InternalFailure", 500)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


class ServiceError(Exception):
    """A sagemaker-runtime error answer: its code, message and modeled extra fields."""

    def __init__(
        self,
        kind: ServiceCode,
        message: str,
        extra: dict[str, Any] | None = None,
        *,
        close: bool = False,
    ):
        super().__init__(f"{kind.code}: {message}")
        self.kind = kind
        self.message = message
        self.extra = extra or {}
        # As ContainerError.close; a body that arrived too slowly is not worth reading on.
        self.close = close or kind is ServiceCode.REQUEST_TIMEOUT


# What SageMaker calls the container of a model defined by its PrimaryContainer (every
# model here: template.yaml, scones.sagemaker.hosting) in the errors it wraps.
CONTAINER_NAME = "primary"


# No AWS account serves offline: the log group ARN a ModelError names carries this one.
OFFLINE_ACCOUNT = "000000000000"


def _region() -> str:
    """The region the offline clients use."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def endpoint_log_group_arn(endpoint_name: str) -> str:
    """The ARN of the log group SageMaker gives an endpoint's containers, which a
    ``ModelError`` names (``LogStreamArn``), in the region the offline clients use."""
    return (
        f"arn:aws:logs:{_region()}:{OFFLINE_ACCOUNT}:log-group:{endpoint_log_group(endpoint_name)}"
    )


def model_error(error: ContainerError, endpoint_name: str) -> ServiceError:
    """Wrap a container's error answer the way SageMaker does for ``InvokeEndpoint``: the
    container's status, and its response body verbatim (``{"message": ...}`` here) as
    ``OriginalMessage`` and inside the message, so a client that reads the body from
    ``OriginalMessage`` reads it offline as on AWS; and the endpoint's log group, where
    the container's own log would be (``LogStreamArn``)."""
    body = bytes(container_error_response(error).body).decode("utf-8")
    side = "client" if 400 <= error.status < 500 else "server"
    region = _region()
    # As SageMaker words it: the message points at the log group's console page, the
    # LogStreamArn field at the log group.
    console = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logEventViewer:group={endpoint_log_group(endpoint_name)}"
    )
    return ServiceError(
        ServiceCode.MODEL_ERROR,
        f'Received {side} error ({error.status}) from {CONTAINER_NAME} with message "{body}". '
        f"See {console} in account {OFFLINE_ACCOUNT} for more information.",
        {
            "OriginalStatusCode": error.status,
            "OriginalMessage": body,
            "LogStreamArn": endpoint_log_group_arn(endpoint_name),
        },
        close=error.close,
    )


CLOSE = {"connection": "close"}


def container_error_response(error: ContainerError) -> JSONResponse:
    return JSONResponse(
        {"message": error.message}, status_code=error.status, headers=CLOSE if error.close else None
    )


def runtime_error_response(error: ServiceError, request_id: str) -> JSONResponse:
    body = {"message": error.message, **error.extra}
    headers = {"x-amzn-ErrorType": error.kind.code, "x-amzn-RequestId": request_id}
    return JSONResponse(
        body, status_code=error.kind.status, headers=headers | CLOSE if error.close else headers
    )


def json_text(value: Any) -> str:
    """Compact JSON, the exact text the server returns and captures."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
