"""Interpolation between latent codes: linear and spherical.

    lerp(z0, z1, t) = (1 − t) z0 + t z1
    slerp(z0, z1, t) = sin((1 − t) θ) / sin θ · z0 + sin(t θ) / sin θ · z1,  cos θ = ẑ0 · ẑ1

(Shoemake 1985; White 2016 for generative models: under a Gaussian prior, codes concentrate
near a sphere of radius ≈ √L, which the straight line cuts through — slerp keeps the norm
when the ends have equal norms, and otherwise interpolates the norms monotonically.)
Near-parallel ends (sin θ ≈ 0) fall back to lerp.

>>> import torch
>>> z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
>>> slerp(z0, z1, torch.tensor([0.5])).norm(dim=-1)
tensor([1.0000])
>>> lerp(z0, z1, torch.tensor([0.5])).norm(dim=-1)
tensor([0.7071])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pyro_gen.errors import ConfigError, ShapeError
from pyro_gen.latent._model import decode_mean, encode_mean

__all__ = ["lerp", "slerp", "interpolate", "path_condition", "INTERPOLATIONS"]

INTERPOLATIONS = ("lerp", "slerp")


def _prepare(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor | int):
    if z0.shape != z1.shape:
        raise ShapeError(
            f"z0 and z1 must have the same shape; got {list(z0.shape)} and {list(z1.shape)}."
        )
    if isinstance(t, int):
        t = torch.linspace(0, 1, t)
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    if t.dim() != 1:
        raise ShapeError(f"t must be 1-D (the steps); got shape {list(t.shape)}.")
    return t.view(-1, *([1] * z0.dim())), t


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """``[T, *z.shape]``: the straight line at each t (a 1-D tensor, or a number of equal steps
    from 0 to 1 inclusive)."""
    tt, _ = _prepare(z0, z1, t)
    return (1 - tt) * z0 + tt * z1


def slerp(
    z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor | int, eps: float = 1e-6
) -> torch.Tensor:
    """``[T, *z.shape]``: spherical interpolation along the last axis (codes ``[..., L]``), the
    great circle between the directions with the norms blended as the sine weights do; exact
    endpoints at t = 0 and 1; lerp where the ends are (anti)parallel within ``eps``."""
    tt, _ = _prepare(z0, z1, t)
    n0, n1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    cos = ((z0 * z1).sum(-1, keepdim=True) / (n0 * n1).clamp_min(1e-12)).clamp(-1, 1)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    safe = sin.abs() > eps
    s = torch.where(safe, sin, torch.ones_like(sin))
    w0 = torch.where(safe, torch.sin((1 - tt) * theta) / s, 1 - tt)
    w1 = torch.where(safe, torch.sin(tt * theta) / s, tt)
    return w0 * z0 + w1 * z1


def _attribute_kinds(model) -> dict[str, str]:
    return {a["name"]: a.get("kind", "") for a in getattr(model, "attributes", ()) or ()}


def path_condition(
    model,
    condition0: Mapping[str, Any],
    condition1: Mapping[str, Any],
    t: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The attributes along N paths of ``len(t)`` steps, flattened to ``[N * T]`` (pair-major):
    continuous attributes (``kind == "continuous"`` in ``model.attributes``) are interpolated
    linearly, (1 − t) y0 + t y1; classes and flags are x0's for t < 0.5 and x1's from t ≥ 0.5,
    so each end keeps its own attributes."""
    kinds = _attribute_kinds(model)
    if set(condition0) != set(condition1):
        raise ConfigError(
            f"condition and condition1 must name the same attributes; got {sorted(condition0)} "
            f"and {sorted(condition1)}."
        )
    out: dict[str, torch.Tensor] = {}
    for k in condition0:
        y0, y1 = torch.as_tensor(condition0[k]), torch.as_tensor(condition1[k])
        if y0.shape != y1.shape:
            raise ShapeError(
                f"attribute {k!r}: the ends' values have shapes {list(y0.shape)} and "
                f"{list(y1.shape)}."
            )
        tt = t.to(torch.float32).view(1, -1)  # [1, T]
        if kinds.get(k) == "continuous":
            y = (1 - tt) * y0.float().unsqueeze(1) + tt * y1.float().unsqueeze(1)
        else:
            y = torch.where(tt < 0.5, y0.unsqueeze(1), y1.unsqueeze(1))  # [N, T]
        out[k] = y.reshape(-1)
    return out


def interpolate(
    model,
    x0: torch.Tensor,
    x1: torch.Tensor,
    steps: int = 8,
    method: str = "slerp",
    condition: Mapping[str, Any] | None = None,
    condition1: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Decoded interpolations ``[N, steps, *data_shape]`` between the codes E_q[z | x0] and
    E_q[z | x1] of N pairs of images (``[N, *data_shape]`` each); the ends are the
    reconstructions of x0 and x1.

    A conditional model (a CVAE) takes x0's attributes in ``condition`` and x1's in
    ``condition1`` (values ``[N]``): each image is encoded with its own, and the steps decode
    with :func:`path_condition` (continuous attributes interpolated, classes and flags x0's
    for t < 0.5 and x1's after). Without ``condition1`` x1 uses ``condition`` too (the same
    attributes at both ends)."""
    if method not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {method!r}; choose one of {INTERPOLATIONS}.")
    if int(steps) < 2:
        raise ConfigError(f"steps must be >= 2 (the two ends); got {steps}.")
    if condition1 is not None and not condition:
        raise ConfigError("condition1 (x1's attributes) needs condition (x0's) as well.")
    if condition and condition1 is None:
        condition1 = condition
    z0, z1 = encode_mean(model, x0, condition), encode_mean(model, x1, condition1)
    t = torch.linspace(0, 1, int(steps))
    path = (slerp if method == "slerp" else lerp)(z0, z1, t)  # [T, N, L]
    n = len(x0)
    flat = path.transpose(0, 1).reshape(n * int(steps), -1)
    cond = path_condition(model, condition, condition1, t) if condition else None
    images = decode_mean(model, flat, cond)
    return images.reshape(n, int(steps), *images.shape[1:])
