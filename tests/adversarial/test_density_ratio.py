"""The density-ratio trick against closed forms: log r(x) of two Gaussians, the optimal critic
D* = p/(p + q), and the JSD estimate against a numerical JSD of two 1-D distributions."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_gen.adversarial import density_ratio
from pyro_gen.errors import ConfigError, DataError, ShapeError

normal = torch.distributions.Normal


def _draws(n: int, loc: float, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (loc + scale * torch.randn(n, 1, generator=g)).float()


@pytest.fixture(scope="module")
def shifted():
    """P = N(0, 1), Q = N(1, 1): log r(x) = 1/2 − x."""
    p, q = _draws(6000, 0.0, 1.0, 1), _draws(6000, 1.0, 1.0, 2)
    return density_ratio(p, q, steps=600, hidden=(32, 32), lr=3e-3, seed=0)


def test_log_ratio_of_two_gaussians(shifted):
    grid = torch.linspace(-1.5, 2.5, 41).unsqueeze(1)
    truth = 0.5 - grid.squeeze(1)
    err = (shifted.log_ratio(grid) - truth).abs()
    assert float(err.max()) < 0.3, err
    assert float(err.mean()) < 0.12


def test_optimal_critic_is_p_over_p_plus_q(shifted):
    grid = torch.linspace(-1.5, 2.5, 41)
    p, q = normal(0.0, 1.0).log_prob(grid).exp(), normal(1.0, 1.0).log_prob(grid).exp()
    d_star = p / (p + q)
    d = shifted.probability(grid.unsqueeze(1))
    assert float((d - d_star).abs().max()) < 0.06


def _numerical_jsd(p: normal, q: normal) -> float:
    x = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    lp, lq = p.log_prob(x), q.log_prob(x)
    lm = torch.logaddexp(lp, lq) - math.log(2)
    integrand = 0.5 * lp.exp() * (lp - lm) + 0.5 * lq.exp() * (lq - lm)
    return float(torch.trapezoid(integrand, x))


@pytest.mark.parametrize("loc, scale", [(2.0, 0.5), (1.0, 1.0)])
def test_jsd_estimate_against_numerical_jsd(loc, scale):
    truth = _numerical_jsd(
        normal(torch.tensor(0.0, dtype=torch.float64), 1.0),
        normal(torch.tensor(loc, dtype=torch.float64), scale),
    )
    p, q = _draws(6000, 0.0, 1.0, 3), _draws(6000, loc, scale, 4)
    est = density_ratio(p, q, steps=600, hidden=(32, 32), lr=3e-3, seed=0)
    # held-out value: Monte-Carlo error ~ 0.01 for 1500 held-out points per class
    assert est.jsd == pytest.approx(truth, abs=0.035)
    assert est.value == pytest.approx(est.jsd - math.log(2))


def test_identical_samples_give_jsd_near_zero_and_chance_accuracy():
    p, q = _draws(4000, 0.0, 1.0, 5), _draws(4000, 0.0, 1.0, 6)
    est = density_ratio(p, q, steps=300, hidden=(32, 32), seed=0)
    assert est.jsd < 0.02
    assert abs(est.accuracy - 0.5) < 0.05


def test_same_seed_same_estimate():
    p, q = _draws(500, 0.0, 1.0, 7), _draws(500, 1.0, 1.0, 8)
    a = density_ratio(p, q, steps=50, seed=3)
    b = density_ratio(p, q, steps=50, seed=3)
    assert a.jsd == b.jsd and a.losses == b.losses


def test_bad_inputs():
    x = torch.zeros(10, 2)
    with pytest.raises(ShapeError, match="same datapoint shape"):
        density_ratio(x, torch.zeros(10, 3))
    with pytest.raises(DataError, match="NaN"):
        density_ratio(x, torch.full((10, 2), float("nan")))
    with pytest.raises(DataError, match="N >= 2"):
        density_ratio(torch.zeros(10), x)
    with pytest.raises(ConfigError, match="holdout"):
        density_ratio(x, x, holdout=1.0)
