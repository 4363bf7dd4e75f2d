"""The sections every report has: overview, configuration, training, samples, evaluation,
other figures; and those of the page over several runs. Registered like any family's own
(:func:`pyro_gen.report.register_section`), so they are examples of the extension point too."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from pyro_gen.evaluate.diagnostics import (
    ESTIMATE_BOUND,
    KHAT_THRESHOLD,
    NO_LATENT_NOTE,
    khat_caution,
)
from pyro_gen.evaluate.elbo import describe_kl, split_is_exact
from pyro_gen.models.likelihoods import LIKELIHOODS
from pyro_gen.report.render import data_uri
from pyro_gen.report.run import RunRecord, RunSet
from pyro_gen.report.sections import Image, Link, Section, Table, register_section

__all__: list[str] = []

POINT_MASS_NOTE = (
    "β = 0: the guide is a point mass (a plain autoencoder), so there is no ELBO: the values "
    "called ELBO here are the reconstruction term E log p(x|z) only, not a bound on log p(x)."
)


def _f(v: Any, digits: int = 2) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{v:.{digits}f}"
    return "–"


def _figure(run: RunRecord, stem: str, caption: str) -> Image | None:
    path = run.claim(stem)
    return Image(data_uri(path), caption) if path is not None else None


def _exact_split(ev: dict) -> bool:
    """Whether ELBO = reconstruction (+ log p(y)) − KL holds exactly: so for
    ``evaluate_elbo``'s numbers (each datapoint's ELBO is built from its parts); not for
    ``diagnose``'s (importance sampling, ``log_px`` beside them), whose ELBO is the mean
    log-weight of the K draws while its KL is analytic: equal only to Monte-Carlo error (a KL
    sampled from the same draws adds up exactly: ``kl_estimate``)."""
    if ev.get("log_px") is None or ev.get("has_latent") is False:  # no latent: ELBO = log p
        return True
    return split_is_exact(ev)


def _kl_kind(ev: dict) -> str:
    """`` (Monte-Carlo KL estimate)`` etc. after a KL that is not (only) analytic; ``""``
    for an analytic one, or a summary that does not say."""
    if ev.get("kl_estimate") in (None, "analytic", "none"):
        return ""
    return f" ({describe_kl(ev)})"


MC_SPLIT_NOTE = (
    "≈: the ELBO is the mean log-weight of the K importance draws, the KL (or part of it) "
    "analytic, so the "
    "parts add up to it only to Monte-Carlo error; pyro-gen evaluate without --num-samples "
    "gives the exact split"
)


def _elbo_sentence(ev: dict) -> str:
    split = ev.get("split", "test")
    se = f" ± {_f(ev.get('elbo_se'))}" if ev.get("elbo_se") is not None else ""
    if ev.get("kl_estimate") == "none" and not ev.get("note"):  # no latent: log p(x) itself
        return f"{split} log p(x) {_f(ev.get('elbo'))}{se} nats, exact ({NO_LATENT_NOTE})"
    eq, note = "=", ""
    if not _exact_split(ev):
        eq = "≈"
        parts = (ev.get("reconstruction") or 0.0) + (ev.get("attributes_log_prob") or 0.0)
        if isinstance(ev.get("elbo"), (int, float)) and isinstance(ev.get("kl"), (int, float)):
            off = _f(ev["elbo"] - (parts - ev["kl"]), 3)
            note = f"; the parts differ from it by {off} ({MC_SPLIT_NOTE})"
        else:
            note = f" ({MC_SPLIT_NOTE})"
    if ev.get("attributes_log_prob") is not None:  # a conditional model: log p(y) apart
        return (
            f"{split} ELBO {_f(ev.get('elbo'))}{se} nats {eq} reconstruction of x "
            f"{_f(ev.get('reconstruction'))} + log p(y) of the observed attributes "
            f"{_f(ev.get('attributes_log_prob'))} − KL {_f(ev.get('kl'))}{_kl_kind(ev)} "
            + ("" if ev.get("note") else f"(a bound on {ev.get('bound_on', 'log p(x, y)')})")
            + note
        )
    return (
        f"{split} ELBO {_f(ev.get('elbo'))}{se} nats {eq} reconstruction "
        f"{_f(ev.get('reconstruction'))} − KL {_f(ev.get('kl'))}{_kl_kind(ev)}{note}"
    )


def _density_rows(ev: dict) -> list[list[str]]:
    """The overview's headline densities, each named for what it is of: a conditional model's
    importance-sampled value is log p(x, y) (``log_px_is``), so its log p(x | y) =
    log p(x, y) − log p(y) comes first when the evaluation has it; an unconditional model's is
    log p(x)."""
    joint = ev.get("log_px_is") or "log p(x)"
    k = f"K = {ev.get('num_samples')} importance samples, {ev.get('split', 'test')} split"
    if ev.get("has_latent") is False:
        k = f"exact: no latent variable, {ev.get('split', 'test')} split"
    bound = _is_bound_estimate(ev)
    if bound:
        k = f"{ESTIMATE_BOUND}, {ev.get('split', 'test')} split: the ELBO"
    rows = []
    if ev.get("log_px_given_attributes") is not None:
        given = f"log p(x | {ev.get('conditions') or 'y'})"
        rows.append(
            [
                given,
                f"{_f(ev['log_px_given_attributes'])} nats = {joint} − log p(y) of the "
                f"observed attributes ({k})",
            ]
        )
    rows.append(
        [
            joint,
            f"{_f(ev['log_px'])} ± {_f(ev.get('log_px_se'))} nats ({k}); gap {joint} − ELBO "
            + ("unknown" if bound else _f(ev.get("gap"))),
        ]
    )
    return rows


def _is_bound_estimate(ev: dict) -> bool:
    """Whether the evaluation's log p̂(x) is a bound (a point-mass guide: K identical draws)."""
    return ev.get("estimate") == ESTIMATE_BOUND


def _codebook_text(c: Any) -> str | None:
    """A VQ-VAE's codebook usage (``codebook`` of an evaluation) in words, or None."""
    if not isinstance(c, dict) or c.get("perplexity") is None:
        return None
    k = c.get("num_codes")
    return (
        f"perplexity {_f(c['perplexity'])} of {k} codes (1: one code used, {k}: all used "
        f"evenly); {c.get('codes_used')} used, {c.get('dead_codes')} dead (never the nearest "
        f"code on {c.get('num_datapoints', '?')} datapoints)"
    )


def _per_site_table(ev: dict) -> Table | None:
    """Each latent site's mean KL and active units (a hierarchical VAE's layers), for a model
    with more than one latent site; None otherwise."""
    sites = ev.get("per_site")
    if not isinstance(sites, dict) or len(sites) < 2:
        return None
    rows = []
    for name, e in sites.items():
        if not isinstance(e, dict):
            continue
        units = (
            "discrete (not a unit)"
            if e.get("discrete")
            else f"{e.get('active_units')} of {e.get('dims')}"
        )
        rows.append([name, _f(e.get("kl"), 3), units])
    return Table(
        ["latent site", "KL (nats)", "active units"],
        rows,
        caption="KL and active units per latent site (layer), in the guide's order",
    )


def _per_site_words(sites: dict) -> str:
    """'z2 0.78 nats (1 of 4 active), z1 9.46 nats (7 of 8 active)'."""
    parts = []
    for name, e in sites.items():
        e = e if isinstance(e, dict) else {}
        units = (
            "discrete"
            if e.get("discrete")
            else f"{e.get('active_units')} of {e.get('dims')} active"
        )
        parts.append(f"{name} {_f(e.get('kl'))} nats ({units})")
    return ", ".join(parts)


def _units_cell(ev: dict) -> str:
    """'31 of 32', and which discrete latents (a label) the count leaves out: active units are
    defined for continuous latent dimensions (Burda et al. 2016)."""
    text = f"{ev.get('active_units')} of {ev.get('latent_dims')}"
    discrete = ev.get("discrete_sites") or []
    if discrete:
        text += f" continuous dimensions (discrete {', '.join(discrete)} not counted)"
    return text


def _caution(ev: dict) -> str | None:
    return khat_caution(
        ev.get("khat_share_unreliable"),
        ev.get("khat_threshold") or KHAT_THRESHOLD,
        ev.get("num_datapoints"),
        ev.get("num_samples"),
    )


# -- one run -------------------------------------------------------------------------------------
@register_section("overview", order=10)
def overview(run: RunRecord) -> Section | None:
    if not (run.config or run.summary or run.history):
        return None
    args = run.model_args
    rows = []
    if run.model_name:
        shown = ", ".join(
            f"{k}={args[k]}" for k in ("latent_dim", "beta", "likelihood", "network") if k in args
        )
        rows.append(["model", f"{run.model_name} ({shown})" if shown else run.model_name])
    data = run.config.get("data") or {}
    if data:
        rows.append(["data", data.get("name") or data.get("data") or str(data)])
    train = run.summary.get("train") or {}
    if train:
        rows.append(
            [
                "training",
                f"{train.get('steps')} steps, {train.get('epochs')} epochs, "
                f"{_f(train.get('wall_seconds'), 1)} s on {train.get('device', '?')}",
            ]
        )
    paragraphs, cautions = [], []
    ev = run.evaluation()
    if ev:
        rows.append(["ELBO", _elbo_sentence(ev)])
        if ev.get("log_px") is not None:
            rows += _density_rows(ev)
        if ev.get("has_latent") is False:  # MADE: no k̂, ESS or units to show
            rows.append(["k̂, ESS, active units", f"n/a: {ev.get('exact_note', 'no latent')}"])
        elif ev.get("active_units") is not None:
            rows.append(["active units", _units_cell(ev)])
        if _is_bound_estimate(ev):
            rows.append(["k̂, ESS", "n/a: point-mass guide (K identical draws)"])
        sites = ev.get("per_site")
        if isinstance(sites, dict) and len(sites) > 1:
            rows.append(["KL per site", _per_site_words(sites)])
        codebook = _codebook_text(ev.get("codebook"))
        if codebook:
            rows.append(["codebook", codebook])
        for c in run.classifier()[:1]:  # the model's own classifier q(y|x): test first
            from pyro_gen.evaluate.classification import describe_scores

            rows.append(["classifier", describe_scores(c, c.get("split", "test"))])
        share = run.khat_share() if ev.get("has_latent") is not False else None
        if share is not None:
            rows.append(
                [
                    "reliability",
                    f"{100 * share:.1f}% of datapoints with k̂ > "
                    f"{ev.get('khat_threshold', KHAT_THRESHOLD)}",
                ]
            )
        caution = _caution(ev)
        if caution:
            cautions.append(caution)
    elif "final_divergence" not in train:  # a likelihood-free model (GAN) has no log p(x)
        paragraphs.append(
            "No evaluation yet: pyro-gen evaluate RUN --num-samples 1000 adds log p(x), the gap, "
            "KL per dimension, active units and the reliability of the estimate (PSIS k̂)."
        )
    cautions += run.stale_notes()
    if run.point_mass:
        cautions.append(POINT_MASS_NOTE)
    return Section("Overview", paragraphs, cautions, tables=[Table(["", ""], rows)] if rows else [])


@register_section("config", order=20)
def config(run: RunRecord) -> Section | None:
    if not run.config:
        return None
    model_rows = [[k, v] for k, v in run.model_args.items()]
    tables = [Table(["argument", "value"], model_rows, caption=f"model {run.model_name}")]
    data = run.config.get("data") or {}
    if data:
        tables.append(Table(["data", "value"], [[k, v] for k, v in data.items()]))
    details = []
    train = run.config.get("train") or {}
    if train:
        details.append(
            Table(
                ["setting", "value"],
                [[k, v] for k, v in train.items()],
                caption="training settings",
            )
        )
    for key in ("versions", "distributed", "imports"):
        value = run.config.get(key)
        if value:
            rows = [[k, v] for k, v in value.items()] if isinstance(value, dict) else [[key, value]]
            details.append(Table(["", ""], rows, caption=key))
    return Section("Configuration", tables=tables, details=details)


def _declared_loss(run: RunRecord) -> str | None:
    """What the run's model class says its training loss is (a class attribute
    ``loss_description``, e.g. the VQ-VAE's −ELBO + codebook + commitment losses); None where
    it says nothing or its class is not registered here (a user's model not imported)."""
    from pyro_gen.models import get_model_class  # the built-in models registered

    try:
        cls = get_model_class(run.model_name) if run.model_name else None
    except Exception:  # noqa: BLE001 - an unknown model: the caption follows the objective
        return None
    text = getattr(cls, "loss_description", None)
    return text if isinstance(text, str) and text else None


def loss_caption(run: RunRecord) -> str:
    """What the training curve's loss is, from the model's declared ``loss_description`` and
    the run's objective (``elbo`` in config.json's training settings): β-weighted −ELBO for the
    ELBO estimators, −L_k for IWAE and DReG (the importance-weighted bound with k particles).

    >>> import tempfile
    >>> run = RunRecord(__import__("pathlib").Path(tempfile.mkdtemp()),
    ...                 config={"train": {"elbo": "iwae", "num_particles": 5}})
    >>> loss_caption(run).startswith("−L_k")
    True
    """
    train = run.config.get("train") or {}
    elbo = str(train.get("elbo") or "trace")
    k = train.get("num_particles", 1)
    if elbo in ("iwae", "iwae_dreg"):
        grads = ", DReG gradients" if elbo == "iwae_dreg" else ""
        what = (
            f"−L_k per datapoint: the negative importance-weighted bound with k = {k} "
            f"particles (elbo={elbo}{grads}), tighter than −ELBO for k > 1"
        )
    else:
        what = f"β-weighted −ELBO per datapoint (elbo={elbo})"
    declared = _declared_loss(run)
    if declared:  # the model's own terms on top (a VQ-VAE's codebook and commitment losses)
        what = f"{declared}; per datapoint, elbo={elbo}"
    return what


def _loss_label(run: RunRecord) -> str | None:
    """A likelihood-free run (GAN) trains on the generator's loss, not an ELBO."""
    if "final_divergence" in (run.summary.get("train") or {}):
        return "generator loss"
    return None


@register_section("training", order=30)
def training(run: RunRecord) -> Section | None:
    from pyro_gen import plots

    figures, paragraphs = [], []
    if run.history:
        run.claim("training_curves")  # redrawn from history.csv (the source of truth)
        figures.append(
            Image(
                data_uri(plots.training_curves(run.history, run.name, _loss_label(run))),
                "Training loss per logged step (−reconstruction per datapoint: β = 0 has no "
                "ELBO) and the validation reconstruction term after each epoch."
                if run.point_mass
                else f"Training loss per logged step ({loss_caption(run)}) and the "
                "validation value after each epoch.",
            )
        )
    else:
        image = _figure(run, "training_curves", "training curves")
        figures += [image] if image else []
    train = run.summary.get("train") or {}
    if not figures and not train:
        return None
    if train:
        best_key = next((k for k in train if k.startswith("best_valid")), None)
        words = [f"{train.get('steps')} steps"]
        rate, session = train.get("steps_per_second"), train.get("steps_this_session")
        # the rate is the training loop's: its time goes beside it, the wall time (with
        # the setup around the loop) apart
        loop = (
            f"{_f(session / rate, 1)} s of training at {_f(rate, 1)} steps/s"
            if isinstance(rate, (int, float)) and rate > 0 and isinstance(session, int)
            else None
        )
        if session not in (None, train.get("steps")):
            words.append(f"{session} of them in the last session" + (f", {loop}" if loop else ""))
        elif loop:
            words.append(loop)
        words.append(f"{_f(train.get('wall_seconds'), 1)} s with setup")
        if train.get("final_train_loss") is not None:
            words.append(f"final train loss {_f(train['final_train_loss'])}")
        if best_key and train.get(best_key) is not None:
            what = best_key.replace("best_valid_", "best validation ").replace("elbo", "ELBO")
            words.append(f"{what} {_f(train[best_key])} nats")
        paragraphs.append("; ".join(words) + ".")
    return Section("Training", paragraphs, figures=figures)


@register_section("samples", order=40)
def samples(run: RunRecord) -> Section | None:
    figures = []
    # an autoregressive likelihood has no mean image: train draws x (cli/train.py: _figures)
    likelihood = LIKELIHOODS.get(run.model_args.get("likelihood", ""))
    drawn = likelihood is not None and not likelihood.has_mean
    shown = "draws of x ~ p(x|z)" if drawn else "E[x|z]"
    for stem, caption in (
        ("samples", f"Samples from the trained model: {shown} for z ~ p(z)."),
        (
            "reconstructions",
            "Test data and their reconstructions (rows alternate: data, "
            f"then the reconstruction of the row above{', a draw of x' if drawn else ''}).",
        ),
    ):
        image = _figure(run, stem, caption)
        if image:
            figures.append(image)
    for stem in sorted(run.figures):  # pyro-gen sample's and reconstruct's own figures
        if stem.startswith("sample-"):
            figures.append(_figure(run, stem, f"pyro-gen sample: {stem}"))
        elif stem.startswith("reconstructions-seed"):
            figures.append(_figure(run, stem, f"pyro-gen reconstruct: {stem}"))
    if not figures:
        return None
    return Section("Samples and reconstructions", figures=figures)


@register_section("evaluation", order=50)
def evaluation(run: RunRecord) -> Section | None:
    ev, stale = run.evaluation(), run.stale_notes()
    if not ev:
        return Section("Evaluation", cautions=stale) if stale else None
    point_mass = run.point_mass or ev.get("is_bound") is False
    conditional = ev.get("attributes_log_prob") is not None
    bound_on = ev.get("bound_on", "log p(x, y)") if conditional else "log p(x)"
    rows = [
        [
            "ELBO",
            _f(ev.get("elbo"), 3),
            _f(ev.get("elbo_se"), 3),
            f"a lower bound on {bound_on}" if not point_mass else "not a bound (β = 0)",
        ],
        [
            "reconstruction E_q log p(x|z, y)" if conditional else "reconstruction E_q log p(x|z)",
            _f(ev.get("reconstruction"), 3),
            "",
            "the data site x only" if conditional else "",
        ],
    ]
    if conditional:
        sites = ev.get("attributes_per_site") or {}
        rows.append(
            [
                f"log p({', '.join(sites) or 'y'}) of the observed attributes",
                _f(ev["attributes_log_prob"], 3),
                "",
                "; ".join(f"{k} {_f(v, 3)}" for k, v in sites.items()),
            ]
        )
    rows.append(
        [
            "KL(q(z|x) ‖ p(z))",
            _f(ev.get("kl"), 3),
            "",
            f"ELBO {'=' if _exact_split(ev) else '≈'} reconstruction "
            + ("+ log p(y) " if conditional else "")
            + "− KL"
            + (
                _kl_kind(ev)
                if _exact_split(ev)
                else f" ({describe_kl(ev) or 'analytic KL'}; Monte-Carlo error)"
            ),
        ]
    )
    bound = _is_bound_estimate(ev)
    if ev.get("kl_estimate") == "none" and not point_mass and ev.get("log_px") is None:
        # no latent (MADE): the ELBO is log p(x) itself, with no reconstruction or KL
        rows = [
            ["log p(x), exact", _f(ev.get("elbo"), 3), _f(ev.get("elbo_se"), 3), NO_LATENT_NOTE]
        ]
    if ev.get("log_px") is not None:
        rows = [
            [
                f"{ev.get('log_px_is', 'log p(x)')} "
                + (f"({ESTIMATE_BOUND})" if bound else "(importance sampled)"),
                _f(ev["log_px"], 3),
                _f(ev.get("log_px_se"), 3),
                "a lower bound: the ELBO (K identical draws; importance sampling cannot tighten it)"
                if bound
                else f"K = {ev.get('num_samples')} samples per datapoint",
            ],
            *(
                [
                    [
                        f"log p(x | {ev.get('conditions', 'y')})",
                        _f(ev["log_px_given_attributes"], 3),
                        "",
                        "= log p(x, y) − log p(y): the density of x given its attributes",
                    ]
                ]
                if ev.get("log_px_given_attributes") is not None
                else []
            ),
            *rows,
            [
                f"gap {ev.get('log_px_is', 'log p(x)')} − ELBO",
                _f(ev.get("gap"), 3),
                _f(ev.get("gap_se"), 3),
                "KL(q(z|x) ‖ p(z|x)): how far the guide is from the posterior",
            ],
            [
                "ESS (mean, min)",
                f"{_f(ev.get('ess_mean'), 1)}, {_f(ev.get('ess_min'), 1)}",
                "",
                f"effective sample size of K = {ev.get('num_samples')}",
            ],
            [
                "Pareto k̂ (median, max)",
                f"{_f(ev.get('khat_median'), 2)}, {_f(ev.get('khat_max'), 2)}",
                "",
                f"{ev.get('khat_num_unreliable')} datapoints above {ev.get('khat_threshold')}",
            ],
            [
                "active units",
                _units_cell(ev),
                "",
                f"Cov_x E_q[z_u] > {ev.get('au_threshold')}",
            ],
        ]
    if ev.get("elbo_labelled") is not None:  # an SSVAE's train split: two kinds of rows
        joint = ev.get("joint", "log p(x, y)")
        for kind, n, what in (
            ("labelled", ev.get("num_labelled"), joint),
            ("unlabelled", ev.get("num_unlabelled"), "log p(x)"),
        ):
            if ev.get(f"log_px_{kind}") is not None:
                rows.append([f"{what}, the {n} {kind} rows", _f(ev[f"log_px_{kind}"], 3), "", ""])
            rows.append(
                [f"ELBO of the {n} {kind} rows", _f(ev[f"elbo_{kind}"], 3), "", f"bounds {what}"]
            )
    if ev.get("has_latent") is False:  # MADE: nothing sampled, no weights, no units
        not_here = ("ESS (mean, min)", "Pareto k̂ (median, max)", "active units")
        rows = [r for r in rows if r[0] not in not_here]
        rows.append(["k̂, ESS, active units", "n/a", "", ev.get("exact_note", "no latent")])
    if bound:  # a point mass: K identical draws, so no gap, ESS or k̂ to speak of
        for r in rows:
            if r[0].startswith("gap "):
                r[1:] = ["unknown", "", "not 0: a point-mass guide's bound cannot be tightened"]
            elif r[0] in ("ESS (mean, min)", "Pareto k̂ (median, max)"):
                r[1:] = ["n/a", "", "K identical draws of a point-mass guide"]
    table = Table(
        ["quantity", "nats per datapoint", "± se", "meaning"],
        rows,
        caption=f"{ev.get('split', 'test')} split, {ev.get('num_datapoints')} "
        f"datapoints; from {ev['source']}",
    )
    paragraphs = [_elbo_sentence(ev) + "."]
    share = run.khat_share() if ev.get("has_latent") is not False else None
    if ev.get("has_latent") is False:
        paragraphs.append(f"A model with {ev.get('exact_note', 'no latent variable')}.")
    if bound and ev.get("estimate_note"):
        paragraphs.append(f"log p(x) is a {ev['estimate_note']}.")
    codebook = _codebook_text(ev.get("codebook"))
    if codebook:
        paragraphs.append(f"Codebook usage: {codebook}.")
    if ev.get("prior_stage_note"):
        paragraphs.append(f"Note: {ev['prior_stage_note']}.")
    if share is not None:
        paragraphs.append(
            f"{100 * share:.1f}% of the datapoints have Pareto k̂ above "
            f"{ev.get('khat_threshold')}: for them the importance-sampled log p(x) cannot be "
            "trusted (k̂ ≤ 0.5 good, 0.5–0.7 usable, above 0.7 unreliable; Vehtari et al.)."
        )
    cautions = stale + ([POINT_MASS_NOTE] if point_mass else [])  # k̂'s is in the overview
    details = []
    if ev.get("kl_per_dim"):
        au = dict(zip(ev.get("mean_names") or [], ev.get("au_variance") or []))
        threshold = ev.get("au_threshold") or 0.01
        discrete = set(ev.get("discrete_sites") or ())
        kl_rows = []
        for name, kl in zip(ev.get("kl_names") or [], ev["kl_per_dim"]):
            var = au.get(name)
            if name.split("[", 1)[0] in discrete:  # a label: no unit (Burda et al.)
                kl_rows.append([name, _f(kl, 4), "–", "discrete latent (not a unit)"])
                continue
            state = "–" if var is None else ("active" if var > threshold else "inactive")
            kl_rows.append([name, _f(kl, 4), "–" if var is None else f"{var:.3g}", state])
        rows_word = "row" if len(kl_rows) == 1 else "rows"
        details.append(
            Table(
                ["latent", "KL (nats)", "Cov_x E_q[z]", "unit"],
                kl_rows,
                caption=f"KL per latent dimension ({len(kl_rows)} {rows_word})",
            )
        )
    # the figures are eval/diagnostics.json's: say so when that evaluation is of older weights
    old = run.stale(run.diagnostics)
    was = f"Of the older evaluation ({old}): " if old else ""
    fig_split = (run.diagnostics or {}).get("split", "test")
    was += f"{fig_split} split (eval/diagnostics.json). "
    if run.diagnostics and ev.get("source") != "eval/diagnostics.json":
        if fig_split != ev.get("split", "test"):
            cautions.append(
                f"The table is of the {ev.get('split', 'test')} split ({ev['source']}); the "
                f"figures below are of the {fig_split} split (eval/diagnostics.json, an "
                "earlier evaluation)."
            )
    figures = [
        f
        for f in (
            _figure(
                run, "kl_per_dimension", was + "Mean KL per latent dimension; grey: inactive units."
            ),
            _figure(
                run,
                "khat",
                was + "Pareto k̂ per datapoint; right of the dashed line the "
                "estimate of log p(x) is unreliable.",
            ),
            _figure(
                run,
                "log_px_vs_elbo",
                was + "Per datapoint log p̂(x) against the ELBO: the "
                "height above the diagonal is the gap.",
            ),
        )
        if f
    ]
    per_site = _per_site_table(ev)
    tables = [table, per_site] if per_site else [table]
    return Section("Evaluation", paragraphs, cautions, tables, figures, details)


def _score_rows(c: dict) -> list[list[Any]]:
    from pyro_gen.evaluate.classification import score_items

    return [
        [c.get("split", "?"), what, value, c.get("num_datapoints"), c.get("source", "")]
        for what, value in score_items(c)
    ]


@register_section("classifier", order=52)
def classifier(run: RunRecord) -> Section | None:
    """The model's own classifier q(y|x) (an SSVAE's labels, a CVAE's missing attributes):
    its accuracy on the labelled test and validation splits, and per epoch in training."""
    from pyro_gen.evaluate.classification import WHAT

    found = run.classifier()
    columns = list(
        dict.fromkeys(
            k
            for r in run.history
            for k in r
            if k.startswith("valid_") and k.endswith(("accuracy", "_mae"))
        )
    )
    if not found and not columns:
        return None
    paragraphs = [
        f"The {WHAT}: the model's own classifier (the guide's q(y|x), which infers a label "
        "or attribute from the image alone) against the split's true labels. This is what a "
        "semi-supervised model is judged by (Kingma et al. 2014 report test accuracy); it "
        "is not a judge of generated samples (pyro-gen quality)."
    ]
    tables = []
    notes = list(dict.fromkeys(c["note"] for c in found if c.get("note")))
    if found:
        rows = [row for c in found for row in _score_rows(c)]
        tables.append(Table(["split", "score", "value", "N", "from"], rows))
    figures, details = [], []
    cautions = [f"q(y|x)'s scores: {n}." for n in notes]
    if columns:
        from pyro_gen import plots

        points = [r for r in run.history if any(r.get(c) not in ("", None) for c in columns)]
        if len(points) > 1 and all(len({r.get(c) for r in points}) == 1 for c in columns):
            cautions.append(
                f"The validation scores of q(y|x) are the same after each of {len(points)} "
                "epochs: the classifier is most likely not trained. A CVAE trains q(y|x) only "
                "on rows whose attribute is missing (masked or left out); with every attribute "
                "observed in training its q(y|x) keeps its initial weights."
            )
        details.append(
            Table(
                ["epoch", "step", *columns],
                [[r.get("epoch"), r.get("step"), *[r.get(c) for c in columns]] for r in points],
                caption="validation scores of q(y|x) after each epoch (history.csv)",
            )
        )
        fig = plots.plt.figure(figsize=(5.5, 3.0), layout="constrained")
        ax = fig.add_subplot()
        for c in columns:
            xs = [r["step"] for r in points if isinstance(r.get(c), (int, float))]
            ys = [r[c] for r in points if isinstance(r.get(c), (int, float))]
            ax.plot(xs, ys, marker="o", label=c)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (fraction) / MAE")
        ax.set_title("validation accuracy of q(y|x) per epoch")
        ax.legend(fontsize="small")
        figures.append(Image(data_uri(fig), "The classifier q(y|x) on the validation split."))
    return Section("Classifier q(y|x)", paragraphs, cautions, tables, figures, details)


@register_section("ais", order=55)
def ais_section(run: RunRecord) -> Section | None:
    """``pyro-gen evaluate --method ais``: log p(x) by annealed importance sampling (and the
    BDMC gap where it was asked for), next to the importance-sampled estimate."""
    a = run.summary.get("evaluate_ais")
    if not a:
        return None
    rows = [
        [
            f"{a.get('log_px_is', 'log p(x)')} by AIS",
            _f(a.get("log_px"), 3),
            _f(a.get("log_px_se"), 3),
            f"{a.get('num_datapoints')} datapoints",
        ],
        *(
            [
                [
                    "log p(x | y) = log p(x, y) − log p(y)",
                    _f(a["log_px_given_attributes"], 3),
                    "",
                    "the density of x given its attributes",
                ]
            ]
            if a.get("log_px_given_attributes") is not None
            else []
        ),
        ["Monte-Carlo error per datapoint (mean)", _f(a.get("mc_error_mean"), 3), "", ""],
        [
            "chains' ESS (mean, min)",
            f"{_f(a.get('ess_mean'), 1)}, {_f(a.get('ess_min'), 1)}",
            "",
            f"of {a.get('num_chains')} chains",
        ],
        ["HMC acceptance (mean)", _f(a.get("acceptance_mean"), 2), "", ""],
    ]
    paragraphs = [
        f"{a.get('num_steps')} annealing steps ({a.get('schedule', '?')} schedule) from "
        f"{a.get('start', 'the guide')}, {a.get('num_chains')} chains of "
        f"{a.get('num_leapfrog')} leapfrog steps; {_f(a.get('seconds'), 1)} s."
    ]
    ev = run.evaluation() or {}
    if ev.get("log_px") is not None and a.get("log_px") is not None:
        diff = a["log_px"] - ev["log_px"]
        paragraphs.append(
            f"AIS minus importance sampling: {diff:+.2f} nats per datapoint (both are stochastic "
            "lower bounds on average; the higher one is the tighter; the two were computed on "
            "the points each command drew)."
        )
    b = a.get("bdmc")
    why = run.stale(a)
    cautions = [f"This AIS estimate is of older weights: {why}."] if why else []
    if b:
        rows.append(
            [
                "BDMC gap (upper − lower)",
                _f(b.get("gap"), 3),
                _f(b.get("gap_se"), 3),
                f"{b.get('num_datapoints')} simulated datapoints",
            ]
        )
        if isinstance(b.get("gap"), (int, float)) and b["gap"] > 1:
            cautions.append(
                f"The BDMC gap is {b['gap']:.2f} nats: the AIS estimate may still be that far "
                "below log p(x). More annealing steps (--num-steps) narrow it."
            )
    table = Table(["quantity", "nats per datapoint", "± se", ""], rows)
    return Section("Annealed importance sampling", paragraphs, cautions, [table])


def _comparison_header(cols: list[str]) -> list[str]:
    from pyro_gen.evaluate.compare import COLUMNS

    return [COLUMNS[c][0].replace("\\|", "|") if c in COLUMNS else c for c in cols]


def _comparison_row(row: dict, cols: list[str], rank_shift: int = 0) -> list[str]:
    """One row of ``pyro-gen compare``'s table for a person: ranks as written (from 1;
    ``rank_shift`` 1 for a comparison.csv of an older pyro-gen, which ranked from 0), nats to 2
    decimals, the share of k̂ > 0.7 in percent, – for what a model does not have (NaN, empty)."""
    out = []
    for c in cols:
        v = row.get(c)
        if isinstance(v, str) and c != "model":
            try:
                v = float(v) if v.strip() else None
            except ValueError:
                pass
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        if (v is None or v == "") and str(row.get("note", "")).startswith("no latent"):
            out.append("n/a")  # k̂, active units of a model without a latent (MADE)
        elif (v is None or v == "") and row.get("estimate") == ESTIMATE_BOUND:
            out.append("n/a")  # the gap, k̂ of a bound (point-mass guide): unknown, no weights
        elif v is None or v == "":
            out.append("–")
        elif c == "rank":
            out.append(str(int(v) + rank_shift))
        elif c == "khat_share":
            out.append(f"{100 * v:.1f}%")
        elif c in ("active_units", "num_datapoints", "num_samples"):
            out.append(str(int(v)))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(f"{v:.2f}")
        else:
            out.append(str(v))
    return out


@register_section("run_comparison", order=60)
def run_comparison(run: RunRecord) -> Section | None:
    path = run.path / "eval" / "comparison.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = ["rank", "model", "test_nll", "nll_se", "elbo", "gap", "khat_share", "d_log_px"]
    if any(r.get("estimate") for r in rows):  # exact, importance-sampled or a bound
        cols.insert(2, "estimate")
    if any(r.get("quantity") for r in rows):  # what each row's log p̂ is of: log p(x | y)...
        cols.insert(2, "quantity")
    shift = 1 if any(r.get("rank") == "0" for r in rows) else 0  # an older CSV ranked from 0
    table = Table(
        _comparison_header(cols),
        [_comparison_row(r, cols, shift) for r in rows],
        caption="pyro-gen compare (eval/comparison.csv); nats per datapoint, – where a model "
        "has no such value (a β = 0 run has no log p(x), ELBO or k̂)",
    )
    image = _figure(run, "comparison", "log p̂(x) ± se and paired differences")
    if image is None and (run.path / "eval" / "comparison.png").is_file():
        image = Image(data_uri(run.path / "eval" / "comparison.png"), "comparison")
    kinds = sorted({r["quantity"] for r in rows if r.get("quantity")})
    cautions = (
        [
            f"The rows are densities of different things ({'; '.join(kinds)}): a density of x "
            "given attributes y is not comparable with one of x alone. Ranks are within each."
        ]
        if len(kinds) > 1
        else []
    )
    if any(r.get("estimate") == ESTIMATE_BOUND for r in rows):
        from pyro_gen.evaluate.compare import BOUNDS_APART

        cautions.append(BOUNDS_APART[0].upper() + BOUNDS_APART[1:] + ".")
    return Section(
        "Comparison with other runs",
        cautions=cautions,
        tables=[table],
        figures=[image] if image else [],
    )


@register_section("other_figures", order=1000)
def other_figures(run: RunRecord) -> Section | None:
    """Figures no other section showed (e.g. a family's traversals), so nothing is hidden."""
    left = [s for s in run.figures if s not in run.claimed]
    if not left:
        return None
    return Section("Other figures", figures=[_figure(run, s, s.replace("_", " ")) for s in left])


# -- several runs --------------------------------------------------------------------------------
def _log_px_cell(ev: dict) -> str:
    """log p(x); a conditional run's log p(x | y), said so (its log p(x, y) is no log p(x))."""
    if ev.get("log_px_given_attributes") is not None:
        return f"{_f(ev['log_px_given_attributes'])} (given {ev.get('conditions', 'y')})"
    if ev.get("log_px_is"):
        return f"{_f(ev.get('log_px'))} ({ev['log_px_is']})"
    if _is_bound_estimate(ev):
        return f"≥ {_f(ev.get('log_px'))} ({ESTIMATE_BOUND})"
    return _f(ev.get("log_px"))


def _accuracy_cell(run: RunRecord) -> str:
    """The run's own classifier q(y|x) on its test split (first score), e.g. '93.1% (test)'."""
    from pyro_gen.evaluate.classification import score_items

    for c in run.classifier():
        items = score_items(c)
        if items:
            what, value = items[0]
            label = "" if what.startswith("accuracy") else f"{what.split(':')[0]} "
            note = f"; {c['note'].split(':')[0]}" if c.get("note") else ""
            return f"{label}{value} ({c.get('split', '?')}{note})"
    return "–"


@register_section("runs", order=10, kind="comparison")
def runs_table(runs: RunSet) -> Section:
    header = [
        "run",
        "model",
        "latent_dim",
        "β",
        "steps",
        "ELBO",
        "log p(x)",
        "gap",
        "active units",
        "k̂ > 0.7",
        "q(y|x) accuracy",
    ]
    rows, cautions = [], []
    for r in runs.runs:
        name: str | Link = r.name
        if (r.path / "report.html").is_file():  # the run's own page, relative to this one
            where = r.path / "report.html"
            if runs.links_from is not None:
                where = Path(os.path.relpath(where, runs.links_from))
            name = Link(r.name, where.as_posix())
        ev = r.evaluation() or {}
        share = r.khat_share()
        exact = ev.get("has_latent") is False  # MADE: k̂ and active units do not apply
        train = r.summary.get("train") or {}
        rows.append(
            [
                name,
                r.model_name or "–",
                r.model_args.get("latent_dim"),
                r.model_args.get("beta"),
                train.get("steps"),
                _f(ev.get("elbo")),
                _log_px_cell(ev),
                _f(ev.get("gap")),
                "n/a" if exact else ev.get("active_units"),
                "n/a" if exact else f"{100 * share:.1f}%" if share is not None else "–",
                _accuracy_cell(r),
            ]
        )
        caution = _caution(ev)
        if caution:
            cautions.append(f"{r.name}: {caution}")
        if r.point_mass:
            cautions.append(f"{r.name}: {POINT_MASS_NOTE}")
    paragraphs = [
        "Each run's own evaluation (nats per datapoint); the test points may differ "
        "between runs unless they were compared with pyro-gen compare. A run's name links to "
        "its own page."
    ]
    return Section("Runs", paragraphs, cautions, [Table(header, rows)])


@register_section("curves", order=20, kind="comparison")
def curves(runs: RunSet) -> Section | None:
    from pyro_gen import plots

    histories = {r.name: r.history for r in runs.runs if r.history}
    if not histories:
        return None
    return Section(
        "Training curves",
        figures=[
            Image(
                data_uri(plots.compare_curves(histories)), "Validation value per step of each run."
            )
        ],
    )


@register_section("ranking", order=30, kind="comparison")
def ranking(runs: RunSet) -> Section | None:
    c = runs.comparison
    if c is None:
        return None
    from pyro_gen import plots
    from pyro_gen.evaluate.compare import BOUNDS_APART, COLUMNS, NOT_A_BOUND, plot_rows

    cols = list(COLUMNS)
    header = _comparison_header(cols)
    rows = [_comparison_row(r, cols) for r in c.rows]
    ranked = c.ranked_rows
    figures = (
        [
            Image(
                data_uri(plots.comparison_plot(plot_rows(ranked))),
                "log p̂ ± se, best at the top; grey: the paired difference from the best "
                "of the same quantity (one panel per quantity)",
            )
        ]
        if ranked
        else []
    )
    paragraphs = []
    if ranked:
        paragraphs.append(
            f"Ranked by importance-sampled log p(x) on the same {ranked[0]['num_datapoints']} "
            f"test points with K = {ranked[0]['num_samples']}; the paired se of a difference is "
            "smaller than either model's se because the points are the same."
        )
    cautions = [c.warning] if getattr(c, "warning", "") else []
    if len(ranked) < len(c.rows):
        cautions.append("Not ranked: " + NOT_A_BOUND + ".")
    if any(r.get("estimate") == ESTIMATE_BOUND for r in ranked):
        cautions.append(BOUNDS_APART[0].upper() + BOUNDS_APART[1:] + ".")
    for r in ranked:
        note = khat_caution(
            r.get("khat_share"), KHAT_THRESHOLD, r.get("num_datapoints"), r.get("num_samples")
        )
        if note:
            cautions.append(f"{r['model']}: {note}")
    return Section(
        "Ranking on the same test points", paragraphs, cautions, [Table(header, rows)], figures
    )
