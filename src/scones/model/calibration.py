"""Temperature scaling (Guo et al., 2017), fitted on images a member never trained on.

Label smoothing and mixing make a network under-confident on purpose; the
workflow's confidence threshold needs probabilities that mean what they say. One
scalar per member is divided into its logits; it changes confidence, never the
predicted label.
"""

from __future__ import annotations

import numpy as np

# Searched on a log grid: deterministic, no optimiser state, and 1e-3 resolution is plenty.
_GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 1200))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def tta_probabilities(logit_views: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of the mean logit over views (``logit_views`` is [views, N, classes]).

    Averaging logits rather than probabilities is what the served ensemble does:
    views that agree keep their confidence instead of being pulled towards 0.5.
    """
    return softmax(logit_views.mean(axis=0) / temperature)


def negative_log_likelihood(probabilities: np.ndarray, targets: np.ndarray) -> float:
    picked = probabilities[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logit_views: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises held-out NLL of the view-averaged prediction."""
    if logit_views.ndim != 3 or logit_views.shape[1] != len(targets) or len(targets) == 0:
        raise ValueError("logit_views must be [views, N, classes] with N = len(targets) > 0")
    losses = [negative_log_likelihood(tta_probabilities(logit_views, t), targets) for t in _GRID]
    return float(_GRID[int(np.argmin(losses))])
