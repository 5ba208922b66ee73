"""Percentiles, confidence summaries and the label-mix distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scones_core.monitoring.drift import Baseline, BaselineError, total_variation_distance
from scones_core.monitoring.statistics import ConfidenceSummary, percentile

from tests.monitoring.conftest import LABELS, MODEL_DIR

unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(st.lists(unit_floats, min_size=1, max_size=60), st.sampled_from([0, 10, 50, 90, 100]))
def test_percentile_matches_numpy(values: list[float], q: int) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)


def test_summary_counts_strictly_below_threshold() -> None:
    summary = ConfidenceSummary.of([0.5, 0.93, 0.95, 0.99], threshold=0.93)
    assert summary is not None
    assert summary.low_confidence_share == 0.25
    assert summary.mean == pytest.approx(0.8425)
    assert ConfidenceSummary.of([], threshold=0.93) is None


@given(
    st.lists(unit_floats, min_size=2, max_size=2).filter(lambda v: sum(v) > 0),
    st.lists(unit_floats, min_size=2, max_size=2).filter(lambda v: sum(v) > 0),
)
def test_total_variation_distance_is_a_bounded_symmetric_distance(
    p: list[float], q: list[float]
) -> None:
    a, b = dict(zip(LABELS, p, strict=True)), dict(zip(LABELS, q, strict=True))
    distance = total_variation_distance(a, b, LABELS)
    assert 0.0 <= distance <= 1.0 + 1e-12
    assert distance == pytest.approx(total_variation_distance(b, a, LABELS))
    assert total_variation_distance(a, a, LABELS) == pytest.approx(0.0, abs=1e-12)


def test_total_variation_distance_handles_an_unseen_label() -> None:
    # PSI would be infinite here; the distance is just the share that moved.
    assert total_variation_distance(
        {"bicycle": 1.0, "motorcycle": 0.0}, {"bicycle": 0.44, "motorcycle": 0.56}, LABELS
    ) == pytest.approx(0.56)


def test_the_shipped_baseline_parses() -> None:
    import json

    baseline = Baseline.from_json(json.loads((MODEL_DIR / "baseline.json").read_text()))
    assert baseline.labels == LABELS
    assert math.isclose(sum(baseline.label_mix.values()), 1.0)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"labels": ["bicycle", "motorcycle"]},
        {
            "labels": ["bicycle", "motorcycle"],
            "label_mix": {"bicycle": 0.5, "car": 0.5},
            "mean_confidence": 0.9,
            "confidence_percentiles": {"p10": 0.5, "p50": 0.9, "p90": 0.99},
            "low_confidence_share": 0.3,
            "threshold": 0.93,
            "sample_count": 10,
            "model_version": "x",
        },
    ],
)
def test_a_broken_baseline_is_refused(document: object) -> None:
    with pytest.raises(BaselineError):
        Baseline.from_json(document)
