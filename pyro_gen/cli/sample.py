"""``pyro-gen sample RUN``: draw new data from the model's prior
(``figures/sample-seed<S>[-mean].png``; ``figures/samples.png`` stays the training run's). The
figure draws at most 16 rows of 8 (``_latent.figure_rows``; its title says so)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyro_gen.cli._latent import figure_rows, titled_grid
from pyro_gen.cli.common import open_run, require_method, update_summary
from pyro_gen.errors import ConfigError

__all__ = ["add_parser", "cmd_sample"]


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "sample",
        "draw new data from the model's prior",
        "Sample x ~ p(z) p(x|z); writes figures/sample-seed<SEED>.png (-mean with --mean), or "
        "--out. figures/samples.png, written by train, is never overwritten.",
    )
    p.add_argument("--num", type=int, default=64, help="how many samples (default 64)")
    p.add_argument("--mean", action="store_true", help="show E[x|z] instead of a draw of x")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="PNG to write (default RUN/figures/sample-seed<SEED>[-mean].png)",
    )
    return p


def default_path(run: Path, seed: int, mean: bool) -> Path:
    """Where ``pyro-gen sample`` writes without ``--out``: never ``figures/samples.png``."""
    return run / "figures" / f"sample-seed{seed}{'-mean' if mean else ''}.png"


def cmd_sample(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    model, _ = open_run(args.run, args.device)
    require_method(model, "sample", "sample")
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1; got {args.num}.")
    x = model.sample(args.num, seed=args.seed, mean=args.mean)
    out = args.out or default_path(args.run, args.seed, args.mean)
    if out.resolve() == (args.run / "figures" / "samples.png").resolve():
        raise ConfigError(
            f"{out} is the training run's samples figure; choose another --out (the default is "
            f"{default_path(args.run, args.seed, args.mean)})."
        )
    k, note = figure_rows(len(x), 8, "samples")
    title = f"{'E[x|z]' if args.mean else 'x ~ p(x|z)'}, z ~ p(z), seed {args.seed}"
    path = plots.save_figure(titled_grid(x[:k], 8, title + (f"\n{note}" if note else "")), out)
    update_summary(
        args.run, "sample", {"num": args.num, "shown": k, "seed": args.seed, "figure": str(path)}
    )
    print(f"pyro-gen: wrote {path}")
    if note:
        print(f"pyro-gen: note: {note}.")
    return 0
