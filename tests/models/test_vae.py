"""The VAE as a Pyro model/guide pair: sites, shapes, β, subsampling, input checks, sampling."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions as td
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyro_gen.models.vae as vae_module
from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.infer import Trainer
from pyro_gen.infer.handlers import ScaleLatents
from pyro_gen.models import VAE
from pyro_gen.nn import MLPDecoder

IMAGE = (1, 8, 8)


def binary(n: int, shape=IMAGE, p: float = 0.3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *shape), p), generator=g)


def traces(vae: VAE, x: torch.Tensor, **kwargs):
    """(guide trace, model trace replayed on it)."""
    guide_tr = poutine.trace(vae.guide).get_trace(x, **kwargs)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, **kwargs)
    return guide_tr, model_tr


# -- sites and shapes -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data_shape, network",
    [((12,), "mlp"), ((1, 8, 8), "mlp"), ((1, 8, 8), "conv"), ((3, 10, 6), "conv")],
)
def test_site_names_and_shapes(data_shape, network):
    n, latent = 5, 3
    vae = VAE(
        data_shape=data_shape, latent_dim=latent, network=network, hidden=(16,), channels=(4, 8)
    )
    x = binary(n, data_shape)
    guide_tr, model_tr = traces(vae, x)

    guide_sites = [k for k, s in guide_tr.nodes.items() if s["type"] == "sample"]
    model_sites = [k for k, s in model_tr.nodes.items() if s["type"] == "sample"]
    assert guide_sites == ["data", "z"]
    assert model_sites == ["data", "z", "x"]

    z_q, z_p, obs = guide_tr.nodes["z"], model_tr.nodes["z"], model_tr.nodes["x"]
    for site in (z_q, z_p):
        assert site["fn"].batch_shape == (n,)
        assert site["fn"].event_shape == (latent,)
        assert site["value"].shape == (n, latent)
        assert not site["is_observed"]
    assert obs["is_observed"]
    assert obs["fn"].batch_shape == (n,)
    assert obs["fn"].event_shape == data_shape
    assert torch.equal(obs["value"], x)
    for site in (z_q, z_p, obs):
        frames = [(f.name, f.size, f.dim) for f in site["cond_indep_stack"]]
        assert frames == [("data", n, -1)]
    model_tr.compute_log_prob()
    assert model_tr.nodes["x"]["log_prob"].shape == (n,)


def test_conv_needs_image_shaped_data():
    with pytest.raises(ShapeError, match=r"\[C, H, W\]"):
        VAE(data_shape=(64,), latent_dim=2, network="conv")


# -- subsampling ----------------------------------------------------------------------------------
def test_subsample_scales_log_likelihood_by_n_over_b():
    n, b = 12, 4
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    x = binary(n)
    pyro.set_rng_seed(3)
    guide_tr, model_tr = traces(vae, x, subsample_size=b)
    idx = guide_tr.nodes["data"]["value"]
    assert idx.shape == (b,) and len(set(idx.tolist())) == b
    site = model_tr.nodes["x"]
    assert site["scale"] == pytest.approx(n / b)
    assert torch.equal(site["value"], x[idx])
    model_tr.compute_log_prob()
    assert torch.allclose(site["log_prob_sum"], n / b * site["unscaled_log_prob"].sum())

    # the whole objective, by hand, on the same noise
    loss = Trace_ELBO().differentiable_loss(
        vae.model, poutine.replay(vae.guide, trace=guide_tr), x, subsample_size=b
    )
    z = guide_tr.nodes["z"]["value"]
    with torch.no_grad():
        loc, scale = vae.encoder(x[idx])
        log_lik = td.Bernoulli(logits=vae.decoder(z)).log_prob(x[idx]).sum()
        log_p = td.Normal(0.0, 1.0).log_prob(z).sum()
        log_q = td.Normal(loc, scale).log_prob(z).sum()
    expected = -(n / b) * (log_lik + log_p - log_q)
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)


# -- β --------------------------------------------------------------------------------------------
def beta_pair(vae: VAE, beta: float):
    """Model and guide under the objective's β (what SVIStep runs)."""
    return ScaleLatents(beta)(vae.model), ScaleLatents(beta)(vae.guide)


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_beta_scales_exactly_the_kl_term(beta):
    vae = VAE(data_shape=IMAGE, latent_dim=3, hidden=(16,), beta=beta)
    x = binary(6)
    pyro.set_rng_seed(7)
    model, guide = beta_pair(vae, beta)
    guide_tr = poutine.trace(guide).get_trace(x)
    loss = Trace_ELBO().differentiable_loss(model, poutine.replay(guide, trace=guide_tr), x)

    z = guide_tr.nodes["z"]["value"]
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        log_lik = td.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum()
        log_p = td.Normal(0.0, 1.0).log_prob(z).sum()
        log_q = td.Normal(loc, scale).log_prob(z).sum()
    expected = -(log_lik - beta * (log_q - log_p))
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    # and the β-free part is not scaled: changing β moves the loss by Δβ · (log q − log p)
    model, guide = beta_pair(vae, 1.0)
    loss_1 = Trace_ELBO().differentiable_loss(model, poutine.replay(guide, trace=guide_tr), x)
    assert (loss - loss_1).item() == pytest.approx(float((beta - 1) * (log_q - log_p)), abs=1e-3)


def test_beta_scales_the_analytic_kl_of_meanfield_elbo():
    beta = 2.5
    vae = VAE(data_shape=IMAGE, latent_dim=3, hidden=(16,), beta=beta)
    x = binary(6)
    pyro.set_rng_seed(11)
    model, guide = beta_pair(vae, beta)
    guide_tr = poutine.trace(guide).get_trace(x)
    loss = TraceMeanField_ELBO().differentiable_loss(
        model, poutine.replay(guide, trace=guide_tr), x
    )
    z = guide_tr.nodes["z"]["value"]
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        log_lik = td.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum()
        kl = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).sum()
    assert loss.item() == pytest.approx(float(-(log_lik - beta * kl)), rel=1e-5)


def test_beta_zero_is_a_plain_autoencoder():
    vae = VAE(data_shape=IMAGE, latent_dim=3, hidden=(16,), beta=0.0)
    x = binary(6)
    losses = []
    model, guide = beta_pair(vae, 0.0)
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        guide_tr = poutine.trace(guide).get_trace(x)
        site = guide_tr.nodes["z"]["fn"]
        base = site.base_dist if isinstance(site, dist.Independent) else site
        assert isinstance(base, dist.Delta)
        losses.append(Trace_ELBO().differentiable_loss(model, guide, x).item())
    with torch.no_grad():
        loc, _ = vae.encoder(x)
        assert torch.equal(guide_tr.nodes["z"]["value"], loc)
        recon = td.Bernoulli(logits=vae.decoder(loc)).log_prob(x).sum()
    assert losses[0] == losses[1]  # no noise at all
    assert losses[0] == pytest.approx(float(-recon), rel=1e-5)


@pytest.mark.parametrize("bad", [-1.0, -1e-3, float("nan")])
def test_negative_or_nan_beta_errors(bad):
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,), beta=bad)
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        vae.beta = bad
    assert vae.beta == 1.0


# -- shape and data errors ------------------------------------------------------------------------
def test_decoder_data_shape_mismatch_names_both_shapes(monkeypatch):
    def wrong_decoder(latent_dim, hidden, data_shape, activation):
        return MLPDecoder(latent_dim, hidden, (1, 8, 7), activation)

    monkeypatch.setattr(vae_module, "MLPDecoder", wrong_decoder)
    with pytest.raises(ShapeError) as info:
        VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    msg = str(info.value)
    assert "[2, 1, 8, 7]" in msg and "[1, 8, 8]" in msg


def test_decoder_swapped_after_build_is_caught_before_training():
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    vae.decoder = MLPDecoder(2, (16,), (1, 8, 7))
    with pytest.raises(ShapeError) as info:
        Trainer(vae, batch_size=8, epochs=1, progress=False).fit(binary(16))
    msg = str(info.value)
    assert "[8, 1, 8, 8]" in msg  # the batch of data
    assert "Trace Shapes" in msg or "trace shapes" in msg
    assert "1 8 7" in msg or "8 7" in msg  # the decoder's output, as the trace shows it


@pytest.mark.parametrize(
    "x, hint",
    [
        (torch.zeros(4, 64), "reshape"),
        (torch.zeros(1, 8, 8), "unsqueeze"),
        (torch.zeros(4, 1, 8, 9), ""),
    ],
)
def test_wrong_input_shape_names_both_shapes(x, hint):
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    for fn in (vae.model, vae.guide, vae.encode, vae.check_data):
        with pytest.raises(ShapeError) as info:
            fn(x)
        msg = str(info.value)
        assert "[N, 1, 8, 8]" in msg
        assert str(list(x.shape)) in msg
        assert hint.lower() in msg.lower()


def test_decode_checks_latent_size():
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    with pytest.raises(ShapeError, match="latent size 2"):
        vae.decode(torch.zeros(3, 5))
    assert vae.decode(torch.zeros(3, 2)).shape == (3, *IMAGE)


def test_nan_data_is_refused():
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,), likelihood="gaussian")
    x = torch.rand(16, *IMAGE)
    x[3, 0, 2, 5] = float("nan")
    with pytest.raises(DataError, match=r"1 non-finite .*index \[3, 0, 2, 5\]"):
        vae.check_data(x)
    with pytest.raises(DataError, match="non-finite"):
        Trainer(vae, batch_size=8, epochs=1, progress=False).fit(x)


def test_non_binary_data_is_refused_by_bernoulli():
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    x = binary(16)
    x[0, 0, 0, 0] = 0.5
    with pytest.raises(DataError) as info:
        vae.check_data(x)
    msg = str(info.value)
    assert "binary" in msg and "{0, 1}" in msg and "0.5" in msg and "gaussian" in msg
    with pytest.raises(DataError, match="binary"):
        Trainer(vae, batch_size=8, epochs=1, progress=False).fit(x)
    # the Gaussian likelihood takes grey values
    VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,), likelihood="gaussian").check_data(x)


def test_unknown_choices_error_with_suggestion():
    with pytest.raises(ConfigError, match="Did you mean 'conv'"):
        VAE(data_shape=IMAGE, network="convv")
    with pytest.raises(ConfigError, match="Did you mean 'gaussian'"):
        VAE(data_shape=IMAGE, likelihood="gausian")
    with pytest.raises(ConfigError, match="latent_dim must be >= 1"):
        VAE(data_shape=IMAGE, latent_dim=0)


# -- sampling, reconstruction ---------------------------------------------------------------------
def test_sample_is_reproducible_by_seed():
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    a, b, c = vae.sample(16, seed=1), vae.sample(16, seed=1), vae.sample(16, seed=2)
    assert a.shape == (16, *IMAGE)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(vae.sample(16, generator=g), a)
    m1, m2 = vae.sample(4, seed=5, mean=True), vae.sample(4, seed=5, mean=True)
    assert torch.equal(m1, m2) and ((m1 > 0) & (m1 < 1)).all()


def test_reconstruct_and_encode_shapes():
    vae = VAE(data_shape=IMAGE, latent_dim=3, hidden=(16,))
    x = binary(5)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (5, 3) and (scale > 0).all()
    r = vae.reconstruct(x)
    assert r.shape == x.shape and ((r >= 0) & (r <= 1)).all()
    assert torch.allclose(r, torch.sigmoid(vae.decoder(loc)))


# -- parameters -----------------------------------------------------------------------------------
def test_gaussian_likelihood_scale_fixed_or_learned():
    fixed = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,), likelihood="gaussian", scale=0.2)
    learned = VAE(
        data_shape=IMAGE, latent_dim=2, hidden=(16,), likelihood="gaussian", learn_scale=True
    )
    assert "likelihood.log_scale" not in dict(fixed.named_parameters())
    assert "likelihood.log_scale" in dict(fixed.named_buffers())
    assert torch.allclose(fixed.likelihood.log_scale.exp(), torch.tensor(0.2))
    params = dict(learned.named_parameters())
    assert params["likelihood.log_scale"].shape == IMAGE
    assert params["likelihood.log_scale"].requires_grad
    # and training moves it
    x = torch.rand(32, *IMAGE)
    before = params["likelihood.log_scale"].detach().clone()
    Trainer(learned, batch_size=16, max_steps=3, lr=1e-2, progress=False).fit(x)
    assert not torch.equal(before, learned.likelihood.log_scale.detach())
    with pytest.raises(ConfigError, match="scale must be > 0"):
        VAE(data_shape=IMAGE, likelihood="gaussian", scale=0.0)


def test_parameters_are_eager_and_never_in_the_param_store():
    vae = VAE(data_shape=IMAGE, latent_dim=2, hidden=(16,))
    params = list(vae.parameters())
    names = [n for n, _ in vae.named_parameters()]
    assert any(n.startswith("encoder.") for n in names)
    assert any(n.startswith("decoder.") for n in names)
    optimizer = torch.optim.Adam(params, lr=1e-2)  # sees them before any step
    before = [p.detach().clone() for p in params]

    # a hand-written step with the torch optimiser built above
    with pyro.settings.context(module_local_params=True):
        loss = Trace_ELBO()(vae.model, vae.guide)(binary(8))
    loss.backward()
    assert all(p.grad is not None for p in params)
    optimizer.step()
    assert len(pyro.get_param_store()) == 0

    Trainer(vae, batch_size=8, max_steps=2, progress=False).fit(binary(16))
    assert [id(p) for p in vae.parameters()] == [id(p) for p in params]  # same tensors
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, params) if p.dim() > 1)
    assert len(pyro.get_param_store()) == 0
