"""A hierarchical VAE with two stochastic layers and a top-down guide.

    model:  p(z2) = N(0, I),   p(z1 | z2) = N(μ(z2), diag σ(z2)²),   p(x | z1) = Bernoulli/Gaussian
    guide:  h = f(x) (deterministic, bottom-up),
            q(z2 | x) = N(g2(h)),   q(z1 | x, z2) = N(g1(h, z2))     (top-down: z2 first)

The guide samples in the model's order, as the top-down inference of the ladder VAE (Sønderby
et al. 2016) and of Burda et al. (2016, §5)'s two-layer networks with the bottom-up features
shared; the ELBO splits into one KL per layer, KL(q(z2|x) ‖ p(z2)) + E_q(z2) KL(q(z1|x,z2) ‖
p(z1|z2)), which ``diagnose`` reports per site (``Diagnostics.per_site``), with the active units
of each layer. Every site sits under the ``"data"`` plate, so ``log_likelihood``, ``elbo="iwae"``
and the contract's tools need nothing new.

The defaults are Burda et al.'s two-layer MNIST network: 784-100-100-(z1 100)-50-50-(z2 50).
``hidden=()`` and ``hidden_top=()`` make every map linear (a linear-Gaussian model with
``likelihood="gaussian"``: the tests check ``log_likelihood`` against its closed form).

>>> import torch
>>> m = HierarchicalVAE(data_shape=(6,), latent_dims=(3, 2), hidden=(8,), hidden_top=(4,))
>>> m.sample(2, seed=0).shape
torch.Size([2, 6])
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_gen.errors import ConfigError, did_you_mean
from pyro_gen.models.base import GenerativeModel, check_data_shape
from pyro_gen.models.likelihoods import (
    DEFAULT_AR_HIDDEN,
    DEFAULT_SCALE,
    likelihood_from_args,
)
from pyro_gen.models.registry import register_model
from pyro_gen.models.sampling import DecoderSampling
from pyro_gen.nn import ACTIVATIONS, MLP, MLPDecoder
from pyro_gen.nn.heads import GaussianHead, numel

__all__ = ["HierarchicalVAE"]


def _trunk(in_features: int, hidden: Sequence[int], activation: str) -> tuple[nn.Module, int]:
    """``in -> hidden...`` with an activation after every layer (Identity when no hidden)."""
    if not hidden:
        return nn.Identity(), in_features
    body = MLP(in_features, hidden[:-1], hidden[-1], activation)
    return nn.Sequential(body, ACTIVATIONS[activation]()), hidden[-1]


@register_model("hvae")
class HierarchicalVAE(DecoderSampling, GenerativeModel):
    """Two stochastic layers z2 -> z1 -> x with a top-down guide (module docstring).

    Args:
        data_shape: shape of one datapoint.
        latent_dims: (size of z1, size of z2).
        hidden: widths between x and z1 (encoder trunk; the decoder mirrors them).
        hidden_top: widths between z1 and z2 (q(z2|x) on top of the trunk, p(z1|z2)).
        likelihood: ``"bernoulli"``, ``"gaussian"`` (``scale``, ``learn_scale`` as the VAE) or
            ``"autoregressive"`` (binary pixels, each also conditioned on the pixels before
            it by a MADE: :class:`~pyro_gen.models.likelihoods.AutoregressiveLikelihood`).
        ar_hidden: the hidden widths of that MADE (``likelihood="autoregressive"`` only).
        activation: ``"relu"``, ``"tanh"``, ``"elu"`` or ``"softplus"``.
        beta: the KL weight of the training objective (> 0; the trainer's β target).
    """

    capturable = True
    # why traverse, interpolate and edit (one z: encode -> (loc, scale), decode(z)) do not apply
    lacks_latent_tools = (
        "its latent is two layers (z1 below z2), while the latent verbs move along one z "
        "(encode(x) -> (loc, scale), decode(z)); sample, reconstruct and evaluate work"
    )

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dims: Sequence[int] = (100, 50),
        hidden: Sequence[int] = (100, 100),
        hidden_top: Sequence[int] = (50, 50),
        likelihood: str = "bernoulli",
        activation: str = "tanh",
        beta: float = 1.0,
        scale: float = DEFAULT_SCALE,
        learn_scale: bool = False,
        ar_hidden: Sequence[int] = DEFAULT_AR_HIDDEN,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        whole = (
            not isinstance(latent_dims, (str, bytes))
            and isinstance(latent_dims, Sequence)
            and all(
                isinstance(d, (int, float)) and not isinstance(d, bool) and float(d).is_integer()
                for d in latent_dims
            )
        )
        dims = tuple(int(d) for d in latent_dims) if whole else ()
        if len(dims) != 2 or min(dims) < 1:  # 8.5 or True would be truncated silently
            raise ConfigError(
                f"latent_dims must be two whole sizes >= 1 (z1, z2), e.g. [100, 50]; got "
                f"{latent_dims!r}."
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
                + did_you_mean(str(activation), ACTIVATIONS)
            )
        if not 0 < float(beta) < float("inf"):
            raise ConfigError(
                f"beta must be finite and > 0 for the hierarchical VAE; got {beta} (a β = 0 "
                "autoencoder is VAE(beta=0))."
            )
        self.beta = float(beta)
        self.latent_dims = dims
        hidden = tuple(int(h) for h in hidden)
        hidden_top = tuple(int(h) for h in hidden_top)
        d1, d2 = dims
        # guide: bottom-up trunk h = f(x); q(z2 | h); q(z1 | h, z2)
        self.q_trunk, h_dim = _trunk(numel(self.data_shape), hidden, activation)
        top, top_dim = _trunk(h_dim, hidden_top, activation)
        self.q_z2 = nn.Sequential(top, GaussianHead(top_dim, d2))
        merge, merge_dim = _trunk(h_dim + d2, hidden[-1:], activation)
        self.q_z1 = nn.Sequential(merge, GaussianHead(merge_dim, d1))
        # model: p(z1 | z2), p(x | z1)
        body, body_dim = _trunk(d2, hidden_top[::-1], activation)
        self.p_z1 = nn.Sequential(body, GaussianHead(body_dim, d1))
        self.decoder = MLPDecoder(d1, hidden[::-1], self.data_shape, activation)
        self.likelihood = likelihood_from_args(
            likelihood, self.data_shape, scale, learn_scale, ar_hidden
        )

    def check_data(self, x: torch.Tensor) -> None:
        check_data_shape(x, self.data_shape)
        self.likelihood.check(x)

    # -- the Pyro program ----------------------------------------------------------------------
    def model(self, x: torch.Tensor, *, subsample_size: int | None = None) -> torch.Tensor:
        """p(z2) p(z1 | z2) p(x | z1), every site under the plate ``"data"``; returns z1."""
        check_data_shape(x, self.data_shape)
        zeros = x.new_zeros(self.latent_dims[1])
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            xs = x if subsample_size is None else x.index_select(0, idx)
            z2 = pyro.sample("z2", dist.Normal(zeros, zeros + 1).to_event(1))
            loc, scale = self.p_z1(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=xs)
        return z1

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.data_shape)]
        return self.q_trunk(x.reshape(*batch, -1))

    def _q_z1(self, h: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = torch.broadcast_shapes(h.shape[:-1], z2.shape[:-1])
        h = h.expand(*shape, h.shape[-1])
        return self.q_z1(torch.cat([h, z2.expand(*shape, z2.shape[-1])], -1))

    def guide(self, x: torch.Tensor, *, subsample_size: int | None = None) -> torch.Tensor:
        """q(z2 | x) q(z1 | x, z2) (top-down); returns z1."""
        check_data_shape(x, self.data_shape)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            xs = x if subsample_size is None else x.index_select(0, idx)
            h = self._features(xs)
            loc2, scale2 = self.q_z2(h)
            z2 = pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))
            loc1, scale1 = self._q_z1(h, z2)
            return pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))

    # -- conveniences --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's means: E q(z1 | x, z2 = E q(z2 | x)) ``[N, d1]``, E q(z2 | x) ``[N, d2]``."""
        check_data_shape(x, self.data_shape)
        h = self._features(x)
        loc2, _ = self.q_z2(h)
        loc1, _ = self._q_z1(h, loc2)
        return loc1, loc2

    def sample_latent(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``[n, d1]`` draws of z1 from p(z2) p(z1 | z2), the decoder's input; ``sample``
        (x from p(z2) p(z1 | z2) p(x | z1)) and ``reconstruct`` (E[x | z1] at the guide's
        means) come from :class:`~pyro_gen.models.sampling.DecoderSampling`."""
        z2 = torch.randn(int(n), self.latent_dims[1], generator=generator, device=self.device)
        loc, scale = self.p_z1(z2)
        return loc + scale * torch.randn(loc.shape, generator=generator, device=self.device)
