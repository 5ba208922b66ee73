"""SageMaker data capture: JSON Lines files in, one ``CaptureRecord`` per request out.

SageMaker writes one JSON object per line, many lines per file, and files under
``{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl``::

    {"captureData": {"endpointInput":  {"observedContentType": "image/png", "mode": "INPUT",
                                        "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "[0.97, 0.03]",
                                        "encoding": "JSON"}},
     "eventMetadata": {"eventId": "...", "inferenceTime": "2026-11-25T12:00:00Z"},
     "eventVersion": "0"}

``eventMetadata`` sits beside ``captureData``; some writers nest it inside, and
both are accepted. The output is the model's probabilities in label order, as
JSON text or as base64 of that text; a record without ``endpointOutput`` (capture
set to Input only) has nothing to measure and is named as such. Every line of
every file is read; a line that does not parse is counted and skipped, never
fatal. Records are unique by
``eventMetadata.eventId``: a capture file copied under a second key (a replay,
a backfill, a manual copy) would otherwise count its requests twice, so the
first record read is kept and every later copy is counted and reported.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from scones_core.endpoint_response import probabilities as endpoint_probabilities
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.data_warnings import (
    DUPLICATE_CAPTURE_RECORD,
    MALFORMED_CAPTURE_LINE,
    UNKNOWN_CAPTURE_VERSION,
    DataWarning,
)
from scones_core.monitoring.locations import S3Location, list_objects
from scones_core.monitoring.timestamps import floor_hour, hours_between, parse_timestamp
from scones_core.objects import object_missing

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
CAPTURE_SUFFIX = ".jsonl"
# SageMaker buffers records before writing a file, so a file can land in the
# hour folder after the request's hour; the next hour's folder is read as well.
_LATE_FILE_ALLOWANCE = timedelta(hours=1)
# A file can also sit in the folder *before* its records' hour: it is filed and named
# by when its buffer was opened, which can be just before the hour. So the previous
# folder's files named as opened this long before the window are read too. AWS does
# not document how long a buffer stays open; delivery takes minutes (what
# MonitorSettleMinutes, default 10, waits for), so ten minutes covers it while
# listing only that folder's tail.
EARLY_FILE_ALLOWANCE = timedelta(minutes=10)
# SageMaker's (and the offline server's) file name: when the buffer was opened, within
# its hour folder, then a UUID.
_FILE_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{3})-[^/]+" + re.escape(CAPTURE_SUFFIX) + "$")
_STREAM_CHUNK_BYTES = 1 << 20
# A valid SageMaker record without the model's answer: the endpoint's DataCaptureConfig
# captures requests only, so the monitor has nothing to measure.
OUTPUT_NOT_CAPTURED = "output not captured (CaptureMode Input only)"
# The capture record format SageMaker writes (``eventVersion``) that this module reads.
KNOWN_CAPTURE_VERSIONS = frozenset({"0"})


class CaptureFormatError(ValueError):
    """A capture line that is not a record this project's endpoint writes."""


@dataclass(frozen=True)
class CaptureRecord:
    """One captured request: when it happened and what the model answered."""

    inference_time: datetime
    probabilities: tuple[float, ...]
    label: str
    confidence: float
    event_id: str | None = None
    event_version: str | None = field(default=None, compare=False)
    # Where the record was read, so a duplicate can name both copies.
    source: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def location(self) -> str:
        return f"{self.source or '<unknown>'} line {self.line if self.line is not None else '?'}"


@dataclass
class CaptureBatch:
    """Records read from capture files, plus what could not be used and why.

    Records are added through ``add``/``extend``, which keep the first record of
    each ``eventId`` and turn later copies into ``DUPLICATE_CAPTURE_RECORD``
    warnings. Records without an ``eventId`` cannot be matched and are all kept.
    """

    records: list[CaptureRecord] = field(default_factory=list)
    files_read: int = 0
    lines_read: int = 0
    malformed_lines: int = 0
    duplicate_records: int = 0
    outside_window: int = 0
    warnings: list[DataWarning] = field(default_factory=list)
    _first_seen: dict[str, CaptureRecord] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Records given to the constructor go through the same deduplication.
        initial, self.records = self.records, []
        for record in initial:
            self.add(record)

    def add(self, record: CaptureRecord) -> bool:
        """Keep ``record`` unless its ``eventId`` was already kept; ``False`` for a duplicate."""
        event_id = record.event_id
        if event_id is not None:
            first = self._first_seen.get(event_id)
            if first is not None:
                self.duplicate_records += 1
                self.warn(
                    DataWarning(
                        DUPLICATE_CAPTURE_RECORD,
                        record.source or "<unknown>",
                        record.line,
                        f"eventId {event_id!r} was already read at {first.location}",
                    ),
                    "skipping duplicate capture record",
                )
                return False
            self._first_seen[event_id] = record
        self.records.append(record)
        return True

    def warn(self, warning: DataWarning, message: str) -> None:
        """Record ``warning`` and log it, once, where it was found."""
        self.warnings.append(warning)
        warning.log(logger, message)

    def extend(self, other: CaptureBatch) -> None:
        """Merge ``other`` (already logged) into this batch, deduplicating across both."""
        self.files_read += other.files_read
        self.lines_read += other.lines_read
        self.malformed_lines += other.malformed_lines
        self.duplicate_records += other.duplicate_records
        self.outside_window += other.outside_window
        self.warnings.extend(other.warnings)
        for record in other.records:
            self.add(record)

    def sorted_records(self) -> list[CaptureRecord]:
        return sorted(self.records, key=lambda record: record.inference_time)


def parse_capture_line(
    line: str | bytes,
    labels: Sequence[str],
    *,
    source: str | None = None,
    line_number: int | None = None,
) -> CaptureRecord:
    """Parse one JSON Lines record; raises ``CaptureFormatError`` saying what is wrong."""
    try:
        document = load_json(line)
    except NotJSON as exc:
        raise CaptureFormatError(str(exc)) from exc
    if not isinstance(document, dict):
        raise CaptureFormatError("not a JSON object")
    capture = document.get("captureData")
    if not isinstance(capture, dict):
        raise CaptureFormatError("no captureData object")
    output = capture.get("endpointOutput")
    if "endpointOutput" not in capture and isinstance(capture.get("endpointInput"), dict):
        raise CaptureFormatError(OUTPUT_NOT_CAPTURED)
    if not isinstance(output, dict):
        raise CaptureFormatError("no captureData.endpointOutput object")
    metadata = document.get("eventMetadata", capture.get("eventMetadata"))
    if not isinstance(metadata, dict):
        raise CaptureFormatError("no eventMetadata object")
    try:
        inference_time = parse_timestamp(metadata.get("inferenceTime"))
    except ValueError as exc:
        raise CaptureFormatError(f"eventMetadata.inferenceTime: {exc}") from exc
    answer = decode_output(output)
    try:
        probabilities = endpoint_probabilities(answer, labels)
    except ValueError as exc:
        raise CaptureFormatError(f"endpointOutput: {exc}") from exc
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    event_id = metadata.get("eventId")
    version = document.get("eventVersion")
    return CaptureRecord(
        inference_time=inference_time,
        probabilities=probabilities,
        label=labels[best],
        confidence=probabilities[best],
        event_id=event_id if isinstance(event_id, str) else None,
        event_version=None if version is None else str(version),
        source=source,
        line=line_number,
    )


def decode_output(output: dict[str, Any]) -> Any:
    """The endpoint's answer as a Python value, whatever the capture encoding."""
    data = output.get("data")
    encoding = str(output.get("encoding", "")).upper()
    if not isinstance(data, str):
        if isinstance(data, list) and encoding in {"", "JSON"}:
            return data
        raise CaptureFormatError("endpointOutput.data is not a string")
    if encoding == "BASE64":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CaptureFormatError(f"endpointOutput.data is not base64 text: {exc}") from exc
    elif encoding in {"JSON", ""}:
        text = data
    elif encoding == "CSV":
        return _csv_numbers(data)
    else:
        raise CaptureFormatError(f"unknown endpointOutput.encoding {encoding!r}")
    try:
        return load_json(text)
    except NotJSON as exc:
        raise CaptureFormatError(f"endpointOutput.data is {exc}") from exc


def _csv_numbers(text: str) -> list[float]:
    try:
        return [float(cell) for cell in text.strip().split(",")]
    except ValueError as exc:
        raise CaptureFormatError(f"endpointOutput.data is not CSV numbers: {exc}") from exc


def parse_capture_lines(
    lines: Iterable[str | bytes],
    labels: Sequence[str],
    *,
    source: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> CaptureBatch:
    """Parse every line of one capture file; keep records with ``start <= time < end``.

    Every malformed line and every repeated ``eventId`` becomes a warning naming
    ``source`` and the 1-based line number (blank lines count, as in an editor).
    """
    batch = CaptureBatch(files_read=1)
    versions_seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        batch.lines_read += 1
        if number == 1 and isinstance(line, bytes) and line.startswith(_GZIP_MAGIC):
            # Its "lines" would be compressed bytes, each a meaningless warning.
            batch.malformed_lines += 1
            batch.warn(
                DataWarning(
                    MALFORMED_CAPTURE_LINE,
                    source,
                    None,
                    "the file is gzip-compressed; data capture writes JSON Lines text",
                ),
                "skipping gzip-compressed capture file",
            )
            break
        try:
            record = parse_capture_line(line, labels, source=source, line_number=number)
        except CaptureFormatError as exc:
            batch.malformed_lines += 1
            batch.warn(
                DataWarning(MALFORMED_CAPTURE_LINE, source, number, str(exc)),
                "skipping malformed capture line",
            )
            continue
        if record.event_version is not None and record.event_version not in versions_seen:
            versions_seen.add(record.event_version)
            if record.event_version not in KNOWN_CAPTURE_VERSIONS:
                batch.warn(
                    DataWarning(
                        UNKNOWN_CAPTURE_VERSION,
                        source,
                        number,
                        f"eventVersion {record.event_version!r} is not one this monitor reads "
                        f"({', '.join(sorted(KNOWN_CAPTURE_VERSIONS))}); its records were "
                        "read as that format",
                    ),
                    "capture file of an unknown eventVersion",
                )
        if (start is not None and record.inference_time < start) or (
            end is not None and record.inference_time >= end
        ):
            batch.outside_window += 1
            continue
        batch.add(record)
    return batch


def parse_capture_text(
    text: str | bytes,
    labels: Sequence[str],
    *,
    source: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> CaptureBatch:
    """``parse_capture_lines`` over a whole file's contents."""
    return parse_capture_lines(text.splitlines(), labels, source=source, start=start, end=end)


def file_opened_at(key: str, folder_hour: datetime) -> datetime | None:
    """When a capture file's buffer was opened, from its ``MM-SS-mmm-<uuid>.jsonl`` name
    in ``folder_hour``'s folder; ``None`` for a name outside that layout."""
    match = _FILE_NAME.match(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    minute, second, millis = (int(part) for part in match.groups())
    if minute > 59 or second > 59:
        return None
    return folder_hour + timedelta(minutes=minute, seconds=second, milliseconds=millis)


@dataclass(frozen=True)
class CaptureFolder:
    """One ``.../yyyy/mm/dd/hh/`` folder to read: all of it, or (``opened_from`` set) only
    the files named as opened at or after that time."""

    hour: datetime
    prefix: str
    opened_from: datetime | None = None

    @property
    def start_after(self) -> str | None:
        """A listing start that skips the names of earlier minutes (names sort by time)."""
        if self.opened_from is None or self.opened_from < self.hour:
            return None
        return f"{self.prefix}{self.opened_from.minute:02d}"

    def holds(self, key: str) -> bool:
        """Whether ``key``, listed under this folder, is to be read."""
        if self.opened_from is None:
            return True
        opened = file_opened_at(key, self.hour)
        return opened is not None and opened >= self.opened_from


def capture_folders(
    capture: S3Location, endpoint: str, variant: str, start: datetime, end: datetime
) -> list[CaptureFolder]:
    """The folders that can hold records from ``[start, end)``, oldest first: the last
    ``EARLY_FILE_ALLOWANCE`` of the hour before, then every hour to one after ``end``."""
    base = capture.child(endpoint, variant)

    def folder(hour: datetime, opened_from: datetime | None = None) -> CaptureFolder:
        return CaptureFolder(
            hour, base.child(hour.strftime("%Y/%m/%d/%H")).as_prefix(), opened_from
        )

    early = start - EARLY_FILE_ALLOWANCE
    return [folder(hour, early) for hour in hours_between(early, floor_hour(start))] + [
        folder(hour) for hour in hours_between(start, end + _LATE_FILE_ALLOWANCE)
    ]


def read_capture_window(
    s3: Any,
    capture: S3Location,
    *,
    endpoint: str,
    variant: str,
    labels: Sequence[str],
    start: datetime,
    end: datetime,
) -> CaptureBatch:
    """Every capture record with ``start <= inferenceTime < end``, from every file and line
    of ``capture_folders``."""
    batch = CaptureBatch()
    for folder in capture_folders(capture, endpoint, variant, start, end):
        keys = [
            obj.key
            for obj in list_objects(
                s3, capture.bucket, folder.prefix, start_after=folder.start_after
            )
            if folder.holds(obj.key)
        ]
        batch.extend(read_capture_objects(s3, capture.bucket, keys, labels, start=start, end=end))
    return batch


def read_capture_objects(
    s3: Any,
    bucket: str,
    keys: Iterable[str],
    labels: Sequence[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> CaptureBatch:
    """Parse the ``.jsonl`` objects among ``keys``; other keys are ignored.

    Objects are streamed line by line, so memory holds one line (one captured
    request, image included) at a time rather than a whole file.
    """
    batch = CaptureBatch()
    for key in keys:
        if not key.endswith(CAPTURE_SUFFIX):
            continue
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if not object_missing(exc):
                raise
            # Deleted between listing and reading (an S3 lifecycle rule, say).
            logger.warning("capture file vanished before it was read", extra={"key": key})
            continue
        try:
            batch.extend(
                parse_capture_lines(
                    body.iter_lines(chunk_size=_STREAM_CHUNK_BYTES),
                    labels,
                    source=f"s3://{bucket}/{key}",
                    start=start,
                    end=end,
                )
            )
        finally:
            body.close()
    return batch
