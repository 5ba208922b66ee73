"""The second backbone, EfficientNet-Lite2: its weights are the recorded ones, its reader
gives the package's own ImageNet answers, and a member trains and exports like the first's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scones.model.artifact import OnnxClassifier
from scones.model.backbone import BACKBONES, EFFICIENTNET_LITE2, PackagedBackbone
from scones.model.build import build_model
from scones.model.folders import DataError, load_images
from scones.model.networks import EfficientNetLiteFeatures, FineTunedBackbone, upsample
from scones.model.recipe import NETWORKS, TrainRecipe
from scones.model.train import build_network, normalisation

LABELS = ("bicycle", "motorcycle")

# ImageNet classes that hold a bicycle, and those that hold a motorcycle.
BICYCLE_CLASSES = [444, 671, 870, 880]  # bicycle-built-for-two, mountain bike, tricycle, unicycle
MOTORCYCLE_CLASSES = [665, 670]  # moped, motor scooter
RESIZE = 160


def test_the_weights_are_the_recorded_ones() -> None:
    assert (
        "efficientnet-lite2" in NETWORKS and BACKBONES["efficientnet-lite2"] is EFFICIENTNET_LITE2
    )
    EFFICIENTNET_LITE2.verify()
    assert EFFICIENTNET_LITE2.weights_path.name in EFFICIENTNET_LITE2.sha256
    wrong = dataclasses.replace(
        EFFICIENTNET_LITE2, sha256={EFFICIENTNET_LITE2.weights_path.name: "0" * 64}
    )
    with pytest.raises(DataError, match=r"efficientnet-lite2-9656183e\.pth has sha256 9656183e"):
        wrong.verify()
    missing = dataclasses.replace(EFFICIENTNET_LITE2, package="no_such_weights_package")
    with pytest.raises(DataError, match="no_such_weights_package not installed"):
        missing.verify()
    no_code = dataclasses.replace(EFFICIENTNET_LITE2, code_package="no_such_network_code")
    with pytest.raises(DataError, match="no_such_network_code not installed"):
        no_code.verify()
    described = EFFICIENTNET_LITE2.describe()
    assert described["sha256"] == dict(EFFICIENTNET_LITE2.sha256)
    assert "Apache-2.0" in described["source"]


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path: Path) -> None:
    """The package's own loader is lenient (strict=False); this one is not."""
    state = torch.load(EFFICIENTNET_LITE2.weights_path, map_location="cpu", weights_only=True)
    del state["_conv_head.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(RuntimeError, match=r"_conv_head\.weight"):
        EfficientNetLiteFeatures("efficientnet-lite2", partial)


def test_the_reader_gives_the_packages_own_imagenet_answers(small_data: Path) -> None:
    """Features from the reader, through the weights' own ImageNet classifier, are the
    logits of the package's model as it loads itself; and they know bicycles from
    motorcycles without any training (misread weights would answer at chance)."""
    from efficientnet_lite_pytorch import EfficientNet

    data = load_images(small_data, LABELS)
    x = upsample(torch.from_numpy(data.pixels) * 255.0, RESIZE)
    reader = EFFICIENTNET_LITE2.load().eval()
    state = torch.load(EFFICIENTNET_LITE2.weights_path, map_location="cpu", weights_only=True)
    package = EfficientNet.from_pretrained(
        "efficientnet-lite2", weights_path=str(EFFICIENTNET_LITE2.weights_path)
    ).eval()
    with torch.no_grad():
        pooled = reader(x).mean(dim=(2, 3))
        logits = pooled @ state["_fc.weight"].T + state["_fc.bias"]
        some = slice(0, len(x), 8)
        expected = package((x[some] - 127.0) / 128.0)
    torch.testing.assert_close(logits[some], expected, atol=1e-4, rtol=1e-4)
    probabilities = torch.softmax(logits, dim=1).numpy()
    says_motorcycle = probabilities[:, MOTORCYCLE_CLASSES].sum(1) > probabilities[
        :, BICYCLE_CLASSES
    ].sum(1)
    accuracy = float((says_motorcycle.astype(int) == data.targets).mean())
    assert accuracy >= 0.75, accuracy


def test_a_lite2_ensemble_trains_exports_and_records_its_backbone(
    small_data: Path, tmp_path: Path, tiny_lite2_recipe: TrainRecipe
) -> None:
    recipe = tiny_lite2_recipe
    assert normalisation(recipe, np.zeros((1, 3, 32, 32))) == ([0.0] * 3, [round(1 / 255, 9)] * 3)
    network = build_network(recipe, 2)
    assert isinstance(network, FineTunedBackbone)
    assert isinstance(network.backbone, EfficientNetLiteFeatures)
    out = tmp_path / "lite2"
    report = build_model(small_data, out, recipe, threshold=0.93, name="tiny-lite2")
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["backbone"] == EFFICIENTNET_LITE2.describe()
    assert manifest["architecture"].startswith("2 x FineTunedBackbone(efficientnet-lite2, 64x64")
    assert (
        manifest["export_check"]["max_abs_diff_vs_torch"] <= manifest["export_check"]["tolerance"]
    )
    assert report["images"] == 16
    probabilities = OnnxClassifier(out).predict_tensor(load_images(small_data, LABELS).pixels[:4])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_packaged_backbone_is_a_backbone_like_the_other() -> None:
    """Both kinds give what training needs: features, input scale, verify, load, describe."""
    for backbone in BACKBONES.values():
        assert backbone.features > 0 and backbone.pixel_scale == 255.0
        assert set(backbone.describe()) >= {"name", "source", "sha256"}
    assert isinstance(EFFICIENTNET_LITE2, PackagedBackbone)
