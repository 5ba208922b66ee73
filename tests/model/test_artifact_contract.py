"""The artifact contract refuses a manifest and graph that do not belong together."""

from __future__ import annotations

import hashlib
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
    model = copy_with(tmp_path)
    garbage = b"not a protobuf" * 64
    (model / "model.onnx").write_bytes(garbage)
    manifest = json.loads((model / "model.json").read_text())
    manifest["onnx_sha256"] = hashlib.sha256(garbage).hexdigest()
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError, match="not a graph onnxruntime can load"):
        OnnxClassifier(model)
    archive = tmp_path / "model.tar.gz"
    archive.write_text("x")
    with pytest.raises(ModelArtifactError) as refused:
        OnnxClassifier(archive)
    assert str(refused.value) == (
        f"no model at {archive}: it is a file; --model names a model's folder, not a file "
        "(unpack the archive first)"
    )
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


def zeros_file(values: list[float]) -> bytes:
    return np.array([values], dtype=np.float32).tobytes()


@pytest.mark.parametrize("location", ["weights.bin", "../outside/weights.bin"])
def test_a_graph_keeping_a_weight_in_another_file_is_refused(tmp_path: Path, location: str) -> None:
    """model.json's onnx_sha256 covers model.onnx only: a weight kept in a file beside it
    (ONNX external data) could change the answers under the same digest and version."""
    model = crafted.artifact(tmp_path / "model", crafted.zeros_outside(location))
    (model / location).parent.mkdir(parents=True, exist_ok=True)
    (model / location).write_bytes(zeros_file([0.0, 0.0]))
    with pytest.raises(ModelArtifactError) as refused:
        OnnxClassifier(model)
    assert str(refused.value) == (
        f"{model / 'model.onnx'} keeps tensor 'zeros' (in {location!r}) in a file of its own "
        "(ONNX external data), which model.json's onnx_sha256 does not cover: a model's "
        "every weight must be inside model.onnx, as `scones train` exports it"
    )


def test_a_graph_whose_protobuf_the_check_cannot_walk_is_refused(tmp_path: Path) -> None:
    """onnxruntime skips a field it does not know, even one encoded as a group (a wire
    type no field of onnx.proto uses); the external-data check cannot see past it."""
    # Field 100 as a group: its start (wire type 3) and its end (4), each a 2-byte varint.
    graph = crafted.probabilities().SerializeToString() + b"\xa3\x06" + b"\xa4\x06"
    model = crafted.artifact(tmp_path / "model", crafted.probabilities())
    (model / "model.onnx").write_bytes(graph)
    manifest = json.loads((model / "model.json").read_text())
    manifest["onnx_sha256"] = hashlib.sha256(graph).hexdigest()
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError) as refused:
        OnnxClassifier(model)
    assert str(refused.value) == (
        f"{model / 'model.onnx'} loads, but its protobuf cannot be read to check that every "
        f"weight is inside it: field 100 at byte {len(graph) - 4} has wire type 3"
    )


def test_every_place_a_tensor_can_be_is_checked_for_external_data() -> None:
    """Initializers, sparse initializers, Constant nodes, subgraphs and functions."""
    from onnx import NodeProto, TensorProto, helper

    from scones.model.external_data import external_tensor

    weights = crafted.probabilities().graph.initializer[1]  # zeros, float32 [1, 2]
    moved = crafted.external(weights, "w.bin")

    def constant(tensor: TensorProto) -> NodeProto:
        return helper.make_node("Constant", [], ["c"], value=tensor)

    def in_subgraph(node: NodeProto) -> NodeProto:
        answer = helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 2])
        body = helper.make_graph([node], "body", [], [answer])
        return helper.make_node("If", ["cond"], ["c"], then_branch=body, else_branch=body)

    def with_node(node: NodeProto) -> bytes:
        model = crafted.probabilities()
        model.graph.node.append(node)
        return model.SerializeToString()

    sparse = helper.make_sparse_tensor(moved, crafted._const("i", [0], np.int64), [2])
    model = crafted.probabilities()
    model.graph.sparse_initializer.append(sparse)
    in_sparse = model.SerializeToString()
    model = crafted.probabilities()
    model.functions.append(helper.make_function("local", "f", [], ["c"], [constant(moved)], []))
    in_function = model.SerializeToString()
    for graph in (
        crafted.zeros_outside("w.bin").SerializeToString(),
        with_node(constant(moved)),
        with_node(in_subgraph(constant(moved))),
        with_node(in_subgraph(in_subgraph(constant(moved)))),
        in_sparse,
        in_function,
    ):
        assert external_tensor(graph) == "'zeros' (in 'w.bin')"
    assert external_tensor(with_node(in_subgraph(constant(weights)))) is None
    for shipped in sorted((PROJECT_ROOT / "models").rglob("model.onnx")):
        assert external_tensor(shipped.read_bytes()) is None, shipped


def test_the_graph_loaded_is_the_one_whose_digest_was_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model.onnx replaced just after its digest is checked: onnxruntime loads the bytes
    that were checked, not the file as it is by then."""
    import hashlib as real_hashlib
    from types import SimpleNamespace

    from scones.model import artifact

    model = crafted.artifact(tmp_path / "model", crafted.scaled(1.0))
    other = crafted.scaled(0.9995).SerializeToString()

    class SwappedOnceHashed:
        def __init__(self, *data: bytes) -> None:
            self.digest = real_hashlib.sha256(*data)
            self.update = self.digest.update

        def hexdigest(self) -> str:
            (model / "model.onnx").write_bytes(other)
            return self.digest.hexdigest()

    monkeypatch.setattr(artifact, "hashlib", SimpleNamespace(sha256=SwappedOnceHashed))
    classifier = OnnxClassifier(model)
    answers = classifier.predict_tensor(np.zeros((1, 3, 32, 32), np.float32))
    assert answers.tolist() == [[0.5, 0.5]]


def test_a_manifest_over_a_mebibyte_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    import tracemalloc

    from scones.model.artifact import ModelManifest

    MAX_MANIFEST_BYTES = 1 << 20  # as docs/serving.md states it
    model = copy_with(tmp_path)
    manifest = (model / "model.json").read_bytes()
    padded = manifest + b" " * (MAX_MANIFEST_BYTES + 1 - len(manifest))
    (model / "model.json").write_bytes(padded)  # valid JSON, one byte over
    with pytest.raises(ModelArtifactError, match=r"is over 1048576 bytes: not a model\.json"):
        ModelManifest.load(model)
    (model / "model.json").write_bytes(padded[:-1])
    assert ModelManifest.load(model).version == json.loads(manifest)["version"]
    with (model / "model.json").open("wb") as sparse:
        sparse.truncate(256 << 20)  # 256 MiB of zeros, on disk in no time
    tracemalloc.start()
    try:
        with pytest.raises(ModelArtifactError, match="is over 1048576 bytes"):
            ModelManifest.load(model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_MANIFEST_BYTES
