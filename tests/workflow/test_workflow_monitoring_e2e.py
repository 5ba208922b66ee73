"""The monitoring loop end to end: images through the offline stack, the monitor, the report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SAMPLES
from PIL import Image
from scones_core.monitoring.timestamps import (
    SCHEDULE_TIME_FIELD,
    format_seconds,
    parse_timestamp,
)

from scones.offline.stack import OfflineStack, StackOptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("monitoring-stack")]


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    # A low minimum so a handful of images make a window that may alert.
    options = StackOptions(overrides={"MonitorMinRequests": "5"})
    with OfflineStack(options) as running:
        yield running


def emf_documents(log: Path) -> list[dict[str, object]]:
    documents = []
    for line in log.read_text().splitlines():
        if line.startswith('{"_aws"'):
            documents.append(json.loads(line))
    return documents


def test_monitor_reads_captured_traffic_and_publishes_metrics(stack: OfflineStack) -> None:
    api = stack.api()
    images = sorted(SAMPLES.glob("*/*.png"))[:10]
    uploads = api.upload_files(images, key_prefix="monitored/")
    uploads.append(api.upload_bytes("monitored/not-an-image.png", b"plain text"))
    records = api.wait_for_records(uploads, timeout=120)
    stack.flush_capture()

    # A window that ends on the whole second after the last record, as a scheduled run's
    # does: a run by hand ends within a second, and leaves to the next window a record
    # whose time fell on that second's .000 (written without its fraction, it sorts after
    # the second's other milliseconds: timestamps.recorded_at_before).
    last = max(parse_timestamp(r["recorded_at"]) for r in records.values())
    end = last.replace(microsecond=0) + timedelta(seconds=1)
    while datetime.now(UTC) < end:
        time.sleep(0.02)
    result = api.invoke_monitor({SCHEDULE_TIME_FIELD: format_seconds(end)})

    classified = [r for r in records.values() if r["status"] in ("ACCEPTED", "NEEDS_REVIEW")]
    assert result["request_count"] == len(classified) == 10
    assert result["malformed_lines"] == 0
    # The model server gives each request its own eventId: nothing is skipped.
    assert (result["duplicate_records"], result["warnings"]) == (0, [])
    log = stack.work_dir / "logs" / f"{stack.function_name('MonitorFunction')}.log"
    metrics: dict[str, object] = {}
    for document in emf_documents(log):
        metrics.update({k: v for k, v in document.items() if not k.startswith("_")})
    assert metrics["CapturedRequests"] == [10.0]
    below = sum(1 for r in classified if r["status"] == "NEEDS_REVIEW")
    assert metrics["LowConfidenceShare"] == [pytest.approx(below / 10)]
    assert metrics["RejectedRate"] == [pytest.approx(1 / 11)]
    assert metrics["EndpointName"] == stack.parameters["EndpointName"]
    # The training baseline was published with the stack: the window has its distance, and
    # LabelDrift is published only for a mix beyond chance (DriftAlertSignificance).
    assert result["label_drift"] is not None
    significance = float(stack.parameters["DriftAlertSignificance"])
    assert ("LabelDrift" in metrics) == (result["label_drift_p_value"] < significance)
    expected_alert = below / 10 > float(stack.parameters["LowConfidenceAlertShare"])
    assert ("LOW_CONFIDENCE" in result["alerts"]) == expected_alert


def test_report_draws_the_stacks_captured_traffic(stack: OfflineStack, tmp_path: Path) -> None:
    api = stack.api()
    images = sorted(SAMPLES.glob("*/*.png"))[10:14]
    api.wait_for_records(api.upload_files(images, key_prefix="report/"), timeout=120)
    stack.flush_capture()
    out = tmp_path / "traffic.png"
    env = {
        "AWS_ENDPOINT_URL": stack.endpoint_url,
        "AWS_ACCESS_KEY_ID": "offline",
        "AWS_SECRET_ACCESS_KEY": "offline",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": "/usr/bin:/bin",
    }
    prefix = f"s3://{stack.bucket}/{stack.parameters['DataCapturePrefix']}"
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "report", "--capture", prefix, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 400 and picture.height > 300
