"""``scones backfill --wait`` names the result files of the batches that failed within the
tolerated share: the Map Run's manifest, as Step Functions' ResultWriter writes it, lists
them under ``ResultFiles.FAILED``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from scones.cli.backfill import _report_failed_batches, failed_result_files
from tests.moto_s3 import moto_bucket

BUCKET = "scones-123456789012-us-east-1-images"
RUN = "backfill/0c5b2d4e-5c43-3f6a-9a8e-1b2c3d4e5f60"


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_bucket(BUCKET) as client:
        yield client


def manifest(failed: list[str]) -> bytes:
    """A manifest in the layout the Step Functions developer guide gives for ResultWriter."""
    return json.dumps(
        {
            "DestinationBucket": BUCKET,
            "MapRunArn": "arn:aws:states:us-east-1:123456789012:mapRun:scones-backfill/b:0c5b",
            "ResultFiles": {
                "FAILED": [{"Key": key, "Size": 8141} for key in failed],
                "PENDING": [],
                "SUCCEEDED": [{"Key": f"{RUN}/SUCCEEDED_0.json", "Size": 2048}],
            },
        }
    ).encode()


def test_the_failed_batches_result_files_are_named(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(
        Bucket=BUCKET, Key=f"{RUN}/manifest.json", Body=manifest([f"{RUN}/FAILED_0.json"])
    )
    uri = f"s3://{BUCKET}/{RUN}/manifest.json"
    assert failed_result_files(s3, uri) == [f"s3://{BUCKET}/{RUN}/FAILED_0.json"]
    _report_failed_batches(s3, json.dumps({"map_run": "arn", "results": uri}))
    assert capsys.readouterr().out == (
        "1 result file(s) of failed batches (their keys and errors; run the backfill again "
        f"to retry them):\n  s3://{BUCKET}/{RUN}/FAILED_0.json\n"
    )


def test_nothing_is_said_when_no_batch_failed_and_an_unreadable_manifest_is_named(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"{RUN}/manifest.json", Body=manifest([]))
    _report_failed_batches(s3, json.dumps({"results": f"s3://{BUCKET}/{RUN}/manifest.json"}))
    assert capsys.readouterr().out == ""
    gone = f"s3://{BUCKET}/{RUN}/gone.json"
    _report_failed_batches(s3, json.dumps({"results": gone}))
    out = capsys.readouterr().out
    assert out.startswith(f"could not read the backfill's result manifest {gone}: ")
    assert "NoSuchKey" in out
