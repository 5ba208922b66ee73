"""The executions moto's Step Functions holds: which have ended, and how many still run.

The offline stack reads them where no API does: Express executions cannot be listed or
described on AWS (nor through moto's API), yet stopping the stack must know whether any
is still running, and the retention sweeper when each one ended.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from scones_core.workflow_type import EXPRESS

# How long stopping the stack waits for executions already started to end (a batch of ten
# images takes seconds; an endpoint that is down keeps its executions retrying longer).
STOP_WAIT_SECONDS = 60.0


def backends() -> list[Any]:
    """moto's Step Functions backends: the interpreter's (``execute_state_machine``, what
    the offline stack runs) and the plain one."""
    from moto.stepfunctions.models import stepfunctions_backends
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    every: tuple[Any, ...] = (stepfunctions_parser_backends, stepfunctions_backends)
    return [
        backend
        for backends in every
        for account in list(backends.values())
        for backend in list(account.values())
    ]


def status_of(execution: Any) -> str:
    """An execution's status (``RUNNING``, ``SUCCEEDED`` ...), from either of moto's
    backends: the interpreter's ``exec_status`` enum, or the plain one's ``status`` text."""
    status = getattr(execution, "exec_status", None) or getattr(execution, "status", None)
    return str(getattr(status, "value", status))


def finished_at(execution: Any) -> datetime | None:
    """When an execution ended, or None while it runs."""
    if status_of(execution) == "RUNNING":
        return None
    stopped = getattr(execution, "stop_date", None)
    if isinstance(stopped, datetime):
        return stopped if stopped.tzinfo else stopped.replace(tzinfo=UTC)
    return None


def is_express(machine: Any) -> bool:
    """Whether a moto state machine is an Express one."""
    return str(getattr(machine, "type", "")).upper() == EXPRESS


def forget(machine: Any, execution: Any) -> bool:
    """Drop an execution from its state machine's list; False if another thread (the
    Express retention sweep, a synchronous run of its name) dropped it first. ``list.remove``
    leaves executions started meanwhile (appended to the same list) in place."""
    try:
        machine.executions.remove(execution)
    except ValueError:
        return False
    return True


def running_executions(machine_arns: Collection[str]) -> int:
    """How many executions of these state machines are running now."""
    return sum(
        finished_at(execution) is None
        for backend in backends()
        for machine in list(getattr(backend, "state_machines", []))
        if getattr(machine, "arn", None) in machine_arns
        for execution in list(machine.executions)
    )
