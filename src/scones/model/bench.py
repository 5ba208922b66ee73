"""Compare model artifacts side by side: what each costs per image and how good it is.

Every model is loaded as the server loads it (:class:`OnnxClassifier`, one intra-op
thread) and timed on the same validation images at batch size 1, interleaved image
by image, so load from other processes on a shared machine falls on all models
alike. Quality is measured the way ``scones evaluate`` measures it: on the
validation split recorded in each model's ``model.json`` (or every image of a separate
test set, ``--split all``), at the configured confidence threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scones.model.artifact import (
    OnnxClassifier,
)
from scones.model.build import evaluation_images
from scones.model.evaluate import evaluate_probabilities, expected_calibration_error
from scones.paths import ONNX_NAME


@dataclass(frozen=True)
class ModelBench:
    """One row of the comparison."""

    label: str
    directory: str
    version: str
    file_bytes: int
    ms_p50: float
    ms_p95: float
    ms_mean: float
    images_per_second: float
    images: int
    accuracy: float
    coverage: float
    accepted_accuracy: float | None
    accepted_errors: int
    expected_calibration_error: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, as the server benchmark reports."""
    ordered = sorted(values)
    rank = max(1, int(np.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def run_model_bench(
    models: list[tuple[str, Path]],
    data_dir: Path,
    threshold: float,
    *,
    timed_images: int = 200,
    warmup: int = 10,
    whole: bool = False,
) -> list[ModelBench]:
    """Time every model on ``timed_images`` validation images (every image of
    ``data_dir`` when ``whole``), interleaved, and score it on them."""
    if not models:
        raise ValueError("no models to compare")
    if timed_images < 1 or warmup < 0:
        raise ValueError("timed_images must be >= 1 and warmup >= 0")
    classifiers = [OnnxClassifier(path) for _, path in models]
    splits = [evaluation_images(c, data_dir, whole=whole)[1] for c in classifiers]
    latencies: list[list[float]] = [[] for _ in classifiers]
    for step in range(warmup + timed_images):
        for index, (classifier, validation) in enumerate(zip(classifiers, splits, strict=True)):
            image = validation.pixels[step % len(validation) : step % len(validation) + 1]
            started = time.perf_counter()
            classifier.predict_tensor(image)
            elapsed = time.perf_counter() - started
            if step >= warmup:
                latencies[index].append(elapsed * 1000.0)
    rows = []
    for (label, path), classifier, validation, times in zip(
        models, classifiers, splits, latencies, strict=True
    ):
        probabilities = classifier.predict_tensor(validation.pixels)
        report = evaluate_probabilities(
            probabilities, validation.targets, validation.labels, threshold
        )
        at = report["at_threshold"]
        mean = float(np.mean(times))
        rows.append(
            ModelBench(
                label=label,
                directory=str(path),
                version=classifier.manifest.version,
                file_bytes=(Path(path) / ONNX_NAME).stat().st_size,
                ms_p50=round(_percentile(times, 50), 3),
                ms_p95=round(_percentile(times, 95), 3),
                ms_mean=round(mean, 3),
                images_per_second=round(1000.0 / mean, 1),
                images=report["images"],
                accuracy=report["accuracy"],
                coverage=at["coverage"],
                accepted_accuracy=at["accepted_accuracy"],
                accepted_errors=at["accepted_errors"],
                expected_calibration_error=round(
                    expected_calibration_error(probabilities, validation.targets), 4
                ),
            )
        )
    return rows


def format_model_bench(rows: list[ModelBench], threshold: float) -> str:
    """A Markdown table, the first row being the reference for the compute ratio."""
    header = (
        "| model | version | ms/image p50 | p95 | images/s | time x first | MB | "
        f"accuracy | coverage at {threshold:g} | accepted accuracy | accepted errors | ECE |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    reference = rows[0].ms_mean
    lines = [header]
    for row in rows:
        accepted = "n/a" if row.accepted_accuracy is None else f"{row.accepted_accuracy:.3f}"
        lines.append(
            f"| {row.label} | {row.version} | {row.ms_p50:.2f} | {row.ms_p95:.2f} | "
            f"{row.images_per_second:.0f} | {row.ms_mean / reference:.2f} | "
            f"{row.file_bytes / 1e6:.1f} | {row.accuracy:.3f} | {row.coverage:.3f} | "
            f"{accepted} | {row.accepted_errors} | {row.expected_calibration_error:.3f} |"
        )
    return "\n".join(lines)
