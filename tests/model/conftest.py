"""Fixtures for the model tests: small folders of real CIFAR-100 images and a tiny recipe."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from scones.model.augment import AugmentConfig
from scones.model.train import TrainRecipe

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"
LABELS = ("bicycle", "motorcycle")


def copy_subset(destination: Path, per_class: int) -> Path:
    """The first ``per_class`` bundled images of each class, in ``<dest>/<label>/``."""
    for label in LABELS:
        target = destination / label
        target.mkdir(parents=True)
        for source in sorted((BUNDLED_DATA / "train" / label).glob("*.png"))[:per_class]:
            shutil.copy2(source, target / source.name)
    return destination


@pytest.fixture
def subset_copier() -> Callable[[Path, int], Path]:
    return copy_subset


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 real images, 32 per class."""
    return copy_subset(tmp_path_factory.mktemp("small-data"), 32)


TINY_RUN = {
    "seed": 3,
    "validation_fraction": 0.25,
    "members": 2,
    "epochs": 1,
    "batch_size": 16,
    "threads": 1,
}
"""Seconds, not minutes: enough to exercise every step, not to learn much."""


@pytest.fixture
def tiny_recipe() -> TrainRecipe:
    """The default network, fine-tuned at a small input size."""
    return TrainRecipe(
        **TINY_RUN, resize=64, augment=AugmentConfig(mix_probability=1.0, mixup_alpha=0.4)
    )


@pytest.fixture
def tiny_lite2_recipe() -> TrainRecipe:
    """The second teacher's backbone, at a small input size, without flip averaging."""
    return TrainRecipe.for_network(
        "efficientnet-lite2", "ensemble", **TINY_RUN, resize=64, flip_tta=False
    )


@pytest.fixture
def tiny_resnet_recipe() -> TrainRecipe:
    """The from-scratch network, as small as it goes."""
    return TrainRecipe.for_network("resnet", **TINY_RUN, width=4)
