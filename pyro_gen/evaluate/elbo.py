"""The ELBO of a trained model, split into reconstruction and KL, per datapoint and on average.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> r = evaluate_elbo(vae, torch.ones(10, 4), num_particles=2)
>>> abs(r.summary()["elbo"] - (r.summary()["reconstruction"] - r.summary()["kl"])) < 1e-4
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pyro_gen.evaluate.log_likelihood import check_guide
from pyro_gen.evaluate.terms import TraceSiteError, elbo_terms
from pyro_gen.models.pair import as_pair, evaluating

__all__ = ["ELBOResult", "evaluate_elbo"]


@dataclass
class ELBOResult:
    """Per-datapoint ``elbo = reconstruction - kl`` (nats), each ``[N]``."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    num_particles: int
    note: str = ""  # set when the numbers are not a bound on log p(x) (β = 0 autoencoder)

    @property
    def is_bound(self) -> bool:
        return not self.note

    def summary(self) -> dict[str, float]:
        n = self.elbo.numel()
        extra = {} if self.is_bound else {"is_bound": False, "note": self.note}
        return {
            "elbo": float(self.elbo.mean()),
            "elbo_se": float(self.elbo.std() / n**0.5) if n > 1 else float("nan"),
            "reconstruction": float(self.reconstruction.mean()),
            "kl": float(self.kl.mean()),
            "num_datapoints": n,
            "num_particles": self.num_particles,
            **extra,
        }


@torch.no_grad()
def evaluate_elbo(
    model,
    x: torch.Tensor,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    num_particles: int = 1,
    batch_size: int = 1000,
    seed: int | None = 0,
) -> ELBOResult:
    """ELBO, E_q log p(x|z) and KL(q(z|x) ‖ p(z)) (analytic where known) for each row of ``x``.

    β does not enter: this is the model's true bound on log p(x) — except for a point-mass guide
    (a β = 0 autoencoder), where the result says so in ``note`` and ``is_bound`` is False.
    Data moves to the module's device in chunks of ``batch_size``; ``seed`` fixes the noise.
    """
    pair = as_pair(model, guide, module)
    if pair.check_data is not None:
        pair.check_data(x)
    note = ""
    try:
        check_guide(pair, x)
    except TraceSiteError as e:
        note = f"not a bound on log p(x): {e} The 'elbo' here is the reconstruction term only."
    parts = []
    with evaluating(pair.module, seed):
        for start in range(0, x.shape[0], batch_size):
            xs = x[start : start + batch_size].to(pair.device)
            parts.append(elbo_terms(pair.model, pair.guide, xs, num_particles=num_particles))
    cat = {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}
    return ELBOResult(cat["elbo"], cat["reconstruction"], cat["kl"], num_particles, note)
