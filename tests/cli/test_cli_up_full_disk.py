"""`scones up` and `scones down` when a disk fills up while the stack runs.

The stack's records live only in its memory: a full ``--out`` or state folder at the stop
must not lose them, nor leave `scones down` saying they are lost when they were saved.
The real commands run in this process (`scones up` in the main thread, as signals need;
a user's uploads and `scones down` in another thread); the full disk is injected where
scones writes a file (``write_text_atomically``): writes under a full folder fail with
ENOSPC, whose sentence names no file, as the kernel's does. (chmod would not do: tests
may run as root, whom a read-only folder does not stop.)
"""

from __future__ import annotations

import errno
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from state_folder import use_state_folder

from scones.cli import down, stack_state, up
from scones.cli.main import main
from scones.offline import records_file
from scones.template_params import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("offline-stack")]

IMAGES = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[:2]
NO_SPACE = os.strerror(errno.ENOSPC)
# How a folder of a full disk is named with its cause.
FULL = f"OSError: [Errno {errno.ENOSPC}] {NO_SPACE}"


@dataclass
class _Session:
    """One `scones up` ... `scones down`: the folders, what each command returned and
    printed, and the records the uploads got while the stack was up."""

    out: Path
    state: Path
    tmp: Path
    full: set[Path] = field(default_factory=set)
    up_code: int | None = None
    down_code: int | None = None
    output: str = ""
    errors: str = ""
    pks: list[str] = field(default_factory=list)


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Session]:
    tmp_path = tmp_path.resolve()
    state = tmp_path / ".scones"
    use_state_folder(monkeypatch, state)
    monkeypatch.setattr(up, "STATE_FILE", state / "stack.json")
    monkeypatch.setattr(down, "STATE_FILE", state / "stack.json")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    this = _Session(out=tmp_path / "out", state=state, tmp=tmp_path / "tmp")
    real_write = records_file.write_text_atomically

    def write(path: Path, text: str, *, mode: int = 0o666) -> None:
        folder = path.parent.resolve()
        if any(folder == full or full in folder.parents for full in this.full):
            raise OSError(errno.ENOSPC, NO_SPACE)
        real_write(path, text, mode=mode)

    monkeypatch.setattr(records_file, "write_text_atomically", write)
    monkeypatch.setattr(stack_state, "write_text_atomically", write)
    # SIGTERM as a terminal leaves it, once `scones up` has put its own handler back.
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield this
    signal.signal(signal.SIGTERM, previous)


def _up_then_down(session: _Session, capsys: pytest.CaptureFixture[str], *full: Path) -> None:
    """`scones up --out OUT`; two uploads get their records; then the ``full`` folders'
    disk fills, and `scones down` stops the stack."""
    up_running = threading.Event()
    up_running.set()

    def user() -> None:
        try:
            deadline = time.monotonic() + 120
            while not stack_state.STATE_FILE.exists():
                assert time.monotonic() < deadline, "scones up did not come up"
                time.sleep(0.1)
            client = stack_state.client_from_state()
            uploads = [client.upload_file(path, path.name) for path in IMAGES]
            records = client.wait_for_records(uploads, 120)
            session.pks = sorted(record["pk"] for record in records.values())
            session.full.update(full)
            session.down_code = main(["down", "--timeout", "20"])
        finally:
            if session.down_code is None and up_running.is_set():
                os.kill(os.getpid(), signal.SIGTERM)  # whatever failed, `scones up` ends

    helper = threading.Thread(target=user)
    helper.start()
    try:
        session.up_code = main(["up", "--out", str(session.out)])
    finally:
        up_running.clear()
        helper.join(60)
    captured = capsys.readouterr()
    # Rich wraps long lines at the terminal's width, at a space or inside a long path:
    # what was said is compared without its whitespace (``said``).
    session.output, session.errors = said(captured.out), captured.err
    assert len(session.pks) == len(IMAGES), session.errors


def said(text: str) -> str:
    """``text`` without whitespace, as printed output is compared."""
    return "".join(text.split())


def _saved_pks(path: Path) -> list[str]:
    document = json.loads(path.read_text())
    assert document["count"] == len(document["records"])
    return sorted(record["pk"] for record in document["records"])


def test_a_full_state_folder_at_the_stop_loses_no_word_of_where_the_records_are(
    session: _Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stop report cannot be written: `scones up` says which file, in which folder,
    and why, still prints where the records went and removes its state file (`scones down`
    waited for it until its timeout); `scones down` names the records file it finds, not
    "lost"."""
    _up_then_down(session, capsys, session.state)

    [saved] = session.out.glob("records-*.json")
    assert _saved_pks(saved) == session.pks
    assert said(f"records saved to {saved}") in session.output
    assert (
        f"the stop report {session.state / 'stopped.json'} could not be written in the "
        f"state folder {session.state} (SCONES_STATE_DIR, else .scones in the project): {FULL}"
    ) in session.errors
    assert not (session.state / "stack.json").exists()
    assert session.up_code == 1
    assert session.down_code == 1
    assert "stopped without a stop report" in session.errors
    assert f"the newest records file written since it started is {saved}" in session.errors
    assert "lost" not in session.errors


def test_a_full_out_folder_at_the_stop_saves_the_records_in_the_private_work_folder(
    session: _Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out cannot take the records file: it goes to the stack's work folder in the
    state folder (its owner's only, as records name uploads), and both commands name
    the folder that failed, its cause, and where the records are."""
    _up_then_down(session, capsys, session.out)

    assert not list(session.out.glob("*records-*"))  # nor an empty or partial file
    [saved] = (session.state / "stack").glob("records-*.json")
    assert _saved_pks(saved) == session.pks
    assert (session.state / "stack").stat().st_mode & 0o777 == 0o700
    failed = f"{session.out.resolve()}: {FULL}"
    assert said(f"the records could not be saved: {failed}") in session.output
    assert said(f"records saved instead to {saved}") in session.output
    # `scones down` says the same: where they are, and what failed.
    assert said(f"records saved to {saved}") in session.output
    assert (
        f"the offline stack could not save its records: {failed}; they are in {saved}"
    ) in session.errors
    assert session.up_code == session.down_code == 1


def test_full_out_and_state_folders_save_the_records_in_a_private_temporary_folder(
    session: _Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state folder shares the full disk: the records go to a new folder of the
    temporary folder, its owner's only (the temporary folder is shared)."""
    _up_then_down(session, capsys, session.out, session.state)

    [folder] = session.tmp.glob("scones-records-*")
    assert folder.stat().st_mode & 0o777 == 0o700
    [saved] = folder.glob("records-*.json")
    assert _saved_pks(saved) == session.pks
    work = session.state / "stack"
    assert (
        said(f"the records could not be saved: {session.out.resolve()}: {FULL}; {work}: {FULL}")
        in session.output
    )
    assert said(f"records saved instead to {saved}") in session.output
    # No stop report either (the state folder is full): `scones down` finds the file.
    assert f"the newest records file written since it started is {saved}" in session.errors
    assert "lost" not in session.errors


def test_when_no_folder_can_take_the_records_they_go_to_standard_error(
    session: _Session, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last resort: every record as a records file's JSON on standard error, and
    every folder tried named with its cause. `scones down` finds no records file: one
    of an earlier stack in --out is not taken for this one's."""
    session.out.mkdir()
    earlier = session.out / "records-scones-20250101T000000Z.json"
    earlier.write_text('{"records": []}\n')
    os.utime(earlier, (time.time() - 3600,) * 2)
    _up_then_down(session, capsys, session.out, session.state, session.tmp)

    start = session.errors.index('{\n  "stack"')
    document, _ = json.JSONDecoder().raw_decode(session.errors[start:])
    assert sorted(record["pk"] for record in document["records"]) == session.pks
    assert document["count"] == len(session.pks)
    assert not list(session.tmp.iterdir())  # the folder made for them is not left empty
    problem = (
        f"{session.out.resolve()}: {FULL}; {session.state / 'stack'}: {FULL}; "
        f"a new folder in {session.tmp}: {FULL}; written to standard error instead"
    )
    assert said(f"the records could not be saved: {problem}") in session.output
    # No stop report, no records file: `scones down` names where it looked.
    assert (
        f"no records file of it is in {session.out}, {session.state / 'stack'} or a "
        f"{session.tmp}/scones-records-* folder"
    ) in session.errors
    assert str(earlier) not in session.errors
    assert session.up_code == session.down_code == 1
