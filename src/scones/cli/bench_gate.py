"""``scones bench gate``: how often the promotion gate errs, by the size of the gate set.

The gate compares a candidate's numbers with production's on one gate set, as measured,
without a margin for chance (``scones_core.retraining.gate``). This runs the gate's own
``judge`` on simulated gate sets: every trial draws each model's answers on ``n`` images
per class from its true rates, builds the evaluation report the evaluation step writes,
and asks the gate. Production's rates are the shipped model's validation numbers
(``models/bicycle-motorcycle/evaluation.json``); the candidates are one clearly worse and
one clearly better. The rules are the template's (``--param`` to change them).

Each image ends in one of four outcomes: accepted and right, below the threshold and
right, below and wrong, accepted and wrong. How the two models' outcomes go together is
not known, so two cases are run: *independent* (each model's hard images are its own) and
*shared* (the same images are hard for both: one draw orders the images by difficulty, in
the outcomes' order above, for both models). Two models trained on the same kind of data
find the same images hard, if not all of them, so the true rate lies between the two; only
models whose mistakes avoid each other's would err more often than *independent*.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scones.cli.arguments import positive_int
from scones.paths import SHIPPED_MODEL_DIR

if TYPE_CHECKING:
    from scones_core.retraining.gate import GateRules

EVALUATION = SHIPPED_MODEL_DIR / "evaluation.json"
OUTCOMES = ("accepted right", "held right", "held wrong", "accepted wrong")


@dataclass(frozen=True)
class Rates:
    """A model's true accuracy, coverage at the threshold and accuracy of the accepted."""

    accuracy: float
    coverage: float
    accepted_accuracy: float

    def outcome_probabilities(self) -> tuple[float, float, float, float]:
        """The chance of each of ``OUTCOMES`` for one image; ``ValueError`` for rates no
        model can have (more accepted right answers than right answers, say)."""
        accepted_right = self.coverage * self.accepted_accuracy
        accepted_wrong = self.coverage - accepted_right
        held_right = self.accuracy - accepted_right
        held_wrong = 1.0 - self.accuracy - accepted_wrong
        chances = (accepted_right, held_right, held_wrong, accepted_wrong)
        if min(chances) < -1e-12:
            raise ValueError(f"no model has {self}")
        return tuple(max(0.0, p) for p in chances)  # type: ignore[return-value]

    def label(self) -> str:
        return f"{self.accuracy:.3f} / {self.coverage:.3f} / {self.accepted_accuracy:.3f}"


# The candidates judged against production: one that should be refused, one that should pass.
WORSE = Rates(accuracy=0.94, coverage=0.885, accepted_accuracy=0.985)
BETTER = Rates(accuracy=0.98, coverage=0.90, accepted_accuracy=0.997)


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "gate",
        help="how often the promotion gate passes a worse or refuses a better candidate",
        description=(
            "Run the promotion gate's own judge on simulated gate sets of N images per class: "
            "how often a clearly worse candidate passes and a clearly better one is refused, "
            "against the shipped model's validation numbers as production."
        ),
    )
    parser.add_argument(
        "--per-class",
        type=positive_int,
        action="append",
        metavar="N",
        help="gate images per class (repeat for several sizes; default: 100 and 500)",
    )
    parser.add_argument(
        "--trials", type=positive_int, default=4000, help="gate sets drawn per row (4000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter, e.g. --param GateMaxCoverageDrop=0.05",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(handler=_run)


def deployed_gate_rules(overrides: dict[str, str] | None = None) -> GateRules:
    """The gate's rules as the judge function gets them from ``template.yaml``, with
    ``overrides`` for its parameters; a ValueError names a value the rules refuse."""
    from scones_core.retraining.gate import GateRules
    from scones_core.retraining.settings import RetrainingSettings

    from scones.template_params import deployed_environment

    return GateRules.of(
        RetrainingSettings.from_env(
            deployed_environment("RetrainJudgeFunction", overrides=overrides or {})
        )
    )


def _run(args: argparse.Namespace) -> int:
    from scones.cli.errors import CommandError
    from scones.cli.stack_state import parse_params

    overrides = parse_params(args.param, defaults={})
    if others := sorted(name for name in overrides if not name.startswith("Gate")):
        # Production's rates were measured at the template's threshold, on its labels.
        raise CommandError(
            f"--param {others[0]}: only the gate's rules (the Gate* parameters) can change "
            "here; production's numbers are the shipped model's, at the threshold and on "
            "the labels it was evaluated with"
        )
    try:
        rules = deployed_gate_rules(overrides)
    except ValueError as exc:
        raise CommandError(f"--param: {exc}") from exc
    production = shipped_rates()
    sizes = args.per_class or [100, 500]
    if (small := min(sizes)) < rules.min_images_per_class:
        raise CommandError(
            f"--per-class {small}: the gate judges no gate set with fewer than "
            f"{rules.min_images_per_class} images of a class (GateMinImagesPerClass)"
        )
    rows = []
    for name, rates, should_pass in (("worse", WORSE, False), ("better", BETTER, True)):
        for size in sizes:
            for coupling in ("independent", "shared"):
                passed = pass_rate(
                    production,
                    rates,
                    rules,
                    per_class=size,
                    coupling=coupling,
                    trials=args.trials,
                    seed=args.seed,
                )
                rows.append(
                    {
                        "candidate": name,
                        "candidate_rates": rates.label(),
                        "per_class": size,
                        "coupling": coupling,
                        "passed": passed,
                        "wrong_decisions": passed if not should_pass else 1.0 - passed,
                    }
                )
    if args.json:
        print(json.dumps({"production": production.label(), "rows": rows}, indent=2))
        return 0
    print(
        f"production (the shipped model's validation numbers): accuracy / coverage / "
        f"accepted accuracy {production.label()}; threshold {rules.threshold:g}, "
        f"{args.trials} gate sets per row"
    )
    print(f"{'candidate':<32} {'per class':>9}  {'hard images':<12} wrong decisions")
    for row in rows:
        verdict = "passes" if row["candidate"] == "worse" else "is refused"
        candidate = f"{row['candidate']} {row['candidate_rates']}"
        print(
            f"{candidate:<32} {row['per_class']:>9}  {row['coupling']:<12} "
            f"{row['wrong_decisions']:>6.1%} {verdict}"
        )
    return 0


def shipped_rates() -> Rates:
    """The shipped model's accuracy, coverage and accepted accuracy on its validation split."""
    report = json.loads(EVALUATION.read_text(encoding="utf-8"))
    at = report["at_threshold"]
    return Rates(report["accuracy"], at["coverage"], at["accepted_accuracy"])


def pass_rate(
    production: Rates,
    candidate: Rates,
    rules: GateRules,
    *,
    per_class: int,
    coupling: str,
    trials: int,
    seed: int,
) -> float:
    """The share of ``trials`` simulated gate sets on which ``judge`` passes ``candidate``."""
    import numpy as np
    from scones_core.retraining.gate import judge

    rng = np.random.default_rng(seed)
    mine, theirs = production.outcome_probabilities(), candidate.outcome_probabilities()
    joint = _joint(mine, theirs, coupling)
    labels = list(rules.labels)
    passed = 0
    for _ in range(trials):
        # Per class: how many images fall in each (production, candidate) outcome pair.
        cells = rng.multinomial(per_class, joint, size=len(labels)).reshape(len(labels), 4, 4)
        reports = {
            role: _report(role, labels, cells.sum(axis=axis), per_class)
            for role, axis in (("production", 2), ("candidate", 1))
        }
        evaluation = {"threshold": rules.threshold, **reports}
        passed += bool(judge(evaluation, rules)["passed"])
    return passed / trials


def _joint(first: tuple[float, ...], second: tuple[float, ...], coupling: str) -> list[float]:
    """The chance of each pair of outcomes (first's row-major), for ``coupling``."""
    if coupling == "independent":
        return [p * q for p in first for q in second]
    # Shared difficulty: one uniform draw u per image; each model's outcome is the
    # interval of its cumulative chances that holds u, so the pair's chance is the overlap.
    edges = [sum(first[:i]) for i in range(5)], [sum(second[:i]) for i in range(5)]
    cells = [
        max(0.0, min(edges[0][i + 1], edges[1][j + 1]) - max(edges[0][i], edges[1][j]))
        for i in range(4)
        for j in range(4)
    ]
    total = sum(cells)
    return [c / total for c in cells]


def _report(role: str, labels: list[str], counts: Any, per_class: int) -> dict[str, Any]:
    """The evaluation report's section for one model (``counts[class][outcome]``), as
    ``scones.model.evaluate`` writes it."""
    accepted_right, held_right, _, accepted_wrong = (int(n) for n in counts.sum(axis=0))
    images = per_class * len(labels)
    accepted = accepted_right + accepted_wrong
    return {
        "model": {"version": role},
        "labels": labels,
        "images": images,
        "accuracy": (accepted_right + held_right) / images,
        "at_threshold": {
            "coverage": accepted / images,
            "accepted_accuracy": accepted_right / accepted if accepted else None,
        },
        "per_class": {
            label: {"support": per_class, "recall": int(row[0] + row[1]) / per_class}
            for label, row in zip(labels, counts, strict=True)
        },
    }
