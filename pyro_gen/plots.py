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
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pyro_gen.io import atomic_open  # noqa: E402

__all__ = ["image_grid", "reconstruction_figure", "training_curves", "beta_tradeoff", "save_figure"]


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


def reconstruction_figure(
    x: torch.Tensor, x_hat: torch.Tensor, title: str = "data (top) and reconstructions (bottom)"
) -> Figure:
    """Originals on the odd rows, their reconstructions below them."""
    a, b = _as_images(x), _as_images(x_hat)
    ncols = min(10, a.shape[0])
    rows = []
    for start in range(0, a.shape[0], ncols):
        rows += [a[start : start + ncols], b[start : start + ncols]]
    pairs = torch.cat([torch.cat([r, torch.ones(ncols - r.shape[0], *r.shape[1:])]) for r in rows])
    return image_grid(pairs, ncols=ncols, title=title)


def training_curves(history: list[dict], title: str = "training") -> Figure:
    """Train loss (−ELBO per datapoint, β-weighted) per step and the validation ELBO per epoch."""

    def column(key):
        pts = [(r["step"], float(r[key])) for r in history if r.get(key) not in ("", None)]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps, loss = column("loss")
    axes[0].plot(steps, loss, lw=1)
    axes[0].set(xlabel="step", ylabel="train loss (nats / datapoint)", title=f"{title}: loss")
    if loss:
        lo, hi = min(loss), sorted(loss)[int(0.95 * (len(loss) - 1))]
        axes[0].set_ylim(lo - 0.05 * abs(lo), hi + 0.05 * abs(hi) + 1e-9)
    steps, valid = column("valid_elbo")
    axes[1].plot(steps, valid, marker="o", lw=1, color="C1")
    axes[1].set(xlabel="step", ylabel="validation ELBO (nats / datapoint)", title="validation ELBO")
    for ax in axes:
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

    ``diagnostics`` is a :class:`pyro_gen.evaluate.Diagnostics`.
    """
    kl = diagnostics.kl_per_dim.double().mean(0).numpy()
    names = list(diagnostics.kl_names)
    active = dict(zip(diagnostics.mean_names, diagnostics.active.tolist()))
    colors = ["C0" if active.get(n, True) else "0.7" for n in names]
    fig, ax = plt.subplots(figsize=(max(5.0, min(14.0, 0.25 * len(names) + 2)), 3.6))
    ax.bar(range(len(names)), kl, color=colors)
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0)
    au = f"active units {diagnostics.active_units}/{len(diagnostics.mean_names)} (grey: inactive)"
    ax.set(xlabel="latent dimension", ylabel="nats per datapoint", title=f"{title}; {au}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
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
    """``az.plot_compare`` style: mean log p̂(x) ± se per model (open circles, best at the top)
    and the paired difference from the best ± its se (grey triangles).

    ``comparison`` is a :class:`pyro_gen.evaluate.Comparison` (or its ``rows``).
    """
    rows = list(getattr(comparison, "rows", comparison))
    fig, ax = plt.subplots(figsize=(6.5, 1.6 + 0.6 * len(rows)), layout="constrained")
    best = rows[0]["log_px"]
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        ax.errorbar(
            r["log_px"],
            y,
            xerr=r["nll_se"],
            fmt="o",
            mfc="none",
            color="k",
            capsize=3,
            label="log p̂(x) ± se" if y == ys[0] else None,
        )
        if r["rank"] > 0:
            ax.errorbar(
                best - r["d_log_px"],
                y - 0.25,
                xerr=r["d_log_px_se"],
                fmt="^",
                color="0.5",
                capsize=3,
                label="difference from best ± paired se" if r["rank"] == 1 else None,
            )
    ax.axvline(best, color="0.6", ls="--", lw=1)
    ax.set_yticks(ys, [r["model"] for r in rows])
    ax.set(xlabel="log p̂(x) per datapoint (nats; higher is better)", title=title)
    ax.set_ylim(-0.8, len(rows) - 0.4)
    fig.legend(loc="outside lower center", ncol=2, fontsize="small")
    ax.grid(alpha=0.3, axis="x")
    return fig
