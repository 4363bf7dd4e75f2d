"""The density-ratio trick as a tool: a classifier between two sample sets gives log p(x)/q(x).

Train D(x) = σ(s(x)) on the class-balanced logistic loss (P labelled 1, Q labelled 0). At the
optimum D*(x) = p(x) / (p(x) + q(x)) (Goodfellow et al. 2014, Prop. 1), so

    r(x) = p(x) / q(x) = D*(x) / (1 − D*(x)),    log r(x) = logit D*(x) = s*(x),

and the optimal value of the ½-weighted objective ½ E_P log D + ½ E_Q log(1 − D) is
JSD(P, Q) − log 2 (ibid., Thm. 1), so JSD ≈ value + log 2 (nats, in [0, log 2]). The value is
measured on held-out samples of both sets (on the training samples it is biased upwards).
Sugiyama et al. (2012), "Density ratio estimation in machine learning", for the trick itself.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> p = torch.randn(2000, 1, generator=g)
>>> q = torch.randn(2000, 1, generator=g) + 1.0
>>> est = density_ratio(p, q, steps=300, seed=0)
>>> 0.0 <= est.jsd <= 0.693
True
>>> est.log_ratio(torch.zeros(1, 1)).shape
torch.Size([1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.nn.critic import MLPCritic, train_binary_classifier

__all__ = ["DensityRatio", "density_ratio"]


@dataclass
class DensityRatio:
    """A trained density-ratio estimator.

    Attributes:
        critic: the classifier's network, ``x [N, *shape] -> logit [N]``.
        value: ½ E_P log D + ½ E_Q log(1 − D) on the held-out samples (nats; ≤ 0).
        jsd: ``value + log 2``, the Jensen–Shannon divergence estimate (nats, clipped to
            [0, log 2]).
        accuracy: held-out accuracy of the classifier (class-balanced; 0.5 = no difference seen).
        losses: the training loss of every step.
    """

    critic: nn.Module
    value: float
    jsd: float
    accuracy: float
    losses: list[float] = field(default_factory=list, repr=False)

    @torch.no_grad()
    def log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        """log r(x) = log p(x) − log q(x) ≈ logit D(x), ``[N]`` (nats)."""
        self.critic.eval()
        return self.critic(x)

    @torch.no_grad()
    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) ≈ p(x) / (p(x) + q(x)), ``[N]``."""
        return torch.sigmoid(self.log_ratio(x))


def _split(x: torch.Tensor, holdout: float, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    perm = torch.randperm(x.shape[0], generator=g)
    k = max(1, int(round(holdout * x.shape[0])))
    return x[perm[k:]], x[perm[:k]]


def density_ratio(
    p_samples: torch.Tensor,
    q_samples: torch.Tensor,
    *,
    critic: nn.Module | None = None,
    hidden: Sequence[int] = (64, 64),
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    holdout: float = 0.25,
    seed: int | None = 0,
) -> DensityRatio:
    """Estimate log p(x)/q(x) and JSD(P, Q) from samples by training a classifier.

    Args:
        p_samples, q_samples: ``[N_p, *shape]`` and ``[N_q, *shape]`` floating tensors.
        critic: a network ``x -> logit [N]``; default an :class:`~pyro_gen.nn.critic.MLPCritic`
            with ``hidden`` widths.
        steps, batch_size, lr, weight_decay: Adam on minibatches of ``batch_size`` per class.
        holdout: the fraction of each set kept out of training for ``value``/``jsd``/
            ``accuracy`` (0 < holdout < 1).
        seed: seeds the network's initialisation and the minibatches (None: the global stream).

    Returns a :class:`DensityRatio`. Raises ShapeError (shapes differ), DataError (empty,
    non-finite), ConfigError (bad holdout or steps).
    """
    for name, s in (("p_samples", p_samples), ("q_samples", q_samples)):
        if not isinstance(s, torch.Tensor) or s.dim() < 2 or s.shape[0] < 2:
            raise DataError(
                f"{name} must be a tensor [N, *shape] with N >= 2 (one row per sample); got "
                f"{type(s).__name__}{list(s.shape) if isinstance(s, torch.Tensor) else ''}."
            )
        if not torch.isfinite(s.float()).all():
            raise DataError(f"{name} holds NaN or Inf values.")
    if p_samples.shape[1:] != q_samples.shape[1:]:
        raise ShapeError(
            f"p_samples and q_samples must have the same datapoint shape; got "
            f"{list(p_samples.shape[1:])} and {list(q_samples.shape[1:])}."
        )
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1); got {holdout}.")
    if int(steps) < 1:
        raise ConfigError(f"steps must be >= 1; got {steps}.")
    g = torch.Generator()
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(2**31, ())))
    p_samples, q_samples = p_samples.float(), q_samples.float()
    p_train, p_test = _split(p_samples, holdout, g)
    q_train, q_test = _split(q_samples, holdout, g)
    if critic is None:
        if seed is not None:
            with torch.random.fork_rng():
                torch.manual_seed(int(seed))
                critic = MLPCritic(tuple(p_samples.shape[1:]), hidden)
        else:
            critic = MLPCritic(tuple(p_samples.shape[1:]), hidden)
    losses = train_binary_classifier(
        critic,
        p_train,
        q_train,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        generator=g,
    )
    with torch.no_grad():
        critic.eval()
        sp, sq = critic(p_test), critic(q_test)
        value = float(-0.5 * (F.softplus(-sp).mean() + F.softplus(sq).mean()))
        accuracy = 0.5 * (float((sp > 0).float().mean()) + float((sq <= 0).float().mean()))
    jsd = min(max(value + math.log(2), 0.0), math.log(2))
    return DensityRatio(critic=critic, value=value, jsd=jsd, accuracy=accuracy, losses=losses)
