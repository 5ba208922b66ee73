"""The app in-process (Starlette's TestClient): contract, content types, every error path."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pillow_heif
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scones_core.endpoint_response import CUSTOM_ATTRIBUTES_HEADER, model_version

from scones.model.artifact import ModelArtifactError, OnnxClassifier
from scones.serving.app import RUNTIME_MAX_PAYLOAD_BYTES, ProductionVariant
from tests import crafted_graphs as crafted
from tests.serving.conftest import ENDPOINT, MAX_BODY, VARIANT, AppFactory, to_jpeg

PNG = {"Content-Type": "image/png"}


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


def probabilities(response: Any) -> list[float]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    values = response.json()
    assert isinstance(values, list)
    return values


def test_ping_reports_the_loaded_model(client: TestClient, classifier: OnnxClassifier) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    body = response.json()
    assert body["labels"] == ["bicycle", "motorcycle"] == list(classifier.labels)
    assert body["model_version"] == classifier.manifest.version
    assert (body["endpoint"], body["variant"]) == (ENDPOINT, VARIANT)


def test_invocations_name_the_model_in_custom_attributes(
    client: TestClient, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    response = client.post("/invocations", content=bicycle_png, headers=PNG)
    probabilities(response)
    attributes = response.headers[CUSTOM_ATTRIBUTES_HEADER]
    assert model_version(attributes) == classifier.manifest.version


def test_a_version_that_cannot_travel_stops_the_variant_not_each_request(
    classifier: OnnxClassifier,
) -> None:
    manifest = dataclasses.replace(classifier.manifest, version="caf\u00e9")
    renamed = SimpleNamespace(manifest=manifest)
    with pytest.raises(ModelArtifactError, match=r"variant canary: .*cannot travel"):
        ProductionVariant("canary", renamed)  # type: ignore[arg-type]


def test_invocations_returns_the_bare_models_probabilities_in_label_order(
    client: TestClient, classifier: OnnxClassifier, sample_pngs: list[bytes]
) -> None:
    for png in sample_pngs:
        got = probabilities(client.post("/invocations", content=png, headers=PNG))
        assert got == classifier.predict_bytes(png)
        assert len(got) == 2 and abs(sum(got) - 1) < 1e-5


@pytest.mark.parametrize(
    "content_type", ["image/png", "application/x-image", "IMAGE/PNG; charset=binary"]
)
def test_png_is_accepted_under_every_supported_content_type(
    client: TestClient, bicycle_png: bytes, content_type: str
) -> None:
    response = client.post(
        "/invocations", content=bicycle_png, headers={"Content-Type": content_type}
    )
    assert len(probabilities(response)) == 2


def test_jpeg_is_accepted(
    client: TestClient, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    jpeg = to_jpeg(bicycle_png)
    response = client.post("/invocations", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert probabilities(response) == classifier.predict_bytes(jpeg)


def test_a_phone_heic_is_answered_as_the_same_photo_in_png(
    client: TestClient, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    """A HEIC body (the generic image type: SageMaker's own content types name PNG and
    JPEG) decodes through the same image rules, pi-heif's libheif underneath."""
    photo = Image.open(io.BytesIO(bicycle_png)).convert("RGB")
    heic = io.BytesIO()
    pillow_heif.from_pillow(photo).save(heic, quality=100, chroma=444)
    response = client.post(
        "/invocations", content=heic.getvalue(), headers={"Content-Type": "application/x-image"}
    )
    answer = probabilities(response)
    assert answer == classifier.predict_bytes(heic.getvalue())
    expected = classifier.predict_bytes(bicycle_png)
    assert int(np.argmax(answer)) == int(np.argmax(expected)) == 0  # a bicycle either way
    assert abs(answer[0] - expected[0]) < 0.1


@pytest.mark.parametrize(
    "accept",
    [
        "application/json;q=0.5, text/html;q=1",
        "*/*;q=0.1",
        "text/html, application/*",
        "application/*;q=0, application/json",  # the specific range overrules the wider one
        "application/json;q=high",  # a malformed weight is ignored
    ],
)
def test_an_accept_that_allows_json_at_any_weight_gets_the_answer(
    client: TestClient, bicycle_png: bytes, accept: str
) -> None:
    response = client.post("/invocations", content=bicycle_png, headers={**PNG, "Accept": accept})
    assert response.status_code == 200 and len(probabilities(response)) == 2


def test_runtime_route_answers_like_sagemaker(
    client: TestClient, classifier: OnnxClassifier, motorcycle_png: bytes
) -> None:
    response = client.post(
        f"/endpoints/{ENDPOINT}/invocations", content=motorcycle_png, headers=PNG
    )
    assert probabilities(response) == classifier.predict_bytes(motorcycle_png)
    assert response.headers["x-amzn-invoked-production-variant"] == VARIANT
    assert response.headers["x-amzn-requestid"]


def _png_of_size(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(out, format="PNG")
    return out.getvalue()


def _tiff(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, format="TIFF")
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("not an image", 400, "not an image"),
        ("truncated", 400, "truncated"),
        ("empty", 400, "empty"),
        ("heic without an image", 400, "CorruptImage: The HEIF has 0 meta boxes"),
        ("too many pixels", 400, "pixels"),
        # Decodes, but the preprocessing has no rule for its colours: the request's fault.
        ("lab colours", 400, "UnsupportedImageFormat: Images in colour mode LAB"),
        ("wrong content type", 415, "unsupported Content-Type 'text/csv'"),
        ("missing content type", 415, "unsupported Content-Type missing"),
        ("unacceptable accept", 406, "Accept 'text/csv'"),
        # q=0 means "not this": JSON refused, HTML wanted (RFC 9110 12.4.2).
        ("json refused by q=0", 406, "Accept 'application/json;q=0, text/html'"),
        # The most specific range decides: */* does not overrule application/json;q=0.
        ("json refused, anything else welcome", 406, "Accept 'application/json;q=0, */*'"),
        ("too large", 413, f"the limit is {MAX_BODY} bytes (the server's --max-body-bytes)"),
    ],
)
def test_container_errors_name_the_problem_and_the_server_keeps_serving(
    make_app: AppFactory, bicycle_png: bytes, case: str, status: int, words: str
) -> None:
    body, headers = bicycle_png, dict(PNG)
    if case == "not an image":
        body = b"this is plain text, not a picture"
    elif case == "truncated":
        body = bicycle_png[: len(bicycle_png) // 2]
    elif case == "empty":
        body = b""
    elif case == "heic without an image":
        body = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)
    elif case == "too many pixels":
        body = _png_of_size(300, 300)
    elif case == "lab colours":
        out = io.BytesIO()
        Image.new("LAB", (16, 16), (50, 10, 10)).save(out, format="TIFF")
        body, headers = out.getvalue(), {"Content-Type": "application/x-image"}
    elif case == "wrong content type":
        headers = {"Content-Type": "text/csv"}
    elif case == "missing content type":
        headers = {}
    elif case == "unacceptable accept":
        headers["Accept"] = "text/csv"
    elif case == "json refused by q=0":
        headers["Accept"] = "application/json;q=0, text/html"
    elif case == "json refused, anything else welcome":
        headers["Accept"] = "application/json;q=0, */*"
    elif case == "too large":
        body = b"\x89PNG" + bytes(MAX_BODY)
    with TestClient(make_app(max_image_pixels=300 * 299)) as client:
        response = client.post("/invocations", content=body, headers=headers)
        assert response.status_code == status
        assert words in response.json()["message"]
        assert client.post("/invocations", content=bicycle_png, headers=PNG).status_code == 200


def test_every_supported_format_is_served_with_the_same_answer_as_its_png(
    client: TestClient, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    """The server applies the product's image rules: TIFF is accepted as the workflow accepts it."""
    response = client.post(
        "/invocations", content=_tiff(bicycle_png), headers={"Content-Type": "application/x-image"}
    )
    assert response.status_code == 200
    assert response.json() == classifier.predict_bytes(bicycle_png)


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(
    client: TestClient, bicycle_png: bytes
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield bytes(MAX_BODY // 4)

    response = client.post("/invocations", content=chunks(), headers=PNG)
    assert response.status_code == 413
    assert f"more than {MAX_BODY} bytes" in response.json()["message"]


def test_runtime_route_errors_carry_the_service_error_shape(
    client: TestClient, bicycle_png: bytes
) -> None:
    unknown = client.post("/endpoints/other/invocations", content=bicycle_png, headers=PNG)
    assert unknown.status_code == 400
    assert unknown.headers["x-amzn-errortype"] == "ValidationError"
    assert "Endpoint other not found" in unknown.json()["message"]

    bad = client.post(f"/endpoints/{ENDPOINT}/invocations", content=b"junk", headers=PNG)
    assert bad.status_code == 424
    assert bad.headers["x-amzn-errortype"] == "ModelError"
    body = bad.json()
    assert body["OriginalStatusCode"] == 400
    # The container's body verbatim, named by SageMaker's name for a PrimaryContainer.
    container = client.post("/invocations", content=b"junk", headers=PNG)
    assert body["OriginalMessage"] == container.text
    assert "not an image" in json.loads(body["OriginalMessage"])["message"]
    # And the endpoint's log group, as SageMaker names where the container logged.
    log_group = body["LogStreamArn"]
    assert log_group.startswith("arn:aws:logs:") and log_group.endswith(
        f":log-group:/aws/sagemaker/Endpoints/{ENDPOINT}"
    )
    assert body["message"] == (
        f'Received client error (400) from primary with message "{container.text}". '
        # As SageMaker words it: the log group's console page, in the account.
        f"See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        f"#logEventViewer:group=/aws/sagemaker/Endpoints/{ENDPOINT} in account 000000000000 "
        "for more information."
    )


def test_runtime_route_refuses_an_unknown_target_variant(
    client: TestClient, bicycle_png: bytes
) -> None:
    response = client.post(
        f"/endpoints/{ENDPOINT}/invocations",
        content=bicycle_png,
        headers={**PNG, "X-Amzn-SageMaker-Target-Variant": "Canary"},
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationError"
    assert "Variant Canary not found" in response.json()["message"]


def test_runtime_route_applies_the_invoke_endpoint_payload_limit(
    make_app: AppFactory, bicycle_png: bytes
) -> None:
    with TestClient(make_app(max_body_bytes=RUNTIME_MAX_PAYLOAD_BYTES * 2)) as client:
        body = bicycle_png + bytes(RUNTIME_MAX_PAYLOAD_BYTES)
        runtime = client.post(f"/endpoints/{ENDPOINT}/invocations", content=body, headers=PNG)
        assert runtime.status_code == 400
        assert runtime.headers["x-amzn-errortype"] == "ValidationError"
        assert f"at most {RUNTIME_MAX_PAYLOAD_BYTES} bytes" in runtime.json()["message"]
        # The container route has only the container's own limit; the body decodes as the PNG.
        assert client.post("/invocations", content=body, headers=PNG).status_code == 200


def test_fault_routes_do_not_exist_unless_enabled(client: TestClient) -> None:
    assert client.get("/_faults").status_code == 404
    assert client.post("/_faults", json={"throttle": 1}).status_code == 404


def test_the_model_failing_is_a_500_with_the_reason(
    make_app: AppFactory, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    class WrongInputSize:
        """The real model fed a tensor of the wrong shape: onnxruntime raises."""

        labels = classifier.labels
        input_size = classifier.input_size

        def predict_images(self, images: list[Image.Image]) -> np.ndarray:
            return classifier.predict_tensor(np.zeros((1, 3, 7, 7), dtype=np.float32))

    with TestClient(make_app(classifier=WrongInputSize())) as client:
        response = client.post("/invocations", content=bicycle_png, headers=PNG)
        assert response.status_code == 500
        assert response.json()["message"].startswith("the model failed:")
        wrapped = client.post(
            f"/endpoints/{ENDPOINT}/invocations", content=bicycle_png, headers=PNG
        )
        assert wrapped.status_code == 424
        assert wrapped.json()["OriginalStatusCode"] == 500
        assert wrapped.json()["message"].startswith("Received server error (500)")


def test_a_model_answering_nan_is_a_500_not_a_200_that_is_not_json(
    make_app: AppFactory, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    """JSON has no NaN: a 200 with one would fail every image downstream while the
    endpoint's 5XX count, which the canary's rollback alarm watches, stayed at zero."""

    class Broken:
        labels = classifier.labels
        input_size = classifier.input_size

        def predict_images(self, images: list[Image.Image]) -> np.ndarray:
            return np.array([[np.nan, np.inf]], dtype=np.float32)

    with TestClient(make_app(classifier=Broken())) as client:
        response = client.post("/invocations", content=bicycle_png, headers=PNG)
        assert response.status_code == 500
        assert response.json()["message"] == (
            "the model's answer is not probabilities: the answer for image 1 of 1 is "
            "[nan, inf]: probability nan is outside [0, 1]"
        )
        wrapped = client.post(
            f"/endpoints/{ENDPOINT}/invocations", content=bicycle_png, headers=PNG
        )
        assert (wrapped.status_code, wrapped.json()["OriginalStatusCode"]) == (424, 500)


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


def test_an_answer_the_workflow_refuses_is_a_500_in_sagemakers_shape(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A real graph that passes the load-time dry run but answers a dark image with rows
    summing to 1.5: a 200 would fail the image as ModelResponseInvalid downstream while
    the 5XX alarm, which the canary's rollback watches, stayed at zero."""
    model = OnnxClassifier(crafted.artifact(tmp_path / "model", crafted.wrong_on_dark_images()))
    app = make_app(classifier=model)
    with TestClient(app) as client:
        bright = client.post("/invocations", content=_png((200, 200, 200)), headers=PNG)
        assert probabilities(bright) == [0.5, 0.5]
        dark = _png((0, 0, 0))
        response = client.post("/invocations", content=dark, headers=PNG)
        assert response.status_code == 500
        assert response.json()["message"] == (
            "the model's answer is not probabilities: the answer for image 1 of 1 is "
            "[0.75, 0.75]: the probabilities sum to 1.500000, not 1"
        )
        wrapped = client.post(f"/endpoints/{ENDPOINT}/invocations", content=dark, headers=PNG)
        assert wrapped.status_code == 424
        assert wrapped.headers["x-amzn-errortype"] == "ModelError"
        assert wrapped.json()["OriginalStatusCode"] == 500
        assert json.loads(wrapped.json()["OriginalMessage"]) == response.json()
        # What the canary's rollback alarm (Invocation5XXErrors) counts.
        assert app.state.endpoint.primary.errors_5xx == 1


def test_an_answer_of_another_shape_is_a_500_not_an_unhandled_error(
    make_app: AppFactory, classifier: OnnxClassifier, bicycle_png: bytes
) -> None:
    """A [1, 1, 2] answer (one more list per image) once raised outside the error handling:
    a bare 500 with a traceback instead of the container's error."""

    class Rank3:
        labels = classifier.labels
        input_size = classifier.input_size

        def predict_images(self, images: list[Image.Image]) -> np.ndarray:
            return np.array([[[0.5, 0.5]]], dtype=np.float32)

    with TestClient(make_app(classifier=Rank3())) as client:
        response = client.post("/invocations", content=bicycle_png, headers=PNG)
        assert response.status_code == 500
        assert response.json()["message"] == (
            "the model's answer is not probabilities: the answer has shape [1, 1, 2] for 1 "
            "image(s), not [1, 2] (one probability per label: bicycle, motorcycle)"
        )
        wrapped = client.post(
            f"/endpoints/{ENDPOINT}/invocations", content=bicycle_png, headers=PNG
        )
        assert (wrapped.status_code, wrapped.json()["OriginalStatusCode"]) == (424, 500)


def test_inference_runs_concurrently_in_worker_threads(
    make_app: AppFactory, classifier: OnnxClassifier, sample_pngs: list[bytes]
) -> None:
    """Two requests must be inside the model at once, or the barrier times out."""
    barrier = threading.Barrier(2, timeout=20)
    loop_threads: set[int] = set()
    model_threads: set[int] = set()

    class Rendezvous:
        labels = classifier.labels
        input_size = classifier.input_size

        def predict_images(self, images: list[Image.Image]) -> np.ndarray:
            model_threads.add(threading.get_ident())
            barrier.wait()
            return classifier.predict_images(images)

    # Two slots whatever the machine's CPU count, or the barrier could never fill.
    app = make_app(classifier=Rendezvous(), max_concurrency=2)

    @app.get("/_loop_thread")
    async def loop_thread() -> dict[str, int]:
        loop_threads.add(threading.get_ident())
        return {}

    with TestClient(app) as client:
        client.get("/_loop_thread")
        results: list[Any] = [None, None]

        def call(index: int) -> None:
            results[index] = client.post("/invocations", content=sample_pngs[index], headers=PNG)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert [r.status_code for r in results] == [200, 200]
    assert [json.loads(r.text) for r in results] == [
        classifier.predict_bytes(sample_pngs[0]),
        classifier.predict_bytes(sample_pngs[1]),
    ]
    assert len(model_threads) == 2
    assert not model_threads & loop_threads
