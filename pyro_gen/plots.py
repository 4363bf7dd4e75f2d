"""Matplotlib figures for runs and examples (models never plot; the CLI and examples call these).

Every function returns a ``matplotlib.figure.Figure``; ``save_figure`` writes it atomically.

>>> import torch
>>> fig = image_grid(torch.rand(6, 1, 4, 4), ncols=3)
>>> len(fig.axes)
1
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pyro_gen.io import atomic_open  # noqa: E402

__all__ = [
    "image_grid",
    "reconstruction_figure",
    "training_curves",
    "compare_curves",
    "beta_tradeoff",
    "save_figure",
]


def _as_images(x: torch.Tensor, image_shape: Sequence[int] | None = None) -> torch.Tensor:
    """``[N, ...]`` -> ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` for plotting."""
    x = x.detach().float().cpu()
    if image_shape is not None:
        x = x.reshape(-1, *image_shape)
    if x.dim() == 2:  # flat vectors: square them when possible
        side = int(math.isqrt(x.shape[1]))
        if side * side != x.shape[1]:
            raise ValueError(f"cannot show flat data of size {x.shape[1]} as square images.")
        x = x.reshape(-1, side, side)
    if x.dim() == 4:
        x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    return x.clamp(0, 1)


def _tile(images: torch.Tensor, ncols: int, pad: int = 1) -> torch.Tensor:
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    h, w = images.shape[1:3]
    extra = images.shape[3:]
    canvas = torch.ones(nrows * (h + pad) + pad, ncols * (w + pad) + pad, *extra)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = images[i]
    return canvas


def image_grid(
    x: torch.Tensor,
    ncols: int = 8,
    title: str | None = None,
    image_shape: Sequence[int] | None = None,
) -> Figure:
    """A grid of images ``[N, C, H, W]``/``[N, H, W]``/``[N, D]`` with values in [0, 1]."""
    images = _as_images(x, image_shape)
    ncols = max(1, min(ncols, images.shape[0]))
    canvas = _tile(images, ncols)
    fig, ax = plt.subplots(
        figsize=(min(12, 1.2 * ncols), min(12, 1.2 * math.ceil(images.shape[0] / ncols)))
    )
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def reconstruction_figure(x: torch.Tensor, x_hat: torch.Tensor, title: str | None = None) -> Figure:
    """Originals and, on the row below each row of them, their reconstructions.

    With more originals than fit on one row the rows alternate (data, reconstructions, data,
    ...); the default title says so instead of "top/bottom"."""
    a, b = _as_images(x), _as_images(x_hat)
    ncols = min(10, a.shape[0])
    rows = []
    for start in range(0, a.shape[0], ncols):
        rows += [a[start : start + ncols], b[start : start + ncols]]
    pairs = torch.cat([torch.cat([r, torch.ones(ncols - r.shape[0], *r.shape[1:])]) for r in rows])
    if title is None:
        if len(rows) == 2:
            title = "data (top row) and their reconstructions (bottom row)"
        else:
            title = (
                "rows alternate: data (rows 1, 3, ...), each followed by its reconstructions "
                "(rows 2, 4, ...)"
            )
    return image_grid(pairs, ncols=ncols, title=title)


def _valid_column(history: list[dict]) -> tuple[str, str]:
    """The validation column a history holds and its label: a point-mass guide (β = 0) has
    no ELBO, only the reconstruction term ``valid_reconstruction``."""
    if any(r.get("valid_reconstruction") not in ("", None) for r in history):
        return "valid_reconstruction", "validation reconstruction E log p(x|z) (not an ELBO)"
    return "valid_elbo", "validation ELBO"


STANDARD_COLUMNS = ("step", "epoch", "loss", "valid_elbo", "valid_reconstruction", "beta", "lr")
STANDARD_COLUMNS += ("elapsed",)


def training_curves(
    history: list[dict], title: str = "training", loss_label: str | None = None
) -> Figure:
    """Train loss (−ELBO per datapoint, β-weighted) per step and the validation ELBO per epoch;
    for a β = 0 run (column ``valid_reconstruction``) the loss is −reconstruction and the
    right panel says it shows the reconstruction term, not an ELBO. A history without any
    validation value (a GAN, no validation set) shows the step's other metrics there instead
    (e.g. ``divergence``, ``critic_loss``), or nothing; ``loss_label`` names a loss that is not
    an ELBO (e.g. "generator loss")."""

    def column(key):
        pts = [(r["step"], float(r[key])) for r in history if r.get(key) not in ("", None)]
        return [p[0] for p in pts], [p[1] for p in pts]

    key, label = _valid_column(history)
    point_mass = key == "valid_reconstruction"
    steps_v, valid = column(key)
    extra = [] if valid else list(dict.fromkeys(k for r in history for k in r))
    extra = [k for k in extra if k not in STANDARD_COLUMNS and column(k)[1]]
    panels = 2 if valid or extra else 1
    fig, axes = plt.subplots(1, panels, figsize=(10 if panels == 2 else 5.5, 3.6), squeeze=False)
    axes = axes[0]
    steps, loss = column("loss")
    axes[0].plot(steps, loss, lw=1)
    if loss_label is None:
        what = "−reconstruction, β = 0" if point_mass else "β-weighted −ELBO"
        loss_label = f"train loss ({what})\nnats / datapoint"
    axes[0].set(xlabel="step", ylabel=loss_label, title=f"{title}: loss")
    if loss and min(loss) > 0 and max(loss) > 10 * min(loss):
        axes[0].set_yscale("log")  # every point shown, the early large losses too
    if valid:
        axes[1].plot(steps_v, valid, marker="o", lw=1, color="C1")
        short = "E log p(x|z)" if point_mass else "validation ELBO"  # the title says the rest
        axes[1].set(xlabel="step", ylabel=f"{short}\nnats / datapoint")
        axes[1].set_title(textwrap.fill(label, 40))  # a β = 0 run's long title in two lines
    elif extra:
        for i, k in enumerate(extra):
            axes[1].plot(*column(k), lw=1, color=f"C{i + 1}", label=k.replace("_", " "))
        axes[1].set(xlabel="step", title="the step's other metrics (no validation value)")
        axes[1].legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def compare_curves(histories: dict[str, list[dict]], title: str | None = None) -> Figure:
    """The validation value (ELBO, or the reconstruction term of β = 0 runs) per step of
    several runs on one axis; ``histories`` maps a run's name to its history rows."""
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = set()
    for name, history in histories.items():
        key, label = _valid_column(history)
        pts = [(r["step"], float(r[key])) for r in history if r.get(key) not in ("", None)]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=f"{name} ({label})")
            labels.add(label)
    title = title or (" and ".join(sorted(labels)) or "no validation values") + " per step"
    ax.set(xlabel="step", ylabel="nats / datapoint")
    # a long title (two kinds of runs) in a smaller font, so that it stays on the page
    ax.set_title(title, fontsize="medium" if len(title) <= 60 else "small", wrap=True)
    if labels:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def beta_tradeoff(rows: list[dict]) -> Figure:
    """Reconstruction and KL (nats) against β: the rate–distortion trade-off of a β-VAE."""
    rows = sorted(rows, key=lambda r: r["beta"])
    betas = [r["beta"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(
        betas, [-r["reconstruction"] for r in rows], marker="o", label="distortion −E log p(x|z)"
    )
    ax.plot(betas, [r["kl"] for r in rows], marker="s", label="rate KL(q(z|x) ‖ p(z))")
    ax.set(xlabel="β", ylabel="nats per datapoint", title="β trades reconstruction against KL")
    ax.set_xscale("symlog", linthresh=0.5)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a PNG atomically and close the figure."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return path


# -- evaluation figures (issue 4) ----------------------------------------------------------------
__all__ += ["kl_per_dimension", "khat_histogram", "log_px_vs_elbo", "comparison_plot"]


def kl_per_dimension(diagnostics, title: str = "KL(q(z|x) ‖ p(z)) per latent dimension") -> Figure:
    """Mean KL per latent dimension (nats); active units (Cov_x E_q[z] > 0.01) in colour.

    Every bar has a marker at its height and (up to 30 dimensions) its value written above it,
    so that an inactive unit's near-zero KL is visible. A latent site whose KL has no formula
    per dimension (e.g. a mixture prior) is one bar labelled "<site> (whole site)", and the
    subtitle says so. The active-units line is a subtitle, so the title is never cut.

    ``diagnostics`` is a :class:`pyro_gen.evaluate.Diagnostics`.
    """
    kl = diagnostics.kl_per_dim.double().mean(0).numpy()
    names = list(diagnostics.kl_names)
    active = dict(zip(diagnostics.mean_names, diagnostics.active.tolist()))

    def is_active(name: str) -> bool:
        if name in active:
            return active[name]
        units = [v for k, v in active.items() if k == name or k.startswith(name + "[")]
        return any(units) if units else True

    # a site whose KL is one number though its latent has several dimensions (mixture prior)
    whole = [n for n in names if "[" not in n and any(m.startswith(n + "[") for m in active)]
    discrete = set(getattr(diagnostics, "discrete_sites", ()))

    def is_discrete(name: str) -> bool:
        return name.split("[", 1)[0] in discrete

    labels = [f"{n} (whole site)" if n in whole else n for n in names]
    labels = [f"{lab} (discrete)" if is_discrete(n) else lab for n, lab in zip(names, labels)]
    colors = ["white" if is_discrete(n) else "C0" if is_active(n) else "0.6" for n in names]
    hatches = ["//" if is_discrete(n) else "" for n in names]
    x = list(range(len(names)))
    fig, ax = plt.subplots(
        figsize=(max(5.5, min(14.0, 0.45 * len(names) + 2.5)), 4.0), layout="constrained"
    )
    ax.bar(x, kl, color=colors, edgecolor="0.3", linewidth=0.6, hatch=hatches)
    ax.plot(x, kl, ls="none", marker="_", ms=10, mew=2, color="k")
    top = float(max(kl.max(), 0.0)) if len(kl) else 0.0
    if len(names) <= 30:
        for i, v in zip(x, kl):
            ax.text(i, v + 0.01 * (top or 1), f"{v:.2g}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels, rotation=90 if len(names) > 10 or whole or discrete else 0)
    ax.set_ylim(0, (top or 1) * 1.15)
    au = f"active units {diagnostics.active_units}/{len(diagnostics.mean_names)} (grey: inactive)"
    if whole:
        au += f"; {', '.join(whole)}: one bar per site (KL has no formula per dimension)"
    if discrete:
        au += f"; hatched: discrete {', '.join(sorted(discrete))} (KL shown, not a unit)"
    ax.set(xlabel="latent dimension", ylabel="nats per datapoint")
    ax.set_title(title, fontsize=11)
    fig.suptitle(au, fontsize=8, color="0.3", y=0.005, va="bottom")
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    ax.grid(alpha=0.3, axis="y")
    return fig


def khat_histogram(khat: torch.Tensor, threshold: float = 0.7, title: str | None = None) -> Figure:
    """Histogram of the PSIS Pareto k̂ per datapoint with the reliability line at ``threshold``."""
    k = khat.detach().double().cpu()
    finite = k[torch.isfinite(k)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if finite.numel():
        ax.hist(finite.numpy(), bins=min(50, max(5, finite.numel() // 5)), color="C0", alpha=0.8)
    ax.axvline(threshold, color="C3", ls="--", label=f"k̂ = {threshold}")
    share = float((k > threshold).double().mean()) if k.numel() else float("nan")
    ax.set(
        xlabel="Pareto k̂ of the importance weights",
        ylabel="datapoints",
        title=title or f"PSIS k̂: {100 * share:.1f}% of datapoints above {threshold}",
    )
    n_inf = int(torch.isinf(k).sum())
    if n_inf:
        ax.text(0.99, 0.8, f"{n_inf} with k̂ = inf", transform=ax.transAxes, ha="right")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def log_px_vs_elbo(log_px: torch.Tensor, elbo: torch.Tensor, title: str | None = None) -> Figure:
    """Per-datapoint log p̂(x) against the ELBO; the distance above the diagonal is the gap."""
    a, b = elbo.detach().double().cpu().numpy(), log_px.detach().double().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    ax.scatter(a, b, s=6, alpha=0.5)
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="log p(x) = ELBO")
    gap = float((b - a).mean())
    ax.set(
        xlabel="ELBO (nats)",
        ylabel="log p̂(x) (nats)",
        title=title or f"per datapoint: mean gap log p̂(x) − ELBO = {gap:.2f} nats",
    )
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def comparison_plot(comparison, title: str = "model comparison on the same test points") -> Figure:
    """``az.plot_compare`` style: mean log p̂ ± se per model (open circles, best at the top)
    and the paired difference from the best ± its se (grey triangles; none for the best).

    ``comparison`` is a :class:`pyro_gen.evaluate.Comparison` (or its ``rows``). Rows that
    measure different quantities (their ``quantity``: log p(x) of a VAE, log p(x | y) of a
    CVAE) are not comparable: each quantity gets its own panel, with its own best, its own
    axis label, and the title says so.
    """
    rows = list(getattr(comparison, "rows", comparison))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("quantity") or "log p(x)", []).append(r)
    heights = [0.4 + 0.6 * len(g) for g in groups.values()]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(6.5, 1.2 + sum(heights) + 0.5 * (len(groups) - 1)),
        layout="constrained",
        height_ratios=heights,
        squeeze=False,
    )
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for ax, (quantity, group) in zip(axes[:, 0], groups.items()):
        best = group[0]["log_px"]
        ys = list(range(len(group)))[::-1]
        for i, (y, r) in enumerate(zip(ys, group)):
            ax.errorbar(
                r["log_px"],
                y,
                xerr=r["nll_se"],
                fmt="o",
                mfc="none",
                color="k",
                capsize=3,
                label=once("log p̂ ± se"),
            )
            if i > 0:  # the best's difference from itself is 0: no triangle
                ax.errorbar(
                    best - r["d_log_px"],
                    y - 0.25,
                    xerr=r["d_log_px_se"],
                    fmt="^",
                    color="0.5",
                    capsize=3,
                    label=once("difference from the best of its quantity ± paired se"),
                )
        ax.axvline(best, color="0.6", ls="--", lw=1)
        ax.set_yticks(ys, [r["model"] for r in group])
        hat = quantity.replace("log p(", "log p̂(", 1)
        ax.set_xlabel(f"{hat} per datapoint (nats; higher is better)")
        ax.set_ylim(-0.8, len(group) - 0.4)
        ax.grid(alpha=0.3, axis="x")
    if len(groups) > 1:
        title += "\nthe runs measure different quantities: one panel each, not comparable"
    fig.suptitle(title, fontsize="medium")
    fig.legend(loc="outside lower center", ncol=2, fontsize="small")
    return fig
