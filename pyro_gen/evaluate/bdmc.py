"""Bidirectional Monte Carlo (BDMC): a sandwich around log p(x) on data simulated from the model.

For (x, z) drawn from p(z) p(x | z), z is an exact sample of the posterior p(z | x). Forward AIS
from q(z | x) gives a stochastic lower bound of log p(x); reverse AIS, started at that exact z
and annealed from the posterior back to q, gives an unbiased estimate of 1/p(x), so

    log p̂_lower = logmeanexp_c log w_c^fwd  ≤  log p(x)  ≤  −logmeanexp_c log w_c^rev = log p̂_upper

(both in expectation; Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal likelihood
using bidirectional Monte Carlo"; Wu et al. 2017 §4). The gap upper − lower bounds the error of
forward AIS with these settings on data like the simulated data: choose the schedule length where
the gap is small enough (:func:`choose_num_steps`), then run :func:`pyro_gen.evaluate.ais` with it
on real data.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> r = bdmc(vae, torch.ones(3, 4), num_steps=20, num_chains=2, num_leapfrog=2, progress=False)
>>> r.gap.shape
torch.Size([3])
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from tqdm.auto import tqdm

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate.ais import (
    AISResult,
    _check_finite_weights,
    _check_guide_for_ais,
    _frozen,
    _log_mean_exp,
    _make_result,
    _prepare,
    _result,
    _run_chunks,
)
from pyro_gen.models.pair import _caller_stacklevel, evaluating, prepare_and_check, prepare_data

__all__ = ["BDMCResult", "bdmc", "simulate", "choose_num_steps"]

NEGATIVE_GAP = (
    "gap below zero beyond its error: too few chains or datapoints for the upper bound; "
    "increase num_chains"
)


class _FreeSite(Messenger):
    """Sample the observed site ``name`` from the model instead of observing it."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def _pyro_sample(self, msg):
        if msg["name"] == self.name and msg["is_observed"]:
            msg["is_observed"] = False
            msg["value"] = None
            msg["done"] = False


def simulate(pair, x: torch.Tensor, site: str = "x", **kwargs) -> tuple[torch.Tensor, dict]:
    """Draw (x, z) from the model with ``x``'s shape: the observed site ``site`` sampled, the
    other observed sites (``kwargs``) kept. Returns the simulated ``x`` (shaped as ``x``) and
    the latents ``{name: value}`` (one exact posterior draw per datapoint).

    Raises ConfigError when the model has no observed site ``site`` or its draws cannot be shaped
    as ``x``.
    """
    tr = poutine.trace(_FreeSite(site)(pair.model)).get_trace(x, **kwargs)
    node = tr.nodes.get(site)
    if node is None or node["type"] != "sample":
        raise ConfigError(
            f"the model has no sample site {site!r} to simulate the data from; pass site= the "
            "name of the observed site that holds x."
        )
    value = node["value"].detach()
    if value.numel() != x.numel():
        raise ConfigError(
            f"site {site!r} draws {value.numel()} values for a batch x of {x.numel()}: the "
            "model transforms x before observing it, so simulated data cannot be fed back."
        )
    latents = {
        name: s["value"].detach()
        for name, s in tr.nodes.items()
        if s["type"] == "sample"
        and not s["is_observed"]
        and not site_is_subsample(s)
        and name != site
    }
    return value.reshape(x.shape).to(x.dtype), latents


@dataclass
class BDMCResult:
    """The sandwich on ``N`` simulated datapoints (float64, CPU).

    ``x``: the simulated data; ``lower`` [N]: forward AIS (stochastic lower bound, nats);
    ``upper`` [N]: reverse AIS from the exact latents (stochastic upper bound); ``gap`` [N] =
    upper − lower; ``forward``: the forward run's :class:`AISResult`; ``reverse_log_weights``
    [C, N]; ``reverse_acceptance`` [T−1] (in the reverse run's order, from β = 1 down);
    ``seconds``: both directions and the tuning pass. ``negative_gap``: the mean gap lies
    below zero by more than 2 standard errors (over datapoints): the upper bound is not
    trustworthy (too few chains or datapoints), so the gap says nothing about convergence.
    """

    x: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    forward: AISResult
    reverse_log_weights: torch.Tensor
    reverse_acceptance: torch.Tensor
    seconds: float

    @property
    def gap(self) -> torch.Tensor:
        return self.upper - self.lower

    @property
    def mean_gap(self) -> float:
        return float(self.gap.mean())

    @property
    def gap_se(self) -> float:
        """Standard error of :attr:`mean_gap` over datapoints (NaN for one datapoint)."""
        n = self.gap.numel()
        return float(self.gap.std() / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def negative_gap(self) -> bool:
        """The mean gap is below zero beyond 2 standard errors (impossible in expectation)."""
        se = self.gap_se
        return math.isfinite(se) and self.mean_gap < -2 * se

    def summary(self) -> dict:
        n = self.gap.numel()
        return {
            "method": "bdmc",
            "lower": float(self.lower.mean()),
            "upper": float(self.upper.mean()),
            "gap": self.mean_gap,
            "gap_se": self.gap_se,
            "gap_max": float(self.gap.max()),
            "negative_gap": self.negative_gap,
            **({"warning": NEGATIVE_GAP} if self.negative_gap else {}),
            "num_datapoints": n,
            "num_steps": self.forward.num_steps,
            "num_chains": self.forward.num_chains,
            "num_leapfrog": self.forward.num_leapfrog,
            "tune_steps": self.forward.tune_steps,
            "acceptance_forward": float(self.forward.acceptance.mean())
            if self.forward.acceptance.numel()
            else float("nan"),
            "acceptance_reverse": float(self.reverse_acceptance.mean())
            if self.reverse_acceptance.numel()
            else float("nan"),
            "seconds": round(self.seconds, 3),
        }


@torch.no_grad()
def bdmc(
    model,
    x: torch.Tensor,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    site: str = "x",
    num_steps: int = 1000,
    num_chains: int = 16,
    num_leapfrog: int = 10,
    schedule: str | torch.Tensor = "sigmoid",
    start: str = "guide",
    mass: str = "identity",
    target_accept: float = 0.65,
    init_step_size: float = 0.1,
    tune_steps: int | None = None,
    num_bins: int = 50,
    batch_size: int | None = None,
    max_rows: int | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
    **kwargs,
) -> BDMCResult:
    """BDMC sandwich on data simulated from the model, ``x.shape[0]`` datapoints of ``x``'s
    shape (``x``'s values are not used, only its shape and the checks; e.g. a batch of real
    data). Settings as :func:`pyro_gen.evaluate.ais`; the reverse chains reuse the forward
    run's tuned step sizes, traversed in reverse. Cost: about (2 T + tune_steps) · L
    evaluations per chain and datapoint.

    Raises what :func:`pyro_gen.evaluate.ais` raises, and ConfigError from :func:`simulate`.
    """
    pair, s = _prepare(model, guide, module, kwargs, locals())
    batch_size = s.chunk_size(pair.device)
    t0 = time.perf_counter()
    with evaluating(pair.module, seed):
        x = prepare_and_check(pair, x, "x", **kwargs)
        kw = {k: v.to(pair.device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        x_sim, latents = simulate(pair, x.to(pair.device), site, **kw)
        x_sim = prepare_data(pair, x_sim, "simulated x")
        if s.start == "guide":
            _check_guide_for_ais(pair, x_sim, **kwargs)
        n_chunks = math.ceil(x.shape[0] / batch_size)
        with (
            _frozen(pair.module),
            tqdm(
                total=n_chunks * (s.tune_steps + 2 * s.T),
                desc="BDMC",
                unit="step",
                leave=False,
                disable=None if progress is None else not progress,
            ) as bar,
        ):
            chunks = _run_chunks(
                pair, x_sim, kwargs, s, batch_size=batch_size, exact=latents, bar=bar
            )
    seconds = time.perf_counter() - t0
    fwd = _result(chunks, "forward", s.num_chains)
    rev = _result(chunks, "reverse", s.num_chains)
    _check_finite_weights(fwd["log_weights"], "forward AIS")
    _check_finite_weights(rev["log_weights"], "reverse AIS")
    forward = _make_result(fwd, s, seconds, {"schedule": s.schedule_name})
    result = BDMCResult(
        x=x_sim.detach().cpu(),
        lower=forward.log_px,
        upper=-_log_mean_exp(rev["log_weights"]),
        forward=forward,
        reverse_log_weights=rev["log_weights"],
        reverse_acceptance=rev["acceptance"],
        seconds=seconds,
    )
    if result.negative_gap:
        warnings.warn(
            f"BDMC gap {result.mean_gap:.3f} ± {result.gap_se:.3f} nats: {NEGATIVE_GAP}",
            UserWarning,
            stacklevel=_caller_stacklevel(),
        )
    return result


def choose_num_steps(
    model,
    x: torch.Tensor,
    candidates: Sequence[int] = (100, 300, 1000, 3000),
    *,
    tolerance: float = 1.0,
    **settings,
) -> tuple[int | None, list[dict]]:
    """The smallest schedule length in ``candidates`` (tried in increasing order, stopping at
    the first) whose mean BDMC gap on simulated data is ≤ ``tolerance`` nats, and the table of
    :meth:`BDMCResult.summary` rows tried; ``None`` when none is. A gap below zero beyond its
    error (:attr:`BDMCResult.negative_gap`) is not accepted as converged: its upper bound is
    not trustworthy. ``settings`` go to :func:`bdmc`."""
    if not candidates:
        raise ConfigError("candidates must hold at least one schedule length.")
    rows = []
    for T in sorted(int(c) for c in candidates):
        r = bdmc(model, x, num_steps=T, **settings)
        rows.append(r.summary())
        if r.mean_gap <= tolerance and not r.negative_gap:
            return T, rows
    return None, rows
