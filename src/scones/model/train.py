"""Train the bicycle/motorcycle classifier on CPU: a cross-fitted ensemble.

Each member is the pretrained backbone fine-tuned with a new linear head
(:class:`~scones.model.networks.FineTunedBackbone`), or with ``--network resnet`` a
small ResNet trained from scratch.

The recipe, fixed before looking at the validation split:

1. Hold out a seeded, stratified validation split (never trained on, never used
   to choose anything during training; it is only reported).
2. Split the remaining images into ``members`` stratified folds. Member *k* trains
   on every fold except *k* and fits its calibration on fold *k*, which it
   never saw. The out-of-fold predictions also give a cross-validated accuracy,
   the number to use when changing the recipe.
3. Each member: linear warm-up then cosine decay (AdamW with a smaller step for
   the pretrained backbone than for the head; SGD with Nesterov momentum for the
   ResNet), label smoothing, random crop, flip, colour jitter, cutout and CutMix.
4. The members, their calibrations (temperature and per-class bias), normalisation
   and flip test-time averaging go into one
   :class:`~scones.model.networks.ServingEnsemble`, exported to ONNX.

Everything random draws from generators seeded from ``TrainRecipe.seed``, so a
run is repeatable bit for bit with the same torch build and thread count. A
different ``threads`` value changes how float sums are split and so the last bits
of the weights; that can move a borderline prediction, rarely more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from scones.model.augment import augment_batch
from scones.model.backbone import BACKBONES
from scones.model.calibration import Calibration, fit_calibration, negative_log_likelihood
from scones.model.evaluate import confusion_matrix
from scones.model.folders import LabelledImages, stratified_folds
from scones.model.networks import FineTunedBackbone, ServingEnsemble, SmallResNet
from scones.model.recipe import TrainRecipe

Log = Callable[[str], None]


@dataclass
class TrainedEnsemble:
    """The exportable model plus what was learned about it on held-out training folds."""

    model: ServingEnsemble
    calibrations: list[Calibration]
    cross_validation: dict[str, Any]
    mean: list[float]
    std: list[float]
    seconds: float


def channel_stats(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of RGB [0, 1] training pixels."""
    mean = pixels.mean(axis=(0, 2, 3))
    std = pixels.std(axis=(0, 2, 3))
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]


def normalisation(recipe: TrainRecipe, pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and std that map RGB [0, 1] to the network's input.

    A pretrained backbone fixes them (it was trained on its own input scale); the
    from-scratch ResNet standardises with the training pixels' statistics.
    """
    backbone = BACKBONES.get(recipe.network)
    if backbone is not None:
        return [0.0, 0.0, 0.0], [round(1.0 / backbone.pixel_scale, 9)] * 3
    return channel_stats(pixels)


def build_network(recipe: TrainRecipe, num_classes: int) -> torch.nn.Module:
    """A fresh member: the pretrained backbone with a new head, or an untrained ResNet."""
    backbone = BACKBONES.get(recipe.network)
    if backbone is not None:
        return FineTunedBackbone(
            backbone.load(),
            backbone.features,
            num_classes,
            recipe.resize,
            recipe.dropout,
        )
    return SmallResNet(num_classes, recipe.width, recipe.blocks_per_stage, recipe.dropout)


def build_optimiser(model: torch.nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """Weight decay on weights only; each group's ``base_lr`` drives the schedule."""
    backbone_lr = recipe.learning_rate * recipe.backbone_lr_scale
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        lr = backbone_lr if name.startswith("backbone.") else recipe.learning_rate
        decay = recipe.weight_decay if parameter.ndim > 1 else 0.0
        groups.setdefault((lr, decay), []).append(parameter)
    param_groups: list[dict[str, Any]] = [
        {"params": params, "base_lr": lr, "weight_decay": decay}
        for (lr, decay), params in groups.items()
    ]
    if isinstance(model, FineTunedBackbone):
        return torch.optim.AdamW(param_groups, lr=recipe.learning_rate)
    return torch.optim.SGD(
        param_groups, lr=recipe.learning_rate, momentum=recipe.momentum, nesterov=True
    )


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def set_learning_rates(
    optimiser: torch.optim.Optimizer, step: int, total: int, warmup: int
) -> None:
    """Warm-up then cosine decay, each group relative to its own ``base_lr``."""
    for group in optimiser.param_groups:
        group["lr"] = _lr_at(step, total, warmup, group["base_lr"])


def soft_target_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    """One optimiser step on cross-entropy against target distributions ``y``; the loss.

    Members learn from (smoothed, mixed) labels and students from a teacher's
    probabilities: both are distributions, so both take this step."""
    loss = -(y * F.log_softmax(model(x), dim=1)).sum(dim=1).mean()
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.item())


def train_member(
    pixels: np.ndarray,
    targets: np.ndarray,
    num_classes: int,
    recipe: TrainRecipe,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    seed: int,
    log: Log | None = None,
    tag: str = "",
) -> torch.nn.Module:
    """Train one network on RGB [0, 1] ``pixels`` with the recipe's augmentation and schedule."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_network(recipe, num_classes)
    optimiser = build_optimiser(model, recipe)
    x_all = torch.from_numpy(pixels)
    smooth = recipe.label_smoothing
    y_all = F.one_hot(torch.from_numpy(targets), num_classes).float()
    y_all = y_all * (1 - smooth) + smooth / num_classes
    n = len(targets)
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = max(
        1, n // batch_size
    )  # drop the ragged tail: BatchNorm dislikes tiny batches
    total = steps_per_epoch * recipe.epochs
    warmup = min(steps_per_epoch * recipe.warmup_epochs, total // 2)
    step = 0
    model.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            x, y = augment_batch(
                x_all[idx], y_all[idx], cfg=recipe.augment, mean=mean, std=std, gen=gen
            )
            set_learning_rates(optimiser, step, total, warmup)
            running += soft_target_step(model, optimiser, x, y)
            step += 1
        if log and (epoch + 1) % max(1, recipe.epochs // 6) == 0:
            log(f"{tag}epoch {epoch + 1}/{recipe.epochs} loss {running / steps_per_epoch:.4f}")
    model.eval()
    return model


@torch.no_grad()
def view_logits(
    model: torch.nn.Module, pixels: np.ndarray, mean: torch.Tensor, std: torch.Tensor, flip: bool
) -> np.ndarray:
    """Logits of the plain (and mirrored) images: [views, N, classes]."""
    x = (torch.from_numpy(pixels) - mean) / std
    views = [x, torch.flip(x, dims=[3])] if flip else [x]
    return np.stack([model(v).numpy().astype(np.float64) for v in views])


def train_ensemble(
    data: LabelledImages, recipe: TrainRecipe, log: Log | None = None
) -> TrainedEnsemble:
    """Cross-fit ``recipe.members`` networks on ``data`` (the training part only)."""
    started = time.perf_counter()
    torch.set_num_threads(recipe.threads)
    num_classes = len(data.labels)
    mean_list, std_list = normalisation(recipe, data.pixels)
    mean = torch.tensor(mean_list).view(1, 3, 1, 1)
    std = torch.tensor(std_list).view(1, 3, 1, 1)
    folds = stratified_folds(data.targets, recipe.members, recipe.seed + 1)
    members: list[torch.nn.Module] = []
    calibrations: list[Calibration] = []
    oof = np.zeros((len(data), num_classes))
    for k in range(recipe.members):
        fit_idx, cal_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        model = train_member(
            data.pixels[fit_idx],
            data.targets[fit_idx],
            num_classes,
            recipe,
            mean=mean,
            std=std,
            seed=recipe.seed * 1000 + k,
            log=log,
            tag=f"member {k + 1}/{recipe.members} ",
        )
        logits = view_logits(model, data.pixels[cal_idx], mean, std, recipe.flip_tta)
        calibration = fit_calibration(logits, data.targets[cal_idx], bias=recipe.calibrate_bias)
        oof[cal_idx] = calibration.probabilities(logits)
        held_acc = float((oof[cal_idx].argmax(1) == data.targets[cal_idx]).mean())
        if log:
            log(
                f"member {k + 1}/{recipe.members}: held-out fold accuracy {held_acc:.4f}, "
                f"temperature {calibration.temperature:.3f}, bias {list(calibration.bias)}"
            )
        members.append(model)
        calibrations.append(calibration)
    cv = {
        "what": "out-of-fold predictions of single calibrated members on the training part",
        "images": len(data),
        "accuracy": round(float((oof.argmax(1) == data.targets).mean()), 4),
        "confusion_matrix": confusion_matrix(oof.argmax(1), data.targets, num_classes).tolist(),
        "nll": round(negative_log_likelihood(oof, data.targets), 4),
        "temperatures": [round(c.temperature, 4) for c in calibrations],
        "biases": [list(c.bias) for c in calibrations],
    }
    ensemble = ServingEnsemble(
        members,
        [c.temperature for c in calibrations],
        mean_list,
        std_list,
        biases=[c.bias for c in calibrations],
        flip_tta=recipe.flip_tta,
    )
    ensemble.eval()
    return TrainedEnsemble(
        model=ensemble,
        calibrations=calibrations,
        cross_validation=cv,
        mean=mean_list,
        std=std_list,
        seconds=time.perf_counter() - started,
    )
