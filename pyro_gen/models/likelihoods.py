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
from pyro_gen.nn.made import MADE

__all__ = [
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "AutoregressiveLikelihood",
    "make_likelihood",
    "likelihood_from_args",
    "UnusedArgumentError",
    "has_mean_image",
    "LIKELIHOODS",
    "DEFAULT_SCALE",
    "DEFAULT_AR_HIDDEN",
]

DEFAULT_SCALE = 0.1  # σ of the Gaussian likelihood unless a model asks for another
DEFAULT_AR_HIDDEN = (500,)  # the autoregressive likelihood's MADE widths


class Likelihood(nn.Module):
    """Base: ``forward(params)`` gives p(x|z); ``mean``/``sample`` turn params into images."""

    name = ""
    has_mean = True  # E[x | z] in closed form (``mean``)

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

    def __init__(
        self, data_shape: Sequence[int], scale: float = DEFAULT_SCALE, learn_scale: bool = False
    ):
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


class _ConditionalMADE(nn.Module):
    """Logits of p(x_d | x_<d, z): the decoder's per-pixel logits ``c`` (the context) plus a
    MADE's autoregressive correction, which also sees ``c`` through its first layer."""

    def __init__(self, num_vars: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.made = MADE(num_vars, hidden, activation=activation, context_features=num_vars)

    def forward(self, x: torch.Tensor, mask: int = 0, *, context: torch.Tensor) -> torch.Tensor:
        return self.made(x, mask, context=context) + context


class AutoregressiveLikelihood(BernoulliLikelihood):
    """Binary pixels, each conditioned on z *and the pixels before it* (row-major):
    p(x | z) = Π_d Bernoulli(x_d; logits = c_d + MADE(x_<d, c)_d), c = the decoder's output.

    A MADE decoder (Germain et al. 2015) made conditional, as the autoregressive decoders of
    PixelVAE / the variational lossy autoencoder (Gulrajani et al. 2017; Chen et al. 2017): it
    models the local pixel correlations a factorised Bernoulli cannot, so the latents are free
    to carry the global structure. ``log_prob`` is exact (one network pass); ``sample`` draws
    pixel by pixel (D passes); there is no closed-form mean, so ``mean`` raises ConfigError.

    Args:
        data_shape: one image's shape.
        hidden: the MADE's hidden widths.
        activation: its activation (``"relu"`` ...).
    """

    name = "autoregressive"
    has_mean = False

    def __init__(
        self,
        data_shape: Sequence[int],
        hidden: Sequence[int] = DEFAULT_AR_HIDDEN,
        activation: str = "relu",
    ) -> None:
        super().__init__(data_shape)
        self.num_vars = math.prod(self.data_shape)
        self.net = _ConditionalMADE(self.num_vars, hidden, activation)

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        from pyro_gen.models.autoregressive import AutoregressiveBernoulli  # imports this module

        lead = params.shape[: params.dim() - len(self.data_shape)]
        context = params.reshape(*lead, self.num_vars)
        return AutoregressiveBernoulli(self.net, self.data_shape, lead, context=context)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise ConfigError(
            "an autoregressive likelihood has no closed-form mean image E[x | z] (each pixel "
            "depends on the ones drawn before it), and this asks for one. Draw x instead: "
            "mean=False in Python, pyro-gen sample or generate without --mean, pyro-gen "
            "quality --no-mean; the latent verbs (traverse, interpolate, edit) show means "
            "E[x | z] and do not apply to it."
        )

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.forward(params).sample(generator=generator)


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "autoregressive": AutoregressiveLikelihood,
}


class UnusedArgumentError(ConfigError):
    """Constructor arguments that the chosen likelihood would ignore (``names``)."""

    def __init__(self, names: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.names = list(names)


def likelihood_from_args(
    name: str,
    data_shape: Sequence[int],
    scale: float = DEFAULT_SCALE,
    learn_scale: bool = False,
    ar_hidden: Sequence[int] = DEFAULT_AR_HIDDEN,
) -> Likelihood:
    """The likelihood a model's constructor asks for, with the arguments that belong to it
    (``scale``/``learn_scale``: gaussian; ``ar_hidden``: autoregressive). An argument set away
    from its default for another likelihood would be ignored: ConfigError instead."""
    ar_hidden = tuple(int(h) for h in ar_hidden)
    unused = {
        "scale": name != "gaussian" and float(scale) != DEFAULT_SCALE,
        "learn_scale": name != "gaussian" and bool(learn_scale),
        "ar_hidden": name != "autoregressive" and ar_hidden != DEFAULT_AR_HIDDEN,
    }
    if any(unused.values()):
        names = [k for k, v in unused.items() if v]
        raise UnusedArgumentError(
            names,
            f"{', '.join(names)} would have no effect with likelihood={name!r} (scale and "
            "learn_scale are the gaussian likelihood's, ar_hidden the autoregressive one's); "
            "leave it out or choose that likelihood.",
        )
    kwargs = {
        "gaussian": {"scale": scale, "learn_scale": learn_scale},
        "autoregressive": {"hidden": ar_hidden},
    }.get(name, {})
    return make_likelihood(name, data_shape, **kwargs)


def make_likelihood(name: str, data_shape: Sequence[int], **kwargs) -> Likelihood:
    """Build a likelihood by name (``"bernoulli"``, ``"gaussian"`` or ``"autoregressive"``)."""
    if name not in LIKELIHOODS:
        raise ConfigError(
            f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}."
            + did_you_mean(name, LIKELIHOODS)
        )
    return LIKELIHOODS[name](data_shape, **kwargs)


def has_mean_image(model) -> bool:
    """Whether ``model``'s images can be E[x | z]: its likelihood has a closed-form mean (not
    an autoregressive one); True for a model without a ``likelihood``."""
    return bool(getattr(getattr(model, "likelihood", None), "has_mean", True))
