"""``pyro-gen interpolate RUN``: decode paths between the codes of pairs of images, linear or
spherical (figures/interpolate-<method>.png)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyro_gen.cli._latent import figure_path, figure_rows, rows_figure, run_batch
from pyro_gen.cli.common import open_run, require_method, update_summary
from pyro_gen.errors import ConfigError
from pyro_gen.latent import INTERPOLATIONS, interpolate

__all__ = ["add_parser", "cmd_interpolate"]


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "interpolate",
        "decode paths between the codes of pairs of images",
        "Encode pairs of images (E[z|x]) of a split, interpolate their codes linearly (lerp) or "
        "along the great circle (slerp, keeps the norm of equal-norm codes), decode each step. "
        "One row per pair; the ends are the reconstructions. Writes "
        "figures/interpolate-<method>.png, or --out.",
        data=True,
    )
    p.add_argument("--method", choices=INTERPOLATIONS, default="slerp", help="default slerp")
    p.add_argument("--pairs", type=int, default=6, help="pairs of images (default 6)")
    p.add_argument("--steps", type=int, default=10, help="images per row, ends included (10)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument("--out", type=Path, default=None, help="PNG to write")
    return p


def cmd_interpolate(args: argparse.Namespace) -> int:
    model, config = open_run(args.run, args.device)
    require_method(model, "encode", "interpolate")
    require_method(model, "decode", "interpolate")
    if args.pairs < 1 or args.steps < 2:
        raise ConfigError("--pairs must be >= 1 and --steps >= 2.")
    _, batch = run_batch(args, model, config, 2 * args.pairs)
    x = batch.pop("x")
    if len(x) < 2 * args.pairs:
        raise ConfigError(f"the {args.split} split has {len(x)} images; --pairs needs twice that.")
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(x), generator=g)
    a, b = perm[: args.pairs], perm[args.pairs : 2 * args.pairs]
    # a CVAE: each end is encoded/decoded with its own attributes (path_condition in between)
    condition = {k: v[a] for k, v in batch.items()} or None
    condition1 = {k: v[b] for k, v in batch.items()} or None
    paths = interpolate(model, x[a], x[b], args.steps, args.method, condition, condition1)
    kind = "spherical" if args.method == "slerp" else "linear"
    title = (
        f"{args.method} ({kind}) between E[z|x0] and E[z|x1], "
        f"{args.steps} steps, {args.pairs} {args.split} pairs\nrows: pairs; first/last column: "
        "reconstructions of x0/x1"
    )
    if condition:
        title += (
            " with their own attributes; in between: continuous attributes interpolated, "
            "classes/flags x0's for t < 0.5, x1's after"
        )
    from pyro_gen import plots

    k, note = figure_rows(len(paths), noun="pairs")
    path = plots.save_figure(
        rows_figure(paths[:k], title + (f"\n{note}" if note else "")),
        figure_path(args.run, args.out, f"interpolate-{args.method}"),
    )
    update_summary(
        args.run,
        "interpolate",
        {
            "method": args.method,
            "pairs": args.pairs,
            "shown": k,
            "steps": args.steps,
            "figure": str(path),
        },
    )
    print(f"pyro-gen: wrote {path}")
    if note:
        print(f"pyro-gen: note: {note}.")
    return 0
