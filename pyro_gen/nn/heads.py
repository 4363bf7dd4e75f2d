"""Output heads shared by encoders.

>>> import torch
>>> loc, scale = GaussianHead(4, 2)(torch.zeros(3, 4))
>>> bool((scale > 0).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GaussianHead", "numel"]


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a shape."""
    n = 1
    for s in shape:
        n *= int(s)
    return n


class GaussianHead(nn.Module):
    """Features -> (loc, scale) of a diagonal Gaussian; ``scale = softplus(.) + min_scale``."""

    def __init__(self, in_features: int, out_features: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.loc = nn.Linear(in_features, out_features)
        self.raw_scale = nn.Linear(in_features, out_features)
        self.min_scale = min_scale

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), F.softplus(self.raw_scale(h)) + self.min_scale
