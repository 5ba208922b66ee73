"""Int8 and float16 export: the smaller graph keeps the contract and agrees with the float
graph."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import pytest

from scones.model.artifact import OnnxClassifier
from scones.model.build import build_model, split_data
from scones.model.folders import load_images
from scones.model.quantize import FP16_TOLERANCE, PROBABILITY_TOLERANCE
from scones.model.train import TrainRecipe

LABELS = ("bicycle", "motorcycle")


class Exports(NamedTuple):
    """One tiny model exported three ways, and its recipe."""

    float_dir: Path
    int8_dir: Path
    fp16_dir: Path
    recipe: TrainRecipe


@pytest.fixture(scope="module")
def exports(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Exports:
    recipe = TrainRecipe.for_network(
        "resnet",
        seed=3,
        validation_fraction=0.25,
        members=2,
        epochs=3,
        batch_size=16,
        threads=1,
        width=8,
    )
    root = tmp_path_factory.mktemp("quantised")
    float_dir, int8_dir, fp16_dir = root / "float", root / "int8", root / "fp16"
    build_model(small_data, float_dir, recipe, threshold=0.9, name="tiny")
    build_model(
        small_data, int8_dir, dataclasses.replace(recipe, quantize="int8"), 0.9, name="tiny"
    )
    build_model(
        small_data, fp16_dir, dataclasses.replace(recipe, quantize="fp16"), 0.9, name="tiny"
    )
    return Exports(float_dir, int8_dir, fp16_dir, recipe)


def held_out_probabilities(small_data: Path, recipe: TrainRecipe, *dirs: Path) -> list[np.ndarray]:
    """What each model says of the recipe's held-out images."""
    data = load_images(small_data, LABELS)
    validation = split_data(data, small_data, recipe.validation_fraction, recipe.seed).validation
    return [OnnxClassifier(d).predict_tensor(validation.pixels) for d in dirs]


def test_the_int8_graph_matches_the_float_graph_on_held_out_images(
    small_data: Path, exports: Exports
) -> None:
    reference, quantised = held_out_probabilities(
        small_data, exports.recipe, exports.float_dir, exports.int8_dir
    )
    np.testing.assert_allclose(quantised.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(quantised - reference).max() <= PROBABILITY_TOLERANCE
    assert (quantised.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 15 / 16


def test_the_int8_graph_is_int8_and_says_so(exports: Exports) -> None:
    float_dir, int8_dir = exports.float_dir, exports.int8_dir
    graph = onnx.load(str(int8_dir / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = onnx.TensorProto.INT8
    assert any(init.data_type == int8 for init in graph.graph.initializer)
    manifest = json.loads((int8_dir / "model.json").read_text())
    assert manifest["recipe"]["quantize"] == "int8"
    assert manifest["quantization"]["calibration_source"] == "training images only"
    assert manifest["export_check"]["tolerance"] == PROBABILITY_TOLERANCE
    assert "quantization" not in json.loads((float_dir / "model.json").read_text())
    assert not (int8_dir / "float.onnx").exists()
    # The contract is unchanged: float RGB in, float probabilities out.
    assert OnnxClassifier(int8_dir).labels == LABELS


def test_the_fp16_graph_is_half_the_size_and_matches_the_float_graph(
    small_data: Path, exports: Exports
) -> None:
    float_dir, fp16_dir = exports.float_dir, exports.fp16_dir
    graph = onnx.load(str(fp16_dir / "model.onnx"))
    float16 = onnx.TensorProto.FLOAT16
    weights = [init for init in graph.graph.initializer if init.dims]
    assert weights and all(init.data_type == float16 for init in weights)
    # The contract is unchanged: float32 RGB in, float32 probabilities out.
    for value in (*graph.graph.input, *graph.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    size = (fp16_dir / "model.onnx").stat().st_size
    assert size < 0.6 * (float_dir / "model.onnx").stat().st_size
    manifest = json.loads((fp16_dir / "model.json").read_text())
    assert manifest["recipe"]["quantize"] == "fp16"
    assert "float16" in manifest["quantization"]["method"]
    assert manifest["export_check"]["tolerance"] == FP16_TOLERANCE
    assert manifest["export_check"]["max_abs_diff_vs_torch"] <= FP16_TOLERANCE
    assert not (fp16_dir / "float.onnx").exists()
    reference, halved = held_out_probabilities(small_data, exports.recipe, float_dir, fp16_dir)
    np.testing.assert_allclose(halved.sum(axis=1), 1.0, atol=1e-3)
    assert np.abs(halved - reference).max() <= FP16_TOLERANCE
    assert (halved.argmax(axis=1) == reference.argmax(axis=1)).all()
