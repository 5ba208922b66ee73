"""The offline stack itself: what the deployment fills in, and the guards on moto's internals."""

from __future__ import annotations

import base64
import dataclasses
import errno
import inspect
import io
import json
import os
import re
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

from scones.asl_check import per_image_scope
from scones.offline import gaps, lambda_runtime
from scones.offline.deploy import (
    DeployError,
    check_resource_types,
    effective_parameters,
)
from scones.offline.packaging import zip_folder
from scones.offline.sqs_poller import Mapping, SqsPoller, failed_message_ids
from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import load_template
from tests.full_disk import disk_full_after_one_file

pytestmark = pytest.mark.xdist_group("offline-stack")


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    with OfflineStack(StackOptions()) as running:
        yield running


def test_deploy_fills_every_gap_moto_leaves(stack: OfflineStack) -> None:
    client = stack.client
    outputs = stack.stack.outputs
    assert client("s3").get_bucket_versioning(Bucket=stack.bucket)["Status"] == "Enabled"
    put = client("s3").put_object(Bucket=stack.bucket, Key="elsewhere/v.txt", Body=b"v")
    assert put["VersionId"] not in ("", "null")
    notification = client("s3").get_bucket_notification_configuration(Bucket=stack.bucket)
    [queue_config] = notification["QueueConfigurations"]
    assert queue_config["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": stack.parameters["IncomingPrefix"]}
    ]
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=outputs["IngestQueueUrl"], AttributeNames=["Policy", "RedrivePolicy"]
    )["Attributes"]
    policy = json.loads(attributes["Policy"])
    assert policy["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5

    backups = client("dynamodb").describe_continuous_backups(TableName=stack.table_name)
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"
    state_table = stack.stack.physical_ids["MonitorStateTable"]
    ttl = client("dynamodb").describe_time_to_live(TableName=state_table)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }

    alarms = {a["AlarmName"] for a in client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert {
        f"scones-{n}"
        for n in ("DeadLetterAlarm", "WorkflowFailedAlarm", "LowConfidenceAlarm", "LabelDriftAlarm")
    } <= alarms
    schedules = client("scheduler").list_schedules()["Schedules"]
    assert len(schedules) == 1
    detail = client("scheduler").get_schedule(Name=schedules[0]["Name"])
    # One run per window, so consecutive windows meet.
    window = stack.parameters["MonitorWindowMinutes"]
    assert detail["ScheduleExpression"] == f"rate({window} minutes)"
    assert detail["Target"]["Arn"].endswith(stack.function_name("MonitorFunction"))
    dead_letters = client("sqs").get_queue_attributes(
        QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert detail["Target"]["DeadLetterConfig"] == {"Arn": dead_letters}

    for function in client("lambda").list_functions()["Functions"]:
        assert [layer["Arn"].split(":")[6] for layer in function["Layers"]] == ["SharedLayer"]
    mappings = client("lambda").list_event_source_mappings()["EventSourceMappings"]
    assert [m["State"] for m in mappings] == ["Disabled"]

    definition = json.loads(
        client("stepfunctions").describe_state_machine(
            stateMachineArn=outputs["ClassificationStateMachineArn"]
        )["definition"]
    )
    choice = per_image_scope(definition)["States"]["CheckConfidence"]["Choices"][0]
    assert choice["NumericGreaterThanEquals"] == float(stack.parameters["ConfidenceThreshold"])
    assert any("conditional Deny" in line for line in stack.stack.filled)


def test_deploy_fills_the_alert_key_and_topic_policies(stack: OfflineStack) -> None:
    client = stack.client
    key_id = stack.stack.physical_id("AlertTopicKey")
    policy = json.loads(client("kms").get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    cloudwatch = [
        s for s in policy["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch[0]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert cloudwatch[0]["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"
    assert client("kms").get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True

    topic_arn = stack.stack.outputs["AlertTopicArn"]
    topic = client("sns").get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    assert topic["KmsMasterKeyId"].endswith(key_id)
    publish, insecure = json.loads(topic["Policy"])["Statement"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Resource"] == insecure["Resource"] == topic_arn
    assert (insecure["Sid"], insecure["Effect"]) == ("DenyInsecureTransport", "Deny")

    dead_letters = client("sqs").get_queue_attributes(
        QueueUrl=stack.stack.outputs["DeadLetterQueueUrl"], AttributeNames=["Policy"]
    )["Attributes"]
    assert json.loads(dead_letters["Policy"])["Statement"][0]["Sid"] == "DenyInsecureTransport"

    classify = client("lambda").get_function_configuration(
        FunctionName=stack.function_name("ClassifyImageFunction")
    )
    assert classify["Timeout"] == 20  # Mappings.EndpointTimeouts for the default 5 s


def test_poller_finds_the_explicit_event_source_mapping(stack: OfflineStack) -> None:
    poller = SqsPoller(stack.client("sqs"), stack.client("lambda"), stack.stack.region)
    [mapping] = poller.mappings()
    ingest = stack.stack.outputs["IngestQueueUrl"].rsplit("/", 1)[-1]
    assert mapping.queue_arn.endswith(f":{ingest}") and mapping.queue_url.endswith(f"/{ingest}")
    assert mapping.function_arn.endswith(stack.function_name("StartWorkflowFunction"))
    assert (mapping.batch_size, mapping.report_item_failures) == (10, True)
    # ScalingConfig.MaximumConcurrency, for the default ImagesInFlight.
    template = load_template()
    images = str(template["Parameters"]["ImagesInFlight"]["Default"])
    assert (
        mapping.maximum_concurrency == template["Mappings"]["IngestConcurrency"][images]["Batches"]
    )


def _poller_on_a_queue_of_its_own(
    stack: OfflineStack, name: str
) -> tuple[SqsPoller, Mapping, list[list[str]]]:
    """A poller of the stack's real SQS on a new queue; the batches it delivers are
    recorded instead of invoking a function."""
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    mapping = Mapping(arn["QueueArn"], url, "not-invoked", 10, report_item_failures=True)
    poller = SqsPoller(sqs, stack.client("lambda"), stack.stack.region, threads_per_mapping=1)
    delivered: list[list[str]] = []
    return poller, mapping, delivered


def test_a_poller_delivers_maximum_concurrency_batches_at_once(
    stack: OfflineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Lambda's poller: a mapping's MaximumConcurrency batches are delivered at once,
    no more (under Express each delivery waits for its batch's execution)."""
    poller, own, _ = _poller_on_a_queue_of_its_own(stack, "poller-concurrency")
    mapping = dataclasses.replace(own, maximum_concurrency=3)
    monkeypatch.setattr(poller, "mappings", lambda: [mapping])
    lock, release = threading.Lock(), threading.Event()
    counts = {"now": 0, "peak": 0, "batches": 0}

    def deliver_and_hold(_mapping: Mapping, batch: list[dict[str, Any]]) -> None:
        with lock:
            counts["now"] += 1
            counts["batches"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
        release.wait(30)
        with lock:
            counts["now"] -= 1

    monkeypatch.setattr(poller, "deliver", deliver_and_hold)
    sqs = stack.client("sqs")
    for start in range(0, 50, 10):
        sqs.send_message_batch(
            QueueUrl=mapping.queue_url,
            Entries=[{"Id": str(n), "MessageBody": f"m{start + n}"} for n in range(10)],
        )
    poller.start()
    try:
        deadline = time.monotonic() + 20
        while counts["peak"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # a fourth thread, if there were one, would have a batch by now
        held = dict(counts)
    finally:
        release.set()
        poller.stop()
    assert (held["peak"], held["batches"]) == (3, 3)


def test_a_poller_stop_hands_a_batch_received_after_it_back_to_the_queue(
    stack: OfflineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop does not wait for a long poll: what that poll receives afterwards is not
    delivered, and is visible on the queue again at once (for the poller started again
    after a pause, ``OfflineStack.delivery_paused``)."""
    poller, mapping, delivered = _poller_on_a_queue_of_its_own(stack, "poller-stop-receive")
    polling = threading.Event()
    receive = poller.receive

    def receive_and_say(mapping: Mapping, wait_seconds: int = 0) -> list[dict[str, Any]]:
        polling.set()
        return receive(mapping, wait_seconds)

    monkeypatch.setattr(poller, "receive", receive_and_say)
    monkeypatch.setattr(poller, "deliver", lambda _m, batch: delivered.append(batch))
    thread = threading.Thread(target=poller._run, args=(mapping,), daemon=True)
    thread.start()
    assert polling.wait(10)
    poller.stop(wait_for_polls=False)  # as the stack's stop
    stack.client("sqs").send_message(QueueUrl=mapping.queue_url, MessageBody="after the stop")
    thread.join(10)
    assert not thread.is_alive()
    assert delivered == []
    counts = stack.client("sqs").get_queue_attributes(
        QueueUrl=mapping.queue_url, AttributeNames=["All"]
    )["Attributes"]
    visible, in_flight = (
        counts["ApproximateNumberOfMessages"],
        counts["ApproximateNumberOfMessagesNotVisible"],
    )
    assert (visible, in_flight) == ("1", "0")


def test_a_poller_stop_waits_for_the_batch_being_delivered(
    stack: OfflineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    poller, mapping, delivered = _poller_on_a_queue_of_its_own(stack, "poller-stop-deliver")
    delivering, finish = threading.Event(), threading.Event()

    def deliver_slowly(_mapping: Mapping, batch: list[dict[str, Any]]) -> None:
        delivering.set()
        assert finish.wait(30)
        delivered.append([m["Body"] for m in batch])

    monkeypatch.setattr(poller, "deliver", deliver_slowly)
    stack.client("sqs").send_message(QueueUrl=mapping.queue_url, MessageBody="before the stop")
    thread = threading.Thread(target=poller._run, args=(mapping,), daemon=True)
    thread.start()
    assert delivering.wait(10)
    stopping = threading.Thread(target=poller.stop, daemon=True)
    stopping.start()
    stopping.join(0.5)
    assert stopping.is_alive()  # still waiting for the delivery
    finish.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert delivered == [["before the stop"]]
    thread.join(10)
    assert not thread.is_alive()


def test_functions_run_from_their_deployed_zip_and_layer(stack: OfflineStack) -> None:
    code = stack.client("lambda").get_function(
        FunctionName=stack.function_name("SerializeImageFunction")
    )
    assert code["Configuration"]["Handler"] == "app.lambda_handler"
    response = stack.client("lambda").invoke(
        FunctionName=stack.function_name("SerializeImageFunction"),
        Payload=json.dumps({"object": ["not", "an", "object", "reference"]}).encode(),
    )
    error = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Handled"
    assert error["errorType"] == "EventError"
    assert "layers" in " ".join(error["stackTrace"])  # scones_core came from the layer zip

    missing = stack.client("lambda").invoke(
        FunctionName=stack.function_name("SerializeImageFunction"),
        Payload=json.dumps(
            {"object": {"bucket": stack.bucket, "key": "incoming/none.png"}}
        ).encode(),
    )
    assert "FunctionError" not in missing  # bad input is data, not an error
    assert json.loads(missing["Payload"].read())["rejection"]["error_code"] == "ObjectNotFound"


def small_function(
    stack: OfflineStack,
    name: str,
    source: str,
    timeout: int = 3,
    memory_mb: int = 128,
    environment: dict[str, str] | None = None,
) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", source)
    existing = stack.client("lambda").get_function(
        FunctionName=stack.function_name("StartWorkflowFunction")
    )
    stack.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=existing["Configuration"]["Role"],
        Handler="app.handler",
        Code={"ZipFile": buffer.getvalue()},
        Timeout=timeout,
        MemorySize=memory_mb,
        Environment={"Variables": environment or {}},
    )
    return name


def invoke(stack: OfflineStack, name: str, event: Any = None) -> tuple[dict[str, Any], bool]:
    response = stack.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event or {}))
    return json.loads(response["Payload"].read()), "FunctionError" in response


def test_runtime_reports_timeouts_crashes_and_init_errors_like_lambda(stack: OfflineStack) -> None:
    slow = small_function(stack, "slow", "import time\ndef handler(e, c):\n    time.sleep(5)\n", 1)
    payload, errored = invoke(stack, slow)
    assert errored and payload["errorType"] == "Sandbox.Timedout"

    crash = small_function(stack, "crash", "import os\ndef handler(e, c):\n    os._exit(3)\n")
    payload, errored = invoke(stack, crash)
    assert errored and payload["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in payload["errorMessage"]

    broken = small_function(stack, "broken", "raise RuntimeError('bad cold start')\n")
    payload, errored = invoke(stack, broken)
    assert errored and payload["errorMessage"] == "bad cold start"

    # 200 MB in a 128 MB function: killed, as Lambda kills it; the next call gets a fresh
    # worker, and 200 MB fits a 512 MB function.
    source = "def handler(e, c):\n    return len(bytearray(200 * 2**20))\n"
    payload, errored = invoke(stack, small_function(stack, "greedy", source))
    assert errored and payload["errorType"] == "Runtime.OutOfMemory"
    assert (
        "signal: killed" in payload["errorMessage"]
        and "MemorySize 128 MB" in payload["errorMessage"]
    )
    payload, errored = invoke(stack, small_function(stack, "roomy", source, memory_mb=512))
    assert not errored and payload == 200 * 2**20

    echo = small_function(
        stack, "echo", "import os\ndef handler(e, c):\n    return {'e': e, 'fn': c.function_name}\n"
    )
    payload, errored = invoke(stack, echo, {"x": 1})
    assert not errored and payload == {"e": {"x": 1}, "fn": "echo"}


def test_a_slow_init_has_time_of_its_own_as_on_lambda(
    stack: OfflineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda gives the init (imports, module-level clients) up to 10 s before a function's
    Timeout starts; an init past that goes on under the first invocation's Timeout."""
    source = (
        "import time\ntime.sleep(2)\n"
        "def handler(e, c):\n    return c.get_remaining_time_in_millis()\n"
    )
    remaining, errored = invoke(stack, small_function(stack, "slow-init", source, 1))
    assert not errored, remaining
    assert 0 < remaining <= 1000  # the whole Timeout was left for the handler
    remaining, errored = invoke(stack, "slow-init")  # warm: no init at all
    assert not errored and 0 < remaining <= 1000

    monkeypatch.setattr(lambda_runtime, "INIT_TIMEOUT_S", 0.5)
    payload, errored = invoke(stack, small_function(stack, "slower-init", source, 1))
    assert errored and payload["errorType"] == "Sandbox.Timedout", payload
    payload, errored = invoke(stack, small_function(stack, "slow-init-in-time", source, 3))
    assert not errored and 0 < payload <= 2000  # the init used 1.5 s of the Timeout


def partial_folders(stack: OfflineStack) -> list[str]:
    return [p.name for p in (stack.work_dir / "lambda").rglob("*") if ".partial-" in p.name]


def test_a_function_whose_runtime_cannot_start_fails_as_lambda_says_so(
    stack: OfflineStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full work folder while the function's package is unpacked: a function error
    naming the errno and the path, as Lambda answers an init it cannot run (it was an
    HTTP 500 from moto that nothing turned into a record); the half-unpacked folder is
    removed; the stack says why once, however many calls fail; with room again, it runs."""
    name = small_function(stack, "no-room", "def handler(e, c):\n    return 'ran'\n")
    disk_full_after_one_file(monkeypatch)
    for _ in range(3):
        payload, errored = invoke(stack, name)
        assert errored and payload["errorType"] == "Runtime.Unknown"
        assert "[Errno 28] No space left on device" in payload["errorMessage"]
        assert f"{stack.work_dir}/lambda/functions/no-room-" in payload["errorMessage"]
        assert partial_folders(stack) == []
    said = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert len(said) == 1 and "no-room" in said[0] and "No space left" in said[0]

    monkeypatch.undo()
    assert invoke(stack, name) == ("ran", False)


def test_a_worker_that_cannot_be_started_leaks_no_descriptor(
    stack: OfflineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork() refused (no memory, or no process left): a function error, and each failed
    start closes the pipes it made; leaked, a few hundred failed calls ran the stack out
    of file descriptors."""
    name = small_function(stack, "no-fork", "def handler(e, c):\n    return 'ran'\n")
    real_popen = subprocess.Popen

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    invoke(stack, small_function(stack, "warm-client", "def handler(e, c):\n    return 1\n"))
    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(subprocess, "Popen", refused)
    for _ in range(20):
        payload, errored = invoke(stack, name)
        assert errored and payload["errorType"] == "Runtime.Unknown"
        assert "[Errno 12] Cannot allocate memory" in payload["errorMessage"]
    monkeypatch.setattr(subprocess, "Popen", real_popen)
    assert len(os.listdir("/proc/self/fd")) - before < 10
    assert invoke(stack, name) == ("ran", False)


LOGS_AT_EVERY_LEVEL = """
import logging

def handler(e, c):
    library = logging.getLogger("some.library")
    library.debug("a debug line", extra={"detail": 1})
    library.warning("a warning")
"""


def test_the_worker_sets_up_the_root_logger_as_lambdas_runtime_does(stack: OfflineStack) -> None:
    """awslambdaric's bootstrap: a root handler always; JSON lines and the level Lambda
    passes (TRACE read as DEBUG) for the JSON log format, text lines at WARNING without."""
    lam = stack.client("lambda")

    def log_of(name: str) -> list[str]:
        response = lam.invoke(FunctionName=name, LogType="Tail")
        assert "FunctionError" not in response
        tail = base64.b64decode(response["LogResult"]).decode()
        return [line for line in tail.splitlines() if not line.startswith(("START", "END"))]

    json_trace = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "TRACE"}
    lines = log_of(small_function(stack, "logs-json", LOGS_AT_EVERY_LEVEL, environment=json_trace))
    debug, warning = map(json.loads, lines)
    assert debug["level"] == "DEBUG" and warning["level"] == "WARNING"
    assert debug["logger"] == "some.library" and debug["message"] == "a debug line"
    assert debug["detail"] == 1 and debug["requestId"] == warning["requestId"] != ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", debug["timestamp"])

    json_warn = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"}
    lines = log_of(small_function(stack, "logs-warn", LOGS_AT_EVERY_LEVEL, environment=json_warn))
    assert [json.loads(line)["message"] for line in lines] == ["a warning"]

    (text,) = log_of(small_function(stack, "logs-text", LOGS_AT_EVERY_LEVEL))
    assert re.fullmatch(r"\[WARNING\]\t\S+Z\t[0-9a-f-]{36}\ta warning", text), text


def test_moto_lambda_hook_has_the_signature_the_runtime_replaces() -> None:
    from scones.offline.lambda_runtime import _ORIGINAL_INVOKE

    assert list(inspect.signature(_ORIGINAL_INVOKE).parameters) == ["self", "event"]
    assert hasattr(ExecutionWorker, "_get_evaluation_environment")


def test_unknown_resource_types_stop_the_deployment() -> None:
    cfn = {"Resources": {"Odd": {"Type": "AWS::Glue::Job", "Properties": {}}}}
    with pytest.raises(DeployError, match="AWS::Glue::Job, which moto's CloudFormation would skip"):
        check_resource_types(cfn, {"Odd"})
    hosting = {"Resources": {"Ep": {"Type": "AWS::SageMaker::Endpoint", "Properties": {}}}}
    with pytest.raises(DeployError, match="CreateEndpoint=false"):
        check_resource_types(hosting, {"Ep"})


def test_parameter_overrides_are_checked() -> None:
    template = load_template()
    with pytest.raises(DeployError, match="unknown template parameter"):
        effective_parameters(template, {"NoSuchParameter": "1"})
    with pytest.raises(DeployError, match="WorkflowType='FAST'"):
        effective_parameters(template, {"WorkflowType": "FAST"})
    # The template's Rules too, as CloudFormation checks them before it creates anything.
    with pytest.raises(DeployError, match="rule EndpointNeedsModel"):
        effective_parameters(template, {"CreateEndpoint": "true"})


def test_packaging_is_deterministic_and_leaves_caches_out(tmp_path: Any) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    first, second = zip_folder(tmp_path), zip_folder(tmp_path)
    assert first == second
    assert zipfile.ZipFile(io.BytesIO(first)).namelist() == ["app.py"]


def test_the_gap_registry_is_the_one_source() -> None:
    """docs/offline.md's table is generated from gaps.GAPS; every guard names a real
    test; deploy.py accepts exactly what moto creates or a gap fills; no import cycle."""
    import ast

    from scones.template_params import PROJECT_ROOT

    docs = (PROJECT_ROOT / "docs" / "offline.md").read_text()
    begin = "<!-- gaps table: generated by scones.offline.gaps.gaps_markdown() -->\n"
    table = docs.split(begin, 1)[1].split("<!-- end of gaps table -->", 1)[0]
    assert table == gaps.gaps_markdown(), "regenerate the table with gaps.gaps_markdown()"

    tests = {
        node.name
        for guards in (PROJECT_ROOT / "tests" / "offline").glob("test_*.py")
        for node in ast.parse(guards.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }
    for gap in gaps.GAPS:
        assert gap.guard in tests | {""}, f"{gap.name}: no guard test {gap.guard}"
        assert gap.filled == bool(gap.fill), gap.name
        assert not gap.removed or gap.filled, f"{gap.name}: removed but never filled"
    assert len({g.name for g in gaps.GAPS}) == len(gaps.GAPS)
    assert gaps.supported_resource_types() == gaps.CREATED_BY_MOTO | {
        g.resource_type for g in gaps.GAPS if g.removed
    }

    def imports(path: Any) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        return found

    offline = PROJECT_ROOT / "src" / "scones" / "offline"
    assert "scones.offline.deploy" not in imports(offline / "gaps.py")
    assert "scones.offline.gaps" in imports(offline / "deploy.py")


def test_every_filled_gap_in_the_template_is_filled(stack: OfflineStack) -> None:
    """Each gap whose resource type (and setting) the template uses left a trace in
    DeployedStack.filled, and no resource type of the template is unaccounted for."""
    resources = stack.stack.cfn_template["Resources"]
    used = {r["Type"] for r in resources.values()}
    assert used <= gaps.supported_resource_types() | gaps.NOT_OFFLINE
    filled = " ".join(stack.stack.filled)
    trace = {
        "bucket_versioning": "versioning",
        "bucket_notifications": "notifications",
        "bucket_policy": "bucket policy",
        "queue_policy": "queue policy",
        "topic_policy": "topic policy",
        "key_policy": "key policy",
        "state_machine": "state machine",
        "layer": "layer",
        "layer_users": "layer",
        "alarm": "alarm",
        "schedule": "schedule",
        "table": "table settings",
        "event_source_mappings": "event source mappings",
        "model_package_group": "model package group",
    }
    for gap in gaps.GAPS:
        if not gap.filled:
            continue
        in_template = [
            r
            for r in resources.values()
            if r["Type"] == gap.resource_type
            and (not gap.properties or set(gap.properties) & set(r.get("Properties", {})))
        ]
        if in_template:
            assert trace[str(gap.kind)] in filled, f"{gap.name} was not filled: {filled}"


@pytest.mark.parametrize(
    ("payload", "errored", "report", "expected"),
    [
        (b'{"batchItemFailures": []}', False, True, set()),
        (b'{"batchItemFailures": [{"itemIdentifier": "b"}]}', False, True, {"b"}),
        (b'{"batchItemFailures": [{"itemIdentifier": "zzz"}]}', False, True, {"a", "b"}),
        (b"null", False, True, set()),
        # A null list is a complete success too (Lambda's "Reporting batch item failures").
        (b'{"batchItemFailures": null}', False, True, set()),
        (b"{}", False, True, set()),
        (b'{"batchItemFailures": "b"}', False, True, {"a", "b"}),
        (b"garbage", False, True, {"a", "b"}),
        (b'{"errorType": "X"}', True, True, {"a", "b"}),
        (b'{"batchItemFailures": [{"itemIdentifier": "b"}]}', False, False, set()),
    ],
)
def test_partial_batch_responses_follow_lambda_rules(
    payload: bytes, errored: bool, report: bool, expected: set[str]
) -> None:
    messages = [{"MessageId": "a"}, {"MessageId": "b"}]
    assert failed_message_ids(payload, errored, messages, report) == expected


def test_saved_records_are_sorted_and_never_overwrite_an_earlier_file(tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from scones.offline.records_file import save_records

    now = datetime(2026, 12, 1, 14, 30, 5, tzinfo=UTC)
    records = [{"pk": "b/k#2", "status": "ACCEPTED"}, {"pk": "b/k#1", "status": "REJECTED"}]
    first = save_records(records, out_dir=tmp_path / "out", stack_name="s", table="t", now=now)
    second = save_records(records[:1], out_dir=tmp_path / "out", stack_name="s", table="t", now=now)

    assert first.name == "records-s-20261201T143005Z.json"
    assert second.name == "records-s-20261201T143005Z-2.json"
    document = json.loads(first.read_text())
    assert document["count"] == 2 and document["table"] == "t"
    assert [r["pk"] for r in document["records"]] == ["b/k#1", "b/k#2"]
    assert document["unrecorded"] == []  # always there: an empty list says none
    missing = [{"bucket": "b", "key": "k2", "version": "v2"}]
    third = save_records(
        records, out_dir=tmp_path / "out", stack_name="s", table="t", now=now, unrecorded=missing
    )
    assert json.loads(third.read_text())["unrecorded"] == missing
    third.unlink()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {first.name, second.name}


def test_a_record_with_another_tools_binary_attribute_is_saved_with_the_rest(
    tmp_path: Any,
) -> None:
    """boto3's Binary is no JSON, and its str() is bytes: one such attribute (written by
    another tool) failed every save of the stop, and every record was lost."""
    from boto3.dynamodb.types import Binary
    from scones_core.records import record_from_item

    from scones.offline.records_file import save_records

    item = {"pk": {"S": "b/k#1"}, "status": {"S": "ACCEPTED"}, "thumbnail": {"B": b"\x89PNG"}}
    records = [record_from_item(item), {"pk": "b/k#2", "status": "REJECTED"}]
    assert isinstance(records[0]["thumbnail"], Binary)
    saved = save_records(records, out_dir=tmp_path, stack_name="s", table="t")
    document = json.loads(saved.read_text())
    assert [r["pk"] for r in document["records"]] == ["b/k#1", "b/k#2"]
    assert document["records"][0]["thumbnail"] == "iVBORw=="


def test_a_reserved_report_file_is_not_executable(tmp_path: Any) -> None:
    import os

    from scones.safe_files import create_first_free

    previous = os.umask(0o022)
    try:
        suffix = create_first_free(tmp_path, lambda s: f"run{s}.json", lambda s: False)
    finally:
        os.umask(previous)
    assert (tmp_path / f"run{suffix}.json").stat().st_mode & 0o777 == 0o644


def test_a_link_planted_where_the_partial_file_went_is_never_written_through(
    tmp_path: Any,
) -> None:
    """In a shared --out folder another user can plant a link at the partial file's name
    (the time stamp gives it away): the records go to a file of their own, the link's
    target is untouched, and the saved file is no link."""
    import os
    from datetime import UTC, datetime

    from scones.offline.records_file import save_records

    now = datetime(2026, 12, 1, 14, 30, 5, tzinfo=UTC)
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victims-file.txt"
    victim.write_text("important content\n")
    for name in ("records-s-20261201T143005Z.json", "records-s-20261201T143005Z-2.json"):
        (shared / f".{name}.partial").symlink_to(victim)
    previous = os.umask(0o022)
    try:
        saved = save_records([{"pk": "b/k#1"}], out_dir=shared, stack_name="s", table="t", now=now)
    finally:
        os.umask(previous)
    assert victim.read_text() == "important content\n"
    assert saved.name == "records-s-20261201T143005Z.json" and not saved.is_symlink()
    assert json.loads(saved.read_text())["records"] == [{"pk": "b/k#1"}]
    # Keys, labels and scores, no upload: the umask's mode, as any report.
    assert saved.stat().st_mode & 0o777 == 0o644
    leftovers = {p.name for p in shared.iterdir()} - {saved.name}
    assert all((shared / name).is_symlink() for name in leftovers), leftovers


ELSEWHERE = "use a folder of your own"


def test_a_private_folder_is_its_owners_only(tmp_path: Any, monkeypatch: Any) -> None:
    import os

    from scones.safe_files import private_folder

    previous = os.umask(0o022)
    try:
        made = private_folder(tmp_path / "new" / "work", elsewhere=ELSEWHERE)
    finally:
        os.umask(previous)
    assert made.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755  # a parent: the umask's
    # One an earlier version left open is narrowed; one the user named is left alone.
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "theirs").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    os.chmod(tmp_path / "theirs", 0o755)
    private_folder(tmp_path / "open", elsewhere=ELSEWHERE)
    private_folder(tmp_path / "theirs", elsewhere=ELSEWHERE, ours=False)
    assert (tmp_path / "open").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "theirs").stat().st_mode & 0o777 == 0o755
    # A folder of our name that another user made (to read what goes in it) is refused.
    owner = (tmp_path / "open").stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(PermissionError, match="belongs to another user") as refused:
        private_folder(tmp_path / "open", elsewhere=ELSEWHERE)
    assert str(refused.value).endswith(f"remove it (or have its owner do so), or {ELSEWHERE}")
    # Root reads every folder anyway: a container running as root on a user's checkout
    # uses the .scones that user's runs left.
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "chmod", lambda *args: None)
    (tmp_path / "users").mkdir(mode=0o700)
    real_stat = type(tmp_path).stat

    def owned_by_a_user(path: Any, **kwargs: Any) -> os.stat_result:
        found = real_stat(path, **kwargs)
        if path != tmp_path / "users":
            return found
        fields = list(found)
        fields[4] = 1000  # st_uid
        return os.stat_result(fields)

    monkeypatch.setattr(type(tmp_path), "stat", owned_by_a_user)
    assert private_folder(tmp_path / "users", elsewhere=ELSEWHERE) == tmp_path / "users"
    monkeypatch.undo()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError):
        private_folder(tmp_path / "a-file", elsewhere=ELSEWHERE)


def test_a_second_stack_in_the_same_process_is_refused(stack: OfflineStack) -> None:
    from scones.offline.stack import StackError

    with pytest.raises(StackError, match="already running in this process"):
        OfflineStack(StackOptions()).start()
    assert stack.api().records() is not None  # the running stack is unharmed


def test_the_model_server_takes_the_endpoints_payload_limit_not_the_uploads() -> None:
    """MaxImageBytes caps uploads; the endpoint is sent the normalised PNG, and SageMaker
    caps that at InvokeEndpoint's 6 MiB. A stack whose uploads are capped at 2,000 bytes
    sent 3,172-byte PNGs of 990-byte JPEGs, and the server refused them (413) where AWS
    classifies them."""
    from scones.offline.deploy import DeployedStack
    from scones.serving.defaults import RUNTIME_MAX_PAYLOAD_BYTES
    from scones.template_params import parameter_defaults

    parameters = {**parameter_defaults(), "MaxImageBytes": "2000"}
    deployed = DeployedStack(
        stack_name="s",
        region="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        parameters=parameters,
        outputs={"ImageBucketName": "bucket"},
        physical_ids={},
        cfn_template={},
    )
    settings = OfflineStack(StackOptions())._model_server_settings(deployed)
    assert settings.max_body_bytes == RUNTIME_MAX_PAYLOAD_BYTES
