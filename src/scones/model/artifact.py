"""The model artifact: an ONNX graph plus a ``model.json`` manifest beside it.

This module is the one contract between training (which writes the artifact),
the model server and the benchmarks (which load it). The ONNX graph does its own
normalisation and softmax, so a caller only has to turn images into RGB floats.

Graph contract:
    input  ``image``          float32 ``[N, 3, H, W]``, RGB, values in ``[0, 1]``, any ``N``;
                              the graph needs no other input
    output ``probabilities``  ``[N, len(labels)]``, each row probabilities as the endpoint's
                              answer must be (``scones_core.endpoint_response.probabilities``)

:class:`OnnxClassifier` refuses a graph that breaks it when it loads: the declared input
and output, then a dry run of two synthetic images (:func:`dry_run_images`) through the
real preprocessing. Such a graph would otherwise load, answer ``/ping`` as healthy
and fail every request (or answer numbers the workflow refuses as
``ModelResponseInvalid``), and fail evaluation and the retraining gate with a traceback.

``model.onnx`` is read once, and those bytes are what its manifest's ``onnx_sha256`` is
checked against and what onnxruntime loads; they must hold every tensor (no ONNX external
data, which the digest would not cover). ``model.json`` is at most
:data:`MAX_MANIFEST_BYTES`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scones_core.endpoint_response import probabilities as endpoint_probabilities
from scones_core.image_rules import decode_image as rule_decode
from scones_core.json_text import NotJSON, load_json
from scones_core.preprocess import to_model_image
from scones_core.settings import ImageLimits

from scones.model.external_data import NotProtobuf, external_tensor
from scones.paths import MANIFEST_NAME, ONNX_NAME

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# onnxruntime's log severity that logs only what stops the process.
_ORT_FATAL = 4
# The largest model.json read. The shipped one is 4.7 KB (the reference ensemble's 3.4 KB);
# a file far over this is not a manifest, and reading it whole would take its size in
# memory several times over (a 200 MB one took 685 MB) before being refused.
MAX_MANIFEST_BYTES = 1 << 20


class ModelArtifactError(ValueError):
    """The artifact on disk is missing, incomplete or does not match its manifest."""


class ModelAnswerError(ModelArtifactError):
    """The graph answered something other than one probability per label for each image."""


def one_line(exc: BaseException) -> str:
    """An error's text on one line: onnxruntime's span several."""
    return " ".join(str(exc).split())


def checked_answers(
    answers: np.ndarray, labels: Sequence[str], images: int, names: Sequence[str] | None = None
) -> list[list[float]]:
    """The graph's ``answers`` for ``images`` images as one row of probabilities per image,
    each row accepted by the rule the workflow applies to the endpoint's answer
    (``scones_core.endpoint_response.probabilities``). A row it would refuse makes every
    image fail as ``ModelResponseInvalid`` while the endpoint reports no error, so it is
    refused where the model loads, is evaluated and serves. ``names`` names the images in
    the error (by default their position)."""
    shape = list(np.shape(answers))
    if shape != [images, len(labels)]:
        raise ModelAnswerError(
            f"the answer has shape {shape} for {images} image(s), not "
            f"[{images}, {len(labels)}] (one probability per label: {', '.join(labels)})"
        )
    try:
        rows: list[list[float]] = np.asarray(answers, dtype=np.float64).tolist()
    except (TypeError, ValueError) as exc:
        raise ModelAnswerError(f"the answer is not numbers: {one_line(exc)}") from None
    for index, row in enumerate(rows):
        try:
            endpoint_probabilities(row, labels)
        except ValueError as exc:
            name = names[index] if names is not None else f"image {index + 1} of {len(rows)}"
            raise ModelAnswerError(f"the answer for {name} is {row}: {exc}") from None
    return rows


def model_is_a_file(path: Path) -> str:
    """What a model path naming a file (most often the ``model.tar.gz`` archive) is told:
    a model is the folder holding ``model.json`` and ``model.onnx``."""
    return (
        f"no model at {path}: it is a file; --model names a model's folder, not a file "
        "(unpack the archive first)"
    )


def text_field_problem(value: object) -> str | None:
    """Why ``value`` cannot be a manifest's ``name``, ``version`` or ``onnx_sha256``:
    records, reports and the server show them, so each is a non-empty string."""
    if isinstance(value, str) and value.strip():
        return None
    return f"{value!r}, not a non-empty string"


@dataclass(frozen=True)
class ModelManifest:
    """What ``model.json`` says about the graph beside it."""

    name: str
    version: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    onnx_sha256: str
    extra: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> ModelManifest:
        path = directory / MANIFEST_NAME
        if directory.is_file():
            raise ModelArtifactError(model_is_a_file(directory))
        try:
            with path.open("rb") as handle:
                text = handle.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError as exc:
            raise ModelArtifactError(f"model manifest not found: {path}") from exc
        except OSError as exc:
            raise ModelArtifactError(f"model manifest {path} cannot be read: {exc}") from exc
        if len(text) > MAX_MANIFEST_BYTES:
            raise ModelArtifactError(
                f"model manifest {path} is over {MAX_MANIFEST_BYTES} bytes: not a model.json "
                "(one is a few kilobytes)"
            )
        try:
            raw = load_json(text)
        except NotJSON as exc:
            raise ModelArtifactError(f"model manifest {path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelArtifactError(f"model manifest {path} must be a JSON object")
        labels = raw.get("labels")
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(label, str) and label for label in labels)
        ):
            raise ModelArtifactError(f"model manifest {path}: labels must be a list of 2+ names")
        if len(set(labels)) != len(labels):
            raise ModelArtifactError(f"model manifest {path}: labels {labels} repeat a name")
        for key in ("name", "version", "onnx_sha256"):
            if key in raw and (problem := text_field_problem(raw[key])):
                raise ModelArtifactError(f"model manifest {path}: {key} is {problem}")
        try:
            sides = raw["input_size"]
            if (
                not isinstance(sides, list)
                or len(sides) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides)
            ):
                raise ModelArtifactError(
                    f"model manifest {path}: input_size {sides!r} must be two whole numbers"
                )
            height, width = sides
            if not (1 <= height <= _MAX_INPUT_SIDE and 1 <= width <= _MAX_INPUT_SIDE):
                raise ModelArtifactError(
                    f"model manifest {path}: input_size {[height, width]} must be two sides "
                    f"from 1 to {_MAX_INPUT_SIDE}"
                )
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                labels=tuple(str(label) for label in raw["labels"]),
                input_size=(height, width),
                onnx_sha256=str(raw["onnx_sha256"]),
                extra={k: v for k, v in raw.items() if k not in _MANIFEST_KEYS},
            )
        except ModelArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelArtifactError(f"model manifest {path} is incomplete: {exc!r}") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "input_size": list(self.input_size),
            "onnx_sha256": self.onnx_sha256,
            **self.extra,
        }


_MANIFEST_KEYS = {"name", "version", "labels", "input_size", "onnx_sha256"}
# The largest model input side a manifest may name (the shipped model's is 32).
_MAX_INPUT_SIDE = 4096


def stack_mismatches(
    manifest: ModelManifest, labels: tuple[str, ...], model_input_size: str, *, how: str
) -> list[str]:
    """Where a stack's ``ModelLabels`` and ``ModelInputSize`` disagree with the model it
    serves, each with its fix (``how`` a parameter is set, e.g. ``pass --param``). Both
    fail without an error anywhere: the workflow names a class by its position in the
    answer, and it resizes to ``ModelInputSize`` before the server resizes to the model's
    own size, so the model would see other pixels than it was trained on."""
    problems: list[str] = []
    if manifest.labels != labels:
        problems.append(
            f"it answers {','.join(manifest.labels)}, in that order, but the stack's "
            f"ModelLabels is {','.join(labels)}: every record would name its class by "
            f"position; {how} ModelLabels={','.join(manifest.labels)} or use a model "
            f"trained on {','.join(labels)}"
        )
    height, width = manifest.input_size
    if model_input_size.lower() != f"{width}x{height}":
        problems.append(
            f"it takes {width}x{height} images, but the stack's ModelInputSize is "
            f"{model_input_size}: the workflow would resize every image to that size and "
            "the server again to the model's, so the model would see other pixels than it "
            f"was trained on; {how} ModelInputSize={width}x{height} or use a model that "
            f"takes {model_input_size}"
        )
    return problems


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def images_to_tensor(images: list[Image.Image], input_size: tuple[int, int]) -> np.ndarray:
    """The model's input for decoded images: float32 NCHW RGB in [0, 1].

    Every image goes through ``scones_core.preprocess.to_model_image``, the one
    preprocessing the serialize step, the server and training share.
    """
    height, width = input_size
    batch = np.empty((len(images), 3, height, width), dtype=np.float32)
    for index, image in enumerate(images):
        rgb = to_model_image(image, (width, height))
        batch[index] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return batch


def decode_image(
    data: bytes, input_size: tuple[int, int] | None = None, limits: ImageLimits | None = None
) -> Image.Image:
    """Decode image bytes through the image rules (``scones_core.image_rules``).

    ``input_size`` (height, width) lets a JPEG decode at reduced scale, exactly as
    the serialize step decodes it. ``limits`` defaults to no limits beyond
    Pillow's own decompression-bomb guard, for trusted local files.
    """
    target = (input_size[1], input_size[0]) if input_size else None
    rules = limits or ImageLimits.unrestricted(target or (1, 1))
    return rule_decode(data, rules, draft_to=target).image


def dry_run_images() -> list[Image.Image]:
    """The load-time dry run's batch: a mid-grey image and a colour gradient, the same every
    time. Two, because evaluation and the retraining gate score many images in one batch
    while the server sends one, so a graph with a batch size of its own fails at load."""
    ramp = Image.linear_gradient("L")
    grey = Image.new("RGB", ramp.size, (128, 128, 128))
    return [grey, Image.merge("RGB", (ramp, ramp.rotate(90), ramp.rotate(180)))]


def checked_graph(directory: Path, manifest: ModelManifest) -> tuple[Path, bytes]:
    """The artifact's graph file and its bytes, read once: present, the graph its manifest
    names (by SHA-256), and whole in those bytes. The bytes hashed are the bytes
    onnxruntime loads, so a file replaced between a check and a second read cannot be
    served under the digest; and a tensor kept in another file (ONNX external data),
    which the digest does not cover, is refused."""
    onnx_path = directory / ONNX_NAME
    if not onnx_path.is_file():
        raise ModelArtifactError(f"model graph not found: {onnx_path}")
    try:
        graph = onnx_path.read_bytes()
    except OSError as exc:
        raise ModelArtifactError(f"{onnx_path} cannot be read: {exc}") from exc
    actual = hashlib.sha256(graph).hexdigest()
    if actual != manifest.onnx_sha256:
        raise ModelArtifactError(
            f"{onnx_path} has sha256 {actual}, but {MANIFEST_NAME} says {manifest.onnx_sha256}"
        )
    try:
        outside = external_tensor(graph)
    except NotProtobuf as exc:
        raise _unwalkable(onnx_path, graph, exc) from exc
    if outside is not None:
        raise ModelArtifactError(
            f"{onnx_path} keeps tensor {outside} in a file of its own (ONNX external "
            f"data), which {MANIFEST_NAME}'s onnx_sha256 does not cover: a model's every "
            f"weight must be inside {ONNX_NAME}, as `scones train` exports it"
        )
    return onnx_path, graph


def _unwalkable(onnx_path: Path, graph: bytes, problem: NotProtobuf) -> ModelArtifactError:
    """Why a graph the external-data check cannot read is refused: onnxruntime's own reason
    when it cannot load the bytes either (a truncated or garbled file), otherwise that the
    check could not look everywhere a tensor may be kept outside."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail...)
        return _not_loadable(onnx_path, exc)
    return ModelArtifactError(
        f"{onnx_path} loads, but its protobuf cannot be read to check that every weight is "
        f"inside it: {problem}"
    )


def _not_loadable(onnx_path: Path, exc: Exception) -> ModelArtifactError:
    return ModelArtifactError(f"{onnx_path} is not a graph onnxruntime can load: {one_line(exc)}")


class OnnxClassifier:
    """An ONNX Runtime session plus its manifest: bytes or images in, probabilities out."""

    def __init__(self, directory: Path, *, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        self.manifest = ModelManifest.load(self.directory)
        onnx_path, graph = checked_graph(self.directory, self.manifest)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                graph, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail...)
            raise _not_loadable(onnx_path, exc) from exc
        # onnxruntime also logs a run's error, over several lines on stderr, before it
        # raises it; the callers report the error itself once.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = _ORT_FATAL
        self._check_graph(onnx_path)
        self._dry_run(onnx_path)

    def _check_graph(self, onnx_path: Path) -> None:
        """The graph must take and give what the contract says, sized for the manifest."""
        inputs = {i.name: i for i in self._session.get_inputs()}  # required ones only
        outputs = {o.name: o for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelArtifactError(
                f"{onnx_path} must take {INPUT_NAME!r} and give {OUTPUT_NAME!r}; "
                f"it takes {sorted(inputs)} and gives {sorted(outputs)}"
            )
        if others := sorted(set(inputs) - {INPUT_NAME}):
            raise ModelArtifactError(
                f"{onnx_path} also needs the inputs {others}, which nothing feeds: it may "
                f"take only {INPUT_NAME!r}"
            )
        image = inputs[INPUT_NAME]
        height, width = self.manifest.input_size
        dims = list(image.shape)  # an int when fixed, a name or None when not
        if (
            image.type != "tensor(float)"
            or len(dims) != 4
            or isinstance(dims[0], int)
            or (isinstance(dims[1], int) and dims[1] != 3)
        ):
            raise ModelArtifactError(
                f"{onnx_path} takes {INPUT_NAME!r} as {image.type} {dims}; the contract is "
                f"tensor(float) [N, 3, {height}, {width}]: any batch size N of RGB images"
            )
        side_dims = dims[-2:]
        if all(isinstance(d, int) for d in side_dims) and side_dims != [height, width]:
            raise ModelArtifactError(
                f"{onnx_path} takes {side_dims[0]}x{side_dims[1]} images but {MANIFEST_NAME} "
                f"says input_size {[height, width]}"
            )
        answer = list(outputs[OUTPUT_NAME].shape)
        if len(answer) != 2:
            raise ModelArtifactError(
                f"{onnx_path} gives {OUTPUT_NAME!r} as {answer}; the contract is "
                f"[N, {len(self.manifest.labels)}]: a row of probabilities per image"
            )
        classes = answer[-1]
        if isinstance(classes, int) and classes != len(self.manifest.labels):
            raise ModelArtifactError(
                f"{onnx_path} gives {classes} probabilities but {MANIFEST_NAME} names "
                f"{len(self.manifest.labels)} labels"
            )

    def _dry_run(self, onnx_path: Path) -> None:
        """Answer a batch of synthetic images as evaluation and the server will: a graph
        whose declared shapes fit can still fail on them, or answer logits or rows that
        do not sum to 1."""
        images = dry_run_images()
        try:
            answers = self.predict_images(images)
        except Exception as exc:  # onnxruntime's own error types
            raise ModelArtifactError(
                f"{onnx_path} fails on a batch of {len(images)} images: {one_line(exc)}"
            ) from exc
        try:
            checked_answers(answers, self.labels, len(images))
        except ModelAnswerError as exc:
            raise ModelAnswerError(
                f"{onnx_path} breaks the contract on {len(images)} synthetic images: {exc}"
            ) from None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def predict_tensor(self, batch: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch}, self._run_options)
        return np.asarray(probabilities, dtype=np.float64)

    def predict_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.predict_tensor(images_to_tensor(images, self.manifest.input_size))

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        return self.manifest.input_size

    def predict_bytes(self, data: bytes) -> list[float]:
        """Probabilities for one encoded image, in label order."""
        image = decode_image(data, self.manifest.input_size)
        return [float(p) for p in self.predict_images([image])[0]]
