"""``scones bench gate``: the promotion gate's own ``judge`` on simulated gate sets."""

from __future__ import annotations

import json

import pytest
from scones_core.retraining.gate import GateRules

from scones.cli.bench_gate import (
    BETTER,
    WORSE,
    Rates,
    _joint,
    deployed_gate_rules,
    pass_rate,
    shipped_rates,
)
from scones.cli.main import main


@pytest.fixture(scope="module")
def rules() -> GateRules:
    return deployed_gate_rules()


@pytest.mark.parametrize("coupling", ["independent", "shared"])
def test_each_model_keeps_its_own_rates_however_their_hard_images_go_together(
    coupling: str,
) -> None:
    production = shipped_rates()
    first, second = production.outcome_probabilities(), BETTER.outcome_probabilities()
    joint = _joint(first, second, coupling)
    assert sum(joint) == pytest.approx(1.0)
    rows = [sum(joint[4 * i : 4 * i + 4]) for i in range(4)]
    columns = [sum(joint[j::4]) for j in range(4)]
    assert rows == pytest.approx(first) and columns == pytest.approx(second)
    right = first[0] + first[1]
    assert right == pytest.approx(production.accuracy)
    assert first[0] / (first[0] + first[3]) == pytest.approx(production.accepted_accuracy)


def test_shared_hard_images_put_a_worse_models_right_answers_inside_the_better_ones() -> None:
    """With the same images hard for both, the less accurate model is right only where the
    more accurate one is, so the gate sees their difference with less noise and errs less
    often than with independent mistakes."""
    production = shipped_rates()
    joint = _joint(production.outcome_probabilities(), WORSE.outcome_probabilities(), "shared")
    right, wrong = (0, 1), (2, 3)  # accepted or held, right; held or accepted, wrong
    assert sum(joint[4 * i + j] for i in wrong for j in right) == 0.0
    independent = _joint(
        production.outcome_probabilities(), WORSE.outcome_probabilities(), "independent"
    )
    assert sum(independent[4 * i + j] for i in wrong for j in right) > 0.0


def test_hard_images_in_common_make_the_gate_err_less(rules: GateRules) -> None:
    production = shipped_rates()
    common = {"per_class": 100, "trials": 2000, "seed": 5}
    for candidate, wrong in ((WORSE, lambda p: p), (BETTER, lambda p: 1 - p)):
        shared = wrong(pass_rate(production, candidate, rules, coupling="shared", **common))
        apart = wrong(pass_rate(production, candidate, rules, coupling="independent", **common))
        assert shared < apart


def test_rates_no_model_can_have_are_refused() -> None:
    with pytest.raises(ValueError, match="no model has"):
        Rates(accuracy=0.5, coverage=0.9, accepted_accuracy=0.99).outcome_probabilities()


@pytest.mark.parametrize("coupling", ["independent", "shared"])
def test_the_gate_decides_right_on_a_large_gate_set_and_errs_on_a_small_one(
    rules: GateRules, coupling: str
) -> None:
    """The simulation runs the real rules: with thousands of images per class the gate
    refuses the worse candidate and passes the better one every time; with the fewest it
    judges, it gets some of them wrong (independent hard images; the shared case errs
    less)."""
    production = shipped_rates()
    large = {"per_class": 5000, "coupling": coupling, "trials": 40, "seed": 1}
    assert pass_rate(production, WORSE, rules, **large) == 0.0
    assert pass_rate(production, BETTER, rules, **large) == 1.0
    small = {"per_class": rules.min_images_per_class, "coupling": "independent", "trials": 400}
    assert 0.0 < pass_rate(production, WORSE, rules, seed=2, **small) < 0.5
    assert 0.5 < pass_rate(production, BETTER, rules, seed=3, **small) < 1.0


def test_a_stricter_rule_refuses_more(rules: GateRules) -> None:
    production = shipped_rates()
    args = {"per_class": 100, "coupling": "shared", "trials": 400, "seed": 4}
    strict = deployed_gate_rules({"GateMinAcceptedAccuracy": "0.999"})
    assert pass_rate(production, BETTER, strict, **args) < pass_rate(
        production, BETTER, rules, **args
    )


def test_the_command_prints_every_row_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "gate", "--per-class", "50", "--trials", "200", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["production"] == shipped_rates().label()
    rows = printed["rows"]
    assert [(r["candidate"], r["per_class"], r["coupling"]) for r in rows] == [
        (name, 50, coupling)
        for name in ("worse", "better")
        for coupling in ("independent", "shared")
    ]
    for row in rows:
        wrong = row["passed"] if row["candidate"] == "worse" else 1 - row["passed"]
        assert row["wrong_decisions"] == pytest.approx(wrong)
        assert 0.0 <= wrong < 0.5  # the gate is right more often than not at 50 a class


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--per-class", "5"], "fewer than 10 images of a class (GateMinImagesPerClass)"),
        (["--param", "GateMaxCoverageDrop=abc"], "GateMaxCoverageDrop='abc' is not a number"),
        (["--trials", "0"], "--trials: 0 is not at least 1"),
        (["--param", "ConfidenceThreshold=0.5"], "--param ConfidenceThreshold: only the gate"),
        (["--param", "ModelLabels=cat,dog,bird"], "--param ModelLabels: only the gate"),
    ],
)
def test_a_bad_argument_is_named(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["bench", "gate", *argv])
    except SystemExit as exited:
        code = int(exited.code or 0)
    error = capsys.readouterr().err
    assert code == 2 and named in error and "Traceback" not in error
