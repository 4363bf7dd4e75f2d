"""Annealed importance sampling (AIS) of log p(x) per datapoint, with HMC transitions.

For each datapoint x, chains move from the guide q(z | x) (or the prior) to the posterior
p(z | x) ∝ p(x, z) through the geometric path

    f_β(z) = q(z | x)^(1−β) p(x, z)^β,      0 = β_0 < β_1 < ... < β_T = 1,

with one HMC transition leaving f_{β_t} invariant after each weight update (Neal 2001, eq. 3-4):

    log w = Σ_{t=1..T} (β_t − β_{t−1}) [log p(x, z_{t−1}) − log q(z_{t−1} | x)],
    log p̂(x) = logmeanexp_c log w_c      (chains c = 1..C; E[w] = p(x) exactly).

log p̂(x) is a stochastic lower bound (Jensen) that tends to log p(x) as T grows. The
settings follow Wu, Burda, Salakhutdinov & Grosse (2017), "On the quantitative analysis of
decoder-based generative models": HMC with a sigmoid schedule (Grosse et al. 2015), target
acceptance 0.65.

Any model/guide pair whose latent sites sit under ``pyro.plate("data")`` works: the chains are
the datapoints repeated C times along the data plate (row ``c·n + i`` is chain c of datapoint
i), so one model call scores all chains. Latents on constrained supports run in unconstrained
space through ``torch.distributions.biject_to(site.support)`` (as Pyro's HMC does; the Jacobian
enters the target density and cancels in the weights); a mixture's support is its components'
(the learned priors' :class:`~pyro_gen.models.priors.DiagonalNormalMixture` runs on R^d).
Discrete latents are refused.

HMC step sizes are per chain (per row). A first pass (``tune_steps`` intermediate
distributions, same schedule shape) adapts each chain's log step size toward
``target_accept``, and keeps their averages over ``num_bins`` stretches of the schedule; the
estimate then comes from a fresh run with those step sizes fixed (adapting within the run
would bias it). A Metropolis ratio that is NaN or ±inf (a trajectory that diverged) rejects.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> r = ais(vae, torch.ones(3, 4), num_steps=20, num_chains=4, num_leapfrog=2, progress=False)
>>> r.log_px.shape, r.log_weights.shape
(torch.Size([3]), torch.Size([4, 3]))
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import biject_to, constraints
from tqdm.auto import tqdm

from pyro_gen.errors import ConfigError, did_you_mean
from pyro_gen.evaluate.log_likelihood import (
    NonFiniteWeightsError,
    PointMassGuideError,
    check_guide,
    default_max_rows,
)
from pyro_gen.evaluate.terms import (
    TraceSiteError,
    apply_mask,
    check_not_enumerated,
    data_plate_dim,
    repeat_rows,
    sum_to_front,
)
from pyro_gen.models.pair import (
    ModelGuidePair,
    _caller_stacklevel,
    as_pair,
    evaluating,
    prepare_and_check,
)

__all__ = [
    "AISResult",
    "AISSettings",
    "DiscreteLatentError",
    "SCHEDULES",
    "ais",
    "ais_schedule",
]

SCHEDULES = ("sigmoid", "linear", "geometric")
_ADAPT_RATE = 0.25  # log step size += rate · (acceptance probability − target), per transition


class DiscreteLatentError(TraceSiteError):
    """A latent site with a discrete support: HMC needs continuous latents."""


# -- schedules ------------------------------------------------------------------------------------
def ais_schedule(num_steps: int, kind: str = "sigmoid", *, delta: float = 4.0) -> torch.Tensor:
    """Inverse temperatures ``[num_steps + 1]`` (float64) from β_0 = 0 to β_T = 1.

    ``"linear"``: t/T. ``"sigmoid"``: σ(δ(2t/T − 1)) rescaled to [0, 1] (Grosse et al. 2015,
    δ = 4): small steps at both ends, where log p(x, z) − log q(z | x) changes fastest.
    ``"geometric"``: β_t = 10^(−3 (T − t)/(T − 1)) for t ≥ 1, equal ratios (small steps near the
    start, for a start far from the posterior, e.g. the prior).
    """
    T = int(num_steps)
    if T < 1:
        raise ConfigError(f"num_steps (intermediate distributions) must be >= 1; got {num_steps}.")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    if kind == "linear":
        beta = t
    elif kind == "sigmoid":
        s = torch.sigmoid(delta * (2 * t - 1))
        beta = (s - s[0]) / (s[-1] - s[0])
    elif kind == "geometric":
        if T == 1:
            beta = t
        else:
            beta = torch.cat(
                [torch.zeros(1, dtype=torch.float64), 10 ** (-3 * (1 - t[1:]) * T / (T - 1))]
            )
    else:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; got {kind!r}.")
    beta[0], beta[-1] = 0.0, 1.0
    return beta


def _as_schedule(schedule, num_steps: int) -> torch.Tensor:
    if isinstance(schedule, str):
        return ais_schedule(num_steps, schedule)
    beta = torch.as_tensor(schedule, dtype=torch.float64).flatten()
    if beta.numel() < 2 or beta[0] != 0 or beta[-1] != 1 or (beta.diff() < 0).any():
        raise ConfigError(
            "a schedule given as numbers must rise from 0 to 1 (β_0 = 0, β_T = 1, "
            f"non-decreasing); got {beta.numel()} values from {float(beta[0]):g} to "
            f"{float(beta[-1]):g}."
        )
    return beta


# -- the program: log-densities of rows of chains --------------------------------------------
@dataclass
class _Site:
    name: str
    axis: int  # the data plate's axis in the value (counted from the left)
    transform: torch.distributions.Transform  # unconstrained -> the model's support


@dataclass
class _State:
    """Per row: unconstrained latents, log p(x, z), log f_0(z), log|det J|, and the gradients
    (in u) of log p(x, z) + log|J| and log f_0(z) + log|J|."""

    u: dict[str, torch.Tensor]
    log_joint: torch.Tensor
    log_init: torch.Tensor
    log_jac: torch.Tensor
    grad_joint: dict[str, torch.Tensor]
    grad_init: dict[str, torch.Tensor]

    def log_target(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.log_init + beta * self.log_joint + self.log_jac

    def grad(self, beta: float) -> dict[str, torch.Tensor]:
        return {k: beta * self.grad_joint[k] + (1 - beta) * self.grad_init[k] for k in self.u}

    def where(self, keep_new: torch.Tensor, new: _State, sites: list[_Site]) -> _State:
        """Row-wise choice: ``new`` where ``keep_new`` [R] is True."""

        def pick(a: dict, b: dict) -> dict:
            return {
                s.name: torch.where(_rows(keep_new, b[s.name], s.axis), b[s.name], a[s.name])
                for s in sites
            }

        return _State(
            pick(self.u, new.u),
            torch.where(keep_new, new.log_joint, self.log_joint),
            torch.where(keep_new, new.log_init, self.log_init),
            torch.where(keep_new, new.log_jac, self.log_jac),
            pick(self.grad_joint, new.grad_joint),
            pick(self.grad_init, new.grad_init),
        )


def _rows(v: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """``v`` [R] shaped to broadcast against ``like`` along its data axis."""
    shape = [1] * like.dim()
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _row_sum(t, axis: int, rows: int, like: torch.Tensor) -> torch.Tensor:
    """Sum a per-element tensor (data axis at ``axis``) to ``[rows]``."""
    if not isinstance(t, torch.Tensor) or t.dim() <= axis:
        return like.new_full((rows,), float(t.sum()) if isinstance(t, torch.Tensor) else float(t))
    return t.movedim(axis, 0).reshape(rows, -1).sum(1)


def _base_support(support: constraints.Constraint) -> constraints.Constraint:
    """``support`` with mixture wrappers removed: a mixture of components that share one
    support (torch's ``MixtureSameFamilyConstraint``, e.g. the VampPrior and MoG priors'
    :class:`~pyro_gen.models.priors.DiagonalNormalMixture`) has that support, with the same
    event dimension, and ``biject_to`` knows it."""
    while isinstance(support, constraints.MixtureSameFamilyConstraint):
        support = support.base_constraint
    return support


def _unconstraining(name: str, fn) -> torch.distributions.Transform:
    """The bijection from unconstrained space onto the support of model site ``name``.

    Raises:
        ConfigError: ``biject_to`` has no transform for the site's support (the message names
            the site, its distribution and the support).
    """
    support = _base_support(fn.support)
    try:
        return biject_to(support)
    except NotImplementedError:
        raise ConfigError(
            f"model site {name!r} ({type(fn).__name__}) has support {fn.support}, which "
            "torch.distributions.biject_to cannot map to unconstrained space, so AIS's HMC "
            "cannot move it. Register a transform with biject_to.register for that constraint, "
            "or use importance sampling (method='is')."
        ) from None


class _Program:
    """The pair on ``n`` datapoints repeated ``chains`` times: draws of the start, and the
    per-row log-densities with their gradients at any unconstrained state."""

    def __init__(self, pair: ModelGuidePair, xs: torch.Tensor, kw: dict, chains: int, start: str):
        self.pair, self.n, self.chains = pair, xs.shape[0], chains
        self.scale: dict[str, torch.Tensor] | None = None  # HMC mass diag(1/scale²); None: I
        self.rows = self.n * chains
        self.x = repeat_rows(xs, self.n, chains)
        self.kw = {k: repeat_rows(v, self.n, chains) for k, v in kw.items()}
        self.start = start

    # the start: z ~ q(z | x) (and the prior for model latents the guide does not sample)
    def _draw(self):
        pair = self.pair
        if self.start == "guide":
            guide_tr = poutine.trace(pair.guide).get_trace(self.x, **self.kw)
            model_tr = poutine.trace(poutine.replay(pair.model, trace=guide_tr)).get_trace(
                self.x, **self.kw
            )
            return guide_tr, model_tr
        return None, poutine.trace(pair.model).get_trace(self.x, **self.kw)

    def initial(self) -> tuple[dict[str, torch.Tensor], list[_Site]]:
        guide_tr, model_tr = self._draw()
        self.sites = self._sites(model_tr)
        names = {s.name for s in self.sites}
        self.guide_sites: dict[str, dict] = {}
        if guide_tr is not None:
            for name, site in guide_tr.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                    continue
                check_not_enumerated(name, site, "guide")
                if name not in names:
                    raise TraceSiteError(
                        f"guide site {name!r} has no latent counterpart in the model."
                    )
                self.guide_sites[name] = site
        # a guide with one latent site: its distribution depends on x only, so keep it; else the
        # guide is traced again (conditioned on the state) at every evaluation
        self.cached = (
            {n: s["fn"] for n, s in self.guide_sites.items()}
            if len(self.guide_sites) == 1
            else None
        )
        z = {s.name: model_tr.nodes[s.name]["value"].detach() for s in self.sites}
        return z, self.sites

    def _sites(self, model_tr) -> list[_Site]:
        sites = []
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            check_not_enumerated(name, site, "model")
            fn = site["fn"]
            if fn.support.is_discrete:
                raise DiscreteLatentError(
                    f"model site {name!r} is a discrete latent ({type(fn).__name__}, support "
                    f"{fn.support}): AIS moves the latents with HMC, which needs continuous "
                    "ones. Observe the site (pass its values as data), sum it out inside the "
                    "model, or use importance sampling (method='is')."
                )
            dim = data_plate_dim(name, site, "model")
            value = site["value"]
            axis = value.dim() - len(fn.event_shape) + dim
            if axis < 0 or value.shape[axis] != self.rows:
                raise TraceSiteError(
                    f"model site {name!r} has shape {list(value.shape)}: its data-plate axis "
                    f"({dim} of the batch shape) does not hold the {self.rows} rows."
                )
            sites.append(_Site(name, axis, _unconstraining(name, fn)))
        if not sites:
            raise TraceSiteError("the model has no latent sample site: log p(x) needs no AIS.")
        return sites

    def estimate_scale(self, pooled: int = 32) -> None:
        """The HMC mass matrix diag(1/σ²): σ the standard deviation of each unconstrained latent
        under the start distribution, from at least ``pooled`` draws per datapoint (its chains
        times extra draws; no model gradients). Call after :meth:`initial`."""
        draws = max(2, math.ceil(pooled / self.chains))
        us = []
        for _ in range(draws):
            _, model_tr = self._draw()
            us.append(
                self.to_unconstrained({s.name: model_tr.nodes[s.name]["value"] for s in self.sites})
            )
        self.scale = {}
        for s in self.sites:
            v = torch.stack([u[s.name] for u in us]).movedim(s.axis + 1, 1)  # [S, R, ...]
            rest = v.shape[2:]
            sd = v.reshape(draws, self.chains, self.n, *rest).double().var(dim=(0, 1)).sqrt()
            sd = torch.where(torch.isfinite(sd) & (sd > 0), sd, torch.ones_like(sd))
            sd = sd.to(v.dtype).repeat(self.chains, *[1] * len(rest))  # row c·n + i
            self.scale[s.name] = sd.movedim(0, s.axis)

    def to_unconstrained(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {s.name: s.transform.inv(z[s.name]).detach() for s in self.sites}

    def evaluate(self, u: dict[str, torch.Tensor]) -> _State:
        """The per-row densities at ``u`` and their gradients (one model and guide call)."""
        pair, R = self.pair, self.rows
        with torch.enable_grad():
            u = {k: v.detach().requires_grad_(True) for k, v in u.items()}
            first = next(iter(u.values()))
            z, log_jac = {}, first.new_zeros(R)
            for s in self.sites:
                z[s.name] = s.transform(u[s.name])
                ladj = s.transform.log_abs_det_jacobian(u[s.name], z[s.name])
                log_jac = log_jac + _row_sum(ladj, s.axis, R, first)
            model_tr = poutine.trace(poutine.condition(pair.model, data=z)).get_trace(
                self.x, **self.kw
            )
            log_joint, log_init = first.new_zeros(R), first.new_zeros(R)
            for name, site in model_tr.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                lp = sum_to_front(
                    apply_mask(site, site["fn"].log_prob(site["value"])),
                    [(data_plate_dim(name, site, "model"), R)],
                )
                log_joint = log_joint + lp
                if name in z and name not in self.guide_sites:
                    log_init = log_init + lp  # drawn from the model's conditional at the start
            log_init = log_init + self._log_q(z)
            inputs = list(u.values())
            g_joint = torch.autograd.grad(
                (log_joint + log_jac).sum(), inputs, retain_graph=True, allow_unused=True
            )
            g_init = torch.autograd.grad((log_init + log_jac).sum(), inputs, allow_unused=True)

        def grads(g):
            return {
                k: torch.zeros_like(v) if gk is None else gk for (k, v), gk in zip(u.items(), g)
            }

        return _State(
            {k: v.detach() for k, v in u.items()},
            log_joint.detach(),
            log_init.detach(),
            log_jac.detach(),
            grads(g_joint),
            grads(g_init),
        )

    def _log_q(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.guide_sites:
            return 0.0
        R = self.rows
        if self.cached is not None:
            out = 0.0
            for name, fn in self.cached.items():
                site = self.guide_sites[name]
                out = out + sum_to_front(
                    apply_mask(site, fn.log_prob(z[name])),
                    [(data_plate_dim(name, site, "guide"), R)],
                )
            return out
        data = {k: v for k, v in z.items() if k in self.guide_sites}
        tr = poutine.trace(poutine.condition(self.pair.guide, data=data)).get_trace(
            self.x, **self.kw
        )
        out = 0.0
        for name, site in tr.nodes.items():
            if name in self.guide_sites and site["type"] == "sample":
                out = out + sum_to_front(
                    apply_mask(site, site["fn"].log_prob(site["value"])),
                    [(data_plate_dim(name, site, "guide"), R)],
                )
        return out


# -- HMC ------------------------------------------------------------------------------------------
def _hmc(
    prog: _Program, st: _State, beta: float, eps: torch.Tensor, leapfrog: int
) -> tuple[_State, torch.Tensor]:
    """One HMC transition per row leaving f_β invariant, with the mass matrix diag(1/σ²)
    (``prog.scale``; identity when None): the momentum p ~ N(0, diag(1/σ²)), kinetic energy
    ½ Σ σ² p². Returns the new state and the acceptance probability per row (0 where the
    Metropolis ratio is not finite)."""
    sites = prog.sites
    e = {s.name: _rows(eps, st.u[s.name], s.axis) for s in sites}
    sd = prog.scale or {s.name: torch.ones_like(st.u[s.name]) for s in sites}
    p = {k: torch.randn_like(v) / sd[k] for k, v in st.u.items()}

    def kinetic(p):
        return sum(
            _row_sum(0.5 * (sd[s.name] * p[s.name]) ** 2, s.axis, prog.rows, eps) for s in sites
        )

    e_pos = {k: e[k] * sd[k] ** 2 for k in e}  # the position moves by ε M⁻¹ p
    h0 = -st.log_target(beta) + kinetic(p)
    g = st.grad(beta)
    p = {k: p[k] + 0.5 * e[k] * g[k] for k in p}
    new = st
    for step in range(leapfrog):
        u = {k: new.u[k] + e_pos[k] * p[k] for k in p}
        new = prog.evaluate(u)
        g = new.grad(beta)
        half = 0.5 if step == leapfrog - 1 else 1.0
        p = {k: p[k] + half * e[k] * g[k] for k in p}
    h1 = -new.log_target(beta) + kinetic(p)
    log_ratio = (h0 - h1).double()
    log_ratio = torch.where(torch.isnan(log_ratio), -math.inf, log_ratio).clamp(max=0.0)
    # a non-finite proposal (diverged trajectory) is never accepted, whatever the ratio says
    finite = torch.isfinite(new.log_joint) & torch.isfinite(new.log_init)
    for s in sites:
        finite &= _row_sum(~torch.isfinite(new.u[s.name]), s.axis, prog.rows, eps) == 0
    accept_prob = torch.where(finite, log_ratio.exp(), torch.zeros_like(log_ratio))
    accept = torch.rand_like(accept_prob) < accept_prob
    return st.where(accept, new, sites), accept_prob


def _anneal(
    prog: _Program,
    st: _State,
    betas: torch.Tensor,
    bins: list[int],
    leapfrog: int,
    *,
    log_eps: torch.Tensor,
    adapt: bool = False,
    target: float = 0.65,
    num_bins: int = 1,
    bar=None,
) -> dict:
    """Run the chain through ``betas`` (increasing: forward AIS; decreasing: reverse).

    ``log_eps``: [R] log step sizes (adapted in place of a copy when ``adapt``) or
    [num_bins, R] fixed ones, read at ``bins[t]`` for the transition at β_t.
    """
    R, T = prog.rows, betas.numel() - 1
    log_w = torch.zeros(R, dtype=torch.float64, device=st.log_joint.device)
    acc_step = torch.zeros(max(T - 1, 0), dtype=torch.float64)
    acc_row = torch.zeros(R, dtype=torch.float64, device=log_w.device)
    eps_sum = torch.zeros(num_bins, R, dtype=torch.float64, device=log_w.device)
    eps_count = torch.zeros(num_bins, dtype=torch.float64)
    cur = log_eps.clone()
    for t in range(1, T + 1):
        b_prev, b = float(betas[t - 1]), float(betas[t])
        log_w += (b - b_prev) * (st.log_joint.double() - st.log_init.double())
        if t < T:
            le = cur if adapt else cur[bins[t]]
            st, a = _hmc(prog, st, b, le.exp(), leapfrog)
            acc_step[t - 1] = a.mean().cpu()
            acc_row += a
            if adapt:
                cur = cur + _ADAPT_RATE * (a.to(cur.dtype) - target)
                eps_sum[bins[t]] += cur.double()
                eps_count[bins[t]] += 1
        if bar is not None:
            bar.update(1)
    out = {"log_w": log_w, "acc_step": acc_step, "acc_row": acc_row / max(T - 1, 1), "state": st}
    if adapt:
        count = eps_count.unsqueeze(1).to(eps_sum.device)
        mean = eps_sum / count.clamp(min=1)
        # a stretch without tuning transitions (a one-step tuning pass) keeps the initial size
        out["log_eps_bins"] = torch.where(count > 0, mean, log_eps.double()).to(log_eps.dtype)
    return out


def _bins(T: int, num_bins: int) -> list[int]:
    """The bin of each transition t = 1..T−1 (index 0 unused): equal stretches of the schedule."""
    if T < 2:
        return [0] * (T + 1)
    return [0] + [min(num_bins - 1, (t - 1) * num_bins // (T - 1)) for t in range(1, T)] + [0]


# -- the result -----------------------------------------------------------------------------------
@dataclass
class AISResult:
    """AIS estimates and diagnostics for ``N`` datapoints with ``C`` chains (float64, CPU).

    ``log_px`` [N]: logmeanexp of the chains' log-weights (nats; a stochastic lower bound);
    ``log_px_se`` [N]: its delta-method Monte-Carlo error sqrt(1/ESS − 1/C) (crude for small C;
    NaN for C = 1, with a warning: one chain gives no error estimate);
    ``log_weights`` [C, N]; ``ess`` [N]: (Σw)²/Σw² across chains, in chains;
    ``acceptance`` [T−1]: the mean acceptance probability of each transition of the final run;
    ``acceptance_per_datapoint`` [N]; ``step_sizes`` [num_bins, C, N]: the tuned, fixed HMC step
    sizes per stretch of the schedule; ``schedule`` [T+1]: the β's. ``gradient_evaluations``:
    model+guide calls with a backward pass, per chain, tuning included; ``seconds``: wall time.
    """

    log_px: torch.Tensor
    log_px_se: torch.Tensor
    log_weights: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    acceptance_per_datapoint: torch.Tensor
    step_sizes: torch.Tensor
    schedule: torch.Tensor
    num_chains: int
    num_leapfrog: int
    tune_steps: int
    start: str
    gradient_evaluations: int
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return self.schedule.numel() - 1

    def summary(self) -> dict:
        """Headline numbers (plain floats/ints) for JSON."""
        n = self.log_px.numel()
        return {
            "method": "ais",
            "log_px": float(self.log_px.mean()),
            "log_px_se": float(self.log_px.std() / math.sqrt(n)) if n > 1 else float("nan"),
            "mc_error_mean": float(self.log_px_se.mean()),
            "ess_mean": float(self.ess.mean()),
            "ess_min": float(self.ess.min()),
            "acceptance_mean": float(self.acceptance.mean())
            if self.acceptance.numel()
            else float("nan"),
            "step_size_median": float(self.step_sizes.median()),
            "num_datapoints": n,
            "num_steps": self.num_steps,
            "num_chains": self.num_chains,
            "num_leapfrog": self.num_leapfrog,
            "tune_steps": self.tune_steps,
            "start": self.start,
            "gradient_evaluations_per_chain": self.gradient_evaluations,
            "seconds": round(self.seconds, 3),
            **self.settings,
        }


def _log_mean_exp(lw: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(lw, 0) - math.log(lw.shape[0])


def _ess(lw: torch.Tensor) -> torch.Tensor:
    return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters out of autograd while the chains run (gradients are taken in z only)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _check_whole(name: str, v) -> None:
    """Refuse a count that is not a whole number (2.5 would be silently truncated by int)."""
    whole = isinstance(v, numbers.Integral) or (isinstance(v, float) and v.is_integer())
    if isinstance(v, bool) or not whole:
        raise ConfigError(f"{name} must be a whole number; got {v!r}.")


@dataclass(frozen=True, eq=False)
class AISSettings:
    """The settings of one AIS run, checked and resolved once; :func:`ais` and
    :func:`pyro_gen.evaluate.bdmc` build one from their keyword arguments (same names, same
    defaults, meanings in :func:`ais`).

    On construction the counts are checked, ``num_chains``/``num_leapfrog`` become ints,
    ``tune_steps`` (None: min(T, max(100, T/4))) and ``num_bins`` (clamped to
    [1, min(tune_steps − 1, T − 1)]) are resolved, and the schedules are computed:
    ``betas`` ``[T + 1]`` and ``tune_betas`` ``[tune_steps + 1]`` (float64). T, the number of
    intermediate distributions, is ``num_steps`` for a named schedule and ``len(schedule) − 1``
    for one given as numbers. ``batch_size`` stays None until :meth:`chunk_size` resolves it
    for a device.

    Raises:
        ConfigError: a count that is not a whole number or is below 1, ``target_accept``
            outside (0, 1), ``init_step_size`` <= 0, an unknown ``start``, ``mass`` or
            ``schedule``, or a schedule given as numbers that does not rise from 0 to 1.

    >>> s = AISSettings(num_steps=400)
    >>> s.tune_steps, s.num_bins, s.betas.shape
    (100, 50, torch.Size([401]))
    """

    num_steps: int = 1000
    num_chains: int = 16
    num_leapfrog: int = 10
    schedule: str | torch.Tensor = "sigmoid"
    start: str = "guide"
    mass: str = "identity"
    target_accept: float = 0.65
    init_step_size: float = 0.1
    tune_steps: int | None = None
    num_bins: int = 50
    batch_size: int | None = None
    max_rows: int | None = None
    betas: torch.Tensor = field(init=False, repr=False)
    tune_betas: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mass not in ("start", "identity"):
            raise ConfigError(f"mass must be 'start' or 'identity'; got {self.mass!r}.")
        for name in ("num_steps", "num_chains", "num_leapfrog"):
            v = getattr(self, name)
            _check_whole(name, v)
            if int(v) < 1:
                raise ConfigError(f"{name} must be >= 1; got {v}.")
        if not 0 < self.target_accept < 1:
            raise ConfigError(f"target_accept must be in (0, 1); got {self.target_accept}.")
        if not self.init_step_size > 0:
            raise ConfigError(f"init_step_size must be > 0; got {self.init_step_size}.")
        if self.start not in ("guide", "prior"):
            raise ConfigError(f"start must be 'guide' or 'prior'; got {self.start!r}.")
        betas = _as_schedule(self.schedule, int(self.num_steps))
        T = betas.numel() - 1
        for name in ("tune_steps", "num_bins", "batch_size", "max_rows"):
            if getattr(self, name) is not None:
                _check_whole(name, getattr(self, name))
        tune_steps = _default_tune_steps(T) if self.tune_steps is None else int(self.tune_steps)
        if tune_steps < 1:
            raise ConfigError(f"tune_steps must be >= 1; got {tune_steps}.")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1; got {self.batch_size}.")
        tune_betas = (
            ais_schedule(tune_steps, self.schedule)
            if isinstance(self.schedule, str)
            else torch.quantile(betas, torch.linspace(0, 1, tune_steps + 1, dtype=torch.float64))
        )
        resolved = {
            "num_chains": int(self.num_chains),
            "num_leapfrog": int(self.num_leapfrog),
            "tune_steps": tune_steps,
            "num_bins": max(1, min(int(self.num_bins), tune_steps - 1, max(T - 1, 1))),
            "betas": betas,
            "tune_betas": tune_betas,
        }
        for name, v in resolved.items():
            object.__setattr__(self, name, v)

    @classmethod
    def from_arguments(cls, arguments: dict) -> AISSettings:
        """The settings among a call's arguments (``locals()`` of :func:`ais`/``bdmc``)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.init})

    @property
    def T(self) -> int:
        """The number of intermediate distributions (transitions: T − 1)."""
        return self.betas.numel() - 1

    @property
    def schedule_name(self) -> str:
        """The schedule's name, ``"custom"`` for one given as numbers."""
        return self.schedule if isinstance(self.schedule, str) else "custom"

    def chunk_size(self, device) -> int:
        """Datapoints per chunk: ``batch_size``, or ``max_rows // num_chains`` (at least 1),
        ``max_rows`` defaulting to half of :func:`default_max_rows` on ``device``."""
        if self.batch_size is not None:
            return int(self.batch_size)
        max_rows = default_max_rows(device) // 2 if self.max_rows is None else self.max_rows
        return max(1, int(max_rows) // self.num_chains)


def _slice_kw(kwargs: dict, n: int, sl: slice, device) -> dict:
    return {
        k: (v[sl] if v.dim() > 0 and v.shape[0] == n else v).to(device)
        if isinstance(v, torch.Tensor)
        else v
        for k, v in kwargs.items()
    }


def _run_chunks(
    pair: ModelGuidePair,
    x: torch.Tensor,
    kwargs: dict,
    s: AISSettings,
    *,
    batch_size: int,
    exact: dict[str, torch.Tensor] | None,
    bar,
) -> list[dict]:
    """Tune, then run forward AIS (and reverse AIS from ``exact`` latents, BDMC) per chunk."""
    n_total, device, out = x.shape[0], pair.device, []
    num_chains, num_leapfrog, num_bins = s.num_chains, s.num_leapfrog, s.num_bins
    betas, tune_betas = s.betas, s.tune_betas
    T, Tt = betas.numel() - 1, tune_betas.numel() - 1
    for s0 in range(0, n_total, batch_size):
        sl = slice(s0, min(s0 + batch_size, n_total))
        prog = _Program(
            pair, x[sl].to(device), _slice_kw(kwargs, n_total, sl, device), num_chains, s.start
        )
        z0, sites = prog.initial()
        if s.mass == "start":
            prog.estimate_scale()
        st0 = prog.evaluate(prog.to_unconstrained(z0))
        log_eps = st0.log_joint.new_full((prog.rows,), math.log(s.init_step_size))
        tune = _anneal(
            prog,
            st0,
            tune_betas,
            _bins(Tt, num_bins),
            num_leapfrog,
            log_eps=log_eps,
            adapt=True,
            target=s.target_accept,
            num_bins=num_bins,
            bar=bar,
        )
        eps_bins = tune["log_eps_bins"]
        z0, _ = prog.initial()  # a fresh start for the run that counts
        fwd = _anneal(
            prog,
            prog.evaluate(prog.to_unconstrained(z0)),
            betas,
            _bins(T, num_bins),
            num_leapfrog,
            log_eps=eps_bins,
            bar=bar,
        )
        chunk = {"forward": fwd, "log_eps": eps_bins, "n": prog.n, "rows": prog.rows}
        if exact is not None:
            ze = {}
            for site in sites:
                v = exact[site.name]
                idx = [slice(None)] * v.dim()
                idx[site.axis] = sl
                ze[site.name] = torch.cat([v[tuple(idx)].to(device)] * num_chains, site.axis)
            bins = _bins(T, num_bins)[::-1]
            chunk["reverse"] = _anneal(
                prog,
                prog.evaluate(prog.to_unconstrained(ze)),
                betas.flip(0),
                bins,
                num_leapfrog,
                log_eps=eps_bins,
                bar=bar,
            )
        out.append(chunk)
    return out


def _result(chunks: list[dict], key: str, C: int, **meta) -> dict:
    lw = torch.cat([c[key]["log_w"].detach().cpu().reshape(C, c["n"]) for c in chunks], 1)
    acc_rows = torch.cat([c[key]["acc_row"].cpu().reshape(C, c["n"]).mean(0) for c in chunks])
    n_rows = torch.tensor([float(c["rows"]) for c in chunks], dtype=torch.float64)
    acc_steps = torch.stack([c[key]["acc_step"] for c in chunks])
    acc = (acc_steps * n_rows.unsqueeze(1)).sum(0) / n_rows.sum()
    eps = torch.cat(
        [c["log_eps"].detach().cpu().double().exp().reshape(-1, C, c["n"]) for c in chunks], 2
    )
    return {"log_weights": lw, "acc_row": acc_rows, "acceptance": acc, "step_sizes": eps}


def _default_tune_steps(num_steps: int) -> int:
    return min(num_steps, max(100, num_steps // 4))


def _prepare(
    model, guide, module, kwargs: dict, arguments: dict
) -> tuple[ModelGuidePair, AISSettings]:
    """The pair, with ``kwargs`` checked against model and guide, and the run's settings read
    from ``arguments`` (the ``locals()`` of :func:`ais` or :func:`pyro_gen.evaluate.bdmc`)."""
    pair = as_pair(model, guide, module)
    _check_keywords(pair, kwargs)
    return pair, AISSettings.from_arguments(arguments)


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in params
    )


def _check_keywords(pair: ModelGuidePair, kwargs: dict) -> None:
    """Extra keyword arguments go to model and guide: refuse one that either does not take
    (a misspelt setting such as ``num_leapfrogs``) before the model sees it."""
    settings = [n for n in inspect.signature(ais).parameters if n not in ("model", "x", "kwargs")]
    for name in kwargs:
        roles = (("model", pair.model), ("guide", pair.guide))
        takers = [role for role, fn in roles if _accepts(fn, name)]
        if len(takers) == 2:
            continue
        try:
            model_args = [p for p in inspect.signature(pair.model).parameters if p != "x"]
        except (TypeError, ValueError):
            model_args = []
        refuse = (
            f"only the {takers[0]} takes it, and extra keywords go to both"
            if takers
            else "neither the model nor the guide takes it"
        )
        raise ConfigError(
            f"unknown keyword argument {name!r}: it is no AIS setting, and {refuse}."
            f"{did_you_mean(name, [*settings, 'site', *model_args])} AIS settings: "
            f"{', '.join(settings)}."
        )


def _check_guide_for_ais(pair: ModelGuidePair, x: torch.Tensor, **kwargs) -> None:
    """:func:`check_guide`, with AIS's way out named: start from the prior."""
    try:
        check_guide(pair, x, **kwargs)
    except PointMassGuideError as e:
        raise PointMassGuideError(
            f'{e} AIS can start from the prior instead: start="prior" (ais(..., '
            "start='prior'), bdmc(..., start='prior'), or pyro-gen evaluate --method ais "
            "--start prior), as Wu et al. 2017 do."
        ) from None


def _check_finite_weights(lw: torch.Tensor, what: str) -> None:
    bad = torch.isnan(lw).any(0) | torch.isneginf(torch.logsumexp(lw, 0))
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, idx[:20])) + (" ..." if len(idx) > 20 else "")
        raise NonFiniteWeightsError(
            f"{what} log-weights are NaN for some chain, or −inf for every chain, of "
            f"{len(idx)} datapoint(s), indices [{shown}] (either leaves log p(x) undefined). "
            "Look for values outside the likelihood's support in those rows, "
            "or a guide whose draws the model cannot score (log p(x, z) = −inf)."
        )


@torch.no_grad()
def ais(
    model,
    x: torch.Tensor,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
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
) -> AISResult:
    """AIS estimate of log p(x_n) per datapoint (nats) with diagnostics, :class:`AISResult`.

    Args:
        model: a module with ``.model``/``.guide``, or a model callable with ``guide=`` and
            ``module=`` (:func:`pyro_gen.models.pair.as_pair`); every latent site under
            ``pyro.plate("data")``.
        x: ``[N, ...]`` datapoints. Extra keyword arguments (``y=...``) go to model and guide.
        num_steps: T, the number of intermediate distributions (transitions: T − 1).
        num_chains: C, independent AIS chains per datapoint.
        num_leapfrog: leapfrog steps per HMC transition.
        schedule: ``"sigmoid"`` | ``"linear"`` | ``"geometric"`` (:func:`ais_schedule`) or the
            β's themselves, ``[T + 1]`` rising from 0 to 1.
        start: ``"guide"`` (q(z | x); a point-mass guide is refused) or ``"prior"`` (p(z), as
            Wu et al. 2017; any guide, even a β = 0 autoencoder's).
        mass: ``"identity"``: unit HMC mass, as Wu et al. 2017 (default); ``"start"``: the mass
            matrix diag(1/σ²), σ the spread of each unconstrained latent under the start
            distribution (per datapoint, from ≥ 32 draws of it, fixed before the run), for
            latents on very different scales. (On the MNIST VAE it changed nothing measurable.)
        target_accept, init_step_size, tune_steps, num_bins: the tuning pass (``tune_steps``
            intermediate distributions; default min(T, max(100, T/4))) and the number of
            stretches of the schedule with their own step size.
        batch_size, max_rows: datapoints per chunk (default max_rows // C), rows (datapoints x
            chains) per model call; memory is O(max_rows) activations with gradients.
        seed: set before the run (None: leave the random state alone).
        progress: a tqdm bar over transitions (None: only on a terminal).

    Cost: (tune_steps + num_steps − 2) · num_leapfrog model+guide evaluations with a backward
    pass, per chain and datapoint.

    Raises:
        ConfigError: a setting out of range or an unknown schedule.
        DiscreteLatentError: a latent with discrete support (the message names it).
        TraceSiteError: a latent outside ``pyro.plate("data")``; PointMassGuideError: a Delta
            guide with ``start="guide"``; DataError/ShapeError: from the pair's checks.
        NonFiniteWeightsError: a chain of a datapoint has a NaN weight, or every chain a −inf
            one.
        ConfigError: also a keyword argument that model or guide does not take (a misspelt
            setting), with a did-you-mean.
    """
    pair, s = _prepare(model, guide, module, kwargs, locals())
    batch_size = s.chunk_size(pair.device)
    t0 = time.perf_counter()
    with evaluating(pair.module, seed), _frozen(pair.module):
        x = prepare_and_check(pair, x, "x", **kwargs)
        if s.start == "guide":
            _check_guide_for_ais(pair, x, **kwargs)
        n_chunks = math.ceil(x.shape[0] / batch_size)
        with tqdm(
            total=n_chunks * (s.tune_steps + s.T),
            desc="AIS",
            unit="step",
            leave=False,
            disable=None if progress is None else not progress,
        ) as bar:
            chunks = _run_chunks(pair, x, kwargs, s, batch_size=batch_size, exact=None, bar=bar)
    r = _result(chunks, "forward", s.num_chains)
    _check_finite_weights(r["log_weights"], "AIS")
    return _make_result(
        r,
        s,
        time.perf_counter() - t0,
        {"schedule": s.schedule_name, "target_accept": s.target_accept, "mass": s.mass},
    )


def _make_result(r: dict, s: AISSettings, seconds: float, settings: dict) -> AISResult:
    """The :class:`AISResult` of a run's pooled chunks ``r`` (:func:`_result`); ``settings``:
    the run's settings as reported in its summary."""
    lw = r["log_weights"]
    ess = _ess(lw)
    T, C, L, tune_steps = s.T, s.num_chains, s.num_leapfrog, s.tune_steps
    se = (1 / ess - 1 / C).clamp(min=0).sqrt()
    if C == 1:  # sqrt(1/1 − 1/1) = 0 would claim an exact estimate: the error is unknown
        se = torch.full_like(se, float("nan"))
        warnings.warn(
            "num_chains=1 gives no Monte-Carlo error estimate (log_px_se is NaN, null in JSON): "
            "run at least 2 chains (e.g. num_chains=16) to judge the estimate's spread.",
            UserWarning,
            stacklevel=_caller_stacklevel(),
        )
    return AISResult(
        log_px=_log_mean_exp(lw),
        log_px_se=se,
        log_weights=lw,
        ess=ess,
        acceptance=r["acceptance"],
        acceptance_per_datapoint=r["acc_row"],
        step_sizes=r["step_sizes"],
        schedule=s.betas,
        num_chains=C,
        num_leapfrog=L,
        tune_steps=tune_steps,
        start=s.start,
        gradient_evaluations=(max(T - 1, 0) + max(tune_steps - 1, 0)) * L,
        seconds=seconds,
        settings=settings,
    )
