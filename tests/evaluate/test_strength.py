"""Tests that pin the numbers the evaluators report, each against a closed form or an identity,
so that a wrong constant, sign, axis or threshold fails (found by planting such bugs and by
mutation testing of pyro_gen/evaluate)."""

from __future__ import annotations

import importlib
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import (
    Diagnostics,
    diagnose,
    evaluate_elbo,
    log_likelihood,
    pareto_khat,
    pointwise_terms,
)
from pyro_gen.evaluate.diagnostics import PSIS_MIN_SAMPLES, import_arviz
from pyro_gen.evaluate.log_likelihood import NonFiniteWeightsError, importance_chunks
from pyro_gen.evaluate.terms import TraceSiteError
from pyro_gen.models.pair import as_pair


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


# -- Pareto k̂ at its edges ---------------------------------------------------------------------
def test_pareto_khat_is_arviz_psis_with_independent_draws():
    # the particles are independent draws: relative efficiency 1 sets the tail length 3√K
    g = torch.Generator().manual_seed(2)
    lw = -0.7 * torch.rand(400, 6, generator=g, dtype=torch.float64).log()
    _, ref = import_arviz().psislw(lw.T.numpy().copy(), reff=1.0)
    k = pareto_khat(lw)
    assert k.dtype == torch.float64
    torch.testing.assert_close(k, torch.as_tensor(ref, dtype=torch.float64), rtol=0, atol=1e-12)


def test_pareto_khat_needs_exactly_psis_min_samples():
    g = torch.Generator().manual_seed(3)
    lw = -0.5 * torch.rand(PSIS_MIN_SAMPLES, 4, generator=g, dtype=torch.float64).log()
    assert torch.isfinite(pareto_khat(lw)).all()  # K = 21 is enough
    short = pareto_khat(lw[:-1])
    assert short.shape == (4,) and short.dtype == torch.float64 and torch.isnan(short).all()


def test_only_equal_weights_get_a_zero_khat():
    # bounded weights (log-weights spread over less than one nat) have a short tail: k̂ < 0,
    # which must be reported as such, not rounded to the 'equal weights' 0
    g = torch.Generator().manual_seed(4)
    lw = 0.9 * torch.rand(1000, 3, generator=g, dtype=torch.float64)
    assert (pareto_khat(lw) < -0.1).all()
    assert (pareto_khat(1e-5 * lw) == 0).all()  # spread 1e-5 nats: the weights are equal


# -- active units and flags at their edges -----------------------------------------------------
def _diagnostics(posterior_mean, khat, **kw):
    n, d = posterior_mean.shape
    z = torch.zeros(n, dtype=torch.float64)
    return Diagnostics(
        log_px=z,
        elbo=z,
        reconstruction=z,
        kl=z,
        ess=z + 1,
        khat=khat,
        kl_per_dim=torch.zeros(n, d, dtype=torch.float64),
        kl_names=[f"z[{i}]" for i in range(d)],
        posterior_mean=posterior_mean,
        mean_names=[f"z[{i}]" for i in range(d)],
        num_samples=1,
        **kw,
    )


def test_the_thresholds_are_strict_inequalities():
    # Burda et al.: active iff Cov > threshold; Vehtari et al.: unreliable iff k̂ > 0.7
    mean = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)  # variances 0.5 and 2
    d = _diagnostics(mean, torch.tensor([0.5, 0.75], dtype=torch.float64), au_threshold=0.5)
    torch.testing.assert_close(d.au_variance, torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert d.active.tolist() == [False, True] and d.active_units == 1
    assert d.unreliable.tolist() == [False, True]
    d = _diagnostics(mean, torch.tensor([0.7, 0.7001], dtype=torch.float64), khat_threshold=0.7)
    assert d.unreliable.tolist() == [False, True]
    assert d.summary()["khat_num_unreliable"] == 1


def test_active_units_need_two_datapoints_and_count_a_single_latent():
    one = _diagnostics(torch.tensor([[0.3, 4.0, -1.0]]), torch.zeros(1))
    v = one.au_variance
    assert v.shape == (3,) and v.dtype == torch.float64 and torch.isnan(v).all()
    assert one.active_units == 0 and one.summary()["latent_dims"] == 3
    two = _diagnostics(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.1, 2.0]]), torch.zeros(2))
    torch.testing.assert_close(two.au_variance, torch.tensor([0.5, 0.005, 2.0]).double())
    assert two.active.tolist() == [True, False, True]
    single = _diagnostics(torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None], torch.zeros(5))
    assert single.au_variance.shape == (1,) and single.active_units == 1  # variance 0.625


# -- log_likelihood's arguments reach the computation -------------------------------------------
class _Conjugate(nn.Module):
    """z ~ N(0, 1), x | z ~ N(z + y, 1) with a per-datapoint keyword y (and an optional
    log-factor b); the guide is the exact posterior N((x − y) / 2, 1/2), so every importance
    weight equals p(x) = N(x; y, 2) · e^b. ``scale`` (a plain number) is 1 here."""

    def __init__(self):
        super().__init__()
        self.register_buffer("unit", torch.ones((), dtype=torch.float64))

    def model(self, x, y, b=None, scale=1.0):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), self.unit))
            pyro.sample("x", dist.Normal(z + y, scale * self.unit), obs=x)
            if b is not None:  # log p(x) + b: a per-datapoint log-factor
                pyro.factor("b", b)

    def guide(self, x, y, b=None, scale=1.0):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x - y) / 2, 0.5**0.5 * scale * self.unit))

    @staticmethod
    def exact(x, y, b=None, scale=1.0):
        log_px = dist.Normal(y, 2**0.5 * scale).log_prob(x)
        return log_px if b is None else log_px + b


def test_model_guide_module_forms_and_keywords_reach_the_estimate():
    g = torch.Generator().manual_seed(5)
    x = 3 * torch.randn(11, generator=g, dtype=torch.float64)
    y = torch.randn(11, generator=g, dtype=torch.float64)
    exact = dist.Normal(y, 2**0.5).log_prob(x)
    m = _Conjugate()
    forms = [
        {"model": m},
        {"model": m.model, "guide": m.guide},  # bound methods: the module is their owner
        {  # plain functions: the module must be given
            "model": lambda x, **kw: m.model(x, **kw),
            "guide": lambda x, **kw: m.guide(x, **kw),
            "module": m,
        },
    ]
    for form in forms:
        model = form.pop("model")
        form["scale"] = 1.0  # a keyword that is not a tensor passes through as it is
        log_px = log_likelihood(model, x, y=y, num_samples=5, batch_size=4, max_rows=7, **form)
        torch.testing.assert_close(log_px, exact, rtol=0, atol=1e-9)
        d = diagnose(model, x, y=y, num_samples=5, batch_size=4, **form)
        torch.testing.assert_close(d.log_px, exact, rtol=0, atol=1e-9)
        torch.testing.assert_close(d.gap, torch.zeros_like(exact), rtol=0, atol=1e-9)


def test_log_likelihood_and_diagnose_agree_when_the_particles_are_chunked(lg):
    # the draws depend on how the particles are cut into model calls: log_likelihood and
    # diagnose pass max_rows to the same sampler, so with one chunk of datapoints they agree
    # exactly, and differ from another max_rows
    make, x = lg
    m = make(guide="meanfield", widen=1.3)
    a = log_likelihood(m, x, num_samples=16, max_rows=50, seed=5)
    b = diagnose(m, x, num_samples=16, max_rows=50, seed=5).log_px
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, log_likelihood(m, x, num_samples=16, seed=5))


def test_log_likelihood_and_diagnose_agree_over_chunks_of_datapoints(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.3)
    a = log_likelihood(m, x, num_samples=16, batch_size=3, seed=5)
    b = diagnose(m, x, num_samples=16, batch_size=3, seed=5).log_px
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_each_model_call_stays_within_batch_size_and_max_rows(lg, monkeypatch):
    # the documented memory bound: batch_size datapoints at a time, at most max_rows
    # datapoint x particle rows per model call
    ll = importlib.import_module("pyro_gen.evaluate.log_likelihood")
    calls = []
    real = ll.pointwise_terms

    def spy(model, guide, xs, *, num_particles=1, max_rows=65536, **kw):
        calls.append((xs.shape[0], num_particles, max_rows))
        return real(model, guide, xs, num_particles=num_particles, max_rows=max_rows, **kw)

    monkeypatch.setattr(ll, "pointwise_terms", spy)
    make, x = lg
    m = make(guide="meanfield")
    for f in (log_likelihood, lambda *a, **k: diagnose(*a, **k).log_px):
        calls.clear()
        log_px = f(m, x, num_samples=9, batch_size=6, max_rows=13)
        assert log_px.shape == (20,)
        assert all(n * k <= 13 and mr == 13 for n, k, mr in calls), calls
        # 20 datapoints in chunks of 6, 6, 6, 2, each chunk given all K = 9 particles
        assert sorted({n for n, _, _ in calls}) == [2, 6]
        assert sum(k for n, k, _ in calls if n == 6) == 3 * 9
        assert sum(k for n, k, _ in calls if n == 2) == 9
        # fewer rows than datapoints: one particle per call (the terms split the datapoints)
        calls.clear()
        f(m, x, num_samples=3, batch_size=6, max_rows=4)
        assert all(mr == 4 and (k == 1 if n > 4 else n * k <= 4) for n, k, mr in calls), calls
        assert sum(k for n, k, _ in calls if n == 6) == 3 * 3


def test_defaults_are_1000_particles_and_seed_0(lg):
    make, x = lg
    m = make(guide="meanfield", widen=1.3)
    log_px, lw = log_likelihood(m, x, return_weights=True)
    assert lw.shape == (1000, 20)
    torch.testing.assert_close(log_px, log_likelihood(m, x, num_samples=1000, seed=0))
    d = diagnose(m, x)
    assert d.num_samples == 1000
    torch.testing.assert_close(d.log_px, log_px, rtol=0, atol=0)


def test_importance_chunks_checks_its_arguments_and_keeps_no_weights_unless_asked(lg):
    make, x = lg
    pair = as_pair(make(guide="meanfield"))
    chunk = next(importance_chunks(pair, x, 5))
    assert chunk.log_weights is None and (chunk.start, chunk.stop) == (0, 20)
    with pytest.raises(ConfigError, match=r"num_samples \(K\) must be >= 1; got 0"):
        next(importance_chunks(pair, x, 0))
    for bs, mr in ((0, 10), (10, 0)):
        with pytest.raises(
            ConfigError, match=rf"batch_size and max_rows must be >= 1; got {bs}, {mr}"
        ):
            next(importance_chunks(pair, x, 5, batch_size=bs, max_rows=mr))


# -- non-finite weights are reported by datapoint and by term ----------------------------------
def _flawed_data(which: str):
    """14 datapoints of the conjugate model; rows 9 and 12 (past the rows any pre-check runs
    on, in the 4th and 5th chunk of 3) get a NaN offset or an infinite log-factor."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(14, generator=g, dtype=torch.float64)
    y = torch.zeros(14, dtype=torch.float64)
    b = torch.zeros(14, dtype=torch.float64)
    bad = {"nan": float("nan"), "+inf": float("inf"), "-inf": -float("inf")}[which]
    (y if which == "nan" else b)[[9, 12]] = bad
    return x, {"y": y, "b": b}


def test_a_log_factor_counts_in_log_px():
    x, kw = _flawed_data("+inf")
    kw["b"] = torch.linspace(-2, 3, 14, dtype=torch.float64)
    log_px = log_likelihood(_Conjugate(), x, num_samples=3, batch_size=3, **kw)
    torch.testing.assert_close(log_px, _Conjugate.exact(x, **kw), rtol=0, atol=1e-9)


def test_nan_weights_name_the_datapoints_and_the_terms():
    x, kw = _flawed_data("nan")
    with pytest.raises(NonFiniteWeightsError) as info:
        log_likelihood(_Conjugate(), x, num_samples=4, batch_size=3, **kw)
    msg = str(info.value)
    assert "2 datapoint(s), indices [9, 12]" in msg and "rows from 12 on" in msg
    assert "log p(x|z) is NaN; log p(z) is NaN; log q(z|x) is NaN" in msg


def test_an_infinite_weight_names_only_its_datapoints():
    x, kw = _flawed_data("+inf")
    with pytest.raises(NonFiniteWeightsError) as info:
        log_likelihood(_Conjugate(), x, num_samples=4, batch_size=3, **kw)
    msg = str(info.value)
    assert "2 datapoint(s), indices [9, 12]" in msg and "rows from 12 on" in msg
    assert "log p(x|z) is infinite" in msg and "log p(z)" not in msg


def test_zero_weights_name_the_datapoints():
    x, kw = _flawed_data("-inf")
    with pytest.raises(NonFiniteWeightsError) as info:
        log_likelihood(_Conjugate(), x, num_samples=4, batch_size=3, max_rows=5, **kw)
    msg = str(info.value)
    assert "2 datapoint(s), indices [9, 12]" in msg and "rows from 12 on" in msg
    assert "every particle has weight 0" in msg


# -- pointwise_terms: keywords, particle paths, and the site named in each error ----------------
def test_pointwise_terms_split_keywords_with_the_datapoints():
    # n x K = 33 rows > max_rows = 4: one datapoint per call, its own y (a tensor keyword with
    # N rows); a 0-dim tensor and None pass through unsplit
    g = torch.Generator().manual_seed(7)
    x = 3 * torch.randn(11, generator=g, dtype=torch.float64)
    y = torch.randn(11, generator=g, dtype=torch.float64)
    m = _Conjugate()
    scale = torch.tensor(1.0, dtype=torch.float64)
    for vectorize in (True, False):
        t = pointwise_terms(
            m.model, m.guide, x, num_particles=3, max_rows=4, vectorize=vectorize,
            y=y, b=None, scale=scale,
        )  # fmt: skip
        exact = _Conjugate.exact(x, y)
        torch.testing.assert_close(t.log_weight, exact.expand(3, 11), rtol=0, atol=1e-9)
    assert pointwise_terms(m.model, m.guide, x, y=y).log_weight.shape == (1, 11)  # K = 1
    with pytest.raises(ValueError, match="num_particles must be >= 1; got 0"):
        pointwise_terms(m.model, m.guide, x, num_particles=0, y=y)


@pytest.mark.parametrize("K", [2, 5])
def test_particles_are_vectorized_unless_asked_not_to(K):
    # vectorize=True (the default): the guide sees the N datapoints once, the K particles on an
    # outer plate; vectorize=False: the datapoints repeated K times
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, generator=g, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.float64)
    m, rows = _Conjugate(), []

    def guide(x, **kw):
        rows.append(x.shape[0])
        m.guide(x, **kw)

    pointwise_terms(m.model, guide, x, num_particles=K, y=y)
    assert set(rows) <= {1, 6} and rows[-1] == 6  # (one datapoint: how many plates it uses)
    rows.clear()
    pointwise_terms(m.model, guide, x, num_particles=K, y=y, vectorize=False)
    assert rows == [K * 6]


def test_errors_name_the_site_and_whether_it_is_in_the_model_or_the_guide():
    def model(x, w_in_plate=True):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        if not w_in_plate:
            pyro.sample("w", dist.Normal(0.0, 1.0))  # a model-only latent outside the plate

    def guide(x, w_in_plate=True):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.7))

    def guide_outside(x, w_in_plate=True):
        pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))

    def guide_extra(x, w_in_plate=True):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.7))
            pyro.sample("u", dist.Normal(torch.zeros_like(x), 1.0))

    def model_z_outside(x, w_in_plate=True):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.zeros(4)
    for vectorize in (True, False):
        cases = [
            (model, guide_outside, {}, r"^guide site 'z' is not inside pyro.plate\('data'\)"),
            (model_z_outside, guide, {}, r"^model site 'z' is not inside pyro.plate\('data'\)"),
            (model, guide, {"w_in_plate": False}, r"^model site 'w' is not inside"),
            (model, guide_extra, {}, r"^guide site 'u' has no counterpart in the model"),
        ]
        for mdl, gd, kw, msg in cases:
            with pytest.raises(TraceSiteError, match=msg):
                pointwise_terms(mdl, gd, x, num_particles=3, vectorize=vectorize, **kw)


def test_enumerated_sites_are_named_with_their_program():
    def model(x, enum_in="guide"):
        with pyro.plate("data", x.shape[0]):
            infer = {"enumerate": "parallel"} if enum_in == "model" else {}
            c = pyro.sample("c", dist.Bernoulli(0.5 * torch.ones_like(x)), infer=infer)
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x, enum_in="guide"):
        if enum_in == "guide":
            with pyro.plate("data", x.shape[0]):
                p = 0.5 * torch.ones_like(x)
                pyro.sample("c", dist.Bernoulli(p), infer={"enumerate": "parallel"})

    x = torch.zeros(3)
    with pytest.raises(TraceSiteError, match=r"^guide site 'c' is enumerated"):
        pointwise_terms(model, guide, x, num_particles=2, vectorize=False)
    with pytest.raises(TraceSiteError, match=r"^model site 'c' is enumerated"):
        pointwise_terms(model, guide, x, num_particles=2, vectorize=False, enum_in="model")


def test_pointwise_terms_keep_the_tables_on_the_data_device():
    m = _Conjugate().to("meta")
    x = torch.zeros(3, device="meta", dtype=torch.float64)
    with pyro.validation_enabled(False):
        t = pointwise_terms(m.model, m.guide, x, num_particles=2, y=torch.zeros_like(x))
    assert t.log_weight.device.type == "meta" and t.log_weight.shape == (2, 3)
