"""Calibration fitted on images a member never trained on: temperature and bias.

Label smoothing and mixing make a network under-confident on purpose; the
workflow's confidence threshold needs probabilities that mean what they say.
Temperature scaling (Guo et al., 2017) divides one scalar into the logits; it
changes confidence, never the predicted label. A per-class bias added after it
(Platt's intercept) corrects a systematic lean towards one class: on the training
folds, the fine-tuned backbone's held-out predictions call bicycles motorcycles far
more often than the reverse (``cross_validation.biases`` in ``model.json`` shows the
fitted offsets). The bias can move the decision, so it too is fitted on held-out
images only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Searched on grids: deterministic, no optimiser state, and the resolution is plenty.
_GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 1200))
_BIAS_GRID = np.linspace(-4.0, 4.0, 801)
_ROUNDS = 3  # coordinate descent over temperature and each bias; converges in two here


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def tta_probabilities(
    logit_views: np.ndarray, temperature: float, bias: np.ndarray | float = 0.0
) -> np.ndarray:
    """Softmax of the mean logit over views / ``temperature`` + ``bias``.

    ``logit_views`` is [views, N, classes]. Averaging logits rather than
    probabilities is what the served ensemble does: views that agree keep their
    confidence instead of being pulled towards 0.5.
    """
    return softmax(logit_views.mean(axis=0) / temperature + bias)


def negative_log_likelihood(probabilities: np.ndarray, targets: np.ndarray) -> float:
    picked = probabilities[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logit_views: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises held-out NLL of the view-averaged prediction."""
    if logit_views.ndim != 3 or logit_views.shape[1] != len(targets) or len(targets) == 0:
        raise ValueError("logit_views must be [views, N, classes] with N = len(targets) > 0")
    return _best_temperature(logit_views, targets, 0.0)


def _best_temperature(
    logit_views: np.ndarray, targets: np.ndarray, bias: np.ndarray | float
) -> float:
    losses = [
        negative_log_likelihood(tta_probabilities(logit_views, t, bias), targets) for t in _GRID
    ]
    return float(_GRID[int(np.argmin(losses))])


@dataclass(frozen=True)
class Calibration:
    """Calibrated logits: mean view logit / ``temperature`` + ``bias`` (``bias[0]`` is 0)."""

    temperature: float
    bias: tuple[float, ...]

    def probabilities(self, logit_views: np.ndarray) -> np.ndarray:
        return tta_probabilities(logit_views, self.temperature, np.asarray(self.bias))


def fit_calibration(logit_views: np.ndarray, targets: np.ndarray, *, bias: bool) -> Calibration:
    """Minimise held-out NLL over the temperature and, with ``bias``, one bias per class."""
    temperature = fit_temperature(logit_views, targets)
    classes = logit_views.shape[2]
    offsets = np.zeros(classes)
    if not bias:
        return Calibration(temperature, tuple(offsets.tolist()))
    for _ in range(_ROUNDS):
        for k in range(1, classes):  # bias[0] stays 0: only differences matter
            trials = np.repeat(offsets[None, :], len(_BIAS_GRID), axis=0)
            trials[:, k] = _BIAS_GRID
            losses = [
                negative_log_likelihood(tta_probabilities(logit_views, temperature, b), targets)
                for b in trials
            ]
            offsets = trials[int(np.argmin(losses))]
        temperature = _best_temperature(logit_views, targets, offsets)
    return Calibration(temperature, tuple(round(float(b), 6) for b in offsets))
