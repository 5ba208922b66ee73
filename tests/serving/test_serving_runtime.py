"""A real uvicorn server and a real boto3 sagemaker-runtime client, unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from scones_core.endpoint_response import model_version

from scones.model.artifact import OnnxClassifier
from scones.serving.defaults import RUNTIME_MAX_PAYLOAD_BYTES
from scones.serving.server import ModelServer, ServerSettings, ServerStartError, bind_socket
from tests.serving.conftest import (
    ENDPOINT,
    MAX_BODY,
    MODEL_DIR,
    VARIANT,
    AppFactory,
    LiveServer,
    runtime_client,
    to_jpeg,
)


def invoke(client: Any, body: bytes, content_type: str = "image/png", **extra: Any) -> Any:
    return client.invoke_endpoint(
        EndpointName=extra.pop("EndpointName", ENDPOINT),
        ContentType=content_type,
        Body=body,
        **extra,
    )


def test_invoke_endpoint_through_the_environment_variable(
    live_server: LiveServer,
    classifier: OnnxClassifier,
    bicycle_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workflow's code path: no endpoint_url, only AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", live_server.base_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    response = client.invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="image/png", Accept="application/json", Body=bicycle_png
    )
    assert json.loads(response["Body"].read()) == classifier.predict_bytes(bicycle_png)
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == VARIANT
    # The model's version travels in CustomAttributes, so each record names its model.
    assert model_version(response["CustomAttributes"]) == classifier.manifest.version
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/x-image"])
def test_every_supported_content_type(
    live_server: LiveServer, classifier: OnnxClassifier, bicycle_png: bytes, content_type: str
) -> None:
    body = to_jpeg(bicycle_png) if content_type == "image/jpeg" else bicycle_png
    response = invoke(runtime_client(live_server.base_url), body, content_type)
    assert json.loads(response["Body"].read()) == classifier.predict_bytes(body)


def test_unknown_endpoint_is_a_validation_error(
    live_server: LiveServer, bicycle_png: bytes
) -> None:
    client = runtime_client(live_server.base_url)
    with pytest.raises(client.exceptions.ValidationError) as raised:
        invoke(client, bicycle_png, EndpointName="no-such-endpoint")
    error = raised.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert "Endpoint no-such-endpoint not found" in error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_target_model_is_refused_as_on_a_single_model_endpoint(
    live_server: LiveServer, bicycle_png: bytes
) -> None:
    """SageMaker answers TargetModel on an endpoint that is not multi-model with a
    ValidationError (its words), before any variant sees the request; served offline, a
    client naming a model would work here and fail on AWS."""
    client = runtime_client(live_server.base_url)
    with pytest.raises(client.exceptions.ValidationError) as raised:
        invoke(client, bicycle_png, TargetModel="model-a.tar.gz")
    response = raised.value.response
    assert response["Error"] == {
        "Code": "ValidationError",
        "Message": f"Endpoint {ENDPOINT} is not a multi-model endpoint and does not support "
        "target model header.",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    (variant,) = live_server.server.app.state.endpoint.variants()
    assert variant.invocations == 0
    assert live_server.capture.stats().buffered == 0
    assert invoke(client, bicycle_png)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_target_container_is_refused_as_on_an_endpoint_without_direct_invocation(
    live_server: LiveServer, bicycle_png: bytes
) -> None:
    """SageMaker answers TargetContainerHostname with a validation error on an endpoint
    that is not a multi-container endpoint set for direct invocation, as every one here."""
    client = runtime_client(live_server.base_url)
    with pytest.raises(client.exceptions.ValidationError) as raised:
        invoke(client, bicycle_png, TargetContainerHostname="c1")
    assert "does not support the target container hostname header" in str(raised.value)
    (variant,) = live_server.server.app.state.endpoint.variants()
    assert variant.invocations == 0


def test_a_body_past_invoke_endpoints_limit_never_reaches_the_container(
    live_server: LiveServer,
) -> None:
    """SageMaker refuses a payload over 6 MB itself (ValidationError), whatever the
    container would take."""
    client = runtime_client(live_server.base_url)
    with pytest.raises(ClientError) as raised:
        invoke(client, bytes(8 << 20))
    response = raised.value.response
    assert response["Error"]["Code"] == "ValidationError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert f"is {8 << 20} bytes; InvokeEndpoint accepts at most" in response["Error"]["Message"]


@pytest.mark.parametrize(
    "container_limit", [RUNTIME_MAX_PAYLOAD_BYTES, 4 * RUNTIME_MAX_PAYLOAD_BYTES]
)
def test_a_chunked_body_past_invoke_endpoints_limit_gets_the_same_answer(
    make_app: AppFactory, bicycle_png: bytes, container_limit: int
) -> None:
    """Sent in chunks (no Content-Length), a body over 6 MB passed the declared-length
    check and was refused by the container's read as a ModelError (424, "from primary"):
    the same body had two answers. SageMaker's limit is its own, however the body comes,
    and also when the container's limit is the same (its default)."""
    from fastapi.testclient import TestClient

    app = make_app(max_body_bytes=container_limit)
    body = bicycle_png + bytes(RUNTIME_MAX_PAYLOAD_BYTES)

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(body), 1 << 16):
            yield body[at : at + (1 << 16)]

    with TestClient(app) as client:
        answer = client.post(
            f"/endpoints/{ENDPOINT}/invocations",
            content=chunks(),
            headers={"Content-Type": "image/png"},
        )
        served = client.post(
            f"/endpoints/{ENDPOINT}/invocations",
            content=bicycle_png,
            headers={"Content-Type": "image/png"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.headers["x-amzn-errortype"].startswith("ValidationError")
    assert f"more than {RUNTIME_MAX_PAYLOAD_BYTES} bytes; InvokeEndpoint accepts" in answer.text
    assert served.status_code == 200


@pytest.mark.parametrize(
    ("body_kind", "content_type", "status", "words"),
    [
        ("text", "image/png", 400, "not an image"),
        ("truncated", "image/png", 400, "truncated"),
        ("png", "text/csv", 415, "unsupported Content-Type"),
        ("oversized", "image/png", 413, f"the limit is {MAX_BODY} bytes"),
    ],
)
def test_container_refusals_arrive_as_model_errors(
    live_server: LiveServer,
    bicycle_png: bytes,
    body_kind: str,
    content_type: str,
    status: int,
    words: str,
) -> None:
    body = {
        "text": b"hello",
        "truncated": bicycle_png[:100],
        "png": bicycle_png,
        "oversized": bicycle_png + bytes(MAX_BODY),
    }[body_kind]
    client = runtime_client(live_server.base_url)
    with pytest.raises(client.exceptions.ModelError) as raised:
        invoke(client, body, content_type)
    response = raised.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == status
    # SageMaker passes the container's body on verbatim: what /invocations answers.
    container = httpx.post(
        f"{live_server.base_url}/invocations", content=body, headers={"Content-Type": content_type}
    )
    assert container.status_code == status
    assert response["OriginalMessage"] == container.text
    assert words in json.loads(response["OriginalMessage"])["message"]
    # botocore reads every member of the modelled ModelError, the log group included.
    assert response["LogStreamArn"].endswith(f":log-group:/aws/sagemaker/Endpoints/{ENDPOINT}")
    assert response["Error"]["Message"] == (
        f'Received client error ({status}) from primary with message "{container.text}". '
        # As SageMaker words it: the log group's console page, in the account.
        f"See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        f"#logEventViewer:group=/aws/sagemaker/Endpoints/{ENDPOINT} in account 000000000000 "
        "for more information."
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    # The server is still serving.
    assert invoke(client, bicycle_png)["ResponseMetadata"]["HTTPStatusCode"] == 200


def arm(server: LiveServer, **plan: int) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/_faults", json=plan)
    assert response.status_code == 200, response.text
    return response.json()


def test_injected_faults_raise_the_services_exceptions(
    live_server: LiveServer, bicycle_png: bytes
) -> None:
    client = runtime_client(live_server.base_url)
    arm(live_server, throttle=1)
    with pytest.raises(ClientError) as throttled:
        invoke(client, bicycle_png)
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    arm(live_server, unavailable=1)
    with pytest.raises(client.exceptions.ServiceUnavailable):
        invoke(client, bicycle_png)

    arm(live_server, internal_failure=1)
    with pytest.raises(client.exceptions.InternalFailure):
        invoke(client, bicycle_png)

    arm(live_server, model_error=1)
    with pytest.raises(client.exceptions.ModelError) as model_failed:
        invoke(client, bicycle_png)
    assert model_failed.value.response["OriginalStatusCode"] == 500

    # The container's own 429 reaches the caller as SageMaker sends it: a ModelError.
    arm(live_server, busy=1)
    with pytest.raises(client.exceptions.ModelError) as busy:
        invoke(client, bicycle_png)
    assert busy.value.response["OriginalStatusCode"] == 429

    assert invoke(client, bicycle_png)["ResponseMetadata"]["HTTPStatusCode"] == 200
    snapshot = httpx.get(f"{live_server.base_url}/_faults").json()
    assert snapshot["injected"] == {
        "unavailable": 1,
        "throttle": 1,
        "internal_failure": 1,
        "model_error": 1,
        "busy": 1,
        "delayed": 0,
    }
    assert snapshot["invocations"] == 6
    assert all(v == 0 for v in snapshot["plan"].values())


def test_botocore_retries_a_throttled_call_until_it_succeeds(
    live_server: LiveServer, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    arm(live_server, throttle=1)
    client = runtime_client(live_server.base_url, retries=3)
    response = invoke(client, bicycle_png)
    assert json.loads(response["Body"].read()) == classifier.predict_bytes(bicycle_png)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert live_server.faults.snapshot()["injected"]["throttle"] == 1


def test_unavailable_until_cleared_then_latency(
    live_server: LiveServer, bicycle_png: bytes
) -> None:
    client = runtime_client(live_server.base_url)
    assert arm(live_server, unavailable=-1)["plan"]["unavailable"] == -1
    for _ in range(3):
        with pytest.raises(client.exceptions.ServiceUnavailable):
            invoke(client, bicycle_png)
    cleared = httpx.delete(f"{live_server.base_url}/_faults").json()
    assert cleared["plan"]["unavailable"] == 0
    assert cleared["injected"]["unavailable"] == 3

    arm(live_server, latency_ms=150)
    started = time.monotonic()
    assert invoke(client, bicycle_png)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert time.monotonic() - started >= 0.15
    assert live_server.faults.snapshot()["injected"]["delayed"] == 1


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"explode": 1}, "unknown fault 'explode'"),
        ({"throttle": "two"}, "must be an integer"),
        ({"throttle": -5}, "count >= 0"),
        ({}, "non-empty JSON object"),
    ],
)
def test_bad_fault_plans_are_refused(
    live_server: LiveServer, plan: dict[str, Any], words: str
) -> None:
    response = httpx.post(f"{live_server.base_url}/_faults", json=plan)
    assert response.status_code == 400
    assert words in response.json()["message"]
    not_json = httpx.post(
        f"{live_server.base_url}/_faults",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 400


def test_the_fault_route_refuses_what_a_web_page_can_send(live_server: LiveServer) -> None:
    """A page the tester opens may POST ``text/plain`` to 127.0.0.1 with no preflight (a
    CORS "simple" request), and a DNS-rebinding page sends its own name as the Host:
    neither arms, reads or clears a fault. Loopback names and addresses still do."""
    url = f"{live_server.base_url}/_faults"
    plan = b'{"unavailable": -1}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        simple = httpx.post(url, content=plan, headers=headers)
        assert simple.status_code == 415, (content_type, simple.text)
        assert "application/json" in simple.json()["message"]
    rebound = {"Host": f"rebinding.example:{httpx.URL(url).port}"}
    armed = httpx.post(url, content=plan, headers=rebound | {"Content-Type": "application/json"})
    assert armed.status_code == 403 and "is not served" in armed.json()["message"]
    assert httpx.get(url, headers=rebound).status_code == 403
    assert httpx.delete(url, headers=rebound).status_code == 403
    assert live_server.faults.snapshot()["plan"]["unavailable"] == 0
    for host in ("localhost", "127.0.0.1:8080", "127.1.2.3", "[::1]:8080", "LOCALHOST:1"):
        assert httpx.get(url, headers={"Host": host}).status_code == 200, host
    for host in ("localhost.rebinding.example", "10.0.0.1", "[::2]", "", "127.0.0.1.nip.io"):
        assert httpx.get(url, headers={"Host": host}).status_code == 403, host


def test_concurrent_clients_get_their_own_answers(
    live_server: LiveServer, classifier: OnnxClassifier, sample_pngs: list[bytes]
) -> None:
    client = runtime_client(live_server.base_url, max_pool_connections=8)
    bodies = sample_pngs * 6
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda body: json.loads(invoke(client, body)["Body"].read()), bodies)
        )
    assert answers == [classifier.predict_bytes(body) for body in bodies]


def test_embedded_server_from_settings_wires_capture_and_faults(
    tmp_path: Path, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    settings = ServerSettings(
        model_dir=MODEL_DIR,
        endpoint_name=ENDPOINT,
        max_body_bytes=MAX_BODY,
        max_image_pixels=4096,
        capture_destination=str(tmp_path),
        enable_faults=True,
    )
    with ModelServer.for_model(settings) as server:
        server_port = server.port
        assert server.base_url == f"http://127.0.0.1:{server_port}"
        client = runtime_client(server.base_url)
        assert httpx.post(f"{server.base_url}/_faults", json={"throttle": 1}).status_code == 200
        with pytest.raises(ClientError, match="ThrottlingException"):
            invoke(client, bicycle_png)
        body = invoke(client, bicycle_png)["Body"].read()
        assert json.loads(body) == classifier.predict_bytes(bicycle_png)
        with pytest.raises(ServerStartError, match="already in use"):
            ModelServer.for_model(settings, port=server.port).start()
    with pytest.raises(ServerStartError, match="cannot start again"):
        server.start()
    bind_socket("127.0.0.1", server_port).close()  # the port was released
    (capture_file,) = tmp_path.rglob("*.jsonl")
    (line,) = capture_file.read_text().splitlines()
    assert json.loads(line)["captureData"]["endpointOutput"]["data"] == body.decode()


def test_error_codes_and_statuses_match_botocores_service_model() -> None:
    import botocore.session

    from scones.serving.errors import ServiceCode

    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    modeled = {shape.name: shape for shape in model.operation_model("InvokeEndpoint").error_shapes}
    for kind in ServiceCode:
        if kind in (ServiceCode.THROTTLING, ServiceCode.REQUEST_TIMEOUT):
            assert kind.code not in modeled  # a ClientError whose code botocore retries
            continue
        assert modeled[kind.code].metadata["error"]["httpStatusCode"] == kind.status
    assert {"OriginalStatusCode", "OriginalMessage"} <= set(modeled["ModelError"].members)
