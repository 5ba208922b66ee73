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
        ({"input_size": "big"}, "must be two whole numbers"),
        ({"input_size": [32.9, 32.2]}, "must be two whole numbers"),
        ({"input_size": [32, 32, 32]}, r"input_size \[32, 32, 32\] must be two whole numbers"),
        ({"input_size": [32]}, r"input_size \[32\] must be two whole numbers"),
        ({"labels": ["bicycle", "bicycle"]}, "repeat a name"),
        ({"name": None}, "name is None, not a non-empty string"),
        ({"version": ""}, "version is '', not a non-empty string"),
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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_size": [0, 0]}, r"input_size \[0, 0\] must be two sides from 1 to 4096"),
        ({"input_size": [100000, 100000]}, "must be two sides from 1 to 4096"),
        ({"input_size": [64, 48]}, r"takes 32x32 images but model.json says input_size \[64, 48\]"),
    ],
)
def test_an_input_size_the_graph_cannot_take_is_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelArtifactError, match=message):
        OnnxClassifier(copy_with(tmp_path, **changes))


def test_a_graph_onnxruntime_cannot_load_and_a_manifest_that_is_no_file_are_named(
    tmp_path: Path,
) -> None:
    import hashlib

    model = copy_with(tmp_path)
    garbage = b"not a protobuf" * 64
    (model / "model.onnx").write_bytes(garbage)
    manifest = json.loads((model / "model.json").read_text())
    manifest["onnx_sha256"] = hashlib.sha256(garbage).hexdigest()
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError, match="not a graph onnxruntime can load"):
        OnnxClassifier(model)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(ModelArtifactError, match=r"cannot be read: .*Not a directory"):
        OnnxClassifier(not_a_folder)
    (model / "model.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ModelArtifactError, match="is not valid JSON"):
        OnnxClassifier(model)
