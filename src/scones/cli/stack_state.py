"""Shared pieces of the stack commands: options, parameters and the state file.

``scones up`` writes ``.scones/stack.json`` (endpoints, names, its pid) so that
``classify``, ``results`` and ``down`` can find the running stack. When it stops it
writes ``.scones/stopped.json`` (its pid and where it saved the records) so that
``down`` can say where they are.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from scones.cli.errors import CommandError
from scones.offline.client import StackClient, StackEndpoints
from scones.template_params import parameter_defaults

STATE_DIR = Path(os.environ.get("SCONES_STATE_DIR", ".scones"))
STATE_FILE = STATE_DIR / "stack.json"
STOPPED_FILE = STATE_DIR / "stopped.json"
# Offline retries wait for real: keep them short unless the user asks otherwise.
OFFLINE_DEFAULTS = {"RetryIntervalSeconds": "1", "RetryMaxDelaySeconds": "2"}


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("offline stack")
    group.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a template.yaml parameter, e.g. --param ConfidenceThreshold=0.9",
    )
    group.add_argument("--port", type=int, default=0, help="AWS emulator port (default: any free)")
    group.add_argument(
        "--model-port", type=int, default=0, help="model endpoint port (default: any free)"
    )


def parse_params(pairs: list[str]) -> dict[str, str]:
    declared = parameter_defaults()
    overrides = dict(OFFLINE_DEFAULTS)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {pair!r}: expected NAME=VALUE")
        if name not in declared:
            raise CommandError(
                f"--param {name}: template.yaml has no such parameter "
                f"(known: {', '.join(sorted(declared))})"
            )
        overrides[name] = value
    return overrides


def write_state(endpoints: StackEndpoints, pid: int, work_dir: Path) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    document = {**endpoints.to_json(), "pid": pid, "work_dir": str(work_dir)}
    STATE_FILE.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_state() -> dict[str, object]:
    try:
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CommandError(
            f"no offline stack is running (no {STATE_FILE}); start one with `scones up`"
        ) from exc
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{STATE_FILE} is corrupt: {exc}; remove it and run `scones up`"
        ) from exc
    pid = int(str(state.get("pid", 0)))
    if not process_alive(pid):
        raise CommandError(
            f"the offline stack recorded in {STATE_FILE} (pid {pid}) is not running; "
            "start one with `scones up`"
        )
    return dict(state)


def client_from_state() -> StackClient:
    state = read_state()
    fields = StackEndpoints.__dataclass_fields__
    return StackClient(StackEndpoints(**{k: str(v) for k, v in state.items() if k in fields}))


def clear_state(pid: int) -> None:
    try:
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return
    if int(state.get("pid", 0)) == pid:
        STATE_FILE.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by anyone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_stopped(pid: int, records_file: Path | None, error: str | None) -> None:
    """What a stopped ``scones up`` left behind, for ``scones down`` to report."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "pid": pid,
        "records_file": str(records_file) if records_file else None,
        "error": error,
    }
    STOPPED_FILE.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_stopped(pid: int) -> dict[str, str | None] | None:
    """The stop report of the ``scones up`` with this pid, if it wrote one."""
    try:
        document = json.loads(STOPPED_FILE.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if int(document.get("pid", 0)) != pid:
        return None
    return {"records_file": document.get("records_file"), "error": document.get("error")}
