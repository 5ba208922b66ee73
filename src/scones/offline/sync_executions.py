"""``StartSyncExecution`` offline: run an Express execution and answer when it ends.

moto 5.2.5 routes no ``StartSyncExecution`` (its server answers "The
start_sync_execution action has not been implemented"), yet the start function waits
for each Express execution with it (``scones_core.ingest``: the ingest queue's
backpressure). This adds the action to moto's Step Functions responses. It starts the
execution as ``StartExecution`` does, through moto's interpreter, waits for it to end,
and answers with the fields AWS gives: ``status`` (``SUCCEEDED``, ``FAILED`` or
``TIMED_OUT``), ``output`` when it succeeded, and ``error`` and ``cause`` when not.

AWS answers it as it answers for Express:
* a STANDARD state machine is refused (``StateMachineTypeNotSupported``);
* a name is not deduplicated: an ended execution of the same name is forgotten first,
  so a repeat runs again (moto would answer a repeat with the ended one).
  A same-named execution still running is waited on instead of run beside it;
* a run that lasts Express's 5 minutes is stopped and answered ``TIMED_OUT`` (moto's
  interpreter stops no Express execution).

botocore sends the call to ``sync-<host>`` (the operation's host prefix), which an
address such as ``127.0.0.1`` cannot take: the offline functions run with
``AWS_DISABLE_HOST_PREFIX_INJECTION`` (``HOST_PREFIX_ENVIRONMENT``).

A test checks that moto still lacks the action, so this goes when moto adds it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.stepfunctions.responses import StepFunctionResponse
from scones_core.ingest import EXPRESS_MAX_SECONDS

from scones.offline.executions import finished_at, forget, is_express, status_of

HOST_PREFIX_ENVIRONMENT = {"AWS_DISABLE_HOST_PREFIX_INJECTION": "true"}
_POLL_SECONDS = 0.02
# Express stops an execution after this long (a test may shorten it).
run_limit_seconds: float = EXPRESS_MAX_SECONDS
# moto's interpreter and AWS's statuses, as StartSyncExecution reports them.
_SYNC_STATUS = {"SUCCEEDED": "SUCCEEDED", "TIMED_OUT": "TIMED_OUT"}


class StateMachineTypeNotSupported(JsonRESTError):
    def __init__(self) -> None:
        super().__init__(
            "StateMachineTypeNotSupported",
            "This operation is not supported by this type of state machine",
        )


def _forget_ended(machine: Any, name: str) -> None:
    for execution in list(machine.executions):
        if execution.name == name and finished_at(execution) is not None:
            forget(machine, execution)


def sync_answer(execution: Any, machine_arn: str) -> dict[str, Any]:
    """The StartSyncExecution answer for an ended execution of moto's interpreter."""
    status = _SYNC_STATUS.get(status_of(execution), "FAILED")
    answer: dict[str, Any] = {
        "executionArn": execution.exec_arn,
        "stateMachineArn": machine_arn,
        "name": execution.name,
        "startDate": execution.start_date,
        "stopDate": execution.stop_date,
        "status": status,
        "input": execution.execution_input,
    }
    if status == "SUCCEEDED":
        answer["output"] = _json(execution.output)
    for field in ("error", "cause"):
        if getattr(execution, field, None) is not None:
            answer[field] = getattr(execution, field)
    return answer


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def start_sync_execution(self: StepFunctionResponse) -> ActionResult:
    arn = self._get_param("stateMachineArn")
    name = self._get_param("name")
    backend = self.stepfunction_backend
    machine = backend.describe_state_machine(arn)
    if not is_express(machine):
        raise StateMachineTypeNotSupported()
    if name:
        _forget_ended(machine, name)
    execution = backend.start_execution(arn, name, self._get_param("input", if_none="{}"))
    deadline = time.monotonic() + run_limit_seconds
    while finished_at(execution) is None:
        if time.monotonic() > deadline:
            error, cause = "States.Timeout", "Express ended the execution after its 5 minutes"
            execution.stop(datetime.now(UTC), error, cause)
            answer = sync_answer(execution, machine.arn)
            answer.update(status="TIMED_OUT", stopDate=datetime.now(UTC), error=error, cause=cause)
            answer.pop("output", None)
            return ActionResult(answer)
        time.sleep(_POLL_SECONDS)
    return ActionResult(sync_answer(execution, machine.arn))


def is_installed() -> bool:
    return getattr(StepFunctionResponse, "start_sync_execution", None) is start_sync_execution


def install() -> None:
    StepFunctionResponse.start_sync_execution = start_sync_execution  # type: ignore[attr-defined]


def uninstall() -> None:
    if is_installed():
        del StepFunctionResponse.start_sync_execution  # type: ignore[attr-defined]
