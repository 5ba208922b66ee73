"""Errors raised by the domain code.

Step Functions names a Lambda error after the exception class, so these class
names are part of the state machine's contract: ``statemachine/classify_image.asl.json``
catches every ``ImageRejected`` subclass by name (a test keeps the two in step)
and retries only the ``TransientError`` subclasses.
"""

from __future__ import annotations


class SconesError(Exception):
    """Base class for every error this package raises on purpose."""


class SettingsError(SconesError):
    """An environment variable is missing or invalid; raised at cold start."""


class EventError(SconesError):
    """An event does not have the shape the handler expects."""


# ---- bad input: recorded as REJECTED, never retried -------------------------


class ImageRejected(SconesError):
    """The object is not an image this workflow can classify."""

    @property
    def code(self) -> str:
        return type(self).__name__


class ObjectNotFound(ImageRejected):
    """The object (or this version of it) was deleted before it could be read."""


class EmptyObject(ImageRejected):
    """The object has no bytes."""


class ImageTooLarge(ImageRejected):
    """The object is larger than the configured byte limit."""


class ImageTooManyPixels(ImageRejected):
    """The image's dimensions exceed the configured pixel limit."""


class NotAnImage(ImageRejected):
    """Pillow cannot identify the bytes as an image."""


class UnsupportedImageFormat(ImageRejected):
    """A real image, but in a format the workflow does not accept."""


class CorruptImage(ImageRejected):
    """The header is readable but the pixel data is truncated or broken."""


class UnsupportedFileType(ImageRejected):
    """The object's name does not end in one of the accepted image suffixes."""


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


class EndpointRejectedRequest(SconesError):
    """The endpoint refused the request (unknown endpoint, validation, model error)."""


class ModelResponseInvalid(SconesError):
    """The endpoint answered, but not with a list of class probabilities."""


def rejection_error_names() -> list[str]:
    """Every ``ImageRejected`` subclass name: the list the state machine catches."""
    return sorted(cls.__name__ for cls in ImageRejected.__subclasses__())


def transient_error_names() -> list[str]:
    return sorted(cls.__name__ for cls in TransientError.__subclasses__())
