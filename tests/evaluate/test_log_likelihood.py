"""Importance-sampled log p(x) against closed forms, chunking, and its error messages."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.evaluate import NonFiniteWeightsError, diagnose, evaluate_elbo, log_likelihood
from pyro_gen.evaluate.terms import TraceSiteError
from pyro_gen.models import VAE


def test_estimate_matches_exact_log_px_within_its_monte_carlo_error(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.3)
    K = 2000
    d = diagnose(m, x, num_samples=K)
    exact = m.exact_log_px(x)
    # delta method: sd(log p̂) ≈ sqrt(var(w) / (K E[w]²)) = sqrt(1/ESS − 1/K)
    se = (1 / d.ess - 1 / K).clamp(min=0).sqrt()
    assert d.gap.mean() > 0.05  # the guide is not the posterior: the check is not vacuous
    assert ((d.log_px - exact).abs() <= 4 * se + 1e-9).all()
    assert (
        abs(float((d.log_px - exact).mean())) < 4 * float(se.pow(2).mean().sqrt()) / 20**0.5 + 1e-3
    )


def test_log_likelihood_and_diagnose_share_the_same_weights(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.3)
    a = log_likelihood(m, x, num_samples=64, seed=3)
    b = diagnose(m, x, num_samples=64, seed=3).log_px
    torch.testing.assert_close(a, b)


def test_exact_posterior_makes_one_sample_exact(lg):
    make, x = lg
    m = make(guide="exact")
    log_px = log_likelihood(m, x, num_samples=1)
    torch.testing.assert_close(log_px, m.exact_log_px(x), rtol=0, atol=1e-9)


def test_chunks_over_datapoints_and_particles_and_returns_the_weights(lg):
    make, x = lg
    m = make(guide="exact")
    log_px, lw = log_likelihood(m, x, num_samples=7, batch_size=3, max_rows=4, return_weights=True)
    assert lw.shape == (7, 20) and log_px.shape == (20,)
    torch.testing.assert_close(log_px, m.exact_log_px(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(
        log_px, torch.logsumexp(lw.double(), 0) - math.log(7), rtol=0, atol=1e-9
    )


def test_log_px_is_above_the_elbo_on_average():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = (torch.rand(30, 6) > 0.5).float()
    log_px = log_likelihood(vae, x, num_samples=200)
    elbo = evaluate_elbo(vae, x, num_particles=50).elbo
    assert log_px.shape == (30,) and log_px.dtype == torch.float64
    assert float(log_px.mean()) > float(elbo.mean())


@pytest.mark.parametrize("K", [0, -3])
def test_k_below_one_is_refused(lg, K):
    make, x = lg
    with pytest.raises(ConfigError, match="must be >= 1"):
        log_likelihood(make(), x, num_samples=K)


def test_a_model_without_the_data_plate_is_named(lg):
    make, x = lg
    m = make(plate="batch")  # check_pair names the observed site before any sampling
    with pytest.raises(ShapeError, match=r"observed site 'x' is not inside pyro.plate\('data'\)"):
        log_likelihood(m, x, num_samples=2)


def test_a_latent_outside_the_data_plate_is_named():
    class GlobalMean(nn.Module):
        def model(self, x):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

        def guide(self, x):
            pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(TraceSiteError, match=r"site 'mu' is not inside pyro.plate\('data'\)"):
        log_likelihood(GlobalMean(), torch.zeros(4), num_samples=2)


class LogGuide(nn.Module):
    """q(z | x) = N(log x, 1): finite data below 0 give NaN log-weights (past the checked rows)."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.log(), 1.0))


def test_non_finite_weights_name_the_datapoints():
    x = torch.ones(14)
    x[9], x[12] = -1.0, -2.0  # beyond the first 8 rows that check_pair runs on
    with pytest.raises(NonFiniteWeightsError, match=r"2 datapoint\(s\), indices \[9, 12\]"):
        log_likelihood(LogGuide(), x, num_samples=4, batch_size=3)


def test_zero_weights_for_every_particle_are_reported():
    class Uniform(nn.Module):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Uniform(0.0, 1.0), obs=x)

        def guide(self, x):
            pass

    x = torch.full((12,), 0.5)
    x[9] = 1.5  # outside the support, past the rows check_pair sees
    with pytest.raises(NonFiniteWeightsError, match=r"indices \[9\]"):
        log_likelihood(Uniform(), x, num_samples=3)
    with pytest.raises(DataError, match=r"site 'x' .* support Interval"):  # in the checked rows
        log_likelihood(Uniform(), torch.tensor([0.5, 1.5, 0.2]), num_samples=3)


def test_a_point_mass_guide_is_refused():
    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,), beta=0.0)
    with pytest.raises(TraceSiteError, match="'z' is a point mass"):
        log_likelihood(vae, torch.ones(3, 4), num_samples=5)
