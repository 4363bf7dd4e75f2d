"""Per-datapoint terms read off traces, checked against closed forms on a linear-Gaussian model.

    z ~ N(0, I_d),  x | z ~ N(W z + b, σ² I_D)   =>   x ~ N(b, W Wᵀ + σ² I_D)
    p(z | x) = N(μ, Σ),  Σ = (I + WᵀW / σ²)⁻¹,  μ = Σ Wᵀ (x − b) / σ²

With the guide equal to the exact posterior every importance weight equals p(x), so the ELBO is
log p(x) exactly (not just in expectation) — a check that fails for any wrong sign, scale, axis
or missing term.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.errors import DataError
from pyro_gen.evaluate import TraceSiteError, elbo_terms, evaluate_elbo, pointwise_terms
from pyro_gen.models import VAE

D, LATENT, SIGMA = 5, 2, 0.7


class LinearGaussian(nn.Module):
    """The model, its exact posterior and a mean-field guide, in raw Pyro (float64)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(D, LATENT, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(D, generator=g, dtype=torch.float64))
        self.sigma = SIGMA

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        precision = torch.eye(LATENT, dtype=x.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.W @ cov / self.sigma**2  # cov is symmetric
        return mean, cov

    def exact_guide(self, x: torch.Tensor) -> None:
        mean, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))

    def meanfield_guide(self, x: torch.Tensor) -> None:
        mean, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(mean, cov.diagonal().sqrt() * 1.5).to_event(1))

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(D, dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)


@pytest.fixture
def lg():
    return LinearGaussian()


@pytest.fixture
def data(lg):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(7, LATENT, generator=g, dtype=torch.float64)
        return z @ lg.W.T + lg.b + SIGMA * torch.randn(7, D, generator=g, dtype=torch.float64)


@torch.no_grad()
def test_exact_posterior_gives_log_marginal_per_datapoint(lg, data):
    terms = elbo_terms(lg.model, lg.exact_guide, data, num_particles=1)
    log_px = lg.log_marginal(data)
    assert terms["elbo"].shape == (7,)
    assert torch.allclose(terms["elbo"], log_px, atol=1e-4, rtol=0)
    assert torch.allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], atol=1e-10)
    # every one of K importance weights is p(x): the estimator has zero variance
    t = pointwise_terms(lg.model, lg.exact_guide, data, num_particles=9)
    assert t.log_weight.shape == (9, 7)
    assert torch.allclose(t.log_weight, log_px.expand(9, 7), atol=1e-4, rtol=0)
    # and the split into likelihood, prior and guide is not degenerate
    assert (t.log_lik.std(0) > 1e-3).all() and (t.log_q.std(0) > 1e-3).all()


@torch.no_grad()
def test_chunking_does_not_change_the_terms(lg, data):
    pyro.set_rng_seed(5)
    a = pointwise_terms(lg.model, lg.exact_guide, data, num_particles=6)
    b = pointwise_terms(lg.model, lg.exact_guide, data, num_particles=6, max_rows=4)
    assert a.log_weight.shape == b.log_weight.shape == (6, 7)
    log_px = lg.log_marginal(data).expand(6, 7)
    assert torch.allclose(a.log_weight, log_px, atol=1e-4, rtol=0)
    assert torch.allclose(b.log_weight, log_px, atol=1e-4, rtol=0)


@torch.no_grad()
def test_reconstruction_and_kl_match_their_closed_forms(lg, data):
    """E_q log p(x|z) and KL(q‖p) separately, for the exact posterior (MC within 5 s.e.)."""
    mean, cov = lg.posterior(data)
    # E_q log N(x; Wz+b, σ²I) = log N(x; Wμ+b, σ²I) − tr(W Σ Wᵀ) / (2σ²)
    recon_exact = torch.distributions.Normal(mean @ lg.W.T + lg.b, SIGMA).log_prob(data).sum(
        -1
    ) - torch.trace(lg.W @ cov @ lg.W.T) / (2 * SIGMA**2)
    kl_exact = 0.5 * (
        torch.trace(cov) + (mean**2).sum(-1) - LATENT - torch.logdet(cov)
    )  # KL(N(μ, Σ) ‖ N(0, I))
    k = 4000
    t = pointwise_terms(lg.model, lg.exact_guide, data, num_particles=k)
    se = t.log_lik.std(0) / math.sqrt(k)
    assert (abs(t.log_lik.mean(0) - recon_exact) < 5 * se + 1e-6).all()
    kl_mc = (t.log_q - t.log_prior).mean(0)
    assert (abs(kl_mc - kl_exact) < 5 * (t.log_q - t.log_prior).std(0) / math.sqrt(k)).all()
    assert torch.allclose(recon_exact - kl_exact, lg.log_marginal(data), atol=1e-8)


@torch.no_grad()
def test_analytic_kl_agrees_with_monte_carlo_kl(lg, data):
    """A diagonal guide has an analytic KL (used by elbo_terms); MC agrees within 5 s.e."""
    k = 4000
    t = pointwise_terms(lg.model, lg.meanfield_guide, data, num_particles=k)
    mean, cov = lg.posterior(data)
    s = cov.diagonal().sqrt() * 1.5
    kl_formula = (0.5 * (s**2 + mean**2 - 1) - s.log()).sum(-1)
    assert torch.allclose(t.kl[0], kl_formula, atol=1e-8)  # analytic: same for every draw
    assert torch.allclose(t.kl_per_site["z"], t.kl)
    diff = t.log_q - t.log_prior
    se = diff.std(0) / math.sqrt(k)
    assert (se > 0).all()
    assert (abs(diff.mean(0) - kl_formula) < 5 * se).all()
    # a mean-field guide that is not the posterior gives a strict lower bound
    terms = elbo_terms(lg.model, lg.meanfield_guide, data, num_particles=200)
    assert torch.allclose(terms["elbo"], terms["reconstruction"] - terms["kl"])
    assert (terms["elbo"] < lg.log_marginal(data)).all()


@torch.no_grad()
def test_vae_terms_ignore_beta_and_split_consistently():
    """β weights training only; elbo_terms reports the model's true densities."""
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3))
    vae = VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(16,), beta=4.0)
    pyro.set_rng_seed(3)
    a = elbo_terms(vae.model, vae.guide, x, num_particles=3)
    vae.beta = 1.0
    pyro.set_rng_seed(3)
    b = elbo_terms(vae.model, vae.guide, x, num_particles=3)
    for key in ("elbo", "reconstruction", "kl"):
        assert torch.allclose(a[key], b[key])
    assert torch.allclose(a["elbo"], a["reconstruction"] - a["kl"])
    assert (a["kl"] > 0).all()
    r = evaluate_elbo(vae, x, num_particles=3, seed=3)
    assert torch.allclose(r.elbo, b["elbo"])


def test_a_latent_outside_the_data_plate_is_named(lg, data):
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).expand([D]).to_event(1), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(TraceSiteError, match="'mu'.*plate\\('data'\\)"):
        elbo_terms(model, guide, data)


def test_evaluate_elbo_checks_the_data():
    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
    with pytest.raises(DataError, match="binary"):
        evaluate_elbo(vae, torch.full((3, 4), 0.5))


@torch.no_grad()
@pytest.mark.parametrize("vectorize", [True, False])
def test_both_particle_paths_are_exact_with_the_exact_posterior(lg, data, vectorize, monkeypatch):
    from pyro_gen.evaluate import terms as traces

    other = "_terms_replicated" if vectorize else "_terms_vectorized"

    def refuse(*args, **kwargs):
        raise AssertionError(f"{other} should not run")

    monkeypatch.setattr(traces, other, refuse)
    t = pointwise_terms(lg.model, lg.exact_guide, data, num_particles=6, vectorize=vectorize)
    assert t.log_weight.shape == (6, data.shape[0])
    expected = lg.log_marginal(data).expand(6, -1)
    assert torch.allclose(t.log_weight, expected, atol=1e-6)
    # the draws differ between particles (they are independent, not one draw broadcast)
    assert (t.log_q.std(0) > 0).all()


@torch.no_grad()
def test_a_program_that_does_not_broadcast_falls_back_to_repeating(lg, data):
    def flat_guide(x):  # reshapes with len(x): breaks under an outer particle plate
        mean, cov = lg.posterior(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))
            z.reshape(len(x), LATENT)

    t = pointwise_terms(lg.model, flat_guide, data, num_particles=4)
    assert torch.allclose(t.log_weight, lg.log_marginal(data).expand(4, -1), atol=1e-6)
