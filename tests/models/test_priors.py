"""Learned priors: the mixture and VampPrior densities, the VAE with them, and the contract."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import log_likelihood
from pyro_gen.models import MODELS, VAE
from pyro_gen.models.priors import DiagonalNormalMixture, LearnedPriorVAE
from tests.contract import ModelContract
from tests.models.test_contract_vae import binary


def test_registered_with_mnist_defaults():
    assert MODELS["vamp_vae"] is LearnedPriorVAE
    m = LearnedPriorVAE()
    assert m.latent_dim == 50 and m.data_shape == (1, 28, 28) and m.prior_kind == "vamp"


def test_mixture_log_density_is_the_logsumexp_of_its_components():
    m = LearnedPriorVAE(data_shape=(5,), latent_dim=3, hidden=(8,), prior="mog", num_components=4)
    with torch.no_grad():
        m.prior_net.logits.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
        m.prior_net.log_scale.normal_()
    z = torch.randn(7, 3)
    p = m.prior_net
    w = torch.log_softmax(p.logits, 0)
    comp = torch.distributions.Normal(p.loc, p.log_scale.exp())
    expected = torch.logsumexp(w + comp.log_prob(z[:, None, :]).sum(-1), -1)
    torch.testing.assert_close(m.prior().log_prob(z), expected)


def _mixtures(loc, scale, logits):
    comp = dist.Normal(loc, scale).to_event(1)
    cat = dist.Categorical(logits=logits)
    return DiagonalNormalMixture(cat, comp), dist.MixtureSameFamily(cat, comp)


@pytest.mark.parametrize("scale_lo", [1.0, 1e-2])
def test_diagonal_mixture_matches_mixture_same_family_values_and_gradients(scale_lo):
    """The matrix-product log density is MixtureSameFamily's (computed in float64 as the
    truth): far and near z, small scales (where the expanded terms are ~1e5 and cancel),
    sample and plate dims, and gradients."""
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(30, 50, generator=g)
    scale = scale_lo + torch.rand(30, 50, generator=g)
    logits = torch.randn(30, generator=g)
    near = loc[torch.arange(8) % 30] + scale_lo * torch.randn(8, 50, generator=g)
    z = torch.cat([3 * torch.randn(8, 50, generator=g), near])  # [16, 50]

    def value_and_grads(cls, double: bool):
        params = [t.double() if double else t.clone() for t in (loc, scale, logits)]
        params = [t.requires_grad_() for t in params]
        comp = dist.Normal(params[0], params[1]).to_event(1)
        mix = cls(dist.Categorical(logits=params[2]), comp)
        d = mix.log_prob(z.double() if double else z)
        return [d, *torch.autograd.grad(d.sum(), params)]

    truth = value_and_grads(dist.MixtureSameFamily, True)
    fast = value_and_grads(DiagonalNormalMixture, False)
    slow = value_and_grads(dist.MixtureSameFamily, False)
    for t, f, s in zip(truth, fast, slow):  # value, d/dloc, d/dscale, d/dlogits
        err_fast = (f.double() - t).abs().max()
        err_slow = (s.double() - t).abs().max()
        # at least as accurate as MixtureSameFamily's float32 broadcast
        assert err_fast <= max(err_slow, 1e-6 * t.abs().max()), (err_fast, err_slow)
    # a plate expands the batch shape, particles add dims on the left: shapes broadcast alike
    fast, slow = _mixtures(loc, scale, logits)
    fast_b, slow_b = fast.expand([16]), slow.expand([16])
    assert isinstance(fast_b, DiagonalNormalMixture)
    zz = z.expand(4, 16, 50)
    torch.testing.assert_close(fast_b.log_prob(zz), slow_b.log_prob(zz), rtol=1e-5, atol=1e-3)


def test_diagonal_mixture_falls_back_for_batched_components():
    loc, scale = torch.randn(3, 4, 2), torch.rand(3, 4, 2) + 0.5  # three different mixtures
    fast, slow = _mixtures(loc, scale, torch.zeros(3, 4))
    z = torch.randn(5, 3, 2)
    torch.testing.assert_close(fast.log_prob(z), slow.log_prob(z))


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_learned_priors_use_the_matrix_product_density(prior):
    m = LearnedPriorVAE(data_shape=(5,), latent_dim=2, hidden=(8,), prior=prior, num_components=3)
    assert isinstance(m.prior(), DiagonalNormalMixture)


def test_vamp_prior_is_the_mean_of_the_encoders_posteriors_at_the_pseudo_inputs():
    m = LearnedPriorVAE(data_shape=(5,), latent_dim=2, hidden=(8,), num_components=3)
    with torch.no_grad():
        m.prior_net.pseudo_inputs.copy_(torch.tensor([[-0.5, 0.2, 0.9, 1.7, 0.4]] * 3))
        m.prior_net.pseudo_inputs[1] += 0.3
    u = m.prior_net.inputs().detach()
    assert float(u.min()) >= 0 and float(u.max()) <= 1  # hardtanh(0, 1)
    z = torch.randn(6, 2)
    loc, scale = m.encoder(u)
    logq = torch.distributions.Normal(loc, scale).log_prob(z[:, None, :]).sum(-1)  # [6, K]
    expected = torch.logsumexp(logq, -1) - math.log(3)
    torch.testing.assert_close(m.prior().log_prob(z), expected)


def test_standard_prior_is_the_plain_vae():
    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    same = LearnedPriorVAE(data_shape=(6,), latent_dim=2, hidden=(8,), prior="standard")
    same.load_state_dict(vae.state_dict(), strict=False)
    x = binary(10, (6,))["x"]
    a = log_likelihood(vae, x, num_samples=20, seed=0)
    b = log_likelihood(same, x, num_samples=20, seed=0)
    torch.testing.assert_close(a, b)


def test_unknown_prior_is_a_config_error():
    with pytest.raises(ConfigError, match="vamp"):
        LearnedPriorVAE(data_shape=(4,), prior="vampp")


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_samples_come_from_the_learned_prior(prior):
    m = LearnedPriorVAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), prior=prior)
    a, b = m.sample(5, seed=1), m.sample(5, seed=1)
    assert a.shape == (5, 1, 4, 4) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


class TestVampPriorVAE(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        return LearnedPriorVAE(data_shape=(12,), latent_dim=3, hidden=(16,), num_components=5)

    def make_data(self):
        return binary(self.num_data, (12,))


@pytest.mark.slow  # the same program as the VampPrior's, with another p(z)
class TestMixturePriorVAE(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return LearnedPriorVAE(
            data_shape=(12,), latent_dim=3, hidden=(16,), prior="mog", num_components=4
        )

    def make_data(self):
        return binary(self.num_data, (12,))


def test_num_components_with_the_standard_prior_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="no effect with prior='standard'"):
        LearnedPriorVAE(
            data_shape=(5,), latent_dim=2, hidden=(8,), prior="standard", num_components=7
        )
    LearnedPriorVAE(data_shape=(5,), latent_dim=2, hidden=(8,), prior="standard")  # the default
