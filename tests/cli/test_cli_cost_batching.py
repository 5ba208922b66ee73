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
