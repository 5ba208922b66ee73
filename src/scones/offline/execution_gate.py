"""At most N executions evaluate at once offline; the rest wait their turn, RUNNING.

On AWS a burst of uploads starts as many executions as there are uploads, and
Lambda scales out so each Task runs at once. Offline, moto's interpreter starts
a thread per execution (``ExecutionWorker.start``) and all of them evaluate at
once, but each function has only a few local workers
(``StackOptions.workers_per_function``). In a burst of 2000 uploads, 2000
executions queue for 4 workers, and a Task's ``TimeoutSeconds`` runs while it
waits: tasks time out, retry, and end as FAILED records that AWS would never
write. Thousands of runnable interpreter threads also share one GIL.

With the gate, an execution starts (it is RUNNING, with its ``ExecutionStarted``
event and start time) and then waits for one of ``limit`` slots before its
first state, so a Task's timer starts only when the local capacity can serve it.
Executions that start other executions (a ``states:startExecution`` integration)
skip the gate: holding a slot while waiting for a child that needs one could
deadlock. moto's own synchronous Express worker (``SyncExecutionWorker``) skips it
too; the offline ``StartSyncExecution`` (``sync_executions``) starts an ordinary
execution, which takes a slot like any other while its caller waits.

A test checks that moto still evaluates every started execution at once (and
still calls ``program.eval(env)`` on what ``_get_evaluation_entrypoint`` returns).
"""

from __future__ import annotations

import threading
from typing import Any

from moto.stepfunctions.parser.backend.execution_worker import (
    ExecutionWorker,
    SyncExecutionWorker,
)

DEFAULT_LIMIT = 16
_UNGATED_MARKERS = ("states:startExecution", "states:::states:")


class ExecutionGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the execution gate needs at least one slot, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.waited = 0

    def __enter__(self) -> ExecutionGate:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.waited += 1
            self._slots.acquire()
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.running -= 1
        self._slots.release()


class _GatedProgram:
    """The parsed program, evaluated inside a slot of the gate."""

    def __init__(self, program: Any, gate: ExecutionGate) -> None:
        self._program = program
        self._gate = gate

    def eval(self, env: Any) -> None:
        with self._gate:
            self._program.eval(env)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._program, name)


class _Installed:
    """What install() replaced, and the gate in force."""

    previous: Any = None
    gate: ExecutionGate | None = None


def _gated_entrypoint(self: ExecutionWorker) -> Any:
    program = _Installed.previous(self)
    gate = _Installed.gate
    if gate is None or isinstance(self, SyncExecutionWorker):
        return program
    definition = self._evaluation_details.state_machine_details.definition
    if any(marker in definition for marker in _UNGATED_MARKERS):
        return program
    return _GatedProgram(program, gate)


def install(limit: int = DEFAULT_LIMIT) -> ExecutionGate:
    """Gate executions started from now on; returns the gate (its counters)."""
    if _Installed.previous is None:
        _Installed.previous = ExecutionWorker._get_evaluation_entrypoint
        ExecutionWorker._get_evaluation_entrypoint = _gated_entrypoint  # type: ignore[method-assign]
    _Installed.gate = ExecutionGate(limit)
    return _Installed.gate


def uninstall() -> None:
    if _Installed.previous is not None:
        ExecutionWorker._get_evaluation_entrypoint = _Installed.previous  # type: ignore[method-assign]
    _Installed.previous = None
    _Installed.gate = None
