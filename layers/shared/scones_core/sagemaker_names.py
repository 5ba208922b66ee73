"""The name rule SageMaker applies to endpoints, variants and jobs, and the names it
derives from them, in one place.

Names also become S3 key segments (data capture writes under
``<endpoint>/<variant>/``), so a name that passes this rule is also a safe path part.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 63
SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
NAME_RULE = "1-63 letters, digits and hyphens, starting and ending with a letter or digit"


def is_sagemaker_name(name: str) -> bool:
    return SAGEMAKER_NAME.fullmatch(name) is not None  # `$` would let a final newline in


def endpoint_log_group(endpoint_name: str) -> str:
    """The CloudWatch log group SageMaker creates, and writes, for an endpoint's
    containers."""
    return f"/aws/sagemaker/Endpoints/{endpoint_name}"
