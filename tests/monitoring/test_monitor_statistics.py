"""Percentiles, confidence summaries and the label-mix distance."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scones_core.json_text import load_json
from scones_core.monitoring.drift import (
    Baseline,
    BaselineError,
    compare_with_baseline,
    total_variation_distance,
)
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


def shipped_baseline(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((MODEL_DIR / "baseline.json").read_text())
    document.update(changes)
    return document


def with_mix(**shares: Any) -> dict[str, Any]:
    return shipped_baseline(label_mix=shipped_baseline()["label_mix"] | shares)


def with_percentile(**values: Any) -> dict[str, Any]:
    return shipped_baseline(
        confidence_percentiles=shipped_baseline()["confidence_percentiles"] | values
    )


@pytest.mark.parametrize(
    ("document", "named"),
    [
        # float() takes these strings; none is a JSON number, and a NaN or an infinity
        # reaches the metrics, whose document is then not JSON.
        (shipped_baseline(mean_confidence="NaN"), "mean_confidence is not a JSON number"),
        (shipped_baseline(mean_confidence="inf"), "mean_confidence is not a JSON number"),
        (shipped_baseline(mean_confidence="1e999"), "mean_confidence is not a JSON number"),
        (shipped_baseline(mean_confidence="0.9"), "mean_confidence is not a JSON number"),
        (shipped_baseline(mean_confidence=True), "mean_confidence is not a JSON number"),
        # json.loads (not load_json) gives these.
        (shipped_baseline(mean_confidence=math.nan), "mean_confidence is not a finite number"),
        (shipped_baseline(mean_confidence=math.inf), "mean_confidence is not a finite number"),
        # A long integer overflowed float() (OverflowError, which nothing caught).
        (shipped_baseline(mean_confidence=10**400), "mean_confidence is not in [0, 1]"),
        (shipped_baseline(mean_confidence=1.5), "mean_confidence is not in [0, 1]"),
        (shipped_baseline(low_confidence_share=-0.1), "low_confidence_share is not in [0, 1]"),
        (shipped_baseline(low_confidence_share="0.1"), "low_confidence_share is not a JSON"),
        (shipped_baseline(threshold=93), "threshold is not in [0, 1]"),
        (with_percentile(p50="NaN"), "confidence_percentiles['p50'] is not a JSON number"),
        (with_percentile(p90=1.01), "confidence_percentiles['p90'] is not in [0, 1]"),
        (with_mix(bicycle="0.485"), "label_mix['bicycle'] is not a JSON number"),
        (with_mix(bicycle=False), "label_mix['bicycle'] is not a JSON number"),
        (with_mix(motorcycle=2), "label_mix['motorcycle'] is not in [0, 1]"),
        (with_mix(bicycle=-0.1), "label_mix['bicycle'] is not in [0, 1]"),
        (shipped_baseline(label_mix=[["bicycle", 0.5]]), "label_mix is not a JSON object"),
        (shipped_baseline(sample_count=2.9), "sample_count is not a whole number >= 0"),
        (shipped_baseline(sample_count=-1), "sample_count is not a whole number >= 0"),
        (shipped_baseline(sample_count="200"), "sample_count is not a JSON number"),
        (shipped_baseline(sample_count=True), "sample_count is not a JSON number"),
    ],
)
def test_a_baseline_number_must_be_a_finite_json_number_in_its_range(
    document: dict[str, Any], named: str
) -> None:
    with pytest.raises(BaselineError) as raised:
        Baseline.from_json(document)
    assert named in str(raised.value)


def test_whole_and_boundary_json_numbers_are_taken() -> None:
    baseline = Baseline.from_json(
        load_json(
            json.dumps(
                shipped_baseline(
                    sample_count=200.0,
                    mean_confidence=1,
                    low_confidence_share=0,
                    label_mix={"bicycle": 1, "motorcycle": 0},
                )
            )
        )
    )
    assert (baseline.sample_count, baseline.mean_confidence) == (200, 1.0)
    assert isinstance(baseline.sample_count, int)
    assert baseline.label_mix == {"bicycle": 1.0, "motorcycle": 0.0}


# A well-formed baseline of another model: its whole mix on a label this one lacks.
OTHER_MODELS = shipped_baseline(
    labels=["bicycle", "motorcycle", "cat"], label_mix={"bicycle": 0, "motorcycle": 0, "cat": 1}
)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            OTHER_MODELS,
            "label_mix gives the model's labels ['bicycle', 'motorcycle'] no share "
            "(all of it is on ['cat'])",
        ),
        (
            shipped_baseline(labels=["bicycle", "car"], label_mix={"bicycle": 0.5, "car": 0.5}),
            "label_mix has no share for the model's labels ['motorcycle']",
        ),
    ],
)
def test_a_baseline_without_a_mix_over_the_models_labels_is_not_compared(
    document: dict[str, Any], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Well formed, so it parses; but it leaves the model's labels no mix to measure a
    distance from, which raised out of the whole monitor run. The comparison is skipped
    and logged, with the same problem deploy-baseline refuses it for."""
    baseline = Baseline.from_json(document)
    assert baseline.label_problem(LABELS) == problem
    with caplog.at_level(logging.ERROR, logger="scones_core"):
        assert compare_with_baseline(baseline, {"bicycle": 3, "motorcycle": 1}, 0.9, LABELS) is None
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("baseline does not fit the model's labels")
    assert record.__dict__["problem"] == problem


def test_a_baseline_with_an_extra_label_is_compared_on_the_models_labels() -> None:
    """A label the model lacks is left out and the rest renormalised: the comparison only
    needs the model's labels to carry some of the mix."""
    baseline = Baseline.from_json(
        shipped_baseline(
            labels=["bicycle", "motorcycle", "cat"],
            label_mix={"bicycle": 0.25, "motorcycle": 0.25, "cat": 0.5},
        )
    )
    assert baseline.label_problem(LABELS) is None
    drift = compare_with_baseline(baseline, {"bicycle": 3, "motorcycle": 1}, None, LABELS)
    assert drift is not None and drift.label_distance == pytest.approx(0.25)
