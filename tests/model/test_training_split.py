"""One rule for how few images of a class can be trained on: the training program's split
and folds, and the retraining dataset step that refuses a run before a job is paid for."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scones_core.training_split import (
    MEMBERS,
    VALIDATION_FRACTION,
    TrainingSplit,
    min_images_per_class,
)

from scones.cli.main import main
from scones.model.folders import stratified_folds, stratified_split
from scones.model.recipe import TrainRecipe


def trains(images: int, fraction: float, folds: int) -> bool:
    """Whether the training program's own split and folds accept a class of ``images``."""
    targets = np.array([0] * images + [1] * 50)
    try:
        kept, _ = stratified_split(targets, fraction, seed=0)
        stratified_folds(targets[kept], folds, seed=1)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.3, 0.5, 0.75])
@pytest.mark.parametrize("folds", [2, 3, 4, 6])
def test_the_fewest_images_are_what_the_training_program_accepts(
    fraction: float, folds: int
) -> None:
    fewest = min_images_per_class(fraction, folds)
    assert trains(fewest, fraction, folds)
    assert not any(trains(n, fraction, folds) for n in range(1, fewest))
    assert all(trains(n, fraction, folds) for n in range(fewest, fewest + 40))


def test_the_recipe_defaults_are_the_rule_the_dataset_step_applies() -> None:
    recipe = TrainRecipe()
    assert (recipe.validation_fraction, recipe.members) == (VALIDATION_FRACTION, MEMBERS)
    assert min_images_per_class() == 5


def test_train_names_a_class_too_small_before_reading_any_image(
    subset_copier: Callable[[Path, int], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = subset_copier(tmp_path / "data", 8)
    for extra in sorted((data / "bicycle").iterdir())[4:]:
        extra.unlink()
    (data / "motorcycle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--threshold", "0.9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"scones: error: too few images to train on in {data}: bicycle has 4 images: 1 held "
        "out for validation leaves 3, fewer than the 4 folds the ensemble is calibrated on\n"
    )
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("4", "must be an object"),
        ({"members": 1}, "members must be a whole number >= 2, got 1"),
        ({"members": True}, "members must be a whole number >= 2, got True"),
        ({"members": 2.5}, "members must be a whole number >= 2, got 2.5"),
        ({"validation_fraction": 1}, "validation_fraction must be between 0 and 1, got 1"),
        ({"validation_fraction": "0.2"}, "validation_fraction must be between 0 and 1"),
        ({"folds": 4}, "unknown fields ['folds']"),
    ],
)
def test_a_training_split_an_event_gives_is_checked(value: object, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        TrainingSplit.parse(value)


def test_a_training_split_an_event_gives_fills_in_the_defaults() -> None:
    assert TrainingSplit.parse(None) == TrainingSplit(VALIDATION_FRACTION, MEMBERS)
    assert TrainingSplit.parse({"members": 2}) == TrainingSplit(VALIDATION_FRACTION, 2)
    assert TrainingSplit.parse({"validation_fraction": 0.25}).members == MEMBERS


def test_a_share_that_leaves_nothing_to_train_on_says_so() -> None:
    from scones_core.training_split import split_refusal

    assert split_refusal(2, 0.75, 2) == (
        "has 2 images: holding out 0.75 of them for validation leaves none to train on"
    )
