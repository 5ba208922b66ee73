"""The TF.js graph-model reader against an independent NumPy reference of TensorFlow's ops.

The layouts are where such a reader goes wrong silently (NHWC vs NCHW, HWIO kernels,
depthwise multipliers, TensorFlow's asymmetric SAME padding), so each is checked
against a direct loop implementation on a small graph built here, and the shipped
backbone is checked for integrity and shape.
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

from scones.model.backbone import MOBILENETV3_COCO, Backbone
from scones.model.folders import DataError
from scones.model.tfjs_graph import GraphModelError, GraphModule, _same_padding

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = PROJECT_ROOT / "samples" / "bicycle"


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


def ref_pad(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """TF SAME: output ceil(n/stride); the odd padding pixel goes at the end."""
    n = x.shape[1]
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    before = total // 2
    return np.pad(x, ((0, 0), (before, total - before), (before, total - before), (0, 0)))


def ref_conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """NHWC input, HWIO kernel, SAME padding."""
    k = kernel.shape[0]
    p = ref_pad(x, k, stride)
    out_n = -(-x.shape[1] // stride)
    y = np.zeros((x.shape[0], out_n, out_n, kernel.shape[3]))
    for i in range(out_n):
        for j in range(out_n):
            patch = p[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            y[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel)
    return y


def ref_depthwise(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NHWC input, [kh, kw, in, multiplier] kernel, stride 1, SAME padding."""
    k, mult = kernel.shape[0], kernel.shape[3]
    p = ref_pad(x, k, 1)
    n = x.shape[1]
    y = np.zeros((x.shape[0], n, n, x.shape[3] * mult))
    for i in range(n):
        for j in range(n):
            patch = p[:, i : i + k, j : j + k, :]
            # output channel c*mult + m reads input channel c with filter m
            y[:, i, j, :] = np.einsum("nhwc,hwcm->ncm", patch, kernel).reshape(x.shape[0], -1)
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
        {
            "name": "pooled",
            "op": "Mean",
            "input": ["sum", "axes"],
            "attr": {"keep_dims": {"b": True}},
        },
        {"name": "unused", "op": "NotARealOp", "input": ["input"]},
    ]
    return write_graph(tmp_path / "graph", nodes, weights), weights


def reference(x_nhwc: np.ndarray, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    conv = np.clip(ref_conv(x_nhwc, w["w1"], 2) + w["b1"], 0, 6)
    depthwise = ref_depthwise(conv, w["dw"])
    total = 0.5 * depthwise + depthwise
    return {"conv": conv, "depthwise": depthwise, "pooled": total.mean(axis=(1, 2), keepdims=True)}


@pytest.mark.parametrize("side", [7, 8])  # odd and even: the SAME padding differs
@pytest.mark.parametrize("output", ["conv", "depthwise", "pooled"])
def test_graph_matches_the_tensorflow_reference(
    small_graph: tuple[Path, dict[str, np.ndarray]], side: int, output: str
) -> None:
    folder, weights = small_graph
    x = np.random.default_rng(side).uniform(0, 1, size=(2, side, side, 3))
    module = GraphModule(folder, output)
    with torch.no_grad():
        got = module(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()
    expected = reference(x, weights)[output].transpose(0, 3, 1, 2)
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
