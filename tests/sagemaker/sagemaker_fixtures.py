"""Constants shared by the SageMaker tests (imported by name; conftest modules are not)."""

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/service-role/SconesSageMaker"
