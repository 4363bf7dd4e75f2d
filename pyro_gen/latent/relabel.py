"""The conditional model's own edit: keep what the code z says about an image, change the
attributes the decoder is told.

    z = E_q[z | x, y_old],    edit(x, y_new) = E[x | z, y_new]

(Sohn, Lee & Yan 2015's CVAE; Kingma et al. 2014, "Semi-supervised learning with deep generative
models", section 5.2 "analogies": style from z, class from y). Where the decoder conditions on
an attribute, adding an attribute vector to z cannot change it (the decoder is still told
y_old); changing y does. Attributes left out of ``y_new`` keep each image's own value.

>>> import torch
>>> from pyro_gen.models import CVAE
>>> m = CVAE(data_shape=(6,), latent_dim=2, hidden=(8,),
...          attributes=[{"name": "c", "kind": "categorical", "values": ["a", "b"]}])
>>> x = torch.bernoulli(torch.full((3, 6), 0.5))
>>> change_attributes(m, x, {"c": torch.tensor([0, 0, 1])}, {"c": "b"}).shape
torch.Size([3, 6])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pyro_gen.errors import ConfigError, ShapeError
from pyro_gen.latent._model import decode_mean, encode_mean

__all__ = ["change_attributes"]


def change_attributes(
    model,
    x: torch.Tensor,
    observed: Mapping[str, torch.Tensor],
    new: Mapping[str, Any],
    batch_size: int = 1000,
) -> torch.Tensor:
    """Images ``x`` ``[N, *data_shape]`` re-decoded with changed attributes: E[x | z, y_new],
    z = E_q[z | x, y_old] ``[N, latent_dim]``; returns ``[N, *data_shape]`` on the CPU.

    Args:
        model: a conditional model with ``encode(x, **y)``, ``decode(z, y)``,
            ``attribute_names`` and ``parse_attributes(values, n)`` (as :class:`CVAE` has).
        observed: every attribute's own values ``[N]`` (y_old; as ``batch_from_dataset``
            gives them).
        new: the attributes to change, by name: a class name or index, 0/1, a number (each a
            scalar for every image or ``[N]`` values), checked by ``model.parse_attributes``
            (ConfigError for an unknown name, DataError for a value outside the attribute's
            classes or training range, both listing the valid ones).

    Raises ConfigError (a model without attributes, an empty ``new``) and ShapeError
    (``observed`` values that do not have one value per image).
    """
    if not callable(getattr(model, "parse_attributes", None)) or not getattr(
        model, "attribute_names", ()
    ):
        raise ConfigError(
            f"{type(model).__name__} does not condition on attributes, so there is no y to "
            "change; use an attribute vector (attribute_vector/add_vector) instead."
        )
    if not new:
        raise ConfigError("give at least one attribute to change, e.g. {'shape': 'heart'}.")
    n = len(x)
    for name, v in observed.items():
        if not isinstance(v, torch.Tensor) or v.shape != (n,):
            raise ShapeError(
                f"observed attribute {name!r} must be a tensor [{n}]; got "
                f"{list(getattr(v, 'shape', ()))}."
            )
    y_new = {k: v.cpu() for k, v in observed.items()}
    y_new.update(model.parse_attributes(dict(new), n))
    z = encode_mean(model, x, observed, batch_size)
    out = []
    for i in range(0, n, batch_size):
        chunk = {k: v[i : i + batch_size] for k, v in y_new.items()}
        out.append(decode_mean(model, z[i : i + batch_size], chunk))
    return torch.cat(out)
