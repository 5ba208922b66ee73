"""`scones cost` reads the ingest batching window from the template's parameter."""

from __future__ import annotations

import json

import pytest

from scones.costs.model import Settings, estimate
from scones.template_params import PROJECT_ROOT

MEASURED = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())


def line(window: str, item: str) -> tuple[float, str]:
    est = estimate(MEASURED, overrides={"IngestBatchingWindowSeconds": window})
    [found] = [entry for entry in est.lines if entry.item == item]
    return found.usd, found.basis


def test_the_window_is_the_parameter_and_defaults_to_thirty_seconds() -> None:
    assert Settings.from_template().batch_window_s == 30
    assert Settings.from_template({"IngestBatchingWindowSeconds": "1"}).batch_window_s == 1


@pytest.mark.parametrize(
    ("window", "per_batch", "sqs"), [("1", "1", 1.20), ("10", "3.85802", 0.61), ("30", "10", 0.48)]
)
def test_fuller_batches_cost_less_per_image(window: str, per_batch: str, sqs: float) -> None:
    usd, basis = line(window, "SQS (send, receive, delete)")
    assert basis.endswith(f"per batch of {per_batch}")
    assert usd == pytest.approx(sqs, abs=0.01)
    start_short, _ = line("1", "Lambda StartWorkflow")
    start, _ = line(window, "Lambda StartWorkflow")
    assert start <= start_short


def test_express_is_billed_once_per_batch_and_standard_per_batch_level_state() -> None:
    """One execution per SQS batch: a full batch pays a tenth of a request per image; a
    window that holds one message pays a whole request, and Standard pays the batch
    level's four states per execution on top of the six per image."""
    full, basis = line("30", "Step Functions Express")
    single, _ = line("1", "Step Functions Express")
    assert basis.endswith("per batch of 10")
    assert single == pytest.approx(10 * full, rel=0.01)
    est = estimate(MEASURED, workflow_type="STANDARD")
    [standard] = [e for e in est.lines if e.item == "Step Functions Standard"]
    assert standard.usd == pytest.approx(1_000_000 * (6 + 4 / 10) * 0.025 / 1000)


def test_the_largest_state_stays_under_64_kib_at_the_batch_level_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scones.cli.main import main

    assert main(["bench", "payload"]) == 0
    out = capsys.readouterr().out
    [batch] = [ln for ln in out.splitlines() if ln.startswith("largest batch-level state:")]
    assert 0 < int(batch.split()[3]) <= 64 * 1024


def test_the_memory_sweep_shows_the_largest_upload_serialize_decodes_at_each_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scones.cli.main import main

    assert main(["cost", "--sweep-memory"]) == 0
    out = capsys.readouterr().out
    [webp] = [line.split() for line in out.splitlines() if line.startswith("WebP ")]
    # 128, 256, 512 MB...: (MB - 96) / 17 bytes a pixel; "all" of MaxImagePixels (54 MP)
    # from 1024 MB.
    assert webp[1:5] == ["2.0", "9.9", "25.7", "all"]
    [heic] = [line for line in out.splitlines() if line.startswith("HEIC (a phone's, 8-bit)")]
    # Its memory (1.5 + 3 + 6 bytes a pixel) at 128 MB; then its decode time, which shrinks
    # with the CPU share Lambda gives (heic_coded_pixel_limit).
    assert heic.split()[4:9] == ["3.2", "7.9", "15.7", "31.5", "all"]
    [other] = [line for line in out.splitlines() if line.startswith("PNG, TIFF, BMP")]
    assert other.split()[4:7] == ["8.4", "41.9", "all"]
    # A progressive JPEG keeps 6 bytes of DCT coefficients a pixel, whatever its draft.
    [progressive] = [line for line in out.splitlines() if line.startswith("JPEG (progressive)")]
    assert progressive.split()[2:5] == ["5.5", "27.7", "all"]


def test_the_memory_sweep_decodes_up_to_the_max_image_pixels_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scones.cli.main import main

    assert main(["cost", "--sweep-memory", "--param", "MaxImagePixels=25000000"]) == 0
    out = capsys.readouterr().out
    assert "MaxImagePixels is 25 MP" in out
    [webp] = [line.split() for line in out.splitlines() if line.startswith("WebP ")]
    # 512 MB decodes a 25.7 MP WebP: all of 25 MP, not all of the default 54 MP.
    assert webp[1:4] == ["2.0", "9.9", "all"]


def test_the_slowest_backfill_batch_is_printed_beside_the_slowest_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """deploy-preflight refuses Express retries that outlast a backfill batch and points
    here; the classification's path alone would read 289 s and look fine."""
    from scones.cli.main import main

    params = ["--param", "EndpointTimeoutSeconds=1", "--param", "RetryIntervalSeconds=3"]
    assert main(["cost", *params]) == 0
    out = capsys.readouterr().out
    assert "Slowest path that still records: 289 s (Express limit 300 s)" in out
    assert "Slowest backfill batch (a child of the stack's WorkflowType): 301 s" in out


def test_the_endpoint_is_billed_for_the_instances_it_serves_on_and_serverless_has_no_capture() -> (
    None
):
    def items(endpoint: str, **overrides: str) -> dict[str, float]:
        est = estimate(MEASURED, endpoint=endpoint, overrides=overrides)
        return {entry.item: entry.usd for entry in est.lines}

    one, three = items("realtime"), items("realtime", EndpointInstanceCount="3")
    instance = "SageMaker real-time ml.m5.large"
    assert three[instance] == pytest.approx(3 * one[instance])
    assert "Data capture in S3 (per month kept)" in one
    # Serverless Inference captures nothing (the monitor would read no traffic).
    assert "Data capture in S3 (per month kept)" not in items("serverless")
