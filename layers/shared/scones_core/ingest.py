"""Start one workflow execution per uploaded object version.

The execution name is derived from the object version, so Step Functions
(Standard) refuses a second execution for a duplicate S3 delivery; the
conditional write at the end of the workflow covers Express workflows, which
do not deduplicate names. A replay (``scones_core.redrive``) goes through the
same code with ``attempt`` N > 0, which names the execution ``<name>-r<N>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from scones_core.errors import EventError
from scones_core.objects import ObjectRef, object_from_s3_record
from scones_core.records import WorkflowInput
from scones_core.settings import StartSettings


@dataclass(frozen=True)
class StartResult:
    execution_name: str
    # False when an execution with this name but another input already existed.
    # A Standard workflow answers an identical repeat (same name, same input)
    # with the original execution, so that also counts as started.
    started: bool


def workflow_input(ref: ObjectRef, event_time: str, attempt: int = 0) -> WorkflowInput:
    """The execution input. Every object goes through the workflow, whatever its
    name: the Serialize step judges it by its content, so none ends without a record."""
    return {"object": ref.to_json(), "event_time": event_time, "attempt": attempt}


def start_workflow(
    sfn: Any, ref: ObjectRef, settings: StartSettings, event_time: str = "", attempt: int = 0
) -> StartResult:
    name = ref.execution_name_for(attempt)
    try:
        sfn.start_execution(
            stateMachineArn=settings.state_machine_arn,
            name=name,
            input=json.dumps(workflow_input(ref, event_time, attempt), separators=(",", ":")),
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return StartResult(execution_name=name, started=False)
        raise
    return StartResult(execution_name=name, started=True)


def is_s3_test_event(body: Any) -> bool:
    """S3 sends ``s3:TestEvent`` once when a notification is configured: nothing to do."""
    return isinstance(body, dict) and body.get("Event") == "s3:TestEvent"


def notification_records(body: Any) -> list[dict[str, Any]]:
    """The ``Records`` of an S3 event notification (an SQS message body, parsed).

    ``EventError`` when the body is not one (``s3:TestEvent`` has no records: ``[]``).
    """
    if is_s3_test_event(body):
        return []
    records = body.get("Records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise EventError("the message is not an S3 event notification")
    return records


@dataclass(frozen=True)
class NotificationStart:
    ref: ObjectRef
    result: StartResult


def start_notification(sfn: Any, body: Any, settings: StartSettings) -> list[NotificationStart]:
    """Start the first execution for every object an S3 event notification names.

    The start function runs this for each message of the ingest queue, and
    ``scones redrive --dead-letters`` for each S3 event that reached the dead-letter queue.
    """
    starts = []
    for record in notification_records(body):
        ref = object_from_s3_record(record)
        event_time = str(record.get("eventTime") or "")
        starts.append(NotificationStart(ref, start_workflow(sfn, ref, settings, event_time)))
    return starts
