"""Load captured traffic from a folder or an ``s3://`` prefix, as one time series.

Both the project's model server and SageMaker write the same JSON Lines format,
and the parsing is the monitor's own (``scones_core.monitoring.capture``), so
the report shows exactly what the monitor measures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scones_core.monitoring.capture import (
    CAPTURE_SUFFIX,
    CaptureBatch,
    parse_capture_text,
    read_capture_objects,
    warn_not_a_capture_file,
)
from scones_core.monitoring.data_warnings import DataWarning
from scones_core.monitoring.locations import S3Location, S3ReadError, list_objects

from scones.safe_files import read_regular_file


class CaptureSourceError(Exception):
    """The capture location cannot be read or holds no capture files."""


@dataclass(frozen=True)
class CaptureSeries:
    """Captured requests in time order: the data the report is drawn from."""

    source: str
    labels: tuple[str, ...]
    times: tuple[datetime, ...]
    confidences: tuple[float, ...]
    predicted: tuple[str, ...]
    files: int
    malformed_lines: int
    # Each skipped line: which file, which line, and why.
    warnings: tuple[DataWarning, ...] = ()

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def from_batch(cls, batch: CaptureBatch, labels: Sequence[str], source: str) -> CaptureSeries:
        records = batch.sorted_records()
        return cls(
            source=source,
            labels=tuple(labels),
            times=tuple(record.inference_time for record in records),
            confidences=tuple(record.confidence for record in records),
            predicted=tuple(record.label for record in records),
            files=batch.files_read,
            malformed_lines=batch.malformed_lines,
            warnings=tuple(batch.warnings),
        )


def load_capture(source: str, labels: Sequence[str], *, s3_client: Any = None) -> CaptureSeries:
    """Every capture record under ``source`` (a folder, a file or an ``s3://`` folder)."""
    if source.startswith("s3://"):
        batch = _load_s3(source, labels, s3_client)
    elif "://" in source:
        raise CaptureSourceError(f"{source!r} is neither a local path nor an s3:// prefix")
    else:
        batch = _load_local(Path(source), labels)
    if batch.lines_read == 0:
        raise CaptureSourceError(f"the capture files under {source} hold no records")
    return CaptureSeries.from_batch(batch, labels, source)


def _load_local(path: Path, labels: Sequence[str]) -> CaptureBatch:
    if not path.exists():
        raise CaptureSourceError(f"capture path {path} does not exist")
    files = [path] if path.is_file() else _files_under(path)
    captures: list[Path] = []
    others: list[tuple[Path, str]] = []  # each with why it is not read ("": its name)
    for file in files:
        if not file.is_file():
            others.append(
                (file, "not a regular file (a FIFO, a socket, a device or a link to nothing)")
            )
        elif file == path or file.name.endswith(CAPTURE_SUFFIX):
            captures.append(file)
        else:
            others.append((file, ""))
    if not captures:
        raise CaptureSourceError(_no_captures(str(path), [str(file) for file in files]))
    batch = CaptureBatch()
    # As the monitor does: another file among the captures (a .jsonl.gz copy) is named,
    # not left out of the report without a word; so is a FIFO, whose read never ends.
    for file, why in others:
        warn_not_a_capture_file(batch, str(file), why)
    for file in captures:
        try:
            text = read_regular_file(file)
        except OSError as exc:
            raise CaptureSourceError(f"cannot read capture file {file}: {exc}") from exc
        batch.extend(parse_capture_text(text, labels, source=str(file)))
    return batch


def _files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``. A folder that cannot be listed is named as a
    :class:`CaptureSourceError`: skipped, its requests would be missing from the report
    without a word (and for ``folder`` itself, the report would say there are none)."""

    def unreadable(error: OSError) -> None:
        where = error.filename if error.filename is not None else folder
        raise CaptureSourceError(f"cannot list capture folder {where}: {error.strerror or error}")

    return sorted(
        Path(root, name) for root, _, names in os.walk(folder, onerror=unreadable) for name in names
    )


def _no_captures(where: str, others: Sequence[str]) -> str:
    found = f"; it holds {len(others)} other file(s), e.g. {others[0]}" if others else ""
    return f"no capture files (*{CAPTURE_SUFFIX}) under {where}{found}"


def _load_s3(uri: str, labels: Sequence[str], s3_client: Any) -> CaptureBatch:
    try:
        location = S3Location.parse(uri)
    except ValueError as exc:
        raise CaptureSourceError(str(exc)) from exc
    client = s3_client if s3_client is not None else _default_s3_client()
    # A folder: without the '/', ``.../endpoint`` would also list ``.../endpoint-staging``.
    prefix = location.as_prefix()
    try:
        # Every object: read_capture_objects names the ones that are not capture files.
        keys = [obj.key for obj in list_objects(client, location.bucket, prefix)]
        if not any(key.endswith(CAPTURE_SUFFIX) for key in keys):
            others = [f"s3://{location.bucket}/{key}" for key in keys if not key.endswith("/")]
            raise CaptureSourceError(_no_captures(uri, others))
        return read_capture_objects(client, location.bucket, keys, labels)
    except S3ReadError as exc:  # it names the listing or the object that failed
        raise CaptureSourceError(str(exc)) from exc


def _default_s3_client() -> Any:
    """boto3's S3 client; it honours ``AWS_ENDPOINT_URL``, so it reaches the offline stack."""
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.session.Session().client("s3", region_name=region)
