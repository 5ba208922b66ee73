"""The result record and the workflow payloads: one home for both contracts.

Every uploaded object version ends in exactly one item of the results table.
The state machine writes the item itself (a direct, conditional ``putItem``), so
the layout below is what the ASL's ``Record*`` states must contain: a test
derives each of those states' ``Item`` from :func:`asl_item` and compares. The
monitor, the CLI, the reports and the offline client read items back with
:func:`record_from_item` and the :class:`Status` enum, never with string copies.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypedDict

from boto3.dynamodb.types import Binary, TypeDeserializer

from scones_core.monitoring.timestamps import parse_timestamp


class Status(StrEnum):
    """The terminal status of one object version."""

    ACCEPTED = "ACCEPTED"  # classified at or above the confidence threshold
    NEEDS_REVIEW = "NEEDS_REVIEW"  # classified below the threshold: a person should look
    REJECTED = "REJECTED"  # bad input (the image rules): error_code and reason say which
    FAILED = "FAILED"  # infrastructure failure after retries: replayable
    # A person answered (``review_label``): set by ``scones review`` on a NEEDS_REVIEW
    # record or a sampled ACCEPTED one; ``classified_status`` keeps which it was.
    REVIEWED = "REVIEWED"


TERMINAL_STATUSES: tuple[Status, ...] = tuple(Status)
# What the workflow itself writes for a classified image; a review may follow.
CLASSIFIED_STATUSES: tuple[Status, ...] = (Status.ACCEPTED, Status.NEEDS_REVIEW)

PARTITION_KEY = "pk"
# The global secondary index the monitor counts statuses with (partition status,
# sort recorded_at); template.yaml declares it under this name (a test checks).
STATUS_INDEX_NAME = "status-recorded_at-index"
# The ``kind`` of the dead-letter message the workflow's NotifyDeadLetter state sends.
WORKFLOW_FAILED_KIND = "workflow_failed"
STATUS_ATTRIBUTE = "status"
RECORDED_AT_ATTRIBUTE = "recorded_at"
# Which execution of the object wrote the item: 0 for the first, N for the N-th replay
# (``scones redrive``). Only a FAILED item may be replaced, and only by a later attempt.
ATTEMPT_ATTRIBUTE = "attempt"
MODEL_VERSION_ATTRIBUTE = "model_version"
ERROR_CODE_ATTRIBUTE = "error_code"  # REJECTED: the image rule; FAILED: the error
# The S3 event an item's execution was started for, as a short digest (``ObjectRef.delivery``:
# the whole delivery id would double a record's write units).
DELIVERY_ATTRIBUTE = "delivery"

# The upload a record is about, and what the readers (the review queue, the redrive, the
# terminal, the reports) take from a record besides the keys above.
BUCKET_ATTRIBUTE = "bucket"
KEY_ATTRIBUTE = "key"
VERSION_ATTRIBUTE = "version_id"
ETAG_ATTRIBUTE = "etag"
EVENT_TIME_ATTRIBUTE = "event_time"
STARTED_AT_ATTRIBUTE = "started_at"
THRESHOLD_ATTRIBUTE = "threshold"
LABEL_ATTRIBUTE = "label"
CONFIDENCE_ATTRIBUTE = "confidence"
PROBABILITIES_ATTRIBUTE = "probabilities"
VARIANT_ATTRIBUTE = "endpoint_variant"
SOURCE_FORMAT_ATTRIBUTE = "source_format"
SERIALIZE_MS_ATTRIBUTE = "serialize_ms"
INFERENCE_MS_ATTRIBUTE = "inference_ms"
REASON_ATTRIBUTE = "reason"  # REJECTED and FAILED: one human sentence

# Written by a review (``scones_core.review``), never by the workflow.
REVIEW_LABEL_ATTRIBUTE = "review_label"  # one of the model's labels, or NEITHER
REVIEWED_AT_ATTRIBUTE = "reviewed_at"
REVIEWER_ATTRIBUTE = "reviewer"
# The status the workflow gave the record before the review (ACCEPTED or NEEDS_REVIEW),
# so counts of the workflow's outcomes stay right after a review.
CLASSIFIED_STATUS_ATTRIBUTE = "classified_status"
# True on the ACCEPTED records drawn for review (accuracy on accepted images is measured).
REVIEW_SAMPLED_ATTRIBUTE = "review_sampled"
REVIEW_SAMPLED_AT_ATTRIBUTE = "review_sampled_at"
# Where the reviewed image was copied (``<LabelledDataPrefix><label>/<name>``); absent
# for NEITHER.
LABELLED_KEY_ATTRIBUTE = "labelled_key"
# When a review found the record's upload gone (deleted, expired or overwritten): nobody
# can answer it any more, so the review queue leaves it out instead of showing it for ever.
IMAGE_GONE_ATTRIBUTE = "image_gone_at"
# The answer for an image that shows neither class: recorded, never used for training.
NEITHER = "neither"


# ---- workflow payloads (the state machine's JSON, typed) ------------------------


class ObjectPayload(TypedDict):
    """``ObjectRef.to_json()``: which object version the execution is about."""

    bucket: str
    key: str
    version: str
    etag: str
    size: int
    sequencer: str
    record_id: str
    delivery: str


class Rejection(TypedDict):
    """Why an input was refused: a machine-readable code and one human sentence."""

    error_code: str
    reason: str


class ImageSource(TypedDict):
    """What was uploaded, as the image rules read it."""

    format: str
    mode: str
    width: int
    height: int
    bytes: int
    sha256: str


# What SerializeImage makes of every accepted upload, whatever its format: the model's
# input as a PNG, so ClassifyImage sends the endpoint one content type.
NORMALISED_CONTENT_TYPE = "image/png"


class SerializedImage(TypedDict):
    """SerializeImage's result for an accepted image (at ``$.image``)."""

    image_b64: str
    content_type: str
    source: ImageSource
    duration_ms: float


class RejectedImage(TypedDict):
    """SerializeImage's result for a refused input (at ``$.image``)."""

    rejection: Rejection
    duration_ms: float


class ClassificationState(TypedDict):
    """ClassifyImage's result (at ``$.classification``)."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    probabilities_attribute: dict[str, dict[str, str]]
    endpoint_name: str
    variant: str
    model_version: str
    duration_ms: float


class WorkflowInput(TypedDict):
    """One image's input: the start function sends attempt 0, a replay attempt N > 0."""

    object: ObjectPayload
    event_time: str
    attempt: int


class BatchInput(TypedDict):
    """The input of an execution that classifies several images (one SQS batch).

    The state machine's Map runs each item as a ``WorkflowInput``; an execution
    started with a single ``WorkflowInput`` is a batch of one.
    """

    objects: list[WorkflowInput]


# DynamoDB's smallest non-zero magnitude: a number below it is refused ("Number underflow"),
# which would turn a classification into a FAILED record on every attempt.
DYNAMODB_SMALLEST_NUMBER = 1e-130


def number_attribute(value: float) -> dict[str, str]:
    """``value`` as a DynamoDB number attribute; a magnitude DynamoDB cannot hold (an
    endpoint answering ``1e-200`` for a label) is stored as 0."""
    if abs(value) < DYNAMODB_SMALLEST_NUMBER:
        value = 0.0
    return {"N": repr(value)}


# ---- the record layout -----------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """One attribute of the item: its DynamoDB type and where the ASL takes it from.

    ``path`` is a JSONPath (``$.``/``$$.``), or an intrinsic function; ``literal``
    is a constant (a ``${...}`` definition substitution counts as a constant).
    """

    name: str
    type: str  # "S", "N" or "M"
    path: str = ""
    literal: str = ""

    def asl(self) -> dict[str, str]:
        if self.literal:
            return {self.type: self.literal}
        if self.type == "N" and self.path.startswith("$"):
            # DynamoDB takes numbers as strings; Format turns the JSON number into one.
            return {"N.$": f"States.Format('{{}}', {self.path})"}
        return {f"{self.type}.$": self.path}


def capture_id(record_id: str) -> str:
    """The ``InferenceId`` the classify step sends with a record's endpoint call, which
    data capture writes as the captured request's ``eventMetadata.inferenceId``: ties a
    capture line (it holds the normalised image) to its record, to erase an upload's
    copies or to join labels to captured traffic. The SHA-256 of the record id, in hex:
    64 characters, InvokeEndpoint's limit, whatever the key's length."""
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()


EXECUTION_ATTRIBUTE = "execution_arn"
_EXECUTION = Attribute(EXECUTION_ATTRIBUTE, "S", "$$.Execution.Id")


def _common(status: Attribute) -> tuple[Attribute, ...]:
    return (
        Attribute(PARTITION_KEY, "S", "$.object.record_id"),
        Attribute(BUCKET_ATTRIBUTE, "S", "$.object.bucket"),
        Attribute(KEY_ATTRIBUTE, "S", "$.object.key"),
        Attribute(VERSION_ATTRIBUTE, "S", "$.object.version"),
        Attribute(ETAG_ATTRIBUTE, "S", "$.object.etag"),
        Attribute(DELIVERY_ATTRIBUTE, "S", "$.object.delivery"),
        status,
        Attribute(THRESHOLD_ATTRIBUTE, "N", literal="${ConfidenceThreshold}"),
        Attribute(EVENT_TIME_ATTRIBUTE, "S", "$.event_time"),
        Attribute(STARTED_AT_ATTRIBUTE, "S", "$$.Execution.StartTime"),
        Attribute(RECORDED_AT_ATTRIBUTE, "S", "$$.State.EnteredTime"),
        _EXECUTION,
        Attribute(ATTEMPT_ATTRIBUTE, "N", "$.attempt"),
    )


def _classified(status: Status) -> tuple[Attribute, ...]:
    """A classified image's item; the status is a constant of the state that writes it
    (CheckConfidence branches straight to one writer per status: no Pass state sets it)."""
    return (
        *_common(Attribute(STATUS_ATTRIBUTE, "S", literal=status.value)),
        Attribute(LABEL_ATTRIBUTE, "S", "$.classification.label"),
        Attribute(CONFIDENCE_ATTRIBUTE, "N", "$.classification.confidence"),
        Attribute(PROBABILITIES_ATTRIBUTE, "M", "$.classification.probabilities_attribute"),
        Attribute("endpoint_name", "S", "$.classification.endpoint_name"),
        Attribute(VARIANT_ATTRIBUTE, "S", "$.classification.variant"),
        # Which model judged the image (the endpoint's CustomAttributes; see
        # scones_core.endpoint_response), so a canary's records say which variant's model.
        Attribute(MODEL_VERSION_ATTRIBUTE, "S", "$.classification.model_version"),
        Attribute(SOURCE_FORMAT_ATTRIBUTE, "S", "$.image.source.format"),
        Attribute("source_width", "N", "$.image.source.width"),
        Attribute("source_height", "N", "$.image.source.height"),
        Attribute("source_bytes", "N", "$.image.source.bytes"),
        Attribute("source_sha256", "S", "$.image.source.sha256"),
        Attribute(SERIALIZE_MS_ATTRIBUTE, "N", "$.image.duration_ms"),
        Attribute(INFERENCE_MS_ATTRIBUTE, "N", "$.classification.duration_ms"),
    )


ACCEPTED_LAYOUT: tuple[Attribute, ...] = _classified(Status.ACCEPTED)
NEEDS_REVIEW_LAYOUT: tuple[Attribute, ...] = _classified(Status.NEEDS_REVIEW)

REJECTED_LAYOUT: tuple[Attribute, ...] = (
    *_common(Attribute(STATUS_ATTRIBUTE, "S", literal=Status.REJECTED.value)),
    Attribute(ERROR_CODE_ATTRIBUTE, "S", "$.image.rejection.error_code"),
    Attribute(REASON_ATTRIBUTE, "S", "$.image.rejection.reason"),
)

FAILED_LAYOUT: tuple[Attribute, ...] = (
    *_common(Attribute(STATUS_ATTRIBUTE, "S", literal=Status.FAILED.value)),
    Attribute(ERROR_CODE_ATTRIBUTE, "S", "$.failure.error_code"),
    Attribute(REASON_ATTRIBUTE, "S", "$.failure.cause.errorMessage"),
)

# Which ASL state writes which layout.
RECORD_STATES: dict[str, tuple[Attribute, ...]] = {
    "RecordAccepted": ACCEPTED_LAYOUT,
    "RecordNeedsReview": NEEDS_REVIEW_LAYOUT,
    "RecordRejected": REJECTED_LAYOUT,
    "RecordFailure": FAILED_LAYOUT,
}


def asl_item(layout: tuple[Attribute, ...]) -> dict[str, dict[str, str]]:
    """The ``Item`` parameter of a ``dynamodb:putItem`` state for ``layout``."""
    return {attribute.name: attribute.asl() for attribute in layout}


# ---- when a write may replace an item ------------------------------------------
# A new object version always gets its item. An existing item is replaced only while
# it is FAILED, and only by a later attempt: a replay (attempt N) replaces the FAILED
# item of an earlier attempt. A duplicate execution of the same or an earlier attempt
# (a re-delivered event, an Express workflow that ran twice, a stale replay) finds the
# condition false and ends in AlreadyRecorded; ACCEPTED, NEEDS_REVIEW and REJECTED
# items are final. A FAILED item written before items carried an attempt may be
# replaced by any attempt: telling "no attempt" from attempt 0 would need DynamoDB to
# compare two expression values, which this expression avoids.
# One REJECTED item is not final: an unversioned upload's ObjectChanged (its bytes were
# overwritten before they were read). The same bytes uploaded to the key again have the
# same ETag, so the same record id, but their S3 event is another delivery (its own
# sequencer, ``ObjectRef.delivery_id``): their execution reads and judges them and
# replaces the item, which would otherwise say "changed" while the key holds those very
# bytes. A second run of the same delivery (a duplicate event) still finds it final.
# A FAILED item the writing execution wrote itself may be replaced too: DynamoDB can
# apply a write and answer HTTP 500 (which does not say whether it did), and the retry
# would otherwise find the condition false and end the failure in AlreadyRecorded,
# without its dead letter and without failing the execution. An execution writes one
# record, so only RecordFailure's retry ever meets its own item.
OBJECT_CHANGED_CODE = "ObjectChanged"  # the error_code of ``errors.ObjectChanged``
RECORD_CONDITION_EXPRESSION = (
    f"attribute_not_exists({PARTITION_KEY}) OR "
    "(#status = :failed AND (attribute_not_exists(#attempt) OR #attempt < :attempt OR "
    "#execution = :execution)) OR "
    "(#status = :rejected AND #error = :changed AND "
    "(attribute_not_exists(#delivery) OR #delivery <> :delivery))"
)
RECORD_CONDITION_NAMES: dict[str, str] = {
    "#status": STATUS_ATTRIBUTE,
    "#attempt": ATTEMPT_ATTRIBUTE,
    "#error": ERROR_CODE_ATTRIBUTE,
    "#delivery": DELIVERY_ATTRIBUTE,
    "#execution": EXECUTION_ATTRIBUTE,
}
# ``:attempt`` is the writing execution's own attempt, ``:delivery`` its S3 event's
# delivery id (both from its input), ``:execution`` its own id.
_ATTEMPT_VALUE = Attribute(":attempt", "N", "$.attempt")
_DELIVERY_VALUE = Attribute(":delivery", "S", "$.object.delivery")
_EXECUTION_VALUE = Attribute(":execution", "S", _EXECUTION.path)


def asl_condition() -> dict[str, Any]:
    """The condition parameters every ``Record*`` state sends with its ``putItem``."""
    return {
        "ConditionExpression": RECORD_CONDITION_EXPRESSION,
        "ExpressionAttributeNames": dict(RECORD_CONDITION_NAMES),
        "ExpressionAttributeValues": {
            ":failed": {"S": Status.FAILED.value},
            ":attempt": _ATTEMPT_VALUE.asl(),
            ":rejected": {"S": Status.REJECTED.value},
            ":changed": {"S": OBJECT_CHANGED_CODE},
            ":delivery": _DELIVERY_VALUE.asl(),
            ":execution": _EXECUTION_VALUE.asl(),
        },
    }


def condition_values(attempt: int, delivery: str, execution: str) -> dict[str, dict[str, str]]:
    """``ExpressionAttributeValues`` as the state machine resolves them for ``attempt``
    of the delivery ``delivery``, written by the execution ``execution``."""
    values = asl_condition()["ExpressionAttributeValues"]
    return {
        **values,
        ":attempt": {"N": str(attempt)},
        ":delivery": {"S": delivery},
        ":execution": {"S": execution},
    }


def awaits_another_upload(existing: Mapping[str, Any]) -> bool:
    """Whether an item is an ObjectChanged rejection, which another delivery may replace."""
    return (
        existing.get(STATUS_ATTRIBUTE) == Status.REJECTED
        and existing.get(ERROR_CODE_ATTRIBUTE) == OBJECT_CHANGED_CODE
    )


def may_replace(
    existing: Mapping[str, Any] | None, attempt: int, delivery: str, execution: str | None = None
) -> bool:
    """What the condition decides, in Python (tests check the two agree); ``execution``
    is the writer's own id (None: a new execution, as a replay is)."""
    if existing is None:
        return True
    if awaits_another_upload(existing):
        return existing.get(DELIVERY_ATTRIBUTE) != delivery
    if existing.get(STATUS_ATTRIBUTE) != Status.FAILED:
        return False
    previous = existing.get(ATTEMPT_ATTRIBUTE)
    own = execution is not None and existing.get(EXECUTION_ATTRIBUTE) == execution
    return previous is None or int(previous) < attempt or own


# ---- reading records back ---------------------------------------------------------

_DESERIALIZER = TypeDeserializer()


def plain(value: Any) -> Any:
    """DynamoDB's Decimals as ints or floats, sets as lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [plain(v) for v in value]
    return value


def json_value(value: Any) -> Any:
    """``json.dumps``' ``default`` for a record read back: a binary attribute (no layout has
    one; another tool's) as its bytes in base64, anything else JSON has no type for as its
    text. One record of another tool's must never keep the others from being written."""
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def record_from_item(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A low-level client's item (``{"S": ...}`` values) as plain Python values."""
    return plain({name: _DESERIALIZER.deserialize(value) for name, value in item.items()})


def is_terminal(record: Mapping[str, Any]) -> bool:
    return record.get(STATUS_ATTRIBUTE) in TERMINAL_STATUSES


def classified_status(record: Mapping[str, Any]) -> str | None:
    """The status the workflow wrote, also for a record a person has reviewed since."""
    status = record.get(STATUS_ATTRIBUTE)
    if status == Status.REVIEWED:
        prior = record.get(CLASSIFIED_STATUS_ATTRIBUTE)
        return None if prior is None else str(prior)
    return None if status is None else str(status)


def outcome_reason(record: Mapping[str, Any]) -> str:
    """Why a record is not simply ACCEPTED, in one line, as every listing of records shows
    it (the terminal's table, the run report): the threshold missed, the rule or error, or
    the person's answer."""
    status = record.get(STATUS_ATTRIBUTE)
    if status == Status.NEEDS_REVIEW:
        return f"confidence below threshold {record.get(THRESHOLD_ATTRIBUTE)}"
    if status == Status.REVIEWED:
        return (
            f"reviewed as {record.get(REVIEW_LABEL_ATTRIBUTE)} by "
            f"{record.get(REVIEWER_ATTRIBUTE)} (was {record.get(CLASSIFIED_STATUS_ATTRIBUTE)})"
        )
    if status in (Status.REJECTED, Status.FAILED):
        code = record.get(ERROR_CODE_ATTRIBUTE, "")
        reason = str(record.get(REASON_ATTRIBUTE, ""))
        return f"{code}: {reason}" if code else reason
    return ""


# ---- records this stack did not write -----------------------------------------------
# Each attribute's DynamoDB type, as the workflow (the layouts) and a review write it.
ATTRIBUTE_TYPES: dict[str, str] = {
    **{attribute.name: attribute.type for layout in RECORD_STATES.values() for attribute in layout},
    REVIEW_LABEL_ATTRIBUTE: "S",
    REVIEWED_AT_ATTRIBUTE: "S",
    REVIEWER_ATTRIBUTE: "S",
    CLASSIFIED_STATUS_ATTRIBUTE: "S",
    REVIEW_SAMPLED_ATTRIBUTE: "BOOL",
    REVIEW_SAMPLED_AT_ATTRIBUTE: "S",
    LABELLED_KEY_ATTRIBUTE: "S",
    IMAGE_GONE_ATTRIBUTE: "S",
}
# What every record has had since the first version of the stack (its keys, the index's
# keys and the upload it is about), and what a classified one adds (a reviewed one: the
# person's label): older records lack some of the rest (``attempt``, ``delivery``,
# ``model_version``), and readers cope.
REQUIRED_ATTRIBUTES: tuple[str, ...] = (
    PARTITION_KEY,
    STATUS_ATTRIBUTE,
    RECORDED_AT_ATTRIBUTE,
    BUCKET_ATTRIBUTE,
    KEY_ATTRIBUTE,
)
CLASSIFIED_ATTRIBUTES: tuple[str, ...] = (LABEL_ATTRIBUTE, CONFIDENCE_ATTRIBUTE)
_TYPE_NAMES = {"S": "a string", "N": "a number", "M": "a map", "BOOL": "true or false"}


def _kind(value: Any) -> str:
    """What a value read back (``record_from_item``) is, in the words of ``_TYPE_NAMES``."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list or set"
    return "null" if value is None else "binary"


def record_problems(record: Mapping[str, Any]) -> list[str]:
    """What keeps a record read back from being one of this layout (an item written by
    hand, by another tool or by an older stack): a required attribute missing, an
    attribute of another type, a number out of its range, a ``recorded_at`` that is no
    time. Empty for a record the
    readers can use; they name the others (``UnreadableRecord``) instead of failing on
    them or showing them half."""
    status = record.get(STATUS_ATTRIBUTE)
    required = REQUIRED_ATTRIBUTES
    if status in CLASSIFIED_STATUSES:
        required += CLASSIFIED_ATTRIBUTES
    elif status == Status.REVIEWED:  # a person's answer (the retraining rehearsal's has no score)
        required += (REVIEW_LABEL_ATTRIBUTE,)
    problems = [f"no {name}" for name in required if name not in record]
    for name in sorted(record):
        wanted = ATTRIBUTE_TYPES.get(name)
        if wanted is not None and (kind := _kind(record[name])) != _TYPE_NAMES[wanted]:
            problems.append(f"{name} is {kind}, not {_TYPE_NAMES[wanted]}")
        elif wanted == "M" and any(_kind(v) != "a number" for v in record[name].values()):
            # The one map of the layout (``probabilities``) maps labels to numbers.
            problems.append(f"{name} holds more than numbers")
    problems += _out_of_range(record)
    if isinstance(status, str) and status not in TERMINAL_STATUSES:
        problems.append(f"status {status!r} is none of {', '.join(TERMINAL_STATUSES)}")
    if isinstance(recorded := record.get(RECORDED_AT_ATTRIBUTE), str):
        try:
            parse_timestamp(recorded)
        except ValueError as exc:
            problems.append(f"{RECORDED_AT_ATTRIBUTE}: {exc}")
    return problems


# Numbers whose meaning bounds them: a share of 1 (a confidence of 5 would sort first in
# the review queue and print as 500 %), and an attempt counted from 0.
_FRACTION_ATTRIBUTES = (CONFIDENCE_ATTRIBUTE, THRESHOLD_ATTRIBUTE)


def _outside_fraction(value: Any) -> bool:
    """A number, but not a share of 1 (any other type is named by its type)."""
    return _kind(value) == "a number" and not 0 <= value <= 1


def _out_of_range(record: Mapping[str, Any]) -> list[str]:
    """Numbers of the right type that no record of this layout holds."""
    problems = [
        f"{name} {record[name]} is not between 0 and 1"
        for name in _FRACTION_ATTRIBUTES
        if _outside_fraction(record.get(name))
    ]
    probabilities = record.get(PROBABILITIES_ATTRIBUTE)
    if isinstance(probabilities, Mapping) and any(map(_outside_fraction, probabilities.values())):
        problems.append("probabilities holds a number not between 0 and 1")
    attempt: Any = record.get(ATTEMPT_ATTRIBUTE)
    if _kind(attempt) == "a number" and (attempt < 0 or attempt != int(attempt)):
        problems.append(f"{ATTEMPT_ATTRIBUTE} {attempt} is not a whole number from 0")
    return problems


@dataclass(frozen=True)
class UnreadableRecord:
    """A record the readers leave out, named by its key with what is wrong with it."""

    record_id: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.record_id}: {'; '.join(self.problems)}"

    def to_json(self) -> dict[str, Any]:
        return {PARTITION_KEY: self.record_id, "problems": list(self.problems)}


def unreadable(record: Mapping[str, Any]) -> UnreadableRecord | None:
    """``record`` as an ``UnreadableRecord``, or None when it is one of this layout."""
    problems = record_problems(record)
    if not problems:
        return None
    return UnreadableRecord(str(record.get(PARTITION_KEY, "")), tuple(problems))
