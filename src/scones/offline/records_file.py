"""Save the results table of an offline stack to a JSON file before the stack goes away.

The offline stack lives in memory (moto keeps every bucket, queue and table in
the process), so its records are lost when it stops. ``OfflineStack.stop``
writes them here first: ``<out>/records-<stack>-<UTC time>.json`` (where ``<out>`` cannot
take them, a folder of the user's own instead: see ``OfflineStack``). ``scones run``'s
report files, and every result file a command writes (``scones evaluate --out``, ``scones
report``, ``scones bench ... --json``), are written the same way (``write_text_atomically``,
``write_bytes_atomically``): whole, or not at all, over any earlier one.

An ``--out`` folder may be shared with other users (a /tmp-like folder), so nothing here
opens a name another user could have placed: the final name is created ``O_EXCL``, the
partial file too, under a random name. Records and reports hold keys, labels, scores and
thumbnails, no upload itself: they get the umask's mode, as any file a command writes.
What does hold uploads or their traces (the offline stack's state folder and work folder,
a kept work folder with its capture files) is made with ``private_folder``.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict


def create_first_free(
    folder: Path, name: Callable[[str], str], taken: Callable[[str], bool]
) -> str:
    """The first suffix ("", then "-2", "-3"...) for which this call creates the empty file
    ``folder/name(suffix)`` (``O_EXCL``, so two processes never get the same one) and
    ``taken(suffix)`` is false."""
    for counter in itertools.count(1):
        suffix = "" if counter == 1 else f"-{counter}"
        if taken(suffix):
            continue
        try:
            # 0o666 less the umask, as open() would: a report, never an executable.
            os.close(os.open(folder / name(suffix), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return suffix
    raise AssertionError("unreachable")


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
    unrecorded: Sequence[UnrecordedUpload] = (),
) -> str:
    """A records file's text: every item of the table, sorted by ``pk``, and every upload
    that had none (``unrecorded``, all of them: the stop's line names only the first few,
    and once the stack is gone this file is the only list)."""
    document = {
        "stack": stack_name,
        "table": table,
        "saved_at": now.isoformat().replace("+00:00", "Z"),
        "count": len(records),
        "records": sorted(records, key=lambda r: str(r.get("pk", ""))),
        "unrecorded": list(unrecorded),
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def save_records(
    records: list[dict[str, Any]],
    *,
    out_dir: Path,
    stack_name: str,
    table: str,
    now: datetime | None = None,
    unrecorded: Sequence[UnrecordedUpload] = (),
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


def write_text_atomically(path: Path, text: str, *, mode: int = 0o666) -> None:
    """``text`` as UTF-8 into ``path``, whole or not at all (``write_bytes_atomically``)."""
    write_bytes_atomically(path, text.encode("utf-8"), mode=mode)


def write_json_file(path: Path, document: Any) -> Path:
    """A command's JSON result (``--json``, ``--out``), indented, written whole or not at
    all over any earlier one; its folder is made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(document, indent=2) + "\n")
    return path


def write_bytes_atomically(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """``data`` into ``path`` in one rename, so a full disk or a kill midway never leaves a
    truncated file there, and an earlier file of that name stays as it was. The partial
    file beside it, ``.<name>.<random>.partial``, is created new (``O_EXCL``, never through
    a link another user planted in a shared folder) with ``mode`` less the umask; the
    rename then replaces whatever ``path`` is, a link included, never writing through it.
    An ``OSError`` names ``path`` (a write's own error names no file, and the partial
    file's name would mean nothing to the user)."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(partial, flags, mode)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with open(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file (the same class: ``OSError`` picks it from the
    errno)."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, os.fspath(path))


# Owner only: a folder holding uploads, their capture or logs naming them.
PRIVATE_FOLDER_MODE = 0o700


def another_users(status: os.stat_result) -> int | None:
    """The owner's uid when a file or folder scones named belongs to another ordinary user
    (who can read what is put in it, or wrote what is read from it); None when it is this
    user's, or root runs this (root reads every folder anyway: a container on a user's
    checkout)."""
    return status.st_uid if os.geteuid() not in (status.st_uid, 0) else None


def private_folder(folder: Path, *, elsewhere: str, ours: bool = True) -> Path:
    """``folder``, readable by its owner only (0700) when this call creates it (its parents
    as the umask says). An existing folder of a name scones gives (``ours``) must be this
    user's, and is narrowed to 0700 (an earlier version left it open); another user's is
    refused, as one made in a shared folder to read what is put in it. One the user named
    is used as it is. ``elsewhere`` is the caller's way to use another folder instead."""
    try:
        folder.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True)
    except FileExistsError:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, not a folder") from None
    else:
        return folder
    if ours:
        status = folder.stat()
        if (owner := another_users(status)) is not None:
            raise PermissionError(
                f"{folder} belongs to another user (uid {owner}), who can read what "
                f"is put in it: remove it (or have its owner do so), or {elsewhere}"
            )
        if stat.S_IMODE(status.st_mode) & ~PRIVATE_FOLDER_MODE:
            os.chmod(folder, PRIVATE_FOLDER_MODE)
    return folder
