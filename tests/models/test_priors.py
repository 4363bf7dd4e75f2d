"""Learned priors: the mixture and VampPrior densities, the VAE with them, and the contract."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import log_likelihood
from pyro_gen.models import MODELS, VAE
from pyro_gen.models.priors import LearnedPriorVAE
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
