"""Start the classification workflow for a batch of S3 event notifications from SQS.

Powertools' batch processor reads each message (one that is not an S3 notification is
reported as failed); every object the good ones name goes into one execution, whose Map
classifies them side by side (``scones_core.ingest.start_batches``; more than one
execution only if the keys are so long that one input would pass
``MAX_BATCH_INPUT_BYTES``). If a start fails, every message with an image in it is
reported failed. Only reported messages are retried, and after the queue's
maxReceiveCount they move to the dead-letter queue.

Under Express the function waits for each execution (``StartSyncExecution``): the
mapping's MaximumConcurrency bounds the images in flight, and an execution that ended
before every image was recorded (timed out, or failed other than ClassificationFailed)
reports its messages failed too.

Every message reported failed is hidden for a short retry delay
(``ingest.delay_redeliveries``), not the queue's visibility timeout, which under Express
covers a whole run: a message that keeps failing reaches the dead-letter queue in minutes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import (
    PartialItemFailureResponse,
    PartialItemFailures,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from scones_core import function_logs, tracing
from scones_core.errors import EventError
from scones_core.failure_log import logs_failures
from scones_core.ingest import (
    SEND_BACK_CONFIG,
    PendingImage,
    check_sqs_batch,
    delay_redeliveries,
    ignored_events,
    is_s3_test_event,
    notification_images,
    sent_back,
    start_batches,
    start_client_config,
    uploads_in_scope,
)
from scones_core.json_text import NotJSON, load_json
from scones_core.metric_logs import kept_by_log_level
from scones_core.notifications import s3_notification
from scones_core.settings import StartSettings

logger = function_logs.logger()  # Powertools' Logger; the SDK's loggers at WARNING
tracer = tracing.tracer()  # Powertools' Tracer only with TracingMode=Active
metrics = Metrics()
# A batch of nothing but bad messages is reported message by message like any other,
# not raised: each is logged with why, and only the bad messages are delivered again.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
settings = StartSettings.from_env()


@cache
def sfn_client() -> Any:
    return boto3.client("stepfunctions", config=start_client_config(settings))


@cache
def s3_client() -> Any:
    return boto3.client("s3")


@cache
def sqs_client() -> Any:
    return boto3.client("sqs", config=SEND_BACK_CONFIG)


def images_of(record: SQSRecord) -> list[PendingImage]:
    """The objects one message names; ``EventError`` names the message if it is not an
    S3 event notification."""
    try:
        body = load_json(record.body)
    except NotJSON as exc:
        raise EventError(f"SQS message {record.message_id} is {exc}") from exc
    if is_s3_test_event(body):
        # S3 sends this once when the notification is configured.
        # (also inside an SNS envelope, whose own fields name no bucket)
        logger.info("ignoring s3:TestEvent", extra={"bucket": s3_notification(body).get("Bucket")})
        return []
    try:
        images = notification_images(body, record.message_id)
        if ignored := ignored_events(body):
            # Restore, lifecycle, tagging or removal events: no new object version.
            logger.info("ignoring S3 events that announce no upload", extra={"events": ignored})
    except EventError as exc:
        raise EventError(f"SQS message {record.message_id}: {exc}") from exc
    # An EventBridge key with "+" or "%" is asked of S3 (a HEAD each): a refusal other
    # than "not there" fails this message, which SQS delivers again.
    here, elsewhere = uploads_in_scope(s3_client(), images, settings)
    if elsewhere:
        # An SNS topic or EventBridge rule shared with other buckets or prefixes, or one
        # wired to the wrong bucket: a warning and a metric, since at the default LogLevel
        # an INFO line would leave no trace of uploads this stack will never classify.
        logger.warning(
            "ignoring objects outside this stack's bucket and incoming prefix",
            extra={"objects": [f"s3://{i.ref.bucket}/{i.ref.key}" for i in elsewhere]},
        )
        metrics.add_metric(name="ObjectsOutOfScope", unit=MetricUnit.Count, value=len(elsewhere))
    return here


def not_processed(message_id: str, receive_count: Any, exc: Exception) -> None:
    # Reported in batchItemFailures: only this message returns to the queue, and after
    # maxReceiveCount receives it moves to the dead-letter queue.
    logger.warning(
        "message not processed; SQS will deliver it again",
        extra={
            "message_id": message_id,
            "receive_count": receive_count,
            "error": f"{type(exc).__name__}: {exc}",
        },
    )


@tracer.capture_method
def start_images(images: list[PendingImage], context: LambdaContext) -> tuple[set[str], set[str]]:
    """Start the executions that classify ``images`` (one SQS batch); return the ids of
    the messages to report as failed (those with an image whose execution did not start,
    or, waited on, ended before every image was recorded), and of those among them whose
    run may still be going on (``BatchStart.may_be_running``)."""
    failed: set[str] = set()
    running: set[str] = set()
    if not images:
        return failed, running
    # Every object version delivered, duplicates included (each is classified once).
    logger.info("notifications received", extra={"record_ids": [i.ref.record_id for i in images]})

    def seconds_left() -> float:
        return float(context.get_remaining_time_in_millis()) / 1000

    for start in start_batches(sfn_client(), images, settings, seconds_left):
        record_ids = [image.ref.record_id for image in start.images]
        if start.result is None:
            for message_id in dict.fromkeys(image.message_id for image in start.images):
                not_processed(message_id, None, start.error or RuntimeError("not started"))
                failed.add(message_id)
                if start.may_be_running:
                    running.add(message_id)
            metrics.add_metric(name="WorkflowStartsFailed", unit=MetricUnit.Count, value=1)
            continue
        if start.result.left_images_unrecorded:
            # Its images may have no record yet: the messages come back for another run,
            # and the images the first one recorded end AlreadyRecorded.
            for message_id in dict.fromkeys(image.message_id for image in start.images):
                not_processed(message_id, None, RuntimeError(start.result.describe_end()))
                failed.add(message_id)
            metrics.add_metric(name="WorkflowRunsUnfinished", unit=MetricUnit.Count, value=1)
            continue
        logger.info(
            "workflow started" if start.result.started else "duplicate batch: execution exists",
            extra={
                "execution_name": start.result.execution_name,
                "record_ids": record_ids,
                **({"status": start.result.status} if start.result.status else {}),
            },
        )
        metrics.add_metric(
            name="WorkflowsStarted" if start.result.started else "DuplicateEvents",
            unit=MetricUnit.Count,
            value=1,
        )
        if start.result.started:
            # A start refused as a duplicate (another input under the name) started
            # nothing. An identical repeat while the first runs is answered with that
            # execution, as a start: Step Functions does not say which it was.
            metrics.add_metric(name="ImagesStarted", unit=MetricUnit.Count, value=len(record_ids))
    return failed, running


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@logs_failures(logger)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    check_sqs_batch(event)  # anything else fails the invocation with what it was
    kept_by_log_level(metrics)
    if not event["Records"]:
        # Nothing to start or to fail (Powertools would raise on it as "not a batch").
        return {"batchItemFailures": []}
    images: list[PendingImage] = []

    def record_handler(record: SQSRecord) -> None:
        try:
            images.extend(images_of(record))
        except Exception as exc:
            not_processed(record.message_id, record.attributes.approximate_receive_count, exc)
            raise

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    failures = list(response["batchItemFailures"])
    failed, running = start_images(images, context)
    failures += [PartialItemFailures(itemIdentifier=message_id) for message_id in sorted(failed)]
    # A batch whose run may still be going on comes back after the visibility timeout.
    soon = {str(failure["itemIdentifier"]) for failure in failures} - running
    send_back_soon(soon, event["Records"])
    return {"batchItemFailures": failures}


def send_back_soon(message_ids: set[str], records: list[dict[str, Any]]) -> None:
    """Hide the failed messages for their retry delay rather than the visibility timeout."""
    messages = sent_back(records, message_ids)
    if not messages:
        return
    unchanged = delay_redeliveries(
        sqs_client(), settings.ingest_queue_url, messages, settings.retry_seconds
    )
    if unchanged:
        # They still come back, after the queue's visibility timeout.
        logger.warning(
            "could not shorten the wait of messages sent back",
            extra={"message_ids": unchanged},
        )
