"""The promotion gate: may a retrained candidate replace the production model?

Both models are scored by the same evaluation code on the same fixed gate set
(the report the evaluation step writes, ``gate-evaluation.json``). The candidate
passes when

1. it is not worse on accuracy than the production model, and
2. the images it would accept at the confidence threshold are still at least
   ``GATE_MIN_ACCEPTED_ACCURACY`` correct (a candidate that accepts nothing fails:
   everything would go to review), and
3. it accepts at most ``GATE_MAX_COVERAGE_DROP`` less of the gate set than production
   (an equally accurate model that is unsure of everything would send most traffic to
   review).

The threshold must be the deployed ``ConfidenceThreshold``; a report scored at
another threshold, or whose two models saw different images, is not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scones_core.errors import SconesError

EVALUATION_FILE = "gate-evaluation.json"


class EvaluationReportError(SconesError):
    """The evaluation report is missing a number the gate needs, or compares unlike things."""


@dataclass(frozen=True)
class GateRules:
    threshold: float
    min_accepted_accuracy: float
    max_coverage_drop: float


@dataclass(frozen=True)
class ModelScore:
    version: str
    accuracy: float
    accepted_accuracy: float | None
    coverage: float
    images: int

    @classmethod
    def from_report(cls, report: Any, role: str) -> ModelScore:
        if not isinstance(report, dict):
            raise EvaluationReportError(f"the evaluation report has no {role} section")
        try:
            at = report["at_threshold"]
            accepted = at["accepted_accuracy"]
            score = cls(
                version=str(report["model"]["version"]),
                accuracy=_fraction(report["accuracy"]),
                accepted_accuracy=None if accepted is None else _fraction(accepted),
                coverage=_fraction(at["coverage"]),
                images=int(report["images"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationReportError(f"the {role} report is incomplete: {exc!r}") from exc
        # Nothing accepted is a coverage of exactly 0 (a coverage rounds to 0 only on a
        # gate set of millions, so the reverse is not checked).
        if score.images < 1 or (score.accepted_accuracy is None and score.coverage != 0):
            raise EvaluationReportError(
                f"the {role} report does not add up: {score.images} images, coverage "
                f"{score.coverage}, accepted accuracy {score.accepted_accuracy}"
            )
        return score

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "accuracy": self.accuracy,
            "accepted_accuracy": self.accepted_accuracy,
            "coverage": self.coverage,
            "images": self.images,
        }


def _fraction(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is not a fraction from 0 to 1")
    return number


def judge(evaluation: dict[str, Any], rules: GateRules) -> dict[str, Any]:
    """The decision as JSON: ``passed``, the reasons, both scores, registry metadata."""
    if not isinstance(evaluation, dict):
        raise EvaluationReportError(
            f"the evaluation report is a JSON {type(evaluation).__name__}, not an object"
        )
    candidate = ModelScore.from_report(evaluation.get("candidate"), "candidate")
    production = ModelScore.from_report(evaluation.get("production"), "production")
    threshold = evaluation.get("threshold")
    # Written so that NaN fails too (every comparison with NaN is False).
    if not isinstance(threshold, int | float) or not abs(threshold - rules.threshold) <= 1e-9:
        raise EvaluationReportError(
            f"the report was scored at threshold {threshold!r}, not the deployed {rules.threshold}"
        )
    if candidate.images != production.images or candidate.images == 0:
        raise EvaluationReportError(
            f"the models were scored on different gate sets ({candidate.images} and "
            f"{production.images} images)"
        )
    reasons: list[str] = []
    if candidate.accuracy < production.accuracy:
        reasons.append(
            f"accuracy {candidate.accuracy:.4f} is below production's {production.accuracy:.4f}"
        )
    if candidate.accepted_accuracy is None:
        reasons.append(f"it accepts no gate image at threshold {rules.threshold:g}")
    elif candidate.accepted_accuracy < rules.min_accepted_accuracy:
        reasons.append(
            f"accepted accuracy {candidate.accepted_accuracy:.4f} at threshold "
            f"{rules.threshold:g} is below {rules.min_accepted_accuracy:g}"
        )
    # Rounded so that a drop of exactly the allowance, in binary fractions, is allowed.
    if round(production.coverage - candidate.coverage, 9) > rules.max_coverage_drop:
        reasons.append(
            f"coverage {candidate.coverage:.4f} at threshold {rules.threshold:g} is more than "
            f"{rules.max_coverage_drop:g} below production's {production.coverage:.4f}"
        )
    passed = not reasons
    accepted_text = (
        "none" if candidate.accepted_accuracy is None else f"{candidate.accepted_accuracy:.6f}"
    )
    accepted = (
        "none accepted"
        if candidate.accepted_accuracy is None
        else f"accepted accuracy {candidate.accepted_accuracy:.4f}"
    )
    summary = (
        f"candidate {candidate.version}: accuracy {candidate.accuracy:.4f} vs production "
        f"{production.version} {production.accuracy:.4f}, {accepted}, coverage "
        f"{candidate.coverage:.4f} on {candidate.images} gate images; "
        + ("passed" if passed else "refused: " + "; ".join(reasons))
    )
    return {
        "passed": passed,
        "reasons": reasons,
        "summary": summary,
        "rules": {
            "threshold": rules.threshold,
            "min_accepted_accuracy": rules.min_accepted_accuracy,
            "max_coverage_drop": rules.max_coverage_drop,
            "candidate_accuracy_at_least": "production accuracy",
        },
        "candidate": candidate.to_json(),
        "production": production.to_json(),
        # CreateModelPackage's CustomerMetadataProperties: string values only.
        "metadata": {
            "candidate_version": candidate.version,
            "gate_accuracy": f"{candidate.accuracy:.6f}",
            "gate_accepted_accuracy": accepted_text,
            "gate_coverage": f"{candidate.coverage:.6f}",
            "gate_images": str(candidate.images),
            "gate_threshold": f"{rules.threshold:g}",
            "production_version": production.version,
            "production_accuracy": f"{production.accuracy:.6f}",
        },
    }
