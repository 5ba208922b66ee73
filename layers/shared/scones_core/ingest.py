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

from scones_core.objects import ObjectRef, has_accepted_suffix
from scones_core.settings import StartSettings


@dataclass(frozen=True)
class StartResult:
    execution_name: str
    # False when an execution with this name but another input already existed.
    # A Standard workflow answers an identical repeat (same name, same input)
    # with the original execution, so that also counts as started.
    started: bool


def workflow_input(ref: ObjectRef, settings: StartSettings, event_time: str) -> dict[str, Any]:
    """The execution input. Objects with other suffixes go through the workflow too,
    straight to a REJECTED record, so no upload ever ends without one."""
    document: dict[str, Any] = {"object": ref.to_json(), "event_time": event_time}
    if not has_accepted_suffix(ref.key, settings.image_suffixes):
        document["rejection"] = {
            "error_code": "UnsupportedFileType",
            "reason": (
                f"{ref.key!r} does not end in an accepted image suffix "
                f"({', '.join(settings.image_suffixes)})"
            ),
        }
    return document


def start_workflow(
    sfn: Any, ref: ObjectRef, settings: StartSettings, event_time: str = ""
) -> StartResult:
    name = ref.execution_name
    try:
        sfn.start_execution(
            stateMachineArn=settings.state_machine_arn,
            name=name,
            input=json.dumps(workflow_input(ref, settings, event_time), separators=(",", ":")),
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return StartResult(execution_name=name, started=False)
        raise
    return StartResult(execution_name=name, started=True)
