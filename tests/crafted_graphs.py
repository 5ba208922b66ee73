"""Tiny model artifacts whose graph breaks the artifact contract one way each, built with
``onnx.helper`` in milliseconds: what a hand-made or mis-exported model can look like.

Each is a whole artifact folder (``model.onnx`` plus a ``model.json`` naming its digest),
so only the graph itself is wrong. The base graph answers softmax([mean pixel, mean
pixel]) for every image: probabilities, 0.5 each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto, helper, numpy_helper

LABELS = ("bicycle", "motorcycle")
SIDE = 32

_value = helper.make_tensor_value_info
_IMAGE = _value("image", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])
_PROBABILITIES = _value("probabilities", TensorProto.FLOAT, ["N", 2])


def _const(name: str, value: object, dtype: type = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _graph(
    head: Callable[[str], list[NodeProto]],
    *,
    inputs: tuple[ValueInfoProto, ...] = (_IMAGE,),
    output: ValueInfoProto = _PROBABILITIES,
    source: str = "image",
    extra: tuple[TensorProto, ...] = (),
) -> ModelProto:
    """``image`` -> per-image mean ``mean1`` [N, 1] -> ``logits`` [N, 2] -> ``head``."""
    nodes = [
        helper.make_node("ReduceMean", [source], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean1"]),
        helper.make_node("Add", ["mean1", "zeros"], ["logits"]),
        *head("logits"),
    ]
    constants = [_const("axis1", [1], np.int64), _const("zeros", [[0.0, 0.0]]), *extra]
    graph = helper.make_graph(nodes, "crafted", list(inputs), [output], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _softmax(logits: str, out: str = "probabilities") -> list[NodeProto]:
    return [helper.make_node("Softmax", [logits], [out], axis=1)]


def logits() -> ModelProto:
    """No softmax: it answers the logits [7 + mean, -3 + mean]."""
    return _graph(
        lambda x: [helper.make_node("Add", [x, "shift"], ["probabilities"])],
        extra=(_const("shift", [[7.0, -3.0]]),),
    )


def scaled(factor: float) -> ModelProto:
    """Softmax times ``factor``: the same top class, rows summing to ``factor``."""
    return _graph(
        lambda x: [
            *_softmax(x, "p"),
            helper.make_node("Mul", ["p", "factor"], ["probabilities"]),
        ],
        extra=(_const("factor", factor),),
    )


def wrong_on_dark_images() -> ModelProto:
    """Probabilities for any image whose mean pixel is 0.25 or more; a darker one gets
    ``relu(0.25 - mean)`` added to each class, so its row sums to more than 1."""
    return _graph(
        lambda x: [
            *_softmax(x, "p"),
            helper.make_node("Sub", ["quarter", "mean1"], ["below"]),
            helper.make_node("Relu", ["below"], ["excess"]),
            helper.make_node("Add", ["p", "excess"], ["probabilities"]),
        ],
        extra=(_const("quarter", 0.25),),
    )


def batches_of_two_only() -> ModelProto:
    """Declares any batch size but reshapes to two images: onnxruntime fails on others."""
    return _graph(
        lambda x: [
            helper.make_node("Reshape", ["mean", "two"], ["pair"]),
            helper.make_node("Add", ["pair", "zeros"], ["pair_logits"]),
            *_softmax("pair_logits"),
        ],
        extra=(_const("two", [2, 1], np.int64),),
    )


def float16_input() -> ModelProto:
    return _graph(
        lambda x: [
            helper.make_node("Cast", ["image"], ["image32"], to=TensorProto.FLOAT),
            *_softmax(x),
        ],
        inputs=(_value("image", TensorProto.FLOAT16, ["N", 3, SIDE, SIDE]),),
        source="image32",
    )


def one_channel() -> ModelProto:
    return _graph(_softmax, inputs=(_value("image", TensorProto.FLOAT, ["N", 1, SIDE, SIDE]),))


def no_batch_dimension() -> ModelProto:
    return _graph(
        lambda x: [helper.make_node("Unsqueeze", ["image", "axis0"], ["batch"]), *_softmax(x)],
        inputs=(_value("image", TensorProto.FLOAT, [3, SIDE, SIDE]),),
        source="batch",
        extra=(_const("axis0", [0], np.int64),),
    )


def fixed_batch_of_one() -> ModelProto:
    return _graph(
        _softmax,
        inputs=(_value("image", TensorProto.FLOAT, [1, 3, SIDE, SIDE]),),
        output=_value("probabilities", TensorProto.FLOAT, [1, 2]),
    )


def extra_input() -> ModelProto:
    """Also declares ``temperature``, an input it needs and nothing feeds."""
    return _graph(_softmax, inputs=(_IMAGE, _value("temperature", TensorProto.FLOAT, [1])))


def rank3_output() -> ModelProto:
    """Answers [N, 1, 2]: a row of probabilities wrapped in one more list per image."""
    return _graph(
        lambda x: [
            *_softmax(x, "p"),
            helper.make_node("Unsqueeze", ["p", "axis1"], ["probabilities"]),
        ],
        output=_value("probabilities", TensorProto.FLOAT, ["N", 1, 2]),
    )


def probabilities() -> ModelProto:
    """The base graph: within the contract."""
    return _graph(_softmax)


def external(tensor: TensorProto, location: str) -> TensorProto:
    """``tensor`` (8 bytes of data) with its data moved out to the file ``location``
    (ONNX external data), which the caller writes."""
    moved = TensorProto()
    moved.CopyFrom(tensor)
    moved.ClearField("raw_data")
    moved.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = moved.external_data.add()
        entry.key, entry.value = key, value
    return moved


def zeros_outside(location: str) -> ModelProto:
    """The base graph with its ``zeros`` initializer (the logits' offset, float32 [1, 2])
    kept in the file ``location``: 8 bytes, which decide its answers."""
    model = probabilities()
    index = [t.name for t in model.graph.initializer].index("zeros")
    model.graph.initializer[index].CopyFrom(external(model.graph.initializer[index], location))
    return model


def artifact(directory: Path, model: ModelProto, name: str = "crafted") -> Path:
    """``directory`` holding ``model`` and a manifest that names it (the contract's files)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (directory / "model.onnx").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest = {
        "name": name,
        "version": digest[:12],
        "labels": list(LABELS),
        "input_size": [SIDE, SIDE],
        "onnx_sha256": digest,
    }
    (directory / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory
