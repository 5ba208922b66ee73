"""At LogLevel=DEBUG the functions write their own debug lines, never the SDK's requests.

Lambda's Python runtime sets the root logger to a JSON-logging function's application log
level (the template's LogLevel), and the offline stack's workers do the same
(``scones.offline.lambda_worker.configure_root_logger``). Every library logger without a
level of its own then logs at DEBUG: botocore would write each request, the image sent to
the endpoint and the S3 key read included, into CloudWatch Logs. A photo whose key names a
customer goes through the whole workflow at DEBUG here, and the functions' logs are read
as CloudWatch would keep them.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FAST_RETRIES, SAMPLES, template_limits
from scones_core.function_logs import SDK_LOG_LEVEL, SDK_LOGGERS
from scones_core.images import normalise_image

from scones.offline.stack import OfflineStack, StackOptions
from tests.offline.probe_function import deploy_probe

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("debug-log-stack")]

CUSTOMER_KEY = "cust-4711/jane.doe@example.com/12-Elm-Street-door.png"
PER_IMAGE_FUNCTIONS = ("StartWorkflowFunction", "SerializeImageFunction", "ClassifyImageFunction")
# What botocore's DEBUG lines hold: each request's parameters and body.
SDK_REQUEST_TEXT = ("Making request for OperationModel", "'body': b'", "CanonicalRequest")
# Beside the classify function (its zip, layer and environment): the real handler, then one
# debug line through the function's own logger and one through scones_core's.
PROBE = """
import logging

import app


def handler(event, context):
    result = app.lambda_handler(event, context)
    app.logger.debug("probe: the function's logger at DEBUG")
    logging.getLogger("scones_core.probe").debug("probe: scones_core's loggers at DEBUG")
    return result
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    with OfflineStack(StackOptions(overrides={**FAST_RETRIES, "LogLevel": "DEBUG"})) as running:
        yield running


@pytest.fixture(scope="module")
def photo() -> bytes:
    return next(iter(sorted((SAMPLES / "bicycle").glob("*.png")))).read_bytes()


def function_log(stack: OfflineStack, function_name: str) -> str:
    return (stack.work_dir / "logs" / f"{function_name}.log").read_text(errors="replace")


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def image_texts(photo: bytes) -> dict[str, str]:
    """How the photo, and the normalised image sent to the endpoint, would show in a log."""
    normalised = normalise_image(photo, template_limits()).png
    return {
        "upload, base64": base64.b64encode(photo).decode()[:64],
        "normalised image, base64": base64.b64encode(normalised).decode()[:64],
        "PNG bytes": repr(normalised[:16])[2:-1],
    }


def assert_no_image_and_no_sdk_request(log: str, photo: bytes, where: str) -> None:
    # The log as written, and each JSON line's message as CloudWatch shows it (unescaped).
    shown = log + "\n".join(str(line.get("message")) for line in json_lines(log))
    for what, text in image_texts(photo).items():
        assert text not in shown, f"{where} logged the {what}"
    for text in SDK_REQUEST_TEXT:
        assert text not in shown, f"{where} logged a request botocore made ({text!r})"
    below = [
        line
        for line in json_lines(log)
        if str(line.get("logger", "")).split(".")[0] in SDK_LOGGERS
        and logging.getLevelName(line["level"]) < SDK_LOG_LEVEL
    ]
    assert not below, f"{where} logged the SDK below WARNING: {below[:3]}"


@pytest.fixture(scope="module")
def probe_log(stack: OfflineStack, photo: bytes) -> str:
    """The log of the classify handler run once at DEBUG through :data:`PROBE`."""
    lam = stack.client("lambda")
    deploy_probe(stack, "ClassifyImageFunction", PROBE, "probe-debug-logs")
    normalised = normalise_image(photo, template_limits()).png
    event = {
        "image_b64": base64.b64encode(normalised).decode(),
        "content_type": "image/png",
        "record_id": f"{stack.endpoints.bucket}/incoming/{CUSTOMER_KEY}#v1",
    }
    response = lam.invoke(FunctionName="probe-debug-logs", Payload=json.dumps(event))
    assert "FunctionError" not in response, response["Payload"].read()
    return function_log(stack, "probe-debug-logs")


def project_debug_lines(log: str) -> set[str]:
    return {line["message"] for line in json_lines(log) if line.get("level") == "DEBUG"}


def test_the_functions_own_loggers_write_debug_lines_and_the_sdk_does_not(
    probe_log: str, photo: bytes
) -> None:
    assert project_debug_lines(probe_log) >= {
        "probe: the function's logger at DEBUG",
        "probe: scones_core's loggers at DEBUG",
    }
    assert "classified" in {line.get("message") for line in json_lines(probe_log)}
    assert_no_image_and_no_sdk_request(probe_log, photo, "the classify handler")


def test_a_photo_classified_at_debug_leaves_no_image_or_sdk_request_in_the_logs(
    stack: OfflineStack, photo: bytes, probe_log: str
) -> None:
    # A function process with this environment logs at DEBUG, scones_core's loggers
    # included: the root logger has the level, as on Lambda (the checks below mean something).
    assert "probe: scones_core's loggers at DEBUG" in project_debug_lines(probe_log)
    lam = stack.client("lambda")
    api = stack.api()
    upload = api.upload_bytes(CUSTOMER_KEY, photo, "image/png")
    record = api.wait_for_records([upload], timeout=120)[upload]
    assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW"), record
    for logical_id in PER_IMAGE_FUNCTIONS:
        name = stack.function_name(logical_id)
        variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        assert variables["AWS_LAMBDA_LOG_LEVEL"] == "DEBUG", logical_id
        assert_no_image_and_no_sdk_request(function_log(stack, name), photo, logical_id)
