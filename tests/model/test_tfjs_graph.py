"""The TF.js graph-model reader against an independent NumPy reference of TensorFlow's ops.

The layouts are where such a reader goes wrong silently (NHWC vs NCHW, HWIO kernels,
depthwise multipliers, TensorFlow's asymmetric SAME padding), so each is checked
against a direct loop implementation on a small graph built here, and the shipped
backbone is checked for integrity and against TensorFlow.js's own output.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scones_core.training_split import TRAINED_INPUT_SIZE

from scones.model.artifact import decode_image, images_to_tensor
from scones.model.backbone import MOBILENETV3_COCO, Backbone
from scones.model.folders import DataError
from scones.model.networks import FineTunedBackbone
from scones.model.tfjs_graph import GraphModelError, GraphModule, _same_padding

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = PROJECT_ROOT / "samples" / "bicycle"
REFERENCE = Path(__file__).parent / "data" / "backbone_reference.json"


def _s(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _conv_attr(strides: int, padding: str, fused: list[str] | None = None) -> dict[str, Any]:
    attr: dict[str, Any] = {
        "strides": {"list": {"i": ["1", str(strides), str(strides), "1"]}},
        "padding": {"s": _s(padding)},
        "data_format": {"s": _s("NHWC")},
        "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
    }
    if fused:
        attr["fused_ops"] = {"list": {"s": [_s(op) for op in fused]}}
    return attr


def write_graph(
    folder: Path,
    nodes: list[dict[str, Any]],
    weights: dict[str, np.ndarray],
    float16: bool = True,
) -> Path:
    """A graph model folder: ``model.json`` plus one shard, float weights stored as float16."""
    folder.mkdir(parents=True, exist_ok=True)
    specs, blobs = [], []
    for name, array in weights.items():
        spec: dict[str, Any] = {"name": name, "shape": list(array.shape)}
        if array.dtype == np.int32:
            spec["dtype"] = "int32"
            blobs.append(array.tobytes())
        elif float16:
            spec.update(dtype="float32", quantization={"dtype": "float16"})
            blobs.append(array.astype(np.float16).tobytes())
        else:
            spec["dtype"] = "float32"
            blobs.append(array.astype(np.float32).tobytes())
        specs.append(spec)
        nodes.append({"name": name, "op": "Const"})
    (folder / "weights.bin").write_bytes(b"".join(blobs))
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}],
    }
    (folder / "model.json").write_text(json.dumps(model))
    return folder


# --- an independent reference: TensorFlow's semantics as plain loops --------------------


def _same(n: int, k: int, stride: int) -> tuple[int, int]:
    """TF SAME: output ceil(n/stride); the odd padding pixel goes at the end."""
    total = max((-(-n // stride) - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def ref_pad(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    return np.pad(x, ((0, 0), _same(x.shape[1], k, stride), _same(x.shape[2], k, stride), (0, 0)))


def ref_conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """NHWC input, HWIO kernel, SAME padding."""
    k = kernel.shape[0]
    p = ref_pad(x, k, stride)
    out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = p[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            y[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel)
    return y


def ref_depthwise(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NHWC input, [kh, kw, in, multiplier] kernel, stride 1, SAME padding."""
    k = kernel.shape[0]
    p = ref_pad(x, k, 1)
    n, h, w, c = x.shape
    y = np.zeros((n, h, w, c * kernel.shape[3]))
    for i in range(h):
        for j in range(w):
            patch = p[:, i : i + k, j : j + k, :]
            # output channel c*mult + m reads input channel c with filter m
            y[:, i, j, :] = np.einsum("nhwc,hwcm->ncm", patch, kernel).reshape(n, -1)
    return y


@pytest.fixture
def small_graph(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    # float16-representable weights, so the reference sees exactly what the shard holds
    weights = {
        "w1": rng.normal(size=(3, 3, 3, 4)).astype(np.float16).astype(np.float32),
        "b1": rng.normal(size=(4,)).astype(np.float16).astype(np.float32),
        "dw": rng.normal(size=(3, 3, 4, 2)).astype(np.float16).astype(np.float32),
        "scale": np.array(0.5, dtype=np.float32),
        "channel": rng.normal(size=(8,)).astype(np.float16).astype(np.float32),
        "gate": rng.normal(size=(1, 1, 1, 8)).astype(np.float16).astype(np.float32),
        "axes": np.array([1, 2], dtype=np.int32),
    }
    nodes = [
        {"name": "input", "op": "Placeholder"},
        {
            "name": "conv",
            "op": "_FusedConv2D",
            "input": ["input", "w1", "b1"],
            "attr": _conv_attr(2, "SAME", ["BiasAdd", "Relu6"]),
        },
        {
            "name": "depthwise",
            "op": "DepthwiseConv2dNative",
            "input": ["conv", "dw"],
            "attr": _conv_attr(1, "SAME"),
        },
        # an explicit output index and a control input, as TF writes them
        {"name": "scaled", "op": "Mul", "input": ["scale", "depthwise:0", "^conv"]},
        {"name": "sum", "op": "AddV2", "input": ["scaled", "depthwise"]},
        {"name": "shifted", "op": "Sub", "input": ["sum", "channel"]},  # per-channel vector
        {"name": "gated", "op": "Mul", "input": ["shifted", "gate"]},  # NHWC constant
        {"name": "squashed", "op": "Sigmoid", "input": ["gated"]},
        {
            "name": "pooled",
            "op": "Mean",
            "input": ["squashed", "axes"],
            "attr": {"keep_dims": {"b": True}},
        },
        {"name": "flat", "op": "Mean", "input": ["squashed", "axes"]},
        {"name": "unused", "op": "NotARealOp", "input": ["input"]},
    ]
    return write_graph(tmp_path / "graph", nodes, weights), weights


def reference(x_nhwc: np.ndarray, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    conv = np.clip(ref_conv(x_nhwc, w["w1"], 2) + w["b1"], 0, 6)
    depthwise = ref_depthwise(conv, w["dw"])
    total = 0.5 * depthwise + depthwise
    squashed = 1 / (1 + np.exp(-((total - w["channel"]) * w["gate"])))
    return {
        "conv": conv,
        "depthwise": depthwise,
        "squashed": squashed,
        "pooled": squashed.mean(axis=(1, 2), keepdims=True),
        "flat": squashed.mean(axis=(1, 2)),
    }


# odd and even sides get different SAME padding; unequal sides catch swapped H and W
@pytest.mark.parametrize("size", [(7, 7), (8, 8), (7, 10)])
@pytest.mark.parametrize("output", ["conv", "depthwise", "squashed", "pooled", "flat"])
def test_graph_matches_the_tensorflow_reference(
    small_graph: tuple[Path, dict[str, np.ndarray]], size: tuple[int, int], output: str
) -> None:
    folder, weights = small_graph
    x = np.random.default_rng(size[1]).uniform(0, 1, size=(2, *size, 3))
    module = GraphModule(folder, output)
    with torch.no_grad():
        got = module(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()
    expected = reference(x, weights)[output]
    if expected.ndim == 4:
        expected = expected.transpose(0, 3, 1, 2)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_only_what_the_output_reads_is_built(
    small_graph: tuple[Path, dict[str, np.ndarray]],
) -> None:
    folder, _ = small_graph
    module = GraphModule(folder, "conv")
    assert set(module.order) == {"input", "w1", "b1", "conv"}
    # kernels and biases are trainable; other constants are not
    assert sorted(name for name, _ in module.named_parameters()) == ["params.b1", "params.w1"]


def test_an_unsupported_op_is_named(small_graph: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = small_graph
    with pytest.raises(GraphModelError, match="op NotARealOp \\(node 'unused'\\)"):
        GraphModule(folder, "unused")


def test_a_missing_output_is_named(small_graph: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = small_graph
    with pytest.raises(GraphModelError, match="no node named 'logits'"):
        GraphModule(folder, "logits")


def test_a_second_output_of_a_node_is_refused(tmp_path: Path) -> None:
    nodes = [
        {"name": "input", "op": "Placeholder"},
        {"name": "split", "op": "Identity", "input": ["input:1"]},
    ]
    folder = write_graph(tmp_path / "g", nodes, {})
    with pytest.raises(GraphModelError, match="'input:1' is read: only output 0"):
        GraphModule(folder, "split")


def test_a_manifest_that_does_not_cover_its_shards_is_refused(
    small_graph: tuple[Path, dict[str, np.ndarray]],
) -> None:
    folder, _ = small_graph
    shard = folder / "weights.bin"
    shard.write_bytes(shard.read_bytes() + b"\0\0")
    expected = r"weight group 0: the specs describe \d+ bytes, its shards hold \d+"
    with pytest.raises(GraphModelError, match=expected):
        GraphModule(folder, "conv")


def test_a_missing_shard_is_named(small_graph: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = small_graph
    (folder / "weights.bin").unlink()
    with pytest.raises(GraphModelError, match="weight group 0: cannot read a shard"):
        GraphModule(folder, "conv")


def test_an_unsupported_fused_op_is_refused_at_load(tmp_path: Path) -> None:
    nodes = [
        {"name": "input", "op": "Placeholder"},
        {
            "name": "conv",
            "op": "_FusedConv2D",
            "input": ["input", "w", "b"],
            "attr": _conv_attr(1, "SAME", ["BiasAdd", "LeakyRelu"]),
        },
    ]
    weights = {"w": np.ones((1, 1, 3, 2), np.float32), "b": np.zeros(2, np.float32)}
    folder = write_graph(tmp_path / "g", nodes, weights, float16=False)
    with pytest.raises(GraphModelError, match="fused op LeakyRelu of node 'conv'"):
        GraphModule(folder, "conv")


def test_an_element_wise_constant_of_rank_two_is_refused(tmp_path: Path) -> None:
    nodes = [
        {"name": "input", "op": "Placeholder"},
        {"name": "scaled", "op": "Mul", "input": ["input", "matrix"]},
    ]
    folder = write_graph(tmp_path / "g", nodes, {"matrix": np.ones((3, 3), np.float32)})
    with pytest.raises(GraphModelError, match="constant 'matrix' of shape \\[3, 3\\]"):
        GraphModule(folder, "scaled")


def test_a_truncated_shard_is_named(small_graph: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = small_graph
    shard = folder / "weights.bin"
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(GraphModelError, match="runs past the end of its shards"):
        GraphModule(folder, "conv")


def test_an_unreadable_model_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(GraphModelError, match="cannot read graph model"):
        GraphModule(tmp_path, "x")


def test_same_padding_puts_the_odd_pixel_last() -> None:
    assert _same_padding(8, 3, 2, 1) == (0, 1)  # TF: out 4, total 1 -> (0, 1)
    assert _same_padding(7, 3, 2, 1) == (1, 1)
    assert _same_padding(7, 3, 1, 1) == (1, 1)
    assert _same_padding(8, 1, 2, 1) == (0, 0)
    assert _same_padding(5, 3, 1, 2) == (2, 2)  # dilation 2: effective kernel 5


def test_shipped_backbone_is_intact_and_gives_its_feature_map() -> None:
    MOBILENETV3_COCO.verify()
    module = MOBILENETV3_COCO.load().eval()
    from PIL import Image

    image = Image.open(sorted(SAMPLE.glob("*.png"))[0]).convert("RGB").resize((160, 160))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None])
    with torch.no_grad():
        features = module(x * (MOBILENETV3_COCO.pixel_scale / 255.0))
    assert features.shape == (1, MOBILENETV3_COCO.features, 5, 5)
    assert torch.isfinite(features).all()
    assert features.abs().sum() > 0


def test_a_changed_backbone_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / MOBILENETV3_COCO.folder
    shutil.copytree(MOBILENETV3_COCO.directory, copy)
    weights = copy / "centernet.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    tampered = Backbone(**{**MOBILENETV3_COCO.__dict__, "folder": str(copy)})
    with pytest.raises(DataError, match=r"centernet\.bin has sha256 \w+, expected"):
        tampered.verify()


def test_backbone_matches_tensorflow_js() -> None:
    """The reader against TensorFlow.js itself on the real backbone (scripts/backbone_reference.py).

    The input goes through the classifier's own upsampling (FineTunedBackbone.features)
    from the sample PNG, as in training and serving.
    """
    reference = json.loads(REFERENCE.read_text())
    assert reference["backbone"]["sha256"] == dict(MOBILENETV3_COCO.sha256)
    network = FineTunedBackbone(
        MOBILENETV3_COCO.load(), MOBILENETV3_COCO.features, 2, reference["resize"]
    ).eval()
    for entry in reference["images"]:
        png = (PROJECT_ROOT / entry["image"]).read_bytes()
        pixels = torch.from_numpy(images_to_tensor([decode_image(png)], TRAINED_INPUT_SIZE))
        pixels = pixels * MOBILENETV3_COCO.pixel_scale
        with torch.no_grad():
            features = network.features(pixels)
        n, h, w, c = entry["shape_nhwc"]
        assert features.shape == (n, c, h, w)
        pooled = features.mean(dim=(2, 3))[0].numpy()
        expected = np.array(entry["pooled"])
        assert np.abs(expected).max() > 0.5, "a meaningful, non-degenerate reference"
        np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)
