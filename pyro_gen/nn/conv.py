"""Convolutional encoder/decoder for images ``[C, H, W]`` of any size.

Stride-2 convolutions halve the resolution; the decoder mirrors them with transposed
convolutions from ``ceil(H / 2**L)`` and crops to ``H x W``, so odd sizes such as 28 work.

>>> import torch
>>> enc, dec = ConvEncoder((1, 28, 28), 8), ConvDecoder(8, (1, 28, 28))
>>> loc, scale = enc(torch.zeros(2, 1, 28, 28))
>>> dec(loc).shape
torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyro_gen.errors import ShapeError
from pyro_gen.nn.heads import GaussianHead
from pyro_gen.nn.mlp import ACTIVATIONS

__all__ = ["ConvEncoder", "ConvDecoder"]


def _image_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(data_shape) != 3:
        raise ShapeError(
            f"convolutional networks need images shaped [C, H, W]; got data_shape "
            f"{tuple(data_shape)}. Use the MLP networks for flat data, or reshape it."
        )
    return tuple(int(s) for s in data_shape)  # type: ignore[return-value]


def _flatten_batch(x: torch.Tensor, event_dims: int) -> tuple[torch.Tensor, torch.Size]:
    batch = x.shape[: x.dim() - event_dims]
    return x.reshape(-1, *x.shape[x.dim() - event_dims :]), batch


class ConvEncoder(nn.Module):
    """x ``[..., C, H, W]`` -> (loc, scale) ``[..., latent_dim]``."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        channels: Sequence[int] = (32, 64, 64),
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(data_shape)
        self.data_shape = (c, h, w)
        size = min(h, w)
        for i in range(len(channels)):
            if size < 2:
                raise ShapeError(
                    f"images of {h}x{w} pixels are too small for {len(channels)} stride-2 "
                    f"convolutions (layer {i + 1} would see {size} pixel); give fewer channels "
                    f"(e.g. channels={list(channels[:i]) or [channels[0]]}) or network='mlp'."
                )
            size = (size + 2 - 4) // 2 + 1
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
            c = c_out
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, *self.data_shape)).numel()
        self.fc = nn.Sequential(nn.Linear(flat, hidden), ACTIVATIONS[activation]())
        self.head = GaussianHead(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat, batch = _flatten_batch(x, 3)
        h = self.fc(self.conv(flat).flatten(1))
        loc, scale = self.head(h)
        return loc.reshape(*batch, -1), scale.reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """z ``[..., latent_dim]`` -> distribution parameters ``[..., C, H, W]``."""

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        channels: Sequence[int] = (64, 64, 32),
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(data_shape)
        self.data_shape = (c, h, w)
        n_up = len(channels)
        self.start = (channels[0], math.ceil(h / 2**n_up), math.ceil(w / 2**n_up))
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            ACTIVATIONS[activation](),
            nn.Linear(hidden, self.start[0] * self.start[1] * self.start[2]),
            ACTIVATIONS[activation](),
        )
        layers: list[nn.Module] = []
        outs = [*channels[1:], c]
        for i, (c_in, c_out) in enumerate(zip(channels, outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < n_up - 1:
                layers.append(ACTIVATIONS[activation]())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat, batch = _flatten_batch(z, 1)
        out = self.deconv(self.fc(flat).reshape(-1, *self.start))
        h, w = self.data_shape[1:]
        top = (out.shape[-2] - h) // 2
        left = (out.shape[-1] - w) // 2
        out = out[..., top : top + h, left : left + w]
        return out.reshape(*batch, *self.data_shape)
