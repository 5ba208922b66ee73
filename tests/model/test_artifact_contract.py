"""The artifact contract refuses a manifest and graph that do not belong together."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnx import ModelProto

from scones.model.artifact import ModelArtifactError, OnnxClassifier
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR
from tests import crafted_graphs as crafted

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


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (crafted.float16_input, r"takes 'image' as tensor\(float16\) \['N', 3, 32, 32\]"),
        (crafted.one_channel, r"takes 'image' as tensor\(float\) \['N', 1, 32, 32\]"),
        (crafted.no_batch_dimension, r"takes 'image' as tensor\(float\) \[3, 32, 32\]"),
        (crafted.fixed_batch_of_one, r"takes 'image' as tensor\(float\) \[1, 3, 32, 32\]"),
        (crafted.extra_input, r"also needs the inputs \['temperature'\], which nothing feeds"),
        (crafted.rank3_output, r"gives 'probabilities' as \['N', 1, 2\]; the contract is \[N, 2\]"),
        (crafted.logits, r"2 synthetic images: the answer for image 1 of 2 is \[7\.5.* outside"),
        (lambda: crafted.scaled(0.997), "the probabilities sum to 0.997000, not 1"),
    ],
)
def test_a_graph_that_breaks_the_contract_is_refused_when_it_loads(
    tmp_path: Path, graph: Callable[[], ModelProto], message: str
) -> None:
    """Each would load, answer /ping as healthy and then fail every request, evaluation or
    the retraining gate, or answer what the workflow refuses as ModelResponseInvalid."""
    with pytest.raises(ModelArtifactError, match=message):
        OnnxClassifier(crafted.artifact(tmp_path / "model", graph()))


@pytest.mark.parametrize("factor", [1.0, 0.9995])
def test_a_graph_within_the_contract_loads(tmp_path: Path, factor: float) -> None:
    """Any batch size, and rows summing to 1 within the workflow's tolerance."""
    classifier = OnnxClassifier(crafted.artifact(tmp_path / "model", crafted.scaled(factor)))
    answers = classifier.predict_tensor(np.zeros((5, 3, 32, 32), np.float32))
    assert answers.shape == (5, 2)
    assert answers.ravel().tolist() == pytest.approx([factor / 2] * 10)


def test_the_shipped_model_answers_as_its_bare_graph() -> None:
    """The load-time checks leave the shipped model's answers as onnxruntime gives them."""
    import onnxruntime as ort

    from scones.model.artifact import decode_image, images_to_tensor
    from scones.model.folders import load_images

    classifier = OnnxClassifier(SHIPPED)
    bare = ort.InferenceSession(str(SHIPPED / "model.onnx"), providers=["CPUExecutionProvider"])
    data = load_images(PROJECT_ROOT / "samples", classifier.labels, classifier.input_size)
    (expected,) = bare.run(["probabilities"], {"image": data.pixels})
    assert classifier.predict_tensor(data.pixels).tolist() == expected.astype(np.float64).tolist()
    body = data.paths[0].read_bytes()
    pixels = images_to_tensor([decode_image(body, classifier.input_size)], classifier.input_size)
    (one,) = bare.run(["probabilities"], {"image": pixels})
    assert classifier.predict_bytes(body) == one.astype(np.float64)[0].tolist()
