"""The per-datapoint IWAE bound and its DReG gradient, against closed forms and Pyro's ELBOs."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO
from pyro.nn import PyroModule
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.infer import Trainer
from pyro_gen.infer.handlers import ScaleData, ScaleLatents
from pyro_gen.infer.iwae import IWAE_ELBO
from pyro_gen.infer.objectives import IWAE_ELBOS, make_elbo
from pyro_gen.models import VAE


class LinearGaussian(PyroModule):
    """z ~ N(0, I_d), x | z ~ N(W z + b, σ² I_D); a deliberately poor guide N(A x + c_n, s²)
    with one offset c_n per datapoint (so each datapoint's gradient is its own sample)."""

    def __init__(self, n: int, d: int = 2, D: int = 3, sigma: float = 0.5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W = nn.Parameter(torch.randn(D, d, generator=g))
        self.b = nn.Parameter(0.1 * torch.randn(D, generator=g))
        self.sigma = sigma
        self.A = nn.Parameter(0.1 * torch.randn(d, D, generator=g))
        self.c = nn.Parameter(torch.full((n, d), 0.3))
        self.log_s = nn.Parameter(torch.full((d,), math.log(0.6)))
        self.d = d

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = x @ self.A.T + self.c
            pyro.sample("z", dist.Normal(loc, self.log_s.exp()).to_event(1))

    def log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0])
        return dist.MultivariateNormal(self.b, cov).log_prob(x)


def _data(n: int, D: int = 3) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(2))


def test_registered_by_name():
    assert set(IWAE_ELBOS) == {"iwae", "iwae_dreg"}
    assert isinstance(make_elbo("iwae", 5), IWAE_ELBO) and make_elbo("iwae_dreg", 5).dreg


def test_k1_equals_the_elbo_value_and_gradient_on_the_same_draws():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((7, 6), 0.4))
    with pyro.settings.context(module_local_params=True):
        pyro.set_rng_seed(3)
        ref = make_elbo("trace").differentiable_loss(vae.model, vae.guide, x)
        ref.backward()
        ref_grads = [p.grad.clone() for p in vae.parameters()]
        vae.zero_grad()
        pyro.set_rng_seed(3)
        loss = IWAE_ELBO(1, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
    assert torch.allclose(loss, ref, atol=1e-4)
    for g, r in zip((p.grad for p in vae.parameters()), ref_grads):
        assert torch.allclose(g, r, atol=1e-5)


def test_bound_increases_with_k_towards_the_exact_log_likelihood():
    n = 1000
    m, x = LinearGaussian(n), _data(n)
    exact = float(m.log_px(x).mean().detach())
    with torch.no_grad():
        means = [
            float(IWAE_ELBO(k).pointwise_bound(m.model, m.guide, x).mean()) for k in (1, 5, 50)
        ]
    assert means[0] + 0.3 < means[1] < means[2] - 0.1
    assert means[2] < exact + 0.05  # a lower bound (on average over 1000 points)
    assert exact - means[2] < 0.5 * (exact - means[0])


def test_renyi_alpha0_is_per_datapoint_only_while_every_site_shares_the_data_plate():
    """Pyro's RenyiELBO(alpha=0) sums log-weights over the plates *not common to all sites*
    (``get_dependent_plate_dims``): with every site under "data" that is our per-datapoint
    bound, but one site outside the plate (here a factor of 0, which changes no density)
    turns it into the batch's bound log mean_k Π_n w_kn."""
    n, k = 50, 8
    m, x = LinearGaussian(n), _data(n)

    def model_with_a_global_zero(x):
        pyro.factor("zero", torch.tensor(0.0))
        m.model(x)

    def renyi(model):
        pyro.set_rng_seed(4)
        elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
        return elbo.loss(model, m.guide, x)

    with torch.no_grad():
        pyro.set_rng_seed(4)
        lw = IWAE_ELBO(k, max_plate_nesting=1).log_weights(m.model, m.guide, x)  # [k, n]
        pyro.set_rng_seed(4)
        iwae = float(IWAE_ELBO(k, max_plate_nesting=1).differentiable_loss(m.model, m.guide, x))
        same, batch_level = renyi(m.model), renyi(model_with_a_global_zero)
    per_point = -(torch.logsumexp(lw, 0) - math.log(k)).sum()
    batch = -(torch.logsumexp(lw.sum(1), 0) - math.log(k))
    assert iwae == pytest.approx(float(per_point), abs=1e-3)
    assert same == pytest.approx(iwae, abs=1e-2)
    assert batch_level == pytest.approx(float(batch), abs=1e-2)
    assert batch_level - iwae > 5.0  # the batch's bound is much looser on the same draws


def test_data_scale_multiplies_and_beta_weights_the_latent_terms():
    m, x = LinearGaussian(20), _data(20)
    elbo = IWAE_ELBO(1, max_plate_nesting=1)
    with torch.no_grad():
        pyro.set_rng_seed(5)
        base = elbo.differentiable_loss(m.model, m.guide, x)
        pyro.set_rng_seed(5)
        scaled = elbo.differentiable_loss(ScaleData(3.0)(m.model), ScaleData(3.0)(m.guide), x)
        pyro.set_rng_seed(5)
        lw = elbo.log_weights(m.model, m.guide, x)
        pyro.set_rng_seed(5)
        half = elbo.log_weights(ScaleLatents(0.5)(m.model), ScaleLatents(0.5)(m.guide), x)
        pyro.set_rng_seed(5)
        tr = pyro.poutine.trace(m.guide).get_trace(x)
    assert float(scaled) == pytest.approx(3.0 * float(base), rel=1e-5)
    z = tr.nodes["z"]["value"]
    log_lik = dist.Normal(z @ m.W.T + m.b, m.sigma).to_event(1).log_prob(x)
    assert torch.allclose(half[0], log_lik + 0.5 * (lw[0] - log_lik), atol=1e-4)


def _grads(m, x, dreg: bool, k: int):
    with pyro.settings.context(module_local_params=True):
        m.zero_grad()
        IWAE_ELBO(k, max_plate_nesting=1, dreg=dreg, module=m).differentiable_loss(
            m.model, m.guide, x
        ).backward()
    return {name: p.grad.clone() for name, p in m.named_parameters()}


def test_dreg_same_value_same_model_gradient_and_same_mean_lower_variance_for_the_guide():
    n, k = 2000, 10
    m = LinearGaussian(n)
    x = _data(1).expand(n, -1).contiguous()  # one datapoint, n independent gradient draws
    pyro.set_rng_seed(6)
    with torch.no_grad():
        v_iwae = IWAE_ELBO(k, max_plate_nesting=1).differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(6)
    with torch.no_grad():
        v_dreg = IWAE_ELBO(k, max_plate_nesting=1, dreg=True, module=m).differentiable_loss(
            m.model, m.guide, x
        )
    assert float(v_iwae) == pytest.approx(float(v_dreg), rel=1e-6)
    pyro.set_rng_seed(7)
    g_iwae = _grads(m, x, False, k)
    pyro.set_rng_seed(7)
    g_dreg = _grads(m, x, True, k)
    for name in ("W", "b"):  # the model's gradient is IWAE's on the same draws
        assert torch.allclose(g_iwae[name], g_dreg[name], rtol=1e-4, atol=1e-4), name
    a, b = g_iwae["c"], g_dreg["c"]  # [n, d]: one gradient sample of c_n per datapoint
    se = ((a.var(0) + b.var(0)) / n).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all()
    assert (b.var(0) < 0.5 * a.var(0)).all()


def test_dreg_needs_the_guides_module():
    m, x = LinearGaussian(4), _data(4)

    def guide(x):
        return m.guide(x)

    with pytest.raises(ConfigError, match="module"):
        IWAE_ELBO(2, dreg=True).differentiable_loss(m.model, guide, x)
    # a bound method's owner is found
    IWAE_ELBO(2, dreg=True).differentiable_loss(m.model, m.guide, x)


def test_refuses_global_latents_and_non_reparameterised_guides():
    x = torch.randn(5, 2)

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).expand([2]).to_event(1), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match="global"):
        IWAE_ELBO(3).differentiable_loss(model, guide, x)

    def model_b(x):
        with pyro.plate("data", x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(b.unsqueeze(-1), 1.0).expand([5, 2]).to_event(1), obs=x)

    def guide_b(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(0.3))

    with pytest.raises(ConfigError, match="rsample"):
        IWAE_ELBO(3).differentiable_loss(model_b, guide_b, x)


@pytest.mark.parametrize("elbo", ["iwae", "iwae_dreg"])
def test_trainer_trains_a_vae_with_it(elbo):
    x = torch.bernoulli(torch.full((64, 1, 4, 4), 0.3))
    vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(16,))
    trainer = Trainer(
        vae,
        elbo=elbo,
        num_particles=5,
        batch_size=16,
        epochs=2,
        progress=False,
        lr=1e-2,
        capture="off",  # capturing costs seconds; the trainer's capture tests cover it
    )
    history = trainer.fit(x, x[:16])
    losses = [r["loss"] for r in history if r["loss"] != ""]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_dreg_detaches_every_name_of_a_tied_parameter_and_restores_them():
    from pyro_gen.infer.iwae import _at_detached_parameters

    m = nn.Module()
    m.a, m.b = nn.Linear(2, 2), nn.Linear(2, 2)
    m.b.weight = m.a.weight  # tied: named_parameters() lists it once, as "a.weight"
    x = torch.ones(1, 2, requires_grad=True)
    out = _at_detached_parameters(m, lambda: (m.a(x) + m.b(x)).sum())
    (grad_x,) = torch.autograd.grad(out, x, retain_graph=True)
    assert torch.equal(grad_x, (2 * m.a.weight).sum(0, keepdim=True).detach())  # through x
    # no path into the weight under either of its names (the b.weight alias included)
    assert torch.autograd.grad(out, [m.a.weight], allow_unused=True) == (None,)
    assert isinstance(m.a.weight, nn.Parameter) and m.b.weight is m.a.weight  # restored


class Flattening(PyroModule):
    """A VAE whose decoder output is reshaped with ``reshape(-1, *data_shape)``: right for one
    particle, but it folds a leading particle dim into the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(4, 4), nn.Linear(2, 4)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            logits = self.dec(z).reshape(-1, 1, 2, 2)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x.flatten(1))
            pyro.sample("z", dist.Normal(h[..., :2], h[..., 2:].exp()).to_event(1))


@pytest.mark.parametrize(("elbo", "k"), [("iwae", 4), ("iwae_dreg", 3), ("trace", 4)])
def test_a_program_that_flattens_the_particle_dim_is_refused_before_training(elbo, k, tmp_path):
    x = torch.bernoulli(torch.full((24, 1, 2, 2), 0.4))
    run = tmp_path / "run"
    t = Trainer(Flattening(), elbo=elbo, num_particles=k, batch_size=8, max_steps=2, run_dir=run)
    with pytest.raises(ConfigError, match=r"reshape\(-1, \*data_shape\).*elbo='trace' with num_"):
        t.fit(x)
    assert not run.exists()  # refused in the checks, before anything is written
    # the same program trains with one particle; the pointwise bound says the same thing
    Trainer(Flattening(), elbo="trace", batch_size=8, max_steps=2, progress=False).fit(x)
    with pytest.raises(ConfigError, match=rf"k = {k} particles.*\({k} x 8 draws"):
        IWAE_ELBO(k).pointwise_bound(Flattening().model, Flattening().guide, x[:8])


def test_iwae_at_one_particle_says_it_is_the_elbo():
    x = torch.bernoulli(torch.full((16, 1, 4, 4), 0.3))
    vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    with pytest.warns(UserWarning, match="num_particles=1.*plain ELBO.*--num-particles k"):
        Trainer(vae, elbo="iwae", batch_size=8, max_steps=1, progress=False).fit(x)


@pytest.mark.parametrize("model", ["autoencoder", "made"])
def test_iwae_on_a_guide_without_random_draws_says_the_particles_are_copies(model):
    from pyro_gen.models import MODELS

    x = torch.bernoulli(torch.full((16, 1, 4, 4), 0.3))
    if model == "autoencoder":  # beta = 0: a point-mass (Delta) guide
        m = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), beta=0.0)
        match = "only point masses"
    else:  # no latent at all
        m = MODELS["made"](data_shape=(1, 4, 4), hidden=(8,))
        match = "draws no latent"
    with pytest.warns(UserWarning, match=match + ".*3 times the cost"):
        Trainer(m, elbo="iwae", num_particles=3, batch_size=8, max_steps=1, progress=False).fit(x)


def test_iwae_refusal_names_the_distribution_inside_and_the_fix_for_a_point_mass_code():
    x = torch.randn(5, 2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3)).expand([5, 2]).to_event(1))
            pyro.sample("x", dist.Normal(c.float(), 1.0).to_event(1), obs=x)

    def one_hot_guide(x):  # all the mass on code 1, as a VQ-VAE's nearest code
        probs = torch.tensor([0.0, 1.0, 0.0]).expand(5, 2, 3)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(probs=probs).to_event(1))

    def spread_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(5, 2, 3)).to_event(1))

    with pytest.raises(ConfigError, match=r"\(Categorical\).*point mass.*elbo='trace'"):
        IWAE_ELBO(3).differentiable_loss(model, one_hot_guide, x)
    with pytest.raises(ConfigError, match=r"\(Categorical\).*elbo='enum'"):
        IWAE_ELBO(3).differentiable_loss(model, spread_guide, x)
