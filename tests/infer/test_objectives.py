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
