"""Save the results table of an offline stack to a JSON file before the stack goes away.

The offline stack lives in memory (moto keeps every bucket, queue and table in
the process), so its records are lost when it stops. ``OfflineStack.stop``
writes them here first: ``<out>/records-<stack>-<UTC time>.json``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def records_path(out_dir: Path, stack_name: str, now: datetime | None = None) -> Path:
    """A new file name in ``out_dir``: the UTC time, with a counter if that name is taken."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = out_dir / f"records-{stack_name}-{stamp}.json"
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = out_dir / f"records-{stack_name}-{stamp}-{counter}.json"
    return candidate


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
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path
