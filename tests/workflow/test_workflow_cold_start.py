"""What a handler imports at a cold start, and the tracer switch.

The numbers live in docs/benchmarks.md (``scones bench imports``); these tests keep the
reasons for them: no X-Ray SDK unless the template's TracingMode is Active, Powertools'
batch processor only in the start function, and both ways of the tracer behaving alike.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import EVENTS, FUNCTIONS, start_function
from moto import mock_aws
from scones_core import function_logs, tracing

from scones.cli.bench_imports import HANDLERS
from scones.offline.lambda_worker import LambdaContext
from scones.template_params import (
    PROJECT_ROOT,
    condition_value,
    deployed_environment,
    load_template,
)

REGION = "us-east-1"
LAYER = PROJECT_ROOT / "layers" / "shared"


# ---- the tracer switch -------------------------------------------------------------


@pytest.mark.parametrize(("mode", "disabled"), [("PassThrough", "true"), ("Active", "false")])
def test_the_template_turns_the_tracer_off_unless_tracing_is_active(
    mode: str, disabled: str
) -> None:
    template = load_template()
    assert condition_value(template, "IsTracingActive", {"TracingMode": mode}) is (mode == "Active")
    for logical_id in HANDLERS.values():
        env = deployed_environment(logical_id, {"TracingMode": mode})
        assert env["POWERTOOLS_TRACE_DISABLED"] == disabled
        assert tracing.tracing_disabled(env) is (mode != "Active")


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", " True "])
def test_a_truthy_variable_gives_the_no_op_tracer(value: str) -> None:
    assert isinstance(tracing.tracer({tracing.TRACE_DISABLED_ENV: value}), tracing.NoOpTracer)


@pytest.mark.parametrize("environ", [{}, {tracing.TRACE_DISABLED_ENV: "false"}])
def test_otherwise_powertools_tracer_is_used(environ: dict[str, str]) -> None:
    from aws_lambda_powertools import Tracer

    assert isinstance(tracing.tracer(environ), Tracer)


def test_the_no_op_tracer_has_the_decorators_of_powertools_tracer() -> None:
    tracer = tracing.NoOpTracer()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"seen": event}

    assert tracer.capture_lambda_handler(handler) is handler
    assert tracer.capture_lambda_handler(capture_response=False)(handler) is handler
    assert tracer.capture_method(handler) is handler
    assert tracer.capture_method(capture_error=False)(handler) is handler
    tracer.put_annotation("key", "value")
    tracer.put_metadata("key", {"a": 1}, namespace="scones")

    @tracer.capture_lambda_handler
    def bare(event: int, context: Any) -> int:
        return event + 1

    @tracer.capture_method(capture_response=False)
    def called(value: int) -> int:
        return value * 2

    assert (bare(1, None), called(2)) == (2, 4)


def cold_start(name: str, code: str, overrides: dict[str, str] | None = None) -> str:
    """What ``code`` prints in a fresh interpreter in the function's folder, with its
    deployed environment (template parameters ``overrides`` changed)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_DEFAULT_REGION": REGION,
        "PYTHONPATH": str(LAYER),
        **deployed_environment(HANDLERS[name], overrides),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=FUNCTIONS / name,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_a_cold_import_with_the_templates_environment_skips_xray(name: str) -> None:
    """Each handler imported in a fresh interpreter with its deployed environment."""
    code = (
        "import sys, app; "
        "print(sorted(m for m in sys.modules if m.startswith(('aws_xray_sdk', "
        "'aws_lambda_powertools.utilities.batch', 'aws_lambda_powertools.utilities.data_classes'"
        ", 'PIL'))))"
    )
    imported = json.loads(cold_start(name, code).replace("'", '"'))
    assert not [m for m in imported if m.startswith("aws_xray_sdk")]
    # Powertools' batch processor (the house way to report SQS partial failures) only
    # where batches arrive; Pillow only in the function that decodes images.
    uses_batch = any(m.startswith("aws_lambda_powertools.utilities.batch") for m in imported)
    assert uses_batch is (name == "start_workflow")
    assert any(m.startswith("PIL") for m in imported) is (name == "serialize_image")


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_a_cold_start_holds_the_sdks_loggers_at_warning_under_a_debug_root(name: str) -> None:
    """Lambda's runtime sets the root logger to the application log level before it imports
    the handler; at DEBUG botocore would log every request, body included. The handler's
    logger and ``scones_core``'s keep the level."""
    code = (
        "import json, logging; logging.getLogger().setLevel('DEBUG'); import app; "
        f"names = {list(function_logs.SDK_LOGGERS)!r} + ['scones_core.any']; "
        "print(json.dumps({n: logging.getLogger(n).getEffectiveLevel() for n in names} "
        "| {'app': app.logger.log_level}))"
    )
    out = cold_start(name, code, {"LogLevel": "DEBUG"})
    levels = json.loads(out.strip().splitlines()[-1])
    assert levels.pop("app") == levels.pop("scones_core.any") == logging.DEBUG
    assert levels == dict.fromkeys(function_logs.SDK_LOGGERS, logging.WARNING)


# ---- a handler with tracing on and off ------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
        "POWERTOOLS_METRICS_NAMESPACE": "SconesUnlimited",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    with mock_aws():
        yield


@pytest.mark.parametrize("disabled", ["true", "false"])
def test_the_start_handler_works_with_tracing_on_and_off(
    aws: None, monkeypatch: pytest.MonkeyPatch, disabled: str
) -> None:
    from aws_lambda_powertools import Tracer

    monkeypatch.setenv(tracing.TRACE_DISABLED_ENV, disabled)
    sfn, arn, app = start_function(monkeypatch, f"start_tracing_{disabled}", REGION)
    assert isinstance(app.tracer, tracing.NoOpTracer if disabled == "true" else Tracer)
    event = json.loads((EVENTS / "start_workflow.json").read_text())
    bad = dict(event["Records"][0], messageId="bad-1", body="not json")
    event["Records"].append(bad)

    response = app.lambda_handler(event, LambdaContext("r", time.time() * 1000 + 30_000))

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 1
