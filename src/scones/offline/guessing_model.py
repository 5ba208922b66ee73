"""A production model that has learnt nothing, for rehearsing a deployment offline.

``scones retrain`` trains its candidate with a short recipe, which rarely beats the shipped
model, so the gate refuses it and the canary, its promotion and its rollback are never
reached. Against this model (about 50/50 on every image) such a candidate passes the gate,
and the rest of the run can be seen: ``--guessing-production``, and ``--fail-canary``
without ``--model``. It needs torch (the training environment, as retraining does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scones_core.training_split import TRAINED_INPUT_SIZE

from scones.model.export import save_artifact
from scones.model.recipe import DEFAULT_LABELS
from scones.paths import SHIPPED_MODEL_NAME
from scones.template_params import parameter_default


class CoinFlip(torch.nn.Module):
    """About 50/50 on every image, its answer "motorcycle" for images brighter than
    mid-grey. It answers both labels, so the gate's recall on each class is a guesser's
    (about half), not a constant model's 1.0 and 0."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        brightness = image.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        logits = torch.cat([torch.zeros_like(brightness), 0.01 * (brightness - 0.5)], dim=1)
        return torch.softmax(logits, dim=1)


def save_module_artifact(directory: Path, module: torch.nn.Module, description: str) -> Path:
    """``module`` as a model artifact (model.onnx + model.json) of the shipped model's
    labels and input size, at the template's threshold."""
    height, width = TRAINED_INPUT_SIZE
    save_artifact(
        directory,
        module.eval(),
        name=SHIPPED_MODEL_NAME,
        labels=DEFAULT_LABELS,
        input_size=TRAINED_INPUT_SIZE,
        extra={
            "description": description,
            "threshold": float(parameter_default("ConfidenceThreshold")),
        },
        check_pixels=np.random.default_rng(0).random((4, 3, height, width), dtype=np.float32),
    )
    return directory


def coin_flip_model(directory: Path) -> Path:
    """The artifact of :class:`CoinFlip` in ``directory``."""
    return save_module_artifact(directory, CoinFlip(), "a production model that guesses")
