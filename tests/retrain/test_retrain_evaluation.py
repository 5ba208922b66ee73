"""Reading the evaluation report for the gate: a FAILED reason must name the object."""

from __future__ import annotations

from typing import Any

import pytest
from scones_core.monitoring.locations import S3Location, S3ReadError
from scones_core.retraining.evaluation import read_evaluation
from scones_core.retraining.gate import EvaluationReportError

from tests.retrain.conftest import BUCKET

URI = f"s3://{BUCKET}/retraining/run/evaluation/gate-evaluation.json"


def test_the_report_is_read_as_json(s3: Any) -> None:
    location = S3Location.parse(URI)
    s3.put_object(Bucket=BUCKET, Key=location.key, Body=b'{"threshold": 0.9}')
    assert read_evaluation(s3, location) == {"threshold": 0.9}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, f"no evaluation report at {URI}"),
        (b"{not json", f"{URI} is not a JSON evaluation report"),
        (b"\xff\xfe\xfa", f"{URI} is not a JSON evaluation report"),
    ],
)
def test_a_missing_or_unparsable_report_is_named(s3: Any, body: bytes | None, message: str) -> None:
    location = S3Location.parse(URI)
    if body is not None:
        s3.put_object(Bucket=BUCKET, Key=location.key, Body=body)
    with pytest.raises(EvaluationReportError) as info:
        read_evaluation(s3, location)
    assert str(info.value).startswith(message)
    assert "Traceback" not in str(info.value)


def test_any_other_s3_failure_names_the_report_too(s3: Any) -> None:
    location = S3Location.parse(URI.replace(BUCKET, "no-such-bucket"))
    with pytest.raises(S3ReadError, match="no-such-bucket/retraining/run/evaluation"):
        read_evaluation(s3, location)
