"""Serve a trained model: CreateModel, CreateEndpointConfig (with data capture), CreateEndpoint.

:func:`deploy` sends the three requests and returns the ARNs without waiting;
:func:`wait_for_endpoint` is the optional wait (for an update: until its config serves).
The endpoint name stays stable (the workflow's Lambdas invoke it by name) while each
deploy creates a new model and endpoint config named with a timestamp suffix;
``update=True`` moves an existing endpoint onto the new config instead of creating it.
It describes the endpoint first and refuses what SageMaker would refuse only after the
model and config exist (they would stay behind, unused): creating an endpoint whose name
is taken (names are unique per account and region), or updating one that does not exist.

Data capture writes what the monitor Lambda reads: request bodies (images, stored
base64) and the JSON responses, under ``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scones.sagemaker.errors import LaunchError, ResourceFailedError
from scones.sagemaker.s3 import S3Uri
from scones.sagemaker.training import check_image_uri, check_role_arn
from scones.serving.defaults import DEFAULT_VARIANT

JSON_CONTENT_TYPES = ("application/json",)


@dataclass(frozen=True)
class DataCapture:
    """Where and how much endpoint traffic to capture."""

    destination: S3Uri
    sampling_percentage: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.sampling_percentage <= 100:
            raise LaunchError(
                f"data capture sampling percentage must be 0-100, got {self.sampling_percentage}"
            )

    def as_request(self) -> dict[str, Any]:
        return {
            "EnableCapture": True,
            "InitialSamplingPercentage": self.sampling_percentage,
            "DestinationS3Uri": str(self.destination),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": list(JSON_CONTENT_TYPES)},
        }


@dataclass(frozen=True)
class DeployPlan:
    """Everything :func:`deploy` sends, as the three request dicts."""

    model: dict[str, Any]
    endpoint_config: dict[str, Any]
    endpoint: dict[str, Any]


@dataclass(frozen=True)
class DeployResult:
    model_name: str
    model_arn: str
    endpoint_config_name: str
    endpoint_config_arn: str
    endpoint_name: str
    endpoint_arn: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def model_request(
    *, model_name: str, image_uri: str, model_data_url: str, role_arn: str
) -> dict[str, Any]:
    S3Uri.parse(model_data_url)
    return {
        "ModelName": model_name,
        "PrimaryContainer": {"Image": check_image_uri(image_uri), "ModelDataUrl": model_data_url},
        "ExecutionRoleArn": check_role_arn(role_arn),
    }


def endpoint_config_request(
    *,
    config_name: str,
    model_name: str,
    instance_type: str,
    instance_count: int = 1,
    capture: DataCapture | None,
    variant_name: str = DEFAULT_VARIANT,
) -> dict[str, Any]:
    if not instance_type.startswith("ml."):
        raise LaunchError(f"SageMaker instance types start with 'ml.': {instance_type!r}")
    if instance_count < 1:
        raise LaunchError(f"instance count must be >= 1, got {instance_count}")
    request: dict[str, Any] = {
        "EndpointConfigName": config_name,
        "ProductionVariants": [
            {
                "VariantName": variant_name,
                "ModelName": model_name,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
    }
    if capture is not None:
        request["DataCaptureConfig"] = capture.as_request()
    return request


def endpoint_request(*, endpoint_name: str, config_name: str) -> dict[str, Any]:
    return {"EndpointName": endpoint_name, "EndpointConfigName": config_name}


# Endpoint statuses UpdateEndpoint refuses (an operation under way, or a failed endpoint,
# which only DeleteEndpoint accepts), with what to do.
BUSY_STATUSES = {
    "Creating": "wait until it is InService",
    "Updating": "wait until it is InService",
    "SystemUpdating": "wait until it is InService",
    "RollingBack": "wait until it is InService",
    "Deleting": "wait until it is gone, then deploy without --update",
    "Failed": "delete it (aws sagemaker delete-endpoint), then deploy without --update",
}
# DescribeEndpoint's answer for a name no endpoint has (a ValidationException).
_NO_ENDPOINT = "Could not find endpoint"


def existing_endpoint(sagemaker_client: Any, endpoint_name: str) -> dict[str, Any] | None:
    """DescribeEndpoint's description of the endpoint, or None when none has the name."""
    from botocore.exceptions import ClientError

    try:
        return dict(sagemaker_client.describe_endpoint(EndpointName=endpoint_name))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationException" and _NO_ENDPOINT in str(
            error.get("Message", "")
        ):
            return None
        raise


def check_endpoint(
    sagemaker_client: Any,
    plan: DeployPlan,
    *,
    update: bool,
    capture_bucket: str | None = None,
) -> None:
    """Refuse, before anything is created, a deploy that would fail at its endpoint call.

    ``capture_bucket`` (for an update) is the bucket the endpoint is expected to capture
    into: an endpoint capturing into another is taken to be another stack's, whose monitor
    reads that capture, and is not moved onto this plan's. None skips that check.
    """
    name = plan.endpoint["EndpointName"]
    region = sagemaker_client.meta.region_name
    described = existing_endpoint(sagemaker_client, name)
    if described is None:
        if update:
            raise LaunchError(
                f"endpoint {name} does not exist in {region}, so it cannot be updated: "
                "leave out --update to create it, or name the existing endpoint with "
                "--endpoint-name (or another region with --region)"
            )
        return
    status = str(described.get("EndpointStatus", ""))
    current = str((described.get("DataCaptureConfig") or {}).get("DestinationS3Uri") or "")
    if not update:
        way = (
            "pass --update to move it onto the new model"
            if status not in BUSY_STATUSES
            else f"it cannot be updated while {status} ({BUSY_STATUSES[status]})"
        )
        captures = f", capturing into {current}" if current else ""
        raise LaunchError(
            f"endpoint {name} already exists in {region} ({status}, serving endpoint config "
            f"{described.get('EndpointConfigName')}{captures}) and endpoint names are unique "
            f"per account and region: {way}, or name another endpoint with --endpoint-name"
        )
    if status in BUSY_STATUSES:
        raise LaunchError(
            f"endpoint {name} is {status}, and SageMaker updates an endpoint only once no "
            f"operation is under way on it: {BUSY_STATUSES[status]}"
        )
    # Only the bucket is compared (SageMaker's URI, not parsed strictly): a stack's
    # DataCapturePrefix may differ from the template's, its bucket is its own.
    if capture_bucket is None or not current or _bucket(current) == capture_bucket:
        return
    planned = (plan.endpoint_config.get("DataCaptureConfig") or {}).get("DestinationS3Uri")
    ours = f"into {planned}" if planned else f"nothing (it is for bucket {capture_bucket})"
    raise LaunchError(
        f"endpoint {name} captures into {current}, and this deploy would capture {ours}: "
        "if that bucket is another stack's (one with the same EndpointName), its monitor "
        "would lose the capture it reads. Name another endpoint with --endpoint-name, or "
        "pass --take-over to update this one anyway"
    )


def _bucket(uri: str) -> str:
    return uri.removeprefix("s3://").partition("/")[0]


def deploy(
    sagemaker_client: Any,
    plan: DeployPlan,
    *,
    update: bool = False,
    capture_bucket: str | None = None,
) -> DeployResult:
    """Check the endpoint (:func:`check_endpoint`), create the model and endpoint config,
    then create (or update) the endpoint; no waiting."""
    check_endpoint(sagemaker_client, plan, update=update, capture_bucket=capture_bucket)
    model_arn = sagemaker_client.create_model(**plan.model)["ModelArn"]
    config_arn = sagemaker_client.create_endpoint_config(**plan.endpoint_config)[
        "EndpointConfigArn"
    ]
    call = sagemaker_client.update_endpoint if update else sagemaker_client.create_endpoint
    endpoint_arn = call(**plan.endpoint)["EndpointArn"]
    return DeployResult(
        model_name=plan.model["ModelName"],
        model_arn=str(model_arn),
        endpoint_config_name=plan.endpoint_config["EndpointConfigName"],
        endpoint_config_arn=str(config_arn),
        endpoint_name=plan.endpoint["EndpointName"],
        endpoint_arn=str(endpoint_arn),
    )


# DescribeEndpoint's statuses on the way to a settled endpoint: poll again.
SETTLING_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})


def wait_for_endpoint(
    sagemaker_client: Any,
    endpoint_name: str,
    *,
    config_name: str | None = None,
    delay: int = 30,
    max_attempts: int = 120,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Block until the endpoint settles; ``InService``, or ``ResourceFailedError`` with
    SageMaker's reason.

    A failed UpdateEndpoint does not leave a ``Failed`` endpoint: SageMaker rolls it back,
    and it is ``InService`` again on the previous config with ``FailureReason`` saying why.
    So an update is waited for with its ``config_name``, and only that config serving is
    success. ``UpdateRollbackFailed`` (the rollback failed too) is settled, not polled.
    """
    if max_attempts < 1:
        raise LaunchError(f"max_attempts must be >= 1, got {max_attempts}")
    for attempt in range(1, max_attempts + 1):
        endpoint = sagemaker_client.describe_endpoint(EndpointName=endpoint_name)
        status = str(endpoint["EndpointStatus"])
        if status not in SETTLING_STATUSES:
            break
        if attempt < max_attempts:
            sleep(delay)
    else:
        raise ResourceFailedError(
            f"endpoint {endpoint_name} is still {status} after {attempt} checks "
            f"{delay} s apart: it goes on, so check it later with DescribeEndpoint"
        )
    reason = endpoint.get("FailureReason") or "no reason given"
    if status != "InService":
        raise ResourceFailedError(f"endpoint {endpoint_name} is {status}: {reason}")
    serving = endpoint.get("EndpointConfigName")
    if config_name is not None and serving != config_name:
        raise ResourceFailedError(
            f"endpoint {endpoint_name} is InService on endpoint config {serving}, not "
            f"{config_name}: the update failed and SageMaker rolled it back: {reason}"
        )
    return status
