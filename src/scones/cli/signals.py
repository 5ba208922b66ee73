"""How a command that holds an offline stack stops: every way a terminal or a service
manager asks (Ctrl-C, SIGTERM, SIGHUP when the terminal closes) ends the same way, and
a second signal cannot cut short the saving of the records.

A signal the process inherited as ignored stays ignored: ``nohup scones up &`` must
outlive the terminal it was started from.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], Any]


@contextmanager
def handling_stop_signals(handler: Handler) -> Iterator[None]:
    """``handler`` for every stop signal not inherited as ignored, restored afterwards.
    Python runs signal handlers in the main thread only; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def stop_signals_interrupt() -> Iterator[list[int]]:
    """The first stop signal raises ``KeyboardInterrupt``, as Ctrl-C does, so the same
    ``finally`` stops the stack and saves its records; later ones are only recorded (in
    the list yielded), so they cannot interrupt that ``finally``."""
    received: list[int] = []

    def interrupt_once(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    with handling_stop_signals(interrupt_once):
        yield received


@contextmanager
def stop_signals_recorded(received: list[int]) -> Iterator[None]:
    """Every stop signal is only appended to ``received``: around the stop of a stack that
    ``stop_signals_interrupt`` guards, where the first signal (on a run that ended by
    itself, none came before) would otherwise interrupt the saving of the records."""

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    with handling_stop_signals(record):
        yield
