"""``scones down``: stop the stack that ``scones up`` started."""

from __future__ import annotations

import argparse
import os
import signal
import time

from scones.cli.arguments import seconds
from scones.cli.errors import CommandFailed
from scones.cli.stack_state import STATE_FILE, process_alive, read_state, read_stopped
from scones.offline.executions import STOP_WAIT_SECONDS

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
    state = read_state()
    pid = int(str(state["pid"]))
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
            return _report_records(pid)
        time.sleep(0.1)
    raise CommandFailed(f"the offline stack (pid {pid}) did not stop within {args.timeout:g} s")


def _report_records(pid: int) -> int:
    stopped = read_stopped(pid)
    if stopped is None:
        raise CommandFailed(
            f"the offline stack (pid {pid}) stopped without saying where its records went "
            "(was it killed?); they lived in its memory and are lost"
        )
    if stopped["unfinished"]:
        print(stopped["unfinished"])
    if stopped["records_file"]:
        print(f"records saved to {stopped['records_file']}")
        return 0
    raise CommandFailed(f"the offline stack could not save its records: {stopped['error']}")
