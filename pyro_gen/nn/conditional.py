"""Networks that take a condition: an encoder q(z | x, y) and a decoder p(x | z, y).

``y`` is a real vector ``[..., condition_dim]`` (one-hot classes, 0/1 flags, standardised
values: the model encodes its attributes). The encoder reads x with an MLP or conv body,
concatenates y to the features and maps them to (loc, scale); the decoder is the MLP/conv
decoder of ``[z, y]``.

>>> import torch
>>> enc = ConditionalEncoder((1, 16, 16), 3, 4, network="conv", channels=(8, 16), hidden=32)
>>> loc, scale = enc(torch.zeros(2, 1, 16, 16), torch.zeros(2, 3))
>>> dec = ConditionalDecoder(4, 3, (1, 16, 16), network="conv", channels=(16, 8), hidden=32)
>>> loc.shape, dec(loc, torch.zeros(2, 3)).shape
(torch.Size([2, 4]), torch.Size([2, 1, 16, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.nn.conv import ConvDecoder
from pyro_gen.nn.heads import GaussianHead, numel
from pyro_gen.nn.mlp import ACTIVATIONS, MLP, MLPDecoder

__all__ = ["ConditionalEncoder", "ConditionalDecoder"]


def _conv_body(data_shape: Sequence[int], channels: Sequence[int], activation: str) -> nn.Module:
    c = int(data_shape[0])
    layers: list[nn.Module] = []
    for c_out in channels:
        layers += [nn.Conv2d(c, int(c_out), 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        c = int(c_out)
    return nn.Sequential(*layers, nn.Flatten())


class ConditionalEncoder(nn.Module):
    """(x ``[N, *data_shape]``, y ``[N, condition_dim]``) -> (loc, scale) ``[N, latent_dim]``.

    ``network="mlp"``: an MLP of ``[flatten(x), y]`` with widths ``hidden_layers`` then
    ``hidden``; ``"conv"``: stride-2 convolutions of x, then a dense layer of
    ``[features, y]`` of width ``hidden``.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        condition_dim: int,
        latent_dim: int,
        network: str = "mlp",
        hidden: int = 256,
        hidden_layers: Sequence[int] = (512,),
        channels: Sequence[int] = (32, 64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        act = ACTIVATIONS[activation]
        if network == "mlp":
            self.body: nn.Module = nn.Flatten()
            flat = numel(self.data_shape)
            self.mix = nn.Sequential(
                MLP(flat + condition_dim, tuple(hidden_layers), int(hidden), activation), act()
            )
        elif network == "conv":
            self.body = _conv_body(self.data_shape, channels, activation)
            with torch.no_grad():
                flat = self.body(torch.zeros(1, *self.data_shape)).shape[1]
            self.mix = nn.Sequential(nn.Linear(flat + condition_dim, int(hidden)), act())
        else:
            raise ConfigError(f"unknown network {network!r}; choose 'mlp' or 'conv'.")
        self.head = GaussianHead(int(hidden), int(latent_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[: x.dim() - len(self.data_shape)]
        flat = x.reshape(-1, *self.data_shape)
        h = self.body(flat)
        h = self.mix(torch.cat([h, y.reshape(-1, y.shape[-1])], -1))
        loc, scale = self.head(h)
        return loc.reshape(*batch, -1), scale.reshape(*batch, -1)


class ConditionalDecoder(nn.Module):
    """(z ``[..., latent_dim]``, y ``[..., condition_dim]``) -> parameters ``[..., *data_shape]``
    (the MLP or conv decoder of the concatenation ``[z, y]``)."""

    def __init__(
        self,
        latent_dim: int,
        condition_dim: int,
        data_shape: Sequence[int],
        network: str = "mlp",
        hidden: int = 256,
        hidden_layers: Sequence[int] = (512,),
        channels: Sequence[int] = (64, 64, 32),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        width = int(latent_dim) + int(condition_dim)
        if network == "mlp":
            widths = (int(hidden), *(int(h) for h in hidden_layers))
            self.net: nn.Module = MLPDecoder(width, widths, data_shape, activation)
        elif network == "conv":
            self.net = ConvDecoder(width, data_shape, tuple(channels), int(hidden), activation)
        else:
            raise ConfigError(f"unknown network {network!r}; choose 'mlp' or 'conv'.")

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.expand(*z.shape[:-1], y.shape[-1])
        return self.net(torch.cat([z, y], -1))
