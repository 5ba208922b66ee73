"""Guards on the moto speedups (``interpreter_caches``, ``sqs_fixes``).

Each guard's first half checks that moto still does the costly thing (and still has
the signature that is patched): when it fails, a moto upgrade fixed it upstream or
changed the function, and the speedup must go or change. The second half checks
that the speedup does what it says. Kept apart from the running-stack tests:
``mock_aws`` resets moto's global state when it exits.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import Queue, SQSBackend, sqs_backends
from moto.stepfunctions.parser.api import InvalidDefinition
from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
from moto.stepfunctions.parser.asl.utils import boto_client, json_path
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from scones.offline import interpreter_caches, sqs_fixes
from scones.offline.gaps import package_state_machines  # noqa: F401 (imports the interpreter)
from scones.template_params import PROJECT_ROOT

pytestmark = pytest.mark.xdist_group("offline-stack")

DEFINITION = (PROJECT_ROOT / "statemachine" / "classify_image.asl.json").read_text()


@pytest.fixture
def caches() -> Iterator[None]:
    interpreter_caches.install()
    try:
        yield
    finally:
        interpreter_caches.uninstall()


@pytest.fixture
def sqs_speedups() -> Iterator[None]:
    sqs_fixes.install()
    try:
        yield
    finally:
        sqs_fixes.uninstall()


def _worker(definition: str) -> Any:
    """Just what ``_get_evaluation_entrypoint`` reads of an ``ExecutionWorker``."""
    details = SimpleNamespace(state_machine_details=SimpleNamespace(definition=definition))
    return SimpleNamespace(_evaluation_details=details)


def _substituted_definition() -> str:
    """The real state machine, with its ``${...}`` substitutions filled with any valid value."""
    import re

    def quoted(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("Arn"):
            return f'"arn:aws:lambda:us-east-1:123456789012:function:{name}"'
        return '"1"' if name == "ConfidenceThreshold" else f'"{name}"'

    text = re.sub(r'"\$\{(\w+)\}"', quoted, DEFINITION)
    return re.sub(r"\$\{(\w+)\}", "1", text)


def _components(root: Any) -> list[EvalComponent]:
    found, seen, pending = [], set(), [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, EvalComponent):
            found.append(node)
        if hasattr(node, "__dict__") and type(node).__module__.startswith("moto."):
            pending.extend(vars(node).values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
    return found


# -- the parsed program ----------------------------------------------------------------
def test_moto_still_parses_the_definition_per_execution_and_the_cache_parses_once() -> None:
    """When the first half fails, moto caches parsed programs: drop the program cache."""
    assert list(inspect.signature(ExecutionWorker._get_evaluation_entrypoint).parameters) == [
        "self"
    ]
    definition = _substituted_definition()
    worker = _worker(definition)
    raw_first = ExecutionWorker._get_evaluation_entrypoint(worker)
    raw_second = ExecutionWorker._get_evaluation_entrypoint(worker)
    assert raw_first is not raw_second  # parsed again, with ANTLR, for every execution

    interpreter_caches.install()
    try:
        first = ExecutionWorker._get_evaluation_entrypoint(worker)
        again = ExecutionWorker._get_evaluation_entrypoint(_worker(definition))
        other = ExecutionWorker._get_evaluation_entrypoint(_worker(definition.replace("1", "2")))
    finally:
        interpreter_caches.uninstall()
    assert first is again and other is not first
    # Every component's heap key (its retry counters' key) is set before executions share it.
    components = _components(first)
    assert len(components) > 50
    assert all(c.__dict__.get("_EvalComponent__heap_key") for c in components)
    assert ExecutionWorker._get_evaluation_entrypoint(worker) is not first  # uninstalled


def test_the_parse_that_checks_a_created_definition_is_the_one_its_executions_use() -> None:
    """moto parses a definition to check it at CreateStateMachine, then again at its first
    execution: with the caches, once. What it refuses, it still refuses with its own error."""
    assert list(inspect.signature(StepFunctionsParserBackend._validate_definition).parameters) == [
        "definition"
    ]
    definition = _substituted_definition().replace("1", "3")
    interpreter_caches.install()
    try:
        before = interpreter_caches.PROGRAMS.parses
        StepFunctionsParserBackend._validate_definition(definition=definition)
        assert interpreter_caches.PROGRAMS.parses == before + 1
        program = ExecutionWorker._get_evaluation_entrypoint(_worker(definition))
        assert interpreter_caches.PROGRAMS.parses == before + 1
        with pytest.raises(InvalidDefinition):
            StepFunctionsParserBackend._validate_definition(definition='{"StartAt": 1}')
    finally:
        interpreter_caches.uninstall()
    components = _components(program)
    assert all(c.__dict__.get("_EvalComponent__heap_key") for c in components)
    with pytest.raises(InvalidDefinition):  # uninstalled: moto's own check
        StepFunctionsParserBackend._validate_definition(definition='{"StartAt": 1}')


# -- boto3 clients -----------------------------------------------------------------------
def test_moto_still_builds_a_client_per_task_and_the_cache_reuses_one() -> None:
    """When the first half fails, moto reuses clients: drop the client cache."""
    assert list(inspect.signature(boto_client.boto_client_for).parameters) == [
        "region",
        "service",
        "state_credentials",
    ]
    raw = boto_client.boto_client_for("us-east-1", "lambda")
    assert raw is not boto_client.boto_client_for("us-east-1", "lambda")
    # Every interpreter module that holds its own reference to the function is patched.
    holders = {
        name
        for name, module in list(sys.modules.items())
        if name.startswith("moto.stepfunctions.parser")
        and getattr(module, "boto_client_for", None) is boto_client.boto_client_for
    }
    assert holders == set(interpreter_caches.BOTO_CLIENT_MODULES)

    interpreter_caches.install()
    try:
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
            lambda_eval_utils,
        )

        client = lambda_eval_utils.boto_client_for("us-east-1", "lambda")
        assert client is boto_client.boto_client_for("us-east-1", "lambda", None)
        assert client is not boto_client.boto_client_for("us-west-2", "lambda")
        assert client.meta.endpoint_url == raw.meta.endpoint_url
        assert client.meta.config.retries == raw.meta.config.retries
    finally:
        interpreter_caches.uninstall()
    assert lambda_eval_utils.boto_client_for is interpreter_caches._ORIGINAL_BOTO_CLIENT_FOR


# -- JSONPath ------------------------------------------------------------------------------
def test_moto_still_parses_jsonpath_per_evaluation_and_the_cache_parses_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto no longer calls ``parse`` per ``extract_json``."""
    from jsonpath_ng import parse as plain_parse
    from moto.stepfunctions.parser.asl.component.common.path import result_path

    assert result_path.parse is plain_parse
    calls: list[str] = []
    original = json_path.parse

    def counting(path: str) -> Any:
        calls.append(path)
        return original(path)

    monkeypatch.setattr(json_path, "parse", counting)
    data = {"image": {"rejection": {"error_code": "NotAnImage"}}, "items": [1, 2]}
    expected = json_path.extract_json("$.image.rejection", data)
    json_path.extract_json("$.image.rejection", data)
    assert calls == ["$.image.rejection"] * 2
    monkeypatch.undo()

    interpreter_caches.install()
    try:
        interpreter_caches.cached_ext_parse.cache_clear()
        for _ in range(3):
            assert json_path.extract_json("$.image.rejection", data) == expected
            assert json_path.extract_json("$.items[1]", data) == 2
            assert json_path.extract_json("$.items[*]", data) == [1, 2]
        info = interpreter_caches.cached_ext_parse.cache_info()
        assert (info.misses, info.hits) == (3, 6)
        with pytest.raises(json_path.NoSuchJsonPathError):
            json_path.extract_json("$.missing", data)
        assert result_path.parse is interpreter_caches.cached_parse
    finally:
        interpreter_caches.uninstall()
    assert json_path.parse is original and result_path.parse is plain_parse


# -- SQS -------------------------------------------------------------------------------------
@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="backlog")["QueueUrl"]
        for start in range(0, 50, 10):
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(start, start + 10)],
            )
        yield sqs, url


def _queue_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the walks over a queue's messages that the three approximate counts make."""
    walks: list[int] = []
    for name in sqs_fixes.COUNT_PROPERTIES:
        prop = getattr(Queue, name)

        def counting(queue: Queue, getter: Any = prop.fget) -> int:
            walks.append(1)
            return int(getter(queue))

        monkeypatch.setattr(Queue, name, property(counting))
    return walks


def _send_and_receive(sqs: Any, url: str, walks: list[int]) -> tuple[int, int]:
    walks.clear()
    sqs.send_message(QueueUrl=url, MessageBody="one more")
    sent = len(walks)
    walks.clear()
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert len(received["Messages"]) == 10
    return sent, len(walks)


def test_moto_sqs_still_counts_the_queue_per_send_and_receive_and_the_fix_does_not(
    queue: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first half fails, moto stopped counting the queue: drop sqs_fixes."""
    assert list(inspect.signature(SQSBackend.send_message).parameters)[:3] == [
        "self",
        "queue_name",
        "message_body",
    ]
    assert list(
        inspect.signature(SQSBackend.is_message_valid_based_on_retention_period).parameters
    ) == ["self", "queue_name", "message"]
    sqs, url = queue
    walks = _queue_walks(monkeypatch)
    raw_send, raw_receive = _send_and_receive(sqs, url, walks)
    assert raw_send == 3  # the three counts, for ContentBasedDeduplication
    assert raw_receive >= 10 * 9  # nine per message received (retention period)

    # The fix wraps the counting properties in place: install it over the counters.
    counters = {name: getattr(Queue, name) for name in sqs_fixes.COUNT_PROPERTIES}
    monkeypatch.setattr(sqs_fixes, "_ORIGINAL_COUNTS", counters)
    sqs_fixes.install()
    try:
        fixed_send, fixed_receive = _send_and_receive(sqs, url, walks)
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    finally:
        sqs_fixes.uninstall()
    assert (fixed_send, fixed_receive) == (0, 0)
    # Everyone else still gets the real counts: 52 sent, 20 received (in flight).
    assert attributes["ApproximateNumberOfMessages"] == "32"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "20"


def test_the_retention_check_agrees_with_moto(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    backend = sqs_backends["123456789012"]["us-east-1"]
    [message, *_] = backend.get_queue("backlog")._messages
    sent: int = message.sent_timestamp  # type: ignore[assignment]
    for age_s in (0, 59, 61, 3600):
        old: Any = SimpleNamespace(sent_timestamp=sent - age_s * 1000)
        assert sqs_fixes._retention_check(
            backend, "backlog", old
        ) == sqs_fixes._ORIGINAL_RETENTION_CHECK(backend, "backlog", old), age_s


def test_sqs_fixes_keep_fifo_deduplication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sqs_fixes.install()
    try:
        with mock_aws():
            sqs = boto3.client("sqs", region_name="us-east-1")
            url = sqs.create_queue(
                QueueName="dedup.fifo",
                Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
            )["QueueUrl"]
            for _ in range(3):
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"a": 1}), MessageGroupId="g")
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    finally:
        sqs_fixes.uninstall()
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"


# -- moto server routing -------------------------------------------------------------------
def test_moto_server_still_searches_every_backend_per_request_and_the_cache_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto routes requests without the search: drop dispatch_cache."""
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    from scones.offline import dispatch_cache

    assert list(inspect.signature(DomainDispatcherApplication.get_backend_for_host).parameters) == [
        "self",
        "host",
    ]
    listings: list[int] = []
    original = backends.list_of_moto_modules

    def counting() -> Any:
        listings.append(1)
        return original()

    monkeypatch.setattr(backends, "list_of_moto_modules", counting)
    dispatcher = DomainDispatcherApplication(create_app=lambda service: None)  # type: ignore[arg-type,return-value]
    hosts = ["lambda.us-east-1.amazonaws.com", "s3.amazonaws.com", "dynamodb", "nowhere.example"]
    raw = [dispatcher.get_backend_for_host(host) for host in hosts * 2]
    assert len(listings) == len(hosts) * 2  # the package folder is listed for every request

    listings.clear()
    dispatch_cache.install()
    try:
        cached = [dispatcher.get_backend_for_host(host) for host in hosts * 2]
    finally:
        dispatch_cache.uninstall()
    assert cached == raw and raw[:3] == ["awslambda", "s3", "dynamodb"]
    assert len(listings) == len(hosts) + 1  # once per host, and every time for the unknown one


# -- the execution gate ----------------------------------------------------------------------
def _wait_machine(sfn: Any, name: str) -> str:
    definition = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 1, "End": True}}}
    return str(
        sfn.create_state_machine(
            name=name,
            roleArn="arn:aws:iam::123456789012:role/x",
            definition=json.dumps(definition),
        )["stateMachineArn"]
    )


def test_moto_still_evaluates_every_execution_at_once_and_the_gate_queues_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto's execution start changed: review execution_gate."""
    import time

    from scones.offline import execution_gate

    start_source = inspect.getsource(ExecutionWorker.start)
    assert "Thread(target=self._execution_logic" in start_source
    assert "program.eval(self.env)" in inspect.getsource(ExecutionWorker._execution_logic)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    gate = execution_gate.install(limit=1)
    try:
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            sfn = boto3.client("stepfunctions", region_name="us-east-1")
            arn = _wait_machine(sfn, "gated")
            runs = [
                sfn.start_execution(stateMachineArn=arn, name=f"e{i}")["executionArn"]
                for i in range(3)
            ]
            # Started means RUNNING at once, as on AWS, even while waiting for a slot.
            assert {sfn.describe_execution(executionArn=r)["status"] for r in runs} == {"RUNNING"}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                statuses = {sfn.describe_execution(executionArn=r)["status"] for r in runs}
                if statuses != {"RUNNING"} and "RUNNING" not in statuses:
                    break
                time.sleep(0.1)
    finally:
        execution_gate.uninstall()
    assert statuses == {"SUCCEEDED"}
    assert gate.peak == 1 and gate.waited >= 1 and gate.running == 0
    assert ExecutionWorker._get_evaluation_entrypoint.__name__ == "_get_evaluation_entrypoint"


def test_moto_still_invokes_lambda_tasks_over_http_and_the_direct_client_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, the interpreter or moto's Invoke route changed: review
    ``DirectLambdaClient`` (the records test proves the direct answers equal the route's)."""
    from moto.awslambda import models as lambda_models
    from moto.awslambda import responses as lambda_responses
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    utils_source = inspect.getsource(lambda_eval_utils)
    assert utils_source.count("lambda_client.invoke(**parameters)") == 2
    route = inspect.getsource(lambda_responses.LambdaResponse.invoke)
    assert (
        "self.backend.invoke(\n            function_name, qualifier, self.body, self.headers"
        in route
    )
    assert "sys.getsizeof(payload) > 6000000" in route
    backend_invoke = inspect.getsource(lambda_models.LambdaBackend.invoke)
    assert "fn = self.get_function(function_name, qualifier)" in backend_invoke
    assert "fn.invoke(body, headers, response_headers)" in backend_invoke

    calls: list[dict[str, Any]] = []

    class HttpClient:
        def invoke(self, **parameters: Any) -> dict[str, Any]:
            calls.append(parameters)
            return {"StatusCode": 202}

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    direct = interpreter_caches.DirectLambdaClient(HttpClient(), "us-east-1")
    with mock_aws():
        unknown = {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:nope"}
        assert direct.invoke(**unknown, Payload=b"{}") == {"StatusCode": 202}
        assert direct.invoke(**unknown, InvocationType="Event") == {"StatusCode": 202}
        assert direct.invoke(**unknown, ClientContext="e30=") == {"StatusCode": 202}
    assert len(calls) == 3 and direct.direct_calls == 0


def test_moto_sqs_still_walks_the_queue_twice_per_delete_and_the_fix_deletes_alike(
    queue: tuple[Any, str],
) -> None:
    """When the first half fails, moto's delete changed: review ``sqs_fixes._delete_message``."""
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    source = inspect.getsource(Queue.delete_message)
    assert "message.had_receipt_handle(receipt_handle) for message in self._messages" in source
    assert "for message in self._messages:" in source
    sqs, url = queue
    backend = sqs_backends["123456789012"]["us-east-1"]
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    # A message received twice: its first handle still deletes it (moto keeps old handles).
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=0)
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=again["Messages"][0]["ReceiptHandle"], VisibilityTimeout=0
    )
    twice = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    handles = [m["ReceiptHandle"] for m in received[:5]] + [again["Messages"][0]["ReceiptHandle"]]

    def delete_all(delete: Any) -> tuple[list[str], set[str], int]:
        queue_model = backend.get_queue("backlog")
        saved = (list(queue_model._messages), set(queue_model.pending_messages))
        deleted = set(queue_model.deleted_messages)
        for handle in handles + handles[:2]:  # deleting twice is accepted
            delete(queue_model, handle)
        with pytest.raises(ReceiptHandleIsInvalid):
            delete(queue_model, "not-a-handle")
        result = (
            [m.id for m in queue_model._messages],
            set(queue_model.deleted_messages),
            len(queue_model.pending_messages),
        )
        queue_model._messages, queue_model._pending_messages = saved[0], saved[1]
        queue_model.deleted_messages = deleted
        return result

    assert twice
    assert delete_all(sqs_fixes._ORIGINAL_DELETE) == delete_all(sqs_fixes._delete_message)


def test_moto_sqs_still_reads_the_clock_per_queued_message_and_the_fix_sees_the_same_messages(
    queue: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first half fails, moto's ``Queue.messages`` changed: review
    ``sqs_fixes._visible_messages`` (or drop it, if moto reads the clock once)."""
    import moto.sqs.models

    sqs, url = queue  # 50 messages
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=0)
    assert len(again["Messages"]) == 3  # visible again at once
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    model = sqs_backends["123456789012"]["us-east-1"].get_queue("backlog")
    # One instant for both: what each sees then must be the same.
    clock = [sqs_fixes.unix_time() * 1000.0]
    reads: list[int] = []

    def frozen(dt: Any = None) -> float:
        reads.append(1)
        return clock[0]

    monkeypatch.setattr(moto.sqs.models, "unix_time_millis", frozen)

    def seen(prop: property) -> tuple[list[str], int]:
        reads.clear()
        return [m.id for m in prop.fget(model)], len(reads)  # type: ignore[misc]

    fixed = property(sqs_fixes._visible_messages)
    raw_ids, raw_reads = seen(sqs_fixes._ORIGINAL_MESSAGES)
    assert raw_reads > 51  # at least once per message (twice where it is visible)
    fixed_ids, fixed_reads = seen(fixed)
    assert (fixed_ids, fixed_reads) == (raw_ids, 1)
    assert len(raw_ids) == 50 - 10  # neither the 10 in flight nor the delayed one
    # At the very instants a message becomes visible and stops being delayed, too.
    for instant in (
        model._messages[0].visible_at,
        model._messages[0].visible_at + 1,
        model._messages[-1].delayed_until,
        model._messages[-1].delayed_until + 1,
    ):
        clock[0] = instant
        assert seen(fixed)[0] == seen(sqs_fixes._ORIGINAL_MESSAGES)[0], instant


def test_deleted_receipt_handles_are_forgotten_once_they_have_expired(
    queue: tuple[Any, str], sqs_speedups: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto remembers the handles of every message ever deleted (about 230 bytes each, for
    as long as the stack runs); the fix forgets them one visibility timeout of the queue
    (30 s) after their own expired. Until then a second delete is accepted, as before."""
    import moto.sqs.models
    from botocore.exceptions import ClientError

    # The guard: moto adds to the set (``Queue.__init__``, ``delete_message``) and never
    # takes anything out. When this fails, review ``sqs_fixes._forget_expired``.
    assert inspect.getsource(moto.sqs.models).count("deleted_messages") == 3
    sqs, url = queue
    model = sqs_backends["123456789012"]["us-east-1"].get_queue("backlog")
    now = sqs_fixes.unix_time()
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
    handles = [m["ReceiptHandle"] for m in received["Messages"]]
    for handle in handles[:5]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[0])  # again: accepted
    assert set(handles[:5]) <= model.deleted_messages

    monkeypatch.setattr(sqs_fixes, "unix_time", lambda: now + 89)  # not yet: 60 + 30 s
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[5])
    assert set(handles[:6]) <= model.deleted_messages

    monkeypatch.setattr(sqs_fixes, "unix_time", lambda: now + 100)  # received by now + 10
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[6])
    assert model.deleted_messages & set(handles) == {handles[5], handles[6]}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[5])  # still within its time
    with pytest.raises(ClientError, match="ReceiptHandleIsInvalid"):
        sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[0])  # long expired


# -- moto's CloudFormation template parse ----------------------------------------------------
def test_moto_still_reads_a_json_template_as_yaml_first_and_the_fix_reads_the_same_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the first half fails, moto reads JSON templates as JSON: drop cfn_json_templates."""
    import yaml
    from moto.cloudformation.models import Stack

    from scones.offline import cfn_json_templates
    from scones.template_params import load_template

    template = json.dumps(load_template())  # the project's template, as JSON
    loads: list[str] = []
    original = yaml.load

    def counting(stream: Any, Loader: Any) -> Any:
        loads.append(Loader.__name__)
        return original(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", counting)
    raw = Stack.parse_template(template)
    assert loads == ["Loader"]  # moto parses the JSON text with pure-Python YAML

    loads.clear()
    cfn_json_templates.install()
    try:
        fixed = Stack.parse_template(template)
        tagged = Stack.parse_template("Resources:\n  Q:\n    Type: !Sub 'AWS::SQS::Queue'\n")
    finally:
        cfn_json_templates.uninstall()
    assert fixed == raw and "Resources" in fixed
    assert loads == ["Loader"]  # only for the YAML text, which moto still reads its way
    assert tagged == {"Resources": {"Q": {"Type": {"Fn::Sub": "AWS::SQS::Queue"}}}}
