"""Fixtures for the monitor: moto S3 and DynamoDB, real capture lines, real model output.

Capture lines are built by the model server's own writer
(``scones.serving.capture.build_capture_record``) from probabilities the shipped
ONNX model gives for real CIFAR-100 images, so the monitor is tested on what the
system really writes.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR
from scones.serving.capture import build_capture_record
from scones.template_params import load_template, parameter_default

REGION = "us-east-1"
BUCKET = "scones-monitor-test"
TABLE = "scones-results-test"
STATE_TABLE = "scones-monitor-state-test"
ENDPOINT = "scones-bicycle-motorcycle"
VARIANT = "AllTraffic"
CAPTURE_PREFIX = "datacapture"
REPORTS_PREFIX = "monitoring/reports"
BASELINE_KEY = "models/bicycle-motorcycle/baseline.json"
MODEL_DIR = SHIPPED_MODEL_DIR
IMAGES = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
LABELS = ("bicycle", "motorcycle")
# The window the tests monitor: [12:00, 13:00) on the day of the example event.
WINDOW_END = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
WINDOW_START = WINDOW_END - timedelta(minutes=60)


def monitor_env(**overrides: str) -> dict[str, str]:
    """The monitor's environment as template.yaml sets it, pointed at the test resources."""
    env = {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
        "POWERTOOLS_METRICS_NAMESPACE": "SconesUnlimited",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "RESULTS_TABLE_NAME": TABLE,
        "MONITOR_STATE_TABLE_NAME": STATE_TABLE,
        "DATA_CAPTURE_S3_URI": f"s3://{BUCKET}/{CAPTURE_PREFIX}",
        "ENDPOINT_NAME": ENDPOINT,
        "ENDPOINT_VARIANT": VARIANT,
        "LABELS": parameter_default("ModelLabels"),
        "CONFIDENCE_THRESHOLD": parameter_default("ConfidenceThreshold"),
        "MONITOR_WINDOW_MINUTES": "60",
        "MONITOR_SETTLE_MINUTES": "0",
        "MODEL_MONITOR_LAG_MINUTES": "0",
        "MONITOR_MIN_REQUESTS": "10",
        "DATA_CAPTURE_SAMPLING_PERCENTAGE": "100",
        "LOW_CONFIDENCE_ALERT_SHARE": "0.9",
        "DRIFT_ALERT_THRESHOLD": "0.3",
        "DRIFT_ALERT_SIGNIFICANCE": parameter_default("DriftAlertSignificance"),
        "BASELINE_S3_URI": f"s3://{BUCKET}/{BASELINE_KEY}",
        "MONITORING_SCHEDULE_NAME": "",
        "MONITORING_REPORTS_S3_URI": f"s3://{BUCKET}/{REPORTS_PREFIX}",
        "RETRAINING_STATE_MACHINE_ARN": "",
        "RETRAINING_JOB_CONFIG_S3_URI": "",
        "RETRAINING_COOLDOWN_HOURS": "24",
        "RETRAINING_MAX_COOLDOWN_HOURS": parameter_default("RetrainingMaxCooldownHours"),
        "REVIEW_LOOKBACK_DAYS": parameter_default("ReviewLookbackDays"),
    }
    env.update(overrides)
    return env


@pytest.fixture(autouse=True)
def domain_logging() -> Iterator[None]:
    """Every domain log call is rendered (a bad ``extra`` fails) and reaches caplog.

    Importing the handler points the ``scones_core`` logger at Powertools' JSON
    handler, as it must in Lambda; each test starts from a plain logger again.
    """
    import logging

    domain = logging.getLogger("scones_core")
    saved = (domain.level, domain.propagate, list(domain.handlers))
    domain.setLevel(logging.DEBUG)
    domain.propagate = True
    domain.handlers.clear()
    try:
        yield
    finally:
        domain.setLevel(saved[0])
        domain.propagate = saved[1]
        domain.handlers[:] = saved[2]


# ---- real model output -------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    true_label: str
    probabilities: tuple[float, ...]


@pytest.fixture(scope="session")
def predictions() -> dict[str, list[Prediction]]:
    """Model probabilities for 40 real images of each class (programmatic without a model)."""
    by_label: dict[str, list[Prediction]] = {}
    paths = {label: sorted((IMAGES / label).glob("*.png"))[:40] for label in LABELS}
    if (MODEL_DIR / "model.onnx").is_file():
        from scones.model.artifact import OnnxClassifier

        classifier = OnnxClassifier(MODEL_DIR)
        assert classifier.labels == LABELS
        for label, files in paths.items():
            by_label[label] = [
                Prediction(label, tuple(classifier.predict_bytes(path.read_bytes())))
                for path in files
            ]
    else:
        rng = random.Random(7)
        for index, label in enumerate(LABELS):
            rows = []
            for _ in range(40):
                p = rng.uniform(0.5, 1.0)
                rows.append(Prediction(label, (p, 1 - p) if index == 0 else (1 - p, p)))
            by_label[label] = rows
    return by_label


# ---- capture files -------------------------------------------------------------


def capture_line(
    probabilities: tuple[float, ...] | list[float],
    at: datetime,
    *,
    event_id: str | None = None,
    output_encoding: str = "JSON",
) -> str:
    """One capture line exactly as the model server writes it (optionally base64 output).

    Each line gets a fresh UUID eventId, as the server gives each request, unless
    the test names one (to write duplicates on purpose).
    """
    output = json.dumps(list(probabilities))
    record = build_capture_record(
        input_body=b"\x89PNG-not-read-by-the-monitor",
        input_content_type="image/png",
        output_body=output,
        output_content_type="application/json",
        event_id=str(uuid.uuid4()) if event_id is None else event_id,
        inference_time=at,
    )
    if output_encoding == "BASE64":
        import base64

        record["captureData"]["endpointOutput"]["data"] = base64.b64encode(output.encode()).decode()
        record["captureData"]["endpointOutput"]["encoding"] = "BASE64"
    return json.dumps(record, separators=(",", ":"))


def capture_key(at: datetime, name: str) -> str:
    return f"{CAPTURE_PREFIX}/{ENDPOINT}/{VARIANT}/{at:%Y/%m/%d/%H}/{name}.jsonl"


@dataclass
class CaptureWriterHelper:
    s3: Any

    def put(self, folder_hour: datetime, name: str, lines: list[str]) -> str:
        key = capture_key(folder_hour, name)
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())
        return key


# ---- AWS (moto) ----------------------------------------------------------------


@dataclass
class Aws:
    s3: Any
    dynamodb: Any

    def put_result(self, status: str, recorded_at: datetime, index: int, **extra: Any) -> None:
        """An item shaped like the workflow's record (the monitor only reads the index);
        ``extra`` adds attributes (a review's, say)."""
        table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
        item: dict[str, Any] = {
            "pk": f"{BUCKET}/incoming/{index}.png#v{index}",
            "bucket": BUCKET,
            "key": f"incoming/{index}.png",
            "version_id": f"v{index}",
            "status": status,
            "endpoint_name": ENDPOINT,
            "execution_arn": f"arn:aws:states:{REGION}:123456789012:execution:wf:{index}",
            "recorded_at": recorded_at.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{recorded_at.microsecond // 1000:03d}Z",
            "threshold": Decimal(parameter_default("ConfidenceThreshold")),
        }
        if status in {"REJECTED", "FAILED"}:
            item.update(error_code="NotAnImage", reason="not an image")
        else:
            item.update(
                label="bicycle",
                confidence=Decimal("0.95"),
                probabilities={"bicycle": Decimal("0.95"), "motorcycle": Decimal("0.05")},
            )
        item.update(extra)
        table.put_item(Item=item)

    def put_review(
        self,
        index: int,
        *,
        recorded_at: datetime,
        reviewed_at: datetime,
        classified_status: str,
        answer: str,
    ) -> None:
        """A record as ``scones review`` leaves it (the model said ``bicycle``)."""
        self.put_result(
            "REVIEWED",
            recorded_at,
            index,
            classified_status=classified_status,
            review_label=answer,
            reviewed_at=reviewed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            reviewer="tester",
            **({"review_sampled": True} if classified_status == "ACCEPTED" else {}),
        )

    def put_baseline(self, path: Path = MODEL_DIR / "baseline.json") -> dict[str, Any]:
        body = path.read_bytes()
        self.s3.put_object(Bucket=BUCKET, Key=BASELINE_KEY, Body=body)
        document: dict[str, Any] = json.loads(body)
        return document


def create_table_as_declared(dynamodb: Any, logical_id: str, name: str) -> None:
    """A table exactly as template.yaml declares its keys, indexes and TTL."""
    spec = load_template()["Resources"][logical_id]["Properties"]
    dynamodb.create_table(
        TableName=name,
        BillingMode=spec["BillingMode"],
        AttributeDefinitions=spec["AttributeDefinitions"],
        KeySchema=spec["KeySchema"],
        **(
            {"GlobalSecondaryIndexes": spec["GlobalSecondaryIndexes"]}
            if "GlobalSecondaryIndexes" in spec
            else {}
        ),
    )
    if "TimeToLiveSpecification" in spec:
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification=spec["TimeToLiveSpecification"]
        )


def create_results_table(dynamodb: Any) -> None:
    create_table_as_declared(dynamodb, "ResultsTable", TABLE)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name, value in monitor_env().items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        create_results_table(dynamodb)
        create_table_as_declared(dynamodb, "MonitorStateTable", STATE_TABLE)
        yield Aws(s3=s3, dynamodb=dynamodb)


@pytest.fixture
def captures(aws: Aws) -> CaptureWriterHelper:
    return CaptureWriterHelper(aws.s3)
