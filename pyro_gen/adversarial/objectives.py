"""Adversarial objectives: the critic's and the generator's losses from critic scores.

P is the data, Q the generator's distribution; ``real``/``fake`` are the critic's raw scores
``v [N]`` on samples of P and Q. Every loss is a scalar to *minimise* (nats where it is a
log-probability).

* ``"minimax"`` (Goodfellow et al. 2014, eq. 1): D = σ(v); the critic maximises
  E_P log D + E_Q log(1 − D), the generator minimises E_Q log(1 − D) (it saturates when the
  critic wins). At the optimal critic D* = p / (p + q) the value is 2 JSD(P, Q) − log 4.
* ``"nonsaturating"`` (same paper, §3): the same critic; the generator minimises −E_Q log D.
* f-GAN (Nowozin et al. 2016, Table 6): T = g_f(v) (output activation), the critic maximises
  the variational bound E_P[T] − E_Q[f*(T)] ≤ D_f(P ‖ Q) = ∫ q f(p / q) dx, with equality at
  T* = f'(p / q). The generator minimises −E_Q[g_f(v)] (the paper's practical choice, §3.2):

  ======================  ======================  =====================  ====================
  name                    f(u)                    g_f(v)                 f*(t)
  ======================  ======================  =====================  ====================
  ``"kl"``                u log u                 v                      exp(t − 1)
  ``"reverse_kl"``        −log u                  −exp(−v)               −1 − log(−t)
  ``"js"``                u log u − (u + 1)       log 2 − log(1 + e^−v)  −log(2 − e^t)
                          log((u + 1) / 2)
  ``"pearson"``           (u − 1)²                v                      t² / 4 + t
  ``"hellinger"``         (√u − 1)²               1 − exp(−v)            t / (1 − t)
  ======================  ======================  =====================  ====================

  (``"js"``'s D_f is 2 JSD(P, Q); ``"hellinger"``'s is 2 H²(P, Q) with H² = ½∫(√p − √q)².)
* ``"wgan-gp"`` (Gulrajani et al. 2017, Alg. 1): the critic minimises
  E_Q[v] − E_P[v] + λ E[(‖∇ v(x̂)‖₂ − 1)²] with x̂ uniform on segments between real and fake
  points; the generator minimises −E_Q[v]. E_P[v] − E_Q[v] estimates the Wasserstein-1
  distance.

>>> import torch
>>> real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.0])
>>> round(float(critic_loss("minimax", real, fake)), 4)
0.7233
>>> sorted(F_DIVERGENCES)
['hellinger', 'js', 'kl', 'pearson', 'reverse_kl']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pyro_gen.errors import ConfigError, did_you_mean

__all__ = [
    "OBJECTIVES",
    "F_DIVERGENCES",
    "FDivergence",
    "critic_loss",
    "generator_loss",
    "divergence_estimate",
    "ESTIMATE_LABELS",
    "estimate_label",
    "gradient_penalty",
    "check_objective",
]


@dataclass(frozen=True)
class FDivergence:
    """One f-divergence: its generator ``f`` (on density ratios u = p/q), the critic's output
    activation ``g`` (maps ℝ into the domain of f*) and the convex conjugate ``conjugate``."""

    f: Callable[[torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    conjugate: Callable[[torch.Tensor], torch.Tensor]


def _xlogx(u: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(u, u)


F_DIVERGENCES: dict[str, FDivergence] = {
    "kl": FDivergence(
        f=_xlogx,
        g=lambda v: v,
        conjugate=lambda t: torch.exp(t - 1),
    ),
    "reverse_kl": FDivergence(
        f=lambda u: -torch.log(u),
        g=lambda v: -torch.exp(-v),
        conjugate=lambda t: -1 - torch.log(-t),
    ),
    "js": FDivergence(
        f=lambda u: _xlogx(u) - (u + 1) * torch.log((u + 1) / 2),
        g=lambda v: math.log(2) - F.softplus(-v),
        # −log(2 − e^t) with t = log 2 − softplus(−v): 2 − e^t = 2σ(−v)
        conjugate=lambda t: -torch.log(2 - torch.exp(t)),
    ),
    "pearson": FDivergence(
        f=lambda u: (u - 1) ** 2,
        g=lambda v: v,
        conjugate=lambda t: t * t / 4 + t,
    ),
    "hellinger": FDivergence(
        f=lambda u: (torch.sqrt(u) - 1) ** 2,
        g=lambda v: 1 - torch.exp(-v),
        conjugate=lambda t: t / (1 - t),
    ),
}

OBJECTIVES: tuple[str, ...] = ("minimax", "nonsaturating", *F_DIVERGENCES, "wgan-gp")
"""Objective names :func:`critic_loss` and :func:`generator_loss` know."""


def check_objective(name: str) -> str:
    """``name`` if it is one of :data:`OBJECTIVES`, else a ConfigError listing them."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"unknown adversarial objective {name!r}; choose one of {list(OBJECTIVES)}."
            + did_you_mean(str(name), OBJECTIVES)
        )
    return name


def _f_bound(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E_P[g(v)] − E_Q[f*(g(v))], the f-GAN variational lower bound on D_f(P ‖ Q)."""
    fd = F_DIVERGENCES[name]
    if name == "js":  # stable: f*(g(v)) = −log(2σ(−v)) = softplus(v) − log 2
        fake_term = F.softplus(fake) - math.log(2)
    elif name == "reverse_kl":  # f*(g(v)) = −1 + v
        fake_term = fake - 1
    elif name == "hellinger":  # f*(g(v)) = (1 − e^−v) / e^−v = e^v − 1
        fake_term = torch.expm1(fake)
    else:
        fake_term = fd.conjugate(fd.g(fake))
    return fd.g(real).mean() - fake_term.mean()


def critic_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's loss (minimised) from scores on real ``[N]`` and fake ``[M]`` samples,
    without any gradient penalty (:func:`gradient_penalty` adds WGAN-GP's)."""
    check_objective(name)
    if name in ("minimax", "nonsaturating"):
        # −E_P log σ(v) − E_Q log(1 − σ(v)); softplus keeps it finite for any logit
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if name == "wgan-gp":
        return fake.mean() - real.mean()
    return -_f_bound(name, real, fake)


def generator_loss(name: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss (minimised) from the critic's scores on its samples ``[M]``."""
    check_objective(name)
    if name == "minimax":
        return -F.softplus(fake).mean()  # E_Q log(1 − σ(v))
    if name == "nonsaturating":
        return F.softplus(-fake).mean()  # −E_Q log σ(v)
    if name == "wgan-gp":
        return -fake.mean()
    return -F_DIVERGENCES[name].g(fake).mean()


def divergence_estimate(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """What the critic's value estimates (a lower bound, tight at the optimal critic), in nats:

    * minimax / nonsaturating: JSD(P, Q) = ½(E_P log D + E_Q log(1 − D)) + log 2
      (the ½-weighted objective's optimum is JSD − log 2);
    * f-GAN: D_f(P ‖ Q) = E_P[T] − E_Q[f*(T)];
    * wgan-gp: W₁(P, Q) ≈ E_P[v] − E_Q[v] (for a 1-Lipschitz critic).
    """
    check_objective(name)
    if name in ("minimax", "nonsaturating"):
        return -0.5 * critic_loss(name, real, fake) + math.log(2)
    if name == "wgan-gp":
        return real.mean() - fake.mean()
    return _f_bound(name, real, fake)


ESTIMATE_LABELS: dict[str, str] = {
    "minimax": "JSD(P, Q) (nats, ≤ log 2)",
    "nonsaturating": "JSD(P, Q) (nats, ≤ log 2)",
    "kl": "KL(P ‖ Q) (nats)",
    "reverse_kl": "KL(Q ‖ P) (nats)",
    "js": "D_JS,f = 2·JSD(P, Q) (nats, ≤ 2 log 2)",
    "pearson": "Pearson χ²(P ‖ Q)",
    "hellinger": "2·H²(P, Q) (≤ 2; H² = ½∫(√p − √q)²)",
    "wgan-gp": "W₁(P, Q) (critic units; needs a 1-Lipschitz critic)",
}
"""The quantity :func:`divergence_estimate` returns for each objective (its label in the
CLI and ``summary.json``): note ``"js"`` estimates 2·JSD while ``"minimax"`` estimates JSD."""


def estimate_label(name: str) -> str:
    """The name of the quantity the critic's estimate is for objective ``name``, e.g.
    ``estimate_label("js") == "D_JS,f = 2·JSD(P, Q) (nats, ≤ 2 log 2)"``."""
    return ESTIMATE_LABELS[check_objective(name)]


def gradient_penalty(
    critic: Callable[..., torch.Tensor],
    real: Sequence[torch.Tensor],
    fake: Sequence[torch.Tensor],
    *,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP's penalty λ E[(‖∇_x̂ critic(x̂)‖₂ − 1)²] (Gulrajani et al. 2017, eq. 3).

    ``real`` and ``fake`` are tuples of the critic's inputs (``(x,)``, or ``(x, extra)`` for a
    critic of pairs); x̂ = ε real + (1 − ε) fake with one ε ~ U(0, 1) per datapoint, used for
    every input, and the norm is over all inputs' entries of a datapoint together. The result
    keeps the graph (it is part of the critic's loss).
    """
    n = real[0].shape[0]
    eps = torch.rand(n, generator=generator, device=real[0].device, dtype=real[0].dtype)
    mixed = []
    for r, f in zip(real, fake):
        e = eps.reshape(n, *([1] * (r.dim() - 1)))
        mixed.append((e * r.detach() + (1 - e) * f.detach()).requires_grad_(True))
    scores = critic(*mixed)
    grads = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    sq = sum(g.reshape(n, -1).pow(2).sum(-1) for g in grads)
    norm = torch.sqrt(sq + 1e-12)
    return weight * ((norm - 1) ** 2).mean()
