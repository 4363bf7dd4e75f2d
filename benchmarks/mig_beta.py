"""Disentanglement of β-VAEs on the shapes data: the Mutual Information Gap for β ∈ {1, 4, 8}.

A VAE (MLP, 10 latent dimensions) is trained per β on 20,000 shapes images (32 × 32) under a
CPU budget (``time.process_time``, one thread); MIG (Chen et al. 2018, the disentanglement_lib
estimator of :mod:`pyro_gen.latent.mig`) is measured on the guide means of 10,000 training
images against the five ground-truth factors (shape, scale, orientation, pos_x, pos_y); a
traversal of the most active dimensions (by KL per dimension) is drawn for each β.

    OMP_NUM_THREADS=1 python benchmarks/mig_beta.py --betas 1 4 8 --budget 70

Writes ``OUT.json``, ``OUT.png`` (MIG per factor and β) and ``OUT_traversal_b<β>.png``
(default ``OUT`` = ``benchmarks/results/mig_beta``); ``--quick`` is a tiny smoke run.
Published MIG on dSprites (for comparison of ranges, not of numbers: other data, networks and
budgets): β-VAE about 0.1–0.3 and β-TCVAE up to about 0.4 (Chen et al. 2018, Fig. 4/Table);
Locatello et al. 2019 report a spread of roughly 0.05–0.35 over methods and seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import CPUBudget, add_threads_argument, set_threads

from pyro_gen import plots
from pyro_gen.data import load_dataset
from pyro_gen.infer import Trainer
from pyro_gen.latent import model_mig, traverse
from pyro_gen.models import VAE, evaluating

RESULTS = Path(__file__).parent / "results"
FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    p.add_argument("--budget", type=float, default=60.0, help="CPU seconds per β")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    p.add_argument("--num-train", type=int, default=20000)
    p.add_argument("--num-mig", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "mig_beta"), help="path stem of the outputs")
    add_threads_argument(p)
    p.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.betas, args.budget, args.num_train, args.num_mig = [1.0, 4.0], 1.0, 256, 256
        args.hidden, args.latent_dim = [16], 3
    set_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = 16 if args.quick else 32
    ds = load_dataset("shapes", num_train=args.num_train, num_valid=0, num_test=0, size=size)
    x = ds.split("train")
    columns = [ds.attribute_names.index(f) for f in FACTORS]
    factors = ds.attributes["train"][:, columns]
    runs = []
    for beta in args.betas:
        torch.manual_seed(args.seed)
        vae = VAE(
            data_shape=ds.image_shape,
            latent_dim=args.latent_dim,
            hidden=tuple(args.hidden),
            beta=beta,
        )
        trainer = Trainer(
            vae,
            batch_size=args.batch_size,
            epochs=1000,
            lr=args.lr,
            progress=False,
            log_every=100,
            seed=args.seed,
            callbacks=[CPUBudget(args.budget)],
        )
        cpu0 = time.process_time()
        history = trainer.fit(x)
        cpu = time.process_time() - cpu0
        result = model_mig(
            vae,
            x[: args.num_mig],
            factors[: args.num_mig],
            discrete=[True, False, False, False, False],
            factor_names=FACTORS,
        )
        t = traverse(vae, x[:2000], num_dims=min(6, args.latent_dim))  # most active first
        images = t.images.reshape(-1, *t.images.shape[2:])
        kl_text = ", ".join(f"z{d}:{k:.1f}" for d, k in zip(t.dims.tolist(), t.kl.tolist()))
        fig = plots.image_grid(
            images,
            ncols=len(t["values"]),
            title=f"β={beta:g}: MIG {result.score:.3f}; rows = dims by KL (nats) {kl_text}\n"
            "each row sweeps one dimension from −3 to 3 around one image's code",
        )
        png = out.parent / f"{out.name}_traversal_b{beta:g}.png"
        plots.save_figure(fig, png)
        with evaluating(vae):
            loc, _ = vae.encode(x[:2000])
        row = {
            "beta": beta,
            "mig": result.score,
            "per_factor": result.table(),
            "active_dims_kl_gt_0.1": int((t.kl > 0.1).sum()) if len(t.kl) else 0,
            "kl_top_dims": [round(k, 3) for k in t.kl.tolist()],
            "steps": trainer.state.step,
            "epochs": round(trainer.state.step / (len(x) // args.batch_size), 2),
            "cpu_seconds": round(cpu, 1),
            "final_loss": history[-1]["loss"] if history else None,
            "figure": png.name,
            "code_std": [round(v, 3) for v in loc.std(0).tolist()],
        }
        print(json.dumps({k: v for k, v in row.items() if k != "per_factor"}), flush=True)
        runs.append(row)
    out.with_suffix(".json").write_text(
        json.dumps({"settings": vars(args), "runs": runs}, indent=1)
    )
    plot(runs, out.with_suffix(".png"))


def plot(runs: list[dict], path: Path) -> None:
    """Grouped bars: the normalised gap per factor for each β, the MIG (their mean) in the
    legend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        gaps = [r["gap"] for r in run["per_factor"]]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(gaps))]
        ax.bar(xs, gaps, width, label=f"β={run['beta']:g}: MIG {run['mig']:.3f}")
    ax.set_xticks(range(len(FACTORS)), FACTORS)
    ax.set_ylabel("gap / H(factor)")
    ax.set_title("Mutual Information Gap per factor, shapes data (β-VAE)")
    ax.legend()
    fig.tight_layout()
    plots.save_figure(fig, path)


if __name__ == "__main__":
    main()
