"""The offline retraining rehearsal's inputs, importable without the offline stack (so
``scones --help`` never imports moto, which reads the AWS configuration as it loads)."""

from __future__ import annotations

from typing import Any

from scones.model.recipe import unused_by
from scones.template_params import PROJECT_ROOT

DEFAULT_DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"
# The short recipe: the retraining job's own hyperparameters with these overrides. Two
# members for a few epochs (fine-tuned ones at a smaller input side): about a minute on 2
# cores. It trains the ensemble on the labels, not the shipped distilled student: a teacher
# this short is unsure of much, and a student learns its teacher's doubt (its canary's
# answers fall below the threshold). The job's own default is the shipped recipe.
SHORT_RECIPE: dict[str, Any] = {
    "recipe": "ensemble",
    "epochs": 3,
    "members": 2,
    "threads": 2,
}
# The input side of a pretrained backbone in the short recipe (the job's own is larger).
SHORT_RESIZE = 96


def short_recipe(network: str) -> dict[str, Any]:
    """The short recipe for the network the job trains (``RetrainingNetwork``, or a
    ``network`` hyperparameter): ``resize`` only for a network that uses it, since the
    training program refuses it for the from-scratch ResNet."""
    recipe = dict(SHORT_RECIPE)
    if "resize" not in unused_by(network):
        recipe["resize"] = SHORT_RESIZE
    return recipe
