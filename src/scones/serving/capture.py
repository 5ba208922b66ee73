"""Data capture: record each sampled request and response as SageMaker does.

Records are JSON Lines in SageMaker's capture format::

    {"captureData": {"endpointInput": {...}, "endpointOutput": {...}},
     "eventMetadata": {"eventId": "...", "inferenceTime": "2026-01-01T00:00:00Z"},
     "eventVersion": "0"}

and files land at ``{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-{uuid}.jsonl``
(the hour of the records inside), in a local folder or an S3 bucket. Like
SageMaker, the writer buffers records and writes a file every few seconds, when
the buffer is large, and on shutdown. Capture must never break inference, so
every capture failure is logged and counted instead of raised.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from scones_core.monitoring.timestamps import format_seconds, hour_folder_name
from scones_core.objects import is_bucket_name

from scones.serving.defaults import DEFAULT_FLUSH_INTERVAL_S, MAX_FLUSH_INTERVAL_S

LOGGER = logging.getLogger(__name__)

EVENT_VERSION = "0"
DEFAULT_MAX_BUFFERED_RECORDS = 500
DEFAULT_MAX_BUFFERED_BYTES = 5 * 1024 * 1024
# Records kept for a retry while writes fail; beyond either limit the oldest are dropped.
# The bytes bound memory: a request may be 6 MB (8 MB as a base64 line), so a count alone
# would let an S3 outage (expired credentials) grow the buffer by gigabytes.
MAX_PENDING_RECORDS = 100_000
DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024
JSONL_CONTENT_TYPE = "application/jsonl"


class CaptureConfigError(ValueError):
    """A capture destination or setting is invalid."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_capture_record(
    *,
    input_body: bytes,
    input_content_type: str,
    output_body: str,
    output_content_type: str,
    event_id: str,
    inference_time: datetime,
    inference_id: str | None = None,
) -> dict[str, Any]:
    """One capture line: the raw input as base64, the JSON output verbatim."""
    metadata: dict[str, str] = {
        "eventId": event_id,
        "inferenceTime": format_seconds(inference_time),
    }
    if inference_id:
        metadata["inferenceId"] = inference_id
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": input_content_type,
                "mode": "INPUT",
                "data": base64.b64encode(input_body).decode("ascii"),
                "encoding": "BASE64",
            },
            "endpointOutput": {
                "observedContentType": output_content_type,
                "mode": "OUTPUT",
                "data": output_body,
                "encoding": "JSON",
            },
        },
        "eventMetadata": metadata,
        "eventVersion": EVENT_VERSION,
    }


def capture_file_key(endpoint_name: str, variant_name: str, moment: datetime) -> str:
    """``{endpoint}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-{uuid}.jsonl``, relative to the prefix."""
    at = moment.astimezone(UTC)
    name = f"{at:%M-%S}-{at.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
    return f"{endpoint_name}/{variant_name}/{hour_folder_name(at)}/{name}"


class CaptureSink(Protocol):
    """Where capture files go."""

    def write(self, key: str, payload: bytes) -> str:
        """Store ``payload`` under ``key`` (relative to the destination); return its location."""
        ...

    def describe(self) -> str: ...


class LocalCaptureSink:
    """Capture files under a local folder, written atomically (no half-written files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, key: str, payload: bytes) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return str(path)

    def describe(self) -> str:
        return str(self.root)


class S3CaptureSink:
    """Capture files in ``s3://bucket/prefix``, through an injected boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def write(self, key: str, payload: bytes) -> str:
        full_key = f"{self.prefix}/{key}" if self.prefix else key
        self.client.put_object(
            Bucket=self.bucket, Key=full_key, Body=payload, ContentType=JSONL_CONTENT_TYPE
        )
        return f"s3://{self.bucket}/{full_key}"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def sink_for_destination(destination: str, *, s3_client: Any | None = None) -> CaptureSink:
    """A sink for ``s3://bucket/prefix`` or a local folder path.

    ``s3_client`` defaults to ``boto3.client("s3")``, which honours ``AWS_ENDPOINT_URL_S3``.
    """
    if destination.startswith("s3://"):
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        if not bucket:
            raise CaptureConfigError(
                f"capture destination {destination!r} names no bucket; use s3://bucket/prefix"
            )
        if not is_bucket_name(bucket):
            raise CaptureConfigError(
                f"capture destination {destination!r}: {bucket!r} is not an S3 bucket name "
                "(3-63 lower-case letters, digits, dots and hyphens)"
            )
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        return S3CaptureSink(bucket, prefix, s3_client)
    if "://" in destination:
        raise CaptureConfigError(
            f"capture destination {destination!r} is neither s3://bucket/prefix nor a folder"
        )
    if not destination:
        raise CaptureConfigError("capture destination is empty")
    return LocalCaptureSink(Path(destination))


@dataclass(frozen=True)
class CaptureStats:
    """Counters of what the writer did; ``errors`` counts failed captures and writes."""

    sampled_out: int
    buffered: int
    records_written: int
    files_written: int
    errors: int
    dropped: int


class CaptureWriter:
    """Buffers sampled capture records and writes them as JSON Lines files.

    Thread-safe: request threads call :meth:`capture`; a background thread
    (started by :meth:`start`) writes files every ``flush_interval_s`` or when the
    buffer passes its limits; :meth:`close` stops it and writes what is left.
    A failed write keeps its records for the next flush, up to ``max_pending_bytes``
    (and ``MAX_PENDING_RECORDS``): past that the oldest are dropped and counted, so
    capture that cannot be written never costs the server its memory.
    """

    def __init__(
        self,
        sink: CaptureSink,
        *,
        endpoint_name: str,
        variant_name: str,
        sampling_percentage: float = 100.0,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_buffered_records: int = DEFAULT_MAX_BUFFERED_RECORDS,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not 0 <= sampling_percentage <= 100:
            raise CaptureConfigError(
                f"capture sampling percentage must be between 0 and 100, got {sampling_percentage}"
            )
        if not 0 < flush_interval_s <= MAX_FLUSH_INTERVAL_S:
            raise CaptureConfigError(
                f"flush interval must be above 0 and at most {MAX_FLUSH_INTERVAL_S:g} s, "
                f"got {flush_interval_s}"
            )
        if max_buffered_records < 1 or max_buffered_bytes < 1 or max_pending_bytes < 1:
            raise CaptureConfigError("capture buffer limits must be positive")
        self.sink = sink
        self.endpoint_name = endpoint_name
        self.variant_name = variant_name
        self.sampling_percentage = float(sampling_percentage)
        self.flush_interval_s = flush_interval_s
        self.max_buffered_records = max_buffered_records
        self.max_buffered_bytes = max_buffered_bytes
        self.max_pending_bytes = max_pending_bytes
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()  # guards the buffer, the RNG and the counters
        self._flush_lock = threading.Lock()  # one flush at a time keeps files in order
        self._buffer: list[tuple[datetime, bytes]] = []
        self._buffered_bytes = 0
        self._sampled_out = 0
        self._records_written = 0
        self._files_written = 0
        self._errors = 0
        self._dropped = 0
        self._unreported_drops = 0  # dropped since the last log line that named them
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- request path -------------------------------------------------------------

    def capture(
        self,
        *,
        input_body: bytes,
        input_content_type: str,
        output_body: str,
        output_content_type: str = "application/json",
        inference_id: str | None = None,
    ) -> bool:
        """Buffer one request/response pair if sampled; True when it was buffered.

        Never raises: a failure is logged and counted.
        """
        try:
            with self._lock:
                sampled = self._rng.random() * 100.0 < self.sampling_percentage
                if not sampled:
                    self._sampled_out += 1
                    return False
            moment = self._clock()
            record = build_capture_record(
                input_body=input_body,
                input_content_type=input_content_type,
                output_body=output_body,
                output_content_type=output_content_type,
                event_id=str(uuid.uuid4()),
                inference_time=moment,
                inference_id=inference_id,
            )
            line = json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"
            with self._lock:
                self._buffer.append((moment, line))
                self._buffered_bytes += len(line)
                # Writes are failing (or one is slow) while requests keep coming.
                self._unreported_drops += self._drop_oldest_locked()
                full = (
                    len(self._buffer) >= self.max_buffered_records
                    or self._buffered_bytes >= self.max_buffered_bytes
                )
            if self._stopping.is_set():
                # Closed (its variant removed, the server stopping) while this request was
                # in inference: no flusher will run again, so the answered request is
                # written now. ``close`` sets the flag before its last flush, so a record
                # is written by one or the other.
                self.flush()
            elif full:
                self._wake.set()
            return True
        except Exception:
            LOGGER.exception("data capture failed; the inference itself was not affected")
            with self._lock:
                self._errors += 1
            return False

    # -- writing ------------------------------------------------------------------

    def flush(self) -> int:
        """Write every buffered record now; return how many were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
                self._buffered_bytes = 0
            if not batch:
                return 0
            written = 0
            failed: list[tuple[datetime, bytes]] = []
            for hour_batch in _split_by_hour(batch):
                key = capture_file_key(self.endpoint_name, self.variant_name, hour_batch[0][0])
                try:
                    self.sink.write(key, b"".join(line for _, line in hour_batch))
                except Exception:
                    LOGGER.exception(
                        "writing %d capture records to %s failed; they will be retried",
                        len(hour_batch),
                        self.sink.describe(),
                    )
                    failed.extend(hour_batch)
                    with self._lock:
                        self._errors += 1
                    continue
                written += len(hour_batch)
                with self._lock:
                    self._records_written += len(hour_batch)
                    self._files_written += 1
            if failed:
                self._requeue(failed)
            self._report_drops()
            return written

    def _requeue(self, failed: list[tuple[datetime, bytes]]) -> None:
        with self._lock:
            self._buffer[:0] = failed
            self._buffered_bytes += sum(len(line) for _, line in failed)
            self._unreported_drops += self._drop_oldest_locked()

    def _drop_oldest_locked(self) -> int:
        """Drop the oldest records past the pending limits (the newest always stays);
        return how many. The caller holds ``_lock``."""
        count = 0
        kept = len(self._buffer)
        while kept > 1 and (
            kept > MAX_PENDING_RECORDS or self._buffered_bytes > self.max_pending_bytes
        ):
            self._buffered_bytes -= len(self._buffer[count][1])
            count += 1
            kept -= 1
        if count:
            del self._buffer[:count]
            self._dropped += count
        return count

    def _report_drops(self) -> None:
        with self._lock:
            dropped, self._unreported_drops = self._unreported_drops, 0
        if dropped:
            LOGGER.error(
                "dropped %d capture records while writes failed (at most %d records or %d "
                "bytes wait for a retry)",
                dropped,
                MAX_PENDING_RECORDS,
                self.max_pending_bytes,
            )

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="scones-capture-flusher", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher and write everything still buffered (idempotent)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        with self._lock:
            left = len(self._buffer)
        if left:
            LOGGER.error(
                "%d capture records could not be written to %s at shutdown",
                left,
                self.sink.describe(),
            )

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self.flush()

    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(
                sampled_out=self._sampled_out,
                buffered=len(self._buffer),
                records_written=self._records_written,
                files_written=self._files_written,
                errors=self._errors,
                dropped=self._dropped,
            )


def _split_by_hour(
    batch: list[tuple[datetime, bytes]],
) -> list[list[tuple[datetime, bytes]]]:
    """Group records by UTC hour, keeping order, so each file sits in its hour's folder."""
    groups: dict[tuple[int, int, int, int], list[tuple[datetime, bytes]]] = {}
    for moment, line in batch:
        at = moment.astimezone(UTC)
        groups.setdefault((at.year, at.month, at.day, at.hour), []).append((moment, line))
    return list(groups.values())
