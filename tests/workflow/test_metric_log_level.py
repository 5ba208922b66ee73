"""Custom metrics survive Lambda's log-level filter at every LogLevel.

With the JSON log format Lambda drops application lines below the function's application
log level before CloudWatch sees them, and a JSON line without a ``"level"`` key counts as
INFO (Lambda Developer Guide, "Log-level filtering"). CloudWatch extracts embedded-format
metrics from the log lines it receives, so a metric document Lambda drops is a metric that
never exists. The filter is applied here as documented, to what the real handlers print.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import boto3
import pytest
from conftest import EVENTS, load_handler, start_function
from scones_core import function_logs
from test_workflow_handlers import REGION, aws, context, lambda_env  # noqa: F401 (fixtures)

from scones.template_params import function_environment, load_template

pytestmark = pytest.mark.usefixtures("aws")  # moto, with the handlers' environment
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
# Lambda's application log levels, least severe first.
LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def application_level(log_level: str) -> str:
    """The ApplicationLogLevel the template gives for its LogLevel parameter."""
    mapping = load_template()["Mappings"]["LambdaLogLevels"]
    return str(mapping[log_level]["Application"])


def lambda_keeps(line: str, filtered_at: str) -> bool:
    """Whether Lambda sends ``line`` to CloudWatch Logs at ``filtered_at``: its level, or
    INFO when it has none, or no valid RFC 3339 timestamp (read strictly)."""
    try:
        document = json.loads(line)
    except ValueError:
        document = None
    level = document.get("level") if isinstance(document, dict) else None
    stamp = document.get("timestamp") if isinstance(document, dict) else None
    if not isinstance(level, str) or level.upper() not in LEVELS or not rfc3339(stamp):
        level = "INFO"
    return LEVELS.index(level.upper()) >= LEVELS.index(filtered_at)


def rfc3339(value: object) -> bool:
    return isinstance(value, str) and bool(RFC3339.fullmatch(value))


def metrics_kept(out: str, filtered_at: str) -> set[str]:
    names: set[str] = set()
    for line in out.splitlines():
        if '"_aws"' in line and lambda_keeps(line, filtered_at):
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names |= {metric["Name"] for metric in directive["Metrics"]}
    return names


@pytest.fixture(params=["WARNING", "ERROR", "INFO"])
def filtered_at(request: pytest.FixtureRequest) -> str:
    return application_level(request.param)


def lambda_sets(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    """What Lambda hands a JSON-logging function. Set once the handler is loaded: the
    metric documents read it as they are written, and Powertools configures its one
    logger per service at the first ``Logger()`` of the process, which would keep this
    level for every later test of the same worker."""
    monkeypatch.setenv("AWS_LAMBDA_LOG_LEVEL", level)
    monkeypatch.setenv("AWS_LAMBDA_LOG_FORMAT", "JSON")


def test_the_start_functions_metrics_are_kept(
    filtered_at: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _, _, app = start_function(monkeypatch, region=REGION)
    lambda_sets(monkeypatch, filtered_at)
    event = json.loads((EVENTS / "start_workflow.json").read_text())
    assert app.lambda_handler(event, context()) == {"batchItemFailures": []}
    out = capsys.readouterr().out
    assert {"WorkflowsStarted", "ImagesStarted"} <= metrics_kept(out, filtered_at)


def written(logger: Any, records: list[logging.LogRecord]) -> list[str]:
    """The lines ``logger`` (Powertools') writes for ``records``, through its own handler's
    formatter (its stream is the stdout of the test that made it, not this one's)."""
    formatter = logger.registered_handler.formatter
    return [formatter.format(record) for record in records]


def test_objects_outside_the_stacks_scope_leave_a_line_and_a_metric_that_are_kept(
    filtered_at: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SNS topic or EventBridge rule wired to the wrong bucket makes the start function
    drop every upload it carries; that must show at every LogLevel, the default included."""
    _, _, app = start_function(monkeypatch, region=REGION)
    lambda_sets(monkeypatch, filtered_at)
    event = json.loads((EVENTS / "start_workflow.json").read_text())
    (message,) = event["Records"]
    body = json.loads(message["body"])
    body["Records"][0]["s3"]["bucket"]["name"] = "someone-elses"
    event["Records"] = [dict(message, body=json.dumps(body))]

    assert app.lambda_handler(event, context()) == {"batchItemFailures": []}

    assert "ObjectsOutOfScope" in metrics_kept(capsys.readouterr().out, filtered_at)
    (line,) = [
        line
        for line in written(app.logger, caplog.records)
        if "outside this stack's bucket" in line and "s3://someone-elses/incoming/" in line
    ]
    # A warning: kept at every level up to WARN (LogLevel=ERROR keeps errors only).
    assert lambda_keeps(line, filtered_at) == (LEVELS.index("WARN") >= LEVELS.index(filtered_at))


@pytest.mark.parametrize("level", ["WARN", "ERROR", "FATAL"])
def test_the_functions_warnings_and_errors_are_read_at_their_level(
    level: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Lambda reads a line's level only if it is one of its own names beside an RFC 3339
    timestamp; otherwise the line counts as INFO, and at the default level (WARN) it is
    dropped. Powertools' own defaults (``WARNING``, ``2026-12-06 12:24:39,645+0000``) were
    both unreadable."""
    log = function_logs.logger()
    write = {"WARN": log.warning, "ERROR": log.error, "FATAL": log.critical}[level]
    caplog.set_level(logging.INFO)

    write("something to see", extra={"object": "s3://b/incoming/x.png"})
    log.info("routine")

    lines = written(log, caplog.records)
    documents = [json.loads(line) for line in lines]
    (seen,) = [line for line in documents if line["message"] == "something to see"]
    assert seen["level"] == level and rfc3339(seen["timestamp"]), seen
    assert seen["object"] == "s3://b/incoming/x.png"
    for at in ("INFO", "WARN", "ERROR"):
        kept = {json.loads(line)["message"] for line in lines if lambda_keeps(line, at)}
        assert ("something to see" in kept) == (LEVELS.index(level) >= LEVELS.index(at))
        assert ("routine" in kept) == (at == "INFO")


def test_the_serialize_functions_rejection_metric_is_kept(
    filtered_at: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    for name, value in function_environment("SerializeImageFunction").items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="uploads")
    put = s3.put_object(Bucket="uploads", Key="incoming/notes.png", Body=b"plain text")
    state = {
        "object": {
            "bucket": "uploads",
            "key": "incoming/notes.png",
            "version": "null",
            "etag": put["ETag"].strip('"'),
            "size": 10,
        }
    }
    app = load_handler("serialize_image")
    lambda_sets(monkeypatch, filtered_at)
    assert app.lambda_handler(state, context())["rejection"]["error_code"] == "NotAnImage"
    assert "ImagesRejected" in metrics_kept(capsys.readouterr().out, filtered_at)


def test_a_line_without_a_level_is_dropped_at_warn_as_lambda_documents() -> None:
    """The rule itself: what the metric documents were before they carried a level."""
    stamp = '"timestamp": "2026-12-05T06:40:00.123Z"'
    assert not lambda_keeps('{"_aws": {}, "ImagesRejected": 1}', "WARN")
    assert not lambda_keeps('{"_aws": {}, "level": "WARN"}', "WARN")
    assert lambda_keeps('{"_aws": {}, "level": "WARN", ' + stamp + "}", "WARN")
    assert not lambda_keeps("plain text", "WARN") and lambda_keeps("plain text", "INFO")
