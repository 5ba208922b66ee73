"""Save the results table of an offline stack to a JSON file before the stack goes away.

The offline stack lives in memory (moto keeps every bucket, queue and table in
the process), so its records are lost when it stops. ``OfflineStack.stop``
writes them here first: ``<out>/records-<stack>-<UTC time>.json`` (where ``<out>`` cannot
take them, a folder of the user's own instead: see ``OfflineStack``), whole or not at all
and under a name created ``O_EXCL`` (``scones.safe_files``). Records hold keys, labels and
scores, no upload itself: they get the umask's mode, as any file a command writes.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from scones_core.records import json_value

from scones.safe_files import (
    create_first_free,
    write_text_atomically,
)


def _records_name(stack_name: str, stamp: str) -> str:
    """A records file's name (``stamp`` a glob's ``*`` to find them)."""
    return f"records-{stack_name}-{stamp}.json"


def records_path(out_dir: Path, stack_name: str, now: datetime | None = None) -> Path:
    """A new file in ``out_dir``, created empty by this call (so two stacks stopping in the
    same second never pick the same name): the UTC time, with a counter if it is taken."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")

    def name(suffix: str) -> str:
        return _records_name(stack_name, f"{stamp}{suffix}")

    return out_dir / name(create_first_free(out_dir, name, taken=lambda suffix: False))


class UnrecordedUpload(TypedDict):
    """An acknowledged upload (object version) the table had no record of at the stop."""

    bucket: str
    key: str
    version: str


def records_document(
    records: list[dict[str, Any]],
    *,
    stack_name: str,
    table: str,
    now: datetime,
    unrecorded: Sequence[UnrecordedUpload] | None = (),
) -> str:
    """A records file's text: every item of the table, sorted by ``pk``, and every upload
    that had none (``unrecorded``, all of them: the stop's line names only the first few,
    and once the stack is gone this file is the only list; None, written null, when the
    uploads could not be listed, so an empty list always means none)."""
    document = {
        "stack": stack_name,
        "table": table,
        "saved_at": now.isoformat().replace("+00:00", "Z"),
        "count": len(records),
        "records": sorted(records, key=lambda r: str(r.get("pk", ""))),
        "unrecorded": None if unrecorded is None else list(unrecorded),
    }
    return json.dumps(document, indent=2, default=json_value) + "\n"


def save_records(
    records: list[dict[str, Any]],
    *,
    out_dir: Path,
    stack_name: str,
    table: str,
    now: datetime | None = None,
    unrecorded: Sequence[UnrecordedUpload] | None = (),
) -> Path:
    """Write every item of the table (sorted by ``pk``), and the uploads without one,
    atomically; return the file's path."""
    now = now or datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = records_path(out_dir, stack_name, now)
    try:
        write_text_atomically(
            path,
            records_document(
                records, stack_name=stack_name, table=table, now=now, unrecorded=unrecorded
            ),
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


# The last folder a stopping stack tries: a new one in the temporary folder (TMPDIR).
TEMPORARY_RECORDS_PREFIX = "scones-records-"


def temporary_records_folder() -> Path:
    """A new folder in the temporary folder, its owner's only: that folder is shared,
    and the records name every upload. ``mkdtemp`` makes it 0700 under a random name,
    so no other user can have placed it or read what goes in it."""
    return Path(tempfile.mkdtemp(prefix=TEMPORARY_RECORDS_PREFIX))


def temporary_records_folders() -> list[Path]:
    """This user's folders that ``temporary_records_folder`` made (another user's are
    neither readable nor theirs to point at)."""
    found = []
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMPORARY_RECORDS_PREFIX}*"):
        try:
            status = folder.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid():
            found.append(folder)
    return found


def newest_records_file(folders: list[Path], stack_name: str, since: float) -> Path | None:
    """The newest records file of ``stack_name`` in ``folders`` written at or after
    ``since`` (a time.time()), if any: where a stack that left no word saved them."""
    found: list[tuple[float, Path]] = []
    for folder in folders:
        try:
            candidates = list(folder.glob(_records_name(stack_name, "*")))
        except OSError:
            continue
        for path in candidates:
            try:
                status = path.stat()
            except OSError:
                continue
            # Empty: a name reserved by a save that then failed.
            if status.st_size and status.st_mtime >= since:
                found.append((status.st_mtime, path))
    return max(found)[1] if found else None
