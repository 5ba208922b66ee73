"""The model artifact: an ONNX graph plus a ``model.json`` manifest beside it.

This module is the one contract between training (which writes the artifact),
the model server and the benchmarks (which load it). The ONNX graph does its own
normalisation and softmax, so a caller only has to turn images into RGB floats.

Graph contract:
    input  ``image``          float32 ``[N, 3, H, W]``, RGB, values in ``[0, 1]``
    output ``probabilities``  float32 ``[N, len(labels)]``, rows sum to 1
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scones_core.image_rules import decode_image as rule_decode
from scones_core.json_text import NotJSON, load_json
from scones_core.preprocess import to_model_image
from scones_core.settings import ImageLimits

MANIFEST_NAME = "model.json"
ONNX_NAME = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class ModelArtifactError(ValueError):
    """The artifact on disk is missing, incomplete or does not match its manifest."""


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
        try:
            raw = load_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise ModelArtifactError(f"model manifest not found: {path}") from exc
        except NotJSON as exc:
            raise ModelArtifactError(f"model manifest {path} is not valid JSON: {exc}") from exc
        except OSError as exc:
            raise ModelArtifactError(f"model manifest {path} cannot be read: {exc}") from exc
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


def checked_graph(directory: Path, manifest: ModelManifest) -> Path:
    """The artifact's graph file, present and the one its manifest names (by SHA-256)."""
    onnx_path = directory / ONNX_NAME
    if not onnx_path.is_file():
        raise ModelArtifactError(f"model graph not found: {onnx_path}")
    actual = sha256_file(onnx_path)
    if actual != manifest.onnx_sha256:
        raise ModelArtifactError(
            f"{onnx_path} has sha256 {actual}, but {MANIFEST_NAME} says {manifest.onnx_sha256}"
        )
    return onnx_path


class OnnxClassifier:
    """An ONNX Runtime session plus its manifest: bytes or images in, probabilities out."""

    def __init__(self, directory: Path, *, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        self.manifest = ModelManifest.load(self.directory)
        onnx_path = checked_graph(self.directory, self.manifest)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail...)
            raise ModelArtifactError(
                f"{onnx_path} is not a graph onnxruntime can load: {' '.join(str(exc).split())}"
            ) from exc
        self._check_graph(onnx_path)

    def _check_graph(self, onnx_path: Path) -> None:
        """The graph must have the contract's input and output, sized for the labels."""
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelArtifactError(
                f"{onnx_path} must take {INPUT_NAME!r} and give {OUTPUT_NAME!r}; "
                f"it takes {sorted(inputs)} and gives {sorted(outputs)}"
            )
        height, width = self.manifest.input_size
        side_dims = list(inputs[INPUT_NAME][-2:])
        if all(isinstance(d, int) for d in side_dims) and side_dims != [height, width]:
            raise ModelArtifactError(
                f"{onnx_path} takes {side_dims[0]}x{side_dims[1]} images but {MANIFEST_NAME} "
                f"says input_size {[height, width]}"
            )
        classes = outputs[OUTPUT_NAME][-1]
        if isinstance(classes, int) and classes != len(self.manifest.labels):
            raise ModelArtifactError(
                f"{onnx_path} gives {classes} probabilities but {MANIFEST_NAME} names "
                f"{len(self.manifest.labels)} labels"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def predict_tensor(self, batch: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
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
