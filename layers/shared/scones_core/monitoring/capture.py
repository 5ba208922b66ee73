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
both are accepted. ``endpointOutput.data`` is the endpoint's response body, verbatim
(``JSON``/``CSV`` encoding) or as base64, and is read by the classify step's own rule
(``inference.parse_probabilities``), so a captured answer is usable exactly when the
answer classified an image. A record without ``endpointOutput`` (capture set to
Input only) has nothing to measure and is named as such. Every line of every file
is read; a line that does not parse is skipped, never fatal, and counted (and
warned about) by one window only: the one that owns its file's hour folder. Records
are unique by ``eventMetadata.eventId``: a capture file copied under a second key (a
replay, a backfill, a manual copy) would otherwise count its requests twice, so the
first record read is kept and every later copy is counted and reported.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from http.client import HTTPException
from typing import Any

from botocore.exceptions import BotoCoreError
from urllib3.exceptions import HTTPError as URLLib3Error

from scones_core.errors import ModelResponseInvalid
from scones_core.inference import parse_probabilities
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.data_warnings import (
    DUPLICATE_CAPTURE_RECORD,
    MALFORMED_CAPTURE_LINE,
    MISFILED_CAPTURE_RECORDS,
    NOT_A_CAPTURE_FILE,
    OTHER_VARIANT_CAPTURE,
    UNKNOWN_CAPTURE_VERSION,
    UNREADABLE_CAPTURE_FILE,
    DataWarning,
)
from scones_core.monitoring.locations import (
    S3Location,
    first_key_after,
    list_folders,
    list_objects,
    open_optional_object,
)
from scones_core.monitoring.timestamps import (
    floor_hour,
    format_seconds,
    hour_folder_name,
    hours_between,
    parse_timestamp,
)

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
CAPTURE_SUFFIX = ".jsonl"
# SageMaker buffers records before writing a file, so a file can land in the
# hour folder after the request's hour; the next hour's folder is read as well.
_LATE_FILE_ALLOWANCE = timedelta(hours=1)
_ONE_HOUR = timedelta(hours=1)
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
# Capture objects read at once. A GET spends most of its time waiting on S3, and a run
# reads every file of its hours one after another otherwise: 5,000 of them at a
# 10-30 ms first byte is 50-150 s against the function's 120 s. botocore's default
# connection pool holds 10.
CAPTURE_READ_THREADS = 8
# A valid SageMaker record without the model's answer: the endpoint's DataCaptureConfig
# captures requests only, so the monitor has nothing to measure.
OUTPUT_NOT_CAPTURED = "output not captured (CaptureMode Input only)"
# The capture record format SageMaker writes (``eventVersion``) that this module reads.
KNOWN_CAPTURE_VERSIONS = frozenset({"0"})
# A response stream that broke off mid-read (botocore's ResponseStreamingError,
# IncompleteReadError and ReadTimeoutError, urllib3's ProtocolError, a reset connection).
_BROKEN_STREAM = (BotoCoreError, URLLib3Error, HTTPException, OSError)


class CaptureFormatError(ValueError):
    """A capture line that is not a record this project's endpoint writes; its
    ``inference_time`` when the line says one (a record captured without its output)."""

    inference_time: datetime | None = None


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
    # Why lines of files another window owns, stating a time in this window, could not be
    # used, by reason: not counted or named here (their owner does), only so a window of
    # 0 requests can say why.
    unusable_elsewhere: Counter[str] = field(default_factory=Counter)
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
        warning.log(logger, message, frames_up=1)

    def extend(self, other: CaptureBatch) -> None:
        """Merge ``other`` (already logged) into this batch, deduplicating across both."""
        self.files_read += other.files_read
        self.lines_read += other.lines_read
        self.malformed_lines += other.malformed_lines
        self.duplicate_records += other.duplicate_records
        self.outside_window += other.outside_window
        self.warnings.extend(other.warnings)
        self.unusable_elsewhere.update(other.unusable_elsewhere)
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
    try:
        return _capture_record(document, labels, source, line_number)
    except CaptureFormatError as exc:
        exc.inference_time = _stated_time(document)
        raise


def _stated_time(document: dict[str, Any]) -> datetime | None:
    """The inference time an unusable record states, if it states one that parses."""
    capture = document.get("captureData")
    metadata = document.get(
        "eventMetadata", capture.get("eventMetadata") if isinstance(capture, dict) else None
    )
    if not isinstance(metadata, dict):
        return None
    try:
        return parse_timestamp(metadata.get("inferenceTime"))
    except ValueError:
        return None


def _capture_record(
    document: dict[str, Any], labels: Sequence[str], source: str | None, line_number: int | None
) -> CaptureRecord:
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
    try:
        probabilities = tuple(parse_probabilities(response_body(output), tuple(labels)).values())
    except ModelResponseInvalid as exc:
        raise CaptureFormatError(f"endpointOutput: {exc}") from exc
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    event_id = metadata.get("eventId")
    version = document.get("eventVersion")
    return CaptureRecord(
        inference_time=inference_time,
        probabilities=probabilities,
        label=labels[best],
        confidence=probabilities[best],
        event_id=event_id.strip() or None if isinstance(event_id, str) else None,
        event_version=None if version is None else str(version),
        source=source,
        line=line_number,
    )


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or start <= at) and (end is None or at < end)


def response_body(output: dict[str, Any]) -> bytes:
    """The endpoint's response body as the classify step received it.

    SageMaker keeps a body verbatim when its content type is listed as JSON or CSV
    (``encoding`` ``JSON``/``CSV``) and as base64 otherwise; either way the bytes are the
    endpoint's answer, so a CSV body is read by the same rule as any other (and fails it).
    """
    data = output.get("data")
    encoding = str(output.get("encoding", "")).upper()
    if not isinstance(data, str):
        raise CaptureFormatError("endpointOutput.data is not a string")
    if encoding == "BASE64":
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CaptureFormatError(f"endpointOutput.data is not base64: {exc}") from exc
    if encoding in {"JSON", "CSV", ""}:
        # A lone surrogate survives as bytes that are not UTF-8, as it would on the wire.
        return data.encode("utf-8", "surrogatepass")
    raise CaptureFormatError(f"unknown endpointOutput.encoding {encoding!r}")


def parse_capture_lines(
    lines: Iterable[str | bytes],
    labels: Sequence[str],
    *,
    source: str,
    start: datetime | None = None,
    end: datetime | None = None,
    owner: bool = True,
    read_elsewhere: Callable[[datetime], bool] | None = None,
) -> CaptureBatch:
    """Parse every line of one capture file; keep records with ``start <= time < end``.

    Every repeated ``eventId`` becomes a warning naming ``source`` and the 1-based line
    number (blank lines count, as in an editor). What belongs to the file rather than to
    a time (a malformed line, which has none; a gzip file; an unknown format version)
    is counted and warned about only by its ``owner``, so each is said once however many
    windows read the file. The owner also asks ``read_elsewhere`` of each record outside
    its window whether the window measuring that time reads this file, and names in one
    warning the records no window will count.
    """
    batch = CaptureBatch(files_read=1)
    versions_seen: set[str] = set()
    misfiled: list[CaptureRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        batch.lines_read += 1
        if number == 1 and isinstance(line, bytes) and line.startswith(_GZIP_MAGIC):
            # Its "lines" would be compressed bytes, each a meaningless warning.
            reason = "the file is gzip-compressed; data capture writes JSON Lines text"
            if owner:
                batch.malformed_lines += 1
                batch.warn(
                    DataWarning(MALFORMED_CAPTURE_LINE, source, None, reason),
                    "skipping gzip-compressed capture file",
                )
            break
        try:
            record = parse_capture_line(line, labels, source=source, line_number=number)
        except CaptureFormatError as exc:
            if owner:
                batch.malformed_lines += 1
                batch.warn(
                    DataWarning(MALFORMED_CAPTURE_LINE, source, number, str(exc)),
                    "skipping malformed capture line",
                )
            elif exc.inference_time is not None and _within(exc.inference_time, start, end):
                # Its owner counts it; a window whose time it states may say why it has none.
                batch.unusable_elsewhere[str(exc)] += 1
            continue
        version = record.event_version
        if owner and version is not None and version not in versions_seen:
            versions_seen.add(version)
            if version not in KNOWN_CAPTURE_VERSIONS:
                batch.warn(
                    DataWarning(
                        UNKNOWN_CAPTURE_VERSION,
                        source,
                        number,
                        f"eventVersion {version!r} is not one this monitor reads "
                        f"({', '.join(sorted(KNOWN_CAPTURE_VERSIONS))}); its records were "
                        "read as that format",
                    ),
                    "capture file of an unknown eventVersion",
                )
        if not _within(record.inference_time, start, end):
            batch.outside_window += 1
            if owner and read_elsewhere is not None and not read_elsewhere(record.inference_time):
                misfiled.append(record)
            continue
        batch.add(record)
    if misfiled:
        times = sorted(record.inference_time for record in misfiled)
        first, last = times[0], times[-1]
        span = format_seconds(first) + ("" if first == last else f" to {format_seconds(last)}")
        batch.warn(
            DataWarning(
                MISFILED_CAPTURE_RECORDS,
                source,
                misfiled[0].line,
                f"{len(misfiled)} record(s) timed {span}: the window measuring that time does "
                "not read this file, so no window counts them (a clock far off the file's hour "
                f"folder, a buffer opened more than {_minutes(EARLY_FILE_ALLOWANCE)} before its "
                "records' window, or a file name not in SageMaker's "
                f"MM-SS-mmm-<uuid>{CAPTURE_SUFFIX} layout)",
            ),
            "capture records no window counts",
        )
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


def capture_prefix(capture: S3Location, endpoint: str, variant: str) -> S3Location:
    """Where the endpoint's DataCaptureConfig writes ``variant``'s files under ``capture``."""
    return capture.child(endpoint, variant)


def hour_folder(capture: S3Location, endpoint: str, variant: str, hour: datetime) -> str:
    """The folder DataCaptureConfig files ``hour``'s capture files in (their buffer's
    opening hour, UTC): ``{endpoint}/{variant}/yyyy/mm/dd/hh/``."""
    return capture_prefix(capture, endpoint, variant).child(hour_folder_name(hour)).as_prefix()


def capture_files_in_hour(
    s3: Any, capture: S3Location, hour: datetime, *, endpoint: str, variant: str
) -> tuple[str, int]:
    """``hour``'s folder (``s3://``) and how many non-empty capture files it holds: what a
    Model Monitor job that analyses that hour downloads (one listing; nothing is read)."""
    folder = hour_folder(capture, endpoint, variant, hour)
    count = sum(
        1
        for obj in list_objects(s3, capture.bucket, folder)
        if obj.key.endswith(CAPTURE_SUFFIX) and obj.size > 0
    )
    return f"s3://{capture.bucket}/{folder}", count


def capture_folders(
    capture: S3Location, endpoint: str, variant: str, start: datetime, end: datetime
) -> list[CaptureFolder]:
    """The folders that can hold records from ``[start, end)``, oldest first: the last
    ``EARLY_FILE_ALLOWANCE`` of the hour before, then every hour to one after ``end``."""

    def folder(hour: datetime, opened_from: datetime | None = None) -> CaptureFolder:
        return CaptureFolder(hour, hour_folder(capture, endpoint, variant, hour), opened_from)

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
    of ``capture_folders``.

    Windows follow one another (each run measures the window after the last), so every
    hour folder has one owner: the window its hour ends in, which reads it and runs
    after every file of that hour was opened (a window at :10 does not own the hour it
    ends in the middle of; files landing after it ran would go uncounted).
    Only the owner counts and names what belongs to the file rather than to a time, and
    checks that each of its records is read by the window measuring it.
    """
    batch = CaptureBatch()
    read_elsewhere = _ReadByItsWindow(capture, endpoint, variant, start, end - start)
    for folder in capture_folders(capture, endpoint, variant, start, end):
        keys = [
            obj.key
            for obj in list_objects(
                s3, capture.bucket, folder.prefix, start_after=folder.start_after
            )
            if folder.holds(obj.key)
        ]
        # The window in which the folder's hour ends owns it: it runs after every file of
        # that hour has been opened, so a late file's faults are not left to a window
        # that has already run. Windows tile time, so exactly one window owns each folder.
        owner = start < folder.hour + _ONE_HOUR <= end
        batch.extend(
            read_capture_objects(
                s3,
                capture.bucket,
                keys,
                labels,
                start=start,
                end=end,
                owner=owner,
                read_elsewhere=read_elsewhere if owner else None,
            )
        )
    for warning in other_variant_capture(
        s3, capture, endpoint=endpoint, variant=variant, start=start, end=end
    ):
        batch.warn(warning, "capture of another variant is not measured")
    return batch


def other_variant_capture(
    s3: Any,
    capture: S3Location,
    *,
    endpoint: str,
    variant: str,
    start: datetime,
    end: datetime,
) -> list[DataWarning]:
    """An ``OTHER_VARIANT_CAPTURE`` warning for each other variant of ``endpoint`` with
    capture files in an hour folder of ``[start, end)``.

    SageMaker files each variant's capture in its own folder and the monitor reads
    ``variant``'s only, so an A/B or shadow variant's requests, or every request when
    ``variant`` is not the endpoint's variant name (a console-made endpoint's
    ``variant-1``), would otherwise be left out of every number without a word.
    """
    endpoint_prefix = capture.child(endpoint).as_prefix()
    own = capture_prefix(capture, endpoint, variant).as_prefix()
    hours = tuple(f"{hour_folder_name(hour)}/" for hour in hours_between(start, end))
    warnings: list[DataWarning] = []
    for folder in list_folders(s3, capture.bucket, endpoint_prefix):
        if folder == own or not hours:
            continue
        # Hour folders sort by time, so the first key from the window's first hour on is
        # in one of its hours exactly when any key is: one listing per variant.
        first = first_key_after(s3, capture.bucket, folder, folder + hours[0][:-1])
        if first is not None and first[len(folder) :].startswith(hours):
            name = folder[len(endpoint_prefix) : -1]
            warnings.append(
                DataWarning(
                    OTHER_VARIANT_CAPTURE,
                    f"s3://{capture.bucket}/{folder}",
                    None,
                    f"variant {name!r} of endpoint {endpoint} captured requests in the "
                    f"window's hours; they are not read: the monitor measures variant "
                    f"{variant!r} (ENDPOINT_VARIANT) only",
                )
            )
    return warnings


@dataclass
class _ReadByItsWindow:
    """Whether the window (of the run's length, in step with ``start``) that measures a
    time reads a given capture file: ``False`` means no window counts the record."""

    capture: S3Location
    endpoint: str
    variant: str
    start: datetime
    length: timedelta
    _folders: dict[datetime, list[CaptureFolder]] = field(default_factory=dict, repr=False)

    def __call__(self, key: str, moment: datetime) -> bool:
        try:
            window = self.start + (moment - self.start) // self.length * self.length
            folders = self._folders.get(window)
            if folders is None:
                folders = capture_folders(
                    self.capture, self.endpoint, self.variant, window, window + self.length
                )
                self._folders[window] = folders
        except OverflowError:  # a time near year 1 or 9999: no window measures it
            return False
        return any(key.startswith(folder.prefix) and folder.holds(key) for folder in folders)


def warn_not_a_capture_file(batch: CaptureBatch, source: str, why: str = "") -> None:
    """Name ``source``, found among the capture files, as one that is not read (``why``:
    by default, its name)."""
    batch.warn(
        DataWarning(
            NOT_A_CAPTURE_FILE,
            source,
            None,
            f"not read: {why}"
            if why
            else f"not read: SageMaker's capture files end in {CAPTURE_SUFFIX} (a compressed "
            "or renamed copy must be restored as .jsonl to be counted)",
        ),
        "object among the capture files is not a capture file",
    )


def read_capture_objects(
    s3: Any,
    bucket: str,
    keys: Iterable[str],
    labels: Sequence[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    owner: bool = True,
    read_elsewhere: Callable[[str, datetime], bool] | None = None,
) -> CaptureBatch:
    """Parse the ``.jsonl`` objects among ``keys``; the ``owner`` names each other object
    (a ``NOT_A_CAPTURE_FILE`` warning; folder markers ending in ``/`` aside), unread.

    Objects are streamed line by line, ``CAPTURE_READ_THREADS`` at once, so memory holds
    a few lines (each one captured request, image included) rather than whole files. S3
    refusing an object is a configuration problem and raises ``S3ReadError`` naming it; a
    stream that breaks off mid-file keeps the lines read before it and becomes an
    ``UNREADABLE_CAPTURE_FILE`` warning, so one bad connection does not lose the window.
    """
    read_one = partial(
        _read_capture_object,
        s3,
        bucket,
        labels,
        start=start,
        end=end,
        owner=owner,
        read_elsewhere=read_elsewhere,
    )
    batch = CaptureBatch()
    keys = list(keys)
    captures = [key for key in keys if key.endswith(CAPTURE_SUFFIX)]
    for key in keys:
        if owner and not key.endswith((CAPTURE_SUFFIX, "/")):
            warn_not_a_capture_file(batch, f"s3://{bucket}/{key}")
    if not captures:
        return batch
    # Files are fetched a few at a time (a run of an hour reads every file of its hours,
    # thousands at high traffic, and each GET waits on S3) and merged in key order, so
    # which copy of a record counts as the first does not depend on which read ended first.
    pool = ThreadPoolExecutor(max_workers=min(CAPTURE_READ_THREADS, len(captures)))
    try:
        for part in pool.map(read_one, captures):
            batch.extend(part)
    finally:
        # An S3 refusal ends the run: the reads not yet started are not made.
        pool.shutdown(wait=True, cancel_futures=True)
    return batch


def _read_capture_object(
    s3: Any,
    bucket: str,
    labels: Sequence[str],
    key: str,
    *,
    start: datetime | None,
    end: datetime | None,
    owner: bool,
    read_elsewhere: Callable[[str, datetime], bool] | None,
) -> CaptureBatch:
    """One capture object's records and warnings (empty when it vanished)."""
    batch = CaptureBatch()
    source = f"s3://{bucket}/{key}"
    body = open_optional_object(s3, bucket, key)
    if body is None:
        # Deleted between listing and reading (an S3 lifecycle rule, say).
        logger.warning("capture file vanished before it was read", extra={"key": key})
        return batch
    stream = _LineStream(body)
    try:
        batch.extend(
            parse_capture_lines(
                stream,
                labels,
                source=source,
                start=start,
                end=end,
                owner=owner,
                read_elsewhere=None if read_elsewhere is None else partial(read_elsewhere, key),
            )
        )
    finally:
        body.close()
    if stream.error is not None:
        batch.warn(
            DataWarning(
                UNREADABLE_CAPTURE_FILE,
                source,
                None,
                f"the read broke off after {stream.lines} line(s): {stream.error}; those "
                "were counted, the rest of the file was not",
            ),
            "capture file could not be read to its end",
        )
    return batch


@dataclass
class _LineStream:
    """An S3 body's lines, ending (with ``error`` set) where the stream broke off."""

    body: Any
    lines: int = 0
    error: Exception | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for line in self.body.iter_lines(chunk_size=_STREAM_CHUNK_BYTES):
                self.lines += 1
                yield line
        except _BROKEN_STREAM as exc:
            self.error = exc


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} minutes"
