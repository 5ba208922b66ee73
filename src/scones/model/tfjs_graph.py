"""Run a TensorFlow.js graph model as a trainable PyTorch module.

The pretrained backbone ships as a TF.js graph model (``model.json`` plus weight
shards), the only form of pretrained vision weights that the package registries
carry. This module reads that format directly and evaluates the part of the graph
that a chosen output depends on, with the weights as ``torch`` parameters, so the
backbone can be fine-tuned and then exported to ONNX with the rest of the model.
No TensorFlow is needed.

Tensors are held as NCHW inside; the graph's NHWC axes are translated where an op
takes an axis. Only the ops a MobileNet-style backbone uses are implemented; any
other op stops the load with its name.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_NHWC_TO_NCHW = (0, 2, 3, 1)
"""Axis ``a`` of an NHWC tensor is axis ``_NHWC_TO_NCHW[a]`` of the NCHW tensor held here."""

_NUMPY_DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16}


class GraphModelError(ValueError):
    """The graph model is unreadable or uses something this module does not run."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, Any] = field(default_factory=dict)

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.attr.get(key, {}).get("list", {}).get("i", [])]

    def string(self, key: str) -> str:
        raw = self.attr.get(key, {}).get("s", "")
        return base64.b64decode(raw).decode() if raw else ""

    def strings(self, key: str) -> list[str]:
        raw = self.attr.get(key, {}).get("list", {}).get("s", [])
        return [base64.b64decode(v).decode() for v in raw]

    def flag(self, key: str) -> bool:
        return bool(self.attr.get(key, {}).get("b", False))


def read_weights(model_json: Mapping[str, Any], folder: Path) -> dict[str, np.ndarray]:
    """Every weight of the manifest, dequantised to its original dtype."""
    weights: dict[str, np.ndarray] = {}
    for group in model_json.get("weightsManifest", []):
        data = b"".join((folder / path).read_bytes() for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = math.prod(spec["shape"])
            stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
            if stored in {"uint8", "uint16"}:
                raise GraphModelError(f"weight {spec['name']}: affine {stored} quantisation")
            dtype = _NUMPY_DTYPES.get(stored)
            if dtype is None:
                raise GraphModelError(f"weight {spec['name']}: unsupported dtype {stored}")
            size = count * np.dtype(dtype).itemsize
            if offset + size > len(data):
                raise GraphModelError(f"weight {spec['name']} runs past the end of its shards")
            array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            weights[spec["name"]] = array.astype(_NUMPY_DTYPES[spec["dtype"]]).reshape(
                spec["shape"]
            )
            offset += size
    return weights


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding: the extra pixel goes after, not before."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class GraphModule(nn.Module):
    """The sub-graph of a TF.js graph model from its input to ``output``.

    Conv weights and biases become parameters (fine-tunable); other constants stay
    plain tensors, outside the state dict. ``forward`` takes NCHW float input and
    returns the output node as NCHW.
    """

    def __init__(self, model_dir: Path, output: str, model_file: str = "model.json") -> None:
        super().__init__()
        path = Path(model_dir) / model_file
        try:
            model_json = json.loads(path.read_text())
            raw_nodes = model_json["modelTopology"]["node"]
        except (OSError, ValueError, KeyError) as exc:
            raise GraphModelError(f"cannot read graph model {path}: {exc}") from exc
        all_nodes = {
            n["name"]: Node(n["name"], n["op"], _data_inputs(n), n.get("attr", {}))
            for n in raw_nodes
        }
        if output not in all_nodes:
            raise GraphModelError(f"{path} has no node named {output!r}")
        weights = read_weights(model_json, path.parent)
        self.order = _dependencies(all_nodes, output)
        self.nodes = {name: all_nodes[name] for name in self.order}
        self.output = output
        placeholders = [n for n in self.order if self.nodes[n].op == "Placeholder"]
        if len(placeholders) != 1:
            raise GraphModelError(f"{output!r} depends on {len(placeholders)} inputs, not one")
        self.input_name = placeholders[0]
        self.params = nn.ParameterDict()
        self.consts: dict[str, torch.Tensor] = {}
        trainable = {
            n.inputs[i]
            for n in self.nodes.values()
            if n.op in _CONV_OPS
            for i in (1, 2)
            if i < len(n.inputs)
        }
        for name in self.order:
            node = self.nodes[name]
            if node.op == "Const":
                if name not in weights:
                    raise GraphModelError(f"constant {name!r} has no weight in the manifest")
                tensor = torch.from_numpy(weights[name].copy())
                if name in trainable:
                    self.params[_key(name)] = nn.Parameter(tensor.float())
                else:
                    self.consts[name] = tensor
            elif node.op not in _OPS:
                raise GraphModelError(f"op {node.op} (node {name!r}) is not supported")
        # Reduction axes are constants of the graph; read them once, as NCHW axes.
        self.axes = {
            name: [_NHWC_TO_NCHW[int(a) % 4] for a in weights[node.inputs[1]].reshape(-1)]
            for name, node in self.nodes.items()
            if node.op == "Mean"
        }

    def tensor(self, name: str) -> torch.Tensor:
        key = _key(name)
        return self.params[key] if key in self.params else self.consts[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for name in self.order:
            node = self.nodes[name]
            if node.op in ("Placeholder", "Const"):
                continue
            args = [values[i] if i in values else self.tensor(i) for i in node.inputs]
            values[name] = _OPS[node.op](self, node, args)
        return values[self.output]


def _data_inputs(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """Input names without control inputs (``^name``) and without a ``:0`` output index.

    A read of another output (``name:1``) is kept as written and refused only if the
    cut-out sub-graph needs it.
    """
    inputs = raw.get("input", [])
    return tuple(i.removesuffix(":0") for i in inputs if not i.startswith("^"))


def _key(name: str) -> str:
    return name.replace("/", "__").replace(".", "_")


def _dependencies(nodes: Mapping[str, Node], output: str) -> list[str]:
    """Names of ``output`` and everything it reads, in an order that evaluates."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            order.append(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        if name not in nodes:
            if ":" in name:
                raise GraphModelError(f"{name!r} is read: only output 0 of a node is supported")
            raise GraphModelError(f"node {name!r} is read but not defined")
        stack.append((name, True))
        stack.extend((i, False) for i in nodes[name].inputs)
    return order


# --- ops ---------------------------------------------------------------------------------


def _as_nchw_operand(value: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """A per-channel vector (NHWC's last axis) broadcast against an NCHW tensor."""
    if value.dim() == 1 and value.numel() > 1 and other.dim() == 4:
        return value.view(1, -1, 1, 1)
    return value


def _binary(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[..., torch.Tensor]:
    def run(_: GraphModule, __: Node, args: Sequence[torch.Tensor]) -> torch.Tensor:
        a, b = args
        return fn(_as_nchw_operand(a.float(), b), _as_nchw_operand(b.float(), a))

    return run


def _activation(out: torch.Tensor, fused: Sequence[str], node: Node) -> torch.Tensor:
    for op in fused:
        if op == "BiasAdd":
            continue
        if op == "Relu":
            out = F.relu(out)
        elif op == "Relu6":
            out = F.relu6(out)
        else:
            raise GraphModelError(f"fused op {op} of node {node.name!r} is not supported")
    return out


def _convolution(module: GraphModule, node: Node, args: Sequence[torch.Tensor]) -> torch.Tensor:
    if node.string("data_format") not in ("", "NHWC"):
        raise GraphModelError(f"node {node.name!r}: data_format {node.string('data_format')}")
    x, kernel = args[0], args[1]
    depthwise = "Depthwise" in node.op
    strides = node.ints("strides") or [1, 1, 1, 1]
    dilations = node.ints("dilations") or [1, 1, 1, 1]
    kh, kw = kernel.shape[0], kernel.shape[1]
    if depthwise:  # [kh, kw, in, multiplier] -> [in * multiplier, 1, kh, kw]
        weight = kernel.permute(2, 3, 0, 1).reshape(-1, 1, kh, kw)
        groups = x.shape[1]
    else:  # [kh, kw, in, out] -> [out, in, kh, kw]
        weight = kernel.permute(3, 2, 0, 1)
        groups = 1
    padding = node.string("padding")
    if padding == "SAME":
        # Python ints even under ONNX tracing: the classifier feeds the backbone a fixed
        # size, so the padding is a constant of the exported graph.
        top, bottom = _same_padding(int(x.shape[2]), kh, strides[1], dilations[1])
        left, right = _same_padding(int(x.shape[3]), kw, strides[2], dilations[2])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
    elif padding != "VALID":
        raise GraphModelError(f"node {node.name!r}: padding {padding} is not supported")
    fused = node.strings("fused_ops")
    bias = args[2] if len(args) > 2 and fused and fused[0] == "BiasAdd" else None
    out = F.conv2d(
        x,
        weight,
        bias,
        stride=(strides[1], strides[2]),
        dilation=(dilations[1], dilations[2]),
        groups=groups,
    )
    return _activation(out, fused, node)


def _mean(module: GraphModule, node: Node, args: Sequence[torch.Tensor]) -> torch.Tensor:
    return args[0].mean(dim=module.axes[node.name], keepdim=node.flag("keep_dims"))


_CONV_OPS = frozenset(
    {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}
)

_OPS: dict[str, Callable[[GraphModule, Node, Sequence[torch.Tensor]], torch.Tensor]] = {
    "Placeholder": lambda m, n, a: a[0],
    "Const": lambda m, n, a: a[0],
    "Identity": lambda m, n, a: a[0],
    "Add": _binary(torch.add),
    "AddV2": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Relu": lambda m, n, a: F.relu(a[0]),
    "Relu6": lambda m, n, a: F.relu6(a[0]),
    "Sigmoid": lambda m, n, a: torch.sigmoid(a[0]),
    "Mean": _mean,
    **{op: _convolution for op in _CONV_OPS},
}
