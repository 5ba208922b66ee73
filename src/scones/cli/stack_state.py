"""Shared pieces of the stack commands: options, parameters and the state file.

``scones up`` writes ``.scones/stack.json`` at the project root (endpoints, names, its
pid) so that ``classify``, ``results``, ``env``, ``invoke`` and ``down``, run from any
folder inside the project, find the running stack. When it stops it
writes ``.scones/stopped.json`` (its pid and where it saved the records) so that
``down`` can say where they are. The folder is its owner's only (0700, with the stack's
work folder, whose logs and capture name or hold uploads, in it) and so are its files.
"""

from __future__ import annotations

import argparse
import json
import os
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from scones.cli.arguments import file_or_folder, port
from scones.cli.errors import CommandError, CommandFailed
from scones.offline.client import StackClient, StackEndpoints
from scones.paths import MANIFEST_NAME
from scones.safe_files import another_users, private_folder, write_text_atomically
from scones.template_params import (
    LOCAL_STACK_NAME,
    PROJECT_ROOT,
    ParameterError,
    resolve_parameters,
)


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (the working directory) that holds
    ``template.yaml``; outside any project, the project this package belongs to."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file():
            return folder
    return PROJECT_ROOT


def _state_dir_configured() -> bool:
    return bool(os.environ.get("SCONES_STATE_DIR"))


def _state_dir() -> Path:
    """``$SCONES_STATE_DIR``, else ``.scones`` at the project root: every command, run from
    anywhere inside the project, finds the stack that ``scones up`` started."""
    if _state_dir_configured():
        return Path(os.environ["SCONES_STATE_DIR"]).resolve()
    return find_project_root() / ".scones"


STATE_DIR = _state_dir()
# A folder SCONES_STATE_DIR names is the user's, used as it is (it may be their home);
# .scones is scones' own, so it is made (or narrowed to) its owner's only.
STATE_DIR_IS_OURS = not _state_dir_configured()
# The way out of a refused state folder.
_ELSEWHERE = "set SCONES_STATE_DIR to a folder of your own"
# The stack's work folder: its function logs, unpacked code, and capture files.
STACK_WORK_DIR = STATE_DIR / "stack"
# State files: the owner's only, as their folder.
PRIVATE_FILE_MODE = 0o600
STATE_FILE = STATE_DIR / "stack.json"
STOPPED_FILE = STATE_DIR / "stopped.json"
# Held (flock) by the `scones up` process from its check for a running stack until it
# exits: two started at once cannot both come up. The kernel drops it if the process dies.
# It holds the holder's pid and start time: `scones down` stops a stack still starting.
UP_LOCK_FILE = STATE_DIR / "up.lock"
# The largest process id (pid_t is a C int): a larger one in a state file is no process,
# and os.kill refuses it with OverflowError.
MAX_PID = 2**31 - 1
# Offline retries wait for real: keep them short unless the user asks otherwise.
OFFLINE_DEFAULTS = {"RetryIntervalSeconds": "1", "RetryMaxDelaySeconds": "2"}


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("offline stack")
    group.add_argument(
        "--model", type=file_or_folder, help="model folder (default: the shipped model)"
    )
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a template.yaml parameter, e.g. --param ConfidenceThreshold=0.9",
    )
    group.add_argument("--port", type=port, default=0, help="AWS emulator port (default: any free)")
    group.add_argument(
        "--model-port", type=port, default=0, help="model endpoint port (default: any free)"
    )


def parse_params(
    pairs: list[str],
    *,
    defaults: Mapping[str, str] = OFFLINE_DEFAULTS,
    problems: Sequence[str] = (),
) -> dict[str, str]:
    """The ``--param`` overrides (on top of ``defaults``, the offline ones unless given),
    checked as ``sam deploy`` checks them before anything starts: every problem is named
    at once, after ``problems`` the caller found in other options."""
    overrides = dict(defaults)
    problems = list(problems)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            problems.append(f"--param {pair!r}: expected NAME=VALUE")
            continue
        overrides[name] = value
    try:
        resolve_parameters(overrides)
    except ParameterError as exc:
        problems += exc.problems
    if problems:
        raise CommandError(str(ParameterError(problems)))
    return overrides


def stack_params(pairs: list[str]) -> dict[str, str]:
    """``parse_params`` for a command that starts a stack: the values are refused, too,
    where ``make deploy`` refuses them because an Express execution would time out before
    it records its batch (offline nothing stops an execution at 5 minutes, so the stack
    would record what AWS leaves unrecorded)."""
    from scones.deploy import express_time_problem

    overrides = parse_params(pairs)
    if problem := express_time_problem(overrides):
        raise CommandError(f"these parameters would not deploy: {problem}")
    return overrides


def effective_params(overrides: dict[str, str]) -> dict[str, str]:
    """Every template parameter's value for these (already checked) overrides."""
    return resolve_parameters(overrides)


def model_identity(model_dir: Path) -> dict[str, Any]:
    """Name, version and ONNX SHA-256 from the served model's manifest (model.json)."""
    try:
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"dir": str(model_dir)}
    return {
        "dir": str(model_dir),
        "name": manifest.get("name"),
        "version": manifest.get("version"),
        "onnx_sha256": manifest.get("onnx_sha256"),
    }


def write_state(
    endpoints: StackEndpoints,
    pid: int,
    work_dir: Path,
    *,
    stack_name: str = LOCAL_STACK_NAME,
    labels: str = "",
    model: dict[str, Any] | None = None,
    physical_ids: dict[str, str] | None = None,
    records_dir: Path | None = None,
) -> None:
    """What other commands need: endpoints and names, the labels (true labels from folder
    names, as ``scones run``), the served model's identity (one model per stack), and the
    folder its records go to when it stops (``scones down`` looks there when the stack left
    no stop report)."""
    _make_state_dir()
    document = {
        **endpoints.to_json(),
        "pid": pid,
        # The process's start time: a pid reused by another program after the stack died
        # has another one, so it is never taken for the stack (nor signalled).
        "pid_started": process_started(pid),
        "work_dir": str(work_dir),
        "stack_name": stack_name,
        "model_labels": labels,
        "model": model or {},
        # logical id -> physical id of every resource (``scones invoke`` names functions).
        "physical_ids": physical_ids or {},
        "records_dir": str(records_dir.resolve()) if records_dir else None,
    }
    write_text_atomically(STATE_FILE, json.dumps(document, indent=2) + "\n", mode=PRIVATE_FILE_MODE)


class StackNotRunning(CommandFailed):
    """No stack is recorded, or the recorded one is gone: a command may start its own.
    A corrupt record of a live stack is not this: its process still holds the ports."""


def _refuse_another_users_stack() -> None:
    """A state file another user wrote into a folder of scones' name names their stack: a
    command would send this user's images to it. Root reads every folder anyway."""
    if not STATE_DIR_IS_OURS:
        return
    try:
        owner = another_users(STATE_FILE.stat())
    except OSError:
        return  # read_state says what is wrong with it
    if owner is not None:
        raise CommandFailed(
            f"{STATE_FILE} belongs to another user (uid {owner}): the stack it names is "
            "theirs, and what a command sends it goes to them. Remove the folder (or have "
            f"its owner do so), or {_ELSEWHERE}"
        )


def read_state() -> dict[str, Any]:
    """The running stack's state file, checked for what the commands read from it: a file
    that is not what ``write_state`` wrote is reported, never trusted, and another user's
    is refused."""
    _refuse_another_users_stack()
    try:
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StackNotRunning(
            f"no offline stack is running (no {STATE_FILE}); start one with `scones up`"
        ) from exc
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise CommandFailed(
            f"{STATE_FILE} is corrupt: {exc}; remove it and run `scones up`"
        ) from exc
    except OSError as exc:
        raise CommandFailed(f"{STATE_FILE} cannot be read: {exc}") from exc
    pid = state.get("pid") if isinstance(state, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise CommandFailed(
            f"{STATE_FILE} is corrupt: it names no process id; remove it and run `scones up`"
        )
    if not 0 < pid <= MAX_PID:
        raise CommandFailed(
            f"{STATE_FILE} is corrupt: {reprlib.repr(pid)} is not a process id; remove it and run "
            "`scones up`"
        )
    started = state.get("pid_started")
    if started is not None and not isinstance(started, str):
        raise CommandFailed(
            f"{STATE_FILE} is corrupt: its pid_started {reprlib.repr(started)} is not a start "
            "time; remove it and run `scones up`"
        )
    if started is None and process_alive(pid) and process_started(os.getpid()) is not None:
        # `scones up` records when its process started wherever that can be read: without
        # it, pid could be any process (and `scones down` would signal it).
        raise CommandFailed(
            f"{STATE_FILE} is corrupt: it names pid {pid} without its start time, so it cannot "
            "be told from another process; remove it and run `scones up`"
        )
    if not process_alive(pid) or (started is not None and process_started(pid) != started):
        clear_state(pid)  # the process is gone: its record would only mislead the next command
        raise StackNotRunning(
            f"the offline stack recorded in {STATE_FILE} (pid {pid}) is not running (it was "
            "killed; the stale record is removed); start one with `scones up`"
        )
    problem = _field_problem(state)
    if problem:
        # Its process runs, and `scones down` reads this file too: say which one to stop.
        raise CommandFailed(
            f"{STATE_FILE} is corrupt: {problem}; stop the `scones up` that wrote it (pid "
            f"{pid}, Ctrl-C where it runs; if that is no `scones up`, remove the file) and run "
            "`scones up` again"
        )
    return dict(state)


def _field_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with the fields commands look into, as ``write_state`` writes them:
    ``model`` an object, ``physical_ids`` an object of names (logical id -> physical id)."""
    fields = StackEndpoints.__dataclass_fields__
    missing = sorted(
        name
        for name, field in fields.items()
        if field.default is MISSING and not isinstance(state.get(name), str)
    )
    if missing:
        return f"it lacks {', '.join(missing)}"
    model = state.get("model")
    if model is not None and not isinstance(model, dict):
        return f"its model {reprlib.repr(model)} is not an object"
    physical_ids = state.get("physical_ids")
    if physical_ids is None:
        return None
    if not isinstance(physical_ids, dict):
        return f"its physical_ids {reprlib.repr(physical_ids)} is not an object"
    for logical_id, physical_id in physical_ids.items():
        if not isinstance(physical_id, str):
            return (
                f"its physical_ids gives {reprlib.repr(logical_id)} "
                f"{reprlib.repr(physical_id)}, not a resource name"
            )
    return None


def _make_state_dir() -> None:
    try:
        private_folder(STATE_DIR, elsewhere=_ELSEWHERE, ours=STATE_DIR_IS_OURS)
    except (FileExistsError, NotADirectoryError):
        raise CommandFailed(
            f"the state folder {STATE_DIR} (SCONES_STATE_DIR, else .scones in the project) "
            "is, or lies under, a file: name a folder"
        ) from None
    except OSError as exc:
        raise CommandFailed(f"the state folder {STATE_DIR} cannot be used: {exc}") from None


def make_stack_work_dir() -> Path:
    """The running stack's work folder in the state folder, its owner's only."""
    _make_state_dir()
    try:
        return private_folder(STACK_WORK_DIR, elsewhere=_ELSEWHERE).resolve()
    except OSError as exc:
        raise CommandFailed(f"the stack's work folder cannot be used: {exc}") from None


@contextmanager
def up_lock() -> Iterator[None]:
    """Hold the project's `scones up` lock for the duration, or refuse at once."""
    import fcntl

    _make_state_dir()
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(UP_LOCK_FILE, flags, PRIVATE_FILE_MODE)
    except OSError as exc:  # a link there is refused (O_NOFOLLOW), never followed
        raise CommandFailed(f"{UP_LOCK_FILE} cannot be opened: {exc}") from None
    with open(descriptor, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandFailed(
                "an offline stack is already running (or starting) in this project: another "
                "`scones up` holds it; use it, or stop it with `scones down`"
            ) from None
        _write_holder(handle, f"{os.getpid()} {process_started(os.getpid()) or ''}\n")
        try:
            yield
        finally:
            _write_holder(handle, "")


def _write_holder(handle: Any, text: str) -> None:
    """Name the lock's holder (``text``), or no one: only `scones down` reads it, so a
    lock whose holder cannot be written (a full disk) is held all the same."""
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(text)
        handle.flush()
    except OSError:
        pass


def starting_up() -> int | None:
    """The pid of the `scones up` that holds the lock, while it runs (a stack it starts
    has no state file until it is up); None when no `scones up` holds it."""
    try:
        descriptor = os.open(UP_LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(descriptor, encoding="ascii", errors="replace") as handle:
            fields = handle.read(64).split()
    except OSError:
        return None
    if not fields or not fields[0].isdigit():
        return None
    pid, started = int(fields[0]), (fields[1] if len(fields) > 1 else None)
    # A pid reused since (its holder was killed before it could clear the file) is not it.
    if not process_alive(pid) or process_started(pid) != started:
        return None
    return pid


def client_from_state() -> StackClient:
    state = read_state()  # which has every field StackEndpoints needs
    fields = StackEndpoints.__dataclass_fields__
    return StackClient(
        StackEndpoints(**{k: v for k, v in state.items() if k in fields and isinstance(v, str)})
    )


def clear_state(pid: int) -> None:
    try:
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return
    if isinstance(state, dict) and state.get("pid") == pid:
        STATE_FILE.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs (owned by anyone): an exited one its parent
    has not reaped yet (a zombie) does not."""
    if not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_state(pid) != "Z"


def _process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (``Z``: exited, not reaped), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0] if fields else None


def process_started(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc), or ``None`` where
    there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat(5)


def write_stopped(
    pid: int,
    records_file: Path | None,
    error: str | None,
    unfinished: str | None = None,
    model_server: str | None = None,
) -> None:
    """What a stopped ``scones up`` left behind, for ``scones down`` to report (the records
    file as an absolute path: ``scones down`` may run from another folder), and what became
    of a model server that died (``OfflineStack.model_server_report``). A report that
    cannot be written (a full state folder) is a ``CommandFailed`` naming the file."""
    _make_state_dir()
    document = {
        "pid": pid,
        "records_file": str(records_file.resolve()) if records_file else None,
        "error": error,
        "unfinished": unfinished,
        "model_server": model_server,
    }
    try:
        write_text_atomically(
            STOPPED_FILE, json.dumps(document, indent=2) + "\n", mode=PRIVATE_FILE_MODE
        )
    except OSError as exc:  # its sentence names no file when the write itself fails
        raise CommandFailed(
            f"the stop report {STOPPED_FILE} could not be written in the state folder "
            f"{STATE_DIR} (SCONES_STATE_DIR, else .scones in the project): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def read_stopped(pid: int) -> dict[str, str | None] | None:
    """The stop report of the ``scones up`` with this pid, if it wrote one."""
    try:
        document = json.loads(STOPPED_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    # A report that is not what write_stopped wrote is no report of this pid.
    if not isinstance(document, dict) or document.get("pid") != pid:
        return None
    return {
        name: value if isinstance(value := document.get(name), str) else None
        for name in ("records_file", "error", "unfinished", "model_server")
    }
