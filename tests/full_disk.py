"""A folder on a disk that fills up: files written there share a few free bytes, and a
write past them fails with ``ENOSPC``, after writing what still fitted.

Opening still works, as on a real full disk (a new name needs no data block), so what was
opened with truncation (``Path.write_text``, ``savefig(path)``) has already lost its old
content when the write fails, as it has on a real full disk.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

_WRITING = frozenset("wax+")


class _Disk:
    def __init__(self, free: int) -> None:
        self.free = free


class _FillingFile:
    """A file on ``disk``: each write takes its size from the free bytes left."""

    def __init__(self, handle: Any, disk: _Disk) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, data: Any) -> int:
        if len(data) > self._disk.free:
            self._handle.write(data[: self._disk.free])
            self._disk.free = 0
            self._handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= len(data)
        return int(self._handle.write(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def fill_disk(monkeypatch: pytest.MonkeyPatch, folder: Path, *, free: int = 1024) -> None:
    """From now on (until the test ends), what is written in ``folder`` shares ``free``
    bytes: enough for a command's check that it can write there, not for its results."""
    real_open = builtins.open
    full = folder.resolve()
    disk = _Disk(free)

    def where(file: Any) -> Path | None:
        if isinstance(file, int):  # a descriptor (os.open, then open(descriptor))
            return Path(os.readlink(f"/proc/self/fd/{file}"))
        if isinstance(file, (str, bytes, os.PathLike)):
            return Path(os.fsdecode(file)).resolve()
        return None

    def open_on_filling_disk(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        path = where(file)
        if _WRITING & set(mode) and path is not None and path.is_relative_to(full):
            return _FillingFile(handle, disk)
        return handle

    monkeypatch.setattr(builtins, "open", open_on_filling_disk)
    monkeypatch.setattr(io, "open", open_on_filling_disk)


def disk_full_after_one_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpacking a zip writes its first file, then the disk is full: ENOSPC, naming no
    file, as a failed write does."""
    write = zipfile.ZipFile._extract_member  # type: ignore[attr-defined]

    def extract_member(archive: zipfile.ZipFile, member: Any, target: str, pwd: Any) -> str:
        write(archive, member, target, pwd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zipfile.ZipFile, "_extract_member", extract_member)
