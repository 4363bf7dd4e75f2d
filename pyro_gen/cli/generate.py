"""``pyro-gen generate RUN --attr NAME=VALUE ...``: draw images with chosen attributes from a
conditional model, through its ``generate(n, {name: value}, seed=, mean=)``: a CVAE's
attributes, an SSVAE's class (``--attr label=NAME``); figures/generate-<attributes>-seed<S>.png."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyro_gen.cli._latent import figure_path, figure_rows, slug, titled_grid
from pyro_gen.cli.common import open_run, update_summary
from pyro_gen.errors import ConfigError

__all__ = ["add_parser", "cmd_generate", "parse_attr_flags", "display_values"]


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "generate",
        "draw images with chosen attributes (conditional models: CVAE, SSVAE)",
        "Draw x ~ p(x | z, y), z ~ p(z), with attributes y set by --attr NAME=VALUE (repeatable; "
        "the rest drawn from their priors), e.g. --attr shape=heart --attr scale=0.8 (a CVAE) "
        "or --attr label=heart (an SSVAE: its class label). Class attributes take a class "
        "name or index, binary ones 0/1, continuous ones a number in the training range; a "
        "wrong name or value lists the valid ones. Writes "
        "figures/generate-<attributes>-seed<SEED>.png, or --out.",
    )
    p.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an attribute to fix (repeatable)",
    )
    p.add_argument("--num", type=int, default=64, help="how many images (default 64)")
    p.add_argument("--mean", action="store_true", help="show E[x|z,y] instead of a draw of x")
    p.add_argument("--out", type=Path, default=None, help="PNG to write")
    return p


def parse_attr_flags(flags: list[str]) -> dict[str, str]:
    """``["shape=heart", "scale=0.8"]`` -> ``{"shape": "heart", "scale": "0.8"}``."""
    out: dict[str, str] = {}
    for flag in flags:
        name, eq, value = flag.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value:
            raise ConfigError(f"--attr takes NAME=VALUE, e.g. --attr shape=heart; got {flag!r}.")
        if name in out:
            raise ConfigError(f"--attr {name} is given twice.")
        out[name] = value
    return out


def display_values(model, asked: dict[str, str]) -> dict[str, str]:
    """``asked`` with each categorical attribute's class index replaced by its class name
    (``shape=2`` -> ``shape=heart``), for titles and file names; other values as given."""
    specs = {a["name"]: a for a in getattr(model, "attributes", ()) or ()}
    out = dict(asked)
    for name, value in asked.items():
        a = specs.get(name)
        if a is None or a.get("kind") != "categorical":
            continue
        names = [str(v) for v in a["values"]]  # a name first, as the models parse it
        text = str(value).strip()
        if text not in names and text.isdigit() and int(text) < len(names):
            out[name] = names[int(text)]
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    model, _ = open_run(args.run, args.device)
    if not callable(getattr(model, "generate", None)):
        raise ConfigError(
            f"{type(model).__name__} is not a conditional model (it has no generate(n, "
            "attributes)), so 'pyro-gen generate' cannot fix attributes for it. Draw images "
            f"from its prior with 'pyro-gen sample {args.run}', or train a conditional model "
            "('pyro-gen train --model cvae', or --model ssvae for a class label) to generate "
            "with --attr NAME=VALUE."
        )
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1; got {args.num}.")
    asked = parse_attr_flags(args.attr)
    x = model.generate(args.num, asked, seed=args.seed, mean=args.mean)
    shown = display_values(model, asked)
    what = ", ".join(f"{k}={v}" for k, v in shown.items()) or "no attribute fixed"
    rest = [n for n in getattr(model, "attribute_names", ()) if n not in asked]
    title = (
        f"{type(model).__name__}: {what}"
        + (f"; {', '.join(rest)} from the prior" if rest else "")
        + f"\n{'E[x|z,y]' if args.mean else 'x ~ p(x|z,y)'}, z ~ p(z), {args.num} images, "
        f"seed {args.seed}"
    )
    name = f"generate-{slug(what) if asked else 'prior'}-seed{args.seed}"
    k, note = figure_rows(len(x), 8)
    path = plots.save_figure(
        titled_grid(x[:k], 8, title + (f"\n{note}" if note else "")),
        figure_path(args.run, args.out, name),
    )
    update_summary(
        args.run,
        "generate",
        {"attributes": asked, "num": args.num, "shown": k, "seed": args.seed, "figure": str(path)},
    )
    print(f"pyro-gen: wrote {path} ({args.num} images with {what})")
    if note:
        print(f"pyro-gen: note: {note}.")
    return 0
