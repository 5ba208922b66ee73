"""Constants and stub answers shared by the SageMaker tests (imported by name; conftest
modules are not)."""

from typing import Any

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/service-role/SconesSageMaker"
ACCOUNT_ARN = f"arn:aws:sagemaker:{REGION}:123456789012"


def no_such_endpoint(stubber: Any, name: str) -> None:
    """Queue SageMaker's answer to DescribeEndpoint of a name no endpoint has."""
    stubber.add_client_error(
        "describe_endpoint",
        service_error_code="ValidationException",
        service_message=f'Could not find endpoint "{ACCOUNT_ARN}:endpoint/{name}".',
        http_status_code=400,
        expected_params={"EndpointName": name},
    )
