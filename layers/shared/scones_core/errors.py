"""Errors raised by the domain code.

Step Functions names a Lambda error after the exception class, so these class
names are part of the state machine's contract: ``statemachine/classify_image.asl.json``
retries only the ``TransientError`` subclasses (a test keeps the two in step).
Bad input is not an error there at all: SerializeImage returns it as data. The
retraining functions return their own failures as data too (``step_failure``).
"""

from __future__ import annotations

from typing import TypedDict

from scones_core.records import Rejection

# How much of an error's message a state machine is given (a failure returned as data, or
# the errorMessage of a Lambda error a Catch passes on). Step Functions cuts a Cause at
# 32,768 characters, and a state holds at most 256 KB; a message that quotes what it could
# not read (a report's field, an event's value) has no bound of its own.
MAX_FAILURE_MESSAGE = 1000
_CUT = " [...]"


def bounded_message(message: str) -> str:
    """``message`` cut to ``MAX_FAILURE_MESSAGE`` characters, marked where it was cut."""
    if len(message) <= MAX_FAILURE_MESSAGE:
        return message
    return message[: MAX_FAILURE_MESSAGE - len(_CUT)] + _CUT


def aws_error_code(exc: BaseException) -> str:
    """The ``Error.Code`` of a botocore ``ClientError`` ("" for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or "")


class SconesError(Exception):
    """Base class for every error this package raises on purpose."""


class SettingsError(SconesError):
    """An environment variable is missing or invalid; raised at cold start."""


class EventError(SconesError):
    """An event does not have the shape the handler expects."""


# ---- bad input: recorded as REJECTED, never retried -------------------------
# SerializeImage returns these as data ({"rejection": {"error_code", "reason"}}),
# so a class name is the record's error_code and the message is its reason: one
# sentence, never a stack trace. docs/reliability.md lists each with its test.


class ImageRejected(SconesError):
    """The object is not an image this workflow can classify."""

    @property
    def code(self) -> str:
        return type(self).__name__

    def to_rejection(self) -> Rejection:
        return {"error_code": self.code, "reason": str(self)}


class ObjectNotFound(ImageRejected):
    """The object (or this version of it) was deleted before it could be read."""


class ObjectChanged(ImageRejected):
    """Unversioned bucket: the key was overwritten between the event and the read.

    The read is pinned to the event's ETag (``IfMatch``) and S3 answered 412. The
    bytes this event announced are gone, and the newer upload has its own S3 event
    and its own record, so re-reading would classify the newer bytes twice (once
    under this event's ETag) instead of once.
    """


class FolderPlaceholder(ImageRejected):
    """A zero-byte ``.../`` object, as the S3 console creates for a folder."""


class EmptyObject(ImageRejected):
    """The object has no bytes."""


class ImageTooLarge(ImageRejected):
    """The object is larger than ``MaxImageBytes``; refused from its size, unread."""


class NotAnImage(ImageRejected):
    """The bytes are not an image in any format this workflow recognises."""


class NotARasterImage(ImageRejected):
    """A vector image, a document or an archive: nothing with pixels to classify."""


class UnsupportedImageFormat(ImageRejected):
    """A raster image, but in a format outside ``AllowedImageFormats`` (AVIF, or narrowed
    away), or in a layout of an accepted format that is not read (some TIFF and BMP
    layouts, a HEIF image not coded as HEVC)."""


class CorruptImage(ImageRejected):
    """The header is readable but the data is truncated or broken (CRC included)."""


class ImageTooManyPixels(ImageRejected):
    """More pixels than ``MaxImagePixels``, or than the function's memory (or, for a HEIC,
    its time) can decode; refused from the header, before decoding."""


class ImageTooComplex(ImageRejected):
    """Decoding would cost far more than the image's pixels: a JPEG with more scans
    than ``image_structure.MAX_JPEG_SCANS``; refused from its structure, before decoding."""


class ImageTooSmall(ImageRejected):
    """A side is shorter than ``MinImageSide``: too little to classify."""


# The classification workflow's own Fail states (statemachine/classify_image.asl.json): an
# image ended FAILED, after every image of the execution got its record; or an image ended
# without one (the table refused its FAILED record too).
CLASSIFICATION_FAILED = "ClassificationFailed"
IMAGES_UNRECORDED = "ImagesUnrecorded"


# ---- transient infrastructure errors: retried by the state machine ----------


class TransientError(SconesError):
    """A failure that may succeed when retried with backoff."""


class StorageUnavailable(TransientError):
    """S3 throttled or failed while reading the object."""


class EndpointThrottled(TransientError):
    """The SageMaker endpoint throttled the request."""


class EndpointUnavailable(TransientError):
    """The SageMaker endpoint could not be reached or answered 5xx."""


# ---- permanent infrastructure errors: recorded as FAILED at once -------------


class StorageRefused(SconesError):
    """S3 refused the read for a reason a retry cannot fix (no bucket, access denied,
    an archived object, another 4xx); recorded as FAILED without a retry."""


class BatchIncomplete(SconesError):
    """A backfill batch that handled some objects and not others. ``report`` is what it
    did (its ``BatchReport``), so what was started is still counted when the batch fails."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class ObjectsUnreadable(BatchIncomplete):
    """The backfill could not list the versions of some listed keys (ListObjectVersions
    refused or failed); the batch's other objects were started, and these are named."""


class WorkflowsNotStarted(BatchIncomplete):
    """The backfill could not start the workflow for some objects (StartExecution refused
    or failed after the SDK's retries); the batch's other objects were started, and these
    are named, with any objects it could not read."""


class EndpointRejectedRequest(SconesError):
    """The endpoint refused the request (unknown endpoint, validation, model error)."""


class ModelResponseInvalid(SconesError):
    """The endpoint answered, but not with a list of class probabilities."""


def rejection_error_names() -> list[str]:
    """Every ``ImageRejected`` subclass name: the error codes a REJECTED record can carry."""
    return sorted(cls.__name__ for cls in ImageRejected.__subclasses__())


def transient_error_names() -> list[str]:
    return sorted(cls.__name__ for cls in TransientError.__subclasses__())


class StepFailure(TypedDict):
    """A failure a function returns as data, shaped as a Catch's error output: the state
    machine reads its message as text (a raised error's Cause may be cut, and parsing a
    cut one is States.Runtime, which no Catch takes)."""

    Error: str
    Cause: str


def step_failure(exc: Exception) -> StepFailure:
    """``exc`` as a failure the state machine records: its class name and its message, cut
    to ``MAX_FAILURE_MESSAGE`` characters."""
    return {"Error": type(exc).__name__, "Cause": bounded_message(str(exc))}
