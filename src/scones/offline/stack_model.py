"""The model folder an offline stack is to serve, judged before anything starts.

Apart from the stack (which imports moto, about a second): a command refuses a model the
stack could not serve, or a mistyped option beside it, in well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from scones.paths import BASELINE_FILE, MANIFEST_NAME


class StackError(RuntimeError):
    """The offline stack could not start or do what was asked; the message says why."""


def check_model(directory: Path, overrides: Mapping[str, str]) -> str | None:
    """Refuse, before anything starts, a model folder the server could not load or one
    whose classes are not the stack's ``ModelLabels`` in order: the workflow names a
    class by its position in the answer, so another order would record every image
    as the wrong class without an error. Its ``baseline.json``, which the stack publishes
    as the monitor's, must be that model's (``model_baseline``).

    A folder without one is served (docs/monitoring.md): the answer is then the note its
    user must read once, that the monitor will measure no drift for it; ``None`` otherwise."""
    from scones_core.monitoring.drift import BaselineError, model_baseline
    from scones_core.settings import parse_labels

    from scones.model.artifact import (
        ModelArtifactError,
        OnnxClassifier,
        model_is_a_file,
        stack_mismatches,
    )
    from scones.template_params import ParameterError, resolve_parameters

    if directory.exists() and not directory.is_dir():
        raise StackError(model_is_a_file(directory))
    if not (directory / MANIFEST_NAME).is_file():
        raise StackError(
            f"no model at {directory} (model.json missing); "
            "--model names a model's folder (model.json, model.onnx); `scones train` makes one"
        )
    try:
        parameters = resolve_parameters(overrides)
        labels = parse_labels(parameters["ModelLabels"])
    except ParameterError as exc:
        raise StackError(str(exc)) from None
    try:
        # Loaded as the server will load it (about 0.3 s): a graph whose bytes match its
        # digest can still be one onnxruntime refuses, or sized for other labels.
        manifest = OnnxClassifier(directory).manifest
    except ModelArtifactError as exc:
        raise StackError(f"the model at {directory} cannot be served: {exc}") from None
    problems = stack_mismatches(manifest, labels, parameters["ModelInputSize"], how="pass --param")
    if problems:
        raise StackError(f"the model at {directory}: " + "; and ".join(problems))
    baseline = directory / BASELINE_FILE
    if not baseline.is_file():
        # The monitor's only sign is an error in its log at every run: say it up front.
        return (
            f"the model at {directory} has no {BASELINE_FILE}: the monitor measures no label "
            "drift for it (no LabelDrift or MeanConfidenceShift metric, no LABEL_DRIFT alert, "
            "so drift starts no retraining). To have drift measured, put the model's own "
            f"{BASELINE_FILE} in the folder: `scones train` writes one beside the model it "
            "trains, and a retrained model's model.tar.gz holds its own"
        )
    # The stack makes it the monitor's baseline: one the monitor cannot use stops drift
    # silently, and another model's compares the traffic with that model's mix.
    try:
        model_baseline(baseline.read_bytes(), manifest.labels, manifest.version)
    except (OSError, BaselineError) as exc:
        raise StackError(
            f"the model at {directory}: its {BASELINE_FILE} cannot be the monitor's drift "
            f"baseline: {exc}"
        ) from None
    return None
