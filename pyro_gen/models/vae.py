"""The variational autoencoder as a Pyro model/guide pair.

    p(z) = N(0, I),   p(x | z) = Bernoulli(logits = f(z))  or  N(f(z), diag σ²),
    q(z | x) = N(g(x), diag s(x)²),   β through ``poutine.scale`` on the latent site.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(16,))
>>> vae.sample(3, seed=0).shape
torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from pyro_gen.errors import ConfigError, ShapeError, did_you_mean
from pyro_gen.models.base import GenerativeModel, KLWeighted, check_data_shape
from pyro_gen.models.likelihoods import (
    DEFAULT_AR_HIDDEN,
    DEFAULT_SCALE,
    likelihood_from_args,
)
from pyro_gen.models.registry import register_model
from pyro_gen.models.sampling import DecoderSampling
from pyro_gen.nn import ACTIVATIONS, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

__all__ = ["VAE", "NETWORKS"]

NETWORKS = ("mlp", "conv")


@register_model("vae")
class VAE(KLWeighted, DecoderSampling, GenerativeModel):
    """A VAE with one stochastic layer.

    ``capturable = True``: the program keeps no Python state between calls, so the trainer may
    replay its loss from a captured graph (``capture="auto"``).

    Args:
        data_shape: shape of one datapoint, e.g. ``(1, 28, 28)`` or ``(784,)``.
        latent_dim: size of z.
        likelihood: ``"bernoulli"`` (binary data, logits), ``"gaussian"`` or
            ``"autoregressive"`` (binary pixels, each also conditioned on the pixels before it
            by a MADE: :class:`~pyro_gen.models.likelihoods.AutoregressiveLikelihood`).
        network: ``"mlp"`` or ``"conv"`` (images ``[C, H, W]``).
        hidden: hidden widths of the MLP encoder (the decoder mirrors them).
        channels: channels of the conv encoder (the decoder mirrors them).
        beta: the KL weight its training objective uses (the trainer's β target; the model
            p(z) p(x|z) itself has no β); 0 is a plain autoencoder (point-mass guide, no prior).
        scale, learn_scale: σ of the Gaussian likelihood, fixed or learned per pixel.
        ar_hidden: the MADE's hidden widths of the autoregressive likelihood.
        activation: ``"relu"``, ``"tanh"``, ``"elu"`` or ``"softplus"``.
    """

    capturable = True

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 16,
        likelihood: str = "bernoulli",
        network: str = "mlp",
        hidden: Sequence[int] = (512, 256),
        channels: Sequence[int] = (32, 64, 64),
        beta: float = 1.0,
        scale: float = DEFAULT_SCALE,
        learn_scale: bool = False,
        ar_hidden: Sequence[int] = DEFAULT_AR_HIDDEN,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if int(latent_dim) < 1:
            raise ConfigError(f"latent_dim must be >= 1; got {latent_dim}.")
        self.latent_dim = int(latent_dim)
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
                + did_you_mean(str(activation), ACTIVATIONS)
            )
        self.beta = beta
        if network == "mlp":
            hidden = tuple(int(h) for h in hidden)
            if not hidden:
                raise ConfigError("hidden needs at least one width for network='mlp'.")
            self.encoder = MLPEncoder(self.data_shape, self.latent_dim, hidden, activation)
            self.decoder = MLPDecoder(self.latent_dim, hidden[::-1], self.data_shape, activation)
        elif network == "conv":
            channels = tuple(int(c) for c in channels)
            self.encoder = ConvEncoder(self.data_shape, self.latent_dim, channels, 256, activation)
            self.decoder = ConvDecoder(
                self.latent_dim, self.data_shape, channels[::-1], 256, activation
            )
        else:
            raise ConfigError(
                f"unknown network {network!r}; choose one of {NETWORKS}."
                + did_you_mean(network, NETWORKS)
            )
        self.likelihood = likelihood_from_args(
            likelihood, self.data_shape, scale, learn_scale, ar_hidden
        )
        self._check_decoder()

    # -- checks --------------------------------------------------------------------------------
    def _check_decoder(self) -> None:
        with torch.no_grad():
            out = self.decoder(torch.zeros(2, self.latent_dim))
        if tuple(out.shape[1:]) != self.data_shape:
            raise ShapeError(
                f"the decoder maps z of shape [2, {self.latent_dim}] to {list(out.shape)}, but "
                f"datapoints have shape {list(self.data_shape)}; the decoder's output must be "
                f"[N, {', '.join(map(str, self.data_shape))}]."
            )

    def check_data(self, x: torch.Tensor) -> None:
        check_data_shape(x, self.data_shape)
        self.likelihood.check(x)

    # -- the Pyro program ----------------------------------------------------------------------
    def model(self, x: torch.Tensor, *, subsample_size: int | None = None) -> torch.Tensor:
        """p(z) p(x | z): z ~ N(0, I), x observed under the plate ``"data"``. β is not part of
        the model: the objective weights the latent sites (``SVIStep.beta``, ``ScaleLatents``)."""
        check_data_shape(x, self.data_shape)
        zeros = x.new_zeros(self.latent_dim)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            xs = x if subsample_size is None else x.index_select(0, idx)
            z = pyro.sample("z", dist.Normal(zeros, zeros + 1).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=xs)
        return z

    def guide(self, x: torch.Tensor, *, subsample_size: int | None = None) -> torch.Tensor:
        """q(z | x) = N(g(x), diag s(x)²); a point mass at g(x) when β = 0."""
        check_data_shape(x, self.data_shape)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            xs = x if subsample_size is None else x.index_select(0, idx)
            loc, scale = self.encoder(xs)
            if self.beta == 0:
                return pyro.sample("z", dist.Delta(loc).to_event(1))
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- conveniences --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q(z | x), each ``[N, latent_dim]``."""
        check_data_shape(x, self.data_shape)
        return self.encoder(x)

    def decode(self, z: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """E[x | z] (``mean=True``) or the decoder's raw distribution parameters."""
        if z.shape[-1] != self.latent_dim:
            raise ShapeError(
                f"z must end in the latent size {self.latent_dim}; got shape {list(z.shape)}."
            )
        params = self.decoder(z)
        return self.likelihood.mean(params) if mean else params

    def sample_latent(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``[n, latent_dim]`` draws of z ~ N(0, I); ``sample`` and ``reconstruct`` come from
        :class:`~pyro_gen.models.sampling.DecoderSampling`."""
        return torch.randn(int(n), self.latent_dim, generator=generator, device=self.device)
