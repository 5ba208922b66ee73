"""Fixtures for the workflow tests: real images, the shipped model, the offline stack."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import ImageFile
from scones_core.errors import ImageRejected
from scones_core.images import normalise_image
from scones_core.settings import ImageLimits

from scones.model.artifact import OnnxClassifier
from scones.offline.stack import OfflineStack, StackOptions
from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import PROJECT_ROOT, function_environment, parameter_defaults

DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
SAMPLES = PROJECT_ROOT / "samples"
EVENTS = PROJECT_ROOT / "events"
FUNCTIONS = PROJECT_ROOT / "functions"

# Fast retries: every retry in the offline stack really sleeps.
FAST_RETRIES = {
    "RetryIntervalSeconds": "1",
    "RetryMaxDelaySeconds": "1",
    "RetryMaxAttempts": "3",
    "IngestRetrySeconds": "1",
}
# Tests that read execution histories (which states ran, how often) need a Standard workflow:
# an Express one keeps no history (DescribeExecution and GetExecutionHistory refuse it, on AWS
# and in moto). The template's default is EXPRESS; test_workflow_express_e2e.py runs the
# duplicate and replay cases on it.
HISTORY = {"WorkflowType": "STANDARD"}


def template_limits() -> ImageLimits:
    """The serialize function's limits, from the template's defaults (as deployed)."""
    return ImageLimits.from_env(function_environment("SerializeImageFunction"))


SAMPLE_BUCKET = "scones-123456789012-us-east-1-images"


def load_handler(name: str, module_name: str | None = None) -> ModuleType:
    """Import ``functions/<name>/app.py`` fresh (its settings are read at import)."""
    module_name = module_name or f"handler_{name}"
    sys.modules.pop(module_name, None)
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def start_function(
    monkeypatch: pytest.MonkeyPatch,
    module_name: str | None = None,
    region: str = "us-east-1",
    *,
    workflow_type: str = "STANDARD",
    definition: dict[str, Any] | None = None,
) -> tuple[Any, str, ModuleType]:
    """A state machine in (an active) moto and the start handler configured for it.

    STANDARD by default, whose executions moto lists and describes; an EXPRESS handler
    waits for each execution (StartSyncExecution), which needs moto's interpreter
    (``execute_state_machine``) and ``scones.offline.sync_executions``."""
    import boto3

    sfn = boto3.client("stepfunctions", region_name=region)
    arn = sfn.create_state_machine(
        name="classify",
        definition=json.dumps(
            definition or {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
        ),
        roleArn="arn:aws:iam::123456789012:role/sfn",
        type=workflow_type,
    )["stateMachineArn"]
    monkeypatch.setenv("STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("WORKFLOW_TYPE", workflow_type)
    queue = boto3.client("sqs", region_name=region).create_queue(QueueName="ingest")
    monkeypatch.setenv("INGEST_QUEUE_URL", queue["QueueUrl"])
    monkeypatch.setenv("INGEST_RETRY_SECONDS", parameter_defaults()["IngestRetrySeconds"])
    # The bucket and prefix the sample events (events/start_workflow*.json) name.
    monkeypatch.setenv("IMAGE_BUCKET", SAMPLE_BUCKET)
    monkeypatch.setenv("INCOMING_PREFIX", "incoming/")
    return sfn, arn, load_handler("start_workflow", module_name)


@pytest.fixture(scope="session")
def classifier() -> OnnxClassifier:
    return OnnxClassifier(SHIPPED_MODEL_DIR)


@pytest.fixture(scope="session")
def threshold() -> float:
    return float(parameter_defaults()["ConfidenceThreshold"])


@pytest.fixture(scope="session")
def local_predictions(classifier: OnnxClassifier) -> dict[Path, tuple[str, float]]:
    """What the shipped model says of each sample image after the workflow's normalisation."""
    from scones.model.artifact import decode_image

    limits = template_limits()
    predictions = {}
    for path in sorted(SAMPLES.glob("*/*.png")) + sorted(DATA.glob("*/*.png"))[::10]:
        try:
            png = normalise_image(path.read_bytes(), limits).png
        except ImageRejected:
            continue
        probabilities = classifier.predict_images([decode_image(png)])[0]
        index = int(probabilities.argmax())
        predictions[path] = (classifier.labels[index], float(probabilities[index]))
    return predictions


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    overrides = {**FAST_RETRIES, **HISTORY}
    with OfflineStack(StackOptions(enable_faults=True, overrides=overrides)) as running:
        yield running


@pytest.fixture(scope="session")
def model_server_url() -> Iterator[str]:
    """The real model server with the shipped model, on a free loopback port."""
    from scones.serving.server import ModelServer, ServerSettings, build_app

    params = parameter_defaults()
    settings = ServerSettings(
        model_dir=SHIPPED_MODEL_DIR,
        endpoint_name=params["EndpointName"],
        max_body_bytes=int(params["MaxImageBytes"]),
        max_image_pixels=int(params["MaxImagePixels"]),
    )
    server = ModelServer(build_app(settings))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def decoder_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every pixel decode Pillow starts."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        calls.append(str(self.format))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls
