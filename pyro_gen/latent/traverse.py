"""Latent traversals ordered by how active each dimension is.

A dimension's activity is its average KL(q(z_d | x) ‖ N(0, 1)) over data (nats):

    KL_d = mean_n [ ½ (μ_nd² + σ_nd² − 1) − log σ_nd ],

so an inactive ("collapsed") dimension, whose posterior equals the prior, has KL_d ≈ 0 and its
traversal changes nothing (Burda et al. 2016 count active units by the variance of μ; the KL
per dimension is the usual companion, e.g. Higgins et al. 2017's β-VAE figures). A traversal
holds a base code fixed and sweeps one dimension over values (default −3..3, in prior units).

>>> import torch
>>> kl = kl_per_dimension(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]]))
>>> kl, traversal_order(kl)
(tensor([0., 2.]), tensor([1, 0]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pyro_gen.errors import ConfigError, ShapeError
from pyro_gen.latent._model import decode_mean, encode_stats

__all__ = ["kl_per_dimension", "traversal_order", "traverse", "Traversal", "DEFAULT_VALUES"]

DEFAULT_VALUES = (-3.0, -2.25, -1.5, -0.75, 0.0, 0.75, 1.5, 2.25, 3.0)
"""Nine values from −3 to 3 (prior standard deviations)."""


def kl_per_dimension(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(N(loc, scale²) ‖ N(0, 1)) per dimension ``[L]`` (nats), from the
    guide's ``loc`` and ``scale`` ``[N, L]``."""
    if loc.shape != scale.shape or loc.dim() != 2:
        raise ShapeError(
            f"loc and scale must both be [N, L]; got {list(loc.shape)} and {list(scale.shape)}."
        )
    kl = 0.5 * (loc**2 + scale**2 - 1) - scale.log()
    return kl.mean(0)


def traversal_order(kl: torch.Tensor) -> torch.Tensor:
    """Dimensions sorted by decreasing KL (most active first; ties keep index order)."""
    return torch.sort(-kl, stable=True).indices


class Traversal(dict):
    """``images`` ``[D, V, *data_shape]`` (row d: dimension ``dims[d]`` swept over
    ``values``), ``dims`` ``[D]``, ``kl`` ``[D]`` (nats, of those dimensions), ``values``
    ``[V]``, ``base`` ``[L]`` (the fixed code)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def traverse(
    model,
    x: torch.Tensor,
    num_dims: int | None = None,
    values: Sequence[float] | torch.Tensor = DEFAULT_VALUES,
    base: torch.Tensor | None = None,
    condition: Mapping[str, Any] | None = None,
) -> Traversal:
    """Traverse the ``num_dims`` most active dimensions (all by default), in order of KL
    measured on ``x`` ``[N, *data_shape]``. The base code is ``base`` ``[L]`` or E_q[z | x_0]
    of the first image; each row sets one dimension to each of ``values``. ``condition``: a
    conditional model's attributes of the images (``[N]`` each, or scalars for all): the KL is
    measured with each image's own, the traversal is decoded with the first image's."""
    if len(x) == 0:
        raise ShapeError("traverse needs at least one image to measure the KL on.")
    cond_all = None
    if condition:
        cond_all = {}
        for k, v in condition.items():
            v = torch.as_tensor(v)
            cond_all[k] = v.expand(len(x)) if v.dim() == 0 else v
    loc, scale = encode_stats(model, x, cond_all)
    kl = kl_per_dimension(loc, scale)
    order = traversal_order(kl)
    latent = loc.shape[1]
    num_dims = latent if num_dims is None else int(num_dims)
    if not 1 <= num_dims <= latent:
        raise ConfigError(f"num_dims must be in 1..{latent}; got {num_dims}.")
    dims = order[:num_dims]
    values = torch.as_tensor(values, dtype=loc.dtype)
    base = loc[0] if base is None else torch.as_tensor(base, dtype=loc.dtype)
    if base.shape != (latent,):
        raise ShapeError(f"base must have shape [{latent}]; got {list(base.shape)}.")
    z = base.repeat(num_dims, len(values), 1)  # [D, V, L]
    for i, d in enumerate(dims.tolist()):
        z[i, :, d] = values
    flat = z.reshape(-1, latent)
    cond = None
    if cond_all:
        cond = {k: v[:1].expand(len(flat)) for k, v in cond_all.items()}
    images = decode_mean(model, flat, cond)
    return Traversal(
        images=images.reshape(num_dims, len(values), *images.shape[1:]),
        dims=dims,
        kl=kl[dims],
        values=values,
        base=base,
    )
