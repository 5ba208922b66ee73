"""A daemon thread that sweeps what moto keeps forever, at an interval, until stopped.

Used by ``express_retention`` (finished Express executions) and ``interpreter_threads``
(ended interpreter threads): each gives the sweep, which returns how many it dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self


class PeriodicSweep:
    """Calls ``sweep`` every ``interval`` seconds on a daemon thread; ``dropped`` sums
    what it returned."""

    def __init__(self, name: str, interval: float, sweep: Callable[[], int]) -> None:
        self.interval = interval
        self.dropped = 0
        self._sweep = sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.dropped += self._sweep()
