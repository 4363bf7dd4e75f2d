"""``pyro-gen compare RUN...``: rank runs by importance-sampled log p(x) on the same points."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyro_gen.cli.common import (
    add_data_arguments,
    add_import_argument,
    load_data,
    model_batch,
    open_run,
    run_data_spec,
    subset,
)
from pyro_gen.errors import ConfigError
from pyro_gen.models.persistence import read_config

__all__ = ["add_parser", "cmd_compare"]


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    p = verbs.add_parser(
        "compare",
        allow_abbrev=False,  # --beta must not silently mean --beta-schedule
        help="compare runs on the same test points",
        description="Rank runs by importance-sampled log p(x) on the same test points, with "
        "paired differences (ranks from 1); writes comparison.md, comparison.csv, "
        "comparison.png and comparison.html (one page over the runs). A conditional run (CVAE) "
        "is scored on log p(x | y) given its test attributes y (column 'log p̂ of'), which is "
        "not comparable with a VAE's log p(x): then ranks are within each quantity. Runs with "
        "their own classifier q(y|x) (SSVAE, CVAE --missing) also get its test accuracy.",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run folders written by 'pyro-gen train'")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN1/eval)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use a random subset of N datapoints (drawn with --seed; the same for every run)",
    )
    p.add_argument(
        "--num-samples", type=int, default=1000, metavar="K", help="importance samples (1000)"
    )
    p.add_argument("--batch-size", type=int, default=1000, help="datapoints per chunk (1000)")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bars (shown by default on a terminal)",
    )
    p.add_argument("--device", default="cpu", help="device to run on (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_import_argument(p)
    add_data_arguments(
        p.add_argument_group("data (instead of each run's config.json data)"),
        "data set for every run (needed for runs written from the Python API)",
    )
    return p


QUALITY_COLUMNS = (
    ("c2st_accuracy", "two-sample acc. (0.5 best)"),
    ("frechet_distance", "Fréchet dist."),
    ("precision", "precision"),
    ("recall", "recall"),
    ("mmd2", "MMD²"),
    ("classes_covered", "classes covered"),
)


def _judge_warning(rows: dict[str, dict]) -> str:
    """ "" when every run with sample-quality metrics was measured in the same features (one
    judge, by the digest of its weights, or pixels everywhere); else a warning saying how to
    fix it."""
    spaces = {
        name: (q.get("judge_digest") or "unknown judge")
        if q.get("features") == "classifier"
        else "pixels"
        for name, q in rows.items()
        if q
    }
    if len(set(spaces.values())) <= 1 and "unknown judge" not in spaces.values():
        return ""
    which = ", ".join(f"{n}: {d}" for n, d in spaces.items())
    return (
        "WARNING: these runs' metrics were measured with different judges (or one not "
        f"recorded) ({which}); the Fréchet distance, precision/recall, MMD and two-sample "
        "accuracy are in different feature spaces and must not be ranked against each other. "
        "Fix: measure every run with one judge, e.g. pyro-gen quality RUN --judge "
        "RUN1/eval/judge for each RUN."
    )


def _quality_table(runs: dict[str, Path]) -> str:
    """A markdown table of the sample-quality metrics that ``pyro-gen quality`` wrote into each
    run's summary.json (runs without them show "—"), with each run's judge (digest of its
    weights); a warning when the runs' judges differ (their metrics are not comparable; no run
    is called best). "" when no run has them."""
    from pyro_gen.io import read_json

    rows = {}
    for name, run in runs.items():
        path = Path(run) / "summary.json"
        summary = read_json(path, "summary") if path.exists() else {}
        rows[name] = summary.get("quality") or {}
    if not any(rows.values()):
        return ""
    warning = _judge_warning(rows)
    if warning:
        first = next(Path(r) for n, r in runs.items() if rows[n])
        warning = warning.replace("RUN1/eval/judge", str(first / "eval" / "judge"))
    head = "| run | " + " | ".join(label for _, label in QUALITY_COLUMNS) + " | features | judge |"
    lines = ["Sample quality (from pyro-gen quality)", ""]
    if warning:
        lines += [warning, ""]
    lines.append(head)
    lines.append("|" + " --- |" * (len(QUALITY_COLUMNS) + 3))
    for name, q in rows.items():
        cells = [
            f"{q[k]:.4g}" if isinstance(q.get(k), float) else str(q.get(k, "—"))
            for k, _ in QUALITY_COLUMNS
        ]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {q.get('features', '—')} | {q.get('judge_digest', '—')} |"
        )
    return "\n".join(lines)


def _classifier_table(models: dict, datasets: dict, args: argparse.Namespace) -> str:
    """The runs' own classifiers q(y|x) (an SSVAE's labels, a CVAE's inferred attributes) on
    the same test points, as Markdown; "" when no run has one."""
    from pyro_gen.evaluate.classification import (
        WHAT,
        classifier_batch,
        classifier_note,
        classifier_scores,
    )

    rows, notes = {}, {}
    for name, model in models.items():
        batch = classifier_batch(model, datasets[name], args.split)
        if batch is not None:
            batch = subset(batch, args.limit, args.seed)
            scores = classifier_scores(model, batch, batch_size=args.batch_size)
            if scores:
                rows[name] = (scores, batch["x"].shape[0])
                if classifier_note(model):
                    notes[name] = classifier_note(model)["note"]
    if not rows:
        return ""
    lines = [
        f"{args.split} {WHAT} (each run's own classifier against the true labels; accuracy in %, "
        "mae in the attribute's units)",
        "",
        "| run | score | value | N |",
        "| --- | --- | --- | --- |",
    ]
    for name, (scores, n) in rows.items():
        for key, v in scores.items():
            value = f"{100 * v:.2f}%" if key.endswith("accuracy") else f"{v:.4g}"
            lines.append(f"| {name} | {key} | {value} | {n} |")
    lines += ["", *(f"Note: {name}: {note}." for name, note in notes.items())] if notes else []
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    from pyro_gen import plots
    from pyro_gen.evaluate import compare
    from pyro_gen.evaluate.compare import plot_rows

    models, observed, datasets, x = {}, {}, {}, None
    for run in args.runs:
        model = open_run(run, args.device)[0]
        ds = load_data(run_data_spec(run, read_config(run), args))
        # the model's named batch: a CVAE's attributes (an SSVAE's test labels stay unobserved)
        batch = subset(model_batch(model, ds, args.split), args.limit, args.seed)
        data = batch.pop("x")
        if x is None:
            x = data
        elif x.shape != data.shape or not torch.equal(x, data):
            raise ConfigError(
                f"{run} was trained on other data than {args.runs[0]} ({args.split} split "
                "differs); compare needs the same test points."
            )
        models[str(run)], observed[str(run)], datasets[str(run)] = model, batch, ds
    names = [r.name for r in args.runs]
    if len(set(names)) == len(names):
        models = dict(zip(names, models.values()))
        observed = dict(zip(names, observed.values()))
        datasets = dict(zip(names, datasets.values()))
    out = args.out or args.runs[0] / "eval"
    quality = _quality_table(dict(zip(models, args.runs)))
    if quality:
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison_quality.md").write_text(quality + "\n")
        print(quality)
    # likelihood-free models (GANs) have no log p(x): they appear in the quality table only
    free = [k for k, m in models.items() if getattr(m, "likelihood_free", False)]
    models = {k: m for k, m in models.items() if k not in free}
    if free:
        print(
            f"pyro-gen: note: {', '.join(free)} likelihood-free (no p(x|z)): no log p(x) "
            "columns; compared by sample quality only (pyro-gen quality RUN)."
        )
    if not models:
        if not quality:
            raise ConfigError(
                "no run here has a likelihood, and none has sample-quality metrics yet: run "
                "'pyro-gen quality RUN' on each first."
            )
        print(f"pyro-gen: wrote {out / 'comparison_quality.md'}")
        return 0
    result = compare(
        models,
        x,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=args.progress,
        observed={k: v for k, v in observed.items() if k in models},
    )
    paths = result.write(out)
    if quality:
        paths.append(out / "comparison_quality.md")
    ranked = result.ranked_rows
    if ranked:  # the figure shows log p̂(x): runs flagged as not a bound have none; a lower
        # bound (point-mass guide) gets its own panel, as it is ranked apart
        figure = plots.comparison_plot(plot_rows(ranked))
        paths.append(plots.save_figure(figure, out / "comparison.png"))
    print(result.to_markdown())
    classifiers = _classifier_table(models, datasets, args)
    if classifiers:
        (out / "comparison_classifier.md").write_text(classifiers + "\n")
        paths.append(out / "comparison_classifier.md")
        print(classifiers)
    from pyro_gen.evaluate.diagnostics import KHAT_THRESHOLD, khat_caution

    for r in ranked:
        caution = khat_caution(
            r["khat_share"], KHAT_THRESHOLD, r["num_datapoints"], r["num_samples"]
        )
        if caution:
            print(f"pyro-gen: caution: {r['model']}: {caution.replace('K = ', '--num-samples ')}")
    from pyro_gen.evaluate.diagnostics import ESTIMATE_BOUND

    bounds = [r["model"] for r in ranked if r.get("estimate") == ESTIMATE_BOUND]
    if bounds:
        print(
            f"pyro-gen: note: ranked apart, as lower bounds (point-mass guide; gap unknown, k̂ "
            f"n/a): {', '.join(bounds)}"
        )
    flagged = [r["model"] for r in result.rows if not r["is_bound"]]
    if flagged:
        print(f"pyro-gen: note: not ranked (not a bound: point-mass guide): {', '.join(flagged)}")
    from pyro_gen.cli.report import write_run_report
    from pyro_gen.report import write_comparison_report

    for run in args.runs:  # each run's own page (a comparison into RUN/eval shows there too)
        write_run_report(run)
    try:
        paths.append(write_comparison_report(args.runs, out / "comparison.html", result))
    except Exception as e:  # noqa: BLE001 - the tables above are the record
        print(f"pyro-gen: note: comparison.html not written ({type(e).__name__}: {e})")
    print("pyro-gen: wrote " + ", ".join(map(str, paths)))
    return 0
