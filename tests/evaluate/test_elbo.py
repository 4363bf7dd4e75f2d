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


# -- conditional models: the observed attributes' log p(y) is a part of its own --------------------
def _cvae(beta: float = 1.0):
    from pyro_gen.models import CVAE

    torch.manual_seed(0)
    return CVAE(
        data_shape=(1, 4, 4),
        latent_dim=2,
        hidden=(8,),
        beta=beta,
        attributes=[
            {"name": "shape", "kind": "categorical", "values": ["a", "b", "c"]},
            {"name": "size", "kind": "continuous", "loc": 1.0, "scale": 2.0},
        ],
    )


def _cvae_batch():
    x = torch.bernoulli(torch.full((7, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(1))
    return x, {"shape": torch.tensor([0, 1, 2, 0, 1, 2, 0]), "size": torch.arange(7.0) - 1}


def test_cvae_elbo_splits_into_x_term_attribute_term_and_kl():
    """ELBO = E log p(x|z,y) + log p(y) − KL: log p(y) is −log 3 for the uniform class and the
    Normal(1, 2) density of each size, apart from the reconstruction; the parts add up to the
    ELBO exactly, and x-term + y-term is the old all-sites 'reconstruction'."""
    import math

    from pyro_gen.evaluate import pointwise_terms

    model = _cvae()
    x, y = _cvae_batch()
    r = evaluate_elbo(model, x, num_particles=3, batch_size=3, seed=0, **y)  # 3 chunks
    torch.testing.assert_close(r.attributes_per_site["shape"], torch.full((7,), -math.log(3)))
    size = torch.distributions.Normal(1.0, 2.0).log_prob(y["size"])
    torch.testing.assert_close(r.attributes_per_site["size"], size)
    torch.testing.assert_close(r.attributes_log_prob, size - math.log(3))
    assert torch.equal(r.elbo, r.reconstruction + r.attributes_log_prob - r.kl)
    s = r.summary()
    assert s["bound_on"] == "log p(x, shape, size)"
    assert abs(s["elbo"] - (s["reconstruction"] + s["attributes_log_prob"] - s["kl"])) < 1e-4
    assert set(s["attributes_per_site"]) == {"shape", "size"}
    # the same draws: the x term plus the attribute term is every observed site's log p
    model.eval()
    torch.manual_seed(0)
    t = pointwise_terms(
        model.model, model.guide, x[:3], num_particles=3, **{k: v[:3] for k, v in y.items()}
    )
    torch.testing.assert_close(
        t.log_lik_per_site["x"] + sum(v for k, v in t.log_lik_per_site.items() if k != "x"),
        t.log_lik,
    )
    assert set(t.log_lik_per_site) == {"x", "shape", "size"}


def test_cvae_reconstruction_is_the_x_site_only():
    """β = 0 (a point mass at g(x, y)): the reconstruction is log p(x | z = g(x, y), y) of the
    decoder exactly, with no log p(y) in it."""
    model = _cvae(beta=0.0).eval()
    x, y = _cvae_batch()
    with torch.no_grad():
        loc, _ = model.encode(x, **y)
        expected = model.likelihood(model.decoder(loc, model.encode_attributes(y))).log_prob(x)
    r = evaluate_elbo(model, x, **y)
    torch.testing.assert_close(r.reconstruction, expected)
    assert torch.equal(r.elbo, r.reconstruction + r.attributes_log_prob - r.kl)
    assert "observed attributes" in r.note


def test_unlabelled_rows_add_no_attribute_term_and_vae_summary_unchanged():
    """An SSVAE batch without labels bounds log p(x): no attribute keys; with labels on some
    rows (none in the middle chunk) the label site is −log K on those rows and 0 elsewhere."""
    import math

    from pyro_gen.models import SSVAE

    torch.manual_seed(0)
    m = SSVAE(data_shape=(1, 4, 4), num_classes=4, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(2))
    s = evaluate_elbo(m, x).summary()
    assert "attributes_log_prob" not in s and "bound_on" not in s
    observed = torch.tensor([True, False, False, False, True, False])
    r = evaluate_elbo(m, x, batch_size=2, y=torch.tensor([1, 0, 0, 0, 3, 0]), observed=observed)
    torch.testing.assert_close(r.attributes_per_site["y"], -math.log(4) * observed.float())
    assert torch.equal(r.elbo, r.reconstruction + r.attributes_log_prob - r.kl)
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    assert set(evaluate_elbo(vae, _data()).summary()) == {
        "elbo",
        "elbo_se",
        "reconstruction",
        "kl",
        "kl_estimate",  # how the KL was computed: "analytic" here (kl_methods: per site)
        "kl_methods",
        "num_datapoints",
        "num_particles",
    }


def test_diagnose_splits_a_conditional_models_reconstruction_like_evaluate_elbo():
    """diagnose (importance sampling) reports the same three parts as evaluate_elbo: the x
    site's reconstruction, log p(y) of the observed attributes (the exact closed form here, as
    it does not depend on z) and the KL."""
    import math

    from pyro_gen.evaluate import diagnose

    model = _cvae()
    x, y = _cvae_batch()
    d = diagnose(model, x, num_samples=50, batch_size=3, **y)
    size = torch.distributions.Normal(1.0, 2.0).log_prob(y["size"]).double()
    torch.testing.assert_close(d.attributes_log_prob, size - math.log(3))
    assert d.attribute_sites == ["shape", "size"]
    s = d.summary()
    assert s["attribute_sites"] == ["shape", "size"]
    # the parts add up to the IS ELBO (the analytic KL against the K draws': MC error only)
    parts = d.reconstruction + d.attributes_log_prob - d.kl
    assert float((parts - d.elbo).abs().max()) < 1.0
    r = evaluate_elbo(model, x, num_particles=50, **y)
    assert abs(s["reconstruction"] - float(r.reconstruction.mean())) < 1.0
    # a VAE has no attribute sites: nothing added
    from pyro_gen.models import VAE

    vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    sv = diagnose(vae, x, num_samples=5).summary()
    assert "attributes_log_prob" not in sv and "attribute_sites" not in sv
