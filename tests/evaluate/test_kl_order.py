"""The KL term of each latent site is its closed form only where that is the ELBO's term.

A two-layer linear-Gaussian model p(z2) p(z1 | z2) p(x | z1) with a bottom-up guide
q(z1 | x) q(z2 | z1): the guide draws z2 from z1, so KL(q(z1 | x) ‖ p(z1 | z2)) at that z2 is not
E_q[log q(z1) − log p(z1 | z2)] (it is off by a·d·t1²/s1² nats here), and the evaluators must
use the sampled log q − log p for z1. Its exact ELBO is a sum of Gaussian moments:

    z1 ~ N(m1 = c·x, t1²),  z2 = d·z1 + t2·ε,  x | z1 ~ N(b·z1, sx²),  z1 | z2 ~ N(a·z2, s1²)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.evaluate import diagnose, evaluate_elbo, pointwise_terms
from pyro_gen.evaluate.elbo import describe_kl, describe_parts
from pyro_gen.evaluate.terms import drawn_too_late, kl_estimate

A, B, SX, S1 = 2.0, 1.5, 0.7, 0.5  # model: z1 | z2 ~ N(A z2, S1²), x | z1 ~ N(B z1, SX²)
C, T1, D, T2 = 0.6, 1.0, 0.8, 0.6  # guide: z1 ~ N(C x, T1²), z2 | z1 ~ N(D z1, T2²)


class TwoLayer(nn.Module):
    """``order="bottom_up"``: the guide draws z1 then z2 | z1 (not the model's order);
    ``"top_down"``: z2 ~ N(D·C·x, T2²) then z1 ~ N(C·x, T1²) (the model's order)."""

    def __init__(self, order: str = "bottom_up"):
        super().__init__()
        self.order = order

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(A * z2, S1).to_event(1))
            pyro.sample("x", dist.Normal(B * z1, SX).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            if self.order == "bottom_up":
                z1 = pyro.sample("z1", dist.Normal(C * x, T1).to_event(1))
                pyro.sample("z2", dist.Normal(D * z1, T2).to_event(1))
            else:
                pyro.sample("z2", dist.Normal(D * C * x, T2).to_event(1))
                pyro.sample("z1", dist.Normal(C * x, T1).to_event(1))


def _log_normal_moment(sq: torch.Tensor, scale: float) -> torch.Tensor:
    """E log N(v; 0, scale²) given E v² = ``sq``."""
    return -0.5 * math.log(2 * math.pi * scale**2) - sq / (2 * scale**2)


def exact_elbo(x: torch.Tensor, order: str) -> torch.Tensor:
    """E_q[log p(x, z1, z2) − log q(z1, z2 | x)] per row ``[N]``, in closed form."""
    x = x.double().squeeze(-1)
    m1 = C * x
    e_z1sq = m1**2 + T1**2
    entropy = 0.5 * math.log(2 * math.pi * math.e * T1**2) + 0.5 * math.log(
        2 * math.pi * math.e * T2**2
    )
    if order == "bottom_up":  # z2 = D z1 + T2 ε: z1 − A z2 = (1 − A D) z1 − A T2 ε
        e_res = (1 - A * D) ** 2 * e_z1sq + A**2 * T2**2
        e_z2sq = D**2 * e_z1sq + T2**2
    else:  # z1, z2 independent under q: z2 ~ N(D m1, T2²)
        e_z2sq = (D * m1) ** 2 + T2**2
        e_res = e_z1sq - 2 * A * m1 * D * m1 + A**2 * e_z2sq
    rec = _log_normal_moment((x - B * m1) ** 2 + B**2 * T1**2, SX)
    return rec + _log_normal_moment(e_res, S1) + _log_normal_moment(e_z2sq, 1.0) + entropy


@pytest.fixture
def x():
    return torch.tensor([[-1.5], [-0.3], [0.4], [1.2], [2.0]])


@pytest.mark.parametrize("order", ["bottom_up", "top_down"])
def test_evaluate_elbo_is_the_exact_elbo_whatever_the_guides_order(x, order):
    r = evaluate_elbo(TwoLayer(order), x, num_particles=20000, seed=0)
    want = exact_elbo(x, order)
    # per-datapoint Monte-Carlo se is about 0.05 nats at 20000 draws; the closed-form KL of z1
    # at the guide's z2 would be off by A·D·T1²/S1² = 6.4 nats (bottom-up)
    torch.testing.assert_close(r.elbo.double(), want, atol=0.25, rtol=0)
    torch.testing.assert_close(r.elbo, r.reconstruction - r.kl, atol=1e-4, rtol=0)
    s = r.summary()
    if order == "bottom_up":
        assert s["kl_methods"] == {"z1": "sampled", "z2": "analytic"}
        assert s["kl_estimate"] == "mixed"
        assert "'z2'" in s["kl_why"]["z1"] and "z2" not in s["kl_why"]
    else:  # the model's order: every site keeps its closed form
        assert s["kl_methods"] == {"z2": "analytic", "z1": "analytic"}
        assert s["kl_estimate"] == "analytic" and "kl_why" not in s


def test_the_closed_form_at_the_guides_z2_would_be_biased(x):
    """What the evaluators must not report: KL(q(z1|x) ‖ p(z1|z2)) at z2 ~ q(z2|z1) is off by
    A·D·T1²/S1² per row, far outside Monte-Carlo error (so the test above can fail)."""
    torch.manual_seed(0)
    m1 = C * x.double().squeeze(-1)
    z1 = m1 + T1 * torch.randn(20000, x.shape[0], dtype=torch.float64)
    z2 = D * z1 + T2 * torch.randn_like(z1)
    kl_closed = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, T1), torch.distributions.Normal(A * z2, S1)
    ).mean(0)
    lq = torch.distributions.Normal(m1, T1).log_prob(z1)
    lp = torch.distributions.Normal(A * z2, S1).log_prob(z1)
    torch.testing.assert_close(
        kl_closed - (lq - lp).mean(0), torch.full_like(m1, 6.4), atol=0.3, rtol=0
    )


def test_drawn_too_late_names_the_model_parents_the_guide_draws_after(x):
    from pyro import poutine

    for order, want in (
        ("bottom_up", {"z1": ["z2"], "z2": []}),
        ("top_down", {"z2": [], "z1": []}),
    ):
        m = TwoLayer(order)
        g = poutine.trace(m.guide).get_trace(x)
        tr = poutine.trace(poutine.replay(m.model, trace=g)).get_trace(x)
        assert drawn_too_late(g, tr) == want
    t = pointwise_terms(TwoLayer().model, TwoLayer().guide, x, num_particles=3)
    assert t.kl_method == {"z1": "sampled", "z2": "analytic"}
    torch.testing.assert_close(t.kl, t.kl_per_site["z1"] + t.kl_per_site["z2"])
    t = pointwise_terms(TwoLayer("top_down").model, TwoLayer("top_down").guide, x)
    assert t.kl_method == {"z2": "analytic", "z1": "analytic"}


def test_diagnose_splits_a_bottom_up_guide_without_bias():
    x = torch.linspace(-2.0, 2.0, 100).unsqueeze(-1)  # many rows: the per-layer KL is a mean
    d = diagnose(TwoLayer(), x, num_samples=2000, seed=0)
    s = d.summary()
    want = exact_elbo(x, "bottom_up")
    torch.testing.assert_close(d.elbo.double(), want, atol=0.4, rtol=0)
    # z1's KL is sampled from the same draws as the ELBO: only z2's closed form differs
    split = d.reconstruction - d.kl
    torch.testing.assert_close(split.double(), want, atol=0.4, rtol=0)
    assert s["kl_methods"] == {"z1": "sampled", "z2": "analytic"}
    assert s["kl_estimate"] == "mixed"
    # z1's row of the per-layer table is its sampled KL (the closed form would be 6.4 nats more)
    xd = x.double().squeeze(-1)
    e_res = (1 - A * D) ** 2 * ((C * xd) ** 2 + T1**2) + A**2 * T2**2
    kl_z1 = -0.5 * math.log(2 * math.pi * math.e * T1**2) - _log_normal_moment(e_res, S1)
    assert abs(s["per_site"]["z1"]["kl"] - float(kl_z1.mean())) < 0.3
    assert abs(s["per_site"]["z1"]["kl"] + s["per_site"]["z2"]["kl"] - s["kl"]) < 0.3


def test_the_shipped_models_say_how_their_kl_was_computed():
    from pyro_gen.models import VAE
    from pyro_gen.models.priors import LearnedPriorVAE

    xb = torch.bernoulli(torch.full((8, 6), 0.4), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    vae = evaluate_elbo(VAE(data_shape=(6,), latent_dim=2, hidden=(8,)), xb).summary()
    assert vae["kl_estimate"] == "analytic" and vae["kl_methods"] == {"z": "analytic"}
    vamp = LearnedPriorVAE(data_shape=(6,), latent_dim=2, hidden=(8,), num_components=3)
    vamp = evaluate_elbo(vamp, xb).summary()
    assert vamp["kl_estimate"] == "sampled" and "no closed form" in vamp["kl_why"]["z"]
    from pyro_gen.models.vqvae import VQVAE

    xi = torch.bernoulli(
        torch.full((4, 1, 16, 16), 0.3), generator=torch.Generator().manual_seed(1)
    )
    vq = VQVAE(data_shape=(1, 16, 16), num_codes=8, code_dim=4, channels=(8, 8), prior="uniform")
    r = evaluate_elbo(vq.eval(), xi)
    assert r.kl_method == {"z": "point mass"}  # one code per position: KL = −log p(c), exact
    codes = 4 * 4  # two halvings of 16 x 16
    torch.testing.assert_close(r.kl, torch.full((4,), codes * math.log(8)), atol=1e-4, rtol=0)


def test_the_words_say_whether_the_kl_is_analytic_or_sampled():
    base = {"reconstruction": -10.0, "kl": -0.01}
    assert describe_parts({**base, "kl_estimate": "analytic"}) == "reconstruction -10.00 − KL -0.01"
    assert describe_parts({**base, "kl_estimate": "sampled"}).endswith(
        "KL -0.01 (Monte-Carlo estimate)"
    )
    mixed = {"kl_estimate": "mixed", "kl_methods": {"z2": "analytic", "z1": "sampled"}}
    assert describe_kl(mixed) == "KL analytic for z2, a Monte-Carlo estimate for z1"
    assert "point-mass" in describe_kl({"kl_estimate": "point mass"})
    assert kl_estimate({"a": "point mass", "b": "point mass"}) == "point mass"
    assert describe_parts(base) == "reconstruction -10.00 − KL -0.01"  # an older summary


def test_compare_and_evaluate_say_per_run_how_the_kl_was_computed():
    import csv
    import io

    from pyro_gen.evaluate import compare
    from pyro_gen.evaluate.elbo import describe_is_split
    from pyro_gen.models import VAE
    from pyro_gen.models.priors import LearnedPriorVAE

    xb = torch.bernoulli(torch.full((6, 6), 0.4), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    vamp = LearnedPriorVAE(data_shape=(6,), latent_dim=2, hidden=(8,), num_components=3)
    c = compare({"vae": vae, "vamp": vamp}, xb, num_samples=5)
    md = c.to_markdown()
    assert "KL is analytic" not in md
    assert "analytic for vae" in md
    assert "a Monte-Carlo estimate (log q − log p at the draws) for vamp" in md
    by = {r["model"]: r for r in csv.DictReader(io.StringIO(c.to_csv()))}
    assert by["vae"]["kl_estimate"] == "analytic" and by["vamp"]["kl_estimate"] == "sampled"
    # a KL sampled from the K draws adds up to their mean log-weight exactly: '=', not '≈'
    s = c.diagnostics["vamp"].summary()
    assert abs(s["reconstruction"] - s["kl"] - s["elbo"]) < 1e-4
    assert describe_is_split(s).startswith("= reconstruction")
    assert describe_is_split(s).endswith("(Monte-Carlo estimate)")
    assert describe_is_split(c.diagnostics["vae"].summary()).startswith("≈ reconstruction")


def test_the_report_says_a_sampled_kl_is_one_and_adds_up_exactly():
    from pyro_gen.report.builtin import _elbo_sentence

    diag = {"elbo": -10.0, "elbo_se": 0.1, "reconstruction": -9.99, "kl": 0.01, "log_px": -9.5}
    sampled = _elbo_sentence({**diag, "kl_estimate": "sampled"})
    assert "= reconstruction -9.99 − KL 0.01 (Monte-Carlo KL estimate)" in sampled
    assert "≈" not in sampled
    analytic = _elbo_sentence({**diag, "kl_estimate": "analytic"})
    assert "≈ reconstruction" in analytic and "Monte-Carlo KL estimate" not in analytic


@pytest.mark.parametrize("order", ["bottom_up", "top_down"])
def test_meanfield_training_loss_is_the_exact_elbo_whatever_the_guides_order(x, order):
    """``elbo="meanfield"`` trains on the same objective: the closed form only where it is the
    ELBO's term (a bottom-up guide's z1 is sampled), so its loss is −ELBO, not 32 nats off."""
    from pyro_gen.infer.objectives import ELBOS

    m = TwoLayer(order)
    elbo = ELBOS["meanfield"](num_particles=20000, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(0)
    loss = float(elbo.differentiable_loss(m.model, m.guide, x))
    assert loss == pytest.approx(-float(exact_elbo(x, order).sum()), abs=0.6)
