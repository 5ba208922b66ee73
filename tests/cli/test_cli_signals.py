"""How `scones run` and `scones up` take stop signals (scones.cli.signals)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from scones.cli.signals import handling_stop_signals, stop_signals_interrupt


@pytest.fixture
def stop_signals_at_their_default() -> Iterator[None]:
    """The stop signals as a terminal leaves them: under ``nohup``, or in the background of
    a script, SIGHUP or SIGINT starts ignored, and the handlers then keep it ignored, as
    nohup asks (the test below)."""
    defaults = {
        signal.SIGHUP: signal.SIG_DFL,
        signal.SIGTERM: signal.SIG_DFL,
        signal.SIGINT: signal.default_int_handler,
    }
    previous = {signum: signal.signal(signum, handler) for signum, handler in defaults.items()}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("stop_signals_at_their_default")
def test_the_first_stop_signal_interrupts_and_later_ones_cannot_cut_the_stop_short() -> None:
    stopped = False
    with stop_signals_interrupt() as received:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # give the handler a bytecode boundary
        try:
            pass
        finally:
            # The stack's stop runs here; a second Ctrl-C and a SIGHUP are only recorded.
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGHUP)
            stopped = True
    assert stopped
    assert received == [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_signal_started_ignored_stays_ignored_as_nohup_wants() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with handling_stop_signals(lambda signum, frame: None):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
