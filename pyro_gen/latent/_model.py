"""How latent tools talk to a model: ``encode(x, **condition) -> (loc, scale)`` and
``decode(z[, condition]) -> E[x | z]`` (a VAE; a CVAE with its attributes fixed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pyro_gen.errors import ConfigError

__all__ = ["encode_mean", "decode_mean", "encode_stats"]


def _check(model, method: str) -> None:
    if not callable(getattr(model, method, None)):
        raise ConfigError(
            f"{type(model).__name__} has no {method}() method; latent tools need a model with "
            "encode(x) -> (loc, scale) and decode(z) -> E[x|z] (as VAE and CVAE have)."
        )


@torch.no_grad()
def encode_stats(
    model, x: torch.Tensor, condition: Mapping[str, Any] | None = None, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of q(z | x [, y]) ``[N, L]`` each, in chunks, on the CPU."""
    _check(model, "encode")
    condition = dict(condition or {})
    dev = getattr(model, "device", torch.device("cpu"))
    locs, scales = [], []
    for i in range(0, len(x), batch_size):
        kw = {k: v[i : i + batch_size].to(dev) for k, v in condition.items()}
        loc, scale = model.encode(x[i : i + batch_size].to(dev), **kw)
        locs.append(loc.cpu())
        scales.append(scale.cpu())
    return torch.cat(locs), torch.cat(scales)


def encode_mean(
    model, x: torch.Tensor, condition: Mapping[str, Any] | None = None, batch_size: int = 1000
) -> torch.Tensor:
    """The guide's mean E_q[z | x] ``[N, L]`` (on the CPU)."""
    return encode_stats(model, x, condition, batch_size)[0]


@torch.no_grad()
def decode_mean(model, z: torch.Tensor, condition: Mapping[str, Any] | None = None) -> torch.Tensor:
    """E[x | z [, y]] ``[N, *data_shape]`` (on the CPU); ``condition`` holds every attribute of
    a conditional model (values ``[N]`` or scalars, as ``CVAE.decode`` takes them)."""
    _check(model, "decode")
    dev = getattr(model, "device", torch.device("cpu"))
    if condition:
        return model.decode(z.to(dev), dict(condition)).cpu()
    return model.decode(z.to(dev)).cpu()
