"""Multi-layer perceptrons and the MLP encoder/decoder pair.

>>> import torch
>>> from pyro_gen.nn import MLPEncoder, MLPDecoder
>>> enc, dec = MLPEncoder((1, 28, 28), 8, (64,)), MLPDecoder(8, (64,), (1, 28, 28))
>>> loc, scale = enc(torch.zeros(5, 1, 28, 28))
>>> dec(loc).shape
torch.Size([5, 1, 28, 28])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_gen.nn.heads import GaussianHead, numel

__all__ = ["MLP", "MLPEncoder", "MLPDecoder", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


class MLP(nn.Sequential):
    """``in -> hidden... -> out`` with an activation between layers (none after the last)."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu"
    ) -> None:
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)


class MLPEncoder(nn.Module):
    """x ``[..., *data_shape]`` -> (loc, scale) ``[..., latent_dim]`` of a diagonal Gaussian."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (512, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.body = MLP(numel(self.data_shape), hidden[:-1], hidden[-1], activation)
        self.act = ACTIVATIONS[activation]()
        self.head = GaussianHead(hidden[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[: x.dim() - len(self.data_shape)]
        h = self.act(self.body(x.reshape(*batch, -1)))
        return self.head(h)


class MLPDecoder(nn.Module):
    """z ``[..., latent_dim]`` -> distribution parameters ``[..., *data_shape]``."""

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int] = (256, 512),
        data_shape: Sequence[int] = (784,),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = MLP(latent_dim, hidden, numel(self.data_shape), activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.data_shape)
