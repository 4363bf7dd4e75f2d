"""Drawing x from a decoder model: the seed/generator convention, and the ``sample`` and
``reconstruct`` that the one-decoder models (VAE, learned-prior VAE, hierarchical VAE) share.

A model with a ``decoder`` (z -> the likelihood's parameters), a ``likelihood`` (``mean`` and
``sample`` of those parameters), ``encode(x)`` (the guide's mean of z first) and
``sample_latent(n, generator)`` (z from its prior) gets both methods from
:class:`DecoderSampling`; it writes only how its z is drawn.

>>> import torch
>>> g = make_generator(0, None, torch.device("cpu"))
>>> torch.randn(2, generator=g).equal(torch.randn(2, generator=make_generator(0, None, "cpu")))
True
>>> make_generator(None, None, "cpu") is None
True
"""

from __future__ import annotations

import torch

from pyro_gen.errors import ConfigError

__all__ = ["DecoderSampling", "make_generator"]


def make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device | str
) -> torch.Generator | None:
    """The generator of a draw: ``generator`` when given (used as is, so ``seed`` is then
    ignored), else a new one on ``device`` seeded with ``seed``, else None (torch's global
    random state)."""
    if generator is not None:
        return generator
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


class DecoderSampling:
    """Mixin: ``sample`` and ``reconstruct`` of a model whose x is drawn from
    ``likelihood(decoder(z))``.

    The class provides ``decoder``, ``likelihood``, ``device``, ``encode(x)`` (returning the
    guide's mean of the decoder's input z first) and :meth:`sample_latent`.
    """

    def sample_latent(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``[n, latent_dim]`` draws of the decoder's input z from the model's prior, with
        ``generator`` (None: the global random state)."""
        raise NotImplementedError  # pragma: no cover - each model draws its own z

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool | None = None) -> torch.Tensor:
        """Decode the guide's mean of z: E[x | z = E q(z | x)] ``[N, *data_shape]``, or a
        sample of x when ``mean=False``; None: the mean where the likelihood has one (not an
        autoregressive one), else a sample."""
        z = self.encode(x)[0]
        params = self.decoder(z)
        if mean is None:
            mean = self.likelihood.has_mean
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        mean: bool = False,
    ) -> torch.Tensor:
        """``n`` draws of x ``[n, *data_shape]`` from the model: z ~ p(z)
        (:meth:`sample_latent`), x ~ p(x | z) (``mean=True``: E[x | z]).

        Pass ``seed`` or a ``torch.Generator`` (on the model's device) for reproducible draws
        (:func:`make_generator`). Raises ConfigError for ``n < 1``.
        """
        if int(n) < 1:
            raise ConfigError(f"the number of samples must be >= 1; got {n}.")
        g = make_generator(seed, generator, self.device)
        params = self.decoder(self.sample_latent(int(n), g))
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params, g)
