"""VQ-VAE ("vqvae"): nearest-code lookup, straight-through gradients, the honest bound (uniform
prior: reconstruction − h·w·log K; learned prior: reconstruction + log p(c(x))), the prior-only
stage, codebook use on the shapes data, and the model contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pyro_gen.data import load_dataset
from pyro_gen.evaluate import evaluate_elbo, log_likelihood
from pyro_gen.infer import Trainer
from pyro_gen.infer.objectives import make_elbo
from pyro_gen.models import build_model
from pyro_gen.models.vqvae import VQVAE
from pyro_gen.nn.vq import VectorQuantizer, codebook_stats, straight_through
from tests.contract import ModelContract

SMALL = dict(data_shape=(1, 8, 8), num_codes=8, code_dim=4, channels=(8, 8), prior_hidden=(16,))


def binary(n: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *shape), 0.3), generator=g)


def test_nearest_code_and_embedding_by_hand():
    vq = VectorQuantizer(3, 2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    z = torch.tensor([[0.9, 0.1], [0.1, 1.5], [-0.2, 0.1], [0.6, 0.0]])  # [4, 2] -> [1, 2, 2, 2]
    z_e = z.T.reshape(1, 2, 2, 2)
    codes = vq.nearest(z_e)
    assert codes.flatten().tolist() == [1, 2, 0, 1]
    torch.testing.assert_close(vq.embed(codes), vq.codebook[codes].movedim(-1, -3))
    cb, commit = vq.losses(z_e, vq.embed(codes))
    expected = ((z - vq.codebook[codes.flatten()]) ** 2).sum()
    torch.testing.assert_close(cb, expected.reshape(1).detach())
    torch.testing.assert_close(commit, expected.reshape(1))


def test_straight_through_value_and_gradient():
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = straight_through(z_e, e)
    torch.testing.assert_close(out, e)
    (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
    torch.testing.assert_close(z_e.grad, torch.arange(out.numel()).reshape(out.shape).float())
    assert e.grad is None


def test_codebook_stats_counts_dead_codes_and_perplexity():
    s = codebook_stats(torch.tensor([0, 0, 1, 1]), 4)
    assert s["codes_used"] == 2 and s["dead_codes"] == 2
    assert s["perplexity"] == pytest.approx(2.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_reconstruction_gradient_reaches_the_encoder_through_the_quantizer(normalize):
    torch.manual_seed(0)
    m = VQVAE(**SMALL, commitment=0.0, normalize=normalize, prior="uniform")
    x = binary(16)
    loss = make_elbo("trace").differentiable_loss(m.model, m.guide, x)
    loss.backward()
    enc = torch.cat([p.grad.flatten() for p in m.encoder.parameters()])
    # commitment 0 and the codebook loss detaches z_e: only the straight-through path is left
    assert enc.abs().sum() > 0
    # the decoder's gradient from reconstruction does not reach the codebook (sg[e - z_e])
    m.zero_grad()
    m.eval()  # no straight-through, no VQ losses: the decoder reads the codes' vectors
    make_elbo("trace").differentiable_loss(m.model, m.guide, x).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.encoder.parameters())


def test_uniform_prior_bound_is_reconstruction_minus_grid_log_k():
    torch.manual_seed(0)
    m = VQVAE(**SMALL, prior="uniform").eval()
    x = binary(10)
    r = evaluate_elbo(m, x)
    h, w = m.grid
    torch.testing.assert_close(r.kl, torch.full((10,), h * w * math.log(8)))
    codes = m.encode_codes(x)
    logits = m.decode(codes, mean=False)
    recon = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(r.reconstruction, recon.detach())
    # a point mass on the codes: every importance draw is the same, IS cannot tighten the bound
    torch.testing.assert_close(log_likelihood(m, x, num_samples=20), r.elbo.double())


def test_learned_prior_bound_uses_log_prior_of_the_codes():
    torch.manual_seed(0)
    m = VQVAE(**SMALL).eval()
    x = binary(10)
    r = evaluate_elbo(m, x)
    log_prior = m.prior_distribution().log_prob(m.encode_codes(x)).detach()
    torch.testing.assert_close(r.kl, -log_prior)
    assert r.is_bound


def test_prior_only_stage_moves_only_the_prior():
    torch.manual_seed(0)
    m = VQVAE(**SMALL)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with m.prior_only():
        Trainer(m, max_steps=2, batch_size=16, lr=1e-2, progress=False).fit(binary(32))
    for n, p in m.named_parameters():
        assert torch.equal(before[n], p) != n.startswith("prior_net."), n
        assert p.requires_grad, n  # unfrozen after the block
    with pytest.raises(Exception, match="nothing to train"):
        with VQVAE(**SMALL, prior="uniform").prior_only():
            pass


def test_samples_and_reconstructions_have_the_data_shape():
    torch.manual_seed(0)
    for prior in ("made", "uniform"):
        m = VQVAE(**SMALL, prior=prior)
        s = m.sample(4, seed=1)
        assert s.shape == (4, 1, 8, 8) and set(s.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(s, m.sample(4, seed=1))
        p = m.reconstruct(binary(3))
        assert p.shape == (3, 1, 8, 8) and float(p.min()) >= 0 and float(p.max()) <= 1


def test_codebook_is_used_on_shapes_after_short_training():
    ds = load_dataset("shapes", num_train=1024, num_valid=0, num_test=0, size=16)
    x = ds.split("train")
    torch.manual_seed(0)
    m = build_model(
        "vqvae",
        {
            "data_shape": [1, 16, 16],
            "num_codes": 32,
            "code_dim": 8,
            "channels": [16, 16],
            "prior_hidden": [32],
        },
    )
    start = m.codebook_usage(x)
    Trainer(m, max_steps=80, batch_size=32, lr=3e-3, progress=False, validate=False).fit(x)
    usage = m.codebook_usage(x)
    print("codebook usage before", start, "after", usage)  # reported with pytest -s
    assert usage["codes_used"] >= 8 and usage["perplexity"] > 3.0, usage
    assert usage["dead_codes"] == 32 - usage["codes_used"]


class TestVQVAEContract(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return VQVAE(**SMALL)

    def make_data(self):
        return {"x": binary(self.num_data)}
