"""``scones down``: stop the stack that ``scones up`` started."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from scones.cli.arguments import seconds
from scones.cli.errors import CommandFailed
from scones.cli.stack_state import (
    STATE_FILE,
    StackNotRunning,
    process_alive,
    process_started,
    read_state,
    read_stopped,
    starting_up,
)
from scones.offline.executions import STOP_WAIT_SECONDS
from scones.offline.records_file import (
    TEMPORARY_RECORDS_PREFIX,
    newest_records_file,
    temporary_records_folders,
)

# Beyond the executions' wait: saving the records and stopping the emulator.
_SAVE_SECONDS = 60
_TELL_AFTER_SECONDS = 3.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("down", help="stop the stack started by `scones up`")
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=STOP_WAIT_SECONDS + _SAVE_SECONDS,
        help="seconds to wait for it to stop (it first lets running executions end, up to "
        f"{STOP_WAIT_SECONDS:g} s, then saves its records; default %(default)g)",
    )
    parser.set_defaults(handler=down_command)


def down_command(args: argparse.Namespace) -> int:
    try:
        state = read_state()
    except StackNotRunning:
        # No state file yet: a `scones up` may still be starting (deploying the template).
        starting = starting_up()
        if starting is None:
            raise
        return _stop_starting(starting, args.timeout)
    pid = int(str(state["pid"]))
    try:  # written once the stack was up: a records file of its own is newer
        up_since = STATE_FILE.stat().st_mtime
    except OSError:
        up_since = 0.0
    os.kill(pid, signal.SIGTERM)
    started = time.monotonic()
    deadline, told = started + args.timeout, False
    while time.monotonic() < deadline:
        if not told and time.monotonic() - started > _TELL_AFTER_SECONDS:
            told = True
            print(
                f"waiting for the offline stack (pid {pid}): it lets running executions end "
                f"(up to {STOP_WAIT_SECONDS:g} s), then saves its records"
            )
        # `scones up` removes its state file as the last step of a clean stop.
        if not STATE_FILE.exists() or not process_alive(pid):
            print(f"offline stack (pid {pid}) stopped")
            STATE_FILE.unlink(missing_ok=True)
            return _report_records(pid, state, up_since)
        time.sleep(0.1)
    raise CommandFailed(
        f"the offline stack (pid {pid}) did not stop within {args.timeout:g} s; it is still "
        "running and may be saving its records, which takes longer the more it holds (about "
        "half a second per thousand): `scones down` again waits on (a second signal never "
        "cuts the save short), or give it more time with --timeout"
    )


def _stop_starting(pid: int, timeout: float) -> int:
    """Stop a `scones up` that holds the lock but wrote no state file yet: it stops once
    its stack has started (a stop signal during the start is kept for then), and saves
    what a stack that came up meanwhile recorded, as any stop does."""
    # Its stop report already written: not starting but ending (its state file is gone
    # before it lets go of the lock), so it is waited for, not signalled.
    started = process_started(pid)
    if read_stopped(pid) is None:
        print(f"a `scones up` (pid {pid}) is still starting the offline stack: stopping it")
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and process_started(pid) == started:
        if time.monotonic() > deadline:
            raise CommandFailed(
                f"the starting offline stack (pid {pid}) did not stop within {timeout:g} s"
            )
        time.sleep(0.1)
    if read_stopped(pid) is not None:  # it came up before the signal, then stopped
        print(f"offline stack (pid {pid}) stopped")
        return _report_records(pid, {}, 0.0)
    print(f"offline stack (pid {pid}) stopped before it came up (no client could reach it yet)")
    return 0


def _report_records(pid: int, state: dict[str, Any], up_since: float) -> int:
    stopped = read_stopped(pid)
    if stopped is None:
        raise CommandFailed(_no_stop_report(pid, state, up_since))
    if stopped["model_server"]:
        print(stopped["model_server"])
    if stopped["unfinished"]:
        print(stopped["unfinished"])
    if stopped["records_file"]:
        print(f"records saved to {stopped['records_file']}")
    if stopped["error"] is None:
        return 0
    instead = f"; they are in {stopped['records_file']}" if stopped["records_file"] else ""
    raise CommandFailed(
        f"the offline stack could not save its records: {stopped['error']}{instead}"
    )


def _no_stop_report(pid: int, state: dict[str, Any], up_since: float) -> str:
    """What to say when the stack left no stop report: it was killed, or it could not
    write the report (its state folder full) after saving the records. Where they may be
    is looked up, in the folders it saves them in (``OfflineStack._save_records``)."""
    records_dir = state.get("records_dir")
    work_dir = state.get("work_dir")
    folders = [Path(records_dir if isinstance(records_dir, str) else "out")]
    if isinstance(work_dir, str):
        folders.append(Path(work_dir))
    stack_name = str(state.get("stack_name", ""))
    found = newest_records_file([*folders, *temporary_records_folders()], stack_name, up_since)
    why = (
        f"the offline stack (pid {pid}) stopped without a stop report (could it not write "
        f"one in {STATE_FILE.parent}, or was it killed?)"
    )
    if found is not None:
        return (
            f"{why}; the newest records file written since it started is {found.resolve()} "
            "(what `scones up` printed as it stopped says where its records went)"
        )
    looked = ", ".join(str(folder) for folder in folders)
    return (
        f"{why}; no records file of it is in {looked} or a "
        f"{Path(tempfile.gettempdir()) / TEMPORARY_RECORDS_PREFIX}* folder: what `scones up` "
        "printed as it stopped says where its records went (killed, it saved none: they "
        "lived in its memory)"
    )
