"""The ELBO of a trained model, split into reconstruction and KL, per datapoint and on average.

A conditional model (a CVAE's observed attributes, an SSVAE's observed labels) bounds
log p(x, y), not log p(x): its ELBO has a third part, the observed attribute sites' log p(y),
reported apart as ``attributes_log_prob`` (and site by site), so that ``reconstruction`` is
the data site's E_q log p(x | z, y) for every model:

    ELBO = reconstruction + attributes_log_prob − KL    (attributes_log_prob = 0 for a VAE)

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> r = evaluate_elbo(vae, torch.ones(10, 4), num_particles=2)
>>> abs(r.summary()["elbo"] - (r.summary()["reconstruction"] - r.summary()["kl"])) < 1e-4
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate.log_likelihood import _slice_kwargs, point_mass_sites
from pyro_gen.evaluate.terms import (
    KL_ANALYTIC,
    KL_MIXED,
    KL_NONE,
    KL_POINT_MASS,
    KL_SAMPLED,
    kl_estimate,
    merge_kl_methods,
    pointwise_terms,
    split_observed,
)
from pyro_gen.models.pair import as_pair, evaluating, prepare_and_check

__all__ = [
    "ELBOResult",
    "evaluate_elbo",
    "AttributeTerm",
    "attribute_term",
    "describe_parts",
    "describe_kl",
    "describe_is_split",
    "describe_kl_runs",
    "split_is_exact",
]


@dataclass
class ELBOResult:
    """Per-datapoint ``elbo = reconstruction + attributes_log_prob - kl`` (nats), each ``[N]``.

    ``reconstruction``: E_q log p(x | z, y) of the data site ``"x"`` only; ``attributes_log_prob``:
    the other observed sites' log p (a conditional model's attributes y; None when the model
    has none, i.e. 0), with each site in ``attributes_per_site``. With attributes the ELBO
    bounds log p(x, y) (``bound_on`` names it).

    ``kl_method``: site -> how its KL term was computed (``"analytic"``: closed form;
    ``"sampled"``: log q − log p at the draws, a Monte-Carlo estimate; ``"point mass"``: −log p
    of the one value a discrete point-mass guide gives), ``kl_why`` why a site was sampled;
    ``kl_estimate`` sums them up for the run (``"mixed"`` when the sites differ)."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    num_particles: int
    note: str = ""  # set when the numbers are not a bound on log p(x) (β = 0 autoencoder)
    attributes_log_prob: torch.Tensor | None = None
    attributes_per_site: dict[str, torch.Tensor] = field(default_factory=dict)
    kl_method: dict[str, str] = field(default_factory=dict)
    kl_why: dict[str, str] = field(default_factory=dict)

    @property
    def kl_estimate(self) -> str:
        """``"analytic"``, ``"sampled"``, ``"point mass"``, ``"mixed"`` or ``"none"`` (no
        latent site in the KL): how the KL was computed, from :attr:`kl_method`."""
        return kl_estimate(self.kl_method)

    @property
    def bound_on(self) -> str:
        """What the ELBO bounds: ``"log p(x)"``, or ``"log p(x, a, b)"`` with observed sites."""
        if not self.attributes_per_site:
            return "log p(x)"
        return f"log p(x, {', '.join(self.attributes_per_site)})"

    @property
    def is_bound(self) -> bool:
        return not self.note

    def summary(self) -> dict[str, float]:
        n = self.elbo.numel()
        extra = {} if self.is_bound else {"is_bound": False, "note": self.note}
        attributes = {}
        if self.attributes_per_site:  # a conditional model: the third part of the ELBO
            attributes = {
                "attributes_log_prob": float(self.attributes_log_prob.mean()),
                "attributes_per_site": {
                    k: float(v.mean()) for k, v in self.attributes_per_site.items()
                },
                "bound_on": self.bound_on,
            }
        return {
            "elbo": float(self.elbo.mean()),
            "elbo_se": float(self.elbo.std() / n**0.5) if n > 1 else float("nan"),
            "reconstruction": float(self.reconstruction.mean()),
            **attributes,
            "kl": float(self.kl.mean()),
            "kl_estimate": self.kl_estimate,
            "kl_methods": dict(self.kl_method),
            **({"kl_why": dict(self.kl_why)} if self.kl_why else {}),
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
    **kwargs,
) -> ELBOResult:
    """ELBO, E_q log p(x|z) and KL(q(z|x) ‖ p(z)) for each row of ``x``;
    for a conditional model also log p(y) of the observed attribute sites (``attributes_log_prob``,
    the ELBO then bounds log p(x, y); ``elbo = reconstruction + attributes_log_prob - kl``).

    The KL of a latent site is its closed form where that is the ELBO's term (Pyro has one and
    the guide draws the site after every latent the model draws before it), else the sampled
    log q − log p (a mixture prior; a bottom-up guide of a top-down model), so the ELBO is
    unbiased either way; ``kl_method`` says which, site by site (see
    :mod:`pyro_gen.evaluate.terms`).

    β does not enter: this is the model's true bound on log p(x) — except for a point-mass guide
    (a β = 0 autoencoder), where the result says so in ``note`` and ``is_bound`` is False: a
    point mass has no density, its KL to a continuous prior is infinite, so its sites' KL is
    left out (0) and the 'elbo' is the reconstruction term (minus the other sites' KL).
    ``x`` (``[N, ...]``) goes through :func:`pyro_gen.models.prepare_and_check` first (cast to
    the module's dtype; the pair run once on its first rows), then moves to the module's device
    in chunks of ``batch_size``; ``seed`` fixes the noise. Extra keyword arguments (e.g.
    ``y=...``) go to model and guide, split with the datapoints where their first axis is N.

    Raises DataError (not a tensor, empty, NaN/Inf with the first index, values the model
    refuses, dtypes), ShapeError (shapes that do not fit, named by site) and ConfigError.
    """
    pair = as_pair(model, guide, module)
    if int(num_particles) < 1:
        raise ConfigError(f"num_particles must be >= 1; got {num_particles}.")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}.")
    recon, kl, attrs, per_site = [], [], [], []
    methods: dict[str, str] = {}
    why: dict[str, str] = {}
    with evaluating(pair.module, seed):
        x = prepare_and_check(pair, x, "x", **kwargs)
        sites = point_mass_sites(pair, x, **kwargs)
        n = x.shape[0]
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            kw = {
                k: v.to(pair.device) if isinstance(v, torch.Tensor) else v
                for k, v in _slice_kwargs(kwargs, n, sl).items()
            }
            t = pointwise_terms(
                pair.model, pair.guide, x[sl].to(pair.device), num_particles=num_particles, **kw
            )
            site_kl = t.kl
            methods = merge_kl_methods(
                methods, {s: m for s, m in t.kl_method.items() if s not in sites}
            )
            why.update({s: w for s, w in t.kl_why.items() if s not in sites and s not in why})
            if sites:  # leave the point masses' (infinite) KL out
                site_kl = sum(
                    (v for s, v in t.kl_per_site.items() if s not in sites),
                    torch.zeros_like(t.log_lik),
                )
            x_term, attr_term, sites_term = split_observed(t)
            recon.append(x_term.mean(0).cpu())
            attrs.append(attr_term.mean(0).cpu())
            per_site.append({s: v.mean(0).cpu() for s, v in sites_term.items()})
            kl.append(site_kl.mean(0).cpu())
    note = ""
    if sites:
        note = (
            f"not a bound on log p(x): guide site {sites[0]!r} is a point mass (Delta) (a β = 0 "
            "autoencoder has no density p(x) to estimate). The 'elbo' here is the "
            "reconstruction term only"
            + (" (plus the observed attributes' log p(y))." if any(per_site) else ".")
        )
    reconstruction, kl_all, attributes = torch.cat(recon), torch.cat(kl), torch.cat(attrs)
    names = list(dict.fromkeys(s for part in per_site for s in part))
    sites = {  # a site masked out on every row of a chunk added 0 there
        s: torch.cat([p.get(s, torch.zeros_like(r)) for p, r in zip(per_site, recon)])
        for s in names
    }
    return ELBOResult(
        reconstruction + attributes - kl_all,
        reconstruction,
        kl_all,
        num_particles,
        note,
        attributes if sites else None,
        sites,
        methods,
        why,
    )


@dataclass
class AttributeTerm:
    """log p(y) ``[N]`` (nats) of a conditional model's observed attribute sites, each site in
    ``per_site``; ``exact``: the same on every draw of the latents (the attributes' prior does
    not depend on z), so log p(x | y) = log p(x, y) − log p(y) exactly, for any estimate of
    log p(x, y) (ELBO, importance sampling, AIS)."""

    log_prob: torch.Tensor
    per_site: dict[str, torch.Tensor]
    exact: bool

    @property
    def names(self) -> list[str]:
        return list(self.per_site)

    @property
    def conditions(self) -> str:
        """``"shape, size"``: what the model's densities are conditioned on."""
        return ", ".join(self.per_site)


@torch.no_grad()
def attribute_term(
    model,
    x: torch.Tensor,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    batch_size: int = 1000,
    seed: int | None = 0,
    **kwargs,
) -> AttributeTerm | None:
    """The observed attribute sites' log p(y) of each row (None when the model has none: a VAE,
    an SSVAE on unlabelled rows). Two draws of the latents per row tell whether the term is
    free of z (``exact``). Same arguments as :func:`evaluate_elbo`."""
    pair = as_pair(model, guide, module)
    parts: list[dict[str, torch.Tensor]] = []
    exact = True
    with evaluating(pair.module, seed):
        x = prepare_and_check(pair, x, "x", **kwargs)
        n = x.shape[0]
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            kw = {
                k: v.to(pair.device) if isinstance(v, torch.Tensor) else v
                for k, v in _slice_kwargs(kwargs, n, sl).items()
            }
            t = pointwise_terms(
                pair.model, pair.guide, x[sl].to(pair.device), num_particles=2, **kw
            )
            _, attr, sites = split_observed(t)
            exact = exact and bool(torch.equal(attr[0], attr[1]))
            parts.append({s: v.mean(0).cpu() for s, v in sites.items()})
    names = list(dict.fromkeys(s for p in parts for s in p))
    if not names:
        return None
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    per_site = {
        s: torch.cat([p.get(s, torch.zeros(m)) for p, m in zip(parts, sizes)]) for s in names
    }
    return AttributeTerm(sum(per_site.values(), torch.zeros(n)), per_site, exact)


def describe_kl(ev: dict) -> str:
    """How the KL of a summary (``kl_estimate``/``kl_methods`` of :meth:`ELBOResult.summary` or
    :meth:`~pyro_gen.evaluate.Diagnostics.summary`) was computed, in words: ``"analytic KL"``,
    ``"Monte-Carlo KL estimate"`` (it can come out negative), ``"KL = −log p at the point-mass
    guide's value"``, or per site for a mix; ``""`` when the summary does not say.

    >>> describe_kl({"kl_estimate": "mixed", "kl_methods": {"z2": "analytic", "z1": "sampled"}})
    'KL analytic for z2, a Monte-Carlo estimate for z1'
    """
    kind = ev.get("kl_estimate")
    words = {
        KL_ANALYTIC: "analytic KL",
        KL_SAMPLED: "Monte-Carlo KL estimate",
        KL_POINT_MASS: "KL = −log p at the point-mass guide's value",
        KL_NONE: "no latent: KL 0",
    }
    if kind in words:
        return words[kind]
    if kind != KL_MIXED:
        return ""
    each = {
        KL_ANALYTIC: "analytic",
        KL_SAMPLED: "a Monte-Carlo estimate",
        KL_POINT_MASS: "−log p at the point-mass guide's value",
    }
    methods = ev.get("kl_methods") or {}
    parts = [
        f"{each[m]} for {', '.join(s for s, v in methods.items() if v == m)}"
        for m in dict.fromkeys(methods.values())
        if m in each
    ]
    return "KL " + ", ".join(parts)


def _kl_tag(ev: dict) -> str:
    """`` (Monte-Carlo estimate)`` after a KL that is not (only) analytic."""
    kind = ev.get("kl_estimate")
    if kind in (None, KL_ANALYTIC, KL_NONE):
        return ""
    if kind == KL_SAMPLED:
        return " (Monte-Carlo estimate)"
    return f" ({describe_kl(ev)})"


def describe_parts(ev: dict, digits: int = 2) -> str:
    """The parts of an ELBO summary (:meth:`ELBOResult.summary`) in words: ``reconstruction R
    − KL K``, or for a conditional model ``reconstruction of x R + log p(y) of the observed
    attributes A − KL K; a bound on log p(x, y)`` (what its ELBO bounds). A KL that is not the
    closed form says so after it (``KL -0.01 (Monte-Carlo estimate)``: a sampled KL can be
    negative; per site for a mix, see :func:`describe_kl`)."""
    kl = f"KL {ev['kl']:.{digits}f}{_kl_tag(ev)}"
    if "attributes_log_prob" not in ev:
        return f"reconstruction {ev['reconstruction']:.{digits}f} − {kl}"
    sites = ", ".join(ev.get("attributes_per_site") or ()) or "y"
    parts = (
        f"reconstruction of x {ev['reconstruction']:.{digits}f} + log p({sites}) of the observed "
        f"attributes {ev['attributes_log_prob']:.{digits}f} − {kl}"
    )
    if ev.get("note"):  # a point-mass guide (β = 0): no bound on anything
        return parts
    return f"{parts}; a bound on {ev.get('bound_on', 'log p(x, y)')}"


def split_is_exact(ev: dict) -> bool:
    """Whether an importance-sampled summary's parts (reconstruction + log p(y) − KL of
    :meth:`~pyro_gen.evaluate.Diagnostics.summary`) add up to its ELBO, the mean log-weight of
    the same K draws, exactly: when no site's KL is analytic (all from those draws, or −log p
    of a point mass). An analytic KL is an expectation the draws only estimate."""
    return ev.get("kl_estimate") in (KL_SAMPLED, KL_POINT_MASS, KL_NONE)


def describe_is_split(ev: dict, digits: int = 3) -> str:
    """The ELBO of an importance-sampled summary in parts, with ``=`` or ``≈`` as they add up
    (:func:`split_is_exact`): ``"= reconstruction R − KL K (Monte-Carlo estimate)"``, ``"≈
    reconstruction R − KL K, analytic KL: to Monte-Carlo error"``.

    >>> describe_is_split({"reconstruction": -5.0, "kl": 1.0, "kl_estimate": "analytic"}, 1)
    '≈ reconstruction -5.0 − KL 1.0, analytic KL: to Monte-Carlo error'
    """
    parts = describe_parts(ev, digits)
    if split_is_exact(ev):
        return f"= {parts}"
    if ev.get("kl_estimate") == KL_MIXED:
        return f"≈ {parts}; to Monte-Carlo error, as part of the KL is analytic"
    return f"≈ {parts}, analytic KL: to Monte-Carlo error"


def describe_kl_runs(kinds: dict[str, str | None]) -> str:
    """A footnote for several runs' KL columns: run name -> its ``kl_estimate`` (None or
    ``"none"``: no latent, left out) -> ``"KL(q‖p): analytic for a, b; a Monte-Carlo estimate
    (log q − log p at the draws) for c."``; ``""`` when no run has a latent KL.

    >>> describe_kl_runs({"vae": "analytic", "vamp": "sampled", "made": "none"})
    'KL(q‖p): analytic for vae; a Monte-Carlo estimate (log q − log p at the draws) for vamp.'
    """
    words = {
        KL_ANALYTIC: "analytic",
        KL_SAMPLED: "a Monte-Carlo estimate (log q − log p at the draws)",
        KL_POINT_MASS: "−log p at the point-mass guide's value",
        KL_MIXED: "analytic for some latent sites, a Monte-Carlo estimate for the others",
    }
    groups: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        if kind in words:
            groups.setdefault(kind, []).append(name)
    if not groups:
        return ""
    return (
        "KL(q‖p): " + "; ".join(f"{words[k]} for {', '.join(v)}" for k, v in groups.items()) + "."
    )
