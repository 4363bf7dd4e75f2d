"""Observation models p(x | z): decoder output -> a distribution over one whole datapoint.

The library owns the event dimensions: every likelihood returns a distribution whose event
shape is the datapoint's shape, so a user never writes ``to_event``.

>>> import torch
>>> lik = make_likelihood("bernoulli", (1, 2, 2))
>>> lik(torch.zeros(3, 1, 2, 2)).event_shape
torch.Size([1, 2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from pyro_gen.errors import ConfigError, DataError, did_you_mean
from pyro_gen.models.base import check_finite

__all__ = [
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "make_likelihood",
    "LIKELIHOODS",
]


class Likelihood(nn.Module):
    """Base: ``forward(params)`` gives p(x|z); ``mean``/``sample`` turn params into images."""

    name = ""

    def __init__(self, data_shape: Sequence[int]) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def check(self, x: torch.Tensor) -> None:
        """Raise a DataError if ``x`` holds values outside this likelihood's support."""
        check_finite(x)


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels parameterised by logits (never sigmoid outputs)."""

    name = "bernoulli"

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=params).to_event(len(self.data_shape))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)

    def check(self, x: torch.Tensor, alternative: str = " or use likelihood='gaussian'") -> None:
        """DataError unless ``x`` is finite and binary; ``alternative`` ends its advice (a
        model without a Gaussian likelihood, such as MADE, passes "")."""
        check_finite(x)
        binary = (x == 0) | (x == 1)
        if not binary.all():
            bad = x[~binary]
            raise DataError(
                f"a Bernoulli likelihood needs binary data in {{0, 1}}, but {bad.numel()} of "
                f"{x.numel()} values are not (e.g. {bad[:3].tolist()}; range "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]). Binarize the data "
                f"(torch.bernoulli(x) or x > 0.5){alternative}."
            )


class GaussianLikelihood(Likelihood):
    """N(f(z), diag σ²): σ fixed (``scale``) or learned per pixel (``learn_scale=True``)."""

    name = "gaussian"

    def __init__(self, data_shape: Sequence[int], scale: float = 0.1, learn_scale: bool = False):
        super().__init__(data_shape)
        if not scale > 0:
            raise ConfigError(f"the Gaussian likelihood's scale must be > 0; got {scale}.")
        log_scale = torch.full(self.data_shape, math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        scale = self.log_scale.exp().expand(params.shape)
        return dist.Normal(params, scale).to_event(len(self.data_shape))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        noise = torch.randn(params.shape, generator=generator, device=params.device)
        return params + self.log_scale.exp() * noise


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}


def make_likelihood(name: str, data_shape: Sequence[int], **kwargs) -> Likelihood:
    """Build a likelihood by name (``"bernoulli"`` or ``"gaussian"``)."""
    if name not in LIKELIHOODS:
        raise ConfigError(
            f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}."
            + did_you_mean(name, LIKELIHOODS)
        )
    return LIKELIHOODS[name](data_shape, **kwargs)
