"""Forget the Step Functions interpreter's threads once they have ended.

moto 5.2.5's interpreter appends every thread it starts (one per execution, per program,
per state it runs on a thread, per Map iteration, per callback wait) to the module-level
list ``moto.stepfunctions.parser.utils.TMP_THREADS``, and nothing reads or empties it:
about six threads, 20 KB, per upload, Standard executions as well as Express ones, kept
for as long as the stack runs.

A sweeper drops the threads that have started and ended. A thread is appended before it
starts (``ident`` is None until then): those stay. The list is only ever appended to
elsewhere, so replacing the part read leaves threads appended meanwhile in place.

A test fails once moto stops keeping ended threads, so this module can go.
"""

from __future__ import annotations

import threading

from scones.offline.sweeper import PeriodicSweep

_SWEEP_EVERY_SECONDS = 30.0
_pruning = threading.Lock()


def prune_finished_threads() -> int:
    """Drop the ended threads from moto's list; how many."""
    from moto.stepfunctions.parser.utils import TMP_THREADS

    with _pruning:
        read = len(TMP_THREADS)
        keep = [t for t in TMP_THREADS[:read] if t.ident is None or t.is_alive()]
        TMP_THREADS[:read] = keep
    return read - len(keep)


class ThreadSweeper(PeriodicSweep):
    """Prunes every ``interval`` seconds until stopped."""

    def __init__(self, interval: float = _SWEEP_EVERY_SECONDS) -> None:
        super().__init__("interpreter-threads", interval, prune_finished_threads)
