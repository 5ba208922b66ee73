"""Small model artifacts for the retraining tests, built in a second or two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scones.model.export import save_artifact


class CoinFlip(torch.nn.Module):
    """A "production" model that has learnt nothing: about 50/50 on every image, its answer
    "motorcycle" for images brighter than mid-grey. It answers both labels, so the gate's
    recall on each class is a guesser's (about half), not a constant model's 1.0 and 0."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        brightness = image.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        logits = torch.cat([torch.zeros_like(brightness), 0.01 * (brightness - 0.5)], dim=1)
        return torch.softmax(logits, dim=1)


class AlwaysMotorcycle(torch.nn.Module):
    """A candidate that gives up a class: "motorcycle", confidently, for every image."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        brightness = image.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        logits = torch.cat([torch.zeros_like(brightness), torch.full_like(brightness, 8.0)], dim=1)
        return torch.softmax(logits, dim=1)


def coin_flip_model(directory: Path) -> Path:
    """The artifact (model.onnx + model.json) of :class:`CoinFlip`."""
    return _artifact(directory, CoinFlip(), "test production model that guesses")


def always_motorcycle_model(directory: Path) -> Path:
    """The artifact of :class:`AlwaysMotorcycle`."""
    return _artifact(directory, AlwaysMotorcycle(), "test candidate that never says bicycle")


def _artifact(directory: Path, module: torch.nn.Module, description: str) -> Path:
    save_artifact(
        directory,
        module.eval(),
        name="bicycle-motorcycle",
        labels=("bicycle", "motorcycle"),
        input_size=(32, 32),
        extra={"description": description, "threshold": 0.93},
        check_pixels=np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32),
    )
    return directory
