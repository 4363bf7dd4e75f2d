"""AIS log p(x) against closed forms and quadrature, from poor guides, with constrained latents."""

from __future__ import annotations

import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import diagnose, log_likelihood
from pyro_gen.evaluate.ais import DiscreteLatentError, ais, ais_schedule
from pyro_gen.evaluate.log_likelihood import PointMassGuideError
from pyro_gen.models import VAE


def _within_mc_error(est: torch.Tensor, exact: torch.Tensor, k: float = 4.0) -> None:
    """The mean over datapoints agrees with the exact value within k standard errors (the
    spread of the per-datapoint errors), and no datapoint is far off."""
    d = est - exact
    se = float(d.std()) / math.sqrt(d.numel())
    assert abs(float(d.mean())) <= k * se + 1e-3, (float(d.mean()), se)


def test_ais_matches_the_closed_form_from_a_poor_guide(lg):
    make, x = lg
    m = make(guide="meanfield", widen=3.0, shift=0.7)
    exact = m.exact_log_px(x)
    plain = log_likelihood(m, x, num_samples=16)
    assert float((exact - plain).mean()) > 0.1  # the guide is poor: IS with C draws is off
    r = ais(m, x, num_steps=100, num_chains=16, num_leapfrog=4, progress=False)
    assert r.log_px.shape == (20,) and r.log_weights.shape == (16, 20)
    assert r.log_px.dtype == torch.float64
    _within_mc_error(r.log_px, exact)
    assert ((r.log_px - exact).abs() <= 4 * r.log_px_se + 0.1).all()
    # diagnostics: acceptance near the target, tuned step sizes per stretch and chain
    assert 0.45 < float(r.acceptance.mean()) < 0.9
    assert r.acceptance.shape == (99,) and r.step_sizes.shape[1:] == (16, 20)
    assert (r.ess > 1).all() and (r.ess <= 16 + 1e-9).all()
    torch.testing.assert_close(r.log_px, torch.logsumexp(r.log_weights, 0) - math.log(16))


def test_where_khat_is_low_ais_and_is_agree_within_their_errors(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.3)
    K = 1000
    d = diagnose(m, x, num_samples=K)
    low = d.khat < 0.5
    assert low.sum() >= 10  # most datapoints: the check is not vacuous
    is_se = (1 / d.ess - 1 / K).clamp(min=0).sqrt()
    r = ais(m, x, num_steps=30, num_chains=16, num_leapfrog=3, progress=False)
    err = (is_se**2 + r.log_px_se**2).sqrt()
    assert ((r.log_px - d.log_px).abs()[low] <= 4 * err[low] + 0.02).all()


def test_a_mass_matrix_from_the_start_distribution_keeps_the_estimate_right(lg):
    make, x = lg
    m = make(guide="meanfield", widen=3.0, shift=0.7)
    r = ais(m, x, num_steps=60, num_chains=16, num_leapfrog=4, mass="start", progress=False)
    assert r.settings["mass"] == "start"
    _within_mc_error(r.log_px, m.exact_log_px(x))
    assert ((r.log_px - m.exact_log_px(x)).abs() <= 4 * r.log_px_se + 0.1).all()


def test_ais_from_the_exact_posterior_is_exact_at_one_step(lg):
    # f_0 = q = p(z|x): every weight is p(x) exactly, whatever the transitions do
    make, x = lg
    m = make(guide="exact")
    r = ais(m, x, num_steps=3, num_chains=2, num_leapfrog=2, progress=False)
    torch.testing.assert_close(r.log_px, m.exact_log_px(x), rtol=0, atol=1e-9)


def test_log_likelihood_method_ais_is_the_ais_estimate_and_is_is_unchanged(lg):
    make, x = lg
    m = make(guide="meanfield", widen=2.0)
    settings = dict(num_steps=20, num_chains=4, num_leapfrog=2, seed=5)
    a = log_likelihood(m, x, method="ais", ais_options={"progress": False}, **settings)
    b = ais(m, x, progress=False, **settings).log_px
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        log_likelihood(m, x, num_samples=9, seed=2),
        log_likelihood(m, x, method="is", num_samples=9, seed=2),
    )
    with pytest.raises(ConfigError, match="method"):
        log_likelihood(m, x, method="mcmc")


def test_log_likelihood_method_ais_passes_progress_and_batch_size_on(lg, capsys):
    make, x = lg
    m = make(guide="meanfield", widen=2.0)
    settings = dict(num_steps=6, num_chains=3, num_leapfrog=2, seed=5)
    a = log_likelihood(m, x[:4], method="ais", batch_size=1, progress=False, **settings)
    torch.testing.assert_close(a, ais(m, x[:4], batch_size=1, progress=False, **settings).log_px)
    whole = ais(m, x[:4], progress=False, **settings).log_px  # one chunk: other random draws
    assert not torch.equal(a, whole)
    capsys.readouterr()
    log_likelihood(m, x[:2], method="ais", progress=True, **settings)
    assert "AIS" in capsys.readouterr().err  # the bar was asked for and shown
    log_likelihood(m, x[:2], method="ais", progress=False, **settings)
    assert "AIS" not in capsys.readouterr().err


def test_one_chain_reports_an_unknown_error_not_zero(lg):
    make, x = lg
    m = make(guide="meanfield", widen=2.0)
    with pytest.warns(UserWarning, match="num_chains=1 gives no Monte-Carlo error"):
        r = ais(m, x[:3], num_steps=5, num_chains=1, num_leapfrog=2, progress=False)
    assert torch.isnan(r.log_px_se).all() and torch.isfinite(r.log_px).all()
    assert math.isnan(r.summary()["mc_error_mean"])
    two = ais(m, x[:3], num_steps=5, num_chains=2, num_leapfrog=2, progress=False)
    assert torch.isfinite(two.log_px_se).all()


def test_chunks_over_datapoints_keep_each_datapoint_with_its_chains(lg):
    # from the exact posterior every weight is p(x_n): any mix-up of rows would show
    make, x = lg
    m = make(guide="exact")
    r = ais(m, x, num_steps=4, num_chains=3, num_leapfrog=2, batch_size=6, progress=False)
    assert r.step_sizes.shape[1:] == (3, 20) and r.acceptance.shape == (3,)
    torch.testing.assert_close(r.log_px, m.exact_log_px(x), rtol=0, atol=1e-9)


def test_start_from_the_prior(lg):
    make, x = lg
    m = make(guide="meanfield")
    r = ais(m, x[:6], num_steps=200, num_chains=8, num_leapfrog=4, start="prior", progress=False)
    _within_mc_error(r.log_px, m.exact_log_px(x[:6]))


# -- a banana-shaped (and bimodal) posterior: quadrature on a grid --------------------------------
class Banana(nn.Module):
    """z ~ N(0, I₂), x ~ N(z₂ + z₁², s²): the posterior is a band around the parabola
    z₂ = x − z₁², bent by the prior; for x > 1/2 it has two modes at z₁ ≈ ±√(x − 1/2). The guide
    is overconfident: N((0, x/(1 + s²)), 0.15²) at the point of the band on the axis."""

    def __init__(self, s: float = 0.3, width: float = 0.15):
        super().__init__()
        self.s, self.width = s, width

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            mean = (z[..., 1] + z[..., 0] ** 2).unsqueeze(-1)
            pyro.sample("x", dist.Normal(mean, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = torch.cat([torch.zeros_like(x), x / (1 + self.s**2)], -1)
            pyro.sample("z", dist.Normal(loc, self.width).to_event(1))

    def quadrature(self, x, half=5.0, points=1001):
        """log p(x) by the rectangle rule on a square grid (spacing 0.01; the rule converges
        faster than any power for a smooth density that vanishes at the edges)."""
        g = torch.linspace(-half, half, points, dtype=torch.float64)
        z1, z2, h = g[:, None], g[None, :], float(g[1] - g[0])
        prior = dist.Normal(0.0, 1.0).log_prob(z1) + dist.Normal(0.0, 1.0).log_prob(z2)
        return torch.stack(
            [
                torch.logsumexp(
                    (prior + dist.Normal(z2 + z1**2, self.s).log_prob(xn[0])).flatten(), 0
                )
                + 2 * math.log(h)
                for xn in x
            ]
        )


def test_ais_agrees_with_quadrature_on_a_banana_where_is_does_not():
    m = Banana()
    x = torch.tensor([[0.2], [1.0], [1.5], [-1.0]], dtype=torch.float64)  # 1.0, 1.5: bimodal
    exact = m.quadrature(x)
    torch.testing.assert_close(exact, m.quadrature(x, half=6.0, points=1501), rtol=0, atol=1e-6)
    C = 64
    r = ais(m, x, num_steps=150, num_chains=C, num_leapfrog=4, progress=False)
    assert float(r.log_px_se.mean()) < 0.3  # the tolerance below is not vacuous
    assert ((r.log_px - exact).abs() <= 4 * r.log_px_se + 0.1).all(), r.log_px - exact
    assert float((r.log_px - exact).abs().mean()) < 0.2
    # plain IS at the same number of model evaluations (the final run and the tuning pass)
    is_est = log_likelihood(m, x, num_samples=C * r.gradient_evaluations, seed=0)
    assert float((exact - is_est).mean()) > 0.5 and float((exact - is_est).max()) > 1.0


# -- a constrained latent: a Gamma precision, Student-t marginal ----------------------------------
class GammaScale(nn.Module):
    """τ ~ Gamma(a, b); x | τ ~ N(0, 1/τ) in D dims: p(x) in closed form (a Student-t), the
    posterior Gamma(a + D/2, b + |x|²/2). The guide, LogNormal(log 4, 0.2²), is narrow and far
    off."""

    def __init__(self, a=2.0, b=1.5):
        super().__init__()
        self.a, self.b = a, b

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            tau = pyro.sample("tau", dist.Gamma(x.new_tensor(self.a), x.new_tensor(self.b)))
            scale = tau.rsqrt().unsqueeze(-1).expand_as(x)
            pyro.sample("x", dist.Normal(torch.zeros_like(x), scale).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("tau", dist.LogNormal(x.new_zeros(x.shape[0]) + math.log(4.0), 0.2))

    def exact_log_px(self, x):
        a, b, D = self.a, self.b, x.shape[1]
        s = b + 0.5 * (x**2).sum(1)
        return (
            a * math.log(b)
            + math.lgamma(a + D / 2)
            - math.lgamma(a)
            - D / 2 * math.log(2 * math.pi)
            - (a + D / 2) * s.log()
        )


def test_a_positive_latent_runs_in_unconstrained_space_and_matches_the_closed_form():
    m = GammaScale()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64) * 0.8
    exact = m.exact_log_px(x)
    assert float((exact - log_likelihood(m, x, num_samples=12)).mean()) > 0.5  # poor guide
    r = ais(m, x, num_steps=100, num_chains=12, num_leapfrog=4, progress=False)
    _within_mc_error(r.log_px, exact)
    assert ((r.log_px - exact).abs() <= 4 * r.log_px_se + 0.1).all()


# -- refusals and guards --------------------------------------------------------------------------
class Mixture(nn.Module):
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(x.new_tensor(0.5)))
            pyro.sample("x", dist.Normal(c * 2.0, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(x.new_tensor(0.5)))


def test_a_discrete_latent_is_refused_by_name():
    with pytest.raises(DiscreteLatentError, match="'c'.*discrete"):
        ais(Mixture(), torch.zeros(3), num_steps=5, num_chains=2, progress=False)


class Walled(nn.Module):
    """z ~ N(0, 1), x ~ N(z, 0.5²): log p(x) = log N(x; 0, 1.25), except for a wall where
    log p = ``wall`` (NaN or +inf) at z > 1.5, with no posterior mass for x = 0: only diverging
    trajectories meet it. The guide is the posterior, so every accepted move keeps w = p(x)."""

    def __init__(self, wall: float):
        super().__init__()
        self.wall = wall

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_tensor(0.0), 1.0))
            pyro.factor("wall", torch.where(z > 1.5, self.wall, 0.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), math.sqrt(0.2)))


@pytest.mark.parametrize("wall", [math.nan, math.inf])
def test_a_non_finite_metropolis_ratio_rejects(wall):
    x = torch.zeros(6, dtype=torch.float64)
    r = ais(
        Walled(wall), x, num_steps=20, num_chains=8, num_leapfrog=5, init_step_size=3.0,
        tune_steps=5, progress=False,
    )  # fmt: skip
    exact = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x)
    assert torch.isfinite(r.log_weights).all()
    assert float(r.acceptance.mean()) < 0.9  # the big steps did hit the wall
    torch.testing.assert_close(r.log_px, exact, rtol=0, atol=1e-6)


def test_a_point_mass_guide_needs_the_prior_start():
    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,), beta=0.0)
    x = (torch.rand(3, 4) > 0.5).float()
    with pytest.raises(PointMassGuideError, match=r"start=\"prior\""):
        ais(vae, x, num_steps=5, num_chains=2, progress=False)
    r = ais(vae, x, num_steps=5, num_chains=2, num_leapfrog=2, start="prior", progress=False)
    assert torch.isfinite(r.log_px).all()


def test_counts_must_be_whole_numbers(lg):
    make, x = lg
    with pytest.raises(ConfigError, match="num_steps must be a whole number; got 2.5"):
        ais(make(), x[:2], num_steps=2.5, num_chains=2, progress=False)
    r = ais(make(), x[:2], num_steps=3.0, num_chains=2, num_leapfrog=2, progress=False)
    assert r.num_steps == 3  # a float with a whole value is taken


def test_a_misspelt_keyword_is_a_config_error_before_the_model_runs(lg):
    make, x = lg
    m = make(guide="meanfield")
    with pytest.raises(ConfigError, match="'num_leapfrogs'.*Did you mean 'num_leapfrog'"):
        ais(m, x[:2], num_steps=3, num_chains=2, num_leapfrogs=3, progress=False)
    with pytest.raises(ConfigError, match="neither the model nor the guide"):
        log_likelihood(m, x[:2], method="ais", num_steps=3, tune_step=2)


def test_non_finite_weights_text_matches_the_condition():
    from pyro_gen.evaluate.ais import _check_finite_weights
    from pyro_gen.evaluate.log_likelihood import NonFiniteWeightsError

    nan, ninf = float("nan"), float("-inf")
    ok = torch.tensor([[0.0, -1.0], [ninf, -2.0]], dtype=torch.float64)
    _check_finite_weights(ok, "AIS")  # one −inf chain of two: log p(x) is finite
    for lw, idx in (([[0.0, nan], [0.0, -1.0]], "[1]"), ([[ninf, 0.0], [ninf, 1.0]], "[0]")):
        with pytest.raises(NonFiniteWeightsError, match="NaN for some chain, or −inf for every"):
            _check_finite_weights(torch.tensor(lw, dtype=torch.float64), "AIS")
        with pytest.raises(NonFiniteWeightsError, match=re.escape(f"indices {idx}")):
            _check_finite_weights(torch.tensor(lw, dtype=torch.float64), "AIS")


def test_a_tuning_pass_without_transitions_keeps_the_initial_step_size(lg):
    make, x = lg
    r = ais(
        make(), x[:3], num_steps=5, num_chains=2, init_step_size=0.3, tune_steps=1, progress=False
    )
    torch.testing.assert_close(r.step_sizes, torch.full_like(r.step_sizes, 0.3))


def test_schedules_rise_from_zero_to_one():
    for kind in ("sigmoid", "linear", "geometric"):
        b = ais_schedule(50, kind)
        assert b.shape == (51,) and b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()
    s = ais_schedule(100, "sigmoid").diff()
    assert s[0] < s[50] and s[-1] < s[50]  # small steps at both ends
    g = ais_schedule(100, "geometric")
    torch.testing.assert_close(g[2] / g[1], g[99] / g[98])
    with pytest.raises(ConfigError, match="schedule"):
        ais_schedule(10, "cosine")


@pytest.mark.parametrize(
    "bad",
    [
        {"num_steps": 0},
        {"num_chains": 0},
        {"num_leapfrog": 0},
        {"target_accept": 1.0},
        {"schedule": torch.tensor([0.0, 0.7, 0.5, 1.0])},
        {"start": "posterior"},
        {"mass": "dense"},
        {"num_steps": 2.5},
        {"num_chains": 3.7},
        {"num_leapfrog": "3"},
        {"tune_steps": 1.5},
        {"batch_size": 0.5},
    ],
)
def test_bad_settings_are_config_errors(lg, bad):
    make, x = lg
    with pytest.raises(ConfigError):
        ais(make(guide="meanfield"), x[:2], progress=False, **{"num_steps": 5, **bad})


def test_a_custom_schedule_and_the_vae():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = (torch.rand(5, 6) > 0.5).float()
    betas = torch.linspace(0, 1, 11) ** 2
    r = ais(vae, x, schedule=betas, num_chains=3, num_leapfrog=2, progress=False)
    assert r.num_steps == 10 and r.log_px.shape == (5,) and torch.isfinite(r.log_px).all()
    assert {p.requires_grad for p in vae.parameters()} == {True}  # restored
    assert vae.training  # mode restored


def test_cli_evaluate_method_ais_writes_the_estimate_and_the_bdmc_gap(tmp_path, capsys):
    import json

    from pyro_gen.cli import main

    run = tmp_path / "run"
    tiny = [
        "--num-train", "64", "--num-valid", "16", "--num-test", "16", "--image-size", "16",
        "--epochs", "1", "--batch-size", "32", "--hidden", "16", "--latent-dim", "2",
        "--no-progress",
    ]  # fmt: skip
    assert main(["train", *tiny, "--out", str(run)]) == 0
    argv = ["evaluate", str(run), "--method", "ais", "--num-steps", "6", "--num-chains", "3"]
    argv += ["--num-leapfrog", "2", "--limit", "5", "--bdmc", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "by AIS (T=6, 3 chains, 2 leapfrog, sigmoid)" in out and "BDMC" in out
    saved = json.loads((run / "eval" / "ais.json").read_text())
    assert len(saved["log_px_per_datapoint"]) == 5 and len(saved["acceptance_per_step"]) == 5
    assert saved["log_px"] == pytest.approx(sum(saved["log_px_per_datapoint"]) / 5)
    summary = json.loads((run / "summary.json").read_text())["evaluate_ais"]
    assert summary["num_chains"] == 3 and summary["bdmc"]["num_steps"] == 6
    # one datapoint: no standard error over datapoints -> null in strict JSON, "± n/a" printed
    argv[argv.index("--limit") + 1] = "1"
    assert main([*argv, "--num-samples", "5", "--batch-size", "7"]) == 0
    out = capsys.readouterr().out
    assert "± n/a nats by AIS" in out and "gap" in out and "nan" not in out
    assert "--num-samples 5 is not used by --method ais" in out
    assert "--batch-size 7 is not used by --method ais" in out

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    for path in (run / "eval" / "ais.json", run / "summary.json"):
        saved = json.loads(path.read_text(), parse_constant=refuse)
    one = saved["evaluate_ais"]
    assert one["num_datapoints"] == 1 and one["log_px_se"] is None
    assert one["bdmc"]["gap_se"] is None and isinstance(one["log_px"], float)


# -- learned priors (a MixtureSameFamily p(z)) ----------------------------------------------------
def _learned_prior_vae(prior: str):
    from pyro_gen.models.priors import LearnedPriorVAE

    torch.manual_seed(3)
    m = LearnedPriorVAE(data_shape=(6,), latent_dim=2, hidden=(8,), prior=prior, num_components=3)
    # mog: the components' means start as N(0, I) draws, about 2 apart: a multimodal p(z)
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((16, 6), 0.4), generator=g)
    return m, x


def _quadrature_log_px(m, x: torch.Tensor, half_width: float = 9.0, n: int = 241):
    """log p(x) [N] of a 2-d latent model: p(z) p(x | z) summed on an n x n grid of z."""
    from pyro import poutine

    t = torch.linspace(-half_width, half_width, n)
    z = torch.cartesian_prod(t, t)  # [G, 2]
    G, N = z.shape[0], x.shape[0]
    zs, xs = z.repeat_interleave(N, 0), x.repeat(G, 1)  # row g·N + i
    with torch.no_grad():
        tr = poutine.trace(poutine.condition(m.model, data={"z": zs})).get_trace(xs)
        tr.compute_log_prob()
        lp = (tr.nodes["z"]["log_prob"] + tr.nodes["x"]["log_prob"]).double().reshape(G, N)
    return torch.logsumexp(lp, 0) + 2 * math.log(float(t[1] - t[0]))


@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_ais_on_a_mixture_prior_matches_quadrature_and_importance_sampling(prior):
    # p(z) is a DiagonalNormalMixture, whose support (MixtureSameFamilyConstraint) biject_to
    # cannot transform: AIS must use the components' support (real vectors)
    m, x = _learned_prior_vae(prior)
    exact = _quadrature_log_px(m, x)
    # the reference is right: a wider, finer grid agrees, and IS (a lower bound in
    # expectation; the untrained guide is poor for mog) is not above it
    torch.testing.assert_close(_quadrature_log_px(m, x, 12.0, 321), exact, rtol=0, atol=1e-3)
    is_est = log_likelihood(m, x, num_samples=20000)
    assert float((is_est - exact).mean()) < 0.01
    r = ais(m, x, num_steps=200, num_chains=16, num_leapfrog=4, seed=0, progress=False)
    assert torch.isfinite(r.log_px).all()
    _within_mc_error(r.log_px, exact)
    assert ((r.log_px - exact).abs() <= 4 * r.log_px_se + 0.05).all(), r.log_px - exact
    # no worse than importance sampling with 20000 draws (where the guide is poor, better)
    assert float((r.log_px - exact).abs().mean()) <= float((is_est - exact).abs().mean()) + 0.02


@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_bdmc_and_a_prior_start_run_on_a_mixture_prior(prior):
    from pyro_gen.evaluate.bdmc import bdmc

    m, x = _learned_prior_vae(prior)
    b = bdmc(m, x[:6], num_steps=20, num_chains=4, num_leapfrog=2, seed=0, progress=False)
    assert torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all()
    r = ais(m, x[:6], num_steps=20, num_chains=4, num_leapfrog=2, start="prior", progress=False)
    assert torch.isfinite(r.log_px).all()


def test_a_support_biject_to_cannot_map_is_a_config_error_naming_the_site():
    from torch.distributions import constraints

    class Anything(constraints.Constraint):  # no transform registered for it
        def check(self, value):
            return torch.ones_like(value, dtype=torch.bool)

    class Odd(dist.Normal):
        support = Anything()

    class M(nn.Module):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("w", Odd(x.new_zeros(x.shape[0]), 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("w", dist.Normal(x.new_zeros(x.shape[0]), 1.0))

    with pytest.raises(ConfigError, match="'w'.*biject_to"):
        ais(M(), torch.zeros(3), num_steps=5, num_chains=2, progress=False)
