"""Small model artifacts for the retraining tests, built in a second or two."""

from __future__ import annotations

from pathlib import Path

import torch

from scones.offline.guessing_model import coin_flip_model, save_module_artifact

__all__ = ["always_motorcycle_model", "coin_flip_model"]


class AlwaysMotorcycle(torch.nn.Module):
    """A candidate that gives up a class: "motorcycle", confidently, for every image."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        brightness = image.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        logits = torch.cat([torch.zeros_like(brightness), torch.full_like(brightness, 8.0)], dim=1)
        return torch.softmax(logits, dim=1)


def always_motorcycle_model(directory: Path) -> Path:
    """The artifact of :class:`AlwaysMotorcycle`."""
    return save_module_artifact(
        directory, AlwaysMotorcycle(), "test candidate that never says bicycle"
    )
