"""VQ-VAE (van den Oord et al. 2017) as a Pyro model/guide pair, with an autoregressive prior
over its grid of codes so that it can sample.

    p(c) p(x | c):  c ∈ {0..K-1}^{h×w} ~ prior (uniform, or a MADE over the grid, Germain et al.
                    2015), x ~ Bernoulli(logits = decoder(e_c));
    q(c | x):       a point mass on the nearest codes c(x) = argmin_k ‖z_e(x) − e_k‖ (one-hot
                    Categorical: a deterministic encoder).

What is an ELBO here and what is not:

* **The bound.** Because c is discrete, the point-mass guide has a probability (1) and
  log p(x) ≥ E_q[log p(x|c) + log p(c) − log q(c|x)] = log p(x | c(x)) + log p(c(x)). With the
  uniform prior the KL term is h·w·log K (a constant); with the learned prior it is
  −log p_prior(c(x)). ``evaluate_elbo`` reports exactly this, and it is a true lower bound on
  log p(x) of the generative model p(c) p(x|c). Importance sampling with this guide cannot
  tighten it (all K draws are the same c), so ``log_likelihood`` returns the same number.
* **Not an ELBO:** the training loss adds the codebook loss ‖sg[z_e] − e‖² and β·commitment
  ‖z_e − sg[e]‖² (summed over the grid, in squared units, not nats; ``pyro.factor`` site
  ``"vq_loss"``, present in train mode only), and the encoder's gradient is the
  straight-through estimate (the decoder sees z_e + sg[e − z_e]), a biased surrogate: the
  argmin has no gradient. So the training loss is not −ELBO, and its gradient is not the
  ELBO's; the evaluators (eval mode) see the honest program without the factor.
* **The prior** is fitted by maximum likelihood on the codes c(x) of the training data: its
  gradient is that of the ELBO's log p(c(x)) term (the codes carry no gradient). It trains
  jointly with the autoencoder (the codes move under it) and then, with the autoencoder frozen,
  as a second stage (:meth:`VQVAE.prior_only`).

Codebook usage (perplexity exp(H(usage)) and dead codes) comes from :meth:`VQVAE.codebook_usage`.

>>> import torch
>>> from pyro_gen.models import build_model
>>> m = build_model("vqvae", {"data_shape": [1, 8, 8], "num_codes": 8, "code_dim": 4,
...                           "channels": [8, 8], "prior_hidden": [16]})
>>> x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))
>>> m.encode_codes(x).shape, m.sample(2, seed=0).shape
(torch.Size([5, 2, 2]), torch.Size([2, 1, 8, 8]))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pyro
import pyro.distributions as dist
import torch

from pyro_gen.errors import ConfigError, did_you_mean
from pyro_gen.models.autoregressive import AutoregressiveCategorical
from pyro_gen.models.base import GenerativeModel, check_data_shape
from pyro_gen.models.likelihoods import BernoulliLikelihood
from pyro_gen.models.registry import register_model
from pyro_gen.models.sampling import make_generator
from pyro_gen.nn.made import MADE
from pyro_gen.nn.mlp import ACTIVATIONS
from pyro_gen.nn.vq import (
    GridDecoder,
    GridEncoder,
    VectorQuantizer,
    codebook_stats,
    grid_shape,
    straight_through,
)

__all__ = ["VQVAE", "PRIORS"]

PRIORS = ("made", "uniform")


@register_model("vqvae")
class VQVAE(GenerativeModel):
    """A VQ-VAE on binary images with a uniform or autoregressive (MADE) prior over its codes.

    ``capturable = True``: no Python state between calls (the VQ losses are a ``pyro.factor``
    that depends on the module's train/eval mode, which is part of a capture's key).
    ``loss_description``: what the training loss is (−ELBO plus the VQ losses), for the report.

    Args:
        data_shape: ``[C, H, W]`` with H and W divisible by ``2**len(channels)``.
        num_codes: K, the codebook size.
        code_dim: D, the size of a code vector.
        channels: conv channels of the encoder (one stride-2 halving each; the decoder mirrors).
        prior: ``"made"`` (an autoregressive MADE over the h×w code grid) or ``"uniform"``.
        prior_hidden: hidden widths of the prior's MADE.
        commitment: β of the commitment loss (van den Oord et al. used 0.25).
        normalize: look codes up by cosine similarity (encoder outputs and codes of unit
            length, Yu et al. 2022): far fewer dead codes than the Euclidean lookup.
        activation: of the conv networks and the MADE.
        seed: seeds the MADE's mask.
    """

    capturable = True
    #: what the training loss is, for the report's caption of the training curve (a model may
    #: declare it; without one the caption follows the run's objective: −ELBO, −L_k)
    loss_description = (
        "−ELBO + codebook + commitment losses, not an ELBO: the VQ losses are in squared "
        "units, not nats"
    )

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        num_codes: int = 64,
        code_dim: int = 16,
        channels: Sequence[int] = (32, 64),
        prior: str = "made",
        prior_hidden: Sequence[int] = (512,),
        commitment: float = 0.25,
        normalize: bool = True,
        activation: str = "relu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        channels = tuple(int(c) for c in channels)
        if prior not in PRIORS:
            raise ConfigError(
                f"unknown prior {prior!r}; choose one of {PRIORS}." + did_you_mean(prior, PRIORS)
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose {sorted(ACTIVATIONS)}.")
        if not float(commitment) >= 0:
            raise ConfigError(f"commitment must be >= 0; got {commitment}.")
        self.commitment = float(commitment)
        self.grid = grid_shape(self.data_shape, len(channels))
        self.num_codes, self.code_dim = int(num_codes), int(code_dim)
        self.encoder = GridEncoder(self.data_shape, self.code_dim, channels, activation)
        self.quantizer = VectorQuantizer(self.num_codes, self.code_dim, normalize)
        self.decoder = GridDecoder(self.code_dim, self.data_shape, channels[::-1], activation)
        self.likelihood = BernoulliLikelihood(self.data_shape)
        self.prior = prior
        self.prior_net = (
            MADE(
                self.grid[0] * self.grid[1],
                prior_hidden,
                in_per_var=self.num_codes,
                out_per_var=self.num_codes,
                activation=activation,
                seed=seed,
            )
            if prior == "made"
            else None
        )

    # -- pieces ------------------------------------------------------------------------------
    def check_data(self, x: torch.Tensor) -> None:
        check_data_shape(x, self.data_shape)
        self.likelihood.check(x)

    def prior_distribution(self) -> dist.TorchDistribution:
        """p(c) over one code grid (event shape ``[h, w]``, integer values in 0..K-1)."""
        if self.prior_net is None:
            zeros = self.quantizer.codebook.new_zeros(self.num_codes)
            return dist.Categorical(logits=zeros).expand(self.grid).to_event(2)
        return AutoregressiveCategorical(self.prior_net, self.grid, self.num_codes)

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """c(x): the nearest codes ``[N, h, w]`` (long)."""
        check_data_shape(x, self.data_shape)
        return self.quantizer.nearest(self.encoder(x))

    def decode(self, codes: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """p(x=1 | c) (``mean=True``) or the logits ``[..., C, H, W]`` of codes ``[..., h, w]``."""
        logits = self.decoder(self.quantizer.embed(codes))
        return torch.sigmoid(logits) if mean else logits

    # -- the Pyro program ----------------------------------------------------------------------
    def model(self, x: torch.Tensor, *, subsample_size: int | None = None) -> torch.Tensor:
        """c ~ p(c), x ~ p(x | e_c) under the plate ``"data"``. In train mode the decoder is fed
        the straight-through z_e + sg[e_c − z_e] (the same value) and the VQ losses enter as the
        factor ``"vq_loss"`` (not part of the model's density; absent in eval mode)."""
        check_data_shape(x, self.data_shape)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            xs = x if subsample_size is None else x.index_select(0, idx)
            codes = pyro.sample("z", self.prior_distribution())
            e = self.quantizer.embed(codes)
            if self.training:
                z_e = self.quantizer.project(self.encoder(xs))
                codebook, commit = self.quantizer.losses(z_e, e)
                pyro.factor("vq_loss", -(codebook + self.commitment * commit), has_rsample=True)
                e = straight_through(z_e, e)
            pyro.sample("x", self.likelihood(self.decoder(e)), obs=xs)
        return codes

    def guide(self, x: torch.Tensor, *, subsample_size: int | None = None) -> torch.Tensor:
        """q(c | x): a point mass on the nearest codes, as a one-hot Categorical (it has a
        probability, 1, so the ELBO and importance weights are defined)."""
        check_data_shape(x, self.data_shape)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            xs = x if subsample_size is None else x.index_select(0, idx)
            codes = self.quantizer.nearest(self.encoder(xs))
            onehot = codes.unsqueeze(-1) == torch.arange(self.num_codes, device=x.device)
            logits = torch.zeros(onehot.shape, dtype=x.dtype, device=x.device)
            logits = logits.masked_fill(~onehot, float("-inf"))
            return pyro.sample("z", dist.Categorical(logits=logits).to_event(2))

    # -- training stages and reports -----------------------------------------------------------
    @contextlib.contextmanager
    def prior_only(self) -> Iterator[None]:
        """The second stage: inside, only the prior's parameters require gradients (encoder,
        codebook and decoder frozen), so the same objective fits p(c) to the codes c(x) by
        maximum likelihood. Build the trainer inside the block:
        ``with model.prior_only(): Trainer(model, ...).fit(x)``.
        """
        if self.prior_net is None:
            raise ConfigError("prior='uniform' has nothing to train in a prior-only stage.")
        prior_ids = {id(p) for p in self.prior_net.parameters()}
        frozen = [p for p in self.parameters() if id(p) not in prior_ids and p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    @torch.no_grad()
    def codebook_usage(self, x: torch.Tensor, batch_size: int = 1000) -> dict:
        """Perplexity exp(H) of the codes' usage over ``x`` (1 = one code, K = uniform), codes
        used and dead codes (never the nearest for any position of any image)."""
        codes = torch.cat(
            [self.encode_codes(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        )
        return codebook_stats(codes, self.num_codes)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Decode the nearest codes: p(x=1 | c(x)) (or a binary sample when ``mean=False``)."""
        probs = self.decode(self.encode_codes(x))
        return probs if mean else torch.bernoulli(probs)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        mean: bool = False,
    ) -> torch.Tensor:
        """``n`` images: codes from the prior (position by position for ``prior="made"``), then
        x ~ p(x | c) (``mean=True``: p(x=1 | c))."""
        if int(n) < 1:
            raise ConfigError(f"the number of samples must be >= 1; got {n}.")
        generator = make_generator(seed, generator, self.device)
        if self.prior_net is None:  # uniform: every code independently
            shape = (int(n), *self.grid)
            codes = torch.randint(self.num_codes, shape, generator=generator, device=self.device)
        else:
            codes = self.prior_distribution().sample((int(n),), generator=generator)
        probs = self.decode(codes)
        return probs if mean else torch.bernoulli(probs, generator=generator)
