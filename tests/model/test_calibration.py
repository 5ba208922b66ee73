"""Calibration: the fit recovers a known temperature and bias, and the graph applies them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from scones.model.calibration import (
    fit_calibration,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)
from scones.model.networks import ServingEnsemble


def simulated(
    temperature: float, bias: float, n: int = 4000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of two views and labels drawn from softmax(mean logit / T + [0, bias])."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 3, size=(n, 2))
    views = np.stack([mean + 0.2, mean - 0.2])  # the views average back to ``mean``
    p_second = softmax(mean / temperature + np.array([0.0, bias]))[:, 1]
    targets = (rng.uniform(size=n) < p_second).astype(np.int64)
    return views, targets


def test_recovers_the_temperature_and_bias_that_generated_the_labels() -> None:
    views, targets = simulated(temperature=2.0, bias=-1.0)
    fitted = fit_calibration(views, targets, bias=True)
    assert fitted.bias[0] == 0
    assert fitted.temperature == pytest.approx(2.0, rel=0.15)
    assert fitted.bias[1] == pytest.approx(-1.0, abs=0.2)


def test_without_bias_it_is_plain_temperature_scaling() -> None:
    views, targets = simulated(temperature=2.0, bias=-1.0)
    fitted = fit_calibration(views, targets, bias=False)
    assert fitted.bias == (0.0, 0.0)
    assert fitted.temperature == fit_temperature(views, targets)
    # temperature alone never changes a prediction
    assert (fitted.probabilities(views).argmax(1) == views.mean(axis=0).argmax(1)).all()


def test_fitted_on_one_sample_the_bias_also_helps_on_another() -> None:
    """Fit on 300 labelled images of a biased source, score on 4000 fresh ones."""
    fit_views, fit_targets = simulated(temperature=1.5, bias=0.7, n=300, seed=4)
    new_views, new_targets = simulated(temperature=1.5, bias=0.7, n=4000, seed=5)
    with_bias = fit_calibration(fit_views, fit_targets, bias=True)
    without = fit_calibration(fit_views, fit_targets, bias=False)
    nll_with = negative_log_likelihood(with_bias.probabilities(new_views), new_targets)
    nll_without = negative_log_likelihood(without.probabilities(new_views), new_targets)
    assert nll_with < nll_without
    accuracy_with = (with_bias.probabilities(new_views).argmax(1) == new_targets).mean()
    accuracy_without = (without.probabilities(new_views).argmax(1) == new_targets).mean()
    assert accuracy_with > accuracy_without


def test_an_unbiased_source_gets_a_small_bias() -> None:
    views, targets = simulated(temperature=1.0, bias=0.0)
    assert abs(fit_calibration(views, targets, bias=True).bias[1]) < 0.15


def test_serving_ensemble_applies_the_calibration_it_was_given() -> None:
    """What the ONNX graph computes equals Calibration.probabilities on the member's logits."""
    torch.manual_seed(0)
    member = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    views, targets = simulated(temperature=2.0, bias=-1.0, n=500)
    calibration = fit_calibration(views, targets, bias=True)
    ensemble = ServingEnsemble(
        [member], [calibration.temperature], [0.0] * 3, [1.0] * 3, biases=[calibration.bias]
    ).eval()
    images = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        served = ensemble(images).numpy()
        logit_views = np.stack(
            [member(images).numpy(), member(torch.flip(images, dims=[3])).numpy()]
        ).astype(np.float64)
    np.testing.assert_allclose(served, calibration.probabilities(logit_views), atol=1e-5)


def test_serving_ensemble_wants_one_bias_per_member() -> None:
    member = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="one bias vector per member"):
        ServingEnsemble([member, member], [1.0, 1.0], [0.0] * 3, [1.0] * 3, biases=[(0.0, 0.0)])
