"""A GAN (non-saturating), a WGAN-GP and a VAE trained on the same data with the same CPU
budget, judged by the same sample-quality metrics (:mod:`pyro_gen.evaluate.quality`).

Per data set (``shapes``: 32x32 binary, 3 classes; ``mnist``: 28x28 grey, 10 digits):

* the three models use MLP networks of the same sizes (generator/decoder 16 -> 256 -> 512 ->
  pixels, critic/encoder pixels -> 512 -> 256), and each trains through the one
  ``pyro_gen.infer.Trainer`` until its CPU-time budget (``--budget`` seconds of
  ``time.process_time()``, one thread) is spent: the VAE with SVI (Bernoulli likelihood; MNIST
  dynamically binarised), the GANs with ``AdversarialStep`` (WGAN-GP: 5 critic updates per
  generator update, λ = 10);
* a judge (a small conv classifier, :func:`pyro_gen.evaluate.judge.train_judge`) is trained
  once on the real training images and labels; its features carry the two-sample test, the
  Fréchet distance, k-NN precision/recall (k = 3) and MMD² (Gaussian RBF, median heuristic);
  its predictions give the class histogram of the samples (mode collapse);
* ``--num`` samples of each model against as many real test images; the VAE twice: its mean
  E[x | z] (what its sample figures show) and a draw x ~ p(x | z);
* sharpness: mean squared difference of neighbouring pixels, relative to the real images'
  (1 = as sharp as the data; a blurry mean image scores below 1).

    OMP_NUM_THREADS=1 python benchmarks/gan_vs_vae.py --data-dir ../shared/data
    python benchmarks/gan_vs_vae.py --quick            # a smoke run of both parts

Writes ``benchmarks/results/gan_vs_vae.json``, ``.md`` (tables) and ``.png`` (sample grids and
histograms), or ``--out PREFIX``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import pyro
import torch
from _common import CPUBudget, add_threads_argument, machine_string, set_threads

from pyro_gen.adversarial import GAN, AdversarialStep
from pyro_gen.data import load_dataset
from pyro_gen.evaluate.judge import train_judge
from pyro_gen.evaluate.quality import sample_quality
from pyro_gen.infer import Trainer
from pyro_gen.models import VAE

RESULTS = Path(__file__).resolve().parent / "results"
LATENT = 16
METRICS = {  # name: (column, better)
    "c2st_accuracy": ("two-sample acc. (0.5 best)", "half"),
    "frechet_distance": ("Fréchet dist.", "low"),
    "precision": ("precision", "high"),
    "recall": ("recall", "high"),
    "mmd2": ("MMD²", "low"),
    "classes_kl_to_reference": ("class KL", "low"),
    "classes_covered": ("classes covered", "high"),
    "sharpness": ("sharpness (1 = data)", "one"),
}


def sharpness(x: torch.Tensor) -> float:
    """Mean squared difference of horizontally and vertically neighbouring pixels."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    return float((dx + dy) / 2)


def load(part: str, args) -> dict:
    if part == "shapes":
        ds = load_dataset("shapes", num_train=args.num_train, num_valid=0, num_test=2 * args.num)
        train, dynamic = ds.split("train"), False
    else:
        ds = load_dataset("mnist", data_dir=args.data_dir, binarize=None)
        train, dynamic = ds.split("train")[: args.num_train], True
    test = ds.split("test")
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(test.shape[0], generator=g)
    idx, held = perm[: args.num], perm[args.num : 2 * args.num]  # disjoint
    return {
        "ds": ds,
        "train": train.float(),
        "train_labels": ds.labels["train"][: train.shape[0]],
        "test": test[idx].float(),
        "held_out": test[held].float(),
        "held_out_labels": ds.labels["test"][held].long(),
        "dynamic": dynamic,
        "names": list(ds.label_names) if ds.label_names else [str(i) for i in range(10)],
    }


def train_model(kind: str, data: dict, args) -> tuple[torch.nn.Module, dict]:
    shape = tuple(data["train"].shape[1:])
    pyro.set_rng_seed(0)
    common = dict(batch_size=64, max_steps=10**7, epochs=10**4, log_every=200, progress=False)
    budget = CPUBudget(args.budget)
    if kind == "vae":
        model = VAE(data_shape=shape, latent_dim=LATENT, hidden=(512, 256))
        trainer = Trainer(model, lr=1e-3, callbacks=[budget], **common)
        start = time.process_time()
        history = trainer.fit(data["train"], dynamic_binarization=data["dynamic"])
    else:
        wgan = kind == "wgan-gp"
        model = GAN(
            data_shape=shape,
            latent_dim=LATENT,
            hidden=(256, 512),
            critic_hidden=(512, 256),
            objective="wgan-gp" if wgan else "nonsaturating",
            critic_steps=5 if wgan else 1,
        )
        step = functools.partial(AdversarialStep, betas=(0.5, 0.9) if wgan else (0.5, 0.999))
        trainer = Trainer(
            model,
            step_class=step,
            lr=args.wgan_lr if wgan else args.gan_lr,
            callbacks=[budget],
            **common,
        )
        start = time.process_time()
        history = trainer.fit(data["train"])
    cpu = time.process_time() - start
    last = history[-1] if history else {}
    info = {
        "steps": trainer.state.step,
        "cpu_seconds": round(cpu, 1),
        "steps_per_cpu_second": round(trainer.state.step / max(cpu, 1e-9), 1),
        "final_loss": last.get("loss"),
    }
    if kind != "vae":
        info["generator_updates"] = trainer.step.count // trainer.step.critic_steps
        info["final_divergence"] = last.get("divergence")
    return model.eval(), info


def run_part(part: str, args) -> dict:
    t0 = time.process_time()
    data = load(part, args)
    judge_start = time.process_time()
    judge = train_judge(
        data["train"][: args.judge_train],
        {"label": data["train_labels"][: args.judge_train].long()},
        num_classes={"label": len(data["names"])},
        epochs=args.judge_epochs,
        seed=0,
        device="cpu",
    )
    judge_cpu = time.process_time() - judge_start
    real = data["test"]
    real_sharp = sharpness(real)
    test_acc = judge.score(data["held_out"], {"label": data["held_out_labels"]})["label"]
    features = judge.features

    def classify(x):
        return judge.predict(x)["label"]

    rows, grids = {}, {"real": real[:64]}
    baseline = sample_quality(  # other real images: the best a model can score
        real,
        data["held_out"],
        features=features,
        classify=classify,
        num_classes=len(data["names"]),
        c2st_steps=args.c2st_steps,
        seed=0,
    )
    baseline["sharpness"] = sharpness(data["held_out"]) / real_sharp
    rows["real (held-out test images)"] = {"metrics": baseline, "budget": {}}
    for kind in ("vae", "gan", "wgan-gp"):
        model, info = train_model(kind, data, args)
        print(f"[{part}] {kind}: {info}", flush=True)
        with torch.no_grad():
            if kind == "vae":
                variants = {
                    "VAE E[x|z]": model.sample(args.num, seed=0, mean=True),
                    "VAE x~p(x|z)": model.sample(args.num, seed=0, mean=False),
                }
            else:
                name = "GAN (non-saturating)" if kind == "gan" else "WGAN-GP"
                variants = {name: model.sample(args.num, seed=0)}
        for name, fake in variants.items():
            m = sample_quality(
                real,
                fake.float(),
                features=features,
                classify=classify,
                num_classes=len(data["names"]),
                c2st_steps=args.c2st_steps,
                seed=0,
            )
            m["sharpness"] = sharpness(fake) / real_sharp
            rows[name] = {"metrics": m, "budget": info}
            grids[name] = fake[:64]
    return {
        "rows": rows,
        "judge": {"test_accuracy": test_acc, "cpu_seconds": round(judge_cpu, 1)},
        "names": data["names"],
        "cpu_minutes": round((time.process_time() - t0) / 60, 2),
        "grids": grids,
    }


def winners(rows: dict) -> dict:
    """Per metric, the model (not the real-data row) with the best value."""
    out = {}
    models = {k: v for k, v in rows.items() if not k.startswith("real")}
    for key, (_, better) in METRICS.items():
        vals = {k: v["metrics"].get(key) for k, v in models.items()}
        vals = {k: v for k, v in vals.items() if isinstance(v, (int, float))}
        if not vals:
            continue
        score = {
            "low": lambda v: v,
            "high": lambda v: -v,
            "half": lambda v: abs(v - 0.5),
            "one": lambda v: abs(math.log(max(v, 1e-9))),
        }[better]
        out[key] = min(vals, key=lambda k: score(vals[k]))
    return out


def table(part: str, result: dict) -> str:
    cols = list(METRICS)
    head = "| model | " + " | ".join(METRICS[c][0] for c in cols) + " | steps | CPU s |"
    lines = [f"### {part}", "", head, "|" + " --- |" * (len(cols) + 3)]
    for name, row in result["rows"].items():
        m, b = row["metrics"], row["budget"]
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {b.get('steps', '')} | "
            f"{b.get('cpu_seconds', '')} |"
        )
    win = winners(result["rows"])
    lines += [
        "",
        "Best per metric: " + "; ".join(f"{METRICS[k][0]}: {v}" for k, v in win.items()) + ".",
        f"Judge accuracy on real test images: {result['judge']['test_accuracy']:.3f}.",
        "",
    ]
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyro_gen.plots import _as_images, _tile

    parts = list(results)
    ncols = 6
    fig, axes = plt.subplots(len(parts), ncols, figsize=(3.0 * ncols, 3.3 * len(parts)))
    axes = axes.reshape(len(parts), ncols)
    for r, part in enumerate(parts):
        res = results[part]
        names = list(res["grids"])
        for c, name in enumerate(names[: ncols - 1]):
            img = _tile(_as_images(res["grids"][name][:36].cpu()), 6)
            axes[r, c].imshow(img.squeeze(0).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(f"{part}: {name}", fontsize=8)
            axes[r, c].axis("off")
        ax = axes[r, ncols - 1]
        labels = res["names"]
        width = 0.8 / (len(names))
        for i, name in enumerate(names):
            key = "real (held-out test images)" if name == "real" else name
            props = res["rows"][key]["metrics"]["classes_proportions"]
            ax.bar([j + i * width for j in range(len(labels))], props, width=width, label=name)
        ax.set_xticks([j + 0.4 for j in range(len(labels))], labels, fontsize=6, rotation=45)
        ax.set_title(f"{part}: judged classes of samples", fontsize=8)
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("shapes", "mnist", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="a smoke run (seconds per model)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--budget", type=float, default=150.0, help="CPU seconds per model (150)")
    p.add_argument("--num-train", type=int, default=20000)
    p.add_argument("--num", type=int, default=2000, help="samples / real images judged (2000)")
    p.add_argument("--judge-train", type=int, default=10000)
    p.add_argument("--judge-epochs", type=int, default=2)
    p.add_argument("--gan-lr", type=float, default=1e-3, help="non-saturating GAN lr (1e-3)")
    p.add_argument("--wgan-lr", type=float, default=5e-4, help="WGAN-GP lr (5e-4)")
    p.add_argument("--c2st-steps", type=int, default=500, help="two-sample classifier steps")
    add_threads_argument(p)
    p.add_argument("--out", type=Path, default=RESULTS / "gan_vs_vae")
    args = p.parse_args()
    set_threads(args.threads)
    pyro.enable_validation(False)
    if args.quick:
        args.budget, args.num_train, args.num = 3.0, 512, 200
        args.judge_train, args.judge_epochs = 512, 1
    parts = ["shapes", "mnist"] if args.part == "all" else [args.part]
    if "mnist" in parts and not (Path(args.data_dir) / "train-labels-idx1-ubyte.gz").exists():
        if not any(Path(args.data_dir).glob("train-labels-idx1-ubyte*")):
            print(f"no MNIST in {args.data_dir}: skipping the mnist part")
            parts.remove("mnist")
    start = time.process_time()
    results = {part: run_part(part, args) for part in parts}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(results, args.out.with_suffix(".png"))
    md = "\n".join(table(part, res) for part, res in results.items())
    args.out.with_suffix(".md").write_text(md)
    print(md)
    doc = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": machine_string(args.threads),
        "total_cpu_minutes": round((time.process_time() - start) / 60, 2),
        "parts": {
            part: {k: v for k, v in res.items() if k != "grids"} | {"winners": winners(res["rows"])}
            for part, res in results.items()
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    print(f"total {doc['total_cpu_minutes']} CPU-minutes; wrote {args.out}.json/.md/.png")


if __name__ == "__main__":
    main()
