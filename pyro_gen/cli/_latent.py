"""What the image verbs (sample, reconstruct, generate, edit, interpolate, traverse) share: the
run's data as the batch its model reads, a seeded subset, and figures of image rows, capped at
``MAX_FIGURE_ROWS`` rows (:func:`figure_rows`)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import torch

from pyro_gen.cli.common import load_data, model_batch, run_data_spec
from pyro_gen.data import Dataset
from pyro_gen.errors import ConfigError

__all__ = [
    "MAX_FIGURE_ROWS",
    "run_batch",
    "rows_figure",
    "titled_grid",
    "figure_path",
    "figure_rows",
    "slug",
]

MAX_FIGURE_ROWS = 16  # rows of images a figure draws at most (a 12-inch figure stays legible)


def run_batch(
    args: argparse.Namespace, model, config: dict, limit: int | None
) -> tuple[Dataset, dict[str, torch.Tensor]]:
    """The data set and ``{"x": ..., <attributes>}`` of ``args.split`` (a seeded random subset
    of ``limit`` rows, in their original order)."""
    ds = load_data(run_data_spec(args.run, config, args))
    batch = model_batch(model, ds, args.split)
    n = len(batch["x"])
    if limit is not None and limit < n:
        if limit < 1:
            raise ConfigError(f"the number of images must be >= 1; got {limit}.")
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randperm(n, generator=g)[:limit].sort().values
        batch = {k: v[idx] for k, v in batch.items()}
    return ds, batch


def titled_grid(images: torch.Tensor, ncols: int, title: str):
    """``plots.image_grid`` with a long title wrapped to the figure (at least 6.5 in wide)."""
    from pyro_gen import plots

    fig = plots.image_grid(images.clamp(0, 1), ncols)
    lines = [line for part in title.split("\n") for line in textwrap.wrap(part, 90)]
    w, h = fig.get_size_inches()
    fig.set_size_inches(max(w, 6.5), h + 0.18 * len(lines))
    fig.axes[0].set_title("\n".join(lines), fontsize=8)
    fig.tight_layout()
    return fig


def rows_figure(images: torch.Tensor, title: str):
    """A grid with one row per leading index: ``images`` ``[R, C, *shape]``."""
    r, c = images.shape[:2]
    return titled_grid(images.reshape(r * c, *images.shape[2:]), c, title)


def figure_rows(
    n: int, per_row: int = 1, noun: str = "images", lines_per_row: int = 1, covered: str = ""
) -> tuple[int, str]:
    """How many of ``n`` items a figure draws: at most :data:`MAX_FIGURE_ROWS` lines of
    images, each row of ``per_row`` items taking ``lines_per_row`` lines (a reconstruction
    figure's row of data and its row of reconstructions: 2), so that ``--num 5000`` gives a
    legible figure, not thousands of specks; and a note saying what was left out ("" when
    every item fits; ``covered``, e.g. "the mean error covers all 500", ends it). The verbs
    compute on all ``n`` (their printed and summary numbers cover all of them) and draw the
    first ``k``; they put the note in the figure's title and print it.

    >>> figure_rows(20, 8)
    (20, '')
    >>> figure_rows(5000, 8)[0]
    128
    """
    rows = max(1, MAX_FIGURE_ROWS // max(1, int(lines_per_row)))
    k = min(int(n), rows * max(1, int(per_row)))
    if k >= n:
        return int(n), ""
    note = f"the figure shows the first {k} of {n} {noun} (at most {MAX_FIGURE_ROWS} rows)"
    return k, note + (f"; {covered}" if covered else "")


def slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text)
    return "-".join(p for p in keep.split("-") if p)[:80]


def figure_path(run: Path, out: Path | None, name: str) -> Path:
    return out if out is not None else run / "figures" / f"{name}.png"
