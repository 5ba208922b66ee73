"""Start one workflow execution per uploaded object version.

The execution name is derived from the object version, so Step Functions
(Standard) refuses a second execution for a duplicate S3 delivery; the
conditional write at the end of the workflow covers Express workflows, which
do not deduplicate names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from scones_core.objects import ObjectRef
from scones_core.records import WorkflowInput
from scones_core.settings import StartSettings


@dataclass(frozen=True)
class StartResult:
    execution_name: str
    # False when an execution with this name but another input already existed.
    # A Standard workflow answers an identical repeat (same name, same input)
    # with the original execution, so that also counts as started.
    started: bool


def workflow_input(ref: ObjectRef, event_time: str) -> WorkflowInput:
    """The execution input. Every object goes through the workflow, whatever its
    name: the Serialize step judges it by its content, so none ends without a record."""
    return {"object": ref.to_json(), "event_time": event_time}


def start_workflow(
    sfn: Any, ref: ObjectRef, settings: StartSettings, event_time: str = ""
) -> StartResult:
    name = ref.execution_name
    try:
        sfn.start_execution(
            stateMachineArn=settings.state_machine_arn,
            name=name,
            input=json.dumps(workflow_input(ref, event_time), separators=(",", ":")),
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return StartResult(execution_name=name, started=False)
        raise
    return StartResult(execution_name=name, started=True)
