"""β-VAE: how the weight β on the KL term trades reconstruction against KL (rate vs distortion).

The training objective is E_q log p(x|z) − β·KL(q(z|x) ‖ p(z)); β enters the Pyro program as
``poutine.scale(scale=β)`` around the latent site ``"z"`` in the model and the guide. This script
trains one VAE per β ∈ {0, 0.5, 1, 4} (same seed, same initial weights, same data order, same
budget) and reports on the test split, with β = 1 (the model's true bound):

* reconstruction E_q log p(x|z) (higher is better; −reconstruction is the *distortion*),
* KL(q(z|x) ‖ p(z)) (the *rate*, nats the code carries about x),
* the ELBO = reconstruction − KL, and the number of active latent units (Burda et al. 2016:
  dimensions whose posterior mean varies across the data by more than 0.01).

Larger β buys a smaller KL (a code closer to the prior, fewer active units) with worse
reconstructions; β < 1 the other way round. **β = 0 is a plain autoencoder**: ``poutine.scale``
refuses 0, so pyro_gen switches the guide to a point mass (Delta) at the encoder's mean and masks
the prior term out. Its "ELBO" is then the reconstruction term alone — not a bound on log p(x) —
and its KL is not reported (against a point mass it is infinite); samples from the prior are not
expected to look like data either.

Writes a Markdown table (printed and saved as ``beta_tradeoff.md``), ``results.json``, the plot
``figures/beta_tradeoff.png`` (``pyro_gen.plots.beta_tradeoff``), ``figures/reconstructions.png``
(test images, then one row per β) and ``figures/samples_beta*.png``.

Usage::

    python examples/beta_vae.py                             # shapes, 5 epochs per β
    python examples/beta_vae.py --betas 0 0.25 1 2 8 --epochs 10
    python examples/beta_vae.py --smoke --out /tmp/beta     # tiny data, a few seconds

``--smoke`` (every example has it) shrinks data and budget to a few seconds for tests; any
budget flag given with it (``--epochs``, ``--max-steps``) still wins.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from pyro_gen import plots
from pyro_gen.data import Dataset, load_binarized_mnist, make_shapes
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.infer import Trainer
from pyro_gen.io import atomic_open, write_json
from pyro_gen.models import VAE

__all__ = ["main", "parse_args", "train_one", "markdown_table", "active_units"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 4.0])
    p.add_argument("--data", choices=("shapes", "binarized_mnist"), default="shapes")
    p.add_argument("--data-dir", default=None, help="folder with binarized_mnist.npz")
    p.add_argument("--epochs", type=int, default=None, help="epochs per β (default 5)")
    p.add_argument("--max-steps", type=int, default=None, help="steps per β (overrides epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 128)")
    p.add_argument("--latent-dim", type=int, default=None, help="size of z (default 10)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/examples/beta_vae"))
    p.add_argument("--smoke", action="store_true", help="tiny data and budget (for tests)")
    args = p.parse_args(argv)
    if any(b < 0 or math.isnan(b) for b in args.betas):
        p.error(f"every β must be >= 0; got {args.betas}")
    small = args.smoke
    args.epochs = args.epochs or (1 if small else 5)
    args.batch_size = args.batch_size or (32 if small else 128)
    args.latent_dim = args.latent_dim or (4 if small else 10)
    args.hidden = (32,) if small else (512, 256)
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    if args.data == "shapes":
        if args.smoke:
            return make_shapes(num_train=256, num_valid=0, num_test=64, size=16, seed=args.seed)
        return make_shapes(num_train=20000, num_valid=0, num_test=2000, seed=args.seed)
    ds = load_binarized_mnist(args.data_dir)
    return ds.subset({"train": 256, "test": 64}) if args.smoke else ds


@torch.no_grad()
def active_units(vae: VAE, x: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean E_q[z_d | x] varies over ``x`` by > threshold."""
    loc, _ = vae.encode(x)
    return int((loc.var(0) > threshold).sum())


def train_one(beta: float, ds: Dataset, args: argparse.Namespace) -> tuple[VAE, dict]:
    """Train one VAE with this β (the same seed for every β) and evaluate it on the test split."""
    torch.manual_seed(args.seed)  # the same initial weights for every β
    vae = VAE(data_shape=ds.image_shape, latent_dim=args.latent_dim, hidden=args.hidden, beta=beta)
    trainer = Trainer(
        vae,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,  # the same data order and noise for every β
        device="cpu",
        progress=False,
    )
    history = trainer.fit(ds.split("train"))
    test = ds.split("test")
    ev = evaluate_elbo(vae, test, seed=args.seed).summary()
    row = {
        "beta": beta,
        "reconstruction": ev["reconstruction"],
        # a point-mass guide has no finite KL to the prior: report none rather than 0
        "kl": ev["kl"] if beta > 0 else float("nan"),
        "elbo": ev["elbo"],
        "elbo_is_bound": beta > 0,
        "active_units": active_units(vae, test),
        "final_train_loss": history[-1]["loss"],
        "steps": trainer.state.step,
    }
    return vae, row


def markdown_table(rows: list[dict], latent_dim: int) -> str:
    lines = [
        "| β | reconstruction E log p(x\\|z) | KL(q ‖ p) | ELBO | active units |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kl = f"{r['kl']:.2f}" if r["elbo_is_bound"] else "n/a (point mass)"
        elbo = f"{r['elbo']:.2f}" if r["elbo_is_bound"] else f"({r['elbo']:.2f}: recon. only)"
        lines.append(
            f"| {r['beta']:g} | {r['reconstruction']:.2f} | {kl} | {elbo} | "
            f"{r['active_units']}/{latent_dim} |"
        )
    lines.append("")
    lines.append(
        "Nats per test datapoint, evaluated with β = 1. β = 0 is a plain autoencoder (Delta "
        "guide, no prior term): its objective is the reconstruction alone, not a bound on log p(x)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    figures = out / "figures"
    ds = load_data(args)
    test = ds.split("test")
    g = torch.Generator().manual_seed(args.seed)
    shown = test[torch.randperm(len(test), generator=g)[:10]]

    rows, recon_rows, written = [], [shown], []
    for beta in args.betas:
        vae, row = train_one(beta, ds, args)
        rows.append(row)
        kl = f"{row['kl']:.2f}" if row["elbo_is_bound"] else "n/a"
        print(
            f"β = {beta:g}: {row['steps']} steps, reconstruction {row['reconstruction']:.2f}, "
            f"KL {kl}, active units {row['active_units']}"
        )
        recon_rows.append(vae.reconstruct(shown))
        written.append(
            plots.save_figure(
                plots.image_grid(vae.sample(32, seed=args.seed, mean=True), title=f"β = {beta:g}"),
                figures / f"samples_beta{beta:g}.png",
            )
        )

    table = markdown_table(rows, args.latent_dim)
    print()
    print(table)
    with atomic_open(out / "beta_tradeoff.md") as f:
        f.write(table + "\n")
    strict = [{**r, "kl": r["kl"] if r["elbo_is_bound"] else None} for r in rows]  # no NaN
    write_json(
        out / "results.json", {"data": ds.name, "latent_dim": args.latent_dim, "rows": strict}
    )
    written += [
        plots.save_figure(plots.beta_tradeoff(rows), figures / "beta_tradeoff.png"),
        plots.save_figure(
            plots.image_grid(
                torch.cat(recon_rows),
                ncols=len(shown),
                title="test images, then reconstructions for β = "
                + ", ".join(f"{b:g}" for b in args.betas),
            ),
            figures / "reconstructions.png",
        ),
    ]
    for path in [out / "beta_tradeoff.md", out / "results.json", *written]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
