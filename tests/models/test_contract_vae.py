"""The shared model contract (tests/contract.py) for the VAE family: MLP/Bernoulli, conv with a
learned Gaussian scale, and a guide with BatchNorm (buffers must step once per update)."""

from __future__ import annotations

import torch

from pyro_gen.models import VAE, register_model
from tests.contract import ModelContract


def binary(n: int, shape: tuple[int, ...], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.bernoulli(torch.full((n, *shape), 0.3), generator=g)}


class TestMLPBernoulliVAE(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return VAE(data_shape=(12,), latent_dim=3, hidden=(16,))

    def make_data(self):
        return binary(self.num_data, (12,))


class TestConvGaussianVAE(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return VAE(
            data_shape=(1, 8, 8),
            latent_dim=2,
            network="conv",
            channels=(4, 8),
            likelihood="gaussian",
            learn_scale=True,
        )

    def make_data(self):
        g = torch.Generator().manual_seed(0)
        return {"x": torch.rand(self.num_data, 1, 8, 8, generator=g)}


@register_model("test_batchnorm_vae")
class BatchNormVAE(VAE):
    """A VAE whose guide normalises its input (running statistics: buffers)."""

    def __init__(self, data_shape=(12,), latent_dim=3, hidden=(16,)) -> None:
        super().__init__(data_shape=data_shape, latent_dim=latent_dim, hidden=hidden)
        self.norm = torch.nn.BatchNorm1d(data_shape[0])

    def guide(self, x):
        return super().guide(self.norm(x))


class TestBatchNormVAE(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return BatchNormVAE()

    def make_data(self):
        return binary(self.num_data, (12,))
