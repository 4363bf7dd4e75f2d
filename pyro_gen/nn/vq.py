"""Vector quantisation: a learned codebook, nearest-code lookup, the straight-through estimator,
and the convolutional encoder/decoder of a VQ-VAE over a spatial grid of codes.

van den Oord, Vinyals & Kavukcuoglu (2017), "Neural Discrete Representation Learning", NeurIPS,
eq. (3): loss = −log p(x | z_q(x)) + ‖sg[z_e(x)] − e‖² + β ‖z_e(x) − sg[e]‖², with the decoder
fed z_e + sg[e − z_e] (straight-through: forward value e, gradient copied to z_e).

Plain torch (no Pyro).

>>> import torch
>>> enc, vq, dec = GridEncoder((1, 28, 28), 8), VectorQuantizer(16, 8), GridDecoder(8, (1, 28, 28))
>>> z_e = enc(torch.zeros(2, 1, 28, 28))
>>> codes = vq.nearest(z_e)
>>> codes.shape, dec(vq.embed(codes)).shape
(torch.Size([2, 7, 7]), torch.Size([2, 1, 28, 28]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_gen.errors import ConfigError, ShapeError
from pyro_gen.nn.mlp import ACTIVATIONS

__all__ = [
    "VectorQuantizer",
    "GridEncoder",
    "GridDecoder",
    "straight_through",
    "codebook_stats",
    "grid_shape",
]


def straight_through(z_e: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``z_e + sg[e − z_e]``: the value of ``e``, the gradient of the identity to ``z_e`` (and
    none to ``e``)."""
    return z_e + (e - z_e).detach()


class VectorQuantizer(nn.Module):
    """A codebook ``[num_codes, code_dim]``; vectors on a channel axis (``dim=-3``: ``[..., D,
    H, W]``) are mapped to the index of their nearest code (squared Euclidean distance)."""

    def __init__(self, num_codes: int, code_dim: int, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        if int(num_codes) < 2 or int(code_dim) < 1:
            raise ConfigError(
                f"a codebook needs num_codes >= 2 and code_dim >= 1; got {num_codes}, {code_dim}."
            )
        self.num_codes, self.code_dim = int(num_codes), int(code_dim)
        # van den Oord et al.'s reference code: uniform in ±1/K
        self.codebook = nn.Parameter(torch.empty(self.num_codes, self.code_dim))
        nn.init.uniform_(self.codebook, -1.0 / self.num_codes, 1.0 / self.num_codes)

    def project(self, z_e: torch.Tensor) -> torch.Tensor:
        """``z_e`` ``[..., D, H, W]`` as the quantizer compares it: unit length along D when
        ``normalize`` (cosine-similarity lookup, Yu et al. 2022 "Vector-quantized image
        modeling with improved VQGAN", Sec. 3.2), else unchanged."""
        return F.normalize(z_e, dim=-3) if self.normalize else z_e

    def codes(self) -> torch.Tensor:
        """The code vectors ``[K, D]`` (unit length when ``normalize``)."""
        return F.normalize(self.codebook, dim=-1) if self.normalize else self.codebook

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Indices ``[..., H, W]`` (long) of the nearest code to each vector of
        ``[..., D, H, W]``."""
        if z_e.dim() < 3 or z_e.shape[-3] != self.code_dim:
            raise ShapeError(
                f"expected encoder output [..., {self.code_dim}, H, W]; got {list(z_e.shape)}."
            )
        flat = self.project(z_e).movedim(-3, -1).reshape(-1, self.code_dim)
        cb = self.codes()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.T + cb.pow(2).sum(1)[None, :]
        return dist.argmin(1).reshape(*z_e.shape[:-3], *z_e.shape[-2:])

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[..., D, H, W]`` of indices ``[..., H, W]``."""
        return self.codes()[codes.long()].movedim(-1, -3)

    def losses(self, z_e: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codebook loss ‖sg[z_e] − e‖², commitment loss ‖z_e − sg[e]‖²), each summed over one
        datapoint's grid and channels: ``[...]`` (z_e after :meth:`project`, e from
        :meth:`embed`: ``[..., D, H, W]``)."""
        codebook = (z_e.detach() - e).pow(2).flatten(-3).sum(-1)
        commitment = (z_e - e.detach()).pow(2).flatten(-3).sum(-1)
        return codebook, commitment


def codebook_stats(codes: torch.Tensor, num_codes: int) -> dict:
    """Usage of a codebook by ``codes`` (any shape of indices): perplexity exp(H(usage)) (1 =
    one code used, ``num_codes`` = uniform use), codes used and dead codes (never chosen)."""
    counts = torch.bincount(codes.flatten().long().cpu(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {
        "perplexity": float(entropy.exp()),
        "codes_used": used,
        "dead_codes": num_codes - used,
        "num_codes": num_codes,
    }


def _check_grid(data_shape: Sequence[int], levels: int) -> tuple[int, int, int]:
    if len(data_shape) != 3:
        raise ShapeError(f"a VQ-VAE needs images [C, H, W]; got data_shape {tuple(data_shape)}.")
    c, h, w = (int(s) for s in data_shape)
    if levels < 1 or h % 2**levels or w % 2**levels:
        raise ShapeError(
            f"{h}x{w} images do not halve {levels} times; give a number of channels (levels) "
            f"such that H and W are divisible by 2**levels (28x28: 2 levels, a 7x7 grid)."
        )
    return c, h, w


class GridEncoder(nn.Module):
    """x ``[..., C, H, W]`` -> z_e ``[..., code_dim, H/2^L, W/2^L]`` (L = len(channels))."""

    def __init__(
        self,
        data_shape: Sequence[int],
        code_dim: int,
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, _, _ = _check_grid(data_shape, len(channels))
        self.data_shape = tuple(int(s) for s in data_shape)
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
            c = c_out
        layers += [nn.Conv2d(c, c, 3, padding=1), ACTIVATIONS[activation]()]
        layers.append(nn.Conv2d(c, code_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        out = self.net(x.reshape(-1, *x.shape[-3:]))
        return out.reshape(*batch, *out.shape[1:])


class GridDecoder(nn.Module):
    """z_q ``[..., code_dim, h, w]`` -> logits ``[..., C, H, W]`` (the encoder mirrored)."""

    def __init__(
        self,
        code_dim: int,
        data_shape: Sequence[int],
        channels: Sequence[int] = (64, 32),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c_img, _, _ = _check_grid(data_shape, len(channels))
        self.data_shape = tuple(int(s) for s in data_shape)
        c = channels[0]
        layers: list[nn.Module] = [
            nn.Conv2d(code_dim, c, 3, padding=1),
            ACTIVATIONS[activation](),
        ]
        outs = [*channels[1:], c_img]
        for i, c_out in enumerate(outs):
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(ACTIVATIONS[activation]())
            c = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-3]
        out = self.net(z.reshape(-1, *z.shape[-3:]))
        return out.reshape(*batch, *out.shape[1:])


def grid_shape(data_shape: Sequence[int], levels: int) -> tuple[int, int]:
    """The code grid (h, w) of images ``data_shape`` after ``levels`` halvings."""
    _, h, w = _check_grid(data_shape, levels)
    return h // 2**levels, w // 2**levels
