"""``pyro-gen traverse RUN``: sweep the most active latent dimensions, in order of KL per
dimension (figures/traverse.png)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyro_gen.cli._latent import figure_path, figure_rows, rows_figure, run_batch
from pyro_gen.cli.common import open_run, require_method, update_summary
from pyro_gen.errors import ConfigError
from pyro_gen.latent import traverse

__all__ = ["add_parser", "cmd_traverse", "standard_normal_prior"]


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "traverse",
        "sweep latent dimensions, most active (by KL) first",
        "Measure KL(q(z_d|x) ‖ N(0,1)) per dimension on a split, then hold the code of one image "
        "fixed and sweep each of the --dims most active dimensions over [−range, range] (one "
        "row each, in order of KL, not of index). Writes figures/traverse.png, or --out.",
        data=True,
    )
    p.add_argument("--dims", type=int, default=None, help="rows: most active dims (default all)")
    p.add_argument("--steps", type=int, default=9, help="values per row (default 9)")
    p.add_argument("--range", type=float, default=3.0, help="sweep −R..R (default 3)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument(
        "--num-images", type=int, default=1000, help="images to measure the KL on (1000)"
    )
    p.add_argument("--out", type=Path, default=None, help="PNG to write")
    return p


def cmd_traverse(args: argparse.Namespace) -> int:
    model, config = open_run(args.run, args.device)
    require_method(model, "encode", "traverse")
    require_method(model, "decode", "traverse")
    if args.steps < 2 or not args.range > 0:
        raise ConfigError("--steps must be >= 2 and --range > 0.")
    _, batch = run_batch(args, model, config, args.num_images)
    x = batch.pop("x")
    values = torch.linspace(-args.range, args.range, args.steps)
    # KL measured with every image's own attributes; decoded with the first image's
    t = traverse(model, x, args.dims, values, condition=batch or None)
    rows = ", ".join(f"z{d} ({k:.2f})" for d, k in zip(t.dims.tolist(), t.kl.tolist()))
    title = (
        f"traversal of the {len(t.dims)} most active dims, ordered by KL per dim (nats): "
        f"{rows}\ncolumns: z_d = {-args.range:g} … {args.range:g}; the other dims: E[z|x] "
        f"of one {args.split} image"
    )
    from pyro_gen import plots

    k, note = figure_rows(len(t.images), noun="dimensions", covered="the KL list covers all")
    path = plots.save_figure(
        rows_figure(t.images[:k], title + (f"\n{note}" if note else "")),
        figure_path(args.run, args.out, "traverse"),
    )
    update_summary(
        args.run,
        "traverse",
        {
            "dims": t.dims.tolist(),
            "kl_nats": [round(k, 4) for k in t.kl.tolist()],
            "shown": k,
            "figure": str(path),
        },
    )
    print(f"pyro-gen: wrote {path} (rows by KL: {rows})")
    if note:
        print(f"pyro-gen: note: {note}.")
    if standard_normal_prior(model) is False:
        print(
            f"pyro-gen: note: {type(model).__name__}'s prior p(z) is not N(0, I) (a learned "
            "prior): the rows are ranked by KL(q(z_d|x) ‖ N(0,1)), not by the model's own KL, "
            f"and the sweep's ±{args.range:g} is in N(0,1) units, not the prior's spread."
        )
    return 0


def standard_normal_prior(model) -> bool | None:
    """Whether ``model.prior()`` is N(0, I) (True/False), or None where the model has no
    ``prior()`` to look at (a plain VAE's prior is N(0, I) by construction)."""
    prior = getattr(model, "prior", None)
    if not callable(prior):
        return None
    with torch.no_grad():
        p = prior()
    base = getattr(p, "base_dist", p)
    if not isinstance(base, torch.distributions.Normal):
        return False
    return bool((base.loc == 0).all() and (base.scale == 1).all())
