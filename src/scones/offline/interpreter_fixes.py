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
from scones_core.monitoring.timestamps import format_millis

_ORIGINAL_ENVIRONMENT = ExecutionWorker._get_evaluation_environment


def _environment_with_string_start_time(self: ExecutionWorker) -> Any:
    env = _ORIGINAL_ENVIRONMENT(self)
    execution = env.states.context_object.context_object_data["Execution"]
    start = execution.get("StartTime")
    if isinstance(start, datetime.datetime):
        # AWS's format: UTC, milliseconds, ``Z`` (moto's datetime is naive UTC or aware).
        aware = start if start.tzinfo else start.replace(tzinfo=datetime.UTC)
        execution["StartTime"] = format_millis(aware)
    return env


def install() -> None:
    ExecutionWorker._get_evaluation_environment = _environment_with_string_start_time  # type: ignore[method-assign]


def uninstall() -> None:
    ExecutionWorker._get_evaluation_environment = _ORIGINAL_ENVIRONMENT  # type: ignore[method-assign]
