"""Attribute vectors: the mean encoding of examples with an attribute minus the mean encoding
of those without, added to an encoded image with an exaggeration factor α.

    v_a = mean{E_q[z | x] : x has a} − mean{E_q[z | x] : x lacks a},
    edit(x, α) = E[x | z = E_q[z | x] + α v_a]

(White, "Sampling generative networks", 2016; Larsen et al., "Autoencoding beyond pixels using
a learned similarity metric", ICML 2016). α = 0 is the plain reconstruction, α = 1 moves the
code by the whole difference of the class means, α > 1 exaggerates.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
>>> x = torch.bernoulli(torch.full((20, 6), 0.5))
>>> has = torch.arange(20) < 10
>>> v = attribute_vector(vae, x, has)
>>> add_vector(vae, x[:3], v, alphas=[0.0, 1.0]).shape
torch.Size([2, 3, 6])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.latent._model import decode_mean, encode_mean

__all__ = ["attribute_vector", "add_vector", "has_attribute"]


def has_attribute(values: torch.Tensor, kind: str, value: Any = None) -> torch.Tensor:
    """Which rows "have" an attribute (bool ``[N]``): a categorical column equal to the class
    ``value``, a binary column equal to ``value`` (0 or 1; 1 when not given), a continuous
    column above its median (or above ``value`` when given). Raises ConfigError for a binary
    ``value`` other than 0 or 1."""
    if kind == "categorical":
        if value is None:
            raise DataError("a categorical attribute needs the class whose vector is wanted.")
        return values.long() == int(value)
    if kind == "binary":
        if value is None:
            value = 1
        if value not in (0, 1, True, False):
            raise ConfigError(f"a binary attribute takes the value 0 or 1; got {value!r}.")
        return values > 0.5 if int(value) == 1 else values < 0.5
    threshold = values.float().median() if value is None else float(value)
    return values.float() > threshold


def attribute_vector(
    model,
    x: torch.Tensor,
    has: torch.Tensor,
    condition: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
) -> torch.Tensor:
    """The attribute vector ``[L]``: mean E_q[z | x] of rows where ``has`` (bool ``[N]``) is
    True minus the mean of the others. Raises DataError when either group is empty."""
    has = torch.as_tensor(has, dtype=torch.bool)
    if has.shape != (len(x),):
        raise ShapeError(f"has must be a bool tensor of shape [{len(x)}]; got {list(has.shape)}.")
    n_with, n_without = int(has.sum()), int((~has).sum())
    if n_with == 0 or n_without == 0:
        raise DataError(
            f"an attribute vector needs examples with and without the attribute; got {n_with} "
            f"with and {n_without} without."
        )
    z = encode_mean(model, x, condition, batch_size)
    return z[has].mean(0) - z[~has].mean(0)


def add_vector(
    model,
    x: torch.Tensor,
    vector: torch.Tensor,
    alphas: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0),
    condition: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Edited images ``[len(alphas), N, *data_shape]``: E[x | z = E_q[z | x] + α v] per α."""
    z = encode_mean(model, x, condition)
    if vector.shape != z.shape[1:]:
        raise ShapeError(f"the vector has shape {list(vector.shape)} but codes are [{z.shape[1]}].")
    return torch.stack([decode_mean(model, z + float(a) * vector, condition) for a in alphas])
