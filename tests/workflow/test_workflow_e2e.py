"""The classification workflow end to end on the offline stack.

Real template deployed into moto, the real ASL executed by moto's interpreter,
the real handlers in Lambda workers, the shipped ONNX model behind the
SageMaker-compatible endpoint. Each test uploads through S3 and reads DynamoDB.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import confident_image, history_events, uncertain_image, wait_for_execution

from scones.model.artifact import OnnxClassifier
from scones.offline.stack import OfflineStack
from scones.template_params import PROJECT_ROOT

SAMPLES = PROJECT_ROOT / "samples"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-stack")]


def one_record(stack: OfflineStack, name: str, data: bytes, timeout: float = 60) -> dict[str, Any]:
    upload = stack.api().upload_bytes(name, data)
    return stack.api().wait_for_records([upload], timeout=timeout)[upload]


def items_for_key(stack: OfflineStack, key: str) -> list[dict[str, Any]]:
    return [r for r in stack.api().records() if r.get("key") == key]


def test_confident_image_is_accepted_with_the_models_own_probabilities(
    stack: OfflineStack,
    local_predictions: dict[Path, tuple[str, float]],
    threshold: float,
    classifier: OnnxClassifier,
) -> None:
    path = confident_image(local_predictions, threshold)
    label, confidence = local_predictions[path]

    record = one_record(stack, f"accepted/{path.name}", path.read_bytes())

    assert record["status"] == "ACCEPTED"
    assert record["label"] == label == path.parent.name
    assert math.isclose(record["confidence"], confidence, abs_tol=1e-5)
    assert record["threshold"] == threshold
    assert set(record["probabilities"]) == {"bicycle", "motorcycle"}
    assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-4)
    assert record["endpoint_name"] == stack.parameters["EndpointName"]
    assert record["model_version"] == classifier.manifest.version
    assert record["source_format"] == "PNG"
    assert record["serialize_ms"] > 0 and record["inference_ms"] > 0
    assert record["execution_arn"].startswith("arn:aws:states:")
    # As times, not text: AWS leaves the fraction out on a whole second ("...:05Z").
    started, recorded = (datetime.fromisoformat(record[k]) for k in ("started_at", "recorded_at"))
    assert started <= recorded
    assert "error_code" not in record


def test_low_confidence_image_needs_review(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    path = uncertain_image(local_predictions, threshold)
    label, confidence = local_predictions[path]

    record = one_record(stack, f"review/{path.name}", path.read_bytes())

    assert record["status"] == "NEEDS_REVIEW"
    assert record["label"] == label
    assert record["confidence"] < threshold
    assert math.isclose(record["confidence"], confidence, abs_tol=1e-5)


def test_non_image_is_rejected_with_a_reason(stack: OfflineStack) -> None:
    record = one_record(stack, "bad/invoice.png", b"%PDF-1.7 not an image at all")

    assert record["status"] == "REJECTED"
    assert record["error_code"] == "NotARasterImage"
    assert record["reason"] == "The object is a PDF document, not a raster image."
    assert "label" not in record


def test_functions_log_at_the_log_level_parameter_as_lambda_passes_it(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    """With the JSON log format Lambda hands the function its application log level
    (``AWS_LAMBDA_LOG_LEVEL``, INFO unless the config names one), and Powertools' Logger
    obeys it before ``POWERTOOLS_LOG_LEVEL``: the template's LogLevel (WARNING) must reach
    it, or every image would log an INFO line."""
    lam = stack.client("lambda")
    name = stack.function_name("ClassifyImageFunction")
    variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_LOG_LEVEL"] == "WARN"
    assert variables["POWERTOOLS_LOG_LEVEL"] == stack.parameters["LogLevel"] == "WARNING"
    log = stack.work_dir / "logs" / f"{name}.log"
    before = log.stat().st_size if log.exists() else 0
    path = confident_image(local_predictions, threshold)
    record = one_record(stack, "loglevel/confident.png", path.read_bytes())
    assert record["status"] == "ACCEPTED"
    with log.open("rb") as lines:
        lines.seek(before)
        written = [json.loads(line) for line in lines if line.startswith(b"{")]
    assert not [line for line in written if line.get("level") == "INFO"], written


def test_a_png_without_an_image_suffix_is_judged_by_its_content(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]], threshold: float
) -> None:
    path = confident_image(local_predictions, threshold)
    record = one_record(stack, "odd/IMG_0001", path.read_bytes())

    assert record["status"] == "ACCEPTED"
    assert record["label"] == local_predictions[path][0]
    assert record["source_format"] == "PNG"


def test_object_deleted_before_it_is_read_is_rejected(stack: OfflineStack) -> None:
    api = stack.api()
    with stack.delivery_paused():
        image = next((SAMPLES / "bicycle").glob("*.png")).read_bytes()
        upload = api.upload_bytes("gone/deleted.png", image)
        # The bucket is versioned: only deleting the version itself removes the upload
        # (a plain delete adds a delete marker and the version stays readable).
        api.client("s3").delete_object(
            Bucket=upload.bucket, Key=upload.key, VersionId=upload.version_id
        )
    record = api.wait_for_records([upload], timeout=60)[upload]

    assert record["status"] == "REJECTED"
    assert record["error_code"] == "ObjectNotFound"
    assert "deleted before it could be read" in record["reason"]


def test_overwriting_a_key_gives_one_record_per_version(stack: OfflineStack) -> None:
    """Same key, same bytes, twice: two object versions, so two records (not a duplicate)."""
    api = stack.api()
    image = next((SAMPLES / "motorcycle").glob("*.png")).read_bytes()
    first = api.upload_bytes("overwrite/photo.png", image)
    second = api.upload_bytes("overwrite/photo.png", image)
    records = api.wait_for_records([first, second], timeout=60)

    assert first.etag == second.etag
    assert first.version_id and second.version_id and first.version_id != second.version_id
    for upload in (first, second):
        record = records[upload]
        assert record["version_id"] == upload.version_id
        assert record["pk"] == f"{upload.bucket}/{upload.key}#{upload.version_id}"
        assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW")
    items = items_for_key(stack, first.key)
    assert sorted(r["version_id"] for r in items) == sorted([first.version_id, second.version_id])
    assert records[first]["execution_arn"] != records[second]["execution_arn"]


def test_waiting_for_uploads_reads_only_their_records(stack: OfflineStack) -> None:
    """The wait asks for the awaited records by key: it scanned the whole table on every
    poll, so at thousands of records the wait slowed the very stack it waited on."""
    api = stack.api()
    calls: list[str] = []
    api.client("dynamodb").meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.append(model.name)
    )
    image = next((SAMPLES / "bicycle").glob("*.png")).read_bytes()
    uploads = [api.upload_bytes(f"wait/{n}.png", image) for n in range(3)]
    records = api.wait_for_records(uploads, timeout=60)
    assert {record["key"] for record in records.values()} == {u.key for u in uploads}
    assert set(calls) == {"BatchGetItem"}


def test_duplicate_s3_event_gives_exactly_one_record(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    api = stack.api()
    sqs = api.client("sqs")
    queue_url = stack.stack.outputs["IngestQueueUrl"]
    path = next(iter(local_predictions))
    with stack.delivery_paused():
        upload = api.upload_bytes(f"dup/{path.name}", path.read_bytes())
        message = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"][0]
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        # S3 delivers at least once: the same notification arrives twice.
        for _ in range(2):
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
    record = api.wait_for_records([upload], timeout=60)[upload]

    sfn = api.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=api.endpoints.state_machine_arn)["executions"]
    name = record["execution_arn"].rsplit(":", 1)[-1]
    assert [e["name"] for e in executions].count(name) == 1
    assert len(items_for_key(stack, upload.key)) == 1

    # An Express workflow does not deduplicate names: a second run of the same
    # object must still leave one record, via the conditional write.
    execution_input = json.loads(
        sfn.describe_execution(executionArn=record["execution_arn"])["input"]
    )
    second = sfn.start_execution(
        stateMachineArn=api.endpoints.state_machine_arn,
        name=f"{name[:60]}-again",
        input=json.dumps(execution_input),
    )["executionArn"]
    assert wait_for_execution(sfn, second) == "SUCCEEDED"
    events = history_events(sfn, second)
    assert any(
        e["type"] == "SucceedStateEntered"
        and e["stateEnteredEventDetails"]["name"] == "AlreadyRecorded"
        for e in events
    )
    assert items_for_key(stack, upload.key) == [record]


def test_endpoint_throttling_twice_is_retried_and_then_recorded(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    path = next(iter(local_predictions))
    stack.set_faults({"throttle": 2})
    try:
        record = one_record(stack, f"throttled/{path.name}", path.read_bytes())
    finally:
        stack.set_faults(None)

    assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW")
    assert record["label"] == local_predictions[path][0]
    events = history_events(stack.api().client("stepfunctions"), record["execution_arn"])
    failures = [e for e in events if e["type"] == "LambdaFunctionFailed"]
    assert [f["lambdaFunctionFailedEventDetails"]["error"] for f in failures] == [
        "EndpointThrottled",
        "EndpointThrottled",
    ]


def test_endpoint_down_gives_failed_record_and_dead_letter(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    path = next(iter(local_predictions))
    log = stack.work_dir / "logs" / f"{stack.function_name('ClassifyImageFunction')}.log"
    before = log.stat().st_size if log.exists() else 0
    stack.set_faults({"unavailable": -1})
    try:
        record = one_record(stack, f"down/{path.name}", path.read_bytes(), timeout=90)
    finally:
        stack.set_faults(None)

    assert record["status"] == "FAILED"
    assert record["error_code"] == "EndpointUnavailable"
    # Each failed attempt is in the function's own log at ERROR, under its "level" key,
    # which Lambda's level filter (WARN, from LogLevel) reads: the traceback is kept.
    with log.open("rb") as lines:
        lines.seek(before)
        failures = [
            line
            for line in map(json.loads, (raw for raw in lines if raw.startswith(b"{")))
            if line.get("message") == "invocation failed" and line.get("level") == "ERROR"
        ]
    assert failures and {f["error_type"] for f in failures} == {"EndpointUnavailable"}
    assert all("Traceback" in f["exception"] for f in failures)
    assert "ServiceUnavailable" in record["reason"]
    attempts = [
        e
        for e in history_events(stack.api().client("stepfunctions"), record["execution_arn"])
        if e["type"] == "LambdaFunctionFailed"
    ]
    assert len(attempts) == 1 + int(stack.parameters["RetryMaxAttempts"])
    # The letter is sent after the record is written: the execution's end says it was.
    sfn = stack.api().client("stepfunctions")
    assert wait_for_execution(sfn, record["execution_arn"]) == "FAILED"
    letters = [json.loads(m["Body"]) for m in stack.api().dead_letters()]
    mine = [m for m in letters if m.get("object", {}).get("key") == record["key"]]
    assert len(mine) == 1
    assert mine[0]["kind"] == "workflow_failed"
    assert mine[0]["failure"]["error_code"] == "EndpointUnavailable"
    # The record's reason is the error's own sentence, never the raw Lambda Cause.
    assert record["reason"] == mine[0]["failure"]["cause"]["errorMessage"]
    assert "Traceback" not in record["reason"] and "stackTrace" not in record["reason"]
    assert not record["reason"].lstrip().startswith("{")
    assert mine[0]["execution_arn"] == record["execution_arn"]


def test_a_model_error_is_not_retried(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    path = next(iter(local_predictions))
    stack.set_faults({"model_error": 1})
    try:
        record = one_record(stack, f"model-error/{path.name}", path.read_bytes())
    finally:
        stack.set_faults(None)

    assert record["status"] == "FAILED"
    assert record["error_code"] == "EndpointRejectedRequest"
    # The reason points where the container logged, as a ModelError on AWS does.
    assert "; its log: arn:aws:logs:" in record["reason"]
    assert ":log-group:/aws/sagemaker/Endpoints/" in record["reason"]
    failures = [
        e
        for e in history_events(stack.api().client("stepfunctions"), record["execution_arn"])
        if e["type"] == "LambdaFunctionFailed"
    ]
    assert len(failures) == 1


def test_a_message_that_is_not_an_s3_event_reaches_the_dead_letter_queue(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    """Partial batch failure: the good message is processed, the bad one retried to the DLQ."""
    api = stack.api()
    sqs = api.client("sqs")
    queue_url = stack.stack.outputs["IngestQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "1"})
    path = next(iter(local_predictions))
    try:
        with stack.delivery_paused():
            sqs.send_message(QueueUrl=queue_url, MessageBody='{"hello": "not an S3 event"}')
            upload = api.upload_bytes(f"batch/{path.name}", path.read_bytes())
        record = api.wait_for_records([upload], timeout=60)[upload]
        assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW")
        bodies: list[str] = []
        for _ in range(60):
            bodies = [m["Body"] for m in api.dead_letters()]
            if '{"hello": "not an S3 event"}' in bodies:
                break
            time.sleep(0.5)
        assert '{"hello": "not an S3 event"}' in bodies
    finally:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "180"})


def test_one_execution_classifies_a_whole_sqs_batch(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    """The start function starts one execution per SQS batch; each image gets its record."""
    api = stack.api()
    paths = list(local_predictions)[:3]
    with stack.delivery_paused():
        uploads = [api.upload_bytes(f"batch-of-3/{p.name}", p.read_bytes()) for p in paths]
    records = api.wait_for_records(uploads, timeout=90)

    arns = {records[u]["execution_arn"] for u in uploads}
    assert len(arns) == 1, "the three uploads of one SQS batch share one execution"
    (arn,) = arns
    sfn = api.client("stepfunctions")
    assert wait_for_execution(sfn, arn) == "SUCCEEDED"
    document = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    assert sorted(item["object"]["key"] for item in document["objects"]) == sorted(
        u.key for u in uploads
    )
    for upload, path in zip(uploads, paths, strict=True):
        assert records[upload]["label"] == local_predictions[path][0]
        assert len(items_for_key(stack, upload.key)) == 1
    output = json.loads(sfn.describe_execution(executionArn=arn)["output"])
    assert output["outcome"] == {"images": 3, "any_failed": False, "any_unrecorded": False}


def test_one_failed_image_does_not_stop_the_rest_of_its_batch(
    stack: OfflineStack, local_predictions: dict[Path, tuple[str, float]]
) -> None:
    """Inside the Map an image's failure is data: the others still get their records,
    and only then does the execution fail (for the ExecutionsFailed alarm)."""
    api = stack.api()
    paths = list(local_predictions)[:3]
    with stack.delivery_paused():
        uploads = [api.upload_bytes(f"batch-fault/{p.name}", p.read_bytes()) for p in paths]
        stack.set_faults({"model_error": 1})  # the batch's first endpoint call fails
    try:
        records = api.wait_for_records(uploads, timeout=90)
    finally:
        stack.set_faults(None)

    statuses = sorted(records[u]["status"] for u in uploads)
    assert statuses.count("FAILED") == 1
    assert all(s in ("ACCEPTED", "NEEDS_REVIEW") for s in statuses if s != "FAILED")
    (arn,) = {records[u]["execution_arn"] for u in uploads}
    sfn = api.client("stepfunctions")
    assert wait_for_execution(sfn, arn) == "FAILED"
    described = sfn.describe_execution(executionArn=arn)
    assert described.get("error") == "ClassificationFailed"
    (failed,) = [records[u] for u in uploads if records[u]["status"] == "FAILED"]
    letters = [json.loads(m["Body"]) for m in api.dead_letters()]
    assert [m["object"]["record_id"] for m in letters if m.get("kind") == "workflow_failed"].count(
        failed["pk"]
    ) == 1
