"""``scones bench workflow`` end to end, at a size small enough for the test suite.

The benchmark's real sizes (200, 2000 uploads) are run by hand; their numbers live
in docs/benchmarks.md. This checks that the command runs the whole offline stack,
profiles it and prints every figure it promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli")]


def test_bench_workflow_runs_twenty_uploads_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "bench", "workflow", "--images", "20",
         "--json", str(out)],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert "bare onnxruntime (predict_bytes" in report
    assert "| 20 | " in report and "images/s" in report
    assert "peak RSS MB (all processes)" in report
    assert "where the time went" in report and "model server" in report
    assert "profiler: " in report
    data = json.loads(out.read_text())
    [run] = data["runs"]
    assert sum(run["statuses"].values()) == 20
    assert set(run["statuses"]) <= {"ACCEPTED", "NEEDS_REVIEW"}
    assert run["images_per_s"] > 0 and data["bare_images_per_s_around_run"][0] > 0
    assert len(data["bare"]) == 2 and data["bare_cpu_ms_per_image"] > 0
    assert run["cpu_ms_per_image"] > 0
    assert "CPU ms per image (all processes)" in report
    assert run["peak_rss_mb"] > 100
    roles = set(run["cpu_s_by_role"])
    assert "model server" in roles and any(role.startswith("lambda ") for role in roles)
    assert data["profiler"] in {"py-spy", "sampler"}
    assert run["profile"]["samples"] > 0


def test_the_thread_sampler_sees_a_busy_thread(tmp_path: Path) -> None:
    """The profiler used when py-spy is not installed."""
    import threading
    import time

    from scones.offline.workflow_bench import Profiler

    stop = threading.Event()

    def busy_loop() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=busy_loop)
    worker.start()
    profiler = Profiler("sampler", tmp_path, rate_hz=200)
    profiler.start()
    time.sleep(0.5)
    profiler.stop()
    stop.set()
    worker.join()
    summary = profiler.summary()
    assert summary["samples"] > 10
    assert any("busy_loop" in row["name"] for row in summary["own_time"])
    assert "sys._current_frames" in summary["profiler"]


def test_bench_burst_audits_a_burst_with_camera_photos_in_it(tmp_path: Path) -> None:
    """``scones bench burst --photos``: 12-megapixel JPEGs among the thumbnails, all at
    once through the real stack; every upload has its one record, none is lost."""
    out = tmp_path / "burst.json"
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "bench", "burst", "--images", "16",
         "--photos", "4", "--timeout", "300", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    data = json.loads(out.read_text())
    assert json.loads(result.stdout) == data  # standard output is the measurement alone
    assert (data["images"], data["photos"], data["records"]) == (16, 4, 16)
    assert data["lost"] == data["duplicated"] == data["dead_letters"] == 0
    assert set(data["statuses"]) <= {"ACCEPTED", "NEEDS_REVIEW"}
    assert data["model_invocations"] == 16

    refused = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "bench", "burst", "--images", "2",
         "--photos", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--photos 3 is more than --images 2" in refused.stderr


def test_bench_burst_counts_a_lost_upload_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An S3 event lost before delivery (deleted from the ingest queue): the audit still
    runs once nothing is left in flight (long before the wait's timeout), counts it lost,
    writes its JSON and exits 1."""
    import contextlib
    from collections.abc import Iterator

    from scones.cli.main import main
    from scones.offline.stack import OfflineStack

    paused = OfflineStack.delivery_paused

    @contextlib.contextmanager
    def losing_one(self: OfflineStack) -> Iterator[None]:
        with paused(self):
            yield
            sqs = self.client("sqs")
            url = self.stack.outputs["IngestQueueUrl"]
            message = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    monkeypatch.setattr(OfflineStack, "delivery_paused", losing_one)
    out = tmp_path / "burst.json"
    argv = ["bench", "burst", "--images", "6", "--timeout", "300", "--json", str(out)]
    assert main(argv) == 1
    assert (
        "1 upload(s) have no record, and nothing is in flight that could record them"
        in capsys.readouterr().err
    )
    data = json.loads(out.read_text())
    assert (data["images"], data["records"], data["lost"], data["duplicated"]) == (6, 5, 1, 0)
