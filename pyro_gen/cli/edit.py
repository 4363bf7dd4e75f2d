"""``pyro-gen edit RUN --attribute NAME [--value V] --alpha 0,1,2``: add an attribute vector
(mean code of images with it minus those without) to encoded images, exaggerated by α.

``pyro-gen edit RUN --attr NAME=VALUE ...`` on a conditional model (CVAE): keep each image's
code z = E_q[z | x, y_old] and decode it with the chosen attributes, E[x | z, y_new]; names and
values are checked as ``generate``'s. ``--attribute NAME --value V`` on an attribute the model
conditions on does the same (a vector added to z cannot change what the decoder is told). Such a
conditional edit has no vector to scale, so an explicit ``--alpha`` is a ConfigError there (not
silently ignored); the vector edit's default factors apply only when ``--alpha`` is not given."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyro_gen.cli._latent import figure_path, figure_rows, rows_figure, run_batch, slug
from pyro_gen.cli.common import open_run, require_method, update_summary
from pyro_gen.cli.generate import display_values, parse_attr_flags
from pyro_gen.errors import ConfigError, DataError, did_you_mean
from pyro_gen.latent import add_vector, attribute_vector, has_attribute
from pyro_gen.latent.relabel import change_attributes

__all__ = ["add_parser", "cmd_edit", "float_list", "attribute_column", "number_value"]


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,0.5,1,2; got {text!r}") from None


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "edit",
        "change an attribute of encoded images (CVAE: new y; else latent arithmetic)",
        "Latent arithmetic: v = mean E[z|x] of images with the attribute − mean of those without "
        "(from the run's data); then decode E[z|x] + α v for images that lack it, one column "
        "per α. Class attributes need --value (a class name or index); binary ones take --value "
        "0 or 1 (default 1: the vector toward 1); continuous ones count as 'having' it above "
        "the median (or above --value, a number). On a conditional model (CVAE) an attribute "
        "its decoder conditions on is changed the model's own way: z = E[z|x,y_old] is decoded "
        "with y_new (--attr NAME=VALUE, repeatable, checked as for 'generate'; or --attribute "
        "NAME --value V); columns: the image, its reconstruction, the edit (no α: --alpha is "
        "refused there). Writes "
        "figures/edit-<attribute>.png, or --out.",
        data=True,
    )
    p.add_argument(
        "--attribute", default=None, help="attribute (or label) of the data (vector edit)"
    )
    p.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="conditional models: an attribute to set (repeatable), e.g. --attr shape=heart",
    )
    p.add_argument(
        "--value",
        default=None,
        help="a class name or index (categorical), 0 or 1 (binary; default 1), or a threshold "
        "number (continuous; default the median)",
    )
    p.add_argument(
        "--alpha",
        type=float_list,
        default=None,  # None: not given (DEFAULT_ALPHAS); a conditional edit refuses a given one
        help="exaggeration factors of an attribute-vector edit (default 0,0.5,1,1.5,2); a "
        "conditional edit (--attr) has none and refuses it",
    )
    p.add_argument("--num", type=int, default=8, help="images to edit (default 8)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument("--max-images", type=int, default=2000, help="images to average (default 2000)")
    p.add_argument("--out", type=Path, default=None, help="PNG to write")
    return p


def attribute_column(ds, split: str, name: str) -> tuple[torch.Tensor, str, list[str]]:
    """(values ``[N]``, kind, class names) of an attribute column or of the labels ("label",
    or "digit" on MNIST); a ConfigError lists the names there are."""
    label_name = "digit" if ds.name in ("mnist", "binarized_mnist") else "label"
    names = [*ds.attribute_names, *([label_name] if split in ds.labels else [])]
    if name not in names:
        raise ConfigError(
            f"data set {ds.name!r} has no attribute {name!r}; it has: {', '.join(names)}."
            + did_you_mean(name, names)
        )
    if name == label_name and name not in ds.attribute_names:
        v = ds.labels[split]
    else:
        v = ds.attribute(split, name)
    classes = list(ds.label_names)
    if split in ds.labels and torch.equal(v.long().to(torch.float64), v.double()):
        if torch.equal(v.long(), ds.labels[split]):
            return v, "categorical", classes or [str(i) for i in range(int(v.max()) + 1)]
    if bool(((v == 0) | (v == 1)).all()):
        return v, "binary", []
    return v, "continuous", []


def class_index(value: str | None, classes: list[str], name: str) -> int:
    if value is None:
        raise ConfigError(
            f"{name} is a class attribute: give --value, one of {', '.join(classes)}."
        )
    if value in classes:
        return classes.index(value)
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise DataError(
        f"{value!r} is not a class of {name!r}; valid: {', '.join(classes)}."
        + did_you_mean(value, classes)
    )


def number_value(value: str | None, kind: str, name: str) -> float | None:
    """--value of a binary (0 or 1) or continuous (a number: the threshold) attribute, or
    None; a ConfigError names the type expected."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if kind == "binary" and number not in (0.0, 1.0):
        raise ConfigError(f"{name} is a binary attribute: --value must be 0 or 1; got {value!r}.")
    if number is None or number != number:
        raise ConfigError(
            f"{name} is a continuous attribute: --value must be a number (the threshold above "
            f"which an image 'has' it; default the median); got {value!r}."
        )
    return number


def conditioned(model) -> tuple[str, ...]:
    """The attributes a model's decoder is told (a CVAE's ``attribute_names``), else ()."""
    if not callable(getattr(model, "parse_attributes", None)):
        return ()
    return tuple(getattr(model, "attribute_names", ()) or ())


SMALL_VECTOR = 0.1  # |v| below this (z ~ N(0, I) has unit spread per dimension) changes little
DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0)  # --alpha when not given (a vector edit)


def cmd_edit(args: argparse.Namespace) -> int:
    model, config = open_run(args.run, args.device)
    require_method(model, "encode", "edit")
    require_method(model, "decode", "edit")
    if args.num < 1 or (args.alpha is not None and not args.alpha):
        raise ConfigError("--num must be >= 1 and --alpha must list at least one factor.")
    if bool(args.attr) == (args.attribute is not None):
        raise ConfigError(
            "give either --attr NAME=VALUE (a conditional model: decode with new attributes) or "
            "--attribute NAME [--value V] (an attribute vector), not both and not neither."
        )
    if args.attr or args.attribute in conditioned(model):
        if args.alpha is not None:
            # a conditional edit decodes z with y_new: there is no vector for α to scale
            what = "--attr" if args.attr else f"--attribute {args.attribute}"
            raise ConfigError(
                f"--alpha scales an attribute vector (decode E[z|x] + α·v), but {what} is a "
                "conditional edit: the model's decoder is told the attribute "
                f"({', '.join(conditioned(model))}), so z is decoded with the new value "
                "(columns: image, reconstruction, edit) and no α applies. Leave --alpha out, "
                "or give --attribute NAME for an attribute the model does not condition on."
            )
        return _edit_condition(args, model, config)
    alphas = list(args.alpha) if args.alpha is not None else list(DEFAULT_ALPHAS)
    ds, batch = run_batch(args, model, config, args.max_images)
    # the labels/attributes of the same rows: re-read the column from the full split
    values, kind, classes = attribute_column(ds, args.split, args.attribute)
    if args.max_images is not None and args.max_images < len(values):
        g = torch.Generator().manual_seed(args.seed)
        values = values[torch.randperm(len(values), generator=g)[: args.max_images].sort().values]
    value = args.value
    if kind == "categorical":
        index = class_index(args.value, classes, args.attribute)
        value = classes[index]
        has = has_attribute(values, kind, index)
    else:
        has = has_attribute(values, kind, number_value(args.value, kind, args.attribute))
    x = batch.pop("x")
    condition = batch or None  # a conditional model's attributes, as observed
    v = attribute_vector(model, x, has, condition)
    lacking = (~has).nonzero().squeeze(-1)[: args.num]
    sub_cond = {k: c[lacking] for k, c in batch.items()} or None
    edited = add_vector(model, x[lacking], v, alphas, sub_cond)  # [A, N, ...]
    what = args.attribute + (f"={value}" if value is not None else "")
    title = (
        f"edit: decode(E[z|x] + α·v), v = mean z with {what} − mean z without "
        f"({int(has.sum())} vs {int((~has).sum())} {args.split} images)\n"
        f"rows: {len(lacking)} images without it; columns: α = "
        + ", ".join(f"{a:g}" for a in alphas)
    )
    from pyro_gen import plots

    k, note = figure_rows(len(lacking), noun="rows")
    path = plots.save_figure(
        rows_figure(edited.transpose(0, 1)[:k], title + (f"\n{note}" if note else "")),
        figure_path(args.run, args.out, f"edit-{slug(what)}"),
    )
    update_summary(
        args.run,
        "edit",
        {
            "attribute": args.attribute,
            "value": value,
            "alphas": alphas,
            "num": len(lacking),
            "shown": k,
            "vector_norm": float(v.norm()),
            "figure": str(path),
        },
    )
    print(f"pyro-gen: wrote {path} (|v| = {float(v.norm()):.3f})")
    if note:
        print(f"pyro-gen: note: {note}.")
    if condition and float(v.norm()) < SMALL_VECTOR:
        # a conditional model holds its attributes in y, so z may not carry this one at all
        print(
            f"pyro-gen: note: |v| = {float(v.norm()):.3f}: the codes z of images with and "
            f"without {what} barely differ, so the columns barely change. This model holds "
            f"its attributes ({', '.join(conditioned(model))}) in its condition y, not in z: "
            f"change one there, e.g. pyro-gen edit RUN --attr NAME=VALUE."
        )
    return 0


def _edit_condition(args: argparse.Namespace, model, config: dict) -> int:
    """The CVAE edit: E[x | z = E_q[z | x, y_old], y_new] for ``--num`` images."""
    names = conditioned(model)
    if not names:
        raise ConfigError(
            f"{type(model).__name__} does not condition on attributes, so --attr cannot set "
            "them; edit with an attribute vector: --attribute NAME [--value V]."
        )
    if args.attr:
        asked = parse_attr_flags(args.attr)
    else:
        if args.value is None:
            raise ConfigError(
                f"{args.attribute} is an attribute the model conditions on: give the new value, "
                f"--value V (or --attr {args.attribute}=V)."
            )
        asked = {args.attribute: args.value}
    new = model.parse_attributes(asked, 1)  # names and values checked, valid ones listed
    ds, batch = run_batch(args, model, config, args.max_images)
    x = batch.pop("x")
    # rows that change: a class or flag asked for is shown on images that do not have it yet
    kinds = {a["name"]: a["kind"] for a in model.attributes}
    keep = torch.ones(len(x), dtype=torch.bool)
    for name, v in new.items():
        if name in batch and kinds[name] != "continuous":
            keep &= batch[name].cpu().float() != v.float()
    rows = keep.nonzero().squeeze(-1)
    if len(rows) == 0:
        rows = torch.arange(len(x))
    rows = rows[: args.num]
    x, observed = x[rows], {k: v[rows] for k, v in batch.items()}
    recon = change_attributes(model, x, observed, {k: observed[k] for k in asked})
    edited = change_attributes(model, x, observed, asked)
    shown = display_values(model, asked)
    what = ", ".join(f"{k}={v}" for k, v in shown.items())
    title = (
        f"edit: decode(E[z|x, y_old], y_new) with {what}, other attributes kept\n"
        f"rows: {len(rows)} {args.split} images; columns: image, reconstruction, edited"
    )
    from pyro_gen import plots

    grid = torch.stack([x.cpu().float(), recon, edited], 1)  # [N, 3, ...]
    k, note = figure_rows(len(rows), noun="rows")
    path = plots.save_figure(
        rows_figure(grid[:k], title + (f"\n{note}" if note else "")),
        figure_path(args.run, args.out, f"edit-{slug(what)}"),
    )
    update_summary(
        args.run,
        "edit",
        {
            "method": "condition",
            "attributes": asked,
            "num": len(rows),
            "shown": k,
            "figure": str(path),
        },
    )
    print(f"pyro-gen: wrote {path} ({len(rows)} images decoded with {what})")
    if note:
        print(f"pyro-gen: note: {note}.")
    return 0
