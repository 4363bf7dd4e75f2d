"""models.sampling: the generator convention and the shared sample/reconstruct of the
one-decoder models (VAE, LearnedPriorVAE, HierarchicalVAE)."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.models import VAE
from pyro_gen.models.hvae import HierarchicalVAE
from pyro_gen.models.priors import LearnedPriorVAE
from pyro_gen.models.sampling import DecoderSampling, make_generator


def test_make_generator_prefers_the_generator_then_the_seed():
    g = torch.Generator().manual_seed(7)
    assert make_generator(3, g, "cpu") is g  # a given generator wins over a seed
    assert make_generator(None, None, "cpu") is None  # the global random state
    a, b = make_generator(3, None, "cpu"), make_generator(3.0, None, "cpu")
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    expected = torch.rand(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(4, generator=make_generator(3, None, "cpu")), expected)


def _models():
    torch.manual_seed(0)
    return [
        VAE(data_shape=(6,), latent_dim=2, hidden=(8,)),
        HierarchicalVAE(data_shape=(6,), latent_dims=(3, 2), hidden=(8,), hidden_top=(4,)),
        LearnedPriorVAE(data_shape=(6,), latent_dim=2, hidden=(8,), num_components=3, prior="mog"),
    ]


@pytest.mark.parametrize("model", _models(), ids=["vae", "hvae", "mog"])
def test_sample_is_the_decoder_at_sample_latent_with_one_generator(model):
    assert isinstance(model, DecoderSampling)
    # mean=True: exactly the likelihood's mean at the z that sample_latent draws with the seed
    z = model.sample_latent(5, torch.Generator().manual_seed(4))
    expected = model.likelihood.mean(model.decoder(z))
    assert torch.equal(model.sample(5, seed=4, mean=True), expected)
    # a draw of x continues the same generator after z (binary x for the Bernoulli likelihood)
    g = torch.Generator().manual_seed(4)
    x = model.sample(5, generator=g)
    assert x.shape == (5, 6) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(model.sample(5, seed=4), x)
    with pytest.raises(ConfigError, match="must be >= 1; got 0"):
        model.sample(0)


@pytest.mark.parametrize("model", _models(), ids=["vae", "hvae", "mog"])
def test_reconstruct_decodes_the_guide_mean(model):
    x = torch.rand(3, 6).round()
    z = model.encode(x)[0]
    expected = model.likelihood.mean(model.decoder(z))
    assert torch.allclose(model.reconstruct(x), expected)
    assert not model.reconstruct(x).requires_grad  # no graph kept


def test_the_learned_prior_draws_z_near_its_components():
    m = LearnedPriorVAE(data_shape=(6,), latent_dim=2, hidden=(8,), num_components=2, prior="mog")
    with torch.no_grad():
        m.prior_net.loc.copy_(torch.tensor([[-50.0, 0.0], [50.0, 0.0]]))
        m.prior_net.log_scale.fill_(-5.0)
        m.prior_net.logits.copy_(torch.tensor([0.0, -100.0]))  # all weight on the first
    z = m.sample_latent(100, torch.Generator().manual_seed(0))
    assert torch.allclose(z, torch.tensor([-50.0, 0.0]).expand(100, 2), atol=0.05)
