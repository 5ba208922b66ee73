"""Read the evaluation step's report for the gate.

A run's FAILED outcome records the error's message, so a report that is missing or not
JSON must say which object it is: the S3 error alone ("NoSuchKey") names no key.
"""

from __future__ import annotations

import json
from typing import Any

from scones_core.monitoring.locations import S3Location, read_optional_object
from scones_core.retraining.gate import EvaluationReportError


def read_evaluation(s3: Any, location: S3Location) -> Any:
    """The report's JSON (``judge`` checks its shape). ``EvaluationReportError`` naming
    the URI when it is missing or not JSON; other S3 failures are ``S3ReadError``s naming
    it too."""
    body = read_optional_object(s3, location)
    if body is None:
        raise EvaluationReportError(
            f"no evaluation report at {location.uri}: the evaluation step wrote none"
        )
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8/16/32
        raise EvaluationReportError(
            f"{location.uri} is not a JSON evaluation report: {exc}"
        ) from exc
