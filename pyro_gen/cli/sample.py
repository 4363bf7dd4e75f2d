"""``pyro-gen sample RUN``: draw new data from the model's prior (figures/samples.png)."""

from __future__ import annotations

import argparse
from typing import Any

from pyro_gen.cli.common import open_run, require_method, update_summary
from pyro_gen.errors import ConfigError

__all__ = ["add_parser", "cmd_sample"]


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "sample",
        "draw new data from the model's prior",
        "Sample x ~ p(z) p(x|z); writes figures/samples.png.",
    )
    p.add_argument("--num", type=int, default=64, help="how many samples (default 64)")
    p.add_argument("--mean", action="store_true", help="show E[x|z] instead of a draw of x")
    return p


def cmd_sample(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    model, _ = open_run(args.run, args.device)
    require_method(model, "sample", "sample")
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1; got {args.num}.")
    x = model.sample(args.num, seed=args.seed, mean=args.mean)
    path = plots.save_figure(
        plots.image_grid(x, title="E[x|z]" if args.mean else "x ~ p(x|z)"),
        args.run / "figures" / "samples.png",
    )
    update_summary(args.run, "sample", {"num": args.num, "seed": args.seed, "figure": str(path)})
    print(f"pyro-gen: wrote {path}")
    return 0
