"""The objective's effect handlers: β on the latent sites, N/B on the "data" plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_gen.infer.handlers import ScaleData, ScaleLatents


def masked_model(x):
    with pyro.plate("data", x.shape[0]):
        keep = torch.tensor([True, False, True])
        with poutine.mask(mask=keep):  # a latent already masked, e.g. partly observed
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def test_beta_zero_masks_out_a_latent_that_already_has_a_mask():
    tr = poutine.trace(ScaleLatents(0.0)(masked_model)).get_trace(torch.zeros(3))
    tr.compute_log_prob()
    assert torch.equal(tr.nodes["z"]["log_prob"], torch.zeros(3))  # every row out, not just one
    assert tr.nodes["x"]["log_prob"].ne(0).all()  # the observation is untouched


def test_beta_scales_latents_only():
    tr = poutine.trace(ScaleLatents(2.5)(masked_model)).get_trace(torch.zeros(3))
    assert tr.nodes["z"]["scale"] == 2.5 and tr.nodes["x"]["scale"] == 1.0


def self_subsampling_model(x, idx):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 100, subsample=idx):  # the program scales by N/B itself
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def test_a_plate_that_declares_its_full_size_is_left_alone():
    idx = torch.arange(10)
    tr = poutine.trace(ScaleData(10.0)(self_subsampling_model)).get_trace(torch.zeros(10), idx)
    assert tr.nodes["x"]["scale"] == 10.0  # Pyro's own N/B = 100/10, not 100 x 10
    assert tr.nodes["mu"]["scale"] == 1.0
