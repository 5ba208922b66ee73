"""The result record and the workflow payloads: one home for both contracts.

Every uploaded object version ends in exactly one item of the results table.
The state machine writes the item itself (a direct, conditional ``putItem``), so
the layout below is what the ASL's ``Record*`` states must contain: a test
derives each of those states' ``Item`` from :func:`asl_item` and compares. The
monitor, the CLI, the reports and the offline client read items back with
:func:`record_from_item` and the :class:`Status` enum, never with string copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypedDict

from boto3.dynamodb.types import TypeDeserializer


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
# The statuses a review may replace (an ACCEPTED record only when ``review_sampled``).
REVIEWABLE_STATUSES: tuple[Status, ...] = CLASSIFIED_STATUSES

PARTITION_KEY = "pk"
# The global secondary index the monitor counts statuses with (partition status,
# sort recorded_at); template.yaml declares it under this name (a test checks).
STATUS_INDEX_NAME = "status-recorded_at-index"
STATUS_ATTRIBUTE = "status"
RECORDED_AT_ATTRIBUTE = "recorded_at"

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
    duration_ms: float


class WorkflowInput(TypedDict):
    """The execution input the start function sends."""

    object: ObjectPayload
    event_time: str


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


def _common(status: Attribute) -> tuple[Attribute, ...]:
    return (
        Attribute(PARTITION_KEY, "S", "$.object.record_id"),
        Attribute("bucket", "S", "$.object.bucket"),
        Attribute("key", "S", "$.object.key"),
        Attribute("version_id", "S", "$.object.version"),
        Attribute("etag", "S", "$.object.etag"),
        status,
        Attribute("threshold", "N", literal="${ConfidenceThreshold}"),
        Attribute("event_time", "S", "$.event_time"),
        Attribute("started_at", "S", "$$.Execution.StartTime"),
        Attribute(RECORDED_AT_ATTRIBUTE, "S", "$$.State.EnteredTime"),
        Attribute("execution_arn", "S", "$$.Execution.Id"),
    )


CLASSIFIED_LAYOUT: tuple[Attribute, ...] = (
    *_common(Attribute(STATUS_ATTRIBUTE, "S", "$.status")),
    Attribute("label", "S", "$.classification.label"),
    Attribute("confidence", "N", "$.classification.confidence"),
    Attribute("probabilities", "M", "$.classification.probabilities_attribute"),
    Attribute("endpoint_name", "S", "$.classification.endpoint_name"),
    Attribute("endpoint_variant", "S", "$.classification.variant"),
    Attribute("source_format", "S", "$.image.source.format"),
    Attribute("source_width", "N", "$.image.source.width"),
    Attribute("source_height", "N", "$.image.source.height"),
    Attribute("source_bytes", "N", "$.image.source.bytes"),
    Attribute("source_sha256", "S", "$.image.source.sha256"),
    Attribute("serialize_ms", "N", "$.image.duration_ms"),
    Attribute("inference_ms", "N", "$.classification.duration_ms"),
)

REJECTED_LAYOUT: tuple[Attribute, ...] = (
    *_common(Attribute(STATUS_ATTRIBUTE, "S", literal=Status.REJECTED.value)),
    Attribute("error_code", "S", "$.image.rejection.error_code"),
    Attribute("reason", "S", "$.image.rejection.reason"),
)

FAILED_LAYOUT: tuple[Attribute, ...] = (
    *_common(Attribute(STATUS_ATTRIBUTE, "S", literal=Status.FAILED.value)),
    Attribute("error_code", "S", "$.failure.error_code"),
    Attribute("reason", "S", "$.failure.cause.errorMessage"),
)

# Which ASL state writes which layout.
RECORD_STATES: dict[str, tuple[Attribute, ...]] = {
    "RecordClassification": CLASSIFIED_LAYOUT,
    "RecordRejected": REJECTED_LAYOUT,
    "RecordFailure": FAILED_LAYOUT,
}


def asl_item(layout: tuple[Attribute, ...]) -> dict[str, dict[str, str]]:
    """The ``Item`` parameter of a ``dynamodb:putItem`` state for ``layout``."""
    return {attribute.name: attribute.asl() for attribute in layout}


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
