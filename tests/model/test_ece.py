"""Expected calibration error and the reliability curve, on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from scones.model.evaluate import evaluate_probabilities, expected_calibration_error, reliability


def test_known_case() -> None:
    # Two classes: ten equal bins over [0.5, 1].
    # bin [0.5, 0.55): 0.52 right, 0.52 wrong      -> accuracy 0.5, confidence 0.52
    # bin [0.9, 0.95): 0.9 right, 0.9 right          -> accuracy 1.0, confidence 0.9
    # bin [0.95, 1]:   0.99 right, 1.0 wrong         -> accuracy 0.5, confidence 0.995
    probabilities = np.array(
        [[0.52, 0.48], [0.48, 0.52], [0.9, 0.1], [0.1, 0.9], [0.99, 0.01], [0.0, 1.0]]
    )
    targets = np.array([0, 0, 0, 1, 0, 0])
    expected = (2 / 6) * abs(0.5 - 0.52) + (2 / 6) * abs(1.0 - 0.9) + (2 / 6) * abs(0.5 - 0.995)
    assert expected_calibration_error(probabilities, targets) == pytest.approx(expected)

    curve = reliability(probabilities, targets)
    assert len(curve) == 10
    assert curve[0]["low"] == 0.5 and curve[-1]["high"] == 1.0
    assert [b["images"] for b in curve] == [2, 0, 0, 0, 0, 0, 0, 0, 2, 2]
    assert curve[1]["accuracy"] is None and curve[1]["mean_confidence"] is None
    assert curve[8] == {
        "low": 0.9,
        "high": 0.95,
        "images": 2,
        "mean_confidence": 0.9,
        "accuracy": 1.0,
    }
    assert curve[9]["mean_confidence"] == pytest.approx(0.995)


def test_perfectly_calibrated_and_maximally_wrong() -> None:
    # Confidence 0.75 in one bin, three of four right: no gap.
    probabilities = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probabilities, np.array([0, 0, 0, 1])) == pytest.approx(0)
    # Certain and always wrong: the gap is the whole confidence.
    assert expected_calibration_error(np.array([[1.0, 0.0]] * 3), np.array([1, 1, 1])) == 1.0


def test_three_classes_bin_from_a_third() -> None:
    probabilities = np.array([[0.34, 0.33, 0.33], [0.1, 0.1, 0.8]])
    curve = reliability(probabilities, np.array([0, 2]), bins=2)
    assert curve[0]["low"] == pytest.approx(1 / 3)
    assert [b["images"] for b in curve] == [1, 1]


def test_the_report_carries_them() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    targets = np.array([0, 1, 1])
    report = evaluate_probabilities(probabilities, targets, ("a", "b"), threshold=0.85)
    assert report["expected_calibration_error"] == pytest.approx(
        expected_calibration_error(probabilities, targets), abs=1e-6
    )
    assert sum(b["images"] for b in report["reliability"]) == 3


def test_refuses_nothing_to_measure() -> None:
    with pytest.raises(ValueError, match="zero images"):
        expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="at least one bin"):
        reliability(np.array([[0.6, 0.4]]), np.array([0]), bins=0)
