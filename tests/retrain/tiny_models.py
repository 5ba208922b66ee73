"""Small model artifacts for the retraining tests, built in a second or two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scones.model.export import save_artifact


class CoinFlip(torch.nn.Module):
    """A "production" model that has learnt nothing: about 50/50 on every image."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        brightness = image.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1)
        logits = torch.cat([torch.zeros_like(brightness), 0.01 * brightness], dim=1)
        return torch.softmax(logits, dim=1)


def coin_flip_model(directory: Path) -> Path:
    """The artifact (model.onnx + model.json) of :class:`CoinFlip`."""
    save_artifact(
        directory,
        CoinFlip().eval(),
        name="bicycle-motorcycle",
        labels=("bicycle", "motorcycle"),
        input_size=(32, 32),
        extra={"description": "test production model that guesses", "threshold": 0.93},
        check_pixels=np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32),
    )
    return directory
