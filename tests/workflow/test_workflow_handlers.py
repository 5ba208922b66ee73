"""Every ``events/*.json`` file through its handler, on real services where they run here."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import boto3
import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber
from conftest import (
    EVENTS,
    FUNCTIONS,
    SAMPLE_BUCKET,
    load_handler,
    start_function,
    template_limits,
)
from moto import mock_aws
from scones_core.errors import CLASSIFICATION_FAILED, EventError, SettingsError
from scones_core.ingest import RUN_TIME_NEEDED_SECONDS, event_time_text, notification_images

from scones.model.artifact import OnnxClassifier
from scones.offline import s3_event_fixes
from scones.offline.lambda_worker import LambdaContext
from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import function_environment, parameter_defaults

REGION = "us-east-1"
PARAMS = parameter_defaults()


def context(seconds: float = 30) -> LambdaContext:
    return LambdaContext("test-request", time.time() * 1000 + seconds * 1000)


# The start function's timeout under EXPRESS (template.yaml), which a waited run needs.
EXPRESS_TIMEOUT_S = 330


def event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / f"{name}.json").read_text()))


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
        "POWERTOOLS_METRICS_NAMESPACE": "SconesUnlimited",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "test-function",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def aws(lambda_env: None) -> Iterator[None]:
    with mock_aws():
        yield


def test_start_workflow_event_starts_one_execution_per_object(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    sqs_event = event("start_workflow")

    assert app.lambda_handler(sqs_event, context()) == {"batchItemFailures": []}
    # The same S3 notification again: no second execution, no failure.
    assert app.lambda_handler(sqs_event, context()) == {"batchItemFailures": []}

    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert len(executions) == 1
    document = json.loads(
        sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"]
    )
    assert document["object"]["key"] == "incoming/camera-7/delivery photo 1.png"
    assert document["object"]["version"] == "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    assert set(document) == {"object", "event_time", "attempt"}
    assert document["attempt"] == 0  # the first execution; a replay (scones redrive) sends N
    assert '"WorkflowsStarted"' in capsys.readouterr().out


def _metrics(out: str) -> dict[str, float]:
    """The metrics of the EMF documents a handler printed, summed by name."""
    totals: dict[str, float] = {}
    for line in out.splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = document[metric["Name"]]
                    total = sum(value) if isinstance(value, list) else value
                    totals[metric["Name"]] = totals.get(metric["Name"], 0) + total
    return totals


def test_a_second_delivery_of_an_upload_counts_as_a_duplicate_not_as_started_images(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same upload through S3's notification, then through EventBridge (another event
    time, so another input under the same execution name): the second start is refused,
    and ``ImagesStarted`` counts only the first."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    assert app.lambda_handler(event("start_workflow"), context()) == {"batchItemFailures": []}
    first = _metrics(capsys.readouterr().out)
    # EventBridge's time is its own (to the second), so the input differs from S3's.
    later = event("start_workflow_eventbridge")
    (record,) = later["Records"]
    body = json.loads(record["body"])
    body["time"] = "2026-11-25T12:00:01Z"
    record["body"] = json.dumps(body)
    assert app.lambda_handler(later, context()) == {"batchItemFailures": []}
    second = _metrics(capsys.readouterr().out)

    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 1
    assert (first.get("WorkflowsStarted"), first.get("ImagesStarted")) == (1, 1)
    assert second.get("DuplicateEvents") == 1
    assert "ImagesStarted" not in second and "WorkflowsStarted" not in second


def test_start_workflow_reports_only_the_bad_message_as_failed(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    sqs_event = event("start_workflow")
    bad = dict(sqs_event["Records"][0], messageId="bad-1", body="not json")
    # JSON past the parser's own limits: nesting deeper than its recursion goes.
    deep = dict(sqs_event["Records"][0], messageId="bad-2", body="[" * 50_000 + "]" * 50_000)
    test_event = dict(
        sqs_event["Records"][0],
        messageId="test-1",
        body=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}),
    )
    # The same, from a topic the bucket notifies (SNS to SQS, without raw delivery).
    sns_test_event = dict(
        test_event,
        messageId="test-2",
        body=json.dumps(
            {
                "Type": "Notification",
                "TopicArn": "arn:aws:sns:eu-west-1:1:t",
                "Message": test_event["body"],
            }
        ),
    )
    sqs_event["Records"] = [bad, sqs_event["Records"][0], deep, test_event, sns_test_event]

    response = app.lambda_handler(sqs_event, context())

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "bad-1"}, {"itemIdentifier": "bad-2"}]
    }
    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 1
    ignored = [r for r in caplog.records if r.getMessage() == "ignoring s3:TestEvent"]
    assert [r.__dict__["bucket"] for r in ignored] == ["b", "b"]


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("s3-notification", r"an S3 event notification \(Records\[\]\.s3\): S3 must notify"),
        ("eventbridge", "an EventBridge event from S3"),
        ("console-default", r"an object with keys \['key1', 'key2', 'key3'\]"),
        ("list", "a JSON list"),
    ],
)
def test_start_workflow_names_an_event_that_is_not_an_sqs_batch(
    aws: None, monkeypatch: pytest.MonkeyPatch, kind: str, named: str
) -> None:
    """S3 wired straight to the function (or the console's test event) is refused with
    what it is, not a KeyError from inside the batch processor; nothing is started."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    (message,) = event("start_workflow")["Records"]
    not_a_batch: Any = {
        "s3-notification": json.loads(message["body"]),
        "eventbridge": json.loads(event("start_workflow_eventbridge")["Records"][0]["body"]),
        "console-default": {"key1": "value1", "key2": "value2", "key3": "value3"},
        "list": [message],
    }[kind]

    with pytest.raises(EventError, match="reads SQS batches from the ingest queue") as raised:
        app.lambda_handler(not_a_batch, context())

    assert raised.match(named)
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []


def test_start_workflow_names_the_workflows_own_dead_letter_sent_back_to_its_queue(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQS's "start DLQ redrive" can move a workflow_failed message to the ingest queue:
    it is reported (and ends in the DLQ again) with a pointer to `scones redrive`."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    (message,) = event("start_workflow")["Records"]
    letter = {"kind": "workflow_failed", "object": {"bucket": "b", "key": "incoming/x.png"}}
    sqs_event = {"Records": [dict(message, messageId="dead-1", body=json.dumps(letter))]}

    response = app.lambda_handler(sqs_event, context())

    assert response == {"batchItemFailures": [{"itemIdentifier": "dead-1"}]}
    (warning,) = [r for r in caplog.records if getattr(r, "message_id", None) == "dead-1"]
    error = str(getattr(warning, "error", ""))
    assert "workflow's own dead letter (workflow_failed)" in error
    assert "replay it with `scones redrive --dead-letters`" in error
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []


def test_start_workflow_reports_a_batch_of_only_bad_messages_without_raising(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function error would make Lambda slow the queue's polling for every upload."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    (template,) = event("start_workflow")["Records"]
    subscription = {
        "Type": "SubscriptionConfirmation",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    }
    bodies = {"bad-1": "not json", "bad-2": "[]", "bad-3": json.dumps(subscription)}
    sqs_event = {
        "Records": [dict(template, messageId=mid, body=body) for mid, body in bodies.items()]
    }

    response = app.lambda_handler(sqs_event, context())

    assert response == {"batchItemFailures": [{"itemIdentifier": mid} for mid in bodies]}
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []


def test_start_workflow_ignores_objects_outside_its_bucket_and_prefix(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An SNS topic or an EventBridge rule carries S3 events of every bucket and key; the
    bucket's own notification is filtered to the incoming prefix."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    (template,) = event("start_workflow")["Records"]
    sqs_event = {
        "Records": [
            _naming(template, "labelled", key="labelled/bicycle/a.png"),
            _naming(template, "other-bucket", bucket="someone-elses"),
            template,
        ]
    }

    response = app.lambda_handler(sqs_event, context())

    assert response == {"batchItemFailures": []}
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert document["object"]["key"] == "incoming/camera-7/delivery photo 1.png"  # one image
    ignored = [r for r in caplog.records if "outside this stack's bucket" in r.getMessage()]
    # A warning: at the template's default LogLevel an INFO line would leave no trace.
    assert {r.levelname for r in ignored} == {"WARNING"}
    assert sorted(o for r in ignored for o in r.objects) == [
        "s3://scones-123456789012-us-east-1-images/labelled/bicycle/a.png",
        "s3://someone-elses/incoming/camera-7/delivery photo 1.png",
    ]


def _naming(
    record: dict[str, Any], message_id: str, *, bucket: str = "", key: str = ""
) -> dict[str, Any]:
    body = json.loads(record["body"])
    s3 = body["Records"][0]["s3"]
    s3["bucket"]["name"] = bucket or s3["bucket"]["name"]
    s3["object"]["key"] = key or s3["object"]["key"]
    return dict(record, messageId=message_id, body=json.dumps(body))


def _with_s3_record(record: dict[str, Any], message_id: str, **fields: Any) -> dict[str, Any]:
    body = json.loads(record["body"])
    body["Records"][0].update(fields)
    return dict(record, messageId=message_id, body=json.dumps(body))


def test_start_workflow_ignores_s3_events_that_announce_no_upload(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Restore, lifecycle, tagging and removal events name an object version but create
    none (a delete marker has no content to read): they start nothing and are not errors.
    A record from another service, or a notification without records, is an error."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    sqs_event = event("start_workflow")
    (upload,) = sqs_event["Records"]
    ignored = [
        "ObjectRestore:Completed",
        "LifecycleTransition",
        "ObjectRemoved:DeleteMarkerCreated",
    ]
    sqs_event["Records"] = [
        upload,
        *(
            _with_s3_record(upload, f"ignored-{n}", eventName=name)
            for n, name in enumerate(ignored)
        ),
        _with_s3_record(upload, "not-s3", eventSource="aws:sns"),
        dict(upload, messageId="no-records", body=json.dumps({"Records": []})),
    ]

    response = app.lambda_handler(sqs_event, context())

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "not-s3"}, {"itemIdentifier": "no-records"}]
    }
    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert len(executions) == 1
    document = json.loads(
        sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"]
    )
    assert document["object"]["version"] == "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    events = [
        r.__dict__["events"] for r in caplog.records if r.getMessage().startswith("ignoring S3")
    ]
    assert events == [[name] for name in ignored]
    errors = " ".join(str(r.__dict__.get("error")) for r in caplog.records)
    assert "comes from 'aws:sns', not from S3" in errors and "has no records" in errors


@pytest.mark.parametrize("carrier", ["sns", "eventbridge"])
def test_start_workflow_reads_s3_events_delivered_through_sns_or_eventbridge(
    aws: None, monkeypatch: pytest.MonkeyPatch, carrier: str
) -> None:
    """A bucket that already feeds an SNS topic or EventBridge can feed the ingest queue
    from there: the same upload starts the same execution."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)

    assert app.lambda_handler(event(f"start_workflow_{carrier}"), context()) == {
        "batchItemFailures": []
    }

    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert document["object"]["key"] == "incoming/camera-7/delivery photo 1.png"
    assert document["object"]["version"] == "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    assert document["object"]["size"] == 2442
    assert document["event_time"].startswith("2026-11-25T12:00:00")


def test_an_upload_reaches_the_workflow_by_its_stored_key_through_either_delivery(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's S3 sends a real upload both ways: URL-encoded in its notification to SQS,
    as stored in its EventBridge event (routed to SQS by a rule). Either message starts
    the execution of the object's stored key, ``+`` and ``%`` kept."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    s3.create_bucket(Bucket=SAMPLE_BUCKET)
    s3.put_bucket_versioning(Bucket=SAMPLE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    queues = {}
    for name in ("notifications", "eventbridge"):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn_of = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        queues[name] = (url, arn_of["Attributes"]["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=SAMPLE_BUCKET,
        NotificationConfiguration={
            "EventBridgeConfiguration": {},
            "QueueConfigurations": [
                {"QueueArn": queues["notifications"][1], "Events": ["s3:ObjectCreated:*"]}
            ],
        },
    )
    pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"]}
    events.put_rule(Name="uploads", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="uploads", Targets=[{"Id": "q", "Arn": queues["eventbridge"][1]}])
    key = "incoming/c++/my photo+1 %25 100%.png"
    # With the offline stack's correction of moto's notification (it leaves out the
    # versionId that S3's carries: tests/offline/test_offline_moto_gaps.py).
    s3_event_fixes.install()
    try:
        version = s3.put_object(Bucket=SAMPLE_BUCKET, Key=key, Body=b"x")["VersionId"]
    finally:
        s3_event_fixes.uninstall()

    for name in ("eventbridge", "notifications"):
        url = queues[name][0]
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        batch = {
            "Records": [
                {"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs"}
                for m in messages
            ]
        }
        assert app.lambda_handler(batch, context()) == {"batchItemFailures": []}, name
    # One execution: both messages name the same object version, so the same deterministic
    # execution name, which Step Functions does not start twice.
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert (document["object"]["key"], document["object"]["version"]) == (key, version)


def _eventbridge_message(message_id: str, key: str, version: str, etag: str) -> dict[str, Any]:
    """The sample EventBridge delivery (``events/start_workflow_eventbridge.json``) naming
    another object: its key exactly as given."""
    (record,) = event("start_workflow_eventbridge")["Records"]
    body = json.loads(record["body"])
    body["detail"]["object"].update(key=key, etag=etag, **{"version-id": version})
    return dict(record, messageId=message_id, body=json.dumps(body))


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_an_eventbridge_key_reaches_the_stored_object_whether_or_not_it_is_url_encoded(
    aws: None, monkeypatch: pytest.MonkeyPatch, versioned: bool
) -> None:
    """S3 does not document whether its EventBridge events URL-encode the key: moto sends
    it as stored, AWS Lambda Powertools and LocalStack read it URL-encoded. For a key with
    "+" or "%" the two readings name different objects; S3 is asked which one holds the
    announced version, so either form, and S3's own notification, starts one execution
    of the stored key."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=SAMPLE_BUCKET)
    if versioned:
        s3.put_bucket_versioning(
            Bucket=SAMPLE_BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
    stored = "incoming/c++/my photo+1 100%25 vélo.png"
    # Another object under the stored reading of the encoded form: it must not be chosen.
    decoy = "incoming/c  /my photo 1 100% vélo.png"
    s3.put_object(Bucket=SAMPLE_BUCKET, Key=decoy, Body=b"another upload")
    put = s3.put_object(Bucket=SAMPLE_BUCKET, Key=stored, Body=b"the upload")
    version = put["VersionId"] if versioned else ""
    etag = put["ETag"].strip('"')
    encoded = quote_plus(stored, safe="/")
    assert unquote_plus(encoded) == stored and encoded != stored

    deliveries = [
        _eventbridge_message("as-stored", stored, version, etag),
        _eventbridge_message("url-encoded", encoded, version, etag),
    ]
    assert app.lambda_handler({"Records": deliveries}, context()) == {"batchItemFailures": []}
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    # Both deliveries name the same object: one image, so a single-image input.
    assert document["object"]["key"] == stored


def test_two_unversioned_uploads_an_eventbridge_key_cannot_tell_apart_are_both_classified(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unversioned, ``incoming/a+b.png`` and ``incoming/a b.png`` holding the same bytes
    both match an event for ``a+b.png`` by ETag, read either way. Settling it on the
    URL-encoded reading alone made it a duplicate of the other upload's event, and
    ``a+b.png`` never had a record: both are started (here in one batch, as one image
    each; in two batches ``a b.png`` would start twice, and its conditional record write
    keeps one record of it)."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=SAMPLE_BUCKET)
    keys = ("incoming/a+b.png", "incoming/a b.png")
    deliveries = []
    for index, key in enumerate(keys):
        etag = s3.put_object(Bucket=SAMPLE_BUCKET, Key=key, Body=b"same bytes")["ETag"]
        deliveries.append(_eventbridge_message(f"m-{index}", key, "", etag.strip('"')))

    assert app.lambda_handler({"Records": deliveries}, context()) == {"batchItemFailures": []}
    started = []
    for execution in sfn.list_executions(stateMachineArn=arn)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        document = json.loads(described["input"])
        started += [item["object"]["key"] for item in document.get("objects", [document])]
    assert sorted(started) == sorted(keys)


def _versioned_upload(key: str) -> tuple[str, str]:
    """``key`` uploaded to the sample bucket, made versioned: its (version id, ETag)."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=SAMPLE_BUCKET)
    s3.put_bucket_versioning(Bucket=SAMPLE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=SAMPLE_BUCKET, Key=key, Body=b"an upload")
    return put["VersionId"], put["ETag"].strip('"')


def test_an_eventbridge_key_with_its_slashes_encoded_is_still_this_stacks_upload(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``incoming%2Fa+b.png`` read as stored is outside IncomingPrefix; read URL-encoded it
    is ``incoming/a b.png``, this stack's upload. Scope is decided by the reading S3
    holds, so the upload is classified, not ignored as another bucket's or prefix's."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    stored = "incoming/a b.png"
    version, etag = _versioned_upload(stored)
    message = _eventbridge_message("m-1", quote_plus(stored, safe=""), version, etag)

    assert app.lambda_handler({"Records": [message]}, context()) == {"batchItemFailures": []}
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert document["object"]["key"] == stored


def test_an_object_stored_with_a_literal_percent_2f_outside_the_prefix_is_not_started(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``incoming%2Fa.png`` stored as such is at the bucket's root, outside IncomingPrefix;
    only its URL-encoded reading, ``incoming/a.png``, is inside, and no such object is
    there. Once S3 says so, the scope is decided again on the reading that holds: the
    object is another's, named in the warning, and not classified."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    stored = "incoming%2Fa.png"
    message = _eventbridge_message("m-1", stored, *_versioned_upload(stored))

    assert app.lambda_handler({"Records": [message]}, context()) == {"batchItemFailures": []}
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []
    assert _metrics(capsys.readouterr().out).get("ObjectsOutOfScope") == 1


def test_an_ambiguous_eventbridge_key_s3_cannot_answer_for_is_delivered_again(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HEAD that settles an EventBridge key fails for another reason than "not there"
    (S3 throttling): the message is reported failed, so SQS delivers it again, and no
    execution starts on a guess."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    client = boto3.client("s3", region_name=REGION)
    stub = Stubber(client)
    stub.add_client_error(
        "head_object",
        "SlowDown",
        "Please reduce your request rate.",
        503,
        expected_params={"Bucket": SAMPLE_BUCKET, "Key": "incoming/a b.png", "VersionId": "v1"},
    )
    monkeypatch.setattr(app, "s3_client", lambda: client)
    message = _eventbridge_message("m-1", "incoming/a+b.png", "v1", "e")

    with stub:
        assert app.lambda_handler({"Records": [message]}, context()) == {
            "batchItemFailures": [{"itemIdentifier": "m-1"}]
        }
    stub.assert_no_pending_responses()
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []


def _message_for(record: dict[str, Any], message_id: str, key: str, version: str) -> dict[str, Any]:
    body = json.loads(record["body"])
    body["Records"][0]["s3"]["object"].update(key=key, versionId=version)
    return dict(record, messageId=message_id, body=json.dumps(body))


def test_start_workflow_starts_one_execution_for_a_whole_sqs_batch(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    sqs_event = event("start_workflow")
    (template,) = sqs_event["Records"]
    sqs_event["Records"] = [
        _message_for(template, f"m-{n}", f"incoming/camera-{n}/photo.jpg", f"v{n}")
        for n in range(3)
    ]

    assert app.lambda_handler(sqs_event, context()) == {"batchItemFailures": []}
    # The same batch delivered again: the same name, so Standard starts nothing new.
    assert app.lambda_handler(sqs_event, context()) == {"batchItemFailures": []}

    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert execution["name"].startswith("batch-3-") and len(execution["name"]) <= 80
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert set(document) == {"objects"}
    assert [item["object"]["key"] for item in document["objects"]] == [
        f"incoming/camera-{n}/photo.jpg" for n in range(3)
    ]
    assert all(item["attempt"] == 0 for item in document["objects"])
    assert all(item["event_time"] == "2026-11-25T12:00:00.000Z" for item in document["objects"])


def test_a_message_naming_an_impossible_object_fails_alone(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone surrogate (which JSON can spell and no S3 key holds) or a key over S3's 1,024
    bytes is refused with its own message, not when the batch's execution starts, where it
    would send the good messages back to the queue with it."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    sqs_event = event("start_workflow")
    (template,) = sqs_event["Records"]
    good = [_message_for(template, f"m-{n}", f"incoming/{n}.png", f"v{n}") for n in range(3)]
    surrogate = _message_for(template, "bad-surrogate", "incoming/\ud800.png", "v9")
    too_long = _message_for(template, "bad-long", "incoming/" + "k" * 1020, "v8")
    sqs_event["Records"] = [good[0], surrogate, good[1], too_long, good[2]]

    response = app.lambda_handler(sqs_event, context())

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "bad-surrogate"}, {"itemIdentifier": "bad-long"}]
    }
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert [item["object"]["key"] for item in document["objects"]] == [
        f"incoming/{n}.png" for n in range(3)
    ]


def test_start_workflow_reports_every_message_of_a_batch_that_could_not_start(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StartExecution refused (here: the state machine is gone): each message of the batch
    goes back to the queue, the bad one included, and nothing is lost."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)
    sfn.delete_state_machine(stateMachineArn=arn)
    sqs_event = event("start_workflow")
    (template,) = sqs_event["Records"]
    good = [_message_for(template, f"m-{n}", f"incoming/{n}.png", f"v{n}") for n in range(2)]
    bad = dict(template, messageId="bad-1", body="not json")
    sqs_event["Records"] = [good[0], bad, good[1]]

    response = app.lambda_handler(sqs_event, context())

    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == [
        "bad-1",
        "m-0",
        "m-1",
    ]


@pytest.fixture
def express_aws(lambda_env: None, express_moto: None) -> None:
    """The handler's environment in moto running Express state machines (``express_moto``)."""


def _fails_with(error: str) -> dict[str, Any]:
    return {"StartAt": "End", "States": {"End": {"Type": "Fail", "Error": error, "Cause": "c"}}}


@pytest.mark.parametrize(
    ("definition", "sent_back"),
    [
        ({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}, False),
        # Every image has its record, some FAILED (with a dead letter): nothing to run again.
        (_fails_with(CLASSIFICATION_FAILED), False),
        # Failed before its records (here: a record write the table refused past the Catch).
        (_fails_with("DynamoDB.AmazonDynamoDBException"), True),
    ],
    ids=["succeeded", "classification-failed", "failed-before-its-records"],
)
def test_under_express_the_start_function_waits_for_each_batch_and_sends_back_an_unfinished_one(
    express_aws: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    definition: dict[str, Any],
    sent_back: bool,
) -> None:
    """The run's end decides: only an execution that ended before every image had its
    record sends the batch's messages back to the queue (and, after maxReceiveCount, to the
    dead-letter queue), so a burst's executions stay within MaximumConcurrency and none is
    lost to an execution that failed on its own."""
    _, _, app = start_function(
        monkeypatch, region=REGION, workflow_type="EXPRESS", definition=definition
    )
    sqs_event = event("start_workflow")
    (template,) = sqs_event["Records"]
    sqs_event["Records"] = [
        _message_for(template, f"m-{n}", f"incoming/{n}.png", f"v{n}") for n in range(3)
    ]

    response = app.lambda_handler(sqs_event, context(EXPRESS_TIMEOUT_S))

    out = capsys.readouterr().out
    metrics = _metrics(out)
    if sent_back:
        assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == [
            "m-0",
            "m-1",
            "m-2",
        ]
        assert metrics.get("WorkflowRunsUnfinished") == 1 and "ImagesStarted" not in metrics
        errors = {
            getattr(r, "error", "")
            for r in caplog.records
            if r.getMessage() == "message not processed; SQS will deliver it again"
        }
        (error,) = errors
        assert error.endswith("ended FAILED (DynamoDB.AmazonDynamoDBException: c)")
    else:
        assert response == {"batchItemFailures": []}
        assert (metrics.get("WorkflowsStarted"), metrics.get("ImagesStarted")) == (1, 3)
        assert "WorkflowRunsUnfinished" not in metrics
        started = [r for r in caplog.records if r.getMessage() == "workflow started"]
        status = "SUCCEEDED" if "Done" in definition["States"] else "FAILED"
        assert [getattr(r, "status", None) for r in started] == [status]


def test_an_express_batch_delivered_again_runs_again(
    express_aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Express does not deduplicate names: a batch SQS delivers again (its first run
    timed out, say) runs again under the same name, and the record's conditional write
    keeps the images recorded once."""
    _, _, app = start_function(monkeypatch, region=REGION, workflow_type="EXPRESS")

    assert app.lambda_handler(event("start_workflow"), context(EXPRESS_TIMEOUT_S)) == {
        "batchItemFailures": []
    }
    assert app.lambda_handler(event("start_workflow"), context(EXPRESS_TIMEOUT_S)) == {
        "batchItemFailures": []
    }

    assert _metrics(capsys.readouterr().out).get("WorkflowsStarted") == 2


def test_an_express_start_function_facing_a_standard_machine_sends_the_batch_back(
    express_aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """WORKFLOW_TYPE must name the machine's type: StartSyncExecution refuses a Standard
    one, and the messages stay on the queue with the refusal in the log."""
    _, _, app = start_function(monkeypatch, region=REGION)
    monkeypatch.setenv("WORKFLOW_TYPE", "EXPRESS")
    app = load_handler("start_workflow")
    (message,) = event("start_workflow")["Records"]

    response = app.lambda_handler(event("start_workflow"), context(EXPRESS_TIMEOUT_S))

    assert response == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    assert any(
        "StateMachineTypeNotSupported" in str(getattr(r, "error", "")) for r in caplog.records
    )


def test_an_express_batch_is_sent_back_unstarted_when_too_little_time_is_left(
    express_aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A run may take Express's 300 s: with less of the function's time left the batch is
    not started (it would be cut off mid-run), and goes back to the queue."""
    sfn, arn, app = start_function(monkeypatch, region=REGION, workflow_type="EXPRESS")
    (message,) = event("start_workflow")["Records"]

    response = app.lambda_handler(event("start_workflow"), context(EXPRESS_TIMEOUT_S - 30))

    assert response == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    errors = [str(getattr(r, "error", "")) for r in caplog.records]
    needed = f"a run may take {RUN_TIME_NEEDED_SECONDS} s"
    assert any(e.startswith("NotEnoughTime: ") and needed in e for e in errors)
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []


def test_messages_sent_back_come_back_after_their_retry_delay_not_the_visibility_timeout(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under Express the queue's visibility timeout covers a whole run (about 34 minutes);
    a message the function sends back is hidden only for its retry delay, longer the more
    often it was received, so five failing receives reach the dead-letter queue in minutes.
    The messages are real ones from the queue (moto takes their receipt handles)."""
    _, _, app = start_function(monkeypatch, region=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    url = os.environ["INGEST_QUEUE_URL"]
    (template,) = event("start_workflow")["Records"]
    for body in ("not json", "{}", template["body"]):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])[
        "Messages"
    ]
    records = [
        dict(
            template,
            messageId=m["MessageId"],
            receiptHandle=m["ReceiptHandle"],
            body=m["Body"],
            attributes=dict(template["attributes"], ApproximateReceiveCount=str(n)),
        )
        for n, m in zip((1, 4, 1), received, strict=True)
    ]
    client = app.sqs_client()
    with Stubber(client) as stubber:
        stubber.add_response(
            "change_message_visibility_batch",
            {"Successful": [{"Id": "0"}, {"Id": "1"}], "Failed": []},
            {
                "QueueUrl": url,
                "Entries": [
                    {
                        "Id": "0",
                        "ReceiptHandle": records[0]["receiptHandle"],
                        "VisibilityTimeout": 30,
                    },
                    {
                        "Id": "1",
                        "ReceiptHandle": records[1]["receiptHandle"],
                        "VisibilityTimeout": 240,
                    },
                ],
            },
        )
        response = app.lambda_handler({"Records": records}, context())
        stubber.assert_no_pending_responses()
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        r["messageId"] for r in records[:2]
    )
    # Through moto itself: the receipt handles are taken, nothing is left unchanged.
    caplog.clear()
    assert app.lambda_handler({"Records": records}, context())["batchItemFailures"]
    assert not [r for r in caplog.records if "could not shorten" in r.getMessage()]


def test_a_message_whose_wait_sqs_will_not_shorten_is_named_and_still_sent_back(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stale receipt handle (the message was received again elsewhere) is refused: the
    message still goes back, after the visibility timeout, and the log names it."""
    _, _, app = start_function(monkeypatch, region=REGION)
    (template,) = event("start_workflow")["Records"]
    bad = dict(template, messageId="bad-1", body="not json")

    response = app.lambda_handler({"Records": [bad]}, context())

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    (warning,) = [r for r in caplog.records if "could not shorten" in r.getMessage()]
    assert getattr(warning, "message_ids", None) == ["bad-1"]


@pytest.mark.parametrize(
    ("error", "may_be_running"),
    [
        (ReadTimeoutError(endpoint_url="https://sync-states.us-east-1.amazonaws.com/"), True),
        (ConnectionClosedError(endpoint_url="https://sync-states.us-east-1.amazonaws.com/"), True),
        (
            EndpointConnectionError(endpoint_url="https://sync-states.us-east-1.amazonaws.com/"),
            False,
        ),
    ],
    ids=["read-timeout", "connection-closed", "never-connected"],
)
def test_a_batch_whose_run_may_still_be_going_on_comes_back_only_after_the_visibility_timeout(
    express_aws: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    may_be_running: bool,
) -> None:
    """A waited call that failed after it was sent may have started a run that goes on for
    up to 5 minutes: its messages keep the queue's visibility timeout, so no second run
    starts beside it 30 s later. One that never reached Step Functions comes back soon."""
    _, _, app = start_function(monkeypatch, region=REGION, workflow_type="EXPRESS")

    def refuse(**_: Any) -> None:
        raise error

    monkeypatch.setattr(app.sfn_client(), "start_sync_execution", refuse)
    sqs = boto3.client("sqs", region_name=REGION)
    url = os.environ["INGEST_QUEUE_URL"]
    (template,) = event("start_workflow")["Records"]
    sqs.send_message(QueueUrl=url, MessageBody=template["body"])
    (received,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    record = dict(
        template, messageId=received["MessageId"], receiptHandle=received["ReceiptHandle"]
    )
    expected = (
        []
        if may_be_running
        else [{"Id": "0", "ReceiptHandle": received["ReceiptHandle"], "VisibilityTimeout": 30}]
    )
    with Stubber(app.sqs_client()) as stubber:
        if expected:
            stubber.add_response(
                "change_message_visibility_batch",
                {"Successful": [{"Id": "0"}], "Failed": []},
                {"QueueUrl": url, "Entries": expected},
            )
        response = app.lambda_handler({"Records": [record]}, context(EXPRESS_TIMEOUT_S))
        stubber.assert_no_pending_responses()

    assert response == {"batchItemFailures": [{"itemIdentifier": received["MessageId"]}]}
    # No send-back call was made where none was stubbed (it would have been refused).
    assert not [r for r in caplog.records if "could not shorten" in r.getMessage()]


def test_an_unknown_workflow_type_fails_the_cold_start_by_name(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:c")
    monkeypatch.setenv("IMAGE_BUCKET", SAMPLE_BUCKET)
    monkeypatch.setenv("INCOMING_PREFIX", "incoming/")
    monkeypatch.setenv("WORKFLOW_TYPE", "express")
    with pytest.raises(SettingsError, match="WORKFLOW_TYPE='express' is invalid: must be one of"):
        load_handler("start_workflow")


def test_serialize_image_event_normalises_the_uploaded_version(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in function_environment("SerializeImageFunction").items():
        monkeypatch.setenv(name, value)
    state = event("serialize_image")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=state["object"]["bucket"])
    s3.put_bucket_versioning(
        Bucket=state["object"]["bucket"], VersioningConfiguration={"Status": "Enabled"}
    )
    image = base64.b64decode(event("classify_image")["image_b64"])
    version = s3.put_object(
        Bucket=state["object"]["bucket"], Key=state["object"]["key"], Body=image
    )
    # A later overwrite must not change what this version's execution reads.
    s3.put_object(Bucket=state["object"]["bucket"], Key=state["object"]["key"], Body=b"overwritten")
    state["object"]["version"] = version["VersionId"]
    app = load_handler("serialize_image")

    result = app.lambda_handler(state, context())

    assert result["content_type"] == "image/png"
    assert result["source"] == {
        "format": "PNG",
        "mode": "RGB",
        "width": 32,
        "height": 32,
        "bytes": len(image),
        "sha256": __import__("hashlib").sha256(image).hexdigest(),
    }
    assert len(result["image_b64"]) < 8_000

    # Bad input is data, not an error: the state machine records it as REJECTED.
    notes = s3.put_object(
        Bucket=state["object"]["bucket"], Key="incoming/notes", Body=b"plain text"
    )
    # No version id: the read is pinned to the event's ETag (IfMatch), so name the real one.
    state["object"].update(
        key="incoming/notes", version="null", size=10, etag=notes["ETag"].strip('"')
    )
    rejected = app.lambda_handler(state, context())
    assert rejected["rejection"]["error_code"] == "NotAnImage"
    assert set(rejected) == {"rejection", "duration_ms"}


def test_classify_image_event_returns_the_models_probabilities(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch, model_server_url: str
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", PARAMS["EndpointName"])
    monkeypatch.setenv("LABELS", PARAMS["ModelLabels"])
    monkeypatch.setenv("ENDPOINT_TIMEOUT_SECONDS", PARAMS["EndpointTimeoutSeconds"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", model_server_url)
    app = load_handler("classify_image")
    payload = event("classify_image")

    result = app.lambda_handler(payload, context())

    expected = OnnxClassifier(SHIPPED_MODEL_DIR).predict_bytes(
        base64.b64decode(payload["image_b64"])
    )
    assert list(result["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
    assert result["label"] == ("bicycle", "motorcycle")[expected.index(max(expected))]
    assert result["probabilities_attribute"]["bicycle"]["N"] == repr(
        result["probabilities"]["bicycle"]
    )
    assert result["variant"] == "AllTraffic"


def test_a_serialize_failure_never_names_the_image_of_the_call_before(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm serialize invocation that fails before it reads its event's object logged the
    record_id the previous invocation appended."""
    import io

    for name, value in function_environment("SerializeImageFunction").items():
        monkeypatch.setenv(name, value)
    state = event("serialize_image")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=state["object"]["bucket"])
    put = s3.put_object(Bucket=state["object"]["bucket"], Key="incoming/notes", Body=b"text")
    state["object"].update(key="incoming/notes", version="null", size=4, etag=put["ETag"][1:-1])
    app = load_handler("serialize_image")
    written = io.StringIO()  # Powertools' one handler per service, whichever test made it
    monkeypatch.setattr(app.logger.registered_handler, "stream", written)
    assert "rejection" in app.lambda_handler(state, context())
    with pytest.raises(EventError):
        app.lambda_handler({"object": {"bucket": state["object"]["bucket"]}}, context())
    (failure,) = [
        json.loads(line)
        for line in written.getvalue().splitlines()
        if line.startswith("{") and '"invocation failed"' in line
    ]
    assert "record_id" not in failure


def test_an_error_a_catch_reads_has_a_bounded_message_and_is_logged_whole(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DescribeFailure parses the Lambda error payload of the workflow's own errors. A
    message quoting a value of the input as it came (a hand-started execution's object
    size of 100,000 digits) made a payload over the 32,768 characters at which Step
    Functions cuts a Cause, and parsing a cut one is States.Runtime: no record at all."""
    import io

    from scones_core.errors import MAX_FAILURE_MESSAGE

    for name, value in function_environment("SerializeImageFunction").items():
        monkeypatch.setenv(name, value)
    huge = "9" * 100_000
    app = load_handler("serialize_image")
    written = io.StringIO()
    monkeypatch.setattr(app.logger.registered_handler, "stream", written)
    with pytest.raises(EventError) as raised:
        app.lambda_handler(
            {"object": event("serialize_image")["object"] | {"size": huge}}, context()
        )
    message = str(raised.value)
    assert len(message) == MAX_FAILURE_MESSAGE and message.endswith(" [...]")
    assert message.startswith("object reference's size is '999")
    (failure,) = [
        json.loads(line)
        for line in written.getvalue().splitlines()
        if line.startswith("{") and '"invocation failed"' in line
    ]
    assert huge in failure["exception"]  # the whole message stays in the log group


TRACED_SERIALIZE = """
import json, sys
import boto3
from moto import mock_aws
from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter

sent = []
UDPEmitter.send_entity = lambda self, entity: sent.append(entity.serialize())
with mock_aws():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    body = open(sys.argv[1], "rb").read()
    put = s3.put_object(Bucket="uploads", Key="incoming/x.png", Body=body)
    sys.path.insert(0, sys.argv[2])
    import app
    assert not getattr(app.tracer, "disabled", True), "tracing is off"
    ref = {"bucket": "uploads", "key": "incoming/x.png", "version": "null",
           "etag": put["ETag"].strip('"'), "size": len(body)}
    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "f", 512, "r"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    result = app.lambda_handler({"object": ref}, Context())
print(json.dumps({"image": "image_b64" in result, "sent": sent}))
"""


def test_a_traced_serialize_keeps_the_image_out_of_x_ray(tmp_path: Any) -> None:
    """With TracingMode=Active, Powertools records a handler's response as trace metadata
    unless told not to: the serialize step's response is the whole image, base64. Run in
    a process of its own (an active Tracer patches botocore for the whole process)."""
    import os
    import subprocess
    import sys

    from scones.template_params import PROJECT_ROOT

    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))},
        **function_environment("SerializeImageFunction"),
        "POWERTOOLS_TRACE_DISABLED": "false",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
        "AWS_LAMBDA_FUNCTION_NAME": "serialize",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "_X_AMZN_TRACE_ID": (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        ),
        "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    image = next((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))
    done = subprocess.run(
        [sys.executable, "-c", TRACED_SERIALIZE, str(image), str(FUNCTIONS / "serialize_image")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["image"] and shown["sent"], "the handler ran traced and answered the image"
    assert not [doc for doc in shown["sent"] if "image_b64" in doc]


def test_a_classify_failure_names_its_image_and_a_warm_call_forgets_it(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state machine passes the record id: the one failure line names the image (it
    named nothing), and the next invocation does not inherit it."""
    import io

    monkeypatch.setenv("ENDPOINT_NAME", PARAMS["EndpointName"])
    monkeypatch.setenv("LABELS", PARAMS["ModelLabels"])
    monkeypatch.setenv("ENDPOINT_TIMEOUT_SECONDS", PARAMS["EndpointTimeoutSeconds"])
    app = load_handler("classify_image")
    # Powertools keeps one handler per service, made by the first Logger() of the process
    # with the stdout of that moment: read what it writes, whichever test made it.
    written = io.StringIO()
    monkeypatch.setattr(app.logger.registered_handler, "stream", written)
    record_id = "scones-images/incoming/a.png#3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    with pytest.raises(EventError):
        app.lambda_handler({"image_b64": "not base64!", "record_id": record_id}, context())
    with pytest.raises(EventError):
        app.lambda_handler({"image_b64": "not base64!"}, context())
    failures = [
        json.loads(line)
        for line in written.getvalue().splitlines()
        if line.startswith("{") and '"invocation failed"' in line
    ]
    assert [line.get("record_id") for line in failures] == [record_id, None]


@pytest.mark.parametrize(
    ("handler", "variable"),
    [
        ("start_workflow", "STATE_MACHINE_ARN"),
        ("serialize_image", "MAX_IMAGE_BYTES"),
        ("classify_image", "ENDPOINT_NAME"),
    ],
)
def test_a_missing_setting_fails_the_cold_start_by_name(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch, handler: str, variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SettingsError, match=variable):
        load_handler(handler)


@pytest.mark.parametrize("labels", ["bicycle", "bicycle,bicycle", "bicycle,,motorcycle"])
def test_the_classify_step_refuses_labels_the_model_cannot_have(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch, labels: str
) -> None:
    """The same rule as the monitor's and retraining's: two or more, each named once."""
    monkeypatch.setenv("LABELS", labels)
    with pytest.raises(SettingsError, match=f"LABELS={labels!r} is invalid"):
        load_handler("classify_image")


def test_event_files_are_valid_json_for_every_function() -> None:
    functions = {p.name for p in (EVENTS.parent / "functions").iterdir() if p.is_dir()}
    events = {p.stem for p in EVENTS.glob("*.json")}
    assert functions <= events, f"functions without an event file: {functions - events}"


def test_serialized_image_matches_the_limits_the_template_sets() -> None:
    limits = template_limits()
    assert limits.model_input_size == (32, 32)
    assert "PNG" in limits.allowed_formats


# ---- one upload, whichever delivery carried it ---------------------------------

DELIVERIES = ("start_workflow", "start_workflow_sns", "start_workflow_eventbridge")


def s3_event_time() -> str:
    """The upload's ``eventTime`` in S3's own notification (events/start_workflow.json)."""
    (message,) = event("start_workflow")["Records"]
    return str(json.loads(message["body"])["Records"][0]["eventTime"])


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_an_upload_starts_with_the_event_time_s3_wrote_whichever_delivery_carried_it(
    aws: None, monkeypatch: pytest.MonkeyPatch, delivery: str
) -> None:
    """EventBridge writes an event's time without a fraction (``12:00:00Z``), S3's
    notification with milliseconds (``12:00:00.000Z``), as the backfill writes it too. The
    record's ``event_time`` is compared and sorted as text, so ``12:00:00Z`` sorted after
    every later millisecond of its second; and the same upload delivered both ways was two
    different execution inputs under one name."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)

    assert app.lambda_handler(event(delivery), context()) == {"batchItemFailures": []}

    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    document = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert document["event_time"] == s3_event_time() == "2026-11-25T12:00:00.000Z"


def test_every_delivery_of_one_upload_names_the_same_pending_image() -> None:
    images = []
    for delivery in DELIVERIES:
        (message,) = event(delivery)["Records"]
        images += notification_images(json.loads(message["body"]))
    assert len(images) == 3 and images[0] == images[1] == images[2]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2026-11-25T12:00:00.123Z", "2026-11-25T12:00:00.123Z"),
        ("2026-11-25T12:00:00Z", "2026-11-25T12:00:00.000Z"),
        ("2026-11-25T13:00:00+01:00", "2026-11-25T12:00:00.000Z"),
        ("yesterday", ""),
        ("", ""),
        (None, ""),
        (1796026500, ""),
        ({"time": "2026-11-25T12:00:00Z"}, ""),
    ],
)
def test_an_event_time_is_written_as_s3_writes_it_or_not_at_all(value: Any, text: str) -> None:
    assert event_time_text(value) == text


def test_an_empty_sqs_batch_starts_nothing_and_fails_nothing(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda never polls an empty batch, but a hand-made test event can be one; it used to
    fail the invocation with Powertools' "Unexpected batch event type ... Possible values
    are: SQS, ...", which names the one type the event is."""
    sfn, arn, app = start_function(monkeypatch, region=REGION)

    assert app.lambda_handler({"Records": []}, context()) == {"batchItemFailures": []}

    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []
