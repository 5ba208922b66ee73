"""The S3 event notification inside whatever carried it to the ingest queue.

The template sends S3's notifications straight to SQS, so a message body is one. Two other
deliveries are common where a bucket already feeds other consumers, and both carry the
same facts: an SNS topic fanning out to the queue without raw message delivery (the body
is SNS's envelope, the notification a JSON string in ``Message``), and S3's EventBridge
events routed to the queue by a rule (one object per event, in ``detail``). Each is turned
into S3's own ``{"Records": [...]}`` form here, so the rest of the code reads one shape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

from scones_core.errors import EventError
from scones_core.json_text import NotJSON, load_json

# EventBridge names an upload "Object Created" and says how in ``detail.reason``
# (PutObject, POST Object, CopyObject, CompleteMultipartUpload); S3's notifications
# name it ``ObjectCreated:<how>``. Other detail types keep their own name, which
# ``ingest.is_upload`` counts as no upload.
_EVENTBRIDGE_UPLOAD = "Object Created"
# Where the notification built from an EventBridge event keeps the key as the event sent
# it (``ingest.PendingImage.encoded_reading``): S3 does not document whether EventBridge
# URL-encodes it, as its notifications do.
EVENTBRIDGE_KEY_FIELD = "eventBridgeKey"


def is_sns_envelope(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("Type") == "Notification"
        and "TopicArn" in body
        and "Message" in body
    )


def is_eventbridge_event(body: Any) -> bool:
    return isinstance(body, dict) and "detail-type" in body and "detail" in body


def s3_notification(body: Any) -> Any:
    """``body`` as S3 sends a notification to SQS; other bodies unchanged.

    ``EventError`` names what is wrong with an envelope that cannot hold one: an SNS
    message that is not JSON, or an EventBridge event from another service or without
    a bucket and key.
    """
    if isinstance(body, dict) and body.get("Type") == "SubscriptionConfirmation":
        raise EventError(
            f"an SNS SubscriptionConfirmation from {body.get('TopicArn')}, not an S3 event: "
            "confirm the queue's subscription to the topic (its SubscribeURL)"
        )
    if is_sns_envelope(body):
        try:
            body = load_json(body["Message"])
        except NotJSON as exc:
            topic = body.get("TopicArn")
            raise EventError(
                f"the SNS notification from {topic} has a Message that is not JSON"
            ) from exc
    if is_eventbridge_event(body):
        return {"Records": [_record_from_eventbridge(body)]}
    return body


def _record_from_eventbridge(event: dict[str, Any]) -> dict[str, Any]:
    source = event.get("source")
    if source != "aws.s3":
        raise EventError(f"the EventBridge event comes from {source!r}, not from S3 (aws.s3)")
    kind = str(event.get("detail-type"))
    if kind != _EVENTBRIDGE_UPLOAD:
        # Deleted, Restore, Tags, or a CloudTrail "AWS API Call via CloudTrail" event that
        # a rule matching only ``source: aws.s3`` also routes here: no upload, whatever
        # its detail holds. ``ingest.ignored_events`` logs it by this name.
        return {"eventSource": "aws:s3", "eventName": kind, "eventTime": event.get("time")}
    detail = event.get("detail")
    bucket = detail.get("bucket") if isinstance(detail, dict) else None
    obj = detail.get("object") if isinstance(detail, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict) or "key" not in obj:
        raise EventError(f"the S3 EventBridge event {kind!r} names no bucket and key")
    reason = detail.get("reason") if isinstance(detail, dict) else None
    return {
        "eventSource": "aws:s3",
        "eventName": f"ObjectCreated:{reason or 'Put'}",
        "eventTime": event.get("time"),
        "s3": {
            "bucket": {"name": bucket.get("name")},
            "object": {
                "key": _notification_key(obj["key"]),
                "size": obj.get("size"),
                "eTag": obj.get("etag") or obj.get("eTag"),
                "versionId": obj.get("version-id"),
                "sequencer": obj.get("sequencer"),
                EVENTBRIDGE_KEY_FIELD: obj["key"],
            },
        },
    }


def _notification_key(key: Any) -> Any:
    """The key as S3's notifications spell it, reading the event's key as stored.

    S3's notifications URL-encode the key (``my+photo%2B1.png`` for ``my photo+1.png``).
    S3's documentation does not say whether its EventBridge events do: moto sends the key
    as stored, AWS Lambda Powertools and LocalStack read it URL-encoded. The two readings
    differ only for a key with ``+`` or ``%``, which a stored key may hold either way. The
    stored reading is encoded here, so that the one decoding in
    ``objects.object_from_s3_record`` gives it back; ``ingest.settle_key_readings`` asks S3
    which of the two readings holds the announced object version.
    """
    if not isinstance(key, str):
        return key  # object_from_s3_record names the bad value
    try:
        return quote_plus(key, safe="/")
    except UnicodeEncodeError:
        raise EventError(
            f"the S3 EventBridge event's object key {key!r} is not valid Unicode "
            "(a lone surrogate): no S3 name holds one"
        ) from None
