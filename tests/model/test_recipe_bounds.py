"""The recipe's sizes and counts have upper bounds as well as lower ones: a value torch or
numpy cannot take is refused by name before any data is read, not after minutes of work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scones.cli.main import main
from scones.model.augment import AugmentConfig
from scones.model.recipe import METHODS, NETWORKS, TrainRecipe
from scones.paths import SHIPPED_MODEL_DIR

HUGE = str(10**30)
# The largest value of each that torch and numpy take, or that is of any use.
MAX_SEED = 2**32 - 1
MAX_THREADS = 1024
MAX_RESIZE = 1024
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096

OUT_OF_BOUNDS = [
    ("--seed", HUGE, f"seed must be >= 0 and <= {MAX_SEED}"),
    ("--seed", str(MAX_SEED + 1), f"seed must be >= 0 and <= {MAX_SEED}"),
    ("--seed", "-1", f"seed must be >= 0 and <= {MAX_SEED}"),
    ("--threads", HUGE, f"threads must be >= 1 and <= {MAX_THREADS}"),
    ("--resize", HUGE, f"resize must be >= 32 and <= {MAX_RESIZE}"),
    ("--resize", str(MAX_RESIZE + 1), f"resize must be >= 32 and <= {MAX_RESIZE}"),
    ("--epochs", HUGE, f"epochs must be >= 1 and <= {MAX_EPOCHS}"),
    ("--batch-size", HUGE, f"batch_size must be >= 2 and <= {MAX_BATCH_SIZE}"),
]


@pytest.mark.parametrize(("flag", "value", "message"), OUT_OF_BOUNDS)
def test_train_refuses_an_out_of_range_setting_before_any_work(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    # Were the setting let through, training would stop here rather than start.
    monkeypatch.setattr("scones.cli.torch_free.torch_installed", lambda: False)
    argv = ["train", "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "m")]
    assert main([*argv, "--threshold", "0.9", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scones: error: ") and message in err
    assert "training needs torch" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "edge",
    [
        {"seed": 0},
        {"seed": MAX_SEED},
        {"threads": MAX_THREADS},
        {"resize": 32},
        {"resize": MAX_RESIZE},
        {"epochs": MAX_EPOCHS},
        {"batch_size": MAX_BATCH_SIZE},
    ],
)
def test_the_bounds_themselves_are_accepted(edge: dict[str, int]) -> None:
    recipe = TrainRecipe(**edge)
    assert all(getattr(recipe, name) == value for name, value in edge.items())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("network", NETWORKS)
def test_every_default_recipe_is_within_the_bounds(network: str, method: str) -> None:
    TrainRecipe.for_network(network, method)


@pytest.mark.parametrize(
    "model", [SHIPPED_MODEL_DIR, SHIPPED_MODEL_DIR.parent / "reference" / "ensemble-v1"]
)
def test_the_shipped_models_recipes_are_within_the_bounds(model: Path) -> None:
    recorded = json.loads((model / "model.json").read_text(encoding="utf-8"))["recipe"]
    recipe = TrainRecipe(**{**recorded, "augment": AugmentConfig(**recorded["augment"])})
    rebuilt = recipe.to_json()  # an older model.json records fewer fields
    assert {name: rebuilt[name] for name in recorded} == recorded


def test_the_templates_retraining_epochs_stop_at_the_recipes_bound() -> None:
    """A RetrainingEpochs the training program would refuse is refused at deploy time."""
    from scones.model import recipe
    from scones.template_params import load_template

    parameter = load_template()["Parameters"]["RetrainingEpochs"]
    assert parameter["MaxValue"] == recipe.MAX_EPOCHS == MAX_EPOCHS
    assert parameter["MinValue"] == 1
