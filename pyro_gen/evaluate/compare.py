"""Several models on the same test points: one table, with paired differences in log p̂(x).

Every model gets :func:`pyro_gen.evaluate.diagnose` on the same ``x``; models are ranked by mean
log p̂(x) (the test NLL), and each one's difference from the best is the mean of the *paired*
per-datapoint differences, d_n = log p̂_best(x_n) − log p̂_m(x_n), with its standard error
sd(d)/√N — much smaller than the NLLs' own standard errors when the models agree on which
datapoints are hard (the ``elpd_diff``/``dse`` of ``az.compare``, per datapoint instead of summed).

Conditional models (a CVAE's observed attributes y) are compared on what they are densities
of: every row names its ``quantity``. Their importance-sampled log p̂(x, y) is turned into
log p̂(x | y) = log p̂(x, y) − log p(y) where the attributes' log p(y) does not depend on z (it
is then exact, see :func:`pyro_gen.evaluate.elbo.attribute_term`), and so are the ELBO and the
reconstruction. log p(x | y) and a VAE's log p(x) are different quantities (knowing y makes x
easier to predict): when the rows do not all measure one quantity, the ranks, Δ from best and
paired se are within each quantity, and ``warning`` says so. An SSVAE on unlabelled test points
is a density of x alone (its labels are summed out by importance sampling with q(y|x)).

A model whose guide is a point mass (a β = 0 autoencoder) has no density to importance-sample
with: it gets a row flagged "not a bound" (``is_bound`` False, a ``note``; a † in the Markdown)
with its reconstruction term only, after the ranked models, and no rank.

Every row says what its number is (column ``estimate``): ``exact`` (no latent, MADE),
``importance-sampled``, or ``bound (point-mass guide)`` for a guide that puts all its mass on
one value of a discrete latent (a VQ-VAE's codes): its log p̂ is its ELBO, which importance
sampling cannot tighten, so its gap is unknown and k̂ is n/a. A lower bound is not an estimate
of the same number: bounds are ranked apart, after the estimates of the same quantity (their
own ranks, Δ from their own best; a ‡ in the Markdown).

>>> import torch
>>> from pyro_gen.models import VAE
>>> a = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> b = VAE(data_shape=(4,), latent_dim=1, hidden=(8,))
>>> c = compare({"a": a, "b": b}, torch.ones(6, 4), num_samples=30)
>>> [r["model"] for r in c.rows] == c.names and c.rows[0]["d_log_px"] == 0.0
True
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate.diagnostics import (
    ESTIMATE_BOUND,
    NO_LATENT_NOTE,
    PSIS_MIN_SAMPLES,
    Diagnostics,
    diagnose,
)
from pyro_gen.evaluate.elbo import (
    AttributeTerm,
    ELBOResult,
    attribute_term,
    describe_kl_runs,
    evaluate_elbo,
)
from pyro_gen.evaluate.log_likelihood import PointMassGuideError
from pyro_gen.evaluate.progress import progress_bar
from pyro_gen.io import atomic_open

__all__ = ["Comparison", "compare", "COLUMNS", "NOT_A_BOUND", "BOUNDS_APART", "plot_rows"]

BOUNDS_APART = (
    "bound (point-mass guide): the guide puts all its mass on one value of a discrete latent "
    "(a VQ-VAE's codes), so the number is the ELBO, a lower bound on log p(x) that importance "
    "sampling cannot tighten (gap unknown, k̂ n/a); it is ranked apart from the estimates, "
    "among bounds only: its log p(x) may be higher"
)

NOT_A_BOUND = (
    "not a bound: point-mass guide (β = 0 autoencoder); no density q(z|x), so no log p̂(x), "
    "ELBO, KL or k̂: only the reconstruction term E log p(x|z) at the guide's point"
)

# column -> (header, format) of the Markdown table; the CSV keeps full precision
COLUMNS = {
    "rank": ("rank", "{}"),
    "model": ("model", "{}"),
    "quantity": ("log p̂ of", "{}"),
    "estimate": ("estimate", "{}"),
    "test_nll": ("test NLL", "{:.3f}"),
    "nll_se": ("± se", "{:.3f}"),
    "elbo": ("ELBO", "{:.3f}"),
    "reconstruction": (r"E log p(x\|z)", "{:.3f}"),
    "kl": ("KL(q‖p)", "{:.3f}"),
    "gap": ("gap log p − ELBO", "{:.3f}"),
    "active_units": ("active units", "{}"),
    "khat_share": ("share k̂ > 0.7", "{:.3f}"),
    "d_log_px": ("Δ log p̂ from best", "{:.3f}"),
    "d_log_px_se": ("± paired se", "{:.3f}"),
    "num_datapoints": ("N", "{}"),
    "num_samples": ("K", "{}"),
}
# the CSV also says which rows are not bounds, and how each row's KL was computed
CSV_COLUMNS = (*COLUMNS, "kl_estimate", "is_bound", "note")


@dataclass
class Comparison:
    """Rows (ranked models best first, then flagged ones; nats per datapoint), every ranked
    model's :class:`Diagnostics` and every flagged (point-mass guide) model's
    :class:`ELBOResult` (reconstruction only)."""

    rows: list[dict]
    diagnostics: dict[str, Diagnostics]
    not_bounds: dict[str, ELBOResult] = field(default_factory=dict)
    warning: str = ""  # set when the rows measure different quantities (log p(x), log p(x|y))

    @property
    def names(self) -> list[str]:
        return [r["model"] for r in self.rows]

    @property
    def ranked_rows(self) -> list[dict]:
        """The rows with a log p̂(x) (not flagged), best first."""
        return [r for r in self.rows if r.get("is_bound", True)]

    def to_markdown(self) -> str:
        head = [COLUMNS[c][0] for c in COLUMNS]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = []
            for c, (_, fmt) in COLUMNS.items():
                v = r[c]
                if v is None:  # a ranked model without it has no latent (MADE): n/a
                    cells.append("n/a" if r.get("is_bound", True) else "–")
                elif isinstance(v, float) and math.isnan(v):
                    few = c == "khat_share" and (r.get("num_samples") or 0) < PSIS_MIN_SAMPLES
                    cells.append(f"n/a (K < {PSIS_MIN_SAMPLES})" if few else "nan")
                else:  # a '|' inside a cell (log p(x | y)) is escaped for Markdown
                    cells.append(fmt.format(v).replace("|", "\\|"))
                if c == "model" and not r.get("is_bound", True):
                    cells[-1] += " †"
                elif c == "model" and r.get("estimate") == ESTIMATE_BOUND:
                    cells[-1] += " ‡"
            lines.append("| " + " | ".join(cells) + " |")
        ranked = self.ranked_rows
        note = ""
        if ranked:
            note = (
                f"\nNats per datapoint over the same {ranked[0]['num_datapoints']} test points, "
                f"K = {ranked[0]['num_samples']} importance samples. Δ log p̂ = mean of "
                "log p̂_best(x_n) − log p̂_model(x_n); its se is over the paired differences. "
                "Ranks start at 1. The ELBO is the mean log-weight of the same K draws; "
                "E log p(x|z) − KL (plus a conditional model's log p(y)) equals it exactly where "
                "the KL is from those draws, only to Monte-Carlo error where it is analytic. "
                + describe_kl_runs({r["model"]: r.get("kl_estimate") for r in ranked})
                + "\n"
            )
        exact = [r["model"] for r in ranked if r.get("note") == NO_LATENT_NOTE]
        if exact:
            note += f"\nn/a for {', '.join(exact)}: {NO_LATENT_NOTE}.\n"
        if any(r.get("estimate") == ESTIMATE_BOUND for r in ranked):
            note += f"\n‡ {BOUNDS_APART}.\n"
        if self.warning:
            note += f"\nWARNING: {self.warning}\n"
        if len(ranked) < len(self.rows):
            note += f"\n† {NOT_A_BOUND}.\n"
        return "\n".join(lines) + "\n" + note

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({c: r.get(c, "") for c in CSV_COLUMNS})
        return buf.getvalue()

    def write(self, folder: str | os.PathLike, stem: str = "comparison") -> list[Path]:
        """``folder/stem.md`` and ``folder/stem.csv``, written atomically."""
        folder = Path(folder)
        paths = []
        for ext, text in (("md", self.to_markdown()), ("csv", self.to_csv())):
            path = folder / f"{stem}.{ext}"
            with atomic_open(path) as f:
                f.write(text)
            paths.append(path)
        return paths


def plot_rows(rows: Sequence[dict]) -> list[dict]:
    """The ranked rows for :func:`pyro_gen.plots.comparison_plot`, whose panels are per
    ``quantity``: a bound's quantity is named so ("log p(x): bound (point-mass guide)"), so it
    gets its own panel with its own best, as it is ranked apart."""
    return [
        {**r, "quantity": f"{r.get('quantity') or 'log p(x)'}: {ESTIMATE_BOUND}"}
        if r.get("estimate") == ESTIMATE_BOUND
        else dict(r)
        for r in rows
        if r.get("is_bound", True)
    ]


def _load(entry):
    if isinstance(entry, (str, os.PathLike)):
        from pyro_gen.models.persistence import load_model

        return load_model(entry).eval()
    return entry


def _names(entries: Sequence) -> list[str]:
    names = []
    for i, e in enumerate(entries):
        if isinstance(e, (str, os.PathLike)):
            names.append(Path(e).name or str(e))
        else:
            names.append(f"{type(e).__name__}-{i}")
    if len(set(names)) < len(names):  # two runs with the same folder name
        names = [str(e) if isinstance(e, (str, os.PathLike)) else n for e, n in zip(entries, names)]
    if len(set(names)) < len(names):
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    return names


def compare(
    runs_or_models: Sequence | Mapping,
    x: torch.Tensor,
    *,
    num_samples: int = 1000,
    batch_size: int = 1000,
    max_rows: int | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
    observed: Mapping[str, Mapping] | None = None,
    **kwargs,
) -> Comparison:
    """Diagnose every model on the same ``x`` and rank them by mean log p̂(x) (ranks from 1).

    ``runs_or_models``: a sequence of run folders and/or modules with ``.model``/``.guide``, or
    a mapping name -> run folder, module, or an already computed :class:`Diagnostics` on ``x``.
    Every model gets the same ``seed``, K and keyword arguments. A model with a point-mass
    guide is not ranked: its row is flagged (``is_bound`` False, ``note``) and holds the
    reconstruction term of :func:`pyro_gen.evaluate.evaluate_elbo`. ``progress``: a bar over
    the models and one over each model's datapoints (None: on a terminal only; True; False).
    ``observed``: per model name, its own keyword arguments (a CVAE's attributes ``{"shape":
    ...}``, an SSVAE's ``{"y", "observed"}``), added to ``kwargs``; a model with observed
    attribute sites is ranked on log p̂(x | y) (see the module text; column ``quantity``).

    Raises ConfigError (no models, diagnostics on other points) and what
    :func:`pyro_gen.evaluate.diagnose` raises for a model's data or shapes.
    """
    if isinstance(runs_or_models, Mapping):
        named = dict(runs_or_models)
    else:
        entries = list(runs_or_models)
        named = dict(zip(_names(entries), entries))
    if len(named) < 1:
        raise ConfigError("compare needs at least one model.")
    n = x.shape[0]
    diags: dict[str, Diagnostics] = {}
    flagged: dict[str, ELBOResult] = {}
    given: dict[str, AttributeTerm | None] = {}  # log p(y) of a conditional model's attributes
    observed = dict(observed or {})
    bar = progress_bar(len(named), "compare", progress, unit="model", leave=True)
    for name, entry in named.items():
        bar.set_postfix(model=name)
        bar.update(0)
        kw = {**kwargs, **observed.get(name, {})}
        given[name] = None
        if isinstance(entry, Diagnostics):
            d = entry
        else:
            model = _load(entry)
            try:
                d = diagnose(
                    model,
                    x,
                    num_samples=num_samples,
                    batch_size=batch_size,
                    max_rows=max_rows,
                    seed=seed,
                    progress=progress,
                    **kw,
                )
            except PointMassGuideError:
                flagged[name] = evaluate_elbo(
                    model, x, num_particles=1, batch_size=batch_size, seed=seed, **kw
                )
                bar.update(1)
                continue
            if kw:
                given[name] = attribute_term(model, x, batch_size=batch_size, seed=seed, **kw)
        if d.num_datapoints != n:
            raise ConfigError(
                f"model {name!r} was diagnosed on {d.num_datapoints} datapoints, not the {n} of x."
            )
        diags[name] = d
        bar.update(1)
    bar.close()
    # each model's per-datapoint log p̂ of its own quantity: log p(x), or log p(x | y)
    log_p, quantity, shift = {}, {}, {}
    for name, d in diags.items():
        term = given.get(name)
        if term is None:
            log_p[name], quantity[name], shift[name] = d.log_px, "log p(x)", None
        elif term.exact:  # log p(y) is free of z: subtract it from every estimate
            shift[name] = term.log_prob.to(d.log_px)
            log_p[name], quantity[name] = d.log_px - shift[name], f"log p(x | {term.conditions})"
        else:  # log p(y) varies with z: the joint, named so
            log_p[name], shift[name] = d.log_px, None
            quantity[name] = f"log p(x, {term.conditions})"
    groups = list(dict.fromkeys(quantity[k] for k in diags))
    warning = ""
    if len(groups) > 1:
        warning = (
            "these runs' numbers are densities of different things ("
            + "; ".join(f"{q}: {', '.join(k for k in diags if quantity[k] == q)}" for q in groups)
            + "): a density of x given its attributes y is not comparable with one of x alone "
            "(knowing y makes x easier to predict). Ranks, Δ from best and paired se are within "
            "each quantity."
        )
    # a lower bound (point-mass guide) is ranked apart, after the estimates of its quantity
    bound = {k: d.estimate == ESTIMATE_BOUND for k, d in diags.items()}
    order = sorted(
        diags, key=lambda k: (groups.index(quantity[k]), bound[k], -float(log_p[k].mean()))
    )
    rows = []
    rank, best = 0, None
    for name in order:
        d, s = diags[name], diags[name].summary()
        if best is None or (quantity[best], bound[best]) != (quantity[name], bound[name]):
            rank, best = 0, name
        rank += 1
        diff = log_p[best] - log_p[name]
        lp = log_p[name]
        mean_shift = float(shift[name].mean()) if shift[name] is not None else 0.0
        rows.append(
            {
                "rank": rank,
                "model": name,
                "quantity": quantity[name],
                "estimate": s["estimate"],
                "test_nll": -float(lp.mean()),
                "nll_se": float(lp.std() / math.sqrt(n)) if n > 1 else float("nan"),
                "log_px": float(lp.mean()),
                "elbo": s["elbo"] - mean_shift,
                "reconstruction": s["reconstruction"],  # the x site's alone (diagnose)
                "kl": s["kl"],
                "kl_estimate": s.get("kl_estimate"),  # analytic / sampled / point mass / mixed
                "gap": None if bound[name] else s["gap"],  # unknown for a bound
                "active_units": s["active_units"] if d.has_latent and d.mean_names else None,
                "khat_share": s["khat_share_unreliable"]
                if d.has_latent and not bound[name]
                else None,  # n/a: no latent, or K identical draws of a point mass
                "d_log_px": float(diff.mean()),
                "d_log_px_se": float(diff.std() / math.sqrt(n)) if n > 1 else float("nan"),
                "num_datapoints": n,
                "num_samples": d.num_samples,
                "is_bound": True,
                "note": s.get("estimate_note", "") if d.has_latent else NO_LATENT_NOTE,
            }
        )
    nan = float("nan")
    for name, r in flagged.items():
        rows.append(
            {
                **{c: nan for c in COLUMNS},
                "rank": None,
                "model": name,
                "quantity": "log p(x)",
                "estimate": "none (not a bound)",
                "reconstruction": float(r.reconstruction.mean()),
                "active_units": None,
                "log_px": nan,
                "num_datapoints": n,
                "num_samples": None,
                "is_bound": False,
                "note": NOT_A_BOUND,
            }
        )
    return Comparison(rows, diags, flagged, warning)
