"""examples/vae.py's latent grid varies the most active dimensions, not dimensions 0 and 1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from pyro_gen.models import VAE

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "vae.py"


def _example():
    spec = importlib.util.spec_from_file_location("example_vae_grid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_grid_uses_the_most_active_dimensions(monkeypatch):
    ex = _example()
    vae = VAE(data_shape=(4,), latent_dim=4, hidden=(8,))
    x = torch.randn(50, 4)
    # dims 0 and 1 inactive (the posterior mean never moves), 2 the most active, then 3
    loc = torch.stack([torch.zeros(50), torch.full((50,), 0.3), 3 * x[:, 0], x[:, 1]], 1)
    monkeypatch.setattr(vae, "encode", lambda data: (loc[: len(data)], torch.ones(len(data), 4)))
    dims = ex.most_active_dims(vae, x)
    assert dims == [2, 3]
    monkeypatch.setattr(vae, "decode", lambda z, mean=True: z)
    z = ex.latent_grid(vae, steps=3, span=1.0, dims=dims)
    assert z.shape == (9, 4)
    assert torch.equal(z[:, :2], torch.zeros(9, 2))  # the inactive dimensions stay at 0
    assert z[:3, 2].tolist() == [-1.0, 0.0, 1.0]  # along a row
    assert z[::3, 3].tolist() == [1.0, 0.0, -1.0]  # down the columns
