"""BDMC: forward and reverse AIS sandwich the closed-form log p(x), and the gap closes with T."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate.bdmc import bdmc, choose_num_steps, simulate
from pyro_gen.models import VAE
from pyro_gen.models.pair import as_pair


def test_the_sandwich_holds_and_its_gap_closes_as_the_schedule_grows(lg):
    make, x = lg
    m = make(guide="meanfield", widen=3.0, shift=0.7)
    settings = dict(num_chains=8, num_leapfrog=4, progress=False)
    short = bdmc(m, x, num_steps=4, **settings)
    long = bdmc(m, x, num_steps=100, **settings)
    # the same simulated data (same seed), where the exact log p(x) is known
    torch.testing.assert_close(short.x, long.x)
    exact = m.exact_log_px(long.x)
    for r in (short, long):
        n = r.gap.numel()
        se_lo = float((r.lower - exact).std()) / math.sqrt(n)
        se_up = float((r.upper - exact).std()) / math.sqrt(n)
        assert float((r.lower - exact).mean()) <= 3 * se_lo + 0.01  # a lower bound
        assert float((r.upper - exact).mean()) >= -3 * se_up - 0.01  # an upper bound
    assert short.mean_gap > 0.5  # the short schedule leaves a visible gap ...
    assert -0.2 < long.mean_gap < min(0.3, short.mean_gap / 4)  # ... that closes
    assert abs(float((long.lower - exact).mean())) < 0.1
    s = long.summary()
    assert s["gap"] == pytest.approx(long.mean_gap) and s["num_steps"] == 100
    assert long.reverse_log_weights.shape == (8, 20) and long.reverse_acceptance.shape == (99,)


def test_simulate_draws_x_and_the_latents_from_the_model(lg):
    make, x = lg
    m = make()
    torch.manual_seed(0)
    xs, z = simulate(as_pair(m), x)
    assert xs.shape == x.shape and set(z) == {"z"} and z["z"].shape == (20, 2)
    # x | z ~ N(W z + b, σ²): the residuals have the likelihood's scale
    resid = xs - (z["z"] @ m.W.T + m.b)
    assert 0.35 < float(resid.std()) < 0.65
    with pytest.raises(ConfigError, match="no sample site 'pixels'"):
        simulate(as_pair(m), x, site="pixels")


def test_choose_num_steps_stops_at_the_first_length_within_tolerance(lg):
    make, x = lg
    m = make(guide="meanfield", widen=3.0, shift=0.7)
    settings = dict(num_chains=4, num_leapfrog=3, progress=False)
    T, rows = choose_num_steps(m, x[:6], (100, 2), tolerance=0.5, **settings)
    assert T == 100 and [r["num_steps"] for r in rows] == [2, 100]
    assert rows[0]["gap"] > 0.5 >= rows[1]["gap"]
    T, rows = choose_num_steps(m, x[:6], (2,), tolerance=1e-6, **settings)
    assert T is None and len(rows) == 1


def test_bdmc_on_a_vae():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.zeros(4, 6)
    r = bdmc(vae, x, num_steps=10, num_chains=3, num_leapfrog=2, progress=False)
    assert set(r.x.unique().tolist()) <= {0.0, 1.0}  # simulated binary data, not x
    assert torch.isfinite(r.gap).all() and r.gap.shape == (4,)


def test_a_gap_below_zero_beyond_its_error_is_flagged_and_not_converged(lg, monkeypatch):
    import dataclasses
    import sys

    make, x = lg
    m = make(guide="exact")  # forward AIS from the exact posterior: lower = log p(x) exactly
    settings = dict(num_steps=3, num_chains=2, num_leapfrog=2, progress=False)
    r = bdmc(m, x[:6], **settings)
    assert not r.negative_gap and r.summary()["negative_gap"] is False
    assert "warning" not in r.summary()
    # an upper bound 1 nat below the lower one on every datapoint (spread 0.1): flagged
    spread = torch.tensor([0.0, 0.1, -0.1, 0.05, -0.05, 0.0], dtype=torch.float64)
    bad = dataclasses.replace(r, upper=r.lower - 1.0 + spread)
    assert bad.negative_gap and bad.gap_se == pytest.approx(float(spread.std()) / math.sqrt(6))
    s = bad.summary()
    assert s["negative_gap"] is True and "increase num_chains" in s["warning"]
    # within 2 standard errors of zero: not flagged
    assert not dataclasses.replace(r, upper=r.lower - 0.01 + spread).negative_gap
    # one datapoint: no error to judge by, not flagged
    assert not dataclasses.replace(bad, lower=bad.lower[:1], upper=bad.upper[:1]).negative_gap

    # choose_num_steps does not take a negative gap (which is <= any tolerance) as converged
    module = sys.modules["pyro_gen.evaluate.bdmc"]
    good = dataclasses.replace(r, upper=r.lower + 0.2 + spread)
    fake = lambda m, x, num_steps, **kw: bad if num_steps < 50 else good  # noqa: E731
    monkeypatch.setattr(module, "bdmc", fake)
    T, rows = choose_num_steps(m, x[:6], (10, 100), tolerance=0.5)
    assert T == 100 and [row["negative_gap"] for row in rows] == [True, False]
