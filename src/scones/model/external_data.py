"""Which tensor of an ONNX graph, if any, keeps its data in a file of its own.

ONNX lets a tensor say "my bytes are in ``weights.bin`` at this offset" (external data).
``model.json``'s ``onnx_sha256`` covers ``model.onnx`` only, so such a file could change
the model's answers while its digest and ``version`` stay the same. The project's export
writes every weight inside ``model.onnx``, and the artifact contract refuses a graph that
does not.

The check reads the protobuf wire format itself: the ``onnx`` package is in the training
environment only, not in the serving image or the run environment. It visits every place
a tensor can be (initializers, sparse ones, constants and subgraphs in node attributes,
functions, training graphs) without recursion, so no nesting makes it fail, and skips
tensor data by its length (the 28.5 MB reference ensemble takes a few milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterator

# The fields of onnx.proto's messages (onnx/onnx.proto) that hold a message leading to a
# tensor, per message; a tensor's own fields are read by ``_external``.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "function": {7: "node", 11: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_NAME = 8
_TENSOR_EXTERNAL_DATA = 13  # StringStringEntryProto (key 1, value 2): location, offset...
_TENSOR_DATA_LOCATION = 14  # 1: EXTERNAL
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class NotProtobuf(ValueError):
    """The bytes are not a protobuf message this reader can walk."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:  # nearly every key and length
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise NotProtobuf(f"a number at byte {pos} is longer than ten bytes")


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value, start) of the message in ``data[pos:end]``: a
    varint's value; a length-delimited field's length, its bytes starting at ``start``."""
    try:
        while pos < end:
            at = pos
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            value = start = 0
            if wire == _VARINT:
                value, pos = _varint(data, pos)
            elif wire == _LENGTH:
                value, start = _varint(data, pos)
                pos = start + value
            elif wire == _FIXED64:
                pos += 8
            elif wire == _FIXED32:
                pos += 4
            else:  # a group: no field of onnx.proto is one
                raise NotProtobuf(f"field {number} at byte {at} has wire type {wire}")
            if pos > end:
                raise NotProtobuf(f"field {number} runs past the end of its message")
            yield number, wire, value, start
    except IndexError:
        raise NotProtobuf("the bytes end inside a field") from None


def _text(data: bytes, start: int, length: int) -> str:
    return data[start : start + length].decode("utf-8", errors="replace")


def _external(data: bytes, pos: int, end: int) -> str | None:
    """The tensor in ``data[pos:end]`` by name (and file) when it keeps its data outside."""
    name, location, external = "", "", False
    for number, wire, value, start in _fields(data, pos, end):
        if number == _TENSOR_NAME and wire == _LENGTH:
            name = _text(data, start, value)
        elif number == _TENSOR_DATA_LOCATION and wire == _VARINT:
            external = external or value == 1
        elif number == _TENSOR_EXTERNAL_DATA and wire == _LENGTH:
            external = True
            entry = {n: _text(data, s, v) for n, w, v, s in _fields(data, start, start + value)}
            if entry.get(1) == "location":
                location = entry.get(2, "")
    if not external:
        return None
    return f"{name!r} (in {location!r})" if location else repr(name)


def external_tensor(model: bytes) -> str | None:
    """A tensor of the serialised ``ModelProto`` ``model`` whose data is stored outside
    it, by name and file; None when every tensor is inside. ``NotProtobuf`` when the bytes
    cannot be walked."""
    pending = [("model", 0, len(model))]
    while pending:
        kind, pos, end = pending.pop()
        if kind == "tensor":
            if (found := _external(model, pos, end)) is not None:
                return found
            continue
        children = _CHILDREN[kind]
        for number, wire, value, start in _fields(model, pos, end):
            if (child := children.get(number)) is not None:
                if wire != _LENGTH:
                    raise NotProtobuf(f"field {number} of a {kind} message is not a message")
                pending.append((child, start, start + value))
    return None
