"""Files a command writes, written safely in folders other users may share, and the local
files it reads, read only if they are regular files (``read_regular_file``).

Every result file (``scones run``'s report, ``evaluate --out``, ``report``, ``bench ...
--json``, a saved records file, the state file) is written whole or not at all, over any
earlier one (``write_bytes_atomically``). A folder may be shared with other users (a
/tmp-like one), so nothing here opens a name another user could have placed: a new file is
created ``O_EXCL``, a partial one too, under a random name. What holds uploads or their
traces (the offline stack's state and work folders, a kept work folder with its capture
files) is a folder of its owner's only (``private_folder``).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


# What a path that is not a regular file is, for the error that names it.
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder"))  # fmt: skip


def read_regular_file(path: Path) -> bytes:
    """``path``'s bytes, if it is a regular file when it is opened; otherwise ``OSError``
    naming it. Checked on the open file, not the name: a FIFO put in a file's place after
    its folder was listed blocked the read forever, and a device never ends."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise OSError(errno.EINVAL, f"not a regular file: {kind}", str(path))
        with os.fdopen(os.dup(descriptor), "rb") as stream:
            return stream.read()
    finally:
        os.close(descriptor)
