"""Narrow corrections to moto's Step Functions interpreter, where it differs from AWS.

Each fix names the difference; a test checks that moto still differs, so an
upgrade that fixes moto also removes the fix here.

* ``$$.Execution.StartTime`` is a ``datetime`` in moto, an ISO 8601 string on
  AWS (``2026-11-25T12:00:00.123Z``). Passing it to a service integration,
  as the record states do, fails with "Object of type datetime is not JSON
  serializable".
"""

from __future__ import annotations

import datetime
from typing import Any

from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

_ORIGINAL_ENVIRONMENT = ExecutionWorker._get_evaluation_environment


def aws_timestamp(moment: datetime.datetime) -> str:
    """The context object's timestamp format on AWS: UTC, milliseconds, ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _environment_with_string_start_time(self: ExecutionWorker) -> Any:
    env = _ORIGINAL_ENVIRONMENT(self)
    execution = env.states.context_object.context_object_data["Execution"]
    start = execution.get("StartTime")
    if isinstance(start, datetime.datetime):
        execution["StartTime"] = aws_timestamp(start)
    return env


def install() -> None:
    ExecutionWorker._get_evaluation_environment = _environment_with_string_start_time  # type: ignore[method-assign]


def uninstall() -> None:
    ExecutionWorker._get_evaluation_environment = _ORIGINAL_ENVIRONMENT  # type: ignore[method-assign]
