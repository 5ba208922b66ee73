"""How `scones run` and `scones up` take stop signals (scones.cli.signals)."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scones.cli.main import main
from scones.cli.signals import handling_stop_signals, stop_signals_interrupt
from scones.offline.stack import OfflineStack
from scones.offline.workflow_bench import process_tree
from scones.template_params import PROJECT_ROOT


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


# ``scones run`` itself, in this process: a stop signal (or the terminal closing) at the
# exact moment that used to lose the records, raised by a patched step of the real run.
ONE_IMAGE = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[0]


class _Run:
    """What a ``scones run`` left behind: its exit code and output, the records files,
    and (looked at before anything is cleaned up) its work folder and processes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
        self.out = out
        self.stacks: list[Any] = []
        self.code: int | None = None
        self.work_dir_left = False
        self.processes_left: list[int] = []
        self.saved: list[Path] = []
        real_start, self._real_stop = OfflineStack.start, OfflineStack.stop

        def start(stack: OfflineStack) -> OfflineStack:
            self.stacks.append(stack)
            return real_start(stack)

        monkeypatch.setattr(OfflineStack, "start", start)

    def __call__(self, *args: str) -> _Run:
        before = set(process_tree(os.getpid()))
        try:
            self.code = main(["run", str(ONE_IMAGE), "--out", str(self.out), *args])
        finally:
            [stack] = self.stacks
            self.saved = list(self.out.glob("records-*.json"))
            self.work_dir_left = stack.work_dir.exists()
            deadline = time.monotonic() + 10  # a worker killed by the stop is reaped at once
            while (left := set(process_tree(os.getpid())) - before) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.processes_left = sorted(left)
            self._real_stop(stack)  # what the run left running, for the tests after this one
        return self

    def records(self) -> list[dict[str, Any]]:
        """The records the run saved (a file only the cleanup saved does not count)."""
        assert len(self.saved) == 1, f"the run saved {len(self.saved)} records files"
        [path] = self.saved
        records: list[dict[str, Any]] = json.loads(path.read_text())["records"]
        return records


@pytest.fixture
def scones_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stop_signals_at_their_default: None
) -> _Run:
    return _Run(monkeypatch, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.xdist_group("offline-stack")
def test_a_stop_signal_while_a_finished_run_stops_its_stack_cannot_lose_the_records(
    scones_run: _Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every record is in and the stack stops: no signal came before, so the first one (a
    Ctrl-C, a SIGTERM) lands in the stop itself. It is only recorded; the stop saves the
    records, removes the work folder and ends the processes, then the run ends as
    interrupted."""
    real_stop = OfflineStack.stop

    def stop(stack: OfflineStack) -> None:
        signal.raise_signal(signal.SIGTERM)
        real_stop(stack)

    monkeypatch.setattr(OfflineStack, "stop", stop)
    run = scones_run("--no-progress")
    assert run.code == 130
    assert [record["status"] for record in run.records()] in (["ACCEPTED"], ["NEEDS_REVIEW"])
    assert not run.work_dir_left and run.processes_left == []
    out, err = capsys.readouterr()
    assert "records saved to" in out and "interrupted" in err


@pytest.mark.slow
@pytest.mark.xdist_group("offline-stack")
def test_a_ctrl_c_the_moment_the_stack_has_started_still_stops_it(
    scones_run: _Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = OfflineStack.start  # the run's own wrapper

    def start(stack: OfflineStack) -> OfflineStack:
        started = real_start(stack)
        signal.raise_signal(signal.SIGINT)
        return started

    monkeypatch.setattr(OfflineStack, "start", start)
    run = scones_run("--no-progress")
    assert run.code == 130
    assert run.records() == []  # saved: nothing was uploaded yet
    assert not run.work_dir_left and run.processes_left == []


class _Terminal(io.StringIO):
    """A terminal that closes: from then on every write fails as a hung-up tty's does."""

    hung_up = False

    def write(self, text: str) -> int:
        if self.hung_up:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return super().write(text)


@pytest.mark.slow
@pytest.mark.xdist_group("offline-stack")
def test_closing_the_terminal_mid_run_still_saves_the_records(
    scones_run: _Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGHUP, and every write to the terminal fails (EIO): the run is interrupted, the
    output of the stop cannot be shown, but the stop still runs. The command ends as
    interrupted (130, not the output's 1) and names standard output, whose error it kept
    for the end (GuardedStdout)."""
    from scones.cli import run as run_module

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)  # what main wraps in GuardedStdout

    def classify(*args: object) -> object:
        terminal.hung_up = True
        signal.raise_signal(signal.SIGHUP)
        pytest.fail("SIGHUP did not interrupt the run")  # no `except Exception` hides it

    monkeypatch.setattr(run_module, "_classify", classify)
    run = scones_run("--no-progress")
    assert "stack up in" in terminal.getvalue()
    assert "records saved" not in terminal.getvalue()  # written after the hang-up: lost
    err = capsys.readouterr().err
    assert "scones: interrupted" in err, err
    assert "cannot write to standard output: [Errno 5]" in err, err
    assert run.code == 130
    assert run.records() == []  # saved: nothing was uploaded yet
    assert not run.work_dir_left and run.processes_left == []


def test_a_hung_up_terminal_takes_standard_error_too_and_the_status_is_still_130(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closed terminal fails every write, standard error's as well: "scones: interrupted"
    and the output's error cannot be said, and neither may replace the status (an OSError
    traceback, or 1)."""
    from scones.cli import main as cli

    def interrupted() -> None:
        for stream in (stdout, stderr):
            stream.hung_up = True
        print("a result")  # kept for the end by GuardedStdout, where it is named
        raise KeyboardInterrupt

    stdout, stderr = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["cost"]) == 130
    assert stdout.getvalue() == stderr.getvalue() == ""


def test_ctrl_c_while_the_commands_load_ends_as_an_interrupted_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in the first half second (the commands' modules loading, the options read)
    printed a KeyboardInterrupt traceback."""
    from scones.cli import main as cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["cost"]) == 130
    assert capsys.readouterr().err == "scones: interrupted\n"
