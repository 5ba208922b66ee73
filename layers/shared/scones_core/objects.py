"""Which object an event is about, and the names derived from it.

One uploaded object version gets one record. The record id and the name of an
execution that classifies this object alone (a replay, the backfill, a batch of one)
are both derived from (bucket, key, version or ETag), so a duplicate S3 delivery maps
onto the same record and, alone, onto the same execution name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from scones_core.errors import EventError, aws_error_code
from scones_core.records import (
    BUCKET_ATTRIBUTE,
    ETAG_ATTRIBUTE,
    KEY_ATTRIBUTE,
    PARTITION_KEY,
    VERSION_ATTRIBUTE,
    ObjectPayload,
)

# S3's own name for "this object has no version id" (unversioned bucket).
NULL_VERSION = "null"
# S3's answers for an object version that is not there to read (a HEAD gives only the
# status; a delete marker as the version asked for gives 405).
_MISSING_CODES = frozenset(
    {"NoSuchKey", "NoSuchVersion", "NotFound", "404", "MethodNotAllowed", "405"}
)
# An If-Match (or CopySourceIfMatch) that did not hold: the key holds other bytes now.
# ConditionalRequestConflict: a concurrent conditional write to the same key.
_CHANGED_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_EXECUTION_NAME_MAX = 80
# S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# DynamoDB's limit on a partition key (a record id), in UTF-8 bytes.
MAX_RECORD_ID_BYTES = 2048
# Between a record id's "<bucket>/<key>" and its version (or "etag:<ETag>").
RECORD_ID_SEPARATOR = "#"
# S3's bucket names: 3-63 lower-case letters, digits, dots and hyphens, a letter or digit at
# each end, no ".." (is_bucket_name).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def is_bucket_name(name: str) -> bool:
    """Whether S3 would take ``name`` as a bucket's name (the syntax, not whether it exists)."""
    return _BUCKET_NAME.fullmatch(name) is not None and ".." not in name


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def object_missing(exc: Exception) -> bool:
    """Whether S3 refused a read because the object (version) is not there."""
    return aws_error_code(exc) in _MISSING_CODES


def holds_version(s3: Any, ref: ObjectRef) -> bool:
    """Whether ``ref``'s key holds its object version (unversioned: bytes of its ETag), by
    a HEAD. Only "not there" (404, or 405 for a delete marker) is an answer; the reader
    needs ``s3:ListBucket`` for it, since S3 answers a reader without it 403 for a missing
    key. Any other refusal (403, a 400, throttling, an outage) is raised: the question stays
    open, rather than a denial being taken for "not there"."""
    request: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version != NULL_VERSION:
        request["VersionId"] = ref.version
    try:
        head = s3.head_object(**request)
    except ClientError as exc:
        if object_missing(exc):
            return False
        raise
    return ref.version != NULL_VERSION or str(head.get("ETag", "")).strip('"') == ref.etag.strip(
        '"'
    )


def object_changed(exc: Exception) -> bool:
    """Whether S3 refused a conditional request because the object is not the one pinned."""
    return aws_error_code(exc) in _CHANGED_CODES or _status(exc) == 412


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version: str  # the S3 version id, or NULL_VERSION
    etag: str
    size: int
    sequencer: str = ""

    @property
    def record_id(self) -> str:
        """The results table's partition key for this object version."""
        identity = self.version if self.version != NULL_VERSION else f"etag:{self.etag}"
        return f"{self.bucket}/{self.key}{RECORD_ID_SEPARATOR}{identity}"

    @property
    def delivery_id(self) -> str:
        """What names this upload's execution: its record id, plus, for an unversioned
        upload, its S3 sequencer. The same bytes uploaded to a key again have the same ETag,
        so the same record (which may say their first upload was overwritten before it was
        read), but a new sequencer: their execution is a new one, not a refused repeat. A
        redelivered event carries the same sequencer, so it is still the same execution."""
        if self.version == NULL_VERSION and self.sequencer:
            return f"{self.record_id}@{self.sequencer}"
        return self.record_id

    @property
    def delivery(self) -> str:
        """``delivery_id`` as records keep it: 16 hex digits of its SHA-256, enough to tell
        deliveries of one record apart, small enough to keep a record in one write unit."""
        return hashlib.sha256(self.delivery_id.encode("utf-8")).hexdigest()[:16]

    @property
    def execution_name(self) -> str:
        """A valid, deterministic Step Functions execution name (at most 80 chars)."""
        return self.execution_name_for(0)

    def execution_name_for(self, attempt: int) -> str:
        """The execution name of ``attempt``: 0 is the first execution, N the N-th replay.

        The first execution is named by its delivery (``delivery_id``), a replay by its
        record: the first execution's name plus ``-r<N>`` (for an unversioned upload, with
        the record id's digest in place of the delivery's); when that would pass 80
        characters the file-name stem is shortened instead (the digest, which carries the
        identity, is always kept whole). Deterministic, so a second start of the same
        attempt is refused by Step Functions (``ExecutionAlreadyExists``).
        """
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        suffix = f"-r{attempt}" if attempt else ""
        # A replay is of a record (redrive reads it, or its dead letter, which carries the
        # delivery): named by the record id, both ways give it one name.
        identity = self.record_id if attempt else self.delivery_id
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
        stem = _UNSAFE_NAME_CHARS.sub("-", self.key.rsplit("/", 1)[-1]).strip("-")
        room = _EXECUTION_NAME_MAX - len(digest) - 1 - len(suffix)
        return (f"{stem[:room]}-{digest}" if stem else digest) + suffix

    def to_json(self) -> ObjectPayload:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version": self.version,
            "etag": self.etag,
            "size": self.size,
            "sequencer": self.sequencer,
            "record_id": self.record_id,
            "delivery": self.delivery,
        }


def object_from_s3_record(record: dict[str, Any]) -> ObjectRef:
    """Build an ``ObjectRef`` from one ``Records[]`` entry of an S3 event notification."""
    try:
        s3 = record["s3"]
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        raw_key = obj["key"]
    except KeyError as exc:
        raise EventError(f"S3 event record lacks {exc}: not an S3 object notification") from exc
    except TypeError as exc:
        raise EventError(
            "S3 event record's s3, s3.bucket or s3.object is not an object: "
            "not an S3 object notification"
        ) from exc
    if not isinstance(bucket, str) or not bucket:
        raise EventError(f"S3 event record's bucket name is {bucket!r}, not a bucket name")
    if not isinstance(raw_key, str) or not raw_key:
        raise EventError(f"S3 event record's object key is {raw_key!r}, not an object key")
    # S3 URL-encodes keys in notifications ("my photo.png" arrives as "my+photo.png").
    try:  # S3 keys are UTF-8: a %-sequence that is not names no object anyone uploaded
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise EventError(
            f"S3 event record's object key {raw_key!r} is not URL-encoded UTF-8"
        ) from None
    if not key:
        raise EventError("S3 event record has an empty object key")
    try:
        size = int(obj.get("size") or 0)
    except (TypeError, ValueError) as exc:
        raise EventError(f"S3 event record has a bad object size {obj.get('size')!r}") from exc
    ref = ObjectRef(
        bucket=bucket,
        key=key,
        version=str(obj.get("versionId") or NULL_VERSION),
        etag=str(obj.get("eTag") or obj.get("etag") or ""),
        size=size,
        sequencer=str(obj.get("sequencer") or ""),
    )
    _check_text(ref, "S3 event record")
    return ref


def _check_text(ref: ObjectRef, source: str) -> None:
    """``EventError`` for names S3 cannot have, caught here with the message that carried
    them (``source`` says which) rather than later, where the batch's other objects would
    share the failure.

    JSON can spell a lone surrogate (``"\\ud800"``), which no S3 name contains and which
    cannot be encoded for a record id or a request.
    """
    for name, value in (
        ("bucket name", ref.bucket),
        ("object key", ref.key),
        ("version id", ref.version),
        ("ETag", ref.etag),
        ("sequencer", ref.sequencer),
    ):
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EventError(
                f"{source}'s {name} {value!r} is not valid Unicode "
                f"(a lone surrogate at {exc.start}): no S3 name holds one"
            ) from None
        if name == "object key" and len(encoded) > MAX_KEY_BYTES:
            raise EventError(
                f"{source}'s object key is {len(encoded)} UTF-8 bytes; "
                f"S3 keys have at most {MAX_KEY_BYTES}"
            )
        if name in ("version id", "ETag", "sequencer") and RECORD_ID_SEPARATOR in value:
            # The record id ends "#<version>" (or "#etag:<ETag>"), read back from its last
            # "#": two objects must never share one. S3 writes none of these with a "#".
            raise EventError(
                f"{source}'s {name} {value!r} holds {RECORD_ID_SEPARATOR!r}, which S3 never "
                "writes in one"
            )
    size = len(ref.record_id.encode("utf-8"))
    if size > MAX_RECORD_ID_BYTES:
        raise EventError(
            f"{source} names an object whose record id (bucket, key and version) is {size} "
            f"UTF-8 bytes; the results table's keys hold at most {MAX_RECORD_ID_BYTES} (S3's "
            "own version ids are 32 characters)"
        )


_REFERENCE = "object reference"


def object_from_json(data: Any) -> ObjectRef:
    """The inverse of ``ObjectRef.to_json`` (state input, a ``workflow_failed`` dead
    letter), with the checks an S3 event's object gets: a letter is replayed as it stands,
    so a name S3 cannot hold (``null``, which ``str`` would make the bucket "None")
    must fail here, named, not reach an execution, a record or a request."""
    if not isinstance(data, dict):
        raise EventError(f"expected an object reference, got {type(data).__name__}")
    bucket, key, size = data.get("bucket"), data.get("key"), data.get("size")
    if not isinstance(bucket, str) or not is_bucket_name(bucket):
        raise EventError(f"{_REFERENCE}'s bucket is {bucket!r}, not a bucket name")
    if not isinstance(key, str) or not key:
        raise EventError(f"{_REFERENCE}'s key is {key!r}, not an object key")
    # Absent or null: not known (a record keeps no size); a bool is no count of bytes.
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise EventError(f"{_REFERENCE}'s size is {size!r}, not a size in bytes")

    def text(field: str, default: str) -> str:
        value = data.get(field)
        if value is not None and not isinstance(value, str):
            raise EventError(f"{_REFERENCE}'s {field} is {value!r}, not text")
        return value or default

    ref = ObjectRef(
        bucket=bucket,
        key=key,
        version=text("version", NULL_VERSION),
        etag=text("etag", ""),
        size=size or 0,
        sequencer=text("sequencer", ""),
    )
    _check_text(ref, _REFERENCE)
    return ref


def object_from_record(record: Mapping[str, Any]) -> ObjectRef:
    """The object version a record is about; ``EventError`` if its fields disagree with pk."""
    try:
        ref = ObjectRef(
            bucket=str(record[BUCKET_ATTRIBUTE]),
            key=str(record[KEY_ATTRIBUTE]),
            version=str(record.get(VERSION_ATTRIBUTE) or NULL_VERSION),
            etag=str(record.get(ETAG_ATTRIBUTE) or ""),
            size=0,
        )
    except KeyError as exc:
        raise EventError(f"record {record.get(PARTITION_KEY)!r} lacks {exc}") from exc
    if ref.record_id != record.get(PARTITION_KEY):
        raise EventError(
            f"record {record.get(PARTITION_KEY)!r} names another object ({ref.record_id})"
        )
    return ref
