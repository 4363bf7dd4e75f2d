"""Semi-supervised classification with the M2 SSVAE: test accuracy against the number of labels.

Protocol (Kingma et al. 2014, §4.2): the first ``L`` training images keep their labels, the
rest are unlabelled (their label is masked, never seen), training with ``elbo="enum"`` sums the
missing labels out; accuracy of q(y|x) on the test split. Each run is capped in CPU seconds
(``time.process_time``, one thread); the JSON says how many epochs the budget gave.
``--supervised`` also trains the same classifier on the labelled images alone (same budget
rule), the baseline that says what the unlabelled images added.

    OMP_NUM_THREADS=1 python benchmarks/ssvae_labels.py --data mnist --labels 3000 \\
        --budget 480 --classifier conv --supervised --out benchmarks/results/ssvae_mnist3000
    OMP_NUM_THREADS=1 python benchmarks/ssvae_labels.py --data shapes mnist \\
        --labels 100 600 1000 3000 --budget 30 --out benchmarks/results/ssvae_labels_curve

Results go to ``OUT.json`` and ``OUT.png`` (accuracy against labels); ``--quick`` is a tiny
shapes run for the smoke test.
References (MNIST, 3,000 labels): Kingma et al.'s M2 96.4% (M1+M2 97.6%); Pyro's SS-VAE
example about 95–96%.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import CPUBudget, add_threads_argument, machine_string, set_threads

from pyro_gen.data import load_dataset
from pyro_gen.infer import Trainer
from pyro_gen.infer.callbacks import Callback
from pyro_gen.models import SSVAE

RESULTS = Path(__file__).parent / "results"


class ValidAccuracy(Callback):
    """Print the accuracy of q(y|x) on ``x, y`` (the validation split) after each epoch."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y, self.curve = model, x, y, []

    def on_epoch_end(self, trainer) -> None:
        acc = self.model.accuracy(self.x, self.y)
        self.curve.append(round(acc, 4))
        print(f"  epoch {len(self.curve)}: valid accuracy {acc:.4f}", flush=True)


def load(name: str, data_dir: str, quick: bool = False):
    if name == "mnist":
        ds = load_dataset("mnist", data_dir=data_dir)  # grey values, dynamic binarization
        dynamic = True
    elif quick:
        ds = load_dataset("shapes", num_train=256, num_valid=0, num_test=128, size=16)
        dynamic = False
    else:
        ds = load_dataset("shapes", num_train=20000, num_valid=0, num_test=2000)
        dynamic = False
    return ds, dynamic


def model_for(ds, args) -> SSVAE:
    return SSVAE(
        data_shape=ds.image_shape,
        num_classes=len(ds.label_names),
        latent_dim=args.latent_dim,
        hidden=tuple(args.hidden),
        classifier=args.classifier,
        classifier_hidden=args.classifier_hidden,
        classifier_layers=tuple(args.classifier_layers),
        alpha=args.alpha,
    )


def run(ds, dynamic: bool, num_labels: int, args, supervised: bool = False) -> dict:
    torch.manual_seed(args.seed)
    x, y = ds.split("train"), ds.labels["train"]
    observed = torch.arange(len(x)) < num_labels
    if supervised:  # the labelled images alone: the classifier learns from α log q(y|x) only
        x, y, observed = x[:num_labels], y[:num_labels], observed[:num_labels]
    batch = {"x": x, "y": torch.where(observed, y, 0), "observed": observed}
    model = model_for(ds, args)
    budget = CPUBudget(args.supervised_budget if supervised else args.budget)
    callbacks: list[Callback] = [budget]
    valid = None
    if "valid" in ds.splits and len(ds.split("valid")):
        valid = ValidAccuracy(model, ds.split("valid")[:2000], ds.labels["valid"][:2000])
        callbacks.append(valid)
    trainer = Trainer(
        model,
        elbo="enum",
        batch_size=min(args.batch_size, len(x)),
        epochs=args.epochs,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        progress=False,
        log_every=100,
        seed=args.seed,
        callbacks=callbacks,
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    history = trainer.fit(batch, dynamic_binarization=dynamic)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    test_x, test_y = ds.split("test"), ds.labels["test"]
    result = {
        "data": ds.name,
        "num_labels": num_labels,
        "supervised_only": supervised,
        "test_accuracy": model.accuracy(test_x, test_y),
        "num_test": len(test_x),
        "steps": trainer.state.step,
        "epochs": round(trainer.state.step / max(1, len(x) // trainer.config.batch_size), 2),
        "cpu_seconds": round(cpu, 1),
        "wall_seconds": round(wall, 1),
        "stopped_by": trainer.stopped_by or "epochs",
        "final_loss": history[-1]["loss"] if history else None,
        "valid_accuracy_per_epoch": valid.curve if valid else None,
    }
    if dynamic:  # the classifier trained on binarised draws: also one binarised test draw
        g = torch.Generator().manual_seed(0)
        result["test_accuracy_binarized_draw"] = model.accuracy(
            torch.bernoulli(test_x, generator=g), test_y
        )
    print(json.dumps(result), flush=True)
    return result


def plot(results: list[dict], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in sorted({r["data"] for r in results}):
        rows = sorted(
            (r for r in results if r["data"] == name and not r["supervised_only"]),
            key=lambda r: r["num_labels"],
        )
        ax.plot(
            [r["num_labels"] for r in rows],
            [100 * r["test_accuracy"] for r in rows],
            "o-",
            label=f"{name} (M2, {min(r['epochs'] for r in rows):g}–"
            f"{max(r['epochs'] for r in rows):g} epochs)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy of q(y|x) (%)")
    ax.set_title(f"SSVAE (M2): accuracy vs labels, {budget:.0f} CPU-s per run")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=["mnist"], choices=["mnist", "shapes"])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--labels", nargs="+", type=int, default=[3000])
    p.add_argument("--budget", type=float, default=480.0, help="CPU seconds per run")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="constant", help="constant, cosine, ...")
    p.add_argument(
        "--alpha", type=float, default=500.0, help="weight of α·log q(y|x) on labelled rows"
    )
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--hidden", type=int, nargs="+", default=[256])
    p.add_argument("--classifier", default="mlp", choices=["mlp", "conv"])
    p.add_argument("--classifier-hidden", type=int, default=256)
    p.add_argument("--classifier-layers", type=int, nargs="*", default=[512])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supervised", action="store_true", help="also the labelled-only baseline")
    p.add_argument("--supervised-budget", type=float, default=60.0, help="its CPU seconds")
    p.add_argument("--out", default=str(RESULTS / "ssvae_labels"), help="path stem of .json/.png")
    add_threads_argument(p)
    p.add_argument("--quick", action="store_true", help="a tiny shapes run (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.data, args.labels, args.budget, args.epochs = ["shapes"], [32], 2.0, 2
        args.hidden, args.classifier_layers, args.classifier_hidden = [16], [16], 16
        args.latent_dim, args.batch_size = 2, 64
    set_threads(args.threads)
    results = []
    for name in args.data:
        ds, dynamic = load(name, args.data_dir, args.quick)
        for num_labels in args.labels:
            results.append(run(ds, dynamic, num_labels, args))
            if args.supervised:
                results.append(run(ds, dynamic, num_labels, args, supervised=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "settings": vars(args),
        "machine": machine_string(args.threads),
        "torch": torch.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps({**meta, "runs": results}, indent=1))
    plot(results, out.with_suffix(".png"), args.budget)


if __name__ == "__main__":
    main()
