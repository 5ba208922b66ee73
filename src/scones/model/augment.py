"""Batch augmentations for 32x32 training images, all driven by one ``torch.Generator``.

With only a few hundred images per class, augmentation is most of what makes the
network generalise. Everything works on whole batches of normalised tensors and
draws its randomness from the generator it is given, so a seed fixes the run.
"""

from __future__ import annotations

import torch

from scones.model.recipe import AugmentConfig


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Reflect-pad by ``padding`` and cut a random window of the original size per image."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding), mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen)
    rows = offsets[:, 0:1] + torch.arange(h).unsqueeze(0)  # [n, h]
    cols = offsets[:, 1:2] + torch.arange(w).unsqueeze(0)  # [n, w]
    batch = torch.arange(n).view(n, 1, 1)
    # Advanced indexing picks [n, h, w, c]; move channels back to dim 1.
    out = padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), cols.unsqueeze(1)]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), torch.flip(x, dims=[3]), x)


def colour_jitter(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation on RGB in [0, 1]; keeps values in [0, 1]."""
    n = x.shape[0]
    if cfg.brightness > 0:
        x = x * _uniform((n, 1, 1, 1), 1 - cfg.brightness, 1 + cfg.brightness, gen)
    if cfg.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _uniform((n, 1, 1, 1), 1 - cfg.contrast, 1 + cfg.contrast, gen)
    if cfg.saturation > 0:
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        factor = _uniform((n, 1, 1, 1), 1 - cfg.saturation, 1 + cfg.saturation, gen)
        x = grey + (x - grey) * factor
    return x.clamp(0.0, 1.0)


def _box_masks(n: int, h: int, w: int, sides: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Boolean [n, 1, h, w] masks of squares with the given side lengths at random centres."""
    cy = torch.randint(0, h, (n,), generator=gen)
    cx = torch.randint(0, w, (n,), generator=gen)
    half = sides // 2
    top, bottom = (cy - half).clamp(0, h), (cy - half + sides).clamp(0, h)
    left, right = (cx - half).clamp(0, w), (cx - half + sides).clamp(0, w)
    r = torch.arange(h).view(1, h, 1)
    c = torch.arange(w).view(1, 1, w)
    inside = (
        (r >= top.view(n, 1, 1))
        & (r < bottom.view(n, 1, 1))
        & (c >= left.view(n, 1, 1))
        & (c < right.view(n, 1, 1))
    )
    return inside.unsqueeze(1)


def random_erase(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Cutout: set a random square to zero in some normalised images.

    Zero is the dataset mean for the ResNet's standardised input and black for the
    pretrained backbone's input (see ``scones.model.train.normalisation``).
    """
    if cfg.erase_probability <= 0:
        return x
    n, _, h, w = x.shape
    sides = (_uniform((n,), 0.1, cfg.erase_max_fraction, gen) * h).round().long()
    chosen = (torch.rand(n, generator=gen) < cfg.erase_probability).view(n, 1, 1, 1)
    mask = _box_masks(n, h, w, sides, gen) & chosen
    return x.masked_fill(mask, 0.0)


def mix(
    x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or mixup on a batch, with soft targets; ``y`` is one-hot/soft [n, classes]."""
    if torch.rand((), generator=gen).item() >= cfg.mix_probability:
        return x, y
    use_cutmix = cfg.cutmix_alpha > 0 and (
        cfg.mixup_alpha <= 0 or torch.rand((), generator=gen).item() < 0.5
    )
    alpha = cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha
    if alpha <= 0:
        return x, y
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen)
    if use_cutmix:
        n, _, h, w = x.shape
        side = round(h * (1 - lam) ** 0.5)
        mask = _box_masks(1, h, w, torch.tensor([side]), gen).expand(n, -1, -1, -1)
        x = torch.where(mask, x[perm], x)
        lam = 1 - float(mask[0].float().mean().item())
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from the seeded generator (torch.distributions ignores it)."""
    a = torch._standard_gamma(torch.full((1,), alpha), generator=gen)
    b = torch._standard_gamma(torch.full((1,), alpha), generator=gen)
    return float((a / (a + b)).item())


def augment_batch(
    pixels: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: AugmentConfig,
    mean: torch.Tensor,
    std: torch.Tensor,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB [0, 1] pixels and soft targets in; augmented, normalised batch and targets out."""
    x = random_crop(pixels, cfg.crop_padding, gen)
    if cfg.flip:
        x = random_flip(x, gen)
    x = colour_jitter(x, cfg, gen)
    x = (x - mean) / std
    x = random_erase(x, cfg, gen)
    return mix(x, targets, cfg, gen)
