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
    """Every weight of the manifest, dequantised to its original dtype.

    Each group's shards must hold exactly the bytes its specs describe: a shape
    that is off by one would otherwise shift every later weight without an error.
    """
    weights: dict[str, np.ndarray] = {}
    for number, group in enumerate(model_json.get("weightsManifest", [])):
        try:
            data = b"".join((folder / path).read_bytes() for path in group["paths"])
            offset = 0
            for spec in group["weights"]:
                array, size = _read_weight(spec, data, offset)
                weights[spec["name"]] = array
                offset += size
        except GraphModelError:
            raise
        except OSError as exc:
            raise GraphModelError(f"weight group {number}: cannot read a shard: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphModelError(f"weight group {number}: malformed spec: {exc!r}") from exc
        if offset != len(data):
            raise GraphModelError(
                f"weight group {number}: the specs describe {offset} bytes, "
                f"its shards hold {len(data)}"
            )
    return weights


def _read_weight(spec: Mapping[str, Any], data: bytes, offset: int) -> tuple[np.ndarray, int]:
    count = math.prod(spec["shape"])
    stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
    if stored in {"uint8", "uint16"}:
        raise GraphModelError(f"weight {spec['name']}: affine {stored} quantisation")
    dtype = _NUMPY_DTYPES.get(stored)
    target = _NUMPY_DTYPES.get(spec["dtype"])
    if dtype is None or target is None:
        raise GraphModelError(f"weight {spec['name']}: unsupported dtype {stored}")
    size = count * np.dtype(dtype).itemsize
    if offset + size > len(data):
        raise GraphModelError(f"weight {spec['name']} runs past the end of its shards")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.astype(target).reshape(spec["shape"]), size


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
            all_nodes = {
                n["name"]: Node(n["name"], n["op"], _data_inputs(n), n.get("attr", {}))
                for n in model_json["modelTopology"]["node"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GraphModelError(f"cannot read graph model {path}: {exc!r}") from exc
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
        for node in self.nodes.values():
            _check_supported(node, self.nodes)
        self.params = nn.ParameterDict()
        trainable = {
            n.inputs[i]
            for n in self.nodes.values()
            if n.op in _CONV_OPS
            for i in (1, 2)
            if i < len(n.inputs)
        }
        operands = {i for n in self.nodes.values() if n.op in _BINARY_OPS for i in n.inputs}
        for name in self.order:
            if self.nodes[name].op != "Const":
                continue
            if name not in weights:
                raise GraphModelError(f"constant {name!r} has no weight in the manifest")
            tensor = torch.from_numpy(weights[name].copy())
            if name in trainable:
                self.params[_key(name)] = nn.Parameter(tensor.float())
                continue
            if name in operands:
                tensor = _nchw_operand(name, tensor)
            # not trained, not saved: the graph file is their source
            self.register_buffer(_buffer_key(name), tensor, persistent=False)
        # Reduction axes are constants of the graph; read them once, as NCHW axes.
        self.axes = {
            name: [_NHWC_TO_NCHW[int(a) % 4] for a in weights[node.inputs[1]].reshape(-1)]
            for name, node in self.nodes.items()
            if node.op == "Mean"
        }
        # Free each intermediate after the last node that reads it: a 160x160 forward
        # pass holds about 20 MB per image otherwise.
        self.release_after: dict[int, list[str]] = {}
        last_read = {i: step for step, n in enumerate(self.order) for i in self.nodes[n].inputs}
        for value, step in last_read.items():
            if value != output and self.nodes[value].op not in ("Const",):
                self.release_after.setdefault(step, []).append(value)

    def tensor(self, name: str) -> torch.Tensor:
        key = _key(name)
        return self.params[key] if key in self.params else self.get_buffer(_buffer_key(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for step, name in enumerate(self.order):
            node = self.nodes[name]
            if node.op not in ("Placeholder", "Const"):
                args = [values[i] if i in values else self.tensor(i) for i in node.inputs]
                values[name] = _OPS[node.op](self, node, args)
            for value in self.release_after.get(step, ()):
                values.pop(value, None)
        return values[self.output]


def _check_supported(node: Node, nodes: Mapping[str, Node]) -> None:
    """Refuse, at load time and by name, what ``forward`` could not run."""
    if node.op not in _OPS:
        raise GraphModelError(f"op {node.op} (node {node.name!r}) is not supported")
    if node.op in _CONV_OPS:
        unsupported = [op for op in node.strings("fused_ops") if op not in _FUSED_OPS]
        if unsupported:
            raise GraphModelError(
                f"fused op {unsupported[0]} of node {node.name!r} is not supported"
            )
        if node.string("data_format") not in ("", "NHWC"):
            raise GraphModelError(f"node {node.name!r}: data_format {node.string('data_format')}")
        if node.string("padding") not in ("SAME", "VALID"):
            raise GraphModelError(
                f"node {node.name!r}: padding {node.string('padding')} is not supported"
            )
    if node.op == "Mean" and (len(node.inputs) != 2 or nodes[node.inputs[1]].op != "Const"):
        raise GraphModelError(f"node {node.name!r}: Mean needs constant reduction axes")


def _nchw_operand(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A constant of an element-wise op, laid out to broadcast against NCHW tensors."""
    if tensor.dim() <= 1:
        return tensor  # scalars broadcast as they are; vectors in _as_nchw_operand
    if tensor.dim() == 4:
        return tensor.permute(0, 3, 1, 2).contiguous()
    raise GraphModelError(
        f"constant {name!r} of shape {list(tensor.shape)}: element-wise constants must be "
        "scalars, per-channel vectors or NHWC tensors"
    )


def _data_inputs(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """Input names without control inputs (``^name``) and without a ``:0`` output index.

    A read of another output (``name:1``) is kept as written and refused only if the
    cut-out sub-graph needs it.
    """
    inputs = raw.get("input", [])
    return tuple(i.removesuffix(":0") for i in inputs if not i.startswith("^"))


def _key(name: str) -> str:
    return name.replace("/", "__").replace(".", "_")


def _buffer_key(name: str) -> str:
    """Prefixed, so a constant's name cannot shadow an attribute of the module."""
    return "const__" + _key(name)


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


def _activation(out: torch.Tensor, fused: Sequence[str]) -> torch.Tensor:
    for op in fused:
        if op == "Relu":
            out = F.relu(out)
        elif op == "Relu6":
            out = F.relu6(out)
    return out


def _convolution(module: GraphModule, node: Node, args: Sequence[torch.Tensor]) -> torch.Tensor:
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
    return _activation(out, fused)


def _mean(module: GraphModule, node: Node, args: Sequence[torch.Tensor]) -> torch.Tensor:
    return args[0].mean(dim=module.axes[node.name], keepdim=node.flag("keep_dims"))


_FUSED_OPS = frozenset({"BiasAdd", "Relu", "Relu6"})
_BINARY_OPS = frozenset({"Add", "AddV2", "Sub", "Mul"})
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
