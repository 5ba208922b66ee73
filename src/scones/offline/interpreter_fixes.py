"""Narrow corrections to moto's Step Functions interpreter, where it differs from AWS.

Each fix names the difference; a test checks that moto still differs, so an
upgrade that fixes moto also removes the fix here.

* ``$$.Execution.StartTime`` is a ``datetime`` in moto, an ISO 8601 string on
  AWS (``2026-11-25T12:00:00.123Z``). Passing it to a service integration,
  as the record states do, fails with "Object of type datetime is not JSON
  serializable".
* ``$$.State.EnteredTime`` is ``datetime.isoformat()`` in moto
  (``2026-12-01T13:15:11.544104+00:00``); AWS writes milliseconds and ``Z``
  (``2026-12-01T13:15:11.544Z``), and no fraction when the milliseconds are zero
  (``2026-12-01T13:15:11Z``), the forms of the records' ``recorded_at``.
* ``StartExecution`` without a ``name`` names the execution ``None`` in moto, so a
  second unnamed start of the same state machine is ``ExecutionAlreadyExists`` (or,
  with the same input, the first execution again); AWS names each one with a UUID.
* A Distributed Map's S3 item reader (``s3:listObjectsV2``) reads one ``ListObjectsV2``
  page in moto, so a backfill of a prefix with more than 1,000 objects left the rest
  unclassified and succeeded; and it reads ``Contents`` unconditionally, so an empty
  prefix failed the execution. AWS lists every page, and an empty prefix as no items.
* ``States.ALL`` catches and retries ``States.Runtime`` (a path that finds nothing) and
  ``States.DataLimitExceeded`` in moto; on AWS it matches neither, and the execution
  fails. Offline a definition that reads a missing path would so have shown a caught
  error where AWS loses the execution.
* An ``aws-sdk:sagemaker:*`` task's error is ``sagemaker.sagemakerException`` in moto (it
  binds only DynamoDB's and Step Functions' service names); AWS names it
  ``SageMaker.SageMakerException``, so offline no SageMaker ``Retry`` of the retraining
  definition ever ran, and a lost create's answer was never retried into a refusal.
* An ``aws-sdk:*`` task's result keeps boto3's ``datetime`` objects in moto (a
  ``DescribeEndpoint``'s ``CreationTime``); AWS hands the state ISO 8601 text
  (``2013-08-23T01:02:15.422Z``). A state that keeps a whole description, as the
  retraining definition's ``CheckDeployment`` does to read an optional ``FailureReason``,
  could not even be described offline ("Object of type datetime is not JSON serializable").
* A Choice rule whose ``Variable`` path finds nothing is simply false in moto, so the
  state takes its ``Default``; on AWS the execution fails with ``States.Runtime`` ("The
  choice state's condition path references an invalid value"), which no Catch takes.
  Only ``IsPresent`` may ask about a missing path (and ``And`` stops at its first false
  rule, in moto as on AWS, so ``And: [IsPresent, ...]`` is the safe form).
* A Map's worker takes its next item by calling itself, one Python frame per item, so a
  worker dies of ``RecursionError`` after about 960 items and its Map never ends: a
  backfill of more than about 4,800 objects (``BackfillMaxConcurrency`` workers, one object
  per batch offline) hung ``RUNNING`` and left the rest unclassified, and so did every
  rerun. The workers here take their items in a loop, as many as there are.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
    ErrorEqualsDecl,
)
from moto.stepfunctions.parser.asl.component.state import state as _state_module
from moto.stepfunctions.parser.asl.component.state.choice.comparison import (
    comparison_operator_type as _operators,
)
from moto.stepfunctions.parser.asl.component.state.choice.comparison.comparison_variable import (
    ComparisonVariable,
)
from moto.stepfunctions.parser.asl.component.state.choice.comparison.variable import (
    NoSuchVariable,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval import (
    resource_eval_s3 as _item_reader_s3,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (  # noqa: E501
    DistributedItemProcessorWorker,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.iteration_worker import (  # noqa: E501
    IterationWorker,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_aws_sdk as _aws_sdk_task,
)
from moto.stepfunctions.parser.asl.utils.json_path import NoSuchJsonPathError
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from scones_core.monitoring.timestamps import format_step_functions

_ORIGINAL_ENVIRONMENT = ExecutionWorker._get_evaluation_environment
# Every state's entry builds its ``$$.State`` through this name (``StateBase._eval_body``).
_ORIGINAL_STATE_DATA = _state_module.StateData
_ORIGINAL_START_EXECUTION = StepFunctionsParserBackend.start_execution
_READER = _item_reader_s3.ResourceEvalS3
_ORIGINAL_ERROR_EQUALS = ErrorEqualsDecl._eval_body
# The errors AWS's States.ALL does not match (Step Functions' "Error names" page).
_NOT_MATCHED_BY_STATES_ALL = frozenset({"States.Runtime", "States.DataLimitExceeded"})
_ORIGINAL_LIST_OBJECTS = _READER.__dict__["_handle_list_objects_v2"]
_AWS_SDK_TASK = _aws_sdk_task.StateTaskServiceAwsSdk
_ORIGINAL_SDK_CALL = _AWS_SDK_TASK._eval_service_task
_ORIGINAL_COMPARISON = ComparisonVariable._eval_body
_ORIGINAL_INLINE_POOL = IterationWorker._eval_pool
_ORIGINAL_DISTRIBUTED_POOL = DistributedItemProcessorWorker._eval_pool
# moto's lower-case service name -> the prefix of AWS's error names for it.
SERVICE_ERROR_NAMES = {"sagemaker": "SageMaker"}


def _aws_time(value: Any) -> Any:
    """``value`` (a datetime or ISO 8601 text) as AWS writes it: UTC, milliseconds (none
    on a whole second), ``Z``."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime.datetime):
        # moto's datetimes are naive UTC or aware.
        return format_step_functions(value if value.tzinfo else value.replace(tzinfo=datetime.UTC))
    return value


def _state_data_with_aws_entered_time(**fields: Any) -> Any:
    if "EnteredTime" in fields:
        fields["EnteredTime"] = _aws_time(fields["EnteredTime"])
    return _ORIGINAL_STATE_DATA(**fields)  # type: ignore[typeddict-item]


def _environment_with_string_start_time(self: ExecutionWorker) -> Any:
    env = _ORIGINAL_ENVIRONMENT(self)
    execution = env.states.context_object.context_object_data["Execution"]
    if "StartTime" in execution:
        execution["StartTime"] = _aws_time(execution["StartTime"])
    return env


def _start_execution_named_like_aws(
    self: StepFunctionsParserBackend,
    state_machine_arn: str,
    name: Any = None,
    *args: Any,
    **kwargs: Any,
) -> Any:
    return _ORIGINAL_START_EXECUTION(
        self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs
    )


def _list_every_page(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
    """The item reader's listing as AWS reads it: every page, and no items for none."""
    s3 = _READER._get_s3_client(
        resource_runtime_part=resource_runtime_part, state_credentials=state_credentials
    )
    parameters = env.stack.pop()
    items: list[Any] = []
    for page in s3.get_paginator("list_objects_v2").paginate(**parameters):
        items.extend(page.get("Contents", []))
    env.stack.append(items)


def _with_aws_times(value: Any) -> Any:
    """``value`` with every ``datetime`` in it as AWS writes one (``_aws_time``)."""
    if isinstance(value, datetime.datetime):
        return _aws_time(value)
    if isinstance(value, dict):
        return {key: _with_aws_times(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_aws_times(item) for item in value]
    return value


def _sdk_call_with_aws_times(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
    _ORIGINAL_SDK_CALL(self, env, *args, **kwargs)
    env.stack.append(_with_aws_times(env.stack.pop()))


def _error_equals_like_aws(self: ErrorEqualsDecl, env: Any) -> None:
    error = env.stack[-1]
    if (
        ErrorEqualsDecl._STATE_ALL_ERROR in self.error_names
        and getattr(error, "error_name", None) in _NOT_MATCHED_BY_STATES_ALL
    ):
        env.stack.pop()
        env.stack.append(False)  # the retrier or catcher does not apply
        return
    _ORIGINAL_ERROR_EQUALS(self, env)


def _choice_on_a_missing_path_fails_like_aws(self: ComparisonVariable, env: Any) -> None:
    if self.comparison_function.operator_type != _operators.ComparisonOperatorType.IsPresent:
        self.variable.eval(env)
        if isinstance(env.stack.pop(), NoSuchVariable):
            # The state turns this into States.Runtime, naming the path and the input.
            path = self.variable.string_sampler.literal_value
            raise NoSuchJsonPathError(path, env.states.get_input())
    _ORIGINAL_COMPARISON(self, env)


def _items_in_a_loop(self: Any, job: Any, worker_frame: Any, *, distributed: bool) -> None:
    """moto's ``_eval_pool`` of an inline (``IterationWorker``) or a distributed
    (``DistributedItemProcessorWorker``) Map worker, each next item taken in a loop instead
    of a call of itself; every step as moto takes it (the distributed worker deletes its
    frames where the inline one closes them, and only the inline one hands its last event
    on to the states that follow)."""

    def release(owner: Any, frame: Any) -> None:
        (owner.delete_frame if distributed else owner.close_frame)(frame)

    while job is not None:
        job_frame = worker_frame.open_inner_frame()
        self._eval_job(env=job_frame, job=job)
        release(worker_frame, job_frame)
        if isinstance(job.job_output, Exception) or self.stopped():
            break
        next_job = self._job_pool.next_job()
        if next_job is None:
            if not distributed:
                worker_frame.event_history_context.source_event_id = (
                    job_frame.event_history_context.last_published_event_id
                )
            break
        self._job_pool.close_job(job)
        job = next_job
    # The frame is released before the job, so the Map sees its owner's environment updated
    # when the job ends (moto's order).
    release(self._env, worker_frame)
    if job is not None:
        self._job_pool.close_job(job)


def _inline_items_in_a_loop(self: IterationWorker, job: Any, worker_frame: Any) -> None:
    _items_in_a_loop(self, job, worker_frame, distributed=False)


def _distributed_items_in_a_loop(
    self: DistributedItemProcessorWorker, job: Any, worker_frame: Any
) -> None:
    _items_in_a_loop(self, job, worker_frame, distributed=True)


def install() -> None:
    ExecutionWorker._get_evaluation_environment = _environment_with_string_start_time  # type: ignore[method-assign]
    _state_module.StateData = _state_data_with_aws_entered_time  # type: ignore[misc,assignment]
    StepFunctionsParserBackend.start_execution = _start_execution_named_like_aws  # type: ignore[method-assign]
    _READER._handle_list_objects_v2 = staticmethod(_list_every_page)  # type: ignore[method-assign]
    ErrorEqualsDecl._eval_body = _error_equals_like_aws  # type: ignore[method-assign]
    _aws_sdk_task._SERVICE_ERROR_NAMES.update(SERVICE_ERROR_NAMES)
    _AWS_SDK_TASK._eval_service_task = _sdk_call_with_aws_times  # type: ignore[method-assign]
    ComparisonVariable._eval_body = _choice_on_a_missing_path_fails_like_aws  # type: ignore[method-assign]
    IterationWorker._eval_pool = _inline_items_in_a_loop  # type: ignore[method-assign]
    DistributedItemProcessorWorker._eval_pool = _distributed_items_in_a_loop  # type: ignore[method-assign]


def uninstall() -> None:
    ExecutionWorker._get_evaluation_environment = _ORIGINAL_ENVIRONMENT  # type: ignore[method-assign]
    _state_module.StateData = _ORIGINAL_STATE_DATA  # type: ignore[misc]
    StepFunctionsParserBackend.start_execution = _ORIGINAL_START_EXECUTION  # type: ignore[method-assign]
    _READER._handle_list_objects_v2 = _ORIGINAL_LIST_OBJECTS  # type: ignore[method-assign]
    ErrorEqualsDecl._eval_body = _ORIGINAL_ERROR_EQUALS  # type: ignore[method-assign]
    for service in SERVICE_ERROR_NAMES:
        _aws_sdk_task._SERVICE_ERROR_NAMES.pop(service, None)
    _AWS_SDK_TASK._eval_service_task = _ORIGINAL_SDK_CALL  # type: ignore[method-assign]
    ComparisonVariable._eval_body = _ORIGINAL_COMPARISON  # type: ignore[method-assign]
    IterationWorker._eval_pool = _ORIGINAL_INLINE_POOL  # type: ignore[method-assign]
    DistributedItemProcessorWorker._eval_pool = _ORIGINAL_DISTRIBUTED_POOL  # type: ignore[method-assign]
