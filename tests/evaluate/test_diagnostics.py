"""ELBO diagnostics: gap, KL per dimension, active units, ESS and Pareto k̂ against known cases."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.evaluate import Diagnostics, diagnose, pareto_khat
from pyro_gen.evaluate.diagnostics import PSIS_MIN_SAMPLES


def _kl_normal(loc_q, scale_q):
    """KL(N(loc_q, scale_q²) ‖ N(0, 1)) per dimension."""
    return 0.5 * (loc_q**2 + scale_q**2 - 1) - scale_q.log()


def test_exact_posterior_has_no_gap_full_ess_and_low_khat(lg):
    make, x = lg
    K = 50
    d = diagnose(make(guide="exact"), x, num_samples=K)
    assert isinstance(d, Diagnostics)
    torch.testing.assert_close(d.gap, torch.zeros_like(d.gap), rtol=0, atol=1e-9)
    torch.testing.assert_close(d.ess, torch.full_like(d.ess, K), rtol=1e-9, atol=0)
    assert (d.khat <= 0.5).all()
    assert d.summary()["khat_share_unreliable"] == 0.0


def test_the_gap_of_a_poor_guide_is_its_kl_from_the_posterior(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.5, shift=0.3)
    d = diagnose(m, x, num_samples=4000)
    # gap = log p(x) − ELBO = KL(q(z|x) ‖ p(z|x)), both Gaussians: closed form
    loc_q, scale_q = m.guide_params(x)
    loc_p, cov_p = m.posterior(x)
    q = dist.MultivariateNormal(loc_q, scale_tril=torch.diag_embed(scale_q))
    p = dist.MultivariateNormal(loc_p, covariance_matrix=cov_p)
    true_gap = torch.distributions.kl_divergence(q, p)
    assert true_gap.min() > 0.2
    assert (d.gap > 0).all()
    torch.testing.assert_close(d.gap, true_gap, rtol=0.1, atol=0.05)
    assert d.ess.mean() < 0.9 * 4000


def test_elbo_splits_into_reconstruction_and_analytic_kl(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.2)
    d = diagnose(m, x, num_samples=500)
    loc, scale = m.guide_params(x)
    per_dim = _kl_normal(loc, scale)
    torch.testing.assert_close(d.kl_per_dim, per_dim, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(d.kl, per_dim.sum(1), rtol=1e-6, atol=1e-9)
    assert d.kl_names == ["z[0]", "z[1]"]
    # reconstruction − analytic KL and the mean log-weight are the same bound
    assert abs(float((d.reconstruction - d.kl - d.elbo).mean())) < 0.05
    torch.testing.assert_close(d.posterior_mean, loc)


def test_kl_per_dimension_falls_back_to_the_site_when_no_formula(lg):
    make, x = lg
    d = diagnose(make(guide="exact"), x, num_samples=30)
    assert d.kl_names == ["z"] and d.kl_per_dim.shape == (20, 1)
    torch.testing.assert_close(d.kl_per_dim[:, 0], d.kl)
    assert d.mean_names == ["z[0]", "z[1]"]


class _Units(nn.Module):
    """q(z|x) has mean x * c: unit u is active iff Var_x(x_u c_u) > 0.01."""

    c = torch.tensor([1.0, 0.0, 1.0, 0.01])

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(4), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * self.c, 0.5).to_event(1))


def test_active_units_follow_the_covariance_criterion():
    x = torch.randn(400, 4, generator=torch.Generator().manual_seed(0))
    d = diagnose(_Units(), x, num_samples=2)
    assert d.active.tolist() == [True, False, True, False]
    assert d.active_units == 2
    s = d.summary()
    assert s["active_units"] == 2 and s["latent_dims"] == 4
    # K < 21: PSIS cannot fit a tail, so k̂ is not computed (and says so)
    assert torch.isnan(d.khat).all() and s["khat_share_unreliable"] != s["khat_share_unreliable"]


class _KnownMeans(nn.Module):
    """q(z|x) has mean x * c, so Cov_x(E_q[z_u]) = c_u² · Var(x_u): pinned by the data."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.as_tensor(c, dtype=torch.float64)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(self.c)), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * self.c, 0.5).to_event(1))


def _standardized(n, d, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x - x.mean(0)) / x.std(0)  # sample variance exactly 1 in every column


def test_active_units_use_the_threshold_of_burda_et_al():
    # posterior-mean variances 0.02, 0.005, 0.0105, 0.0095 straddle 0.01 (Burda et al. 2016:
    # active iff Cov_x(E_q[z_u]) > 0.01); a threshold off by even 5% miscounts
    var = torch.tensor([0.02, 0.005, 0.0105, 0.0095], dtype=torch.float64)
    x = _standardized(300, 4)
    d = diagnose(_KnownMeans(var.sqrt()), x, num_samples=2)
    torch.testing.assert_close(d.au_variance, var, rtol=1e-9, atol=0)
    torch.testing.assert_close(d.posterior_mean, x * var.sqrt(), rtol=1e-12, atol=0)
    assert d.au_threshold == 0.01
    assert d.active.tolist() == [True, False, True, False]
    assert d.active_units == 2
    s = d.summary()
    assert s["active_units"] == 2 and s["au_threshold"] == 0.01
    assert s["au_variance"] == pytest.approx(var.tolist(), rel=1e-9)
    # a caller's threshold is honoured
    assert diagnose(_KnownMeans(var.sqrt()), x, num_samples=2, au_threshold=0.001).active_units == 4
    assert diagnose(_KnownMeans(var.sqrt()), x, num_samples=2, au_threshold=0.015).active_units == 1


def test_pareto_khat_separates_heavy_from_light_tails():
    g = torch.Generator().manual_seed(0)
    K = 2000
    light = 0.1 * torch.randn(K, 5, generator=g, dtype=torch.float64)
    u = torch.rand(K, 5, generator=g, dtype=torch.float64)
    heavy = -1.5 * u.log()  # w = u^(-1.5): a Pareto tail with shape k = 1.5
    k = pareto_khat(torch.cat([light, heavy], 1))
    assert (k[:5] < 0.5).all() and (k[5:] > 0.7).all()
    assert torch.isnan(pareto_khat(light[: PSIS_MIN_SAMPLES - 1])).all()
    assert (pareto_khat(torch.zeros(100, 3)) == 0).all()  # equal weights: nothing to fit


@pytest.mark.parametrize("shape", [0.25, 0.5, 1.0])
def test_pareto_khat_recovers_a_known_tail_shape(shape):
    # log w = −shape · log u, u ~ U(0, 1): w = u^(−shape) is exactly Pareto with tail index
    # k = shape. One column of K = 4000 gives k̂ with sd ≈ 0.10 (arviz fits ~3√K tail points),
    # so average 40 columns: over seeds 0..99 that mean had sd 0.015 / 0.018 / 0.023 and a
    # bias of +0.016 / −0.001 / −0.035 (arviz's prior pulls k̂ toward 0.5) for k = 0.25 / 0.5 /
    # 1; ranges [0.23, 0.30], [0.46, 0.54], [0.91, 1.02]. A tolerance of 0.1 is > 4 sd + bias.
    # Fitting the tail of w instead of log w gives k̂ ≈ 5 here, and +inf after a shift.
    g = torch.Generator().manual_seed(0)
    u = torch.rand(4000, 40, generator=g, dtype=torch.float64)
    k = pareto_khat(-shape * u.log())
    assert k.shape == (40,) and torch.isfinite(k).all()
    assert abs(float(k.mean()) - shape) < 0.1
    assert float(k.median()) == pytest.approx(shape, abs=0.15)


def test_pareto_khat_ignores_a_constant_added_to_every_log_weight():
    # k̂ describes the weights' shape, not their scale: log p(x) shifts every log-weight alike
    g = torch.Generator().manual_seed(1)
    lw = -0.5 * torch.rand(3000, 6, generator=g, dtype=torch.float64).log()
    k = pareto_khat(lw)
    assert ((k > 0.2) & (k < 0.8)).all()
    for c in (1000.0, -1000.0, -1e4):
        torch.testing.assert_close(pareto_khat(lw + c), k, rtol=0, atol=1e-6)
    # float32 weights, as models give them, are read the same way
    torch.testing.assert_close(pareto_khat((lw - 500).float()), k, rtol=0, atol=0.02)


def test_poor_guide_flags_unreliable_datapoints(lg):
    make, x = lg
    d = diagnose(make(guide="prior"), x, num_samples=500)
    s = d.summary()
    assert s["gap"] > 1.0 and s["khat_share_unreliable"] > 0.2
    assert s["khat_num_unreliable"] == int((d.khat > 0.7).sum())
    json.dumps(s)  # plain Python values only


@pytest.mark.parametrize("batch_size", [1, 7])
def test_chunking_over_datapoints_keeps_the_order(lg, batch_size):
    make, x = lg
    d = diagnose(make(guide="exact"), x, num_samples=3, batch_size=batch_size, max_rows=5)
    torch.testing.assert_close(d.log_px, make().exact_log_px(x), rtol=0, atol=1e-9)
    loc, _ = make().posterior(x)
    torch.testing.assert_close(d.posterior_mean, loc)
