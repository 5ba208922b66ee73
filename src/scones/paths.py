"""Where the project's own files are: the one home of the shipped model's path.

Cheap to import (standard library only), so the CLI, the tests and the tools all
take the path from here instead of spelling it out. The model server takes only a
model folder's file names from here: in its container the model is wherever SageMaker
unpacks it (:data:`scones.serving.defaults.SAGEMAKER_MODEL_DIR`).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The classifier the project ships (model.onnx, model.json, evaluation and baseline),
# and its name in model.json.
SHIPPED_MODEL_NAME = "bicycle-motorcycle"
SHIPPED_MODEL_DIR = PROJECT_ROOT / "models" / SHIPPED_MODEL_NAME
# A model folder's drift baseline for the monitor (scones.model.evaluate.baseline), which a
# release uploads to BaselineKey and a retraining promotion copies there.
BASELINE_FILE = "baseline.json"
# A model folder's manifest (labels, input size, recipe, metrics, digests) and network.
MANIFEST_NAME = "model.json"
ONNX_NAME = "model.onnx"


def display_path(path: Path) -> str:
    """Relative to the project when inside it, so a report does not leak a home directory."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(resolved)
