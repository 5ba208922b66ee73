"""Evaluate a classifier's probabilities: accuracy, confusion matrix, and what a threshold does.

The workflow accepts a prediction only when its top probability reaches the
confidence threshold and sends the rest to review, so the numbers that matter
are the *coverage* (share accepted) and the accuracy of what is accepted, at the
configured threshold and across a range of thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scones_core.monitoring.statistics import ConfidenceSummary, label_counts, label_mix

from scones.model.artifact import (
    ModelAnswerError,
    ModelArtifactError,
    OnnxClassifier,
    checked_answers,
    one_line,
)
from scones.model.confusion import confusion_counts
from scones.model.folders import LabelledImages
from scones.paths import ONNX_NAME, display_path


def curve_thresholds(classes: int) -> tuple[float, ...]:
    """The thresholds the coverage/accuracy curve is drawn at: every hundredth from the
    lowest top probability ``classes`` allow (0.5 for two, 0.33 for three) up, and two
    more near 1."""
    first = math.floor(100 / max(classes, 2))
    return (*(round(0.01 * i, 2) for i in range(first, 100)), 0.995, 0.999)


ECE_BINS = 10
REPORT_JSON = "evaluation.json"
REPORT_PNG = "evaluation.png"


def check_threshold(threshold: float) -> float:
    """A confidence threshold must be a probability; 0 would accept everything on purpose."""
    if not 0.0 <= threshold <= 1.0 or np.isnan(threshold):
        raise ValueError(f"confidence threshold must be between 0 and 1, got {threshold}")
    return float(threshold)


def selective(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, Any]:
    """Coverage and accuracy of the predictions whose top probability is >= ``threshold``."""
    threshold = check_threshold(threshold)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    accepted = confidence >= threshold
    n_accepted = int(accepted.sum())
    return {
        "threshold": threshold,
        "accepted": n_accepted,
        "coverage": round(n_accepted / len(targets), 6) if len(targets) else 0.0,
        "accepted_correct": int(correct[accepted].sum()),
        "accepted_accuracy": (round(float(correct[accepted].mean()), 6) if n_accepted else None),
        "accepted_errors": int((~correct[accepted]).sum()),
    }


def _confidence_bins(
    probabilities: np.ndarray, targets: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges, bin index, top probability and correctness of every image.

    Bins are equal-width over [1 / classes, 1] (the top probability is never lower);
    bin i holds edges[i] <= confidence < edges[i + 1], and 1.0 goes in the last bin.
    """
    if len(targets) == 0:
        raise ValueError("cannot measure calibration on zero images")
    if bins < 1:
        raise ValueError(f"need at least one bin, got {bins}")
    edges = np.linspace(1.0 / probabilities.shape[1], 1.0, bins + 1)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    return edges, index, confidence, correct


def reliability(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """The calibration curve: per confidence bin, how many images fall in it, their mean
    top probability and how many of them are right."""
    edges, index, confidence, correct = _confidence_bins(probabilities, targets, bins)
    curve = []
    for i in range(bins):
        inside = index == i
        count = int(inside.sum())
        curve.append(
            {
                "low": round(float(edges[i]), 6),
                "high": round(float(edges[i + 1]), 6),
                "images": count,
                "mean_confidence": round(float(confidence[inside].mean()), 6) if count else None,
                "accuracy": round(float(correct[inside].mean()), 6) if count else None,
            }
        )
    return curve


def expected_calibration_error(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE as Guo et al. (2017) define it, sum over confidence bins of (share of images in
    the bin) x |accuracy - mean top probability| in the bin, but with the bins spread over
    [1 / classes, 1], where the top probability lies, not over [0, 1]: with two classes,
    10 bins of 0.05 instead of 5 usable bins of 0.1, so the figure is not comparable with
    one computed on Guo's bins."""
    _, index, confidence, correct = _confidence_bins(probabilities, targets, bins)
    error = 0.0
    for i in range(bins):
        inside = index == i
        if inside.any():
            gap = abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
            error += float(inside.mean()) * gap
    return error


def confusion_matrix(predicted: np.ndarray, targets: np.ndarray, classes: int) -> np.ndarray:
    """``m[true, predicted]`` counts (:func:`scones.model.confusion.confusion_counts`)."""
    pairs = zip(np.asarray(targets).tolist(), np.asarray(predicted).tolist(), strict=True)
    return np.array(confusion_counts(pairs, classes), dtype=np.int64)


def evaluate_probabilities(
    probabilities: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The full report as a JSON-ready dict; the curve at ``thresholds``
    (:func:`curve_thresholds` of the labels by default)."""
    threshold = check_threshold(threshold)
    if probabilities.ndim != 2 or probabilities.shape != (len(targets), len(labels)):
        raise ValueError(
            f"probabilities must be [{len(targets)}, {len(labels)}], got {probabilities.shape}"
        )
    if len(targets) == 0:
        raise ValueError("cannot evaluate zero images")
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(predicted, targets, len(labels))
    per_class = {}
    for i, label in enumerate(labels):
        support = int(matrix[i].sum())
        predicted_as = int(matrix[:, i].sum())
        per_class[label] = {
            "support": support,
            "recall": round(matrix[i, i] / support, 6) if support else None,
            "precision": round(matrix[i, i] / predicted_as, 6) if predicted_as else None,
        }
    confidence = probabilities.max(axis=1)
    return {
        "images": len(targets),
        "labels": list(labels),
        "accuracy": round(float((predicted == targets).mean()), 6),
        "confusion_matrix": {
            "rows": "true label",
            "columns": "predicted label",
            "matrix": matrix.tolist(),
        },
        "per_class": per_class,
        "mean_confidence": round(float(confidence.mean()), 6),
        "expected_calibration_error": round(expected_calibration_error(probabilities, targets), 6),
        "reliability": reliability(probabilities, targets),
        "at_threshold": selective(probabilities, targets, threshold),
        "curve": [
            selective(probabilities, targets, float(t))
            for t in (thresholds or curve_thresholds(len(labels)))
        ],
    }


def baseline(
    probabilities: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    model_version: str,
) -> dict[str, Any]:
    """What healthy traffic looks like, for the monitor to compare captured traffic against:
    summarised by the monitor's own statistics (``scones_core.monitoring.statistics``), so
    the baseline and a window of traffic are the same figures."""
    confidence = probabilities.max(axis=1).tolist()
    predicted = probabilities.argmax(axis=1).tolist()
    summary = ConfidenceSummary.of(confidence, threshold)
    if summary is None:
        raise ValueError("a baseline needs at least one prediction")
    mix = label_mix(label_counts((labels[i] for i in predicted), labels))
    return {
        "labels": list(labels),
        "label_mix": {label: round(share, 6) for label, share in mix.items()},
        "mean_confidence": round(summary.mean, 6),
        "confidence_percentiles": {
            "p10": round(summary.p10, 6),
            "p50": round(summary.p50, 6),
            "p90": round(summary.p90, 6),
        },
        "low_confidence_share": round(summary.low_confidence_share, 6),
        "threshold": threshold,
        "sample_count": summary.count,
        "model_version": model_version,
    }


def evaluate_artifact(
    classifier: OnnxClassifier,
    data: LabelledImages,
    threshold: float,
    split: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray]:
    """Score ``data`` through the exported graph (what is served) and build the report.

    A graph that fails on the images, or answers one of them with what the endpoint's
    contract refuses (rows the workflow fails as ``ModelResponseInvalid``), raises
    :class:`ModelArtifactError`: its scores would pass a retraining gate for a model whose
    every answer in production fails."""
    if tuple(classifier.labels) != tuple(data.labels):
        raise ValueError(f"model labels {classifier.labels} differ from data labels {data.labels}")
    graph = classifier.directory / ONNX_NAME
    try:
        probabilities = classifier.predict_tensor(data.pixels)
    except Exception as exc:  # onnxruntime's own error types
        raise ModelArtifactError(
            f"{display_path(graph)} fails on {len(data)} images: {one_line(exc)}"
        ) from exc
    try:
        checked_answers(
            probabilities, data.labels, len(data), [display_path(p) for p in data.paths]
        )
    except ModelAnswerError as exc:
        raise ModelAnswerError(f"{display_path(graph)} breaks the contract: {exc}") from None
    report = evaluate_probabilities(probabilities, data.targets, data.labels, threshold)
    report["mistakes"] = mistakes(probabilities, data, threshold)
    report = {
        "model": {
            "name": classifier.manifest.name,
            "version": classifier.manifest.version,
            "onnx_sha256": classifier.manifest.onnx_sha256,
        },
        "split": split,
        "evaluated_through": "onnxruntime (the exported model.onnx, as served)",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **report,
    }
    return report, probabilities


def mistakes(
    probabilities: np.ndarray, data: LabelledImages, threshold: float
) -> list[dict[str, Any]]:
    """Every image the model gets wrong, the most confident first. The ``accepted`` ones
    are the errors no person sees: the ones to look at (a wrong label, an ambiguous image,
    or a real failure)."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != data.targets)
    ordered = wrong[np.argsort(-confidence[wrong], kind="stable")]
    return [
        {
            "image": display_path(data.paths[i]),
            "label": data.labels[int(data.targets[i])],
            "predicted": data.labels[int(predicted[i])],
            "confidence": round(float(confidence[i]), 6),
            "accepted": bool(confidence[i] >= threshold),
        }
        for i in ordered
    ]


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Whole or not at all: a full disk leaves an earlier report as it was."""
    from scones.safe_files import write_json_file

    return write_json_file(path, payload)


def write_report(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """``evaluation.json`` and ``evaluation.png`` in ``out_dir``."""
    from scones.model.report_figure import render_report

    json_path = write_json(out_dir / REPORT_JSON, report)
    png_path = render_report(report, out_dir / REPORT_PNG)
    return json_path, png_path


def default_threshold() -> float:
    """``ConfidenceThreshold`` from ``template.yaml``: the deployed value, written once."""
    from scones.template_params import TEMPLATE_PATH, parameter_default

    try:
        raw = parameter_default("ConfidenceThreshold")
    except (FileNotFoundError, KeyError) as exc:
        raise ValueError(
            f"no ConfidenceThreshold default in {TEMPLATE_PATH} ({exc}); pass --threshold"
        ) from exc
    try:
        return check_threshold(float(raw))
    except ValueError as exc:
        raise ValueError(f"ConfidenceThreshold default {raw!r} in {TEMPLATE_PATH}: {exc}") from exc
