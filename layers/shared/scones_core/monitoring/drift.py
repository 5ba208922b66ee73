"""The training baseline and how far a window's label mix has moved from it.

The distance is the total variation distance, ``0.5 * sum(|p_i - q_i|)``: the
share of traffic that would have to change label for the two mixes to match.
It is bounded in ``[0, 1]``, so one alert threshold means the same thing for
any number of labels, and it stays finite when a label is absent from a window,
which happens often in small windows. PSI, the usual alternative, divides by
each share and takes its logarithm, so an unseen label makes it infinite unless
an arbitrary smoothing constant is added, and its scale has no direct reading.

A distance alone says nothing about chance: 14 bicycles in 20 requests is 0.215 from a
0.485 baseline, and a window of 20 drawn from the baseline itself gets that far about
one hour in fourteen. So each comparison also carries Pearson's chi-square goodness-of-fit
p-value of the window's counts against the baseline's mix (``k - 1`` degrees of freedom):
the chance that traffic with the baseline's mix would land at least this far from it. The
monitor calls a mix drifted only when it is both far (``DriftAlertThreshold``) and beyond
chance (``DriftAlertSignificance``); large windows pass the second test at any distance
worth an alert, small ones only at a large distance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scones_core.json_text import NotJSON, load_json
from scones_core.monitoring.locations import S3Location, read_optional_object

logger = logging.getLogger(__name__)


class BaselineError(ValueError):
    """The baseline file exists but is not a baseline this monitor can use."""


@dataclass(frozen=True)
class Baseline:
    """What the model did on its evaluation data, written by the training step."""

    labels: tuple[str, ...]
    label_mix: dict[str, float]
    mean_confidence: float
    confidence_percentiles: dict[str, float]
    low_confidence_share: float
    threshold: float
    sample_count: int
    model_version: str

    @classmethod
    def from_json(cls, document: Any) -> Baseline:
        """The baseline ``document`` (parsed JSON) holds; ``BaselineError`` naming the
        first field the monitor could not use.

        Every number must be a JSON number (``float()`` would take the string ``"NaN"``
        and ``true``), finite and in its range: a non-finite one reaches the metrics,
        whose document is then not JSON and CloudWatch drops all of it."""
        if not isinstance(document, dict):
            raise BaselineError("the baseline is not a JSON object")
        try:
            labels = tuple(str(label) for label in document["labels"])
            mix = {
                str(k): _fraction(v, f"label_mix[{k!r}]")
                for k, v in _object(document["label_mix"], "label_mix").items()
            }
            percentiles = {
                str(k): _fraction(v, f"confidence_percentiles[{k!r}]")
                for k, v in _object(
                    document["confidence_percentiles"], "confidence_percentiles"
                ).items()
            }
            baseline = cls(
                labels=labels,
                label_mix=mix,
                mean_confidence=_fraction(document["mean_confidence"], "mean_confidence"),
                confidence_percentiles=percentiles,
                low_confidence_share=_fraction(
                    document["low_confidence_share"], "low_confidence_share"
                ),
                threshold=_fraction(document["threshold"], "threshold"),
                sample_count=_whole(document["sample_count"], "sample_count"),
                model_version=str(document["model_version"]),
            )
        except BaselineError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"the baseline is incomplete or mistyped: {exc!r}") from exc
        if set(mix) != set(labels):
            raise BaselineError(f"label_mix names {sorted(mix)} but labels are {list(labels)}")
        if math.fsum(mix.values()) <= 0:
            raise BaselineError("label_mix must have a positive sum")
        return baseline

    def label_problem(self, labels: Sequence[str]) -> str | None:
        """Why this baseline's mix cannot be compared with a model of ``labels`` (``None``
        when it can): a label it has no share for, or no share on any of them (its whole
        mix on labels the model does not have), which leaves no mix to measure from.
        The one rule the monitor (``compare_with_baseline``) and ``scones deploy-baseline``
        apply, so a baseline the deploy step publishes is one the monitor compares with."""
        missing = [label for label in labels if label not in self.label_mix]
        if missing:
            return f"label_mix has no share for the model's labels {missing}"
        if math.fsum(max(self.label_mix[label], 0.0) for label in labels) <= 0:
            others = sorted(set(self.label_mix) - set(labels))
            return (
                f"label_mix gives the model's labels {list(labels)} no share (all of it is "
                f"on {others})"
            )
        return None


def model_baseline(body: str | bytes, labels: Sequence[str], model_version: str) -> Baseline:
    """The baseline in ``body`` (a ``baseline.json``'s text), when it can be the drift
    baseline of the model ``model_version`` (its ``model.json`` version) answering
    ``labels``; ``BaselineError`` saying why not.

    The one judgement of every step that makes a file the monitor's baseline (the offline
    stack, ``scones deploy-baseline``, the retraining gate's evaluation): a file the monitor
    could not use stops drift monitoring without a failure, and one made for another model
    compares traffic with that model's mix and names it in every drift metric."""
    try:
        baseline = Baseline.from_json(load_json(body))
    except NotJSON as exc:
        raise BaselineError(f"the baseline is {exc}") from exc
    if problem := baseline.label_problem(labels):
        raise BaselineError(problem)
    if baseline.model_version != model_version:
        raise BaselineError(
            f"the baseline was made for model version {baseline.model_version}, not this "
            f"model's {model_version} (model.json's version)"
        )
    return baseline


def _object(value: Any, name: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise BaselineError(f"the baseline's {name} is not a JSON object")
    return value


def _number(value: Any, name: str) -> float | int:
    # bool is an int to Python; a JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BaselineError(f"the baseline's {name} is not a JSON number: {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BaselineError(f"the baseline's {name} is not a finite number: {_shown(value)}")
    return value


def _fraction(value: Any, name: str) -> float:
    """A share or a confidence: a number in ``[0, 1]`` (compared before ``float()``,
    which overflows on a long integer)."""
    number = _number(value, name)
    if not 0 <= number <= 1:
        raise BaselineError(f"the baseline's {name} is not in [0, 1]: {_shown(value)}")
    return float(number)


def _whole(value: Any, name: str) -> int:
    number = _number(value, name)
    if number < 0 or (isinstance(number, float) and not number.is_integer()):
        raise BaselineError(f"the baseline's {name} is not a whole number >= 0: {_shown(value)}")
    return int(number)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def load_baseline(s3: Any, location: S3Location) -> Baseline | None:
    """The baseline at ``location``; ``None`` (logged) when it is missing or unusable.

    Drift is an extra signal: without a baseline the rest of the report still
    stands, so a missing or broken file is logged as an error, not raised.
    """
    body = read_optional_object(s3, location)
    if body is None:
        logger.error(
            "baseline not found; label drift is not computed", extra={"baseline": location.uri}
        )
        return None
    try:
        return Baseline.from_json(load_json(body))
    except (NotJSON, BaselineError) as exc:
        logger.error(
            "baseline is unusable; label drift is not computed",
            extra={"baseline": location.uri, "problem": str(exc)},
        )
        return None


def total_variation_distance(
    observed: Mapping[str, float], expected: Mapping[str, float], labels: Sequence[str]
) -> float:
    """``0.5 * sum(|p - q|)`` over ``labels``, after normalising both mixes to sum to 1."""
    p = _normalised(observed, labels)
    q = _normalised(expected, labels)
    return 0.5 * math.fsum(abs(p[label] - q[label]) for label in labels)


def _normalised(mix: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    total = math.fsum(max(mix.get(label, 0.0), 0.0) for label in labels)
    if total <= 0:
        raise ValueError("a label mix with no mass has no distance")
    return {label: max(mix.get(label, 0.0), 0.0) / total for label in labels}


def chi_square_p_value(
    counts: Mapping[str, int], expected: Mapping[str, float], labels: Sequence[str]
) -> float:
    """The chance that ``sum(counts)`` requests drawn from the ``expected`` mix land at
    least as far from it as ``counts`` (Pearson's statistic, a degree of freedom per label
    the baseline has, less one). A label the baseline never saw, seen now, is beyond
    chance (0.0)."""
    total = sum(max(counts.get(label, 0), 0) for label in labels)
    if total == 0:
        return 1.0
    shares = _normalised(expected, labels)
    statistic = 0.0
    cells = 0
    for label in labels:
        observed = max(counts.get(label, 0), 0)
        share = shares[label]
        if share == 0:
            if observed:
                return 0.0
            continue
        cells += 1
        statistic += (observed - total * share) ** 2 / (total * share)
    if cells < 2:
        return 1.0
    return chi_square_survival(statistic, cells - 1)


def chi_square_survival(statistic: float, freedom: int) -> float:
    """``P(X >= statistic)`` for chi-square with a whole number of degrees of freedom:
    the closed form of the regularised upper incomplete gamma function at half-integers
    (a finite sum), exact without a statistics library in the layer."""
    half = statistic / 2
    if half <= 0:
        return 1.0
    if freedom % 2 == 0:
        terms = (i * math.log(half) - math.lgamma(i + 1) for i in range(freedom // 2))
        return min(1.0, math.fsum(math.exp(t - half) for t in terms))
    terms = (
        (i - 0.5) * math.log(half) - math.lgamma(i + 0.5) for i in range(1, (freedom + 1) // 2)
    )
    tail = math.erfc(math.sqrt(half)) + math.fsum(math.exp(t - half) for t in terms)
    return min(1.0, tail)


@dataclass(frozen=True)
class DriftResult:
    """A window compared with the baseline."""

    label_distance: float
    p_value: float  # chance of a mix this far from the baseline's, drawn from it
    mean_confidence_shift: float | None  # window mean minus baseline mean
    baseline_model_version: str

    def drifted(self, threshold: float, significance: float) -> bool:
        """Far from the baseline (``> threshold``) and beyond chance (``< significance``)."""
        return self.label_distance > threshold and self.p_value < significance


def compare_with_baseline(
    baseline: Baseline,
    counts: Mapping[str, int],
    mean_confidence: float | None,
    labels: Sequence[str],
) -> DriftResult | None:
    """``None`` when the window had no requests (an empty mix has no distance), or when
    the baseline has no mix over ``labels`` (logged: ``Baseline.label_problem``)."""
    if not any(counts.get(label, 0) > 0 for label in labels):
        return None
    problem = baseline.label_problem(labels)
    if problem:
        logger.error(
            "baseline does not fit the model's labels; label drift is not computed",
            extra={"problem": problem, "baseline_labels": list(baseline.labels)},
        )
        return None
    shift = None if mean_confidence is None else mean_confidence - baseline.mean_confidence
    mix = {label: float(max(counts.get(label, 0), 0)) for label in labels}
    return DriftResult(
        label_distance=total_variation_distance(mix, baseline.label_mix, labels),
        p_value=chi_square_p_value(counts, baseline.label_mix, labels),
        mean_confidence_shift=shift,
        baseline_model_version=baseline.model_version,
    )
