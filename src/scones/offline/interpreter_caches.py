"""Caches for moto's Step Functions interpreter: the same results, computed once.

moto 5.2.5's ASL interpreter (``moto.stepfunctions.parser``) repeats three costly
steps that depend only on text that never changes while the stack runs. Measured
with py-spy on the offline stack, they were about 70 % of its CPU:

* ``ExecutionWorker._get_evaluation_entrypoint`` parses the state machine's
  definition with ANTLR for **every execution** (about half of the CPU), after
  ``CreateStateMachine`` parsed it once to check it (0.1 to 0.4 s for each of the
  stack's definitions): the check's parse is kept for the executions too. The parse
  builds a tree of components that keep no execution state (every value an
  evaluation needs lives in its ``Environment``), so one tree per definition is
  shared by all executions of it. The one lazy attribute a component has,
  ``EvalComponent.heap_key`` (the key of its retry counters in the environment's
  heap), is filled in before the tree is shared: two executions filling it at
  the same moment could otherwise see two different keys.
* ``asl.utils.boto_client.boto_client_for`` builds a **new boto3 client for every
  Task state** (loading service models, about 12 %). Its result depends only on
  the region, the service and where moto listens (``state_credentials`` is not
  used by moto), so one client per such key is reused. Low-level boto3 clients are
  thread-safe; creating them from the default session is not, so creation holds
  a lock. Every module of the interpreter imports the function by name, so each
  module's reference is replaced (``BOTO_CLIENT_MODULES``; a test checks the list
  is complete).
* Each Lambda Task then calls ``lambda_client.invoke(**parameters)``: botocore
  serialises the call, sends it over HTTP to the moto server in this same
  process, where werkzeug, Flask and moto's routing parse it again, only to call
  ``LambdaFunction.invoke`` (which the offline runtime answers from a worker).
  The interpreter's Lambda client is therefore wrapped (``DirectLambdaClient``):
  a plain synchronous Invoke of a function that exists calls
  ``LambdaFunction.invoke`` directly, as moto's route does, and answers in the
  shape botocore gives (``StatusCode``, ``FunctionError``, ``Payload``, the
  response-size rule of moto's route). Anything else (another invocation type,
  an unknown function, an unexpected parameter) takes the HTTP route, so its
  errors are shaped by moto as before.
* ``asl.utils.json_path.extract_json`` (and ``ResultPath``) build a **JSONPath
  parser for every evaluation** (about 10 %). A parsed ``jsonpath_ng`` expression
  is immutable, so parses are kept in an LRU cache keyed by the path text.

A test checks that moto still repeats each step (and still has the signatures
patched here), so an upgrade that fixes moto fails loudly and this module can
go; another checks that a batch gives the same records with and without it.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from jsonpath_ng import parse as jsonpath_parse
from jsonpath_ng.ext import parse as jsonpath_ext_parse
from moto.stepfunctions.parser.asl.component.common.path import result_path
from moto.stepfunctions.parser.asl.component.component import Component
from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.utils import boto_client, json_path
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

# Modules of moto's interpreter that call ``boto_client_for`` through their own name.
BOTO_CLIENT_MODULES = (
    "moto.stepfunctions.parser.asl.utils.boto_client",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_dynamodb",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_glue",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sns",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sqs",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported",
)
MAX_PROGRAMS = 64
MAX_JSON_PATHS = 4096

_ORIGINAL_ENTRYPOINT = ExecutionWorker._get_evaluation_entrypoint
_ORIGINAL_VALIDATE = StepFunctionsParserBackend._validate_definition
_ORIGINAL_BOTO_CLIENT_FOR: Callable[..., Any] = boto_client.boto_client_for
_ORIGINAL_EXT_PARSE = json_path.parse
_ORIGINAL_RESULT_PATH_PARSE = result_path.parse


class _ProgramCache:
    """Parsed programs by definition text, least recently used evicted first."""

    def __init__(self, size: int = MAX_PROGRAMS) -> None:
        self._size = size
        self._programs: OrderedDict[str, EvalComponent] = OrderedDict()
        self._lock = threading.Lock()
        self.parses = 0

    def get(self, worker: ExecutionWorker) -> EvalComponent:
        definition = worker._evaluation_details.state_machine_details.definition
        return self._program(definition, lambda: _ORIGINAL_ENTRYPOINT(worker))

    def validate(self, definition: str) -> None:
        """moto's check of a created state machine's definition, whose parse is the one
        its executions then use (a definition that does not parse is refused by moto's
        own check, with its own error)."""
        try:
            self._program(definition, lambda: AmazonStateLanguageParser.parse(definition)[0])
        except Exception:
            _ORIGINAL_VALIDATE(definition=definition)
            raise

    def _program(self, definition: str, parse: Callable[[], EvalComponent]) -> EvalComponent:
        with self._lock:
            program = self._programs.get(definition)
            if program is not None:
                self._programs.move_to_end(definition)
                return program
            program = parse()
            _fill_heap_keys(program)
            self.parses += 1
            self._programs[definition] = program
            while len(self._programs) > self._size:
                self._programs.popitem(last=False)
            return program

    def clear(self) -> None:
        with self._lock:
            self._programs.clear()


def _fill_heap_keys(root: Any) -> None:
    """Give every component of the tree its ``heap_key`` before threads share it."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, EvalComponent):
            _ = node.heap_key
        if isinstance(node, Component):
            pending.extend(vars(node).values())
        elif isinstance(node, list | tuple | set | frozenset):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())


class DirectLambdaClient:
    """The interpreter's Lambda client: Invoke in-process, everything else through boto3."""

    DIRECT_PARAMETERS = frozenset({"FunctionName", "Payload", "Qualifier", "InvocationType"})
    # moto's Invoke route turns a bigger answer into this error (LambdaResponse.invoke).
    MAX_PAYLOAD = 6_000_000
    # Invocations answered in-process, by all instances (tests read it).
    total_direct_calls = 0

    def __init__(self, client: Any, region: str) -> None:
        self._client = client
        self._region = region
        self.direct_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def invoke(self, **parameters: Any) -> dict[str, Any]:
        function = self._function(parameters)
        if function is None:
            return dict(self._client.invoke(**parameters))
        payload = parameters.get("Payload") or b""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        response_headers: dict[str, str] = {}
        body = function.invoke(payload, {}, response_headers)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if sys.getsizeof(body) > self.MAX_PAYLOAD:
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {
                "errorMessage": "Response payload size exceeded maximum allowed payload size "
                "(6291556 bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            body = json.dumps(error).encode("utf-8")
        self.direct_calls += 1
        DirectLambdaClient.total_direct_calls += 1
        response: dict[str, Any] = {
            "ResponseMetadata": {
                "RequestId": str(uuid.uuid4()),
                "HTTPStatusCode": 200,
                "HTTPHeaders": {"content-type": "application/json"},
                "RetryAttempts": 0,
            },
            "StatusCode": 200,
            "Payload": io.BytesIO(body),
        }
        if "x-amz-function-error" in response_headers:
            response["FunctionError"] = response_headers["x-amz-function-error"]
        return response

    def _function(self, parameters: dict[str, Any]) -> Any:
        """The function a plain synchronous Invoke names, or None for the HTTP route."""
        if set(parameters) - self.DIRECT_PARAMETERS:
            return None
        if parameters.get("InvocationType", "RequestResponse") != "RequestResponse":
            return None
        name = parameters.get("FunctionName")
        if not isinstance(name, str):
            return None
        from moto.awslambda.models import lambda_backends
        from moto.iam.models import get_account_id_from

        # The account moto's route would pick for the interpreter's client (access key "ak").
        account = os.environ.get("MOTO_ACCOUNT_ID") or get_account_id_from("ak")
        try:
            return lambda_backends[account][self._region].get_function(
                name, parameters.get("Qualifier")
            )
        except Exception:  # unknown function, bad qualifier: moto's route shapes the error
            return None


class _ClientCache:
    def __init__(self) -> None:
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self.created = 0

    def client_for(self, region: str, service: str, state_credentials: Any = None) -> Any:
        from moto.core.models import botocore_stubber
        from moto.settings import moto_server_port

        # Everything the original's result depends on (it ignores state_credentials).
        key = (region, service, botocore_stubber.enabled, moto_server_port())
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = _ORIGINAL_BOTO_CLIENT_FOR(region, service, state_credentials)
                    if service == "lambda":
                        client = DirectLambdaClient(client, region)
                    self.created += 1
                    self._clients[key] = client
        return client

    def clear(self) -> None:
        with self._lock:
            self._clients.clear()


PROGRAMS = _ProgramCache()
CLIENTS = _ClientCache()
# jsonpath_ng's parser builds a PLY parser per call; the parsed expression is immutable.
cached_ext_parse = functools.lru_cache(maxsize=MAX_JSON_PATHS)(jsonpath_ext_parse)
cached_parse = functools.lru_cache(maxsize=MAX_JSON_PATHS)(jsonpath_parse)


def _cached_entrypoint(self: ExecutionWorker) -> EvalComponent:
    return PROGRAMS.get(self)


def install() -> None:
    ExecutionWorker._get_evaluation_entrypoint = _cached_entrypoint  # type: ignore[method-assign]
    StepFunctionsParserBackend._validate_definition = staticmethod(PROGRAMS.validate)  # type: ignore[method-assign]
    for name in BOTO_CLIENT_MODULES:
        importlib.import_module(name).boto_client_for = CLIENTS.client_for  # type: ignore[attr-defined]
    json_path.parse = cached_ext_parse
    result_path.parse = cached_parse


def uninstall() -> None:
    ExecutionWorker._get_evaluation_entrypoint = _ORIGINAL_ENTRYPOINT  # type: ignore[method-assign]
    StepFunctionsParserBackend._validate_definition = staticmethod(_ORIGINAL_VALIDATE)  # type: ignore[method-assign]
    for name in BOTO_CLIENT_MODULES:
        importlib.import_module(name).boto_client_for = _ORIGINAL_BOTO_CLIENT_FOR  # type: ignore[attr-defined]
    json_path.parse = _ORIGINAL_EXT_PARSE
    result_path.parse = _ORIGINAL_RESULT_PATH_PARSE
    # A stopped stack's moto port and programs mean nothing to the next one.
    PROGRAMS.clear()
    CLIENTS.clear()
