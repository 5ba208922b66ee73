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
   review), and
4. its recall on every class is at most ``GATE_MAX_RECALL_DROP`` below production's
   recall on that class (overall accuracy hides a model that gives up a class: on a
   gate set of mostly motorcycles, one that always answers "motorcycle" looks good).

The report is not judged at all when it does not describe this stack's decision: it
was scored at another threshold than the deployed ``ConfidenceThreshold``, its models
name other labels than the stack's ``LABELS`` (in the same order), the two models saw
different images, or the gate set has fewer than ``GATE_MIN_IMAGES_PER_CLASS`` images
of a class (a tie on two images, or a recall from one, says nothing about a model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scones_core.errors import SconesError

if TYPE_CHECKING:
    from scones_core.retraining.settings import RetrainingSettings

# What the evaluation step (scones.sagemaker.evaluate_entry) writes into the run's
# evaluation folder: the report the gate judges, and the candidate's answers on the gate
# set as the monitor's drift baseline, which a promotion makes the monitor's.
EVALUATION_FILE = "gate-evaluation.json"
CANDIDATE_BASELINE_FILE = "candidate-baseline.json"
# CreateModelPackage's ModelPackageDescription (EntityDescription) holds at most this many
# characters; a summary with a recall for each of many labels is longer.
MODEL_PACKAGE_DESCRIPTION_MAX = 1024
# A CustomerMetadataProperties value holds at most this many characters. A model version
# is one of them, and the summary, the record and the alert quote it: a longer one would
# not register, and would make the judge's answer as long as the report's field.
MODEL_VERSION_MAX = 256
# The characters SageMaker takes in a CustomerMetadataProperties value (letters, digits,
# spaces and these); botocore does not check them, so another one fails CreateModelPackage
# after the training was paid for. The metadata's copy of a version gets "_" for each other
# character; the record, the alert and the report keep the version as it is.
_METADATA_PUNCTUATION = frozenset(" _.:/=+-@")


class EvaluationReportError(SconesError):
    """The evaluation report is missing a number the gate needs, or compares unlike things."""


@dataclass(frozen=True)
class GateRules:
    threshold: float
    labels: tuple[str, ...]  # the stack's labels, in the order of the model's output
    min_accepted_accuracy: float
    max_coverage_drop: float
    max_recall_drop: float
    min_images_per_class: int

    @classmethod
    def of(cls, settings: RetrainingSettings) -> GateRules:
        """The rules a stack deployed with ``settings`` judges by."""
        return cls(
            threshold=settings.confidence_threshold,
            labels=settings.labels,
            min_accepted_accuracy=settings.gate_min_accepted_accuracy,
            max_coverage_drop=settings.gate_max_coverage_drop,
            max_recall_drop=settings.gate_max_recall_drop,
            min_images_per_class=settings.gate_min_images_per_class,
        )


@dataclass(frozen=True)
class ClassScore:
    support: int  # gate images of this class
    recall: float


@dataclass(frozen=True)
class ModelScore:
    version: str
    labels: tuple[str, ...]
    accuracy: float
    accepted_accuracy: float | None
    coverage: float
    images: int
    per_class: dict[str, ClassScore]

    @classmethod
    def from_report(cls, report: Any, role: str) -> ModelScore:
        if not isinstance(report, dict):
            raise EvaluationReportError(f"the evaluation report has no {role} section")
        try:
            at = report["at_threshold"]
            accepted = at["accepted_accuracy"]
            labels = report["labels"]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise TypeError(f"labels {labels!r} is not a list of names")
            per_class = _per_class(report["per_class"], labels)
            score = cls(
                version=str(report["model"]["version"]),
                labels=tuple(labels),
                accuracy=_fraction(report["accuracy"]),
                accepted_accuracy=None if accepted is None else _fraction(accepted),
                coverage=_fraction(at["coverage"]),
                images=_count(report["images"]),
                per_class=per_class,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationReportError(f"the {role} report is incomplete: {exc!r}") from exc
        if len(score.version) > MODEL_VERSION_MAX:
            raise EvaluationReportError(
                f"the {role} model version is {len(score.version)} characters long, more "
                f"than the {MODEL_VERSION_MAX} a registered version's metadata holds"
            )
        # Nothing accepted is a coverage of exactly 0 (a coverage rounds to 0 only on a
        # gate set of millions, so the reverse is not checked).
        supports = sum(c.support for c in score.per_class.values())
        if (
            score.images < 1
            or supports != score.images
            or (score.accepted_accuracy is None and score.coverage != 0)
        ):
            raise EvaluationReportError(
                f"the {role} report does not add up: {score.images} images ({supports} "
                f"in its classes), coverage {score.coverage}, accepted accuracy "
                f"{score.accepted_accuracy}"
            )
        return score

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "accuracy": self.accuracy,
            "accepted_accuracy": self.accepted_accuracy,
            "coverage": self.coverage,
            "images": self.images,
            "per_class": {
                label: {"support": c.support, "recall": c.recall}
                for label, c in self.per_class.items()
            },
        }


def _per_class(value: Any, labels: list[str]) -> dict[str, ClassScore]:
    """``per_class`` of the evaluation report: support and recall of each label."""
    if not isinstance(value, dict) or set(value) != set(labels):
        raise ValueError(f"per_class does not name exactly the labels {labels}")
    scores = {}
    for label in labels:
        support = _count(value[label]["support"])
        recall = value[label]["recall"]
        if support == 0:
            # A class without gate images has no recall to protect; the minimum refuses it.
            scores[label] = ClassScore(0, 0.0)
        else:
            scores[label] = ClassScore(support, _fraction(recall))
    return scores


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def metadata_value(text: str) -> str:
    """``text`` as a CustomerMetadataProperties value SageMaker accepts."""
    return "".join(c if c.isalnum() or c in _METADATA_PUNCTUATION else "_" for c in text)


def _fraction(value: Any) -> float:
    # A number, as the evaluation program writes it: not a string or a boolean that float()
    # would also read.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a fraction from 0 to 1")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is not a fraction from 0 to 1")
    return number


def too_few_images(per_label: dict[str, int], minimum: int) -> list[str]:
    """``"<label> <n>"`` for each class with fewer than ``minimum`` gate images: a gate set
    the gate does not judge by (the dataset step refuses it before anything is trained)."""
    return [f"{label} {n}" for label, n in per_label.items() if n < minimum]


def _check_comparable(candidate: ModelScore, production: ModelScore, rules: GateRules) -> None:
    """Refuse to judge a report that is not about this stack's models on a usable gate set."""
    for role, score in (("candidate", candidate), ("production", production)):
        if score.labels != rules.labels:
            raise EvaluationReportError(
                f"the {role} model's labels {list(score.labels)} are not the stack's "
                f"labels {list(rules.labels)}"
            )
    supports = {label: c.support for label, c in candidate.per_class.items()}
    if candidate.images != production.images or supports != {
        label: c.support for label, c in production.per_class.items()
    }:
        raise EvaluationReportError(
            f"the models were scored on different gate sets ({candidate.images} and "
            f"{production.images} images)"
        )
    few = too_few_images(supports, rules.min_images_per_class)
    if few:
        raise EvaluationReportError(
            f"the gate set is too small to judge by: {', '.join(few)} images, fewer than "
            f"the {rules.min_images_per_class} per class the gate needs"
        )


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
    _check_comparable(candidate, production, rules)
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
    for label in rules.labels:
        mine, theirs = candidate.per_class[label].recall, production.per_class[label].recall
        if round(theirs - mine, 9) > rules.max_recall_drop:
            reasons.append(
                f"recall on {label} {mine:.4f} is more than {rules.max_recall_drop:g} below "
                f"production's {theirs:.4f}"
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
    recalls = ", ".join(f"{k} {c.recall:.4f}" for k, c in candidate.per_class.items())
    summary = (
        f"candidate {candidate.version}: accuracy {candidate.accuracy:.4f} vs production "
        f"{production.version} {production.accuracy:.4f}, {accepted}, coverage "
        f"{candidate.coverage:.4f}, recall {recalls} on {candidate.images} gate images; "
        + ("passed" if passed else "refused: " + "; ".join(reasons))
    )
    return {
        "passed": passed,
        "reasons": reasons,
        "summary": summary,
        # The registered version's description: the summary, cut to what SageMaker takes.
        "description": summary
        if len(summary) <= MODEL_PACKAGE_DESCRIPTION_MAX
        else summary[: MODEL_PACKAGE_DESCRIPTION_MAX - 1] + "…",
        "rules": {
            "threshold": rules.threshold,
            "labels": list(rules.labels),
            "min_accepted_accuracy": rules.min_accepted_accuracy,
            "max_coverage_drop": rules.max_coverage_drop,
            "max_recall_drop": rules.max_recall_drop,
            "min_images_per_class": rules.min_images_per_class,
            "candidate_accuracy_at_least": "production accuracy",
        },
        "candidate": candidate.to_json(),
        "production": production.to_json(),
        # CreateModelPackage's CustomerMetadataProperties: string values only.
        "metadata": {
            "candidate_version": metadata_value(candidate.version),
            "gate_accuracy": f"{candidate.accuracy:.6f}",
            "gate_accepted_accuracy": accepted_text,
            "gate_coverage": f"{candidate.coverage:.6f}",
            "gate_images": str(candidate.images),
            "gate_threshold": f"{rules.threshold:g}",
            "production_version": metadata_value(production.version),
            "production_accuracy": f"{production.accuracy:.6f}",
        },
    }
