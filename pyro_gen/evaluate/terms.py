"""Per-datapoint log-densities of any model/guide pair, read off Pyro traces.

The datapoints are repeated ``K`` times along the ``"data"`` plate, the guide is traced and the
model replayed on it once for all ``K x N`` rows (vectorised, and it works for any program whose
sites live under a plate named ``"data"``). Each site's unscaled, masked ``log_prob`` is summed
over every dimension except the data plate's, giving ``[K, N]`` tables:

    log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n) = log_lik + log_prior - log_q

``log_lik`` sums every observed site; ``log_lik_per_site`` keeps each one apart (the data site
``"x"`` and, in a conditional model, the observed attribute or label sites, whose log p(y)
is part of a bound on log p(x, y)). A site masked out on every row is left out of that table
(it adds 0).

``poutine.scale`` (β, subsampling) is ignored on purpose: these are the model's true densities.

Each latent site's KL(q ‖ p) term is the closed form (``kl_divergence``) only where it is the
ELBO's term: E_q[log q(s | ·) − log p(s | ·)] equals KL(q(s | ·) ‖ p(s | ·)) averaged over the
other draws only if the parents of s in the model were drawn before s by the guide (else they
depend on s's own draw). That holds when the guide draws every latent that the model draws
before s before s too (the same relative order, e.g. a top-down hierarchical guide); a
bottom-up guide q(z1 | x) q(z2 | z1) for a model p(z2) p(z1 | z2) breaks it for z1, whose term
is then the sampled ``log q − log p`` (unbiased). So is a site without a closed form (a mixture
prior). A guide site that puts all its mass on one value of a discrete latent (a VQ-VAE's codes)
has the exact term −log p(value). ``PointwiseTerms.kl_method`` says which, site by site
(:data:`KL_ANALYTIC`, :data:`KL_SAMPLED`, :data:`KL_POINT_MASS`), and ``kl_why`` why a site is
sampled.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> t = pointwise_terms(vae.model, vae.guide, torch.ones(3, 4), num_particles=5)
>>> t.log_weight.shape
torch.Size([5, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pyro_gen.errors import PyroGenError
from pyro_gen.models.pair import DATA_PLATE

__all__ = [
    "PointwiseTerms",
    "pointwise_terms",
    "elbo_terms",
    "split_observed",
    "DATA_PLATE",
    "DATA_SITE",
    "TraceSiteError",
    "KL_ANALYTIC",
    "KL_SAMPLED",
    "KL_POINT_MASS",
    "KL_MIXED",
    "KL_NONE",
    "kl_estimate",
    "merge_kl_methods",
    "drawn_too_late",
    # per-site building blocks, shared with evaluate.ais
    "data_plate_dim",
    "apply_mask",
    "sum_to_front",
    "check_not_enumerated",
    "repeat_rows",
]

DATA_SITE = "x"  # the observed site holding the data; other observed sites are conditions (y)

# how a latent site's KL term was computed (PointwiseTerms.kl_method)
KL_ANALYTIC = "analytic"  # the closed form KL(q(s|·) ‖ p(s|·)) at the guide's draws of the rest
KL_SAMPLED = "sampled"  # log q(s) − log p(s) at the draws: a Monte-Carlo estimate
KL_POINT_MASS = "point mass"  # q puts all its mass on one discrete value: exactly −log p(value)
# of a whole run (kl_estimate): several kinds, or no latent at all
KL_MIXED = "mixed"
KL_NONE = "none"


def kl_estimate(methods: dict[str, str]) -> str:
    """The kind of a KL summed over sites: the one kind of every site in ``methods`` (site ->
    :data:`KL_ANALYTIC`, :data:`KL_SAMPLED` or :data:`KL_POINT_MASS`), :data:`KL_MIXED`
    when they differ, :data:`KL_NONE` without latent sites.

    >>> kl_estimate({"z1": "sampled", "z2": "analytic"}), kl_estimate({})
    ('mixed', 'none')
    """
    kinds = set(methods.values())
    if not kinds:
        return KL_NONE
    return kinds.pop() if len(kinds) == 1 else KL_MIXED


def merge_kl_methods(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    """Site -> method over two chunks of datapoints: a site computed two ways is
    :data:`KL_SAMPLED` if either chunk sampled it (its mean has Monte-Carlo error), else
    :data:`KL_ANALYTIC` (both exact)."""
    out = dict(a)
    for site, m in b.items():
        if site in out and out[site] != m:
            m = KL_SAMPLED if KL_SAMPLED in (m, out[site]) else KL_ANALYTIC
        out[site] = m
    return out


def _latent_names(tr) -> list[str]:
    return [
        name
        for name, site in tr.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site) and not site["is_observed"]
    ]


def drawn_too_late(guide_tr, model_tr) -> dict[str, list[str]]:
    """Guide latent site -> the guide latents that the model draws before it but the guide draws
    after it (in trace order). Where that list is not empty, p(s | ·) may depend on values the
    guide drew from s, so the closed-form KL(q(s | ·) ‖ p(s | ·)) at those values is not the
    ELBO's term for s (a bottom-up guide q(z1 | x) q(z2 | z1) of p(z2) p(z1 | z2): ``{"z1":
    ["z2"], "z2": []}``); where it is empty, every parent of s in the model was drawn before s
    (a sufficient condition: the dependence itself is not traced)."""
    guide = _latent_names(guide_tr)
    g_pos = {name: i for i, name in enumerate(guide)}
    m_order = [name for name in model_tr.nodes if name in g_pos]
    m_pos = {name: i for i, name in enumerate(m_order)}
    return {
        s: [t for t in m_order[: m_pos.get(s, 0)] if g_pos[t] > g_pos[s]] if s in m_pos else []
        for s in guide
    }


class TraceSiteError(PyroGenError, ValueError):
    """A site that per-datapoint evaluation cannot handle; the message names it."""


@dataclass
class PointwiseTerms:
    """``[K, N]`` log-densities: observed sites, model latents, guide latents, the KL term.

    ``kl`` sums ``kl_per_site``; ``kl_method`` says how each site's term was computed
    (:data:`KL_ANALYTIC`: closed form where it is the ELBO's term; :data:`KL_SAMPLED`:
    log q − log p at the draws; :data:`KL_POINT_MASS`: −log p of the one value of a discrete
    point mass), and ``kl_why`` why a site was sampled (no closed form, or the guide's order)."""

    log_lik: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor
    kl: torch.Tensor  # sum of kl_per_site: closed form where valid, log_q - log_prior otherwise
    kl_per_site: dict[str, torch.Tensor]
    # each observed site's log p (unscaled, masked); they sum to log_lik
    log_lik_per_site: dict[str, torch.Tensor] = field(default_factory=dict)
    kl_method: dict[str, str] = field(default_factory=dict)
    kl_why: dict[str, str] = field(default_factory=dict)

    @property
    def log_weight(self) -> torch.Tensor:
        return self.log_lik + self.log_prior - self.log_q

    @staticmethod
    def cat(parts: list[PointwiseTerms], dim: int) -> PointwiseTerms:
        sites = parts[0].kl_per_site
        # an observed site masked out on every row of one chunk is absent there: it added 0
        observed = list(dict.fromkeys(s for p in parts for s in p.log_lik_per_site))
        methods: dict[str, str] = {}
        why: dict[str, str] = {}
        for p in parts:
            methods = merge_kl_methods(methods, p.kl_method)
            why.update({s: w for s, w in p.kl_why.items() if s not in why})
        return PointwiseTerms(
            *(
                torch.cat([getattr(p, f) for p in parts], dim)
                for f in ("log_lik", "log_prior", "log_q", "kl")
            ),
            {s: torch.cat([p.kl_per_site[s] for p in parts], dim) for s in sites},
            {
                s: torch.cat(
                    [p.log_lik_per_site.get(s, torch.zeros_like(p.log_lik)) for p in parts], dim
                )
                for s in observed
            },
            methods,
            why,
        )


def data_plate_dim(name: str, site: dict, role: str) -> int:
    """The (negative) batch dim of ``pyro.plate("data")`` at a trace site.

    ``name``/``role`` (``"model"`` or ``"guide"``) only word the error. Raises
    :class:`TraceSiteError` when the site is outside the data plate (a global latent).
    """
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame.dim
    plates = [f.name for f in site["cond_indep_stack"]] or "no plate"
    raise TraceSiteError(
        f"{role} site {name!r} is not inside pyro.plate({DATA_PLATE!r}) (it is in {plates}). "
        f"Per-datapoint evaluation needs every sample site under the plate named "
        f"{DATA_PLATE!r}; global latent variables are not supported here."
    )


def apply_mask(site: dict, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a log-density of the site, any shape broadcasting with the site's mask) with
    0 where the site's ``poutine.mask`` is False; unchanged without a mask."""
    mask = site["mask"]
    if mask is None or mask is True:
        return value
    return torch.zeros_like(value) if mask is False else torch.where(mask, value, 0.0)


def _masked_everywhere(site: dict) -> bool:
    """Whether ``poutine.mask`` removes the site on every row (e.g. an unlabelled batch's
    label site): it adds nothing, and a per-site table need not show it."""
    mask = site["mask"]
    if mask is None or mask is True:
        return False
    return mask is False or not bool(torch.as_tensor(mask).any())


def sum_to_front(value: torch.Tensor, lead: list[tuple[int, int]]) -> torch.Tensor:
    """Move the (negative dim, size) axes in ``lead`` to the front, broadcast them to their
    sizes, and sum every other axis: ``value`` -> ``[*sizes]`` (e.g. a site's log-density
    ``[N, D]`` with ``lead=[(-2, N)]`` -> ``[N]``, one number per datapoint)."""
    need = max(-d for d, _ in lead)
    if value.dim() < need:  # a log-density that broadcasts over these axes
        value = value.reshape((1,) * (need - value.dim()) + tuple(value.shape))
    value = value.movedim([d for d, _ in lead], list(range(len(lead))))
    sizes = [size for _, size in lead]
    value = value.expand(*sizes, *value.shape[len(lead) :])
    return value.reshape(*sizes, -1).sum(-1)


def check_not_enumerated(name: str, site: dict, role: str) -> None:
    """Raise :class:`TraceSiteError` for an enumerated site (it cannot be replayed for
    importance weighting); ``name``/``role`` word the message."""
    if site["infer"].get("enumerate"):
        raise TraceSiteError(
            f"{role} site {name!r} is enumerated (infer={{'enumerate': ...}}); enumerated "
            "discrete sites cannot be replayed for importance weighting. Evaluate the "
            "model with the site observed, or sum it out inside the model."
        )


def repeat_rows(value, n: int, k: int):
    """A tensor with ``n`` rows ``[n, ...]`` repeated ``k`` times along dim 0 -> ``[k·n, ...]``
    (row ``j·n + i`` is row ``i``); anything else (no leading axis of ``n``) unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value.repeat(k, *([1] * (value.dim() - 1)))
    return value


def _collect(guide_tr, model_tr, per_datapoint: Callable, k: int, n: int) -> PointwiseTerms:
    """Sum each site's (masked, unscaled) log-density into ``[k, n]`` tables."""
    # the tables live where the program's tensors do (the first sample site's value)
    like = next(
        (
            site["value"]
            for tr in (model_tr, guide_tr)
            for site in tr.nodes.values()
            if site["type"] == "sample"
            and isinstance(site.get("value"), torch.Tensor)
            and not site_is_subsample(site)
        ),
        None,
    )
    zeros = torch.zeros(k, n) if like is None else like.new_zeros(k, n, dtype=like.dtype)
    log_lik, log_prior, log_q, kl = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
    kl_per_site: dict[str, torch.Tensor] = {}
    lik_per_site: dict[str, torch.Tensor] = {}
    methods: dict[str, str] = {}
    why: dict[str, str] = {}
    too_late = drawn_too_late(guide_tr, model_tr)
    for name, site in guide_tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        check_not_enumerated(name, site, "guide")
        lq = per_datapoint(name, site, site["fn"].log_prob(site["value"]), "guide")
        log_q = log_q + lq
        model_site = model_tr.nodes.get(name)
        if model_site is None:
            raise TraceSiteError(f"guide site {name!r} has no counterpart in the model.")
        lp = per_datapoint(
            name, model_site, model_site["fn"].log_prob(model_site["value"]), "model"
        )
        site_kl, methods[name] = lq - lp, KL_SAMPLED
        if not _masked_everywhere(site) and _is_discrete_point_mass(site, lq):  # −log p exact
            methods[name] = KL_POINT_MASS
        elif too_late.get(name):
            why[name] = (
                f"the guide draws {name!r} before {', '.join(map(repr, too_late[name]))}, which "
                f"the model draws first: p({name} | ·) may depend on them, and they on {name}'s "
                "draw, so its closed-form KL is not the ELBO's term (the sampled one is used)"
            )
        else:
            try:
                site_kl = per_datapoint(
                    name, model_site, kl_divergence(site["fn"], model_site["fn"]), "model"
                )
                methods[name] = KL_ANALYTIC
            except NotImplementedError:
                why[name] = (
                    f"no closed form for KL({type(site['fn']).__name__} ‖ "
                    f"{type(model_site['fn']).__name__})"
                )
        kl_per_site[name] = site_kl
        kl = kl + site_kl
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        check_not_enumerated(name, site, "model")
        lp = per_datapoint(name, site, site["fn"].log_prob(site["value"]), "model")
        if site["is_observed"]:
            log_lik = log_lik + lp
            if not _masked_everywhere(site):
                lik_per_site[name] = lp
        elif name in guide_tr.nodes:
            log_prior = log_prior + lp
        # a latent the guide does not sample is drawn from its prior: proposal = prior, cancels
    return PointwiseTerms(log_lik, log_prior, log_q, kl, kl_per_site, lik_per_site, methods, why)


def _is_discrete_point_mass(site: dict, log_q: torch.Tensor) -> bool:
    """A guide site with a discrete support whose drawn values have probability 1 (log q = 0 on
    every row): all its mass on one value (a VQ-VAE's one-hot codes)."""
    support = getattr(site["fn"], "support", None)
    if not getattr(support, "is_discrete", False):
        return False
    return bool(log_q.numel()) and bool((log_q.abs() <= 1e-6).all())


def _terms_replicated(model, guide, x, k: int, kwargs) -> PointwiseTerms:
    """Repeat the datapoints ``k`` times along the data plate: works for any program."""
    n = x.shape[0]
    xk = repeat_rows(x, n, k)
    kw = {key: repeat_rows(v, n, k) for key, v in kwargs.items()}
    guide_tr = poutine.trace(guide).get_trace(xk, **kw)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(xk, **kw)

    def per_datapoint(name, site, value, role):
        dim = data_plate_dim(name, site, role)
        return sum_to_front(apply_mask(site, value), [(dim, n * k)]).reshape(k, n)

    return _collect(guide_tr, model_tr, per_datapoint, k, n)


class _NotVectorizable(Exception):
    pass


def _plate_nesting(model, guide, x, kwargs) -> int:
    """How many batch dims the program's plates use (traced on one datapoint)."""
    n = x.shape[0]
    kw = {
        key: v[:1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v
        for key, v in kwargs.items()
    }
    guide_tr = poutine.trace(guide).get_trace(x[:1], **kw)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x[:1], **kw)
    dims = [
        -f.dim
        for tr in (guide_tr, model_tr)
        for site in tr.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.dim is not None
    ]
    return max(dims, default=0)


def _terms_vectorized(model, guide, x, k: int, kwargs, nesting: int) -> PointwiseTerms:
    """Draw the ``k`` particles under an outer plate left of the program's plates: the guide's
    networks see each datapoint once (as Pyro's ``vectorize_particles``)."""
    n = x.shape[0]
    pdim = -(nesting + 1)
    with pyro.plate("_pyro_gen_particles", k, dim=pdim):
        guide_tr = poutine.trace(guide).get_trace(x, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, **kwargs)

    def per_datapoint(name, site, value, role):
        if value.dim() < -pdim or value.shape[pdim] != k:
            raise _NotVectorizable(f"site {name!r} has no particle axis: {list(value.shape)}")
        dim = data_plate_dim(name, site, role)
        return sum_to_front(apply_mask(site, value), [(pdim, k), (dim, n)])

    return _collect(guide_tr, model_tr, per_datapoint, k, n)


def pointwise_terms(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_particles: int = 1,
    max_rows: int = 65536,
    vectorize: bool = True,
    **kwargs,
) -> PointwiseTerms:
    """``[num_particles, N]`` log-densities of each datapoint, in chunks of at most
    ``max_rows`` (datapoints x particles) so memory stays bounded.

    Extra keyword arguments (e.g. observed attributes ``y=...``) go to model and guide; tensors
    whose first axis is ``N`` are split and repeated with the datapoints.

    ``vectorize=True`` draws the particles under an outer plate, so the guide's networks run
    once per datapoint (the program must broadcast over a leading particle axis, as Pyro's
    ``vectorize_particles`` requires); a program that does not is detected and evaluated by
    repeating the datapoints instead, which works for any program.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}.")
    n = x.shape[0]
    nesting = None
    if vectorize and num_particles > 1:
        try:
            nesting = _plate_nesting(model, guide, x, kwargs)
        except Exception:  # the replicated path below reports the program's own errors
            nesting = None
    per_chunk = max(1, max_rows // num_particles)
    parts_n = []
    for start in range(0, n, per_chunk):
        sl = slice(start, start + per_chunk)
        kw = {
            k: v[sl] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
            for k, v in kwargs.items()
        }
        xs = x[sl]
        k_chunk = max(1, max_rows // xs.shape[0])
        parts_k = []
        for k0 in range(0, num_particles, k_chunk):
            k_now = min(k_chunk, num_particles - k0)
            if nesting is not None and k_now > 1:
                try:
                    parts_k.append(_terms_vectorized(model, guide, xs, k_now, kw, nesting))
                    continue
                except TraceSiteError:
                    raise
                except Exception:  # the program does not broadcast over particles
                    nesting = None
            parts_k.append(_terms_replicated(model, guide, xs, k_now, kw))
        parts_n.append(PointwiseTerms.cat(parts_k, 0))
    return PointwiseTerms.cat(parts_n, 1)


def elbo_terms(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_particles: int = 1,
    max_rows: int = 65536,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """Per-datapoint ``elbo``, ``reconstruction`` (E_q log p(x|z, y): the data site ``"x"``
    only), ``attributes_log_prob`` (log p(y): the other observed sites, a conditional model's
    attributes or labels; 0 for a VAE) and ``kl`` (KL(q||p)), each ``[N]``, averaged over
    ``num_particles`` draws; ``elbo = reconstruction + attributes_log_prob - kl`` exactly."""
    t = pointwise_terms(model, guide, x, num_particles=num_particles, max_rows=max_rows, **kwargs)
    recon, attributes, _ = split_observed(t)
    kl = t.kl.mean(0)
    recon, attributes = recon.mean(0), attributes.mean(0)
    return {
        "elbo": recon + attributes - kl,
        "reconstruction": recon,
        "attributes_log_prob": attributes,
        "kl": kl,
    }


def split_observed(
    t: PointwiseTerms,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(log p(x | z, y) of the data site ``"x"``, the sum of the other observed sites' log p
    (y: a conditional model's attributes, observed labels), those sites one by one), each
    ``[K, N]``. A program without a site named ``"x"`` counts every observed site as data."""
    sites = t.log_lik_per_site
    if DATA_SITE not in sites:
        return t.log_lik, torch.zeros_like(t.log_lik), {}
    others = {s: v for s, v in sites.items() if s != DATA_SITE}
    attributes = sum(others.values(), torch.zeros_like(t.log_lik))
    return sites[DATA_SITE], attributes, others
