"""evaluate_elbo: the split ELBO = reconstruction − KL, and an honest flag for β = 0."""

from __future__ import annotations

import torch

from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.models import VAE


def _data() -> torch.Tensor:
    return torch.bernoulli(torch.full((40, 6), 0.4), generator=torch.Generator().manual_seed(0))


def test_elbo_is_reconstruction_minus_kl_and_a_bound():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    r = evaluate_elbo(vae, _data(), num_particles=3)
    assert r.is_bound and "note" not in r.summary()
    assert torch.allclose(r.elbo, r.reconstruction - r.kl, atol=1e-5)
    assert (r.kl > 0).all()


def test_beta_zero_is_flagged_as_reconstruction_only():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,), beta=0.0)
    r = evaluate_elbo(vae, _data())
    s = r.summary()
    assert not r.is_bound and s["is_bound"] is False
    assert "reconstruction term only" in s["note"] and "'z'" in s["note"]
    assert torch.equal(r.kl, torch.zeros_like(r.kl))
    assert torch.equal(r.elbo, r.reconstruction)


def test_beta_zero_reconstruction_is_log_p_x_given_the_code():
    """A point mass at g(x): the 'ELBO' is log p(x | z = g(x)) exactly, whatever the prior."""
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,), beta=0.0)
    x = _data()
    with torch.no_grad():
        loc, _ = vae.encode(x)
        expected = vae.likelihood(vae.decoder(loc)).log_prob(x)
    r = evaluate_elbo(vae, x, num_particles=2, batch_size=7)
    torch.testing.assert_close(r.reconstruction, expected)
    torch.testing.assert_close(r.elbo, expected)
