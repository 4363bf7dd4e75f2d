"""Tests that pin the numbers the evaluators report, each against a closed form or an identity,
so that a wrong constant, sign, axis or threshold fails (found by planting such bugs and by
mutation testing of pyro_gen/evaluate)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_gen.evaluate import diagnose, evaluate_elbo, log_likelihood, pointwise_terms


def _true_elbo(m, x):
    """ELBO = log p(x) − KL(q(z|x) ‖ p(z|x)) of the linear-Gaussian model, in closed form."""
    loc_q, scale_q = m.guide_params(x)
    loc_p, cov_p = m.posterior(x)
    q = dist.MultivariateNormal(loc_q, scale_tril=torch.diag_embed(scale_q))
    p = dist.MultivariateNormal(loc_p, covariance_matrix=cov_p)
    return m.exact_log_px(x) - torch.distributions.kl_divergence(q, p)


def test_elbo_is_below_the_importance_estimate_which_is_below_log_px(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.5, shift=0.3)
    exact, true_elbo = m.exact_log_px(x), _true_elbo(m, x)
    assert (exact - true_elbo).min() > 1.0  # a poor guide: a bound with room to be wrong in
    # the ELBO estimate: only E_q log p(x|z) is sampled (the KL is analytic), so its standard
    # error is sd(log p(x|z)) / sqrt(P) per datapoint (at most 0.16 nats here)
    P = 1000
    r = evaluate_elbo(m, x, num_particles=P)
    t = pointwise_terms(m.model, m.guide, x, num_particles=P)
    se_elbo = t.log_lik.std(0) / P**0.5
    assert ((r.elbo - true_elbo).abs() <= 4 * se_elbo).all()
    # importance-sampled log p(x): above the ELBO, below log p(x) up to its Monte-Carlo error
    K = 1000
    d = diagnose(m, x, num_samples=K)
    se_is = (1 / d.ess - 1 / K).clamp(min=0).sqrt()
    assert (r.elbo < d.log_px).all()
    assert (d.log_px <= exact + 4 * se_is).all()
    assert ((d.log_px - exact).abs() <= 4 * se_is + 0.02).all()
    # and diagnose's own ELBO (mean log-weight) estimates the same bound
    se_w = d.elbo.new_tensor(float((t.log_weight.std(0) / K**0.5).max()))
    assert ((d.elbo - true_elbo).abs() <= 4 * se_w).all()


def test_the_importance_estimate_tightens_as_k_grows(lg):
    # IWAE-k: E log p̂_K increases with K toward log p(x). K = 1000 weights per datapoint cut
    # into groups of k give E log p̂_k averaged over 1000 / k groups and 20 datapoints: about
    # −10.0, −7.3, −7.08 at k = 1, 10, 100 with standard errors under 0.04 (exact: −7.06).
    make, x = lg
    m = make(guide="meanfield", widen=1.5, shift=0.3)
    exact = float(m.exact_log_px(x).mean())
    K = 1000
    log_px, lw = log_likelihood(m, x, num_samples=K, seed=1, return_weights=True)
    lw = lw.double()

    def iwae(k):
        groups = lw.reshape(K // k, k, -1)
        return float((torch.logsumexp(groups, 1) - math.log(k)).mean())

    means = [iwae(k) for k in (1, 10, 100, 1000)]
    assert means[-1] == pytest.approx(float(log_px.mean()), abs=1e-9)
    gains = [b - a for a, b in zip(means, means[1:])]  # about 2.7, 0.24, 0.02
    assert gains[0] > 2.0 and gains[1] > 0.1 and gains[2] > -0.03
    assert means[3] <= exact + 0.05 and exact - means[2] < 0.1
    # k = 1 is the ELBO: log p(x) − KL(q ‖ p(z|x)) on average, to its standard error
    se = float(lw.std()) / math.sqrt(lw.numel())  # conservative: includes spread over x
    assert means[0] == pytest.approx(float(_true_elbo(m, x).mean()), abs=4 * se)
