"""The Serialize step: read one uploaded object version and turn it into model input.

Bad input is not an error here: it comes back as ``{"rejection": {"error_code",
"reason"}}``, which the state machine tests with one Choice and records as
REJECTED. Only infrastructure trouble raises: ``StorageUnavailable`` (throttling,
5xx, a lost connection: retried) or ``StorageRefused`` (a 4xx that no retry can
fix, such as ``NoSuchBucket`` or ``AccessDenied``: recorded as FAILED at once).

The read is pinned to the bytes the S3 event announced: ``VersionId`` in a
versioned bucket, otherwise ``IfMatch`` with the event's ETag. If an unversioned
key was overwritten before the read, S3 answers 412 and the event is REJECTED as
``ObjectChanged`` rather than re-read: the newer upload has its own event and its
own record, so re-reading would classify the newer bytes twice, once under the
older ETag.
The normalised image is a PNG at the model's input size, so the state payload
stays a few KB whatever was uploaded.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scones_core.errors import (
    CorruptImage,
    EmptyObject,
    FolderPlaceholder,
    ImageRejected,
    ImageTooLarge,
    ObjectChanged,
    ObjectNotFound,
    StorageRefused,
    StorageUnavailable,
)
from scones_core.image_rules import DECODE_ERRORS, decode_image
from scones_core.objects import NULL_VERSION, ObjectRef, object_changed, object_missing
from scones_core.preprocess import to_model_image
from scones_core.records import (
    NORMALISED_CONTENT_TYPE,
    ImageSource,
    RejectedImage,
    SerializedImage,
)
from scones_core.settings import ImageLimits

NORMALISED_FORMAT = "PNG"
# 4xx codes a retry can fix (botocore's standard retry mode treats them the same way);
# every other 4xx is permanent (StorageRefused), and every 5xx is transient.
_RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestTimeTooSkewed",
    "PriorRequestNotComplete",
    "OperationAborted",
}
_RETRYABLE_STATUSES = {408, 429}


@dataclass(frozen=True)
class NormalisedImage:
    png: bytes
    source: ImageSource

    def to_state(self, duration_ms: float) -> SerializedImage:
        """The Serialize state's output: base64 PNG plus what was uploaded."""
        return {
            "image_b64": base64.b64encode(self.png).decode("ascii"),
            "content_type": NORMALISED_CONTENT_TYPE,
            "source": self.source,
            "duration_ms": round(duration_ms, 3),
        }


def check_placeholder(ref: ObjectRef) -> None:
    """A zero-byte key ending in ``/`` is a console "folder", not an upload."""
    if ref.key.endswith("/") and ref.size == 0:
        raise FolderPlaceholder(
            f"{ref.key!r} is a zero-byte folder placeholder (as the S3 console creates); "
            "there is no image to classify."
        )


def get_object_request(ref: ObjectRef) -> dict[str, Any]:
    """The GetObject parameters that read exactly the bytes the event announced."""
    request: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version != NULL_VERSION:
        request["VersionId"] = ref.version
    elif ref.etag:
        # No version id (unversioned bucket): the key can be overwritten in place, so
        # pin the read to the event's ETag; S3 answers 412 if the bytes have changed.
        etag = ref.etag.strip('"')
        request["IfMatch"] = f'"{etag}"'
    return request


def read_object(s3: Any, ref: ObjectRef, limits: ImageLimits) -> bytes:
    """Fetch exactly the uploaded version, refusing oversized objects before reading them."""
    request = get_object_request(ref)
    where = f"s3://{ref.bucket}/{ref.key}"
    try:
        response = s3.get_object(**request)
    except ClientError as exc:
        raise _read_error(exc, ref, where, pinned_etag="IfMatch" in request) from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"Reading {where} failed: {_sentence(str(exc))}") from exc
    body = response["Body"]
    length = int(response.get("ContentLength") or 0)
    try:
        if length > limits.max_bytes:
            raise ImageTooLarge(
                f"The object is {length} bytes; the limit is {limits.max_bytes}"
                f"{limits.named('MaxImageBytes')}. It was not read."
            )
        # Read one byte past the limit so a wrong Content-Length cannot smuggle more in.
        data = bytes(body.read(limits.max_bytes + 1))
    finally:
        body.close()
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"The object exceeds the limit of {limits.max_bytes} bytes"
            f"{limits.named('MaxImageBytes')}."
        )
    if not data:
        raise EmptyObject("The object is empty (0 bytes).")
    return data


def _read_error(
    exc: ClientError, ref: ObjectRef, where: str, *, pinned_etag: bool
) -> ImageRejected | StorageUnavailable | StorageRefused:
    """Sort a GetObject error: gone or changed (rejections), retryable, or permanent."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if object_missing(exc):
        return ObjectNotFound(
            f"{where} (version {ref.version}) is not in the bucket: it was deleted before it "
            "could be read, or never uploaded under this key and version."
        )
    if pinned_etag and object_changed(exc):
        return ObjectChanged(
            f"{where} (ETag {ref.etag}) was overwritten before it could be read; "
            "the newer version has its own event and record."
        )
    detail = code or f"HTTP {status}"
    if code in _RETRYABLE_CODES or status >= 500 or status in _RETRYABLE_STATUSES or not status:
        return StorageUnavailable(f"Reading {where} failed: {detail}.")
    message = " ".join(str(error.get("Message") or "").split())[:160].rstrip(".")
    return StorageRefused(
        f"S3 refused to read {where} (version {ref.version}) with {detail}"
        + (f" ({message})" if message else "")
        + "; a retry cannot fix that, so it was not retried."
    )


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith(".") else text + "."


def normalise_image(data: bytes, limits: ImageLimits) -> NormalisedImage:
    """Apply the image rules and re-encode the model input as a lossless PNG."""
    size = limits.model_input_size
    decoded = decode_image(data, limits, draft_to=size)
    with decoded.image:
        try:
            model_image = to_model_image(decoded.image, size)
        except ImageRejected:
            raise
        except DECODE_ERRORS as exc:
            raise CorruptImage(
                f"The {decoded.source['format']} data could not be converted: {exc}"
            ) from None
    out = io.BytesIO()
    model_image.save(out, format=NORMALISED_FORMAT, compress_level=1)
    return NormalisedImage(png=out.getvalue(), source=decoded.source)


def serialize_object(
    s3: Any, ref: ObjectRef, limits: ImageLimits
) -> SerializedImage | RejectedImage:
    """The whole Serialize step: read, apply the image rules, normalise, encode."""
    started = time.perf_counter()
    try:
        check_placeholder(ref)
        normalised = normalise_image(read_object(s3, ref, limits), limits)
    except ImageRejected as rejected:
        return {
            "rejection": rejected.to_rejection(),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    return normalised.to_state((time.perf_counter() - started) * 1000)
