"""AIS against importance sampling on the 784-500-500-50 Bernoulli VAE (statically binarized MNIST).

Four phases, each timed in CPU seconds (``time.process_time``; run single-threaded):

1. train the VAE with ``Trainer`` for ``--epochs`` epochs (weights cached in ``--cache``);
2. IS with K = ``--is-samples`` (5000) on ``--num-images`` shuffled test images: log p̂(x), the
   PSIS k̂ per image;
3. AIS (``--steps``, ``--chains``, ``--leapfrog``, sigmoid schedule, from the guide) on the same
   images: the per-image difference AIS − IS next to k̂;
4. BDMC on ``--num-sim`` images simulated from the VAE, for each schedule length in
   ``--bdmc-steps``: the sandwich gap against the cost of forward AIS per 100 images.

Writes ``OUT.json`` and ``OUT.png`` (gap against cost with the 1-nat / 10-minute target; AIS − IS
against k̂). The data come from ``--data-dir`` (``binarized_mnist.npz``); the script stops with
a message when the file is absent.

    OMP_NUM_THREADS=1 python benchmarks/ais_mnist.py --data-dir ../shared/data \\
        --out benchmarks/results/ais_mnist
    python benchmarks/ais_mnist.py --quick --data-dir ../shared/data --out /tmp/ais_quick
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_threads_argument, machine_string, set_threads

from pyro_gen.data import load_dataset
from pyro_gen.evaluate import bdmc, log_likelihood, pareto_khat
from pyro_gen.evaluate.ais import ais
from pyro_gen.io import write_json
from pyro_gen.models import VAE, load_model, save_model

ARCH = {"data_shape": (784,), "latent_dim": 50, "hidden": (500, 500), "likelihood": "bernoulli"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(data, args) -> tuple[VAE, dict]:
    from pyro_gen.infer import Trainer

    cache = Path(args.cache)
    if (cache / "model.safetensors").exists():
        log(f"loading the trained VAE from {cache}")
        info = json.loads((cache / "bench.json").read_text())
        return load_model(cache), info
    train_x = torch.as_tensor(data.split("train"), dtype=torch.float32).reshape(-1, 784)
    valid_x = torch.as_tensor(data.split("valid"), dtype=torch.float32).reshape(-1, 784)
    if args.num_train:
        train_x = train_x[: args.num_train]
    torch.manual_seed(0)
    vae = VAE(**ARCH)
    t0 = time.process_time()
    trainer = Trainer(
        vae, epochs=args.epochs, batch_size=100, lr=1e-3, seed=0, progress=False,
        log_every=500,
    )  # fmt: skip
    history = trainer.fit(train_x, valid_x[:2000])
    cpu = time.process_time() - t0
    if trainer.interrupted:
        raise SystemExit("ais_mnist: training was interrupted; nothing cached")
    best = max(
        (h.get("valid_elbo") for h in history if h.get("valid_elbo") is not None), default=None
    )
    info = {
        "epochs": args.epochs,
        "num_train": int(train_x.shape[0]),
        "train_cpu_seconds": round(cpu, 1),
        "history_rows": len(history),
        "valid_elbo_2000": best,
    }
    save_model(vae, cache)
    (cache / "bench.json").write_text(json.dumps(info))
    log(f"trained {args.epochs} epochs in {cpu:.0f} CPU s; valid ELBO {best}")
    return vae, info


def cpu_timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--cache", default="/tmp/pyro_gen_ais_mnist_vae")
    p.add_argument("--out", default="benchmarks/results/ais_mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-images", type=int, default=30)
    p.add_argument("--is-samples", type=int, default=5000)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--tune-steps", type=int, default=None)
    p.add_argument("--num-sim", type=int, default=20)
    p.add_argument("--bdmc-steps", default="30,100,300,1000")
    p.add_argument("--bdmc-chains", type=int, default=4)
    p.add_argument("--bdmc-leapfrog", type=int, default=5)
    p.add_argument(
        "--is-seeds", type=int, default=4, help="IS repeated with this many more seeds (spread)"
    )
    p.add_argument(
        "--short-steps", type=int, default=300, help="AIS also at this T (stability in T)"
    )
    p.add_argument("--bdmc-from", default=None, help="reuse the BDMC rows of this result JSON")
    add_threads_argument(p)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.num_train, args.num_images, args.is_samples = 1, 2000, 4, 200
        args.steps, args.chains, args.leapfrog, args.num_sim = 20, 2, 2, 3
        args.bdmc_steps, args.cache = "5,20", args.cache + "_quick"
        args.is_seeds, args.short_steps = 1, 10
    set_threads(args.threads)
    path = Path(args.data_dir) / "binarized_mnist.npz"
    if not path.exists():
        print(f"ais_mnist: {path} not found; pass --data-dir", file=sys.stderr)
        return 2
    data = load_dataset("binarized_mnist", data_dir=args.data_dir)
    vae, train_info = train(data, args)
    vae.eval()
    test = torch.as_tensor(data.split("test"), dtype=torch.float32).reshape(-1, 784)
    g = torch.Generator().manual_seed(0)
    x = test[torch.randperm(test.shape[0], generator=g)[: args.num_images]]
    n = x.shape[0]
    result: dict = {
        "machine": machine_string(torch.get_num_threads()),
        "model": "VAE 784-500-500-50 Bernoulli (MLP, relu)",
        "train": train_info,
        "num_images": n,
    }

    # 2. IS with K samples and k̂
    (lp_is, lw), cpu_is = cpu_timed(
        lambda: log_likelihood(vae, x, num_samples=args.is_samples, return_weights=True, seed=0)
    )
    khat = pareto_khat(lw)
    log(f"IS K={args.is_samples}: mean {float(lp_is.mean()):.3f} in {cpu_is:.0f} CPU s")
    result["is"] = {
        "num_samples": args.is_samples,
        "log_px_mean": float(lp_is.mean()),
        "cpu_seconds": round(cpu_is, 1),
        "khat_share_over_0.7": float((khat > 0.7).double().mean()),
    }

    # 3. AIS on the same images
    r, cpu_ais = cpu_timed(
        lambda: ais(
            vae, x, num_steps=args.steps, num_chains=args.chains, num_leapfrog=args.leapfrog,
            tune_steps=args.tune_steps, seed=0, progress=False,
        )
    )  # fmt: skip
    diff = r.log_px - lp_is
    log(
        f"AIS T={args.steps} C={args.chains} L={args.leapfrog}: mean {float(r.log_px.mean()):.3f}"
        f" (AIS − IS {float(diff.mean()):+.3f}) in {cpu_ais:.0f} CPU s"
    )
    high = khat > 0.7
    corr = float(np.corrcoef(khat.numpy(), diff.numpy())[0, 1]) if n > 2 else float("nan")
    result["ais"] = {
        **r.summary(),
        "cpu_seconds": round(cpu_ais, 1),
        "cpu_minutes_per_100_images": round(cpu_ais / 60 * 100 / n, 2),
        "ais_minus_is_mean": float(diff.mean()),
        "ais_minus_is_se": float(diff.std() / math.sqrt(n)) if n > 1 else None,
        "ais_minus_is_mean_khat_over_0.7": float(diff[high].mean()) if high.any() else None,
        "ais_minus_is_mean_khat_under_0.7": float(diff[~high].mean()) if (~high).any() else None,
        "corr_khat_vs_difference": corr,
    }
    result["per_image"] = [
        {
            "is": round(float(a), 3),
            "ais": round(float(b), 3),
            "ais_se": round(float(s), 3),
            "khat": round(float(k), 3),
        }
        for a, b, s, k in zip(lp_is, r.log_px, r.log_px_se, khat)
    ]
    write_json(Path(args.out + ".json"), result)

    # 3b. IS's spread over seeds, AIS at a shorter schedule
    reps, cpu_reps = cpu_timed(
        lambda: torch.stack(
            [
                log_likelihood(vae, x, num_samples=args.is_samples, seed=1 + s)
                for s in range(args.is_seeds)
            ]
        )
    )
    all_is = torch.cat([lp_is.unsqueeze(0), reps])
    spread = all_is.std(0) if all_is.shape[0] > 1 else torch.full_like(lp_is, float("nan"))
    r_short, cpu_short = cpu_timed(
        lambda: ais(
            vae, x, num_steps=args.short_steps, num_chains=args.chains,
            num_leapfrog=args.leapfrog, seed=2, progress=False,
        )
    )  # fmt: skip
    d_short = r.log_px - r_short.log_px
    d_mean_is = r.log_px - all_is.mean(0)
    result["is_seeds"] = {
        "runs": int(all_is.shape[0]),
        "cpu_seconds": round(cpu_reps, 1),
        "spread_sd_median": float(spread.median()),
        "spread_sd_max": float(spread.max()),
        "range_max": float((all_is.max(0).values - all_is.min(0).values).max()),
        "corr_khat_vs_spread": float(np.corrcoef(khat.numpy(), spread.numpy())[0, 1])
        if n > 2
        else None,
        "ais_minus_mean_is_mean": float(d_mean_is.mean()),
        "ais_minus_best_is_mean": float((r.log_px - all_is.max(0).values).mean()),
    }
    result["ais_short"] = {
        "num_steps": args.short_steps,
        "cpu_seconds": round(cpu_short, 1),
        "log_px_mean": float(r_short.log_px.mean()),
        "long_minus_short_mean": float(d_short.mean()),
        "long_minus_short_abs_max": float(d_short.abs().max()),
    }
    for row, sd, a_s, runs in zip(result["per_image"], spread, r_short.log_px, all_is.T):
        row["is_sd_over_seeds"] = round(float(sd), 3)
        row["is_runs"] = [round(float(v), 2) for v in runs]
        row[f"ais_T{args.short_steps}"] = round(float(a_s), 3)
    log(
        f"IS over {all_is.shape[0]} seeds: median sd {float(spread.median()):.2f}, max sd "
        f"{float(spread.max()):.2f}; AIS − mean IS {float(d_mean_is.mean()):+.3f}; AIS T="
        f"{args.steps} − T={args.short_steps}: {float(d_short.mean()):+.3f} (max |.| "
        f"{float(d_short.abs().max()):.2f})"
    )
    write_json(Path(args.out + ".json"), result)

    # 4. BDMC gap against cost on simulated data
    rows = []
    if args.bdmc_from:
        rows = json.loads(Path(args.bdmc_from).read_text())["bdmc"]
        result["bdmc"] = rows
        result["bdmc_note"] = f"BDMC rows reused from {args.bdmc_from} (same model and settings)"
        args.bdmc_steps = ""
    x_sim_template = x[: args.num_sim] if args.num_sim <= n else test[: args.num_sim]
    for T in [int(t) for t in args.bdmc_steps.split(",") if t]:
        b, cpu_b = cpu_timed(
            lambda T=T: bdmc(
                vae, x_sim_template, num_steps=T, num_chains=args.bdmc_chains,
                num_leapfrog=args.bdmc_leapfrog, seed=1, progress=False,
            )
        )  # fmt: skip
        # the cost of the forward AIS run alone (tuning + T) out of the BDMC's (tuning + 2T)
        tune = b.forward.tune_steps
        fwd_share = (tune + T) / (tune + 2 * T)
        row = {
            **b.summary(),
            "cpu_seconds_bdmc": round(cpu_b, 1),
            "cpu_minutes_forward_per_100_images": round(
                cpu_b * fwd_share / 60 * 100 / b.gap.numel(), 3
            ),
        }
        rows.append(row)
        log(
            f"BDMC T={T}: gap {row['gap']:.3f} ± {row['gap_se']:.3f} nats, lower "
            f"{row['lower']:.2f}, upper {row['upper']:.2f}, {cpu_b:.0f} CPU s"
        )
        result["bdmc"] = rows
        write_json(Path(args.out + ".json"), result)
    write_json(Path(args.out + ".json"), result)
    plot(result, khat, diff, args.out + ".png")
    log(f"wrote {args.out}.json and {args.out}.png")
    return 0


def plot(result: dict, khat, diff, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    rows = result.get("bdmc", [])
    cost = [r["cpu_minutes_forward_per_100_images"] for r in rows]
    gap = [r["gap"] for r in rows]
    se = [r["gap_se"] for r in rows]
    a.errorbar(cost, gap, yerr=se, marker="o")
    for r, c, g_ in zip(rows, cost, gap):
        a.annotate(f"T={r['num_steps']}", (c, g_), textcoords="offset points", xytext=(4, 4))
    a.axhline(1.0, color="grey", ls="--", lw=1)
    a.axvline(20.0, color="grey", ls=":", lw=1)  # 10 min on 2 cores = 20 CPU-minutes
    a.fill_between([a.get_xlim()[0] if cost else 0.01, 20.0], -0.5, 1.0, color="C2", alpha=0.08)
    a.text(
        20.0, 1.02, " target: ≤ 1 nat at ≤ 10 min / 100 images on 2 cores", fontsize=7, ha="right"
    )
    a.set_xscale("log")
    a.set_xlabel("forward AIS cost, CPU-minutes per 100 images (1 thread)")
    a.set_ylabel("BDMC gap (nats), simulated data")
    c = rows[0] if rows else {}
    a.set_title(f"gap vs cost (C={c.get('num_chains')}, L={c.get('num_leapfrog')})")
    per = result["per_image"]
    b.scatter(khat.numpy(), diff.numpy(), s=12, label="AIS − IS (seed 0)")
    if per and "is_runs" in per[0]:
        runs = np.array([p_["is_runs"] for p_ in per])
        ais_ = np.array([p_["ais"] for p_ in per])
        b.errorbar(
            khat.numpy(), ais_ - runs.mean(1), yerr=runs.std(1, ddof=1), fmt="s", ms=3,
            color="C1", alpha=0.7, label=f"AIS − mean IS over {runs.shape[1]} seeds (± sd)",
        )  # fmt: skip
        b.legend(fontsize=8)
    b.axvline(0.7, color="grey", ls="--", lw=1)
    b.axhline(0.0, color="grey", lw=0.5)
    b.set_xlabel(f"PSIS k̂ (IS, K = {result['is']['num_samples']})")
    b.set_ylabel("log p̂ AIS − log p̂ IS (nats)")
    b.set_title("test images")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
