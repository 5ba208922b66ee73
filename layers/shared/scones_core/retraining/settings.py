"""The retraining functions' configuration, read from the environment at cold start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scones_core.bucket_layout import nested_pairs, parse_folder_prefix, retraining_pairs
from scones_core.errors import SettingsError
from scones_core.monitoring.settings import parse_fraction
from scones_core.settings import EnvReader, parse_input_size, parse_labels, positive_int

# Every variable from_env reads; template.yaml sets each one (a test checks).
ENVIRONMENT_VARIABLES = (
    "RETRAINING_BUCKET",
    "ENDPOINT_NAME",
    "LABELS",
    "TRAINING_DATA_PREFIX",
    "LABELLED_DATA_PREFIX",
    "GATE_DATA_PREFIX",
    "RETRAINING_PREFIX",
    "CONFIDENCE_THRESHOLD",
    "GATE_MIN_ACCEPTED_ACCURACY",
    "GATE_MAX_COVERAGE_DROP",
    "GATE_MAX_RECALL_DROP",
    "GATE_MIN_IMAGES_PER_CLASS",
    "RESULTS_TABLE_NAME",
    "MODEL_INPUT_SIZE",
)


@dataclass(frozen=True)
class RetrainingSettings:
    bucket: str
    endpoint_name: str
    labels: tuple[str, ...]
    training_prefix: str  # the original training channel: <prefix><label>/...
    labelled_prefix: str  # what people labelled in review: <prefix><label>/...
    gate_prefix: str  # the fixed gate set both models are judged on: <prefix><label>/...
    retraining_prefix: str  # where runs write manifests, models and reports
    confidence_threshold: float
    gate_min_accepted_accuracy: float
    gate_max_coverage_drop: float
    gate_max_recall_drop: float
    gate_min_images_per_class: int
    # The records: a labelled copy trains only while a REVIEWED record names it.
    results_table: str
    # What the stack serves (ModelInputSize): a retrained candidate must take it too.
    model_input_size: tuple[int, int]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RetrainingSettings:
        reader = EnvReader(environ)
        settings = cls(
            bucket=reader.required("RETRAINING_BUCKET"),
            endpoint_name=reader.required("ENDPOINT_NAME"),
            labels=reader.parsed("LABELS", parse_labels),
            training_prefix=reader.parsed("TRAINING_DATA_PREFIX", parse_folder_prefix),
            labelled_prefix=reader.parsed("LABELLED_DATA_PREFIX", parse_folder_prefix),
            gate_prefix=reader.parsed("GATE_DATA_PREFIX", parse_folder_prefix),
            retraining_prefix=reader.parsed("RETRAINING_PREFIX", parse_folder_prefix),
            confidence_threshold=reader.parsed("CONFIDENCE_THRESHOLD", parse_fraction),
            gate_min_accepted_accuracy=reader.parsed("GATE_MIN_ACCEPTED_ACCURACY", parse_fraction),
            gate_max_coverage_drop=reader.parsed("GATE_MAX_COVERAGE_DROP", parse_fraction),
            gate_max_recall_drop=reader.parsed("GATE_MAX_RECALL_DROP", parse_fraction),
            gate_min_images_per_class=reader.parsed("GATE_MIN_IMAGES_PER_CLASS", positive_int),
            results_table=reader.required("RESULTS_TABLE_NAME"),
            model_input_size=reader.parsed("MODEL_INPUT_SIZE", parse_input_size),
        )
        if reader.problems:
            raise SettingsError(
                "the retraining function's environment is invalid: " + "; ".join(reader.problems)
            )
        prefixes = {
            "TRAINING_DATA_PREFIX": settings.training_prefix,
            "LABELLED_DATA_PREFIX": settings.labelled_prefix,
            "GATE_DATA_PREFIX": settings.gate_prefix,
            "RETRAINING_PREFIX": settings.retraining_prefix,
        }
        # The deployment check's rule, under the variables' names.
        overlapping = nested_pairs(prefixes, retraining_pairs(prefixes))
        if overlapping:
            raise SettingsError(
                "the retraining prefixes must not contain each other: " + ", ".join(overlapping)
            )
        return settings
