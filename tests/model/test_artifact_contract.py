"""The artifact contract refuses a manifest and graph that do not belong together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scones.model.artifact import ModelArtifactError, OnnxClassifier
from scones.paths import SHIPPED_MODEL_DIR

SHIPPED = SHIPPED_MODEL_DIR


def copy_with(tmp_path: Path, **changes: object) -> Path:
    target = tmp_path / "model"
    target.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(SHIPPED / name, target / name)
    manifest = json.loads((target / "model.json").read_text())
    manifest.update(changes)
    (target / "model.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": "bicycle,motorcycle"}, "labels must be a list"),
        ({"labels": ["bicycle", "motorcycle", "scooter"]}, "gives 2 probabilities"),
        ({"onnx_sha256": "0" * 64}, "has sha256"),
        ({"input_size": "big"}, "incomplete"),
    ],
)
def test_mismatched_artifacts_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelArtifactError, match=message):
        OnnxClassifier(copy_with(tmp_path, **changes))


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactError, match="model manifest not found"):
        OnnxClassifier(tmp_path)
    (tmp_path / "model.json").write_text((SHIPPED / "model.json").read_text())
    with pytest.raises(ModelArtifactError, match="model graph not found"):
        OnnxClassifier(tmp_path)
