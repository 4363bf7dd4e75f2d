"""ELBO diagnostics per datapoint: log p(x), ELBO, the gap between them, KL per latent dimension,
active units, and how far the importance weights can be trusted (ESS, PSIS Pareto k̂).

The ELBO is log p(x) − KL(q(z|x) ‖ p(z|x)); one pass of K importance samples per datapoint gives
log p̂(x), the ELBO and the gap from the *same* log-weights, and their ESS and Pareto k̂
(``arviz.psislw``; k̂ > 0.7 flags a datapoint whose estimate is unreliable). Weights are kept
for one chunk of datapoints at a time.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> d = diagnose(vae, torch.ones(5, 4), num_samples=30)
>>> bool((d.gap >= 0).all()), d.kl_per_dim.shape
(True, torch.Size([5, 2]))
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import kl_divergence

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate.log_likelihood import _slice_kwargs, check_guide, importance_chunks
from pyro_gen.evaluate.progress import progress_bar
from pyro_gen.evaluate.terms import (
    DATA_PLATE,
    KL_ANALYTIC,
    KL_POINT_MASS,
    KL_SAMPLED,
    TraceSiteError,
    drawn_too_late,
    kl_estimate,
    merge_kl_methods,
)
from pyro_gen.models.pair import (
    ModelGuidePair,
    as_pair,
    base_distribution,
    evaluating,
    forked_rng,
    prepare_and_check,
)

__all__ = [
    "Diagnostics",
    "diagnose",
    "pareto_khat",
    "per_datapoint_table",
    "PSIS_MIN_SAMPLES",
    "KHAT_THRESHOLD",
    "AU_THRESHOLD",
    "KHAT_CAUTION_SHARE",
    "khat_caution",
    "NO_LATENT_NOTE",
    "ESTIMATE_EXACT",
    "ESTIMATE_IS",
    "ESTIMATE_BOUND",
    "POINT_MASS_BOUND_NOTE",
]

KHAT_THRESHOLD = 0.7  # Vehtari et al.: above it PSIS (and plain IS) estimates are unreliable
AU_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active when Cov_x(E_q[z_u]) > 0.01
PSIS_MIN_SAMPLES = 21  # fewer particles leave arviz's Pareto tail under 5 points: k̂ = NaN
KHAT_CAUTION_SHARE = 0.1  # above this share of datapoints with k̂ > threshold, say so in words
NO_LATENT_NOTE = (
    "no latent variable: log p(x) is exact, the ELBO is log p(x) and the gap 0; k̂, ESS and "
    "active units do not apply"
)
# what log p̂(x) of a diagnosis is (Diagnostics.estimate; "estimate" in its summary)
ESTIMATE_EXACT = "exact"  # no latent variable (an autoregressive model such as MADE)
ESTIMATE_IS = "importance-sampled"  # K draws of a guide with a density over z
ESTIMATE_BOUND = "bound (point-mass guide)"  # a guide site puts all its mass on one value
POINT_MASS_BOUND_NOTE = (
    "bound (point-mass guide), gap unknown: the guide puts all its mass on one value of {sites} "
    "(e.g. a VQ-VAE's nearest codes), so every importance draw is the same and log p̂(x) is the "
    "ELBO: a lower bound on log p(x) that importance sampling cannot tighten; the gap "
    "log p(x) − ELBO is unknown (not 0), and k̂ and ESS do not apply (n/a)"
)


def khat_caution(
    share: float | None,
    threshold: float = KHAT_THRESHOLD,
    num_datapoints: int | None = None,
    num_samples: int | None = None,
) -> str | None:
    """In plain words, what a high share of datapoints with Pareto k̂ > ``threshold`` means and
    what to do; None when the share is at most ``KHAT_CAUTION_SHARE`` (or unknown).

    Vehtari et al. (2024), "Pareto smoothed importance sampling", JMLR 25: above k̂ = 0.7 the
    importance-sampling estimate is unreliable however many more samples of the same kind.

    >>> khat_caution(0.05) is None
    True
    >>> "97.6% of the 1000 datapoints" in khat_caution(0.976, num_datapoints=1000)
    True
    """
    if share is None or not math.isfinite(share) or share <= KHAT_CAUTION_SHARE:
        return None
    of = f"of the {num_datapoints} datapoints" if num_datapoints else "of the datapoints"
    k = f" (K = {num_samples} now)" if num_samples else ""
    return (
        f"Pareto k̂ > {threshold} for {100 * share:.1f}% {of}. For those points the importance "
        "weights are so heavy-tailed that the estimate of log p(x), and of the gap "
        "log p(x) − ELBO, is unreliable: it is most likely too low, and its ± se understates the "
        f"error. What to do: more importance samples{k}, a wider proposal than q(z|x), or a "
        "better guide (closer to the posterior). The ELBO is still a valid lower bound."
    )


def import_arviz():
    """``import arviz`` without its refactor FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def pareto_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """PSIS Pareto k̂ of each column of ``[K, N]`` log-weights via ``arviz.psislw`` -> ``[N]``.

    NaN when K < :data:`PSIS_MIN_SAMPLES`; 0 where the weights are equal to 1e-4 (the guide is
    the posterior: nothing heavy-tailed to fit); +inf where arviz cannot fit the tail (ties).
    """
    K, n = log_weights.shape
    if K < PSIS_MIN_SAMPLES:
        return torch.full((n,), float("nan"), dtype=torch.float64)
    lw = log_weights.detach().cpu().double().T.numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, khat = import_arviz().psislw(lw, reff=1.0)
    khat = torch.as_tensor(np.asarray(khat, dtype=np.float64)).reshape(n)
    flat = torch.as_tensor(lw.max(1) - lw.min(1)) < 1e-4
    return torch.where(flat, torch.zeros_like(khat), khat)


def per_datapoint_table(
    name: str, site: dict, value: torch.Tensor, event_dims: int, rows: int
) -> torch.Tensor:
    """``[rows, D]``: a site-shaped tensor with the data plate's axis first, the rest flattened.

    ``value`` has the site's batch shape followed by ``event_dims`` trailing dims (e.g. its
    sample, its mean, or an elementwise KL of the base distributions).
    """
    dim = next((f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE), None)
    if dim is None:
        raise TraceSiteError(f"site {name!r} is not inside pyro.plate({DATA_PLATE!r}).")
    dim -= event_dims
    if value.dim() < -dim:
        value = value.reshape((1,) * (-dim - value.dim()) + tuple(value.shape))
    value = value.movedim(dim, 0)
    if value.shape[0] != rows:
        value = value.expand(rows, *value.shape[1:])
    return value.reshape(rows, -1)


def _unwrap(fn):
    """The innermost distribution and how many batch dims the wrappers reinterpreted as event."""
    base = base_distribution(fn)
    return base, len(fn.event_shape) - len(base.event_shape)


@dataclass
class _SiteInfo:
    kl: torch.Tensor | None  # [n, D] analytic KL per dimension, None when Pyro has no formula
    mean: torch.Tensor | None  # [n, D'] E_q[z | x], None when the guide has no mean
    discrete: bool = False  # integer/one-hot support or enumerated: no "unit" (Burda et al.)
    point_mass: bool = False  # all of q's mass on one value (Delta, or zero entropy)
    kl_method: str = KL_SAMPLED  # how the ELBO's KL term of the site is computed (evaluate.terms)


def _kl_method(site: dict, kl: torch.Tensor | None) -> str:
    """As :func:`pyro_gen.evaluate.terms.pointwise_terms` computes the site's KL term: all of a
    discrete q's mass on its drawn value (−log p exactly), the closed form, or sampled."""
    if getattr(getattr(site["fn"], "support", None), "is_discrete", False):
        lq = torch.as_tensor(site["fn"].log_prob(site["value"]))
        if lq.numel() and bool((lq.abs() <= 1e-6).all()):
            return KL_POINT_MASS
    return KL_SAMPLED if kl is None else KL_ANALYTIC


def _is_discrete(site: dict) -> bool:
    """A latent with a discrete support (a class label, an enumerated site): active units
    (Cov_x E_q[z_u], Burda et al. 2016) are defined for continuous latents only."""
    support = getattr(site["fn"], "support", None)
    return bool(getattr(support, "is_discrete", False)) or bool(
        (site.get("infer") or {}).get("enumerate")
    )


def _is_point_mass(site: dict) -> bool:
    """Whether the guide site ``site`` puts all its mass on one value for every datapoint: a
    Delta, or a discrete distribution of zero entropy (a one-hot Categorical such as a
    VQ-VAE's nearest codes); where Pyro has no entropy, log q(value) = 0 for every draw."""
    fn = site["fn"]
    base, _ = _unwrap(fn)
    if isinstance(base, Delta):
        return True
    if not getattr(getattr(fn, "support", None), "is_discrete", False):
        return False
    try:
        h = fn.entropy()
    except (NotImplementedError, AttributeError):
        h = fn.log_prob(site["value"])
    h = torch.as_tensor(h)
    return bool(h.numel()) and bool((h.abs() <= 1e-9).all())


def _latent_structure(pair: ModelGuidePair, x: torch.Tensor, kw: dict) -> dict[str, _SiteInfo]:
    """One guide trace + model replay on ``x``: per-dimension analytic KL and E_q[z] per site.

    The closed form only where it is the ELBO's term (:func:`~pyro_gen.evaluate.terms.
    drawn_too_late`: not for a site the guide draws before a latent the model draws first);
    None there, as where Pyro has no formula: the site's KL is then the sampled one."""
    n = x.shape[0]
    guide_tr = poutine.trace(pair.guide).get_trace(x, **kw)
    model_tr = poutine.trace(poutine.replay(pair.model, trace=guide_tr)).get_trace(x, **kw)
    too_late = drawn_too_late(guide_tr, model_tr)
    out = {}
    for name, site in guide_tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        q, q_reint = _unwrap(site["fn"])
        p, _ = _unwrap(model_tr.nodes[name]["fn"])
        try:
            kl = kl_divergence(q, p)
            kl = kl.expand(torch.broadcast_shapes(kl.shape, q.batch_shape))
            kl = per_datapoint_table(name, site, kl, q_reint, n)
        except (NotImplementedError, RuntimeError, ValueError):
            kl = None
        if too_late.get(name):  # p(s | ·) may depend on s's own draw: sampled
            kl = None
        try:
            mean = site["fn"].mean
            mean = mean.expand(torch.broadcast_shapes(mean.shape, site["value"].shape))
            mean = per_datapoint_table(name, site, mean, len(site["fn"].event_shape), n)
        except NotImplementedError:
            mean = None
        out[name] = _SiteInfo(kl, mean, _is_discrete(site), _is_point_mass(site))
        out[name].kl_method = _kl_method(site, kl)
    return out


def _labels(name: str, width: int) -> list[str]:
    return [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]


@dataclass
class Diagnostics:
    """Per-datapoint diagnostics (``[N]`` float64 unless noted), with :meth:`summary`.

    ``elbo`` is the mean log-weight of the same K draws as ``log_px``, so ``gap = log_px − elbo
    ≥ 0`` exactly (Jensen); ``reconstruction + attributes_log_prob − kl`` is the same bound with
    each site's KL as :func:`~pyro_gen.evaluate.evaluate_elbo` computes it (``kl_methods``:
    the closed form where it is the ELBO's term, else sampled from the same draws; the run's
    kind in the summary's ``kl_estimate``) and agrees with ``elbo`` to Monte-Carlo error
    (exactly when no site's KL is analytic). ``reconstruction`` is the
    data site ``"x"``'s E_q log p(x | z, y) only; a conditional model's other observed sites
    (its attributes y, named in ``attribute_sites``) are ``attributes_log_prob`` (zeros without
    them), and then ``log_px`` and ``elbo`` are about log p(x, y), as in
    :func:`~pyro_gen.evaluate.evaluate_elbo`. ``kl_per_dim`` is ``[N, D]`` with column names
    ``kl_names`` (one column per dimension where the KL is analytic, per site otherwise);
    ``posterior_mean`` is ``[N, D']`` E_q[z | x] with names ``mean_names`` (for active units)
    of the continuous latents only: a discrete latent (an SSVAE's label ``y_missing``), named in
    ``discrete_sites``, keeps its KL column but is no unit.

    ``estimate`` says what ``log_px`` is: ``"exact"`` (no latent), ``"importance-sampled"``,
    or ``"bound (point-mass guide)"`` when a guide site (named in ``point_mass_sites``) puts all
    its mass on one value: then every draw is the same, ``log_px`` is the ELBO (a lower bound
    that importance sampling cannot tighten), and ``gap``, ``ess`` and ``khat`` are NaN
    (unknown / do not apply), not 0 and K.
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    kl_per_dim: torch.Tensor
    kl_names: list[str]
    posterior_mean: torch.Tensor
    mean_names: list[str]
    num_samples: int
    au_threshold: float = AU_THRESHOLD
    khat_threshold: float = KHAT_THRESHOLD
    attributes_log_prob: torch.Tensor | None = None
    attribute_sites: list[str] = field(default_factory=list)
    discrete_sites: list[str] = field(default_factory=list)
    kl_methods: dict[str, str] = field(default_factory=dict)  # site -> analytic/sampled/...
    point_mass_sites: list[str] = field(default_factory=list)

    @property
    def estimate(self) -> str:
        """What ``log_px`` is: :data:`ESTIMATE_EXACT`, :data:`ESTIMATE_IS` or
        :data:`ESTIMATE_BOUND` (a point-mass guide site)."""
        if not self.has_latent:
            return ESTIMATE_EXACT
        return ESTIMATE_BOUND if self.point_mass_sites else ESTIMATE_IS

    @property
    def gap(self) -> torch.Tensor:
        """log p̂(x) − ELBO: the KL(q(z|x) ‖ p(z|x)) the ELBO hides (minus the IS bias); NaN
        for a point-mass guide (log p̂(x) is the ELBO there, the true gap is unknown)."""
        if self.point_mass_sites and self.has_latent:
            return torch.full_like(self.log_px, float("nan"))
        return self.log_px - self.elbo

    @property
    def num_datapoints(self) -> int:
        return int(self.log_px.numel())

    @property
    def has_latent(self) -> bool:
        """False for a model without latent sites (an autoregressive model such as MADE):
        its importance weights are all log p(x), so k̂, ESS and active units mean nothing."""
        return bool(self.kl_names or self.mean_names)

    @property
    def au_variance(self) -> torch.Tensor:
        """Cov_x(E_q[z_u]) per dimension ``[D']`` (variance over datapoints of the mean)."""
        if self.posterior_mean.shape[1] == 0:  # no latent (an autoregressive model)
            return torch.zeros(0, dtype=torch.float64)
        if self.posterior_mean.shape[0] < 2:
            return torch.full((self.posterior_mean.shape[1],), float("nan"), dtype=torch.float64)
        return self.posterior_mean.double().var(0)

    @property
    def active(self) -> torch.Tensor:
        """Boolean ``[D']``: the units whose posterior mean moves with x."""
        return self.au_variance > self.au_threshold

    @property
    def active_units(self) -> int:
        return int(self.active.sum())

    @property
    def per_site(self) -> dict[str, dict]:
        """Each latent site (a layer of a hierarchical model): ``{"kl": mean KL (nats: the
        closed form where it is the ELBO's term, else sampled; ``kl_methods`` says which),
        "active_units", "dims"}``, from the columns named ``site`` or ``site[i]``; a
        discrete site has ``"discrete": True`` and no units (``dims`` 0)."""
        sites: dict[str, dict] = {}

        def site_of(name: str) -> str:
            return name.split("[", 1)[0]

        kl = self.kl_per_dim.double().mean(0) if self.kl_per_dim.numel() else None
        for i, name in enumerate(self.kl_names):
            entry = sites.setdefault(site_of(name), {"kl": 0.0, "active_units": 0, "dims": 0})
            entry["kl"] += float(kl[i]) if kl is not None else float("nan")
        for name in self.discrete_sites:
            if name in sites:
                sites[name]["discrete"] = True
        active = self.active
        for i, name in enumerate(self.mean_names):
            entry = sites.setdefault(
                site_of(name), {"kl": float("nan"), "active_units": 0, "dims": 0}
            )
            entry["dims"] += 1
            entry["active_units"] += int(active[i])
        return sites

    @property
    def unreliable(self) -> torch.Tensor:
        """Boolean ``[N]``: k̂ above the threshold (NaN k̂ counts as not computed, not flagged)."""
        return self.khat > self.khat_threshold

    def summary(self) -> dict:
        """Means (nats per datapoint) and standard errors over datapoints, plus the flags."""
        n = self.num_datapoints

        def se(v: torch.Tensor) -> float:
            return float(v.std() / math.sqrt(n)) if n > 1 else float("nan")

        finite_k = self.khat[~torch.isnan(self.khat)]
        # no latent: one exact weight per datapoint (ESS = K, k̂ = 0 trivially): said so, and
        # a person is shown "n/a" for them (evaluate, compare, the report)
        exact = {} if self.has_latent else {"has_latent": False, "exact_note": NO_LATENT_NOTE}
        estimate = self.estimate
        bound = (
            {
                "point_mass_sites": list(self.point_mass_sites),
                "estimate_note": POINT_MASS_BOUND_NOTE.format(
                    sites=", ".join(self.point_mass_sites)
                ),
            }
            if estimate == ESTIMATE_BOUND
            else {}
        )
        nan = float("nan")
        return {
            "num_datapoints": n,
            "num_samples": self.num_samples,
            "estimate": estimate,
            "log_px": float(self.log_px.mean()),
            "log_px_se": se(self.log_px),
            "nll": -float(self.log_px.mean()),
            "elbo": float(self.elbo.mean()),
            "elbo_se": se(self.elbo),
            "reconstruction": float(self.reconstruction.mean()),
            **(
                {
                    "attributes_log_prob": float(self.attributes_log_prob.mean()),
                    "attribute_sites": list(self.attribute_sites),
                }
                if self.attribute_sites
                else {}
            ),
            "kl": float(self.kl.mean()),
            "kl_estimate": kl_estimate(self.kl_methods),
            "kl_methods": dict(self.kl_methods),
            "gap": float(self.gap.mean()),
            "gap_se": se(self.gap) if not bound else nan,
            "ess_mean": float(self.ess.mean()),
            "ess_min": float(self.ess.min()),
            "khat_median": float(finite_k.median()) if finite_k.numel() else float("nan"),
            "khat_max": float(finite_k.max()) if finite_k.numel() else float("nan"),
            "khat_threshold": self.khat_threshold,
            "khat_share_unreliable": float(self.unreliable.double().mean())
            if finite_k.numel()
            else float("nan"),
            "khat_num_unreliable": int(self.unreliable.sum()),
            "active_units": self.active_units,
            "latent_dims": len(self.mean_names),
            "au_threshold": self.au_threshold,
            "kl_per_dim": [float(v) for v in self.kl_per_dim.mean(0)],
            "kl_names": list(self.kl_names),
            "au_variance": [float(v) for v in self.au_variance],
            "mean_names": list(self.mean_names),
            "discrete_sites": list(self.discrete_sites),
            "per_site": self.per_site,
            **exact,
            **bound,
        }


@torch.no_grad()
def diagnose(
    model,
    x: torch.Tensor,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    num_samples: int = 1000,
    batch_size: int = 1000,
    max_rows: int | None = None,
    seed: int | None = 0,
    au_threshold: float = AU_THRESHOLD,
    khat_threshold: float = KHAT_THRESHOLD,
    progress: bool | None = None,
    **kwargs,
) -> Diagnostics:
    """Every diagnostic of :class:`Diagnostics` for each row of ``x`` from K = ``num_samples``
    importance samples (the guide as proposal), ``batch_size`` datapoints at a time.

    Takes the same ``model``/``guide``/``module`` forms and keyword arguments as
    :func:`pyro_gen.evaluate.log_likelihood`. Pareto k̂ needs K >= 21 (NaN below).
    ``progress``: a bar over the datapoints (None: on a terminal only; True; False).

    ``x`` goes through :func:`pyro_gen.models.prepare_and_check` first; raises what
    :func:`pyro_gen.evaluate.log_likelihood` raises (DataError, ShapeError, ConfigError,
    PointMassGuideError for a Delta guide, NonFiniteWeightsError).
    """
    pair = as_pair(model, guide, module)
    if int(num_samples) < 1:
        raise ConfigError(f"num_samples (K) must be >= 1; got {num_samples}.")
    keys = ("log_px", "mean_log_weight", "reconstruction", "attributes_log_prob", "kl", "ess")
    attribute_sites: list[str] = []
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in (*keys, "khat", "kl_dim", "mean")}
    kl_names: list[str] = []
    mean_names: list[str] = []
    discrete_sites: list[str] = []
    kl_methods: dict[str, str] = {}
    point_mass: dict[str, bool] = {}  # site -> a point mass in every chunk so far
    with evaluating(pair.module, seed):
        x = prepare_and_check(pair, x, "x", **kwargs)
        check_guide(pair, x, **kwargs)
        bar = progress_bar(x.shape[0], f"diagnose (K={num_samples})", progress)
        for chunk in importance_chunks(
            pair,
            x,
            num_samples,
            batch_size=batch_size,
            max_rows=max_rows,
            keep_weights=True,
            on_progress=bar.update,  # per piece of particles, not per chunk of datapoints
            **kwargs,
        ):
            for k in keys:
                cols[k].append(getattr(chunk, k))
            attribute_sites += [s for s in chunk.attribute_sites if s not in attribute_sites]
            cols["khat"].append(pareto_khat(chunk.log_weights))
            chunk.log_weights = None  # keep weights for one chunk only
            sl = slice(chunk.start, chunk.stop)
            xs = x[sl].to(pair.device)
            kw = {
                k: v.to(xs.device) if isinstance(v, torch.Tensor) else v
                for k, v in _slice_kwargs(kwargs, x.shape[0], sl).items()
            }
            with forked_rng(xs.device):  # the importance draws' stream stays log_likelihood's
                info = _latent_structure(pair, xs, kw)
            kl_parts, mean_parts, kl_names, mean_names = [], [], [], []
            for name, si in info.items():
                kl_methods = merge_kl_methods(kl_methods, {name: si.kl_method})
                if si.kl is not None:
                    kl_parts.append(si.kl.double().cpu())
                    kl_names += _labels(name, si.kl.shape[1])
                else:  # no formula per dimension: the site's KL from the K draws
                    kl_parts.append(chunk.kl_per_site[name].reshape(-1, 1))
                    kl_names.append(name)
                point_mass[name] = point_mass.get(name, True) and si.point_mass
                if si.discrete and name not in discrete_sites:
                    discrete_sites.append(name)
                if si.mean is not None and not si.discrete:
                    mean_parts.append(si.mean.double().cpu())
                    mean_names += _labels(name, si.mean.shape[1])
            n = chunk.stop - chunk.start
            empty = torch.zeros(n, 0, dtype=torch.float64)
            cols["kl_dim"].append(torch.cat(kl_parts, 1) if kl_parts else empty)
            cols["mean"].append(torch.cat(mean_parts, 1) if mean_parts else empty)
        bar.close()
    cat = {k: torch.cat(v) for k, v in cols.items()}
    point_mass_sites = [k for k, v in point_mass.items() if v]
    if point_mass_sites:  # K identical draws: ESS = K and k̂ = 0 would say "perfect sampling"
        cat["ess"] = torch.full_like(cat["ess"], float("nan"), dtype=torch.float64)
        cat["khat"] = torch.full_like(cat["khat"], float("nan"), dtype=torch.float64)
    return Diagnostics(
        log_px=cat["log_px"],
        elbo=cat["mean_log_weight"],
        reconstruction=cat["reconstruction"],
        kl=cat["kl"],
        ess=cat["ess"],
        khat=cat["khat"],
        kl_per_dim=cat["kl_dim"],
        kl_names=kl_names,
        posterior_mean=cat["mean"],
        mean_names=mean_names,
        num_samples=int(num_samples),
        au_threshold=au_threshold,
        khat_threshold=khat_threshold,
        attributes_log_prob=cat["attributes_log_prob"],
        attribute_sites=attribute_sites,
        discrete_sites=discrete_sites,
        kl_methods=kl_methods,
        point_mass_sites=point_mass_sites,
    )
