"""``pyro-gen evaluate RUN``: the ELBO on a split; with ``--num-samples K`` the importance-sampled
log p(x), gap, KL per dimension, active units, ESS and PSIS k̂; with ``--method ais`` log p(x) by
annealed importance sampling with HMC (and ``--bdmc``, its sandwich gap on simulated data)."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

from pyro_gen.cli.common import (
    describe_elbo_result,
    load_data,
    model_batch,
    open_run,
    run_data_spec,
    subset,
    update_summary,
)
from pyro_gen.cli.report import write_run_report
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.evaluate.elbo import describe_is_split, describe_parts
from pyro_gen.io import write_json
from pyro_gen.report.run import weights_stamp

__all__ = ["add_parser", "cmd_evaluate", "prior_stage_note"]


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "evaluate",
        "test ELBO = reconstruction − KL; with --num-samples: log p(x), gap, k̂",
        "Evaluate the ELBO = reconstruction − KL on a split (summary.json). With --num-samples K "
        "also the importance-sampled log p(x), the gap log p(x) − ELBO, KL per dimension, active "
        "units, ESS and PSIS k̂ (eval/diagnostics.json, eval/inference_data.nc, figures/).",
        data=True,
    )
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument(
        "--num-particles", type=int, default=1, help="Monte-Carlo draws per datapoint (default 1)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate on a random subset of N datapoints (drawn with --seed)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        metavar="K",
        help="importance samples per datapoint: also estimate log p(x) and write the full "
        "diagnostics (eval/diagnostics.json, eval/inference_data.nc, figures/)",
    )
    p.add_argument(
        "--points", type=int, default=10, help="datapoints with posterior draws in the .nc (10)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="datapoints per chunk (1000; not used by --method ais)",
    )
    ais = p.add_argument_group(
        "annealed importance sampling (--method ais)",
        "log p(x) by AIS with HMC from the guide to the posterior (eval/ais.json): for when "
        "importance sampling's k̂ says it is unreliable. Cost: about (--num-steps + tuning) x "
        "--num-leapfrog x --num-chains model+gradient evaluations per datapoint.",
    )
    ais.add_argument(
        "--method",
        choices=("is", "ais"),
        default="is",
        help="is: importance sampling with --num-samples (default); ais: AIS with HMC",
    )
    ais.add_argument(
        "--num-steps", type=int, default=1000, help="AIS intermediate distributions (1000)"
    )
    ais.add_argument("--num-chains", type=int, default=16, help="AIS chains per datapoint (16)")
    ais.add_argument(
        "--num-leapfrog", type=int, default=10, help="leapfrog steps per HMC move (10)"
    )
    ais.add_argument(
        "--schedule",
        choices=("sigmoid", "linear", "geometric"),
        default="sigmoid",
        help="spacing of the inverse temperatures (sigmoid)",
    )
    ais.add_argument(
        "--start",
        choices=("guide", "prior"),
        default="guide",
        help="AIS starts from q(z|x) (guide, default) or p(z) (prior; also for a β = 0 model)",
    )
    ais.add_argument(
        "--bdmc",
        action="store_true",
        help="also the BDMC sandwich gap with the same settings on as many datapoints "
        "simulated from the model (how far the AIS estimate can be from log p(x))",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bar (shown by default on a terminal)",
    )
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyro_gen.evaluate import PointMassGuideError

    model, config = open_run(args.run, args.device)
    ds = load_data(run_data_spec(args.run, config, args))
    # the model's named batch: a conditional model's attributes (or labels) come with the images
    batch = subset(model_batch(model, ds, args.split), args.limit, args.seed)
    x, observed = batch.pop("x"), batch
    args.classifier = _classifier(args, model, ds)  # the model's own q(y|x), where it has one
    skipped = ""
    if args.method == "ais":
        return _evaluate_ais(args, model, x, **observed)
    if args.num_samples is not None:
        try:
            return _evaluate_diagnostics(args, model, x, **observed)
        except PointMassGuideError as e:  # raised before any file is written
            skipped = (
                f"skipped the importance-sampled diagnostics (--num-samples {args.num_samples}: "
                "log p(x), gap, ESS, k̂, KL per dimension, eval/inference_data.nc): they need a "
                f"density for q(z|x), and {e}"
            )
    elbo = evaluate_elbo(model, x, num_particles=args.num_particles, seed=args.seed, **observed)
    result = elbo.summary()
    mixed = _mixed_rows(elbo.elbo, None, observed, list(elbo.attributes_per_site))
    result.update(mixed)
    result["split"] = args.split
    result.update(weights_stamp(args.run))  # which weights: the report drops it after a resume
    if skipped:
        result["skipped"] = skipped
    if args.classifier:
        result["classifier"] = args.classifier
    result.update(_model_facts(model, x, args.run))
    update_summary(args.run, "evaluate", result)
    print(
        f"pyro-gen: {args.split} {describe_elbo_result(result)} ({result['num_datapoints']} "
        f"datapoints); wrote {args.run / 'summary.json'}"
    )
    _print_mixed(mixed)
    _print_classifier(args)
    _print_codebook(result.get("codebook"))
    if result.get("prior_stage_note"):
        print(f"pyro-gen: note: {result['prior_stage_note']}")
    if "note" in result:
        print(f"pyro-gen: note: {result['note']}")
    if skipped:
        print(f"pyro-gen: note: {skipped}")
    _report(args.run)
    return 0


def _evaluate_ais(args: argparse.Namespace, model, x: torch.Tensor, **observed) -> int:
    from pyro_gen.evaluate import ais, attribute_term, bdmc

    if args.num_samples is not None:
        print(
            f"pyro-gen: note: --num-samples {args.num_samples} is not used by --method ais (its "
            "draws are --num-chains chains per datapoint); drop it or use --method is"
        )
    if args.batch_size != 1000:  # the importance-sampling default
        print(
            f"pyro-gen: note: --batch-size {args.batch_size} is not used by --method ais (it "
            "chunks the datapoints by memory itself)"
        )
    settings = dict(
        num_steps=args.num_steps,
        num_chains=args.num_chains,
        num_leapfrog=args.num_leapfrog,
        schedule=args.schedule,
        start=args.start,
        seed=args.seed,
        progress=args.progress,
    )
    r = ais(model, x, **settings, **observed)
    result = {**r.summary(), "split": args.split, **weights_stamp(args.run)}
    term = attribute_term(model, x, seed=args.seed, **observed) if observed else None
    if term is not None:  # a CVAE's AIS estimate is of log p(x, y): said so, and log p(x | y)
        result["log_px_is"] = f"log p(x, {term.conditions})"
        if term.exact:
            result["log_px_given_attributes"] = result["log_px"] - float(term.log_prob.mean())
    if args.classifier:
        result["classifier"] = args.classifier
    if args.bdmc:
        result["bdmc"] = bdmc(model, x, **settings, **observed).summary()
    eval_dir = args.run / "eval"
    write_json(
        eval_dir / "ais.json",
        _strict_json(
            {
                **result,
                "log_px_per_datapoint": r.log_px.tolist(),
                "mc_error_per_datapoint": r.log_px_se.tolist(),
                "ess_per_datapoint": r.ess.tolist(),
                "acceptance_per_step": r.acceptance.tolist(),
            }
        ),
    )
    update_summary(args.run, "evaluate_ais", _strict_json(result))
    given = (
        f" (log p(x | {term.conditions}) {result['log_px_given_attributes']:.3f})"
        if "log_px_given_attributes" in result
        else ""
    )
    print(
        f"pyro-gen: {args.split} {result.get('log_px_is', 'log p(x)')} {result['log_px']:.3f} ± "
        f"{_pm(result['log_px_se'])} nats{given} by AIS (T={r.num_steps}, {r.num_chains} "
        f"chains, {r.num_leapfrog} leapfrog, "
        f"{result['schedule']}); acceptance {result['acceptance_mean']:.2f}, chains' ESS "
        f"{result['ess_mean']:.1f}/{r.num_chains} ({result['num_datapoints']} datapoints, "
        f"{r.seconds:.1f} s); wrote {eval_dir / 'ais.json'}"
    )
    _print_classifier(args)
    if args.bdmc:
        b = result["bdmc"]
        print(
            f"pyro-gen: BDMC on {b['num_datapoints']} simulated datapoints: gap "
            f"{b['gap']:.3f} ± {_pm(b['gap_se'])} nats (upper − lower bound); a gap above "
            "~1 nat asks for a longer --num-steps"
        )
        if b.get("negative_gap"):
            print(
                "pyro-gen: caution: BDMC gap below zero beyond its error: too few chains or "
                "datapoints for the upper bound; increase --num-chains (or --limit)"
            )
    _report(args.run)
    return 0


def _conditional(model, x: torch.Tensor, seed: int, r: dict, **observed) -> dict:
    """For a model with observed attribute sites (a CVAE): its importance-sampled log p(x, y)
    and reconstruction split like evaluate_elbo's (reconstruction of x only, log p(y) apart),
    and log p(x | y) = log p(x, y) − log p(y) where log p(y) does not depend on z (exact)."""
    from pyro_gen.evaluate.elbo import attribute_term

    if not observed:
        return {}
    term = attribute_term(model, x, seed=seed, **observed)
    if term is None:
        return {}
    mean = float(term.log_prob.mean())
    out = {
        "reconstruction": r["reconstruction"],  # diagnose's is the x site's alone already
        "attributes_log_prob": mean,
        "attributes_per_site": {k: float(v.mean()) for k, v in term.per_site.items()},
        "bound_on": f"log p(x, {term.conditions})",
        "conditions": term.conditions,
        "log_px_is": f"log p(x, {term.conditions})",
    }
    if term.exact:
        out["log_px_given_attributes"] = r["log_px"] - mean
    return out


def _mixed_rows(
    elbo: torch.Tensor, log_px: torch.Tensor | None, observed: dict, sites: list[str]
) -> dict:
    """A split whose rows are partly labelled (an SSVAE's train split: the ``observed`` mask of
    its batch): the ELBO of a labelled row bounds log p(x, y), that of an unlabelled row
    log p(x), so their average is of neither. Then ``bound_on`` says so, and the two kinds of
    rows are reported apart (``elbo_labelled``, ``elbo_unlabelled``, and with importance
    sampling ``log_px_labelled``, ``log_px_unlabelled``); {} for any other split."""
    mask = observed.get("observed")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 1:
        return {}
    mask = mask.cpu()
    labelled, unlabelled = int(mask.sum()), int((~mask).sum())
    if labelled == 0 or unlabelled == 0 or mask.numel() != elbo.numel():
        return {}
    joint = f"log p(x, {', '.join(sites) or 'y'})"
    out = {
        "bound_on": f"{joint} on the {labelled} labelled rows and log p(x) on the {unlabelled} "
        "unlabelled ones, averaged together (see elbo_labelled, elbo_unlabelled)",
        "num_labelled": labelled,
        "num_unlabelled": unlabelled,
        "elbo_labelled": float(elbo[mask].mean()),
        "elbo_unlabelled": float(elbo[~mask].mean()),
        "joint": joint,
    }
    if log_px is not None:
        out["log_px_is"] = f"{joint} (labelled rows) and log p(x) (unlabelled), averaged"
        out["log_px_labelled"] = float(log_px[mask].mean())
        out["log_px_unlabelled"] = float(log_px[~mask].mean())
    return out


def _print_mixed(mixed: dict) -> None:
    if mixed:
        print(
            f"pyro-gen: note: this split mixes {mixed['num_labelled']} labelled rows, whose ELBO "
            f"bounds {mixed['joint']} (mean {mixed['elbo_labelled']:.3f}), and "
            f"{mixed['num_unlabelled']} unlabelled rows, whose ELBO bounds log p(x) (mean "
            f"{mixed['elbo_unlabelled']:.3f}): the average is of neither; --split test "
            "is all unlabelled"
        )


TRAIN_SPLIT_NOTE = (
    "on the train split, which holds the labelled images q(y|x) was trained on: an optimistic "
    "figure; --split test gives the honest one"
)


def _classifier(args: argparse.Namespace, model, ds) -> dict | None:
    """The model's own classifier q(y|x) scored on the same rows of the split (None: it has
    none, or the split has no labels); also written to eval/classifier.json."""
    from pyro_gen.evaluate.classification import (
        WHAT,
        classifier_batch,
        classifier_note,
        classifier_scores,
    )

    batch = classifier_batch(model, ds, args.split)
    if batch is None:
        return None
    batch = subset(batch, args.limit, args.seed)
    scores = classifier_scores(model, batch, batch_size=args.batch_size)
    if not scores:
        return None
    result = {
        "what": f"{args.split} {WHAT}: the model's own classifier against the split's true "
        "labels (accuracy: fraction in [0, 1]; mae: attribute units)",
        **scores,
        **_notes(classifier_note(model).get("note"), args.split),
        "split": args.split,
        "num_datapoints": int(batch["x"].shape[0]),
        **weights_stamp(args.run),
    }
    write_json(args.run / "eval" / "classifier.json", result)
    return result


def _notes(note: str | None, split: str) -> dict:
    notes = [n for n in (note, TRAIN_SPLIT_NOTE if split == "train" else None) if n]
    return {"note": "; ".join(notes)} if notes else {}


def _print_classifier(args: argparse.Namespace) -> None:
    from pyro_gen.evaluate.classification import describe_scores

    c = getattr(args, "classifier", None)
    if c:
        print(
            f"pyro-gen: {describe_scores(c, c['split'])} ({c['num_datapoints']} datapoints; the "
            f"model's own classifier); wrote {args.run / 'eval' / 'classifier.json'}"
        )


def _strict_json(value):
    """Strict JSON, as the importance-sampling path writes: NaN and ±inf (a standard error
    from one datapoint or one chain) become null, in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def _pm(se: float | None) -> str:
    """A standard error for print: 'n/a' where there is none (NaN: one datapoint or chain)."""
    return "n/a" if se is None or not math.isfinite(se) else f"{se:.3f}"


def describe_per_site(per_site: dict) -> str:
    """Each latent site's mean KL and active units in words, for a model with more than one
    latent site (a hierarchical VAE's layers): ``"KL per site: z2 0.78 (AU 1/4), z1 9.46 (AU
    7/8)"``; a discrete site has no units; "" for one site or none.

    >>> describe_per_site({"z2": {"kl": 0.78, "active_units": 1, "dims": 4},
    ...                    "z1": {"kl": 9.46, "active_units": 7, "dims": 8}})
    'KL per site: z2 0.78 nats (AU 1/4), z1 9.46 nats (AU 7/8)'
    """
    if len(per_site) < 2:
        return ""
    parts = []
    for name, e in per_site.items():
        kl = e.get("kl")
        kl = f"{kl:.2f} nats" if isinstance(kl, (int, float)) and math.isfinite(kl) else "n/a"
        units = "discrete" if e.get("discrete") else f"AU {e.get('active_units')}/{e.get('dims')}"
        parts.append(f"{name} {kl} ({units})")
    return "KL per site: " + ", ".join(parts)


def _units(r: dict) -> str:
    """'3/8', or 'n/a (discrete z)' for a model whose latents are all discrete."""
    if not r.get("latent_dims") and r.get("discrete_sites"):
        return f"n/a (discrete {', '.join(r['discrete_sites'])})"
    return f"{r['active_units']}/{r['latent_dims']}"


def _codebook(model, x: torch.Tensor) -> dict | None:
    """The codebook usage of a model that has ``codebook_usage(x)`` (a VQ-VAE) on ``x``:
    perplexity exp(H(usage)), codes used, dead codes; None for any other model."""
    usage = getattr(model, "codebook_usage", None)
    if not callable(usage):
        return None
    device = getattr(model, "device", None)
    with torch.no_grad():
        stats = dict(usage(x.to(device) if isinstance(device, torch.device) else x))
    return {**stats, "num_datapoints": int(x.shape[0])}


PRIOR_STAGE_NOTE = (
    "the prior was fitted jointly with the rest of the model only: pyro-gen train has no "
    "prior-only stage (the codes move while the prior learns them). To fit the prior alone on "
    "the final codes (only its parameters train, the same objective; it can only raise the "
    "prior's log-likelihood term of the bound), in Python: with model.prior_only(): "
    "Trainer(model, ...).fit(x_train), then save_model"
)


def _model_facts(model, x, run) -> dict:
    """What both evaluation paths add for some models: codebook usage, the prior-stage note."""
    facts = {}
    codebook = _codebook(model, x)
    if codebook:
        facts["codebook"] = codebook
    prior_note = prior_stage_note(model, run)
    if prior_note:
        facts["prior_stage_note"] = prior_note
    return facts


def prior_stage_note(model, run) -> str | None:
    """For a model with a prior-only training stage (``prior_only()``, a VQ-VAE with a
    learned prior) trained by ``pyro-gen train`` (summary.json has its "train" section): that
    the CLI never ran that stage, and how to run it; None otherwise (no such stage, or it has
    nothing to train: ``prior_only()`` raises a ConfigError, e.g. a uniform prior)."""
    from pyro_gen.errors import ConfigError
    from pyro_gen.io import read_json

    stage = getattr(model, "prior_only", None)
    path = run / "summary.json"
    if not callable(stage) or not path.is_file():
        return None
    if not isinstance((read_json(path, "summary") or {}).get("train"), dict):
        return None  # not trained by pyro-gen train (the Python API may have run the stage)
    try:
        with stage():  # freezes and restores requires_grad; raises where nothing to train
            pass
    except ConfigError:
        return None
    return PRIOR_STAGE_NOTE


def _print_codebook(c: dict | None) -> None:
    if c:
        k = c.get("num_codes")
        print(
            f"pyro-gen: codebook: perplexity {c['perplexity']:.2f} of {k} codes (1: one code "
            f"used, {k}: all used evenly); {c['codes_used']} used, {c['dead_codes']} dead "
            f"(never the nearest code on these {c['num_datapoints']} datapoints)"
        )


def _report(run) -> None:
    report = write_run_report(run)
    if report is not None:
        print(f"pyro-gen: wrote {report} (the run on one page)")


def _evaluate_diagnostics(args: argparse.Namespace, model, x: torch.Tensor, **observed) -> int:
    import math

    from pyro_gen import plots
    from pyro_gen.evaluate import diagnose, save_inference_data, to_inference_data
    from pyro_gen.evaluate.diagnostics import ESTIMATE_BOUND, PSIS_MIN_SAMPLES, khat_caution

    start = time.perf_counter()
    diag = diagnose(
        model,
        x,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=args.progress,
        **observed,
    )
    wall = time.perf_counter() - start
    result = {
        **diag.summary(),
        "split": args.split,
        "wall_seconds": round(wall, 2),
        **weights_stamp(args.run),
    }
    conditional = _conditional(model, x, args.seed, result, **observed)
    mixed = _mixed_rows(diag.elbo, diag.log_px, observed, list(diag.attribute_sites))
    if mixed:  # log p(x, y) − log p(y) on some rows, log p(x) on the others: of nothing
        conditional.pop("log_px_given_attributes", None)
        conditional.update(mixed)
    result.update(conditional)
    result.update(_model_facts(model, x, args.run))
    result = {  # strict JSON: NaN (k̂ not computed for K < 21) and inf become null
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()
    }
    eval_dir, figures = args.run / "eval", args.run / "figures"
    write_json(eval_dir / "diagnostics.json", result)
    idata = to_inference_data(model, x, diag, points=args.points, seed=args.seed, **observed)
    save_inference_data(idata, eval_dir / "inference_data.nc")
    drawn = ("kl_per_dimension", "khat", "log_px_vs_elbo")
    bound = diag.estimate == ESTIMATE_BOUND
    if diag.has_latent:
        # a point-mass guide: k̂ is not computed and log p̂(x) is the ELBO (on the diagonal)
        drawn = ("kl_per_dimension",) if bound else drawn
        for name, fig in (
            ("kl_per_dimension", lambda: plots.kl_per_dimension(diag)),
            ("khat", lambda: plots.khat_histogram(diag.khat, diag.khat_threshold)),
            ("log_px_vs_elbo", lambda: plots.log_px_vs_elbo(diag.log_px, diag.elbo)),
        ):
            if name in drawn:
                plots.save_figure(fig(), figures / f"{name}.png")
            else:
                (figures / f"{name}.png").unlink(missing_ok=True)  # an older evaluation's
    else:  # no latent (MADE): no KL, no weights to judge, ELBO = log p(x): empty figures
        for name in drawn:
            (figures / f"{name}.png").unlink(missing_ok=True)  # an older evaluation's
        drawn = ()
    if args.classifier:
        result["classifier"] = args.classifier
    update_summary(
        args.run, "evaluate", {k: v for k, v in result.items() if not isinstance(v, list)}
    )
    r = {**diag.summary(), **conditional}
    what = f"log p({'x, ' + r['conditions'] if 'conditions' in r else 'x'})"
    what = r["log_px_is"] if mixed else what
    given = (
        f", log p(x | {r['conditions']}) {r['log_px_given_attributes']:.3f}"
        if r.get("log_px_given_attributes") is not None
        else ""
    )
    share = r["khat_share_unreliable"]
    khat = (
        f"k̂ > {r['khat_threshold']} for {100 * share:.1f}%"
        if math.isfinite(share)
        else f"k̂ not computed (K < {PSIS_MIN_SAMPLES})"
    )
    if not diag.has_latent:
        print(
            f"pyro-gen: {args.split} {what} {r['log_px']:.3f} ± {r['log_px_se']:.3f} nats, "
            f"exact ({r['exact_note']}; {r['num_datapoints']} datapoints, {wall:.1f} s)"
        )
    elif bound:  # K identical draws: the ELBO, not an estimate of log p(x); no gap, k̂, ESS
        print(
            f"pyro-gen: {args.split} {what} ≥ {r['log_px']:.3f} ± {r['log_px_se']:.3f} nats: "
            f"{ESTIMATE_BOUND}, gap unknown (the ELBO = {describe_parts(r, 3)}; "
            f"K={r['num_samples']} identical draws){given}; k̂ and ESS n/a; active units "
            f"{_units(r)} "
            f"({r['num_datapoints']} datapoints, {wall:.1f} s)"
        )
        print(f"pyro-gen: note: {r['estimate_note']}")
    else:
        print(
            f"pyro-gen: {args.split} {what} {r['log_px']:.3f} ± {r['log_px_se']:.3f} nats "
            f"(K={r['num_samples']}){given}; ELBO {r['elbo']:.3f} ({describe_is_split(r, 3)}); "
            f"gap {r['gap']:.3f}; active units {r['active_units']}/{r['latent_dims']}; {khat}"
            f" ({r['num_datapoints']} datapoints, {wall:.1f} s)"
        )
    caution = khat_caution(
        r["khat_share_unreliable"], r["khat_threshold"], r["num_datapoints"], r["num_samples"]
    )
    if caution:
        print(f"pyro-gen: caution: {caution.replace('K = ', '--num-samples ')}")
    per_site = describe_per_site(r.get("per_site") or {})
    if per_site:
        print(f"pyro-gen: {per_site}")
    _print_mixed(mixed)
    _print_classifier(args)
    _print_codebook(result.get("codebook"))
    if result.get("prior_stage_note"):
        print(f"pyro-gen: note: {result['prior_stage_note']}")
    pngs = f", {figures}/" + ", ".join(f"{n}.png" for n in drawn) if drawn else ""
    print(f"pyro-gen: wrote {eval_dir}/diagnostics.json, {eval_dir}/inference_data.nc{pngs}")
    _report(args.run)
    return 0
