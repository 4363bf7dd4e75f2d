"""``pyro-gen reconstruct RUN``: encode and decode data (``figures/reconstructions-seed<S>.png``;
``figures/reconstructions.png`` stays the training run's)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyro_gen.cli._latent import figure_rows
from pyro_gen.cli.common import (
    load_data,
    model_batch,
    open_run,
    require_method,
    run_data_spec,
    update_summary,
)
from pyro_gen.errors import ConfigError
from pyro_gen.models.likelihoods import has_mean_image

__all__ = ["add_parser", "cmd_reconstruct", "default_path"]


def default_path(run: Path, seed: int) -> Path:
    """``RUN/figures/reconstructions-seed<seed>.png``: the verb never overwrites the figure of
    the training run (``figures/reconstructions.png``)."""
    return run / "figures" / f"reconstructions-seed{seed}.png"


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "reconstruct",
        "encode and decode test data",
        "Reconstruct test images drawn with --seed; writes figures/reconstructions-seed<SEED>.png "
        "(figures/reconstructions.png stays the one train wrote).",
        data=True,
    )
    p.add_argument(
        "--num", type=int, default=20, help="how many images, drawn with --seed (default 20)"
    )
    p.add_argument("--split", default="test", help="data split (default test)")
    return p


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    model, config = open_run(args.run, args.device)
    require_method(model, "reconstruct", "reconstruct")
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1; got {args.num}.")
    spec = run_data_spec(args.run, config, args)
    batch = model_batch(model, load_data(spec), args.split)  # a conditional model's attributes too
    n = batch["x"].shape[0]
    # random rows, not the first: a split sorted by label (binarized MNIST's test) shows one class
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))[: args.num]
    batch = {k: v[rows].to(model.device) for k, v in batch.items()}
    x = batch["x"]
    x_hat = model.reconstruct(**batch)
    # rows of 10 originals, each over its reconstructions: a row pair per 10 images
    k, note = figure_rows(len(x), 10, lines_per_row=2, covered=f"the error covers all {len(x)}")
    title = None
    if note:
        title = f"rows alternate: data, each row followed by its reconstructions\n{note}"
    path = plots.save_figure(
        plots.reconstruction_figure(x[:k], x_hat[:k], title), default_path(args.run, args.seed)
    )
    err = float((x - x_hat).abs().mean())
    # x̂ is E[x | z] where the likelihood has a mean, else a draw of x (autoregressive)
    x_hat_is = "E[x | z]" if has_mean_image(model) else "a draw of x given z"
    update_summary(
        args.run,
        "reconstruct",
        {
            "split": args.split,
            "num": int(x.shape[0]),
            "shown": k,
            "mean_abs_error": err,
            "x_hat": x_hat_is,
            "figure": str(path),
        },
    )
    print(
        f"pyro-gen: wrote {path} (mean |x − x̂| = {err:.4f} over {len(x)} images; x̂ = "
        f"{x_hat_is} at z = the guide's mean)"
    )
    if note:
        print(f"pyro-gen: note: {note}.")
    return 0
