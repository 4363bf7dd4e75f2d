"""The device-resident ELBOs give Pyro's loss and gradients bit for bit, without host syncs."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pyro_gen.infer import make_elbo
from pyro_gen.infer.objectives import DeviceTrace_ELBO, DeviceTraceMeanField_ELBO
from pyro_gen.models import VAE


class Mixed(nn.Module):
    """A reparameterised Normal and a score-function Bernoulli latent, both under "data"."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 3)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            c = pyro.sample("c", dist.Bernoulli(x.new_tensor(0.3)))
            loc = z.sum(-1, keepdim=True) + c.unsqueeze(-1)
            pyro.sample("x", dist.Normal(loc.expand(x.shape), 1.0).to_event(1), obs=x)

    def guide(self, x):
        h = self.net(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[..., :2], h[..., 2:3].exp()).to_event(1))
            pyro.sample("c", dist.Bernoulli(logits=h[..., 2]))


def _loss_and_grads(elbo, module, x, seed=1):
    module.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        loss = elbo.differentiable_loss(module.model, module.guide, x)
    loss.backward()
    return loss.detach().clone(), [p.grad.clone() for p in module.parameters()]


def _vae():
    pyro.set_rng_seed(0)
    return VAE(data_shape=(6,), latent_dim=3, hidden=(8,))


CASES = [
    (Trace_ELBO, DeviceTrace_ELBO, _vae, 1),
    (Trace_ELBO, DeviceTrace_ELBO, _vae, 3),
    (TraceMeanField_ELBO, DeviceTraceMeanField_ELBO, _vae, 1),
    (TraceMeanField_ELBO, DeviceTraceMeanField_ELBO, _vae, 4),
    (Trace_ELBO, DeviceTrace_ELBO, Mixed, 1),
]


def _case(build, particles: int):
    """(module, data, ELBO keyword arguments) of one case."""
    torch.manual_seed(0)
    module = build()
    x = torch.bernoulli(torch.full((5, 6 if build is _vae else 4), 0.4))
    kw = {"num_particles": particles}
    if particles > 1:
        kw.update(vectorize_particles=True, max_plate_nesting=1)
    return module, x, kw


@pytest.mark.parametrize("pyro_cls, ours_cls, build, particles", CASES)
def test_loss_and_gradients_are_pyros_bit_for_bit(pyro_cls, ours_cls, build, particles):
    module, x, kw = _case(build, particles)
    ref_loss, ref_grads = _loss_and_grads(pyro_cls(**kw), module, x)
    loss, grads = _loss_and_grads(ours_cls(**kw), module, x)
    assert loss.dtype == ref_loss.dtype and torch.equal(loss, ref_loss)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["trace", "meanfield"])
def test_no_host_synchronisation_in_the_loss(name, monkeypatch):
    vae = _vae()
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    elbo = make_elbo(name)

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation (.item()/bool()/float()) in the loss")

    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for attr in ("item", "__bool__", "__float__", "tolist"):
            monkeypatch.setattr(torch.Tensor, attr, refuse)
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
        monkeypatch.undo()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("pyro_cls, ours_cls, build, particles", CASES)
def test_surrogate_value_mode_keeps_gradients_bit_for_bit(pyro_cls, ours_cls, build, particles):
    """exact_value=False: the surrogate's own float32 sum is the value where it is the ELBO; the
    gradients stay Pyro's bit for bit, and a score-function site keeps Pyro's exact value."""
    module, x, kw = _case(build, particles)
    ref_loss, ref_grads = _loss_and_grads(pyro_cls(**kw), module, x)
    fast = ours_cls(**kw)
    fast.exact_value = False
    loss, grads = _loss_and_grads(fast, module, x)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)
    if build is Mixed:  # a Bernoulli latent without reparameterisation: the value stays exact
        assert torch.equal(loss, ref_loss)
    else:
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)


# -- meanfield on guide sites without rsample ----------------------------------------------------
def _vqvae():
    from pyro_gen.models.vqvae import VQVAE

    torch.manual_seed(0)
    return VQVAE(
        data_shape=(1, 16, 16), num_codes=8, code_dim=4, channels=(8, 8), prior_hidden=(16,)
    )


@pytest.mark.parametrize("name", ["meanfield", "jit_meanfield"])
def test_meanfield_on_a_point_mass_guide_is_the_sampled_elbo(name):
    # the VQ-VAE's guide is a one-hot Categorical (no rsample: entropy_term is the int 0) and
    # its MADE prior has no closed-form KL, so meanfield falls back to the sampled estimate;
    # q is a point mass (log q = 0, no parameters), so its loss and gradient are trace's
    from pyro_gen.infer import Trainer

    x = torch.bernoulli(
        torch.full((20, 1, 16, 16), 0.3), generator=torch.Generator().manual_seed(0)
    )
    module = _vqvae()
    trace_loss, trace_grads = _loss_and_grads(make_elbo("trace"), module, x[:5])
    if name == "meanfield":
        loss, grads = _loss_and_grads(make_elbo("meanfield"), module, x[:5])
        assert torch.equal(loss, trace_loss)
        for a, b in zip(grads, trace_grads):
            torch.testing.assert_close(a, b)
    histories = {}
    for elbo in ("trace", name):
        t = Trainer(_vqvae(), elbo=elbo, batch_size=10, max_steps=2, progress=False, seed=0)
        histories[elbo] = [r["loss"] for r in t.fit(x) if r["loss"] != ""]
    assert histories[name] and all(torch.isfinite(torch.tensor(histories[name])))
    torch.testing.assert_close(histories[name], histories["trace"], rtol=1e-5, atol=1e-4)


class TrainedBernoulliGuide(nn.Module):
    """A Bernoulli latent whose guide has trained logits (no rsample); ``fixed``: its guide
    has no parameters."""

    def __init__(self, fixed: bool = False) -> None:
        super().__init__()
        self.enc, self.dec, self.fixed = nn.Linear(4, 2), nn.Linear(2, 4), fixed

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(x.new_full((x.shape[0], 2), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(c), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            logits = x.new_zeros(x.shape[0], 2) if self.fixed else self.enc(x)
            pyro.sample("c", dist.Bernoulli(logits=logits).to_event(1))


@pytest.mark.parametrize("name", ["meanfield", "jit_meanfield"])
def test_meanfield_refuses_a_trained_guide_site_without_rsample(name):
    # meanfield has no score-function term: the encoder would get no gradient from the
    # reconstruction term, silently
    from pyro_gen.errors import ConfigError
    from pyro_gen.infer import Trainer

    x = torch.randn(16, 4)
    with pytest.raises(ConfigError, match=r"'c' \(Bernoulli in Independent\).*--elbo trace"):
        Trainer(TrainedBernoulliGuide(), elbo=name, batch_size=8, max_steps=1, progress=False).fit(
            x
        )
    Trainer(TrainedBernoulliGuide(), elbo="trace", batch_size=8, max_steps=1, progress=False).fit(
        x
    )  # the score-function objective takes it
    t = Trainer(
        TrainedBernoulliGuide(fixed=True), elbo=name, batch_size=8, max_steps=1, progress=False
    )
    t.fit(x)  # a guide without parameters: nothing is missing from the gradient
