"""Finished Express executions are forgotten after a while offline, as AWS never keeps them.

AWS keeps no record of an Express execution that a caller can read back: ListExecutions,
DescribeExecution and GetExecutionHistory do not serve Express state machines (their
history goes to the log group). moto keeps every execution for as long as the stack
runs, each with its full event history and a deep copy of its state machine: about
150 KB per upload, so a ``scones up`` that runs for days grows without bound, and every
DescribeExecution scans the whole list.

A sweeper drops finished executions of Express state machines once they have been over
for ``retention`` (ten minutes by default: the offline tools and tests read a run's
executions right after it, never later). Standard executions are kept: on AWS their
history is readable for 90 days, and their names must stay unique.

A test checks that moto still keeps finished Express executions, so this goes when moto
stops doing that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scones.offline.executions import backends, finished_at, forget, is_express
from scones.offline.sweeper import PeriodicSweep

DEFAULT_RETENTION = timedelta(minutes=10)
_SWEEP_EVERY_SECONDS = 30.0


def prune_finished_express(now: datetime, retention: timedelta = DEFAULT_RETENTION) -> int:
    """Forget the Express executions that ended before ``now - retention``; how many."""
    cutoff = now - retention
    dropped = 0
    for backend in backends():
        for machine in list(getattr(backend, "state_machines", [])):
            if not is_express(machine):
                continue
            for execution in list(machine.executions):
                ended = finished_at(execution)
                if ended is not None and ended < cutoff and forget(machine, execution):
                    dropped += 1
    return dropped


class ExpressRetention(PeriodicSweep):
    """Prunes finished Express executions every ``_SWEEP_EVERY_SECONDS`` (or half the
    retention, when shorter) until stopped."""

    def __init__(self, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.retention = retention
        interval = min(_SWEEP_EVERY_SECONDS, max(1.0, retention.total_seconds() / 2))
        super().__init__(
            "express-retention",
            interval,
            lambda: prune_finished_express(datetime.now(UTC), self.retention),
        )
