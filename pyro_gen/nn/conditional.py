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

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.nn.conv import ConvDecoder
from pyro_gen.nn.heads import GaussianHead, numel
from pyro_gen.nn.mlp import ACTIVATIONS, MLP, MLPDecoder

__all__ = ["ConditionalEncoder", "ConditionalDecoder", "CONDITIONINGS"]


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


CONDITIONINGS = ("input", "every")


class _EveryLayerMLP(nn.Module):
    """An MLP decoder that reads y at every layer: ``h_1 = act(W_1 [z, y])``,
    ``h_k = act(W_k [h_{k-1}, y])``, output ``W_out [h_K, y]``."""

    def __init__(
        self, latent_dim: int, condition_dim: int, widths, data_shape, activation: str
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        sizes = [int(latent_dim), *(int(w) for w in widths)]
        self.layers = nn.ModuleList(
            nn.Linear(a + int(condition_dim), b) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.out = nn.Linear(sizes[-1] + int(condition_dim), numel(self.data_shape))
        self.act = ACTIVATIONS[activation]()

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.layers:
            h = self.act(layer(torch.cat([h, y], -1)))
        return self.out(torch.cat([h, y], -1)).reshape(*z.shape[:-1], *self.data_shape)


class _EveryLayerConv(nn.Module):
    """A conv decoder that reads y at every layer: the dense layers take ``[h, y]`` and each
    transposed convolution takes y broadcast as extra constant channels."""

    def __init__(
        self, latent_dim: int, condition_dim: int, data_shape, channels, hidden: int, activation
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in data_shape)
        self.data_shape = (c, h, w)
        n_up = len(channels)
        self.start = (int(channels[0]), math.ceil(h / 2**n_up), math.ceil(w / 2**n_up))
        k = int(condition_dim)
        self.fc1 = nn.Linear(int(latent_dim) + k, int(hidden))
        self.fc2 = nn.Linear(int(hidden) + k, self.start[0] * self.start[1] * self.start[2])
        outs = [*channels[1:], c]
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(int(a) + k, int(b), 4, stride=2, padding=1)
            for a, b in zip(channels, outs)
        )
        self.act = ACTIVATIONS[activation]()

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        z, y = z.reshape(-1, z.shape[-1]), y.reshape(-1, y.shape[-1])
        h = self.act(self.fc1(torch.cat([z, y], -1)))
        h = self.act(self.fc2(torch.cat([h, y], -1))).reshape(-1, *self.start)
        for i, deconv in enumerate(self.deconvs):
            ymap = y[:, :, None, None].expand(-1, -1, *h.shape[-2:])
            h = deconv(torch.cat([h, ymap], 1))
            if i < len(self.deconvs) - 1:
                h = self.act(h)
        hh, ww = self.data_shape[1:]
        top, left = (h.shape[-2] - hh) // 2, (h.shape[-1] - ww) // 2
        return h[..., top : top + hh, left : left + ww].reshape(*batch, *self.data_shape)


class ConditionalDecoder(nn.Module):
    """(z ``[..., latent_dim]``, y ``[..., condition_dim]``) -> parameters ``[..., *data_shape]``.

    ``condition="input"``: the MLP or conv decoder of the concatenation ``[z, y]`` (y enters
    once, at the first layer). ``"every"``: y is concatenated to the input of every layer (the
    dense layers' inputs, and constant extra channels of every transposed convolution), so the
    condition reaches the output without having to survive the hidden layers.
    """

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
        condition: str = "input",
    ) -> None:
        super().__init__()
        if condition not in CONDITIONINGS:
            raise ConfigError(
                f"unknown condition {condition!r}; choose one of {CONDITIONINGS} (y at the "
                "decoder's input only, or at every layer)."
            )
        self.condition = condition
        width = int(latent_dim) + int(condition_dim)
        if condition == "every":
            if network == "mlp":
                widths = (int(hidden), *(int(h) for h in hidden_layers))
                self.net = _EveryLayerMLP(latent_dim, condition_dim, widths, data_shape, activation)
            elif network == "conv":
                self.net = _EveryLayerConv(
                    latent_dim, condition_dim, data_shape, channels, int(hidden), activation
                )
            else:
                raise ConfigError(f"unknown network {network!r}; choose 'mlp' or 'conv'.")
        elif network == "mlp":
            widths = (int(hidden), *(int(h) for h in hidden_layers))
            self.net: nn.Module = MLPDecoder(width, widths, data_shape, activation)
        elif network == "conv":
            self.net = ConvDecoder(width, data_shape, tuple(channels), int(hidden), activation)
        else:
            raise ConfigError(f"unknown network {network!r}; choose 'mlp' or 'conv'.")

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.expand(*z.shape[:-1], y.shape[-1])
        if self.condition == "every":
            return self.net(z, y)
        return self.net(torch.cat([z, y], -1))
