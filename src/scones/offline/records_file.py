"""Save the results table of an offline stack to a JSON file before the stack goes away.

The offline stack lives in memory (moto keeps every bucket, queue and table in
the process), so its records are lost when it stops. ``OfflineStack.stop``
writes them here first: ``<out>/records-<stack>-<UTC time>.json``. ``scones run``'s report
files are written the same way (``write_text_atomically``): whole, or not at all.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
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


def records_path(out_dir: Path, stack_name: str, now: datetime | None = None) -> Path:
    """A new file in ``out_dir``, created empty by this call (so two stacks stopping in the
    same second never pick the same name): the UTC time, with a counter if it is taken."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")

    def name(suffix: str) -> str:
        return f"records-{stack_name}-{stamp}{suffix}.json"

    return out_dir / name(create_first_free(out_dir, name, taken=lambda suffix: False))


def save_records(
    records: list[dict[str, Any]],
    *,
    out_dir: Path,
    stack_name: str,
    table: str,
    now: datetime | None = None,
) -> Path:
    """Write every item of the table (sorted by ``pk``) atomically; return the file's path."""
    now = now or datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = records_path(out_dir, stack_name, now)
    document = {
        "stack": stack_name,
        "table": table,
        "saved_at": now.isoformat().replace("+00:00", "Z"),
        "count": len(records),
        "records": sorted(records, key=lambda r: str(r.get("pk", ""))),
    }
    try:
        write_text_atomically(path, json.dumps(document, indent=2, default=str) + "\n")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` in one rename, so a full disk or a kill midway never leaves a
    truncated file there. ``path``'s name must be the caller's own (a reserved name, as
    ``create_first_free`` gives): so is its partial file, ``.<name>.partial`` beside it."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
