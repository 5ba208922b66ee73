"""The classifier networks and the serving wrapper that is exported to ONNX.

:class:`FineTunedBackbone` (the default) puts a linear head on a pretrained
backbone and fine-tunes both. :class:`SmallResNet` is a CIFAR-style residual
network trained from scratch, small enough to train on two CPU cores in minutes.
:class:`ServingEnsemble` is what ships: it takes RGB in [0, 1], normalises,
averages the calibrated logits of every member over the image and its mirror
image, and returns probabilities, so serving needs no knowledge of how the model
was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al., 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem + three stages (width w, 2w, 4w; 32x32 -> 8x8) + global pooling + linear head."""

    def __init__(
        self, num_classes: int, width: int = 32, blocks_per_stage: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if width < 1 or blocks_per_stage < 1 or num_classes < 2:
            raise ValueError("width and blocks_per_stage must be >= 1, num_classes >= 2")
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for normalised input."""
        pooled = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(pooled))


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of an NCHW batch to ``size`` x ``size`` (half-pixel centres, as ONNX)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class FineTunedBackbone(nn.Module):
    """Upsample to ``resize``, run the pretrained backbone, pool, linear head.

    The 32x32 input is upsampled because the backbone learned its features on
    photographs hundreds of pixels wide; at 32x32 its last feature map would be 1x1.
    Input is what the backbone expects (``Backbone.pixel_scale``), see
    :func:`scones.model.train.normalisation`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        num_classes: int,
        resize: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if resize < 32 or num_classes < 2:
            raise ValueError("resize must be >= 32 and num_classes >= 2")
        self.backbone = backbone
        self.resize = resize
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map for normalised 32x32 input."""
        return self.backbone(upsample(x, self.resize))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for normalised input."""
        pooled = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(pooled))


class EfficientNetLiteFeatures(nn.Module):
    """An ImageNet EfficientNet-Lite up to its head convolution (NCHW 0..255 in).

    The padding stays the one the weights were trained with, at the network's own input
    size (260 for Lite2), whatever size it is fed: at 160 px that is about 0.82 zero-shot
    bicycle-or-motorcycle accuracy on 128 training images, against 0.70 with the padding
    recomputed for 160 px. The classifier layer is dropped, and the weights must match the
    network exactly (every key, every shape).
    """

    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, name: str, weights: Path) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name(name)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net._fc = nn.Identity()
        self.register_buffer("in_mean", torch.full((1, 3, 1, 1), 127.0))
        self.register_buffer("in_std", torch.full((1, 3, 1, 1), 128.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features((x - self.in_mean) / self.in_std)


class ServingEnsemble(nn.Module):
    """RGB [0, 1] in, calibrated probabilities out; what ``model.onnx`` holds.

    Each member's logits are divided by its own temperature and shifted by its own
    per-class bias (both fitted on images that member never trained on); the scaled
    logits of all members and views are
    averaged and then put through one softmax. Averaging logits keeps the
    confidence of members that agree, where averaging probabilities would pull
    every disagreement towards 0.5. With ``flip_tta`` the image and its horizontal
    mirror are both scored, which costs one extra pass and removes the left/right
    bias that a small training set leaves.
    """

    inverse_temperatures: torch.Tensor
    biases: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        members: Sequence[nn.Module],
        temperatures: Sequence[float],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        biases: Sequence[Sequence[float]] | None = None,
        flip_tta: bool = True,
    ) -> None:
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ValueError("need one temperature per member and at least one member")
        if biases is not None and len(biases) != len(members):
            raise ValueError("need one bias vector per member")
        self.members = nn.ModuleList(members)
        self.register_buffer("inverse_temperatures", 1.0 / torch.tensor(list(temperatures)))
        # [members, classes], or [members, 1] of zeros: broadcasts to any class count
        bias_rows = [list(b) for b in biases] if biases is not None else [[0.0]] * len(members)
        self.register_buffer("biases", torch.tensor(bias_rows, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))
        self.flip_tta = flip_tta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        if self.flip_tta:
            x = torch.cat([x, torch.flip(x, dims=[3])], dim=0)
        total: torch.Tensor | None = None
        for index, member in enumerate(self.members):
            scaled = member(x) * self.inverse_temperatures[index] + self.biases[index]
            total = scaled if total is None else total + scaled
        assert total is not None
        if self.flip_tta:
            batch = image.shape[0]
            total = total[:batch] + total[batch:]
        views = 2 if self.flip_tta else 1
        return F.softmax(total / (views * len(self.members)), dim=1)
