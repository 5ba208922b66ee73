"""Domain code on real CIFAR-100 images, real Pillow decoding and real S3 (moto)."""

from __future__ import annotations

import base64
import dataclasses
import io
import itertools
import json
import re
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from conftest import SAMPLES, template_limits
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from PIL import Image
from scones_core import errors, inference
from scones_core.endpoint_response import (
    UNREPORTED,
    custom_attributes,
    model_version,
    probabilities,
)
from scones_core.images import normalise_image, read_object, serialize_object
from scones_core.inference import classify_image, decode_image_b64, parse_probabilities
from scones_core.ingest import (
    MAX_BATCH_INPUT_BYTES,
    PendingImage,
    batch_execution_name,
    distinct_images,
    ignored_events,
    is_s3_test_event,
    is_upload,
    notification_images,
    split_batch,
    start_batches,
    workflow_input,
)
from scones_core.objects import (
    MAX_RECORD_ID_BYTES,
    NULL_VERSION,
    ObjectRef,
    holds_version,
    object_from_s3_record,
)
from scones_core.records import (
    TERMINAL_STATUSES,
    capture_id,
    classified_status,
    is_terminal,
    number_attribute,
    record_from_item,
    record_problems,
)
from scones_core.settings import EndpointSettings, ImageLimits, StartSettings

from tests.conftest import express_machine

LIMITS = template_limits()
BICYCLE = sorted((SAMPLES / "bicycle").glob("*.png"))[0]
LABELS = ("bicycle", "motorcycle")


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# ---- images -----------------------------------------------------------------


def test_a_cifar_png_is_kept_pixel_for_pixel() -> None:
    data = BICYCLE.read_bytes()
    result = normalise_image(data, LIMITS)
    with Image.open(io.BytesIO(result.png)) as out, Image.open(BICYCLE) as original:
        assert out.size == (32, 32) and out.mode == "RGB"
        assert out.tobytes() == original.convert("RGB").tobytes()
    assert (result.source["format"], result.source["width"], result.source["height"]) == (
        "PNG",
        32,
        32,
    )


def test_a_large_jpeg_photo_is_fitted_to_the_model_size() -> None:
    with Image.open(BICYCLE) as original:
        photo = original.convert("RGB").resize((640, 480))
    result = normalise_image(encode(photo, "JPEG", quality=90), LIMITS)
    with Image.open(io.BytesIO(result.png)) as out:
        assert out.size == (32, 32)
    assert result.source["format"] == "JPEG" and result.source["width"] == 640


def test_exif_orientation_is_applied() -> None:
    tall = Image.new("RGB", (20, 40), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 0, 20, 20))  # blue on top
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    result = normalise_image(encode(tall, "JPEG", exif=exif, quality=95), LIMITS)
    with Image.open(io.BytesIO(result.png)) as out:
        left, right = out.getpixel((2, 16)), out.getpixel((29, 16))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > 200 and right[2] > 200  # displayed: red left, blue right


def test_an_orientation_that_is_not_a_whole_number_leaves_the_image_as_stored() -> None:
    """An Orientation tag written as text ("6", ASCII) says nothing a viewer acts on:
    the image is upright as stored, not mirrored or turned."""
    wide = Image.new("RGB", (40, 32), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 20, 32))  # red on the left
    ifd = struct.pack("<HHHI4sI", 1, 0x0112, 2, 2, b"6\0\0\0", 0)  # one ASCII entry
    exif = b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd
    with Image.open(io.BytesIO(encode(wide, exif=exif))) as tagged:
        assert tagged.getexif().get(0x0112) == "6"
    result = normalise_image(encode(wide, exif=exif), LIMITS)
    with Image.open(io.BytesIO(result.png)) as out:
        assert out.getpixel((2, 16)) == (255, 0, 0) and out.getpixel((29, 16)) == (0, 0, 255)


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    result = normalise_image(encode(clear), LIMITS)
    with Image.open(io.BytesIO(result.png)) as out:
        assert out.getpixel((5, 5)) == (255, 255, 255)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_only_reject(data: bytes) -> None:
    try:
        normalise_image(data, LIMITS)
    except errors.ImageRejected as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=len(BICYCLE.read_bytes()) - 1), st.integers(0, 255))
def test_corrupted_real_png_bytes_never_crash(position: int, value: int) -> None:
    data = bytearray(BICYCLE.read_bytes())
    data[position] = value
    try:
        result = normalise_image(bytes(data), LIMITS)
    except errors.ImageRejected:
        return
    assert result.png.startswith(b"\x89PNG")


# ---- reading from S3 ---------------------------------------------------------


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="images")
        s3.put_bucket_versioning(Bucket="images", VersioningConfiguration={"Status": "Enabled"})
        yield s3


def ref_for(s3: object, key: str, data: bytes) -> ObjectRef:
    response = s3.put_object(Bucket="images", Key=key, Body=data)  # type: ignore[attr-defined]
    return ObjectRef("images", key, response["VersionId"], response["ETag"].strip('"'), len(data))


def test_serialize_reads_exactly_the_uploaded_version(bucket: object) -> None:
    ref = ref_for(bucket, "incoming/a.png", BICYCLE.read_bytes())
    bucket.put_object(Bucket="images", Key="incoming/a.png", Body=b"newer")  # type: ignore[attr-defined]
    state = serialize_object(bucket, ref, LIMITS)
    assert base64.b64decode(state["image_b64"]).startswith(b"\x89PNG")
    assert state["source"]["bytes"] == BICYCLE.stat().st_size


def test_a_deleted_version_is_object_not_found(bucket: object) -> None:
    ref = ref_for(bucket, "incoming/b.png", BICYCLE.read_bytes())
    bucket.delete_object(Bucket="images", Key=ref.key, VersionId=ref.version)  # type: ignore[attr-defined]
    with pytest.raises(errors.ObjectNotFound, match="deleted before it could be read"):
        read_object(bucket, ref, LIMITS)


def test_an_oversized_object_is_refused_before_reading(bucket: object) -> None:
    ref = ref_for(bucket, "incoming/big.png", b"x" * 2000)
    small = dataclasses.replace(LIMITS, max_bytes=1000)
    with pytest.raises(errors.ImageTooLarge, match="2000 bytes"):
        read_object(bucket, ref, small)


def s3_client(**config: object) -> Any:
    return boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(**config),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("RequestTimeout", 400),
        ("OperationAborted", 409),
        ("TooManyRequestsException", 429),
    ],
)
def test_s3_trouble_is_transient(code: str, status: int) -> None:
    s3 = s3_client()
    with Stubber(s3) as stub:
        stub.add_client_error(
            "get_object",
            service_error_code=code,
            http_status_code=status,
            expected_params={"Bucket": "images", "Key": "incoming/c.png", "VersionId": "v1"},
        )
        with pytest.raises(errors.StorageUnavailable, match=code):
            read_object(s3, ObjectRef("images", "incoming/c.png", "v1", "e", 1), LIMITS)
    assert issubclass(errors.StorageUnavailable, errors.TransientError)


def test_a_lost_connection_to_s3_is_transient() -> None:
    s3 = s3_client(retries={"total_max_attempts": 1})

    def refuse(**_: object) -> None:
        raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")

    s3.meta.events.register("before-send.s3.GetObject", refuse)
    with pytest.raises(errors.StorageUnavailable, match="Could not connect"):
        read_object(s3, ObjectRef("images", "incoming/c.png", "v1", "e", 1), LIMITS)


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("NoSuchBucket", 404, "The specified bucket does not exist"),
        ("AccessDenied", 403, "Access Denied"),
        ("InvalidObjectState", 403, "The operation is not valid for the object's storage class"),
        ("AllAccessDisabled", 403, "All access to this object has been disabled"),
        ("InvalidRequest", 400, "Requests specifying SSE-KMS require SigV4."),
    ],
)
def test_s3_refusals_that_a_retry_cannot_fix_are_permanent(
    code: str, status: int, message: str
) -> None:
    s3 = s3_client()
    ref = ObjectRef("images", "incoming/c.png", "v1", "e", 1)
    with Stubber(s3) as stub:
        stub.add_client_error(
            "get_object",
            service_error_code=code,
            service_message=message,
            http_status_code=status,
            expected_params={"Bucket": "images", "Key": "incoming/c.png", "VersionId": "v1"},
        )
        with pytest.raises(errors.StorageRefused) as raised:
            serialize_object(s3, ref, LIMITS)
    reason = str(raised.value)
    assert reason.startswith("S3 refused to read s3://images/incoming/c.png (version v1)")
    assert code in reason and message.rstrip(".") in reason
    assert reason.endswith("a retry cannot fix that, so it was not retried.")
    assert "\n" not in reason and reason.count(". ") == 0
    refused = errors.StorageRefused
    assert not issubclass(refused, (errors.TransientError, errors.ImageRejected))
    assert "StorageRefused" not in errors.transient_error_names()


# ---- an unversioned bucket: the read is pinned to the event's ETag ------------


@pytest.fixture
def plain_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="plain")
        yield s3


def unversioned_ref(s3: Any, key: str, data: bytes) -> ObjectRef:
    """What the S3 event of an unversioned upload names: no versionId, the ETag."""
    response = s3.put_object(Bucket="plain", Key=key, Body=data)
    assert "VersionId" not in response
    record = {
        "s3": {
            "bucket": {"name": "plain"},
            "object": {"key": key, "eTag": response["ETag"].strip('"'), "size": len(data)},
        }
    }
    return object_from_s3_record(record)


def test_an_unversioned_read_is_pinned_to_the_events_etag(plain_bucket: Any) -> None:
    ref = unversioned_ref(plain_bucket, "incoming/d.png", BICYCLE.read_bytes())
    assert ref.version == NULL_VERSION
    state = serialize_object(plain_bucket, ref, LIMITS)
    assert state["source"]["bytes"] == BICYCLE.stat().st_size


def test_an_unversioned_key_overwritten_before_the_read_is_rejected_as_changed(
    plain_bucket: Any,
) -> None:
    ref = unversioned_ref(plain_bucket, "incoming/e.png", BICYCLE.read_bytes())
    newer = sorted((SAMPLES / "motorcycle").glob("*.png"))[0].read_bytes()
    plain_bucket.put_object(Bucket="plain", Key=ref.key, Body=newer)

    state = serialize_object(plain_bucket, ref, LIMITS)

    assert state["rejection"] == {
        "error_code": "ObjectChanged",
        "reason": f"s3://plain/incoming/e.png (ETag {ref.etag}) was overwritten before it "
        "could be read; the newer version has its own event and record.",
    }


def test_an_unversioned_key_deleted_before_the_read_is_not_found(plain_bucket: Any) -> None:
    ref = unversioned_ref(plain_bucket, "incoming/f.png", BICYCLE.read_bytes())
    plain_bucket.delete_object(Bucket="plain", Key=ref.key)
    state = serialize_object(plain_bucket, ref, LIMITS)
    assert state["rejection"]["error_code"] == "ObjectNotFound"


def test_the_if_match_request_has_s3s_shape_and_412_means_changed() -> None:
    s3 = s3_client()
    ref = ObjectRef("images", "incoming/g.png", NULL_VERSION, "0123abcd", 1)
    with Stubber(s3) as stub:
        stub.add_client_error(
            "get_object",
            service_error_code="PreconditionFailed",
            service_message="At least one of the pre-conditions you specified did not hold",
            http_status_code=412,
            expected_params={"Bucket": "images", "Key": "incoming/g.png", "IfMatch": '"0123abcd"'},
        )
        with pytest.raises(errors.ObjectChanged, match="was overwritten before it could be read"):
            read_object(s3, ref, LIMITS)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("NoSuchVersion", 404),
        # GetObject on a version id that names a delete marker: the upload is gone, not a
        # permanent storage fault.
        ("MethodNotAllowed", 405),
    ],
)
def test_a_versioned_read_sends_the_version_and_a_gone_version_is_not_found(
    code: str, status: int
) -> None:
    s3 = s3_client()
    with Stubber(s3) as stub:
        stub.add_client_error(
            "get_object",
            service_error_code=code,
            http_status_code=status,
            expected_params={"Bucket": "images", "Key": "incoming/h.png", "VersionId": "v9"},
        )
        with pytest.raises(errors.ObjectNotFound, match="deleted before it could be read"):
            read_object(s3, ObjectRef("images", "incoming/h.png", "v9", "0123abcd", 1), LIMITS)


# ---- inference ---------------------------------------------------------------


def runtime_client() -> object:
    return boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


ENDPOINT = EndpointSettings(endpoint_name="scones-test", labels=LABELS, timeout_seconds=5)


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ThrottlingException", 400, errors.EndpointThrottled),
        ("ServiceUnavailable", 503, errors.EndpointUnavailable),
        ("InternalFailure", 500, errors.EndpointUnavailable),
        # A code not listed is sorted by its status: any 5XX, 500 itself included, is retried.
        ("SomethingNew", 500, errors.EndpointUnavailable),
        ("SomethingNew", 499, errors.EndpointRejectedRequest),
        ("ModelNotReadyException", 429, errors.EndpointUnavailable),
        ("ValidationError", 400, errors.EndpointRejectedRequest),
        ("ModelError", 424, errors.EndpointRejectedRequest),
    ],
)
def test_endpoint_errors_are_sorted_into_retryable_and_permanent(
    code: str, status: int, error: type[Exception]
) -> None:
    client = runtime_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            service_error_code=code,
            http_status_code=status,
            expected_params={
                "EndpointName": "scones-test",
                "ContentType": "image/png",
                "Accept": "application/json",
                "Body": b"png-bytes",
            },
        )
        with pytest.raises(error, match=code):
            classify_image(client, b"png-bytes", ENDPOINT)


def test_a_model_errors_message_of_any_size_stays_short() -> None:
    """A ModelError's message carries the container's answer: kept whole, a large one
    made a Lambda error whose Cause Step Functions cuts at 32,768 characters, no longer
    the JSON DescribeFailure reads (States.Runtime, no record for the batch's images)."""
    client = runtime_client()
    body = "<html>" + "x" * 100_000 + "</html>"
    said = f'Received client error (400) from primary with message "{body}"'
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            service_error_code="ModelError",
            service_message=said,
            http_status_code=424,
            modeled_fields={"OriginalStatusCode": 400},
        )
        with pytest.raises(errors.EndpointRejectedRequest) as raised:
            classify_image(client, b"png-bytes", ENDPOINT)
    message = str(raised.value)
    assert len(message) < 2 * inference.MAX_SERVICE_MESSAGE
    assert "ModelError: Received client error (400) from primary" in message
    assert f"... ({len(said) - inference.MAX_SERVICE_MESSAGE} more characters)" in message
    assert "answered 400" in message


@pytest.mark.parametrize(
    ("original", "error"),
    [
        (429, errors.EndpointThrottled),  # the container is busy
        (503, errors.EndpointUnavailable),
        (502, errors.EndpointUnavailable),
        (504, errors.EndpointUnavailable),
        (500, errors.EndpointRejectedRequest),  # the model failed on this request
        (400, errors.EndpointRejectedRequest),
        (None, errors.EndpointRejectedRequest),
    ],
)
def test_a_model_error_is_sorted_by_the_status_the_container_answered(
    original: int | None, error: type[Exception]
) -> None:
    """SageMaker returns every non-2xx answer of the container as ModelError (424) and puts
    the container's status in OriginalStatusCode (botocore validates these fields)."""
    client = runtime_client()
    logs = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/scones-test"
    fields: dict[str, Any] = {"LogStreamArn": logs, "OriginalMessage": "busy"}
    if original is not None:
        fields["OriginalStatusCode"] = original
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            service_error_code="ModelError",
            service_message=f"Received client error ({original}) from primary",
            http_status_code=424,
            modeled_fields=fields,
        )
        with pytest.raises(error) as raised:
            classify_image(client, b"png-bytes", ENDPOINT)
    assert f"answered {original or 'an unknown status'}" in str(raised.value)
    assert logs in str(raised.value)


def test_a_slow_request_body_is_retried() -> None:
    client = runtime_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint", service_error_code="RequestTimeoutException", http_status_code=408
        )
        with pytest.raises(errors.EndpointUnavailable, match="RequestTimeoutException"):
            classify_image(client, b"png-bytes", ENDPOINT)


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b"9" * 401 + b", 0]",  # past a float: OverflowError in float()
        b"[" + b"9" * 5000 + b", 0]",  # past Python's digit limit: ValueError in json
        b"[" * 100_000 + b"]" * 100_000,  # past the parser's nesting: RecursionError
    ],
    ids=["huge-integer", "too-many-digits", "deep-nesting"],
)
def test_a_malformed_answer_is_always_model_response_invalid(body: bytes) -> None:
    with pytest.raises(errors.ModelResponseInvalid):
        parse_probabilities(body, LABELS)


def test_a_good_answer_becomes_a_classification() -> None:
    client = runtime_client()
    body = StreamingBody(io.BytesIO(b"[0.02, 0.98]"), 12)
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {
                "Body": body,
                "ContentType": "application/json",
                "InvokedProductionVariant": "AllTraffic",
            },
        )
        result = classify_image(client, b"png-bytes", ENDPOINT)
    assert (result.label, result.confidence, result.variant) == ("motorcycle", 0.98, "AllTraffic")
    # A container that sets no CustomAttributes (SageMaker's built-in algorithm) is recorded so.
    assert result.model_version == UNREPORTED
    assert result.to_state()["probabilities_attribute"] == {
        "bicycle": {"N": "0.02"},
        "motorcycle": {"N": "0.98"},
    }


def records_table() -> Any:
    """A DynamoDB client (moto, inside ``mock_aws``) with an empty ``records`` table."""
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(
        TableName="records",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb


def test_the_endpoint_call_names_its_record_in_the_captured_request() -> None:
    """InferenceId (at most 64 printable characters) is the digest of the record id, so
    the longest S3 key still fits and its captured copy can be found from the record."""
    record_id = f"{'b' * 63}/{'k' * 1024}#{'v' * 32}"
    inference_id = capture_id(record_id)
    assert re.fullmatch(r"[0-9a-f]{64}", inference_id)
    assert capture_id(record_id + "x") != inference_id
    client = runtime_client()
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(b"[0.02, 0.98]"), 12), "ContentType": "json"},
            {
                "EndpointName": ENDPOINT.endpoint_name,
                "ContentType": "image/png",
                "Accept": "application/json",
                "Body": b"png-bytes",
                "InferenceId": inference_id,
            },
        )
        classify_image(client, b"png-bytes", ENDPOINT, inference_id=inference_id)


def test_a_probability_too_small_for_dynamodb_is_stored_as_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DynamoDB refuses a magnitude under 1e-130 ("Number underflow"): a foreign endpoint
    answering ``1e-200`` would turn every attempt's classification into a FAILED record."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    client = runtime_client()
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(b"[1.0, 1e-200]"), 13), "ContentType": "json"},
        )
        result = classify_image(client, b"png-bytes", ENDPOINT)
    stored = result.to_state()["probabilities_attribute"]
    assert stored == {"bicycle": {"N": "1.0"}, "motorcycle": {"N": "0.0"}}
    with mock_aws():
        ddb = records_table()
        raw = {"pk": {"S": "a"}, "probabilities": {"M": {"motorcycle": {"N": "1e-200"}}}}
        with pytest.raises(ddb.exceptions.ClientError, match="underflow"):
            ddb.put_item(TableName="records", Item=raw)
        ddb.put_item(TableName="records", Item={"pk": {"S": "a"}, "probabilities": {"M": stored}})


@pytest.mark.parametrize("value", [1e-130, -1e-130])
def test_the_smallest_magnitude_dynamodb_holds_is_stored_as_it_is(value: float) -> None:
    """1e-130 is DynamoDB's smallest magnitude, not below it: it is kept, not zeroed."""
    stored = number_attribute(value)
    assert stored == {"N": repr(value)}
    with mock_aws():
        ddb = records_table()
        ddb.put_item(TableName="records", Item={"pk": {"S": "a"}, "p": stored})
        item = ddb.get_item(TableName="records", Key={"pk": {"S": "a"}})["Item"]
    assert record_from_item(item)["p"] == value


def test_a_stored_item_reads_back_as_plain_python_values() -> None:
    """The CLI, the monitor and the offline client read items with record_from_item:
    whole numbers come back as ints, others as floats, inside maps and lists too."""
    item: dict[str, Any] = {
        "pk": {"S": "images/a.png#v"},
        "attempt": {"N": "2"},
        "confidence": {"N": "0.875"},
        "probabilities": {"M": {"bicycle": {"N": "0.125"}, "motorcycle": {"N": "1"}}},
        "history": {"L": [{"N": "3"}, {"S": "x"}, {"N": "0.5"}]},
        "review_sampled": {"BOOL": True},
    }
    record = record_from_item(item)
    assert record == {
        "pk": "images/a.png#v",
        "attempt": 2,
        "confidence": 0.875,
        "probabilities": {"bicycle": 0.125, "motorcycle": 1},
        "history": [3, "x", 0.5],
        "review_sampled": True,
    }
    assert type(record["attempt"]) is int
    assert type(record["confidence"]) is float
    assert [type(v) for v in record["probabilities"].values()] == [float, int]
    assert [type(v) for v in record["history"]] == [int, str, float]


_ACCEPTED_RECORD: dict[str, Any] = {
    "pk": "scones-images#incoming/a.png#v1",
    "status": "ACCEPTED",
    "recorded_at": "2026-12-01T10:00:00.000Z",
    "bucket": "scones-images",
    "key": "incoming/a.png",
    "label": "bicycle",
    "confidence": 0.97,
    "threshold": 0.93,
    "probabilities": {"bicycle": 0.97, "motorcycle": 0.03},
    "attempt": 0,
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"confidence": 1, "probabilities": {"bicycle": 1, "motorcycle": 0}}, None),
        ({"attempt": 3}, None),
        ({"confidence": 5}, "confidence 5 is not between 0 and 1"),
        ({"confidence": -0.5}, "confidence -0.5 is not between 0 and 1"),
        ({"threshold": 93}, "threshold 93 is not between 0 and 1"),
        (
            {"probabilities": {"bicycle": 1.5, "motorcycle": -0.5}},
            "probabilities holds a number not between 0 and 1",
        ),
        ({"attempt": -1}, "attempt -1 is not a whole number from 0"),
        ({"attempt": 1.5}, "attempt 1.5 is not a whole number from 0"),
    ],
)
def test_a_number_no_record_of_the_layout_holds_is_a_problem(
    change: dict[str, Any], problem: str | None
) -> None:
    """A confidence of 5 (written by hand or by another tool) sorted first in the review
    queue and printed as 500 %: the type was right, the value no record can hold."""
    assert record_problems(_ACCEPTED_RECORD | change) == ([problem] if problem else [])


def test_only_the_five_statuses_are_terminal() -> None:
    """The offline client waits for a terminal record: any status, never a missing one."""
    assert all(is_terminal({"status": status.value}) for status in TERMINAL_STATUSES)
    assert len(TERMINAL_STATUSES) == 5
    assert not is_terminal({"status": "RUNNING"})
    assert not is_terminal({})


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"status": "ACCEPTED"}, "ACCEPTED"),
        ({"status": "REJECTED"}, "REJECTED"),
        ({"status": "REVIEWED", "classified_status": "NEEDS_REVIEW"}, "NEEDS_REVIEW"),
        ({"status": "REVIEWED", "classified_status": "ACCEPTED"}, "ACCEPTED"),
        ({"status": "REVIEWED"}, None),
        ({}, None),
    ],
)
def test_a_reviewed_record_still_counts_as_what_the_workflow_classified_it(
    record: dict[str, str], expected: str | None
) -> None:
    assert classified_status(record) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[0.5]",
        b"[0.5, 0.6]",
        b'["a", "b"]',
        b"[true, false]",
        b"[-0.1, 1.1]",
        b"{}",
        b"[NaN, 1]",
        b"0.5",
        b"[0.5, 0.5, 0.0]",
    ],
)
def test_malformed_endpoint_answers_are_refused(body: bytes) -> None:
    with pytest.raises(errors.ModelResponseInvalid):
        parse_probabilities(body, LABELS)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (0.5, "not a list of probabilities"),
        ({"predictions": "ab"}, "not a list of probabilities"),
        ([0.5, 0.5, 0.0], "has 3 probabilities, expected 2"),
        ([[0.5], [0.5]], "is not a number"),
        ([0.0, 1.1], "outside"),
        ([1.5, 0.0], "outside"),
    ],
)
def test_an_answer_of_the_wrong_shape_says_what_is_wrong(answer: object, message: str) -> None:
    """The monitor reads captured answers with ``probabilities`` itself (no zip with the
    labels after it): a third probability summing to 1 with the others is still refused."""
    with pytest.raises(ValueError, match=message):
        probabilities(answer, LABELS)


@pytest.mark.parametrize(
    "answer",
    [[0.25, 0.75], [[0.25, 0.75]], {"predictions": [0.25, 0.75]}, {"predictions": [[0.25, 0.75]]}],
)
def test_a_list_a_batch_of_one_and_tensorflow_servings_shape_are_all_read(answer: object) -> None:
    assert probabilities(answer, LABELS) == (0.25, 0.75)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [([1 + 1e-6, 0.0], (1.0, 0.0)), ([-1e-6, 1.0], (0.0, 1.0)), ([1.0000005, 0.0], (1.0, 0.0))],
)
def test_a_float32_softmax_straying_up_to_the_tolerance_is_clamped_into_0_and_1(
    answer: list[float], expected: tuple[float, float]
) -> None:
    assert probabilities(answer, LABELS) == expected


def test_builtin_algorithm_answer_shape_is_accepted() -> None:
    assert parse_probabilities(json.dumps({"predictions": [0.25, 0.75]}).encode(), LABELS) == {
        "bicycle": 0.25,
        "motorcycle": 0.75,
    }


@pytest.mark.parametrize("value", [None, "", "***not base64***", 42])
def test_bad_state_input_is_an_event_error(value: object) -> None:
    with pytest.raises(errors.EventError):
        decode_image_b64(value)


# ---- objects and ingest ------------------------------------------------------


def s3_record(key: str, version: str | None = "v1") -> dict[str, object]:
    obj: dict[str, object] = {"key": key, "size": 10, "eTag": "abc", "sequencer": "01"}
    if version:
        obj["versionId"] = version
    return {"s3": {"bucket": {"name": "images"}, "object": obj}}


def test_keys_are_url_decoded_as_s3_sends_them() -> None:
    ref = object_from_s3_record(s3_record("incoming/my+photo%281%29.png"))
    assert ref.key == "incoming/my photo(1).png"


def test_record_id_and_execution_name_identify_the_version() -> None:
    first = object_from_s3_record(s3_record("incoming/a.png", "v1"))
    again = object_from_s3_record(s3_record("incoming/a.png", "v1"))
    newer = object_from_s3_record(s3_record("incoming/a.png", "v2"))
    unversioned = object_from_s3_record(s3_record("incoming/a.png", None))
    assert first.execution_name == again.execution_name != newer.execution_name
    assert unversioned.version == NULL_VERSION and unversioned.record_id.endswith("#etag:abc")


def test_the_same_bytes_uploaded_again_unversioned_get_a_new_execution_for_their_record() -> None:
    """Unversioned, A then B then A again: the third upload has the first one's ETag, so its
    record id, but S3 gives its event a new sequencer. Its execution must not be refused as
    a repeat of the first (whose record may say "overwritten before it was read")."""
    first = object_from_s3_record(s3_record("incoming/a.png", None))
    redelivered = object_from_s3_record(s3_record("incoming/a.png", None))
    third = dataclasses.replace(first, sequencer="0062E99A88DC407460")
    assert first.record_id == third.record_id
    assert first.execution_name == redelivered.execution_name != third.execution_name
    pair = [PendingImage(first), PendingImage(object_from_s3_record(s3_record("incoming/b.png")))]
    again = [PendingImage(third), pair[1]]
    assert batch_execution_name(pair) != batch_execution_name(again)
    # A replay is of the record: the same name whether redrive reads the record (which
    # keeps no sequencer) or the dead letter (which carries the delivery).
    from_record = dataclasses.replace(first, sequencer="")
    assert first.execution_name_for(1) == third.execution_name_for(1)
    assert first.execution_name_for(1) == from_record.execution_name_for(1)
    # A version id already names each upload: its sequencer plays no part.
    versioned = object_from_s3_record(s3_record("incoming/a.png", "v1"))
    assert versioned.execution_name == dataclasses.replace(versioned, sequencer="ff").execution_name


@given(st.text(min_size=1, max_size=1024).filter(lambda k: k.strip("/")))
def test_execution_names_are_always_valid(key: str) -> None:
    name = ObjectRef("images", key, "v", "e", 1).execution_name
    assert 1 <= len(name) <= 80
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name)


@pytest.mark.parametrize(
    "record", [{}, {"s3": {}}, {"s3": {"bucket": {"name": ""}, "object": {"key": "k"}}}, []]
)
def test_malformed_s3_records_are_event_errors(record: object) -> None:
    with pytest.raises(errors.EventError):
        object_from_s3_record(record)  # type: ignore[arg-type]


def test_a_size_that_is_not_a_number_is_an_event_error_naming_it() -> None:
    record = s3_record("incoming/a.png")
    record["s3"]["object"]["size"] = "big"  # type: ignore[index]
    with pytest.raises(errors.EventError, match="bad object size 'big'"):
        object_from_s3_record(record)


@pytest.mark.parametrize(
    ("event_name", "upload"),
    [
        ("ObjectCreated:Put", True),
        ("ObjectCreated:Post", True),
        ("ObjectCreated:Copy", True),
        ("ObjectCreated:CompleteMultipartUpload", True),
        ("s3:ObjectCreated:Put", True),
        (None, True),  # the subscription is to uploads only
        ("ObjectRestore:Completed", False),
        ("LifecycleTransition", False),
        ("ObjectTagging:Put", False),
        ("ObjectRemoved:Delete", False),
        ("ObjectRemoved:DeleteMarkerCreated", False),
    ],
)
def test_only_object_created_events_are_uploads(event_name: str | None, upload: bool) -> None:
    record = s3_record("incoming/a.png") | {"eventSource": "aws:s3"}
    if event_name is not None:
        record["eventName"] = event_name
    body = {"Records": [record]}
    assert is_upload(record) is upload
    assert len(notification_images(body)) == int(upload)
    assert ignored_events(body) == ([] if upload else [event_name])


def test_records_from_other_services_or_none_at_all_are_event_errors() -> None:
    record = s3_record("incoming/a.png") | {"eventSource": "aws:sns"}
    with pytest.raises(errors.EventError, match="comes from 'aws:sns', not from S3"):
        notification_images({"Records": [record]})
    with pytest.raises(errors.EventError, match="has no records"):
        notification_images({"Records": []})
    assert notification_images({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []


def _sns(message: str) -> dict[str, Any]:
    """An SNS envelope as SNS delivers it to SQS without raw message delivery."""
    return {
        "Type": "Notification",
        "MessageId": "7c7a3f1d-5f3e-5d3b-9a3c-2b8f0e1c9a11",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
        "Subject": "Amazon S3 Notification",
        "Message": message,
        "Timestamp": "2026-11-25T12:00:00.120Z",
        "SignatureVersion": "1",
    }


def _eventbridge(detail_type: str, reason: str | None, source: str = "aws.s3") -> dict[str, Any]:
    """An S3 event as EventBridge delivers it to a rule's target."""
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": "images"},
        "object": {
            "key": "incoming/my photo(1).png",  # no "+" or "%": both readings agree
            "size": 2442,
            "etag": "0123456789abcdef0123456789abcdef",
            "version-id": "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
            "sequencer": "0055AED6DCD90281E5",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
    }
    if reason:
        detail["reason"] = reason
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-11-25T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:s3:::images"],
        "detail": detail,
    }


def test_an_eventbridge_key_with_plus_or_percent_carries_its_url_encoded_reading() -> None:
    """S3's own notifications are URL-encoded: one reading. An EventBridge key without "+"
    or "%" reads the same both ways; with them, the image keeps the other reading for
    ``settle_key_readings`` (one that is no UTF-8 only means the key as stored)."""
    body = {"Records": [s3_record("incoming/a+b%2B.png") | {"eventName": "ObjectCreated:Put"}]}
    (image,) = notification_images(body)
    assert (image.ref.key, image.encoded_reading) == ("incoming/a b+.png", None)
    (image,) = notification_images(_eventbridge("Object Created", "PutObject"))
    assert image.encoded_reading is None
    for sent, stored, encoded in [
        ("incoming/a+b%2B.png", "incoming/a+b%2B.png", "incoming/a b+.png"),
        ("incoming/100%.png", "incoming/100%.png", None),  # "%.p" decodes to itself
        ("incoming/caf%E9.png", "incoming/caf%E9.png", None),  # Latin-1, not UTF-8
        ("incoming/a%00b%0A.png", "incoming/a%00b%0A.png", None),  # control characters
    ]:
        event = _eventbridge("Object Created", "PutObject")
        event["detail"]["object"]["key"] = sent
        (image,) = notification_images(event)
        assert image.ref.key == stored
        other = image.encoded_reading
        assert (other.key if other else None) == encoded
        assert other is None or other == dataclasses.replace(image.ref, key=encoded)


@pytest.mark.parametrize(
    ("version", "answer", "holds"),
    [
        ("v1", {"ETag": '"other"'}, True),  # a version id names its bytes
        (NULL_VERSION, {"ETag": '"e1"'}, True),
        (NULL_VERSION, {"ETag": '"other"'}, False),  # the key holds other bytes now
        ("v1", 404, False),
        (NULL_VERSION, 404, False),
        ("v1", 405, False),  # the version is a delete marker
    ],
)
def test_holds_version_asks_s3_whether_the_key_holds_the_object_version(
    version: str, answer: dict[str, str] | int, holds: bool
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    ref = ObjectRef("images", "incoming/a b.png", version, "e1", 5)
    expected = {"Bucket": "images", "Key": "incoming/a b.png"}
    if version != NULL_VERSION:
        expected["VersionId"] = version
    with Stubber(s3) as stub:
        if isinstance(answer, int):
            stub.add_client_error("head_object", str(answer), "", answer, expected_params=expected)
        else:
            stub.add_response("head_object", answer, expected)
        assert holds_version(s3, ref) is holds
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status"),
    [("SlowDown", 503), ("403", 403), ("400", 400), ("InternalError", 500)],
)
def test_holds_version_raises_what_does_not_answer_the_question(code: str, status: int) -> None:
    """A denial (an SCP, a bucket or endpoint policy, a grant gone: a HEAD's 403 has no
    body to say which), a bad request, throttling or an outage is no "not there": taking it
    for one would start the wrong reading of the key, and the message would be gone."""
    s3 = boto3.client("s3", region_name="us-east-1")
    ref = ObjectRef("images", "incoming/a b.png", "v1", "e1", 5)
    with Stubber(s3) as stub:
        stub.add_client_error("head_object", code, "", status)
        with pytest.raises(ClientError, match=code):
            holds_version(s3, ref)


def test_an_s3_notification_inside_an_sns_envelope_is_read_as_s3_sent_it() -> None:
    body = {"Records": [s3_record("incoming/my+photo.png") | {"eventName": "ObjectCreated:Put"}]}
    assert notification_images(_sns(json.dumps(body))) == notification_images(body)
    (image,) = notification_images(_sns(json.dumps(body)))
    assert image.ref.key == "incoming/my photo.png"
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "images"}
    assert is_s3_test_event(_sns(json.dumps(test_event)))
    assert notification_images(_sns(json.dumps(test_event))) == []
    with pytest.raises(errors.EventError, match=r"SNS notification from .*uploads has a Message"):
        notification_images(_sns("not json"))
    assert not is_s3_test_event(_sns("not json"))


def test_an_s3_eventbridge_event_is_read_as_the_notification_it_stands_for() -> None:
    for reason in ("PutObject", "CompleteMultipartUpload", "CopyObject", None):
        (image,) = notification_images(_eventbridge("Object Created", reason))
        assert image.ref == ObjectRef(
            "images",
            "incoming/my photo(1).png",
            "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
            "0123456789abcdef0123456789abcdef",
            2442,
            "0055AED6DCD90281E5",
        )
        # EventBridge writes no fraction; the record gets the time as S3 writes it.
        assert image.event_time == "2026-11-25T12:00:00.000Z"
    # Through an SNS topic too.
    assert notification_images(_sns(json.dumps(_eventbridge("Object Created", "PutObject"))))
    for other in ("Object Deleted", "Object Restore Completed", "Object Tags Added"):
        assert notification_images(_eventbridge(other, None)) == []
        assert ignored_events(_eventbridge(other, None)) == [other]
    with pytest.raises(errors.EventError, match=r"comes from 'aws\.ec2', not from S3"):
        notification_images(_eventbridge("EC2 Instance State-change Notification", None, "aws.ec2"))
    broken = _eventbridge("Object Created", "PutObject")
    del broken["detail"]["object"]
    with pytest.raises(errors.EventError, match="'Object Created' names no bucket and key"):
        notification_images(broken)

    # A rule that matches only ``source: aws.s3`` also routes CloudTrail's API-call events
    # and detail types without an object: no upload, not a failure to retry five times.
    cloudtrail = _eventbridge("AWS API Call via CloudTrail", None)
    cloudtrail["detail"] = {"eventSource": "s3.amazonaws.com", "eventName": "PutBucketPolicy"}
    assert notification_images(cloudtrail) == []
    assert ignored_events(cloudtrail) == ["AWS API Call via CloudTrail"]
    bare = _eventbridge("Object Restore Initiated", None)
    bare["detail"] = None
    assert notification_images(bare) == []


def test_a_name_no_s3_object_can_have_is_refused_with_its_message() -> None:
    # JSON can spell a lone surrogate ("\\ud800"); no S3 name holds one, and it cannot be
    # encoded for a record id or a request.
    for field, value, name in (
        ("key", "incoming/\ud800.png", "object key"),
        ("versionId", "v\udfff", "version id"),
        ("eTag", "\ud83d", "ETag"),
    ):
        record = s3_record("incoming/a.png")
        record["s3"]["object"][field] = value  # type: ignore[index]
        body = json.loads(json.dumps({"Records": [record]}))
        with pytest.raises(errors.EventError, match=f"{name} .* is not valid Unicode"):
            notification_images(body)
    record = s3_record("incoming/a.png")
    record["s3"]["bucket"]["name"] = "images\udc80"  # type: ignore[index]
    with pytest.raises(errors.EventError, match=r"bucket name .* is not valid Unicode"):
        notification_images({"Records": [record]})
    # S3 keys have at most 1,024 UTF-8 bytes; 1,024 is allowed.
    fits = "incoming/" + "\u20ac" * 338 + "a"
    assert len(fits.encode()) == 1024
    (image,) = notification_images({"Records": [s3_record(quote_plus(fits))]})
    assert image.ref.key == fits
    with pytest.raises(errors.EventError, match="1025 UTF-8 bytes; S3 keys have at most 1024"):
        notification_images({"Records": [s3_record(quote_plus(fits + "b"))]})
    # A %-sequence that is not UTF-8 names no S3 key: it was turned into U+FFFD, so two
    # such keys became one record of a key nobody uploaded, and one message vanished.
    for raw in ("incoming/photo%E9.png", "incoming/photo%E8.png"):
        with pytest.raises(errors.EventError, match=r"photo%E[89]\.png' is not URL-encoded UTF"):
            notification_images({"Records": [s3_record(raw)]})


def test_an_object_whose_record_id_the_table_could_not_hold_or_tell_apart_is_refused() -> None:
    """The record id is "<bucket>/<key>#<version or etag:ETag>": S3 writes no "#" in a
    version id or ETag, and with one two objects could share a record (the second would
    silently get none); a version id long enough to push the id past DynamoDB's 2,048-byte
    key limit left the object with no record at all, every write refused."""
    key = "incoming/" + "\U0001f600" * 253  # 1,021 UTF-8 bytes
    longest = s3_record(quote_plus(key))
    room = MAX_RECORD_ID_BYTES - len(f"images/{key}#".encode())
    longest["s3"]["object"]["versionId"] = "v" * room  # type: ignore[index]
    (image,) = notification_images({"Records": [longest]})
    assert len(image.ref.record_id.encode()) == MAX_RECORD_ID_BYTES
    longest["s3"]["object"]["versionId"] += "v"  # type: ignore[index]
    with pytest.raises(
        errors.EventError, match=r"record id .* is 2049 UTF-8 bytes; .* at most 2048"
    ):
        notification_images({"Records": [longest]})
    for field, value, name in (
        ("versionId", "a#b", "version id"),
        ("eTag", "x#etag:y", "ETag"),
        ("sequencer", "00#1", "sequencer"),
    ):
        record = s3_record("incoming/k")
        record["s3"]["object"][field] = value  # type: ignore[index]
        with pytest.raises(errors.EventError, match=f"{name} '{value}' holds '#'"):
            notification_images({"Records": [record]})
    # A "#" in the key itself is S3's to allow: the id is read back from its last "#".
    (image,) = notification_images({"Records": [s3_record(quote_plus("incoming/a#b.png"))]})
    assert image.ref.key == "incoming/a#b.png"


def test_every_object_goes_to_the_workflow_whatever_its_name() -> None:
    for key in ("incoming/notes.txt", "incoming/PHOTO.JPG", "incoming/no-extension"):
        ref = ObjectRef("b", key, "v", "e", 1)
        assert workflow_input(ref, "t") == {
            "object": ref.to_json(),
            "event_time": "t",
            "attempt": 0,
        }


def _pending(n: int, key: str = "incoming/photo-{}.jpg", message: str = "m-{}") -> PendingImage:
    ref = ObjectRef("scones-images", key.format(n), f"v{n}", "e" * 32, 1000 + n)
    return PendingImage(ref, "2026-12-01T00:00:00.000Z", message.format(n))


def _batch_document(group: list[PendingImage]) -> bytes:
    document = {"objects": [workflow_input(i.ref, i.event_time) for i in group]}
    return json.dumps(document, separators=(",", ":")).encode()


def test_duplicates_in_a_batch_are_classified_once_in_delivery_order() -> None:
    first, second, third = _pending(1), _pending(2), _pending(3)
    again = dataclasses.replace(first, message_id="m-again")
    assert distinct_images([first, second, again, third, second]) == [first, second, third]


def test_an_ordinary_batch_is_one_execution_and_long_keys_split_under_the_byte_budget() -> None:
    ten = [_pending(n) for n in range(10)]
    assert split_batch(ten) == [ten]
    # S3's worst key: 1,024 bytes of a character JSON escapes to six.
    worst = [_pending(n, key="incoming/{}" + "\u0001" * 1010) for n in range(10)]
    groups = split_batch(worst)
    assert len(groups) > 1 and [i for g in groups for i in g] == worst
    assert all(len(_batch_document(g)) <= MAX_BATCH_INPUT_BYTES for g in groups)
    # Each group is as full as the budget allows.
    for group, following in itertools.pairwise(groups):
        assert len(_batch_document([*group, following[0]])) > MAX_BATCH_INPUT_BYTES


def test_two_different_batches_never_share_an_execution_name() -> None:
    """A key may hold a newline and ``#``: ids joined by a newline made these two batches
    (the same text once joined) one name, and Standard refused the second batch's start
    as a duplicate, so its uploads were never classified."""

    def unversioned(key: str, etag: str) -> PendingImage:
        return PendingImage(ObjectRef("images", key, NULL_VERSION, etag, 1))

    first = [
        unversioned("incoming/a", "E1"),
        unversioned("incoming/b#etag:E2\nimages/incoming/c", "E3"),
    ]
    second = [
        unversioned("incoming/a#etag:E1\nimages/incoming/b", "E2"),
        unversioned("incoming/c", "E3"),
    ]
    assert "\n".join(sorted(i.ref.record_id for i in first)) == "\n".join(
        sorted(i.ref.record_id for i in second)
    )

    assert batch_execution_name(first) != batch_execution_name(second)
    # Still one name per set of versions, whatever order the batch came in.
    assert batch_execution_name(first) == batch_execution_name(first[::-1])
    assert len(batch_execution_name(first)) <= 80


def test_a_batch_whose_start_fails_names_its_images_and_the_others_still_start() -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:classify"
    worst = [_pending(n, key="incoming/{}" + "\u0001" * 1010) for n in range(6)]
    groups = split_batch(worst)
    assert len(groups) >= 2
    with Stubber(sfn) as stub:
        stub.add_client_error(
            "start_execution", service_error_code="ThrottlingException", http_status_code=400
        )
        for group in groups[1:]:
            stub.add_response(
                "start_execution",
                {"executionArn": f"{arn}:x", "startDate": "2026-12-01T00:00:00Z"},
                {
                    "stateMachineArn": arn,
                    "name": batch_execution_name(group)
                    if len(group) > 1
                    else group[0].ref.execution_name,
                    "input": (
                        _batch_document(group).decode()
                        if len(group) > 1
                        else json.dumps(
                            workflow_input(group[0].ref, group[0].event_time), separators=(",", ":")
                        )
                    ),
                },
            )
        starts = start_batches(sfn, worst, StartSettings(state_machine_arn=arn))
        stub.assert_no_pending_responses()

    assert [list(s.images) for s in starts] == groups
    assert starts[0].result is None and "ThrottlingException" in str(starts[0].error)
    assert all(s.result is not None and s.result.started for s in starts[1:])


def test_a_split_batch_waited_on_runs_its_executions_side_by_side(express_moto: None) -> None:
    """A batch of worst-case keys splits into several executions; waited on, they run at
    once (their runs overlap), so the batch still ends within one execution's time, the
    start function's timeout. Real runs, in moto's interpreter (each waits 1 s)."""
    worst = [_pending(n, key="incoming/{}" + "\u0001" * 1010) for n in range(6)]
    groups = split_batch(worst)
    assert len(groups) >= 2
    waiting = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 1, "End": True}}}
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    settings = StartSettings(state_machine_arn=express_machine(waiting), workflow_type="EXPRESS")

    starts = start_batches(sfn, worst, settings, seconds_left=lambda: 330.0)

    assert [list(s.images) for s in starts] == groups
    assert all(s.result is not None and s.result.status == "SUCCEEDED" for s in starts)
    runs = [s.result for s in starts if s.result is not None]
    assert all(not r.left_images_unrecorded for r in runs)
    # Side by side: every run started before any other ended.
    windows = [(r.started_at, r.ended_at) for r in runs]
    assert max(start for start, _ in windows) < min(end for _, end in windows)


# ---- settings ----------------------------------------------------------------


def test_settings_name_every_problem_at_once() -> None:
    with pytest.raises(errors.SettingsError) as raised:
        ImageLimits.from_env({"MAX_IMAGE_BYTES": "-5", "MODEL_INPUT_SIZE": "32by32"})
    message = str(raised.value)
    for name in (
        "MAX_IMAGE_BYTES",
        "MAX_IMAGE_PIXELS",
        "MIN_IMAGE_SIDE",
        "ALLOWED_IMAGE_FORMATS",
        "MODEL_INPUT_SIZE",
    ):
        assert name in message


def test_rejection_classes_are_the_ones_documented() -> None:
    assert errors.rejection_error_names() == sorted(
        [
            "CorruptImage",
            "EmptyObject",
            "FolderPlaceholder",
            "ImageTooComplex",
            "ImageTooLarge",
            "ImageTooManyPixels",
            "ImageTooSmall",
            "NotAnImage",
            "NotARasterImage",
            "ObjectChanged",
            "ObjectNotFound",
            "UnsupportedImageFormat",
        ]
    )


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (custom_attributes("4ee99463716d"), "4ee99463716d"),
        ("trace=abc, model_version=v7 ;other=1", "v7"),
        ("model_version=", UNREPORTED),
        ("modelversion=v7", UNREPORTED),
        ("", UNREPORTED),
        (None, UNREPORTED),
        (42, UNREPORTED),
    ],
)
def test_model_version_is_read_from_custom_attributes(attributes: object, expected: str) -> None:
    assert model_version(attributes) == expected


@pytest.mark.parametrize("version", ["", "caf\u00e9", "a\nb", "v" * 1100])
def test_a_version_that_cannot_travel_in_custom_attributes_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="cannot travel in CustomAttributes"):
        custom_attributes(version)


def test_custom_attributes_may_use_sagemakers_whole_1024_characters() -> None:
    """SageMaker forwards up to 1024 characters of CustomAttributes: the longest version
    that fits is sent, one character more is refused."""
    longest = "v" * (1024 - len("model_version="))
    assert len(custom_attributes(longest)) == 1024
    assert model_version(custom_attributes(longest)) == longest[:128]
    with pytest.raises(ValueError, match="cannot travel in CustomAttributes"):
        custom_attributes(longest + "v")


def test_classification_keeps_the_version_the_endpoint_reports() -> None:
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    body = StreamingBody(io.BytesIO(b"[0.1, 0.9]"), len(b"[0.1, 0.9]"))
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {
                "Body": body,
                "ContentType": "application/json",
                "InvokedProductionVariant": "canary",
                "CustomAttributes": custom_attributes("c0ffee123456"),
            },
        )
        result = classify_image(client, b"png-bytes", ENDPOINT)
    assert (result.variant, result.model_version) == ("canary", "c0ffee123456")
    assert result.to_state()["model_version"] == "c0ffee123456"
