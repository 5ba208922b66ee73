"""Human review of classified images: the queue, a sample of accepted images, answers.

No events and no web here: ``scones review`` (``src/scones/review``) serves a page
over these functions, with boto3 clients (low-level) injected, against AWS or the
offline stack alike.

- **Queue.** NEEDS_REVIEW records, and ACCEPTED records drawn for review
  (``review_sampled``), read through the status index, never a scan.
- **Sample.** Whether an ACCEPTED record is drawn depends only on its id and the
  share (a hash, not a random draw), so two reviewers, or two runs, draw the same
  records and never a second, different sample.
- **Answer.** One conditional ``UpdateItem``: the record becomes ``REVIEWED`` only if
  it still has the status the reviewer saw (NEEDS_REVIEW, or ACCEPTED with
  ``review_sampled``), so two reviewers cannot overwrite each other. Then the
  image version is copied to ``<labelled prefix><label>/<name>`` and a line is
  appended to ``<labelled prefix>manifest-<YYYY-MM-DD>.jsonl``, the manifest of the day
  the upload was recorded (a day that never changes, so a resent answer finds its line),
  with an S3 conditional write (``If-Match``/``If-None-Match``), retried when another
  reviewer wrote first. One object per day: an answer rewrites that day's lines, not
  every answer ever given.
  ``neither`` is recorded and listed in the manifest, but not copied. An answer held
  unfinished past ``hold_expiry`` (its reviewer gone) is undone, copy and line, when
  another reviewer answers the record. A manifest line that is not a JSON object (a
  person's edit, another tool's) is no answer's line: it is logged, never blocks an
  answer, and is written back as it was.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from scones_core.bucket_layout import labelled_copy_key
from scones_core.errors import (
    EventError,
    ObjectChanged,
    ObjectNotFound,
    StorageUnavailable,
    aws_error_code,
)
from scones_core.image_files import FILE_SUFFIXES
from scones_core.image_rules import MEDIA_TYPES, decode_image
from scones_core.images import read_object
from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.timestamps import format_millis, parse_timestamp
from scones_core.objects import (
    MAX_RECORD_ID_BYTES,
    NULL_VERSION,
    ObjectRef,
    object_changed,
    object_from_record,
    object_missing,
)
from scones_core.preprocess import to_display_image
from scones_core.record_queries import status_index_pages
from scones_core.records import (
    BUCKET_ATTRIBUTE,
    CLASSIFIED_STATUS_ATTRIBUTE,
    CONFIDENCE_ATTRIBUTE,
    ETAG_ATTRIBUTE,
    EVENT_TIME_ATTRIBUTE,
    IMAGE_GONE_ATTRIBUTE,
    KEY_ATTRIBUTE,
    LABEL_ATTRIBUTE,
    LABELLED_KEY_ATTRIBUTE,
    NEITHER,
    PARTITION_KEY,
    PROBABILITIES_ATTRIBUTE,
    RECORDED_AT_ATTRIBUTE,
    REVIEW_LABEL_ATTRIBUTE,
    REVIEW_SAMPLED_AT_ATTRIBUTE,
    REVIEW_SAMPLED_ATTRIBUTE,
    REVIEWED_AT_ATTRIBUTE,
    REVIEWER_ATTRIBUTE,
    SOURCE_FORMAT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    Status,
    UnreadableRecord,
    record_from_item,
    unreadable,
)
from scones_core.settings import ImageLimits

logger = logging.getLogger(__name__)

MANIFEST_STEM = "manifest-"
MANIFEST_SUFFIX = ".jsonl"
# The one manifest of earlier versions: still read (its answers stay listed, and an answer
# held before an upgrade finds its line there when it is resent), never written.
EARLIER_MANIFEST_NAME = "manifest.jsonl"
# Extensions of the copies, by the ``source_format`` the image rules recorded.
_EXTENSIONS = {fmt: names[0] for fmt, names in FILE_SUFFIXES.items()}
# A suffix taken from the uploader's key only when it is this plain.
_PLAIN_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")
_MANIFEST_ATTEMPTS = 8
# After a conditional write of the day's manifest lost to another answer's: a wait drawn
# under this many seconds, doubled after each loss, at most the cap (full jitter). Retried
# at once, answers given together collide again and again (20 at once used up the attempts);
# the first wait is about one read and rewrite of the manifest, and after five losses they
# have spread over 1.5 s, room for dozens. An answer that wins at once never waits, and
# one that loses seven times waits 3.55 s at most (1.8 s on average) before giving up.
MANIFEST_BACKOFF_SECONDS = 0.05
MANIFEST_BACKOFF_CAP_SECONDS = 1.0
# The page says "N older ones cannot be shown", N counted up to this ("10000+" beyond).
EXPIRED_COUNT_CAP = 10_000
# The review page shows each image at most this many pixels a side (its detail view is
# 256 CSS pixels wide; a 32x32 upload is sent as it is and enlarged by the page).
DISPLAY_MAX_SIDE = 256


class ReviewError(ValueError):
    """The request cannot be answered as asked (unknown record, bad answer)."""


class ReviewIncomplete(RuntimeError):
    """The answer is kept, but its labelled copy or manifest line is not written yet: the
    same answer again finishes it (``answer`` is idempotent for its reviewer)."""


class ImageNotShown(LookupError):
    """The record is not one a reviewer is shown (or there is no such record)."""


class ReviewConflict(RuntimeError):
    """The record no longer has the status the reviewer saw: someone answered first."""

    def __init__(self, message: str, record: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class ReviewSettings:
    bucket: str
    table_name: str
    labels: tuple[str, ...]
    labelled_prefix: str  # "labelled/": ends with "/"
    sample_share: float = 0.0  # share of ACCEPTED records drawn for review
    sample_window: timedelta = timedelta(days=1)  # how far back the draw looks
    # UploadRetentionDays: the bucket's lifecycle deletes uploads this long after they
    # were created, so an older record has no image to show or copy. None: kept forever.
    upload_retention: timedelta | None = None
    # The deployed image rules (MaxImageBytes and friends), which the page's images are
    # read and decoded under; None: images are not served.
    image_limits: ImageLimits | None = None
    # A held answer (step 1 done, its copy or line not) older than this may be taken over
    # by another reviewer: its own reviewer may never come back to finish it.
    hold_expiry: timedelta = timedelta(minutes=30)

    def __post_init__(self) -> None:
        if not self.labelled_prefix.endswith("/") or self.labelled_prefix.startswith("/"):
            raise ReviewError(f"labelled prefix {self.labelled_prefix!r} must end with '/'")
        if not 0.0 <= self.sample_share <= 1.0:
            raise ReviewError(f"sample share {self.sample_share} is not between 0 and 1")
        if NEITHER in self.labels:
            raise ReviewError(f"{NEITHER!r} cannot be a model label")
        if self.upload_retention is not None and self.upload_retention <= timedelta(0):
            raise ReviewError(f"upload retention {self.upload_retention} is not positive")

    @property
    def answers(self) -> tuple[str, ...]:
        return (*self.labels, NEITHER)

    def manifest_key(self, recorded_at: object) -> str:
        """The manifest of the answers to uploads recorded on ``recorded_at``'s UTC day."""
        try:
            day = parse_timestamp(recorded_at).date().isoformat()
        except ValueError:
            day = "undated"
        return f"{self.labelled_prefix}{MANIFEST_STEM}{day}{MANIFEST_SUFFIX}"


@dataclass(frozen=True)
class ReviewItem:
    """One image waiting for a person, as the page shows it."""

    record_id: str
    bucket: str
    key: str
    version_id: str
    status: str  # NEEDS_REVIEW, or ACCEPTED when sampled
    label: str
    confidence: float
    probabilities: dict[str, float]
    event_time: str  # when it was uploaded (the S3 event)
    recorded_at: str
    sampled: bool
    source_format: str = ""  # as the image rules read it (PNG, JPEG, ...)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ReviewItem:
        return cls(
            record_id=str(record[PARTITION_KEY]),
            bucket=str(record.get(BUCKET_ATTRIBUTE, "")),
            key=str(record.get(KEY_ATTRIBUTE, "")),
            version_id=str(record.get(VERSION_ATTRIBUTE, "")),
            status=str(record[STATUS_ATTRIBUTE]),
            label=str(record.get(LABEL_ATTRIBUTE, "")),
            confidence=float(record.get(CONFIDENCE_ATTRIBUTE, 0.0)),
            probabilities={
                k: float(v) for k, v in dict(record.get(PROBABILITIES_ATTRIBUTE, {})).items()
            },
            event_time=str(record.get(EVENT_TIME_ATTRIBUTE, "")),
            recorded_at=str(record.get(RECORDED_AT_ATTRIBUTE, "")),
            sampled=bool(record.get(REVIEW_SAMPLED_ATTRIBUTE, False)),
            source_format=str(record.get(SOURCE_FORMAT_ATTRIBUTE, "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "status": self.status,
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "event_time": self.event_time,
            "recorded_at": self.recorded_at,
            "sampled": self.sampled,
        }


@dataclass(frozen=True)
class ReviewQueue:
    """The images waiting for a person, and the records of the queue that were left out
    because they are not as the stack writes them (``records.unreadable``)."""

    items: list[ReviewItem]
    unreadable: list[UnreadableRecord]
    # More images wait than the page shows (``limit`` of a kind): a busy day's backlog.
    more: bool = False


@dataclass(frozen=True)
class ReviewResult:
    record: dict[str, Any]  # the record as the update left it
    labelled_key: str | None  # the copy, or None for NEITHER
    manifest_key: str


@dataclass(frozen=True)
class ManifestLine:
    """One line of a manifest as stored (its bytes, written back unchanged) and the answer
    it records; ``entry`` is ``None`` for a line that is not a JSON object."""

    text: bytes
    entry: dict[str, Any] | None

    def is_of(self, record_id: object) -> bool:
        """Whether this is a line of the record ``record_id`` (never an unreadable one)."""
        return self.entry is not None and self.entry.get("record_id") == record_id


_JSON_KINDS = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}


def parse_manifest(body: bytes, source: str) -> list[ManifestLine]:
    """A manifest's non-blank lines (JSON Lines, split at ``\\n`` only), each parsed on its
    own: one line that is not a JSON object, written by a person or another tool, must not
    make the day's every answer fail (each answer rewrites the whole file). Such a line is
    logged with ``source`` and its line number, counted as no record's, and kept."""
    lines = []
    for number, text in enumerate(body.split(b"\n"), start=1):
        if not text.strip():
            continue
        try:
            entry = load_json(text)
        except NotJSON as exc:
            reason = str(exc).replace(": line 1 column ", ": column ")  # the line is named
        else:
            if isinstance(entry, dict):
                lines.append(ManifestLine(text, entry))
                continue
            reason = f"{_JSON_KINDS.get(type(entry), 'a number')}, not a JSON object"
        logger.warning(
            "%s line %d is no answer's line (%s): answers leave it as it is",
            source,
            number,
            reason,
            extra={"manifest": source, "line": number, "reason": reason},
        )
        lines.append(ManifestLine(text, None))
    return lines


def _check_record_id(record_id: str) -> None:
    """DynamoDB refuses a key over its size (``ValidationException``, which would read as
    the table failing): no record can have one."""
    if len(record_id.encode("utf-8", "surrogatepass")) > MAX_RECORD_ID_BYTES:
        raise ReviewError(
            f"the record id is over DynamoDB's {MAX_RECORD_ID_BYTES} bytes: no record has it"
        )


def _uploaded_before(item: ReviewItem, cutoff: datetime) -> bool:
    try:
        return parse_timestamp(item.event_time or item.recorded_at) < cutoff
    except ValueError:
        return False


def drawn_for_review(record_id: str, share: float) -> bool:
    """Whether the sample of ``share`` includes this record: a hash, so it is stable."""
    if share <= 0.0:
        return False
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def labelled_name(record_id: str, source_format: str | None, key: str) -> str:
    """The copy's file name: unique per object version, the original's extension."""
    extension = _EXTENSIONS.get(str(source_format or "").upper())
    if extension is None:
        suffix = PurePosixPath(key).suffix.lower()
        extension = suffix if _PLAIN_SUFFIX.fullmatch(suffix) else ".img"
    digest = hashlib.sha256(record_id.encode("utf-8")).hexdigest()[:32]
    return digest + extension


# The record's attributes an answer writes, by the names its expressions use.
_ANSWER_NAMES = {
    "#status": STATUS_ATTRIBUTE,
    "#answer": REVIEW_LABEL_ATTRIBUTE,
    "#at": REVIEWED_AT_ATTRIBUTE,
    "#who": REVIEWER_ATTRIBUTE,
    "#prior": CLASSIFIED_STATUS_ATTRIBUTE,
    "#copy": LABELLED_KEY_ATTRIBUTE,
    "#sampled": REVIEW_SAMPLED_ATTRIBUTE,
    "#gone": IMAGE_GONE_ATTRIBUTE,
}


class ReviewService:
    def __init__(
        self,
        settings: ReviewSettings,
        *,
        s3: Any,
        dynamodb: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.dynamodb = dynamodb
        self.clock = clock
        self._earlier_ids: frozenset[str] | None = None  # read once: it no longer changes

    # -- the queue ---------------------------------------------------------------
    def queue(self, limit: int = 200) -> ReviewQueue:
        """NEEDS_REVIEW records and sampled ACCEPTED ones: the ``limit`` recorded first of
        each, shown oldest upload first; without the records whose upload the lifecycle
        rule has deleted (see :meth:`expired_waiting`), and without the unreadable ones,
        which are named instead: one such record must not keep every other from a
        reviewer, nor be shown half."""
        cutoff = self._retention_cutoff()
        since = format_millis(cutoff) if cutoff else None
        left_out: list[UnreadableRecord] = []
        more = False

        def readable(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for record in records:
                if (bad := unreadable(record)) is None:
                    yield record
                else:
                    left_out.append(bad)

        def shown(records: Iterator[dict[str, Any]]) -> list[ReviewItem]:
            """The first ``limit`` whose upload is still kept: recorded after the cutoff
            but uploaded before it is a replayed or backfilled upload the lifecycle rule
            has deleted. Left out as the index is read, so they never fill the page."""
            nonlocal more
            kept = (r for r in readable(records) if not r.get(IMAGE_GONE_ATTRIBUTE))
            items = (ReviewItem.from_record(r) for r in kept)
            if cutoff:
                items = (item for item in items if not _uploaded_before(item, cutoff))
            first = list(itertools.islice(items, limit + 1))
            more = more or len(first) > limit
            return first[:limit]

        # The index is read oldest record first, and no further than ``limit`` of each
        # kind. Sampled records are shown whatever this page's own share (another page
        # may have drawn them), for the sample window after they were recorded.
        items = shown(self._index(Status.NEEDS_REVIEW, since, page_size=limit + 1))
        drawn_since = format_millis(self.clock() - self.settings.sample_window)
        since = max(drawn_since, since or drawn_since)
        # A filter is applied after a page is read, so the sampled few are read from
        # DynamoDB's full pages (1 MB), not from pages of ``limit`` records.
        items += shown(self._index(Status.ACCEPTED, since, sampled_only=True))
        # Each kind keeps its own ``limit``: sampled answers older than every uncertain
        # image must never push those off the page.
        items.sort(key=lambda item: (item.event_time or item.recorded_at, item.record_id))
        return ReviewQueue(items, left_out, more)

    def expired_waiting(self, cap: int = EXPIRED_COUNT_CAP) -> int:
        """How many NEEDS_REVIEW records were recorded before the retention cutoff (at most
        ``cap``: that backlog never shrinks, and the page is loaded often): their uploads
        are deleted (or about to be), so nobody can review them any more."""
        cutoff = self._retention_cutoff()
        if cutoff is None:
            return 0
        total = 0
        for page in status_index_pages(
            self.dynamodb,
            self.settings.table_name,
            Status.NEEDS_REVIEW,
            before=format_millis(cutoff),
            Select="COUNT",
        ):
            total += int(page.get("Count", 0))
            if total >= cap:
                return cap
        return total

    def _retention_cutoff(self) -> datetime | None:
        """Uploads created before this are gone. S3 expires an object at the first midnight
        (UTC) at least ``UploadRetentionDays`` after its creation, so by now it has
        deleted those created before today's midnight less the retention, and none after;
        ``now - retention`` would hide up to a day of images still there."""
        retention = self.settings.upload_retention
        if retention is None:
            return None
        midnight = self.clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - retention

    def sample_accepted(self) -> int:
        """Flag the drawn ACCEPTED records of the sample window; how many were new."""
        share = self.settings.sample_share
        if share <= 0:
            return 0
        now = self.clock()
        since = format_millis(now - self.settings.sample_window)
        flagged = 0
        for record in self._index(Status.ACCEPTED, since, projection=True):
            record_id = str(record[PARTITION_KEY])
            if record.get(REVIEW_SAMPLED_ATTRIBUTE) or not drawn_for_review(record_id, share):
                continue
            try:
                self.dynamodb.update_item(
                    TableName=self.settings.table_name,
                    Key={PARTITION_KEY: {"S": record_id}},
                    UpdateExpression="SET #sampled = :true, #sampled_at = :now",
                    ConditionExpression="#status = :accepted AND attribute_not_exists(#sampled)",
                    ExpressionAttributeNames={
                        "#sampled": REVIEW_SAMPLED_ATTRIBUTE,
                        "#sampled_at": REVIEW_SAMPLED_AT_ATTRIBUTE,
                        "#status": STATUS_ATTRIBUTE,
                    },
                    ExpressionAttributeValues={
                        ":true": {"BOOL": True},
                        ":now": {"S": format_millis(now)},
                        ":accepted": {"S": Status.ACCEPTED.value},
                    },
                )
            except ClientError as exc:
                if aws_error_code(exc) != "ConditionalCheckFailedException":
                    raise
                continue  # another reviewer drew it first, or it was reviewed meanwhile
            flagged += 1
        if flagged:
            logger.info("sampled accepted records for review", extra={"flagged": flagged})
        return flagged

    def _index(
        self,
        status: Status,
        since: str | None,
        *,
        sampled_only: bool = False,
        projection: bool = False,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records with ``status`` (recorded at or after ``since``), through the index."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        if sampled_only:
            names["#sampled"] = REVIEW_SAMPLED_ATTRIBUTE
            values[":true"] = {"BOOL": True}
            kwargs["FilterExpression"] = "#sampled = :true"
        if projection:
            names |= {"#pk": PARTITION_KEY, "#sampled": REVIEW_SAMPLED_ATTRIBUTE}
            kwargs["ProjectionExpression"] = "#pk, #sampled"
        if page_size:
            kwargs["PaginationConfig"] = {"PageSize": page_size}
        for page in status_index_pages(
            self.dynamodb,
            self.settings.table_name,
            status,
            at_least=since,
            names=names,
            values=values,
            **kwargs,
        ):
            for raw in page.get("Items", []):
                yield record_from_item(raw)

    # -- images ------------------------------------------------------------------
    def display_image(self, record_id: str) -> bytes:
        """The image of a record waiting for review, as a PNG of at most
        ``DISPLAY_MAX_SIDE`` pixels a side: :meth:`read_for_display` then
        :meth:`draw_for_display`.

        The exact object version the model saw is read and decoded under the deployed
        image rules (``settings.image_limits``) by this process, so a browser is only
        ever given a PNG that Pillow wrote: never the uploaded bytes, whatever they are,
        and never a camera's 5 MB original where a 256-pixel thumbnail will do. Any
        format the workflow accepts can be shown (browsers show no TIFF), and the page
        needs no access to the bucket of its own.
        """
        return self.draw_for_display(self.read_for_display(record_id))

    def read_for_display(self, record_id: str) -> bytes:
        """The uploaded bytes of a record a reviewer is shown: NEEDS_REVIEW, sampled
        ACCEPTED, or REVIEWED (answered since the page loaded), in the stack's bucket.

        Raises ``ImageNotShown`` for any other record, ``ImageRejected``
        (``ObjectNotFound`` once the upload is gone) when the object cannot be read, and
        ``StorageUnavailable`` or ``StorageRefused`` when DynamoDB or S3 fail.
        """
        limits = self._image_limits()
        try:
            _check_record_id(record_id)
        except ReviewError as exc:
            raise ImageNotShown(str(exc)) from exc
        try:
            record = self._get(record_id)
        except (ClientError, BotoCoreError) as exc:
            code = aws_error_code(exc) or type(exc).__name__
            raise StorageUnavailable(f"reading the record failed: {code}") from exc
        if record is None:
            raise ImageNotShown(f"{record_id} has no record")
        status = record.get(STATUS_ATTRIBUTE)
        shown = status in (Status.NEEDS_REVIEW, Status.REVIEWED) or (
            status == Status.ACCEPTED and record.get(REVIEW_SAMPLED_ATTRIBUTE) is True
        )
        if not shown:
            raise ImageNotShown(f"{record_id} is {status}, not an image waiting for review")
        try:
            return read_object(self.s3, self._stack_upload(record_id, record), limits)
        except (ObjectNotFound, ObjectChanged):
            self._mark_image_gone(record)
            raise

    def _mark_image_gone(self, record: dict[str, Any]) -> None:
        """Mark a record still waiting for an answer whose upload is gone, so the queue
        leaves it out: nobody can answer it, and left in, such records would fill the page
        and keep every newer image from being shown. Best effort: the page is told the
        image is gone either way, and the next reader marks it."""
        if record.get(STATUS_ATTRIBUTE) == Status.REVIEWED or record.get(IMAGE_GONE_ATTRIBUTE):
            return
        if record.get(REVIEW_LABEL_ATTRIBUTE):
            # A held answer stays listed while its holder may still finish it (its copy
            # may be made already). Once the hold has expired nobody can: a takeover
            # needs the image. It is then taken back, with what it wrote, and marked.
            if self._held_too_long(record):
                self._abandon_gone(record)
            return
        try:
            self._update(
                str(record[PARTITION_KEY]),
                "SET #gone = :now",
                "#status = :status AND attribute_not_exists(#gone) "
                "AND attribute_not_exists(#answer)",
                {
                    ":now": {"S": format_millis(self.clock())},
                    ":status": {"S": str(record[STATUS_ATTRIBUTE])},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "could not mark the record whose image is gone",
                extra={"record_id": record[PARTITION_KEY], "error": str(exc)},
            )
        else:
            logger.info(
                "the image of a record waiting for review is gone; the queue leaves it out",
                extra={"record_id": record[PARTITION_KEY]},
            )

    def _abandon_gone(self, stale: dict[str, Any]) -> None:
        """Take back an expired hold on a record whose image is gone, mark the record gone
        in the same conditional write (only while it is still exactly that hold), then
        remove the abandoned answer's copy and manifest line, as a takeover would."""
        record_id = str(stale[PARTITION_KEY])
        values = {
            ":expected": {"S": str(stale[STATUS_ATTRIBUTE])},
            ":answer": {"S": str(stale[REVIEW_LABEL_ATTRIBUTE])},
            ":who": {"S": str(stale.get(REVIEWER_ATTRIBUTE, ""))},
            ":at": {"S": str(stale.get(REVIEWED_AT_ATTRIBUTE, ""))},
            ":now": {"S": format_millis(self.clock())},
        }
        try:
            self._update(
                record_id,
                "REMOVE #answer, #who, #at, #prior, #copy SET #gone = :now",
                "#status = :expected AND #answer = :answer AND #who = :who AND #at = :at",
                values,
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "could not take back the expired answer of a record whose image is gone",
                extra={"record_id": record_id, "error": str(exc)},
            )
            return
        try:
            self._undo(stale, keep=None)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "took back an expired answer whose image is gone, but not its copy or line",
                extra={
                    "record_id": record_id,
                    "labelled_key": stale.get(LABELLED_KEY_ATTRIBUTE),
                    "error": str(exc),
                },
            )
            return
        logger.info(
            "an expired answer whose image is gone was taken back; the queue leaves it out",
            extra={"record_id": record_id},
        )

    def _stack_upload(self, record_id: str, record: dict[str, Any]) -> ObjectRef:
        """The upload a record is about; ``ImageNotShown`` when it is not one of the
        stack's: only the stack's uploads are read, or copied into its training data, with
        the reviewer's credentials."""
        try:
            ref = object_from_record(record)
        except EventError as exc:
            raise ImageNotShown(str(exc)) from None
        if ref.bucket != self.settings.bucket:
            raise ImageNotShown(f"{record_id} names bucket {ref.bucket!r}, not the stack's")
        return ref

    def _image_limits(self) -> ImageLimits:
        if self.settings.image_limits is None:
            raise ImageNotShown("this review was set up without the stack's image rules")
        return self.settings.image_limits

    def draw_for_display(self, data: bytes) -> bytes:
        """``data`` decoded under the image rules and drawn for a person
        (``preprocess.to_display_image``) as a PNG; ``ImageRejected`` if the rules refuse it."""
        decoded = decode_image(
            data, self._image_limits(), draft_to=(DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE)
        )
        out = io.BytesIO()
        with decoded.image:  # saved before it closes: the drawing may be the image itself
            to_display_image(decoded.image, DISPLAY_MAX_SIDE).save(
                out, format="PNG", compress_level=1
            )
        return out.getvalue()

    # -- answers -----------------------------------------------------------------
    def answer(
        self, record_id: str, *, expected_status: str, answer: str, reviewer: str
    ) -> ReviewResult:
        """Record ``answer`` for the record the reviewer saw with ``expected_status``.

        Raises ``ReviewError`` for a bad request and ``ReviewConflict`` when the record
        changed meanwhile. The same reviewer sending the same answer again (a retry
        after a lost response, or after a failed copy) completes the copy and the
        manifest without a second manifest line.
        """
        settings = self.settings
        if answer not in settings.answers:
            raise ReviewError(f"answer {answer!r} is not one of {', '.join(settings.answers)}")
        if expected_status not in (Status.NEEDS_REVIEW, Status.ACCEPTED):
            raise ReviewError(f"a {expected_status} record cannot be reviewed")
        if not reviewer.strip():
            raise ReviewError("the reviewer has no name")
        _check_record_id(record_id)
        current = self._get(record_id)
        if current is None:
            raise ReviewError(f"no record {record_id!r}")
        try:
            self._stack_upload(record_id, current)
        except ImageNotShown as exc:
            raise ReviewError(f"{exc}; the answer was not kept") from None
        if self._same_answer(current, answer, reviewer, expected_status):
            try:
                return self._finish(current)
            except ReviewError as exc:
                raise ReviewError(f"the answer is saved, but {exc}") from exc
        labelled_key = None
        if answer != NEITHER:
            name = labelled_name(
                record_id, current.get(SOURCE_FORMAT_ATTRIBUTE), str(current[KEY_ATTRIBUTE])
            )
            labelled_key = labelled_copy_key(settings.labelled_prefix, answer, name)
        # Before the answer is kept: a record must never be REVIEWED with a label whose
        # image cannot be copied for training, nor answered at all for an image nobody
        # can have seen (``neither`` included: it counts as the model's mistake).
        try:
            self._check_source(current)
        except ReviewError:
            # Held by this very answer, and the image gone since: finished if its copy
            # was made (the copy is what training reads; ``neither`` has none), else
            # taken back, not left holding a record nobody could answer.
            holding = self._held_by(current, answer, reviewer, expected_status)
            if not holding or (labelled_key is not None and not self._copied(labelled_key)):
                if holding:
                    self._release(record_id, expected_status, answer, reviewer)
                raise
        # Three steps, so that an answer whose copy or manifest line fails stays in the
        # queue until it is finished: (1) the answer is held on the record, which keeps
        # its status; (2) the image is copied and the manifest line added; (3) only then
        # does the record become REVIEWED. Each step is conditional on the one before.
        # A hold its reviewer left unfinished past the expiry is replaced by this one in
        # one conditional step; only the reviewer who wins it undoes the abandoned answer.
        if self._hold_expired(current, answer, reviewer, expected_status):
            held = self._claim(current, expected_status, answer, reviewer, labelled_key)
            self._undo(current, keep=labelled_key)
        else:
            held = self._hold(record_id, expected_status, answer, reviewer, labelled_key)
        try:
            self._finish(held)
        except ReviewError as exc:
            self._release(record_id, expected_status, answer, reviewer)
            raise ReviewError(f"{exc}; the answer was not kept") from exc
        try:
            record = self._mark_reviewed(record_id, expected_status, answer, reviewer)
        except ReviewConflict as exc:
            # Another reviewer claimed the hold while this answer was being published:
            # what this answer wrote must not reach training beside theirs.
            keep = None if exc.record is None else exc.record.get(LABELLED_KEY_ATTRIBUTE)
            self._undo(held, keep=keep)
            raise
        logger.info(
            "review recorded",
            extra={"record_id": record_id, "answer": answer, "reviewer": reviewer},
        )
        return ReviewResult(
            record=record,
            labelled_key=labelled_key,
            manifest_key=self.settings.manifest_key(record.get(RECORDED_AT_ATTRIBUTE)),
        )

    def _hold(
        self,
        record_id: str,
        expected_status: str,
        answer: str,
        reviewer: str,
        labelled_key: str | None,
    ) -> dict[str, Any]:
        """Step 1: the answer on the record, its status unchanged: only while the record
        has the status the page showed, and no other answer (or reviewer) holds it."""
        # Never on a record a page found without its image: that page may be taking back
        # an expired hold right now, and would delete what this answer is about to use.
        condition = (
            "#status = :expected AND attribute_not_exists(#gone) AND (attribute_not_exists("
            "#answer) OR (#answer = :answer AND #who = :who))"
        )
        values: dict[str, Any] = {
            ":expected": {"S": expected_status},
            ":answer": {"S": answer},
            ":now": {"S": format_millis(self.clock())},
            ":who": {"S": reviewer},
        }
        if expected_status == Status.ACCEPTED:
            condition += " AND #sampled = :true"
            values[":true"] = {"BOOL": True}
        update = (
            "SET #answer = :answer, #who = :who, #at = if_not_exists(#at, :now), #prior = :expected"
        )
        if labelled_key:
            update += ", #copy = :copy"
            values[":copy"] = {"S": labelled_key}
        return self._answer_step(record_id, update, condition, values)

    def _mark_reviewed(
        self, record_id: str, expected_status: str, answer: str, reviewer: str
    ) -> dict[str, Any]:
        """Step 3: REVIEWED, once the copy and the manifest line are written."""
        values = {
            ":expected": {"S": expected_status},
            ":reviewed": {"S": Status.REVIEWED.value},
            ":answer": {"S": answer},
            ":who": {"S": reviewer},
            ":now": {"S": format_millis(self.clock())},
        }
        # reviewed_at becomes the moment the answer counts: the monitor tallies REVIEWED
        # records by it, and a window measured while the answer was only held must not
        # be the one it falls in.
        return self._answer_step(
            record_id,
            "SET #status = :reviewed, #at = :now",
            "#status = :expected AND #answer = :answer AND #who = :who",
            values,
        )

    def _answer_step(
        self, record_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        """One conditional step of the answer ``values`` names (``:answer`` by ``:who``,
        on a record the page showed as ``:expected``); the record as it left it. When the
        condition fails because this reviewer's own retry already finished the answer,
        that record; otherwise ``ReviewConflict`` saying who or what changed it."""
        answer, reviewer = values[":answer"]["S"], values[":who"]["S"]
        expected_status = values[":expected"]["S"]
        try:
            response = self._update(record_id, update, condition, values)
        except ClientError as exc:
            if aws_error_code(exc) != "ConditionalCheckFailedException":
                raise
            latest = self._get(record_id)
            if latest is not None and self._same_answer(latest, answer, reviewer, expected_status):
                return latest
            if latest is not None and latest.get(IMAGE_GONE_ATTRIBUTE):
                raise ReviewError(
                    f"the image of {record_id} is no longer in the bucket (a page found it "
                    "gone), so it cannot be copied for training; the answer was not kept"
                ) from exc
            message = _conflict_message(
                record_id, latest, expected_status, self.settings.hold_expiry
            )
            raise ReviewConflict(message, latest) from exc
        return record_from_item(response["Attributes"])

    def _hold_expired(
        self, record: dict[str, Any], answer: str, reviewer: str, expected: str
    ) -> bool:
        """Whether another answer holds the record, unfinished for longer than the expiry."""
        held = record.get(REVIEW_LABEL_ATTRIBUTE)
        if record.get(STATUS_ATTRIBUTE) != expected or held is None:
            return False
        if self._held_by(record, answer, reviewer, expected):
            return False
        return self._held_too_long(record)

    def _held_too_long(self, record: dict[str, Any]) -> bool:
        """Whether the record's answer was held longer ago than the expiry."""
        try:
            since = parse_timestamp(record.get(REVIEWED_AT_ATTRIBUTE))
        except ValueError:
            return False
        return since <= self.clock() - self.settings.hold_expiry

    def _claim(
        self,
        stale: dict[str, Any],
        expected: str,
        answer: str,
        reviewer: str,
        labelled_key: str | None,
    ) -> dict[str, Any]:
        """Step 1 over an expired hold: this answer replaces it only while it is still
        exactly the hold that expired (same answer, reviewer and time)."""
        values: dict[str, Any] = {
            ":expected": {"S": expected},
            ":answer": {"S": answer},
            ":who": {"S": reviewer},
            ":now": {"S": format_millis(self.clock())},
            ":old": {"S": str(stale[REVIEW_LABEL_ATTRIBUTE])},
            ":old_who": {"S": str(stale[REVIEWER_ATTRIBUTE])},
            ":since": {"S": str(stale[REVIEWED_AT_ATTRIBUTE])},
        }
        update = "SET #answer = :answer, #who = :who, #at = :now, #prior = :expected"
        if labelled_key:
            update += ", #copy = :copy"
            values[":copy"] = {"S": labelled_key}
        else:
            update += " REMOVE #copy"
        held = self._answer_step(
            str(stale[PARTITION_KEY]),
            update,
            "#status = :expected AND #answer = :old AND #who = :old_who AND #at = :since",
            values,
        )
        logger.warning(
            "expired held answer taken over",
            extra={
                "record_id": stale[PARTITION_KEY],
                "abandoned_answer": values[":old"]["S"],
                "abandoned_by": values[":old_who"]["S"],
                "held_since": values[":since"]["S"],
                "reviewer": reviewer,
            },
        )
        return held

    def _undo(self, abandoned: dict[str, Any], *, keep: str | None) -> None:
        """Remove what an answer that no longer holds the record wrote for training: its
        labelled copy (unless it is ``keep``, the copy the record's answer now uses) and
        its own manifest line."""
        copy = abandoned.get(LABELLED_KEY_ATTRIBUTE)
        if copy and copy != keep:
            self.s3.delete_object(Bucket=self.settings.bucket, Key=str(copy))
        self._remove_manifest_line(abandoned)

    def _release(self, record_id: str, expected_status: str, answer: str, reviewer: str) -> None:
        """Take back a held answer whose image can no longer be copied (deleted, or
        overwritten in an unversioned bucket): the record stays as the workflow left it."""
        values = {
            ":expected": {"S": expected_status},
            ":answer": {"S": answer},
            ":who": {"S": reviewer},
        }
        try:
            self._update(
                record_id,
                "REMOVE #answer, #who, #at, #prior, #copy",
                "#status = :expected AND #answer = :answer AND #who = :who",
                values,
            )
        except ClientError as exc:
            if aws_error_code(exc) != "ConditionalCheckFailedException":
                raise

    def _update(
        self, record_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        names = {
            name: attribute
            for name, attribute in _ANSWER_NAMES.items()
            if name in update or name in condition
        }
        return dict(
            self.dynamodb.update_item(
                TableName=self.settings.table_name,
                Key={PARTITION_KEY: {"S": record_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        )

    @staticmethod
    def _held_by(record: dict[str, Any], answer: str, reviewer: str, expected: str) -> bool:
        """Whether ``answer`` by ``reviewer`` holds the record (step 1 done, not step 3)."""
        return (
            record.get(STATUS_ATTRIBUTE) == expected
            and record.get(REVIEW_LABEL_ATTRIBUTE) == answer
            and record.get(REVIEWER_ATTRIBUTE) == reviewer
        )

    def _same_answer(
        self, record: dict[str, Any], answer: str, reviewer: str, expected: str
    ) -> bool:
        return (
            record.get(STATUS_ATTRIBUTE) == Status.REVIEWED
            and record.get(REVIEW_LABEL_ATTRIBUTE) == answer
            and record.get(REVIEWER_ATTRIBUTE) == reviewer
            and record.get(CLASSIFIED_STATUS_ATTRIBUTE) == expected
        )

    def _finish(self, record: dict[str, Any]) -> ReviewResult:
        """``_publish``, saying that the answer itself is held when publishing fails."""
        try:
            return self._publish(record)
        except ReviewError:
            raise
        except Exception as exc:
            raise ReviewIncomplete(
                f"the answer {record.get(REVIEW_LABEL_ATTRIBUTE)!r} is held, but its labelled "
                f"copy or manifest line could not be written ({exc}); the image stays in the "
                "queue until the same answer is sent again"
            ) from exc

    def _publish(self, record: dict[str, Any]) -> ReviewResult:
        """Copy the image (not for NEITHER) and add the record's manifest line once."""
        labelled_key = record.get(LABELLED_KEY_ATTRIBUTE)
        if labelled_key:
            self._copy(record, str(labelled_key))
        self._append_manifest(record)
        return ReviewResult(
            record=record,
            labelled_key=None if labelled_key is None else str(labelled_key),
            manifest_key=self.settings.manifest_key(record.get(RECORDED_AT_ATTRIBUTE)),
        )

    @staticmethod
    def _source(record: dict[str, Any]) -> dict[str, str]:
        """The exact object version the model saw (the key alone when unversioned)."""
        source = {"Bucket": str(record[BUCKET_ATTRIBUTE]), "Key": str(record[KEY_ATTRIBUTE])}
        if version := _version_id(str(record.get(VERSION_ATTRIBUTE, ""))):
            source["VersionId"] = version
        return source

    @staticmethod
    def _pinned_etag(record: dict[str, Any]) -> str | None:
        """An unversioned upload's record names its bytes by their ETag (its version is
        ``null``): quoted, as S3 sends and compares one (as the Serialize step reads)."""
        if _version_id(str(record.get(VERSION_ATTRIBUTE, ""))) or not record.get(ETAG_ATTRIBUTE):
            return None
        return f'"{record[ETAG_ATTRIBUTE]}"'

    def _check_source(self, record: dict[str, Any]) -> None:
        """``ReviewError`` when the image the model saw is no longer in the bucket (a
        lifecycle rule expired it, it was deleted, or, unversioned, overwritten)."""
        source = self._source(record)
        etag = self._pinned_etag(record)
        try:
            self.s3.head_object(**source, **({"IfMatch": etag} if etag else {}))
        except ClientError as exc:
            if etag and object_changed(exc):
                raise ReviewError(
                    f"s3://{source['Bucket']}/{source['Key']} was overwritten since it was "
                    "classified, so the image the model saw cannot be copied; the answer was "
                    "not kept"
                ) from exc
            if object_missing(exc):
                raise ReviewError(
                    f"the image s3://{source['Bucket']}/{source['Key']} is no longer in the "
                    "bucket, so it cannot be copied for training; the answer was not kept"
                ) from exc
            raise

    def _copied(self, labelled_key: str) -> bool:
        """Whether the labelled copy exists (its name is this record version's own)."""
        try:
            self.s3.head_object(Bucket=self.settings.bucket, Key=labelled_key)
        except ClientError as exc:
            if object_missing(exc):
                return False
            raise
        return True

    def _copy(self, record: dict[str, Any], labelled_key: str) -> None:
        if self._copied(labelled_key):
            return  # a retry after the copy was made: the image may be gone since
        source = self._source(record)
        etag = self._pinned_etag(record)
        try:
            if etag:  # CopySourceIfMatch is the guard on AWS; moto ignores it
                self.s3.head_object(**source, IfMatch=etag)
            self._copy_object(record, labelled_key, source, etag)
        except ClientError as exc:
            if etag and object_changed(exc):
                raise ReviewError(
                    f"s3://{source['Bucket']}/{source['Key']} was overwritten since, so the "
                    "image the model saw cannot be copied for training"
                ) from exc
            if object_missing(exc):  # deleted between the check and the copy
                raise ReviewError(
                    f"the image s3://{source['Bucket']}/{source['Key']} is no longer in the "
                    "bucket, so it cannot be copied for training"
                ) from exc
            raise

    def _copy_object(
        self, record: dict[str, Any], labelled_key: str, source: dict[str, str], etag: str | None
    ) -> None:
        self.s3.copy_object(
            Bucket=self.settings.bucket,
            Key=labelled_key,
            CopySource=source,
            **({"CopySourceIfMatch": etag} if etag else {}),
            MetadataDirective="REPLACE",
            Metadata={
                # S3 keeps user metadata as US-ASCII (botocore refuses "vélo"): the label
                # percent-encoded as UTF-8, which leaves an ASCII label as it is.
                "label": quote(str(record[REVIEW_LABEL_ATTRIBUTE]), safe=""),
                "source-record-sha256": hashlib.sha256(
                    str(record[PARTITION_KEY]).encode("utf-8")
                ).hexdigest(),
            },
            **({"ContentType": ct} if (ct := _content_type(labelled_key)) else {}),
        )

    def manifest_line(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record's manifest entry; ``path`` is relative to the labelled prefix."""
        answer = str(record[REVIEW_LABEL_ATTRIBUTE])
        labelled_key = record.get(LABELLED_KEY_ATTRIBUTE)
        labels = self.settings.labels
        return {
            "record_id": record[PARTITION_KEY],
            "label": answer,
            "class_index": labels.index(answer) if answer in labels else None,
            "path": None
            if not labelled_key
            else str(labelled_key).removeprefix(self.settings.labelled_prefix),
            "source": {
                "bucket": record.get(BUCKET_ATTRIBUTE),
                "key": record.get(KEY_ATTRIBUTE),
                "version_id": record.get(VERSION_ATTRIBUTE),
            },
            "model_label": record.get(LABEL_ATTRIBUTE),
            "confidence": record.get(CONFIDENCE_ATTRIBUTE),
            "classified_status": record.get(CLASSIFIED_STATUS_ATTRIBUTE),
            "reviewer": record.get(REVIEWER_ATTRIBUTE),
            "reviewed_at": record.get(REVIEWED_AT_ATTRIBUTE),
        }

    def _append_manifest(self, record: dict[str, Any]) -> None:
        """Add the line of the answer ``record`` holds, once. A line of the record left
        by another answer is one an answer that took over an expired hold could not undo
        (S3 refused, or two reviewers raced): while the record still holds this answer,
        that line, and the labelled copy it names, are removed, so the day's manifest
        ends with this answer's line alone. An answer the record no longer holds adds
        nothing beside another's line (its own undo follows)."""
        record_id = record[PARTITION_KEY]
        if record_id in self._earlier_manifest_ids():
            return  # answered before one manifest per day; resent since
        entry = self.manifest_line(record)
        text = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")
        stale: list[ManifestLine] = []

        def append(lines: list[ManifestLine]) -> list[ManifestLine] | None:
            of_record = [line for line in lines if line.is_of(record_id)]
            others = [line for line in of_record if not _line_of_answer(line, record)]
            # Asked after each read of the manifest: an answer that took the record over
            # writes its line only once it holds the record, so a line read here that
            # belongs to the record's holder is seen to be one.
            stale[:] = others if others and self._holds(record) else []
            if len(of_record) > len(others) and not stale:
                return None  # a retry: the line is there already
            if others and not stale:
                return None  # another answer's line, and that answer holds the record
            kept = [line for line in lines if line not in others]
            mine = [line for line in of_record if line not in others]
            return kept if mine else [*kept, ManifestLine(text, entry)]

        self._edit_manifest(record, append, "add")
        for line in stale:
            path = None if line.entry is None else line.entry.get("path")
            if isinstance(path, str):
                self._delete_abandoned_copy(record, f"{self.settings.labelled_prefix}{path}")

    def _holds(self, record: dict[str, Any]) -> bool:
        """Whether the record (read now) holds the answer ``record`` holds."""
        latest = self._get(record[PARTITION_KEY])
        return latest is not None and all(
            latest.get(name) == record.get(name)
            for name in (REVIEW_LABEL_ATTRIBUTE, REVIEWER_ATTRIBUTE)
        )

    def _delete_abandoned_copy(self, record: dict[str, Any], copy: str) -> None:
        """Delete ``copy``, named by an abandoned answer's line, unless an answer the
        record holds (this one, or one that took it over since) uses it."""
        if copy == record.get(LABELLED_KEY_ATTRIBUTE):
            return
        latest = self._get(record[PARTITION_KEY])
        if latest is not None and latest.get(LABELLED_KEY_ATTRIBUTE) == copy:
            return
        self.s3.delete_object(Bucket=self.settings.bucket, Key=copy)

    def _remove_manifest_line(self, record: dict[str, Any]) -> None:
        """Take the line of the answer ``record`` holds (by its reviewer, with its label)
        out of its day's manifest; another answer's line of the record stays."""

        def remove(lines: list[ManifestLine]) -> list[ManifestLine] | None:
            kept = [existing for existing in lines if not _line_of_answer(existing, record)]
            return None if len(kept) == len(lines) else kept

        self._edit_manifest(record, remove, "remove")

    def _edit_manifest(
        self,
        record: dict[str, Any],
        edit: Callable[[list[ManifestLine]], list[ManifestLine] | None],
        verb: str,
    ) -> None:
        """Rewrite the record's day manifest as ``edit`` says (None: leave it), with a
        conditional write retried, after a jittered backoff, when another reviewer wrote it
        since it was read; the lines ``edit`` keeps are written back byte for byte,
        unreadable ones included."""
        key = self.settings.manifest_key(record.get(RECORDED_AT_ATTRIBUTE))
        for attempt in range(_MANIFEST_ATTEMPTS):
            if attempt:
                ceiling = MANIFEST_BACKOFF_SECONDS * 2 ** (attempt - 1)
                time.sleep(random.uniform(0, min(MANIFEST_BACKOFF_CAP_SECONDS, ceiling)))
            body, etag = self._read(key)
            lines = edit(parse_manifest(body, self._uri(key)))
            if lines is None:
                return
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(
                    Bucket=self.settings.bucket,
                    Key=key,
                    Body=b"".join(line.text + b"\n" for line in lines),
                    ContentType="application/x-ndjson",
                    **condition,
                )
                return
            except ClientError as exc:
                if not object_changed(exc):
                    raise
        raise RuntimeError(
            f"s3://{self.settings.bucket}/{key} kept changing; "
            f"{_MANIFEST_ATTEMPTS} attempts to {verb} {record[PARTITION_KEY]} failed"
        )

    def _earlier_manifest_ids(self) -> frozenset[str]:
        if self._earlier_ids is None:
            lines = self._manifest_entries(self.settings.labelled_prefix + EARLIER_MANIFEST_NAME)
            self._earlier_ids = frozenset(str(line.get("record_id")) for line in lines)
        return self._earlier_ids

    def read_manifest(self) -> list[dict[str, Any]]:
        """Every manifest line: the earlier single manifest's, then day by day."""
        first = self.settings.labelled_prefix + MANIFEST_STEM
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=first
        )
        keys = sorted(
            str(item["Key"])
            for page in pages
            for item in page.get("Contents", [])
            if str(item["Key"]).endswith(MANIFEST_SUFFIX) and "/" not in item["Key"][len(first) :]
        )
        earlier = self.settings.labelled_prefix + EARLIER_MANIFEST_NAME
        return [line for key in [earlier, *keys] for line in self._manifest_entries(key)]

    def _manifest_entries(self, key: str) -> list[dict[str, Any]]:
        """One manifest's answers (none when it does not exist; an unreadable line is
        logged and left out)."""
        body, _ = self._read(key)
        return [
            line.entry for line in parse_manifest(body, self._uri(key)) if line.entry is not None
        ]

    def _uri(self, key: str) -> str:
        return f"s3://{self.settings.bucket}/{key}"

    def _read(self, key: str) -> tuple[bytes, str | None]:
        """An object's bytes and ETag (``b""`` and None when it does not exist), not
        decoded whole: a line that is not UTF-8 is one unreadable line, not the file."""
        try:
            response = self.s3.get_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if object_missing(exc):
                return b"", None
            raise
        return bytes(response["Body"].read()), str(response["ETag"])

    def _get(self, record_id: str) -> dict[str, Any] | None:
        response = self.dynamodb.get_item(
            TableName=self.settings.table_name,
            Key={PARTITION_KEY: {"S": record_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return None if item is None else record_from_item(item)


def _line_of_answer(line: ManifestLine, record: dict[str, Any]) -> bool:
    """Whether ``line`` is the manifest line of the answer ``record`` holds: its record,
    its reviewer and its label."""
    return bool(
        line.entry is not None
        and line.is_of(record[PARTITION_KEY])
        and line.entry.get("reviewer") == record.get(REVIEWER_ATTRIBUTE)
        and line.entry.get("label") == record.get(REVIEW_LABEL_ATTRIBUTE)
    )


def _version_id(version: str) -> str | None:
    """The S3 version id to read, or None for an upload to an unversioned bucket (whose
    record says ``null``)."""
    return None if not version or version == NULL_VERSION else version


def _conflict_message(
    record_id: str,
    latest: dict[str, Any] | None,
    expected: str | None = None,
    hold_expiry: timedelta | None = None,
) -> str:
    if latest is None:
        return f"{record_id} no longer exists"
    status = latest.get(STATUS_ATTRIBUTE)
    if status == Status.REVIEWED:
        return (
            f"{record_id} was already reviewed as {latest.get(REVIEW_LABEL_ATTRIBUTE)!r} "
            f"by {latest.get(REVIEWER_ATTRIBUTE)} at {latest.get(REVIEWED_AT_ATTRIBUTE)}"
        )
    if status == expected and latest.get(REVIEW_LABEL_ATTRIBUTE) is not None:
        return (
            f"{record_id} is being answered as {latest.get(REVIEW_LABEL_ATTRIBUTE)!r} by "
            f"{latest.get(REVIEWER_ATTRIBUTE)} since {latest.get(REVIEWED_AT_ATTRIBUTE)}: "
            "their answer is held while its copy is written, and they finish it by sending it "
            "again"
            + (
                ""
                if hold_expiry is None
                else f" (held over {hold_expiry.total_seconds() / 60:g} minutes, it may be "
                "answered afresh)"
            )
        )
    if status == Status.NEEDS_REVIEW and expected not in (None, status):
        return f"{record_id} is {status}, not {expected} as the page showed it: reload the queue"
    return f"{record_id} is {status} now, not waiting for review"


def _content_type(key: str) -> str | None:
    suffix = PurePosixPath(key).suffix.lower().lstrip(".")
    return MEDIA_TYPES.get({"jpg": "JPEG"}.get(suffix, suffix.upper()))
