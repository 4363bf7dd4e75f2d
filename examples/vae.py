"""Train a VAE, save it, load it back, and look at what it learned.

What it shows:

* the VAE is a Pyro model/guide pair (``VAE.model`` / ``VAE.guide``) trained by
  ``pyro_gen.infer.Trainer`` with SVI, with a validation ELBO each epoch;
* the run folder: ``config.json`` holds the constructor arguments, so ``load_model(run)``
  rebuilds the model by name without re-stating the architecture, and the reloaded model gives
  exactly the same test ELBO and the same samples for the same seed;
* the test ELBO split into reconstruction E_q log p(x|z) and KL(q(z|x) ‖ p(z)), in nats;
* figures: training curves, samples x ~ p(x|z) and their means E[x|z], reconstructions of test
  images, and a decoded grid over the two most active latent dimensions.

Data: the embedded shapes images (generated, no download) by default, or statically binarized
MNIST with ``--data binarized_mnist --data-dir ../shared/data`` (or ``PYRO_GEN_DATA_DIR``).

Usage::

    python examples/vae.py                                  # shapes, 10 epochs, runs/examples/vae
    python examples/vae.py --data binarized_mnist --data-dir ../shared/data --epochs 20
    python examples/vae.py --smoke --out /tmp/vae-smoke     # tiny data, a few seconds

``--smoke`` (every example has it) shrinks data and budget to a few seconds for tests; any
budget flag given with it (``--epochs``, ``--max-steps``) still wins.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pyro_gen import plots
from pyro_gen.data import Dataset, load_binarized_mnist, make_shapes
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.infer import Trainer
from pyro_gen.io import write_json
from pyro_gen.models import VAE, load_model, save_model

__all__ = ["main", "parse_args", "load_data", "latent_grid", "most_active_dims"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("shapes", "binarized_mnist"), default="shapes")
    p.add_argument("--data-dir", default=None, help="folder with binarized_mnist.npz")
    p.add_argument("--num-train", type=int, default=None, help="training images (subset)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the data (default 10)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 128)")
    p.add_argument("--latent-dim", type=int, default=None, help="size of z (default 10)")
    p.add_argument("--network", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/examples/vae"), help="output folder")
    p.add_argument("--smoke", action="store_true", help="tiny data and budget (for tests)")
    args = p.parse_args(argv)
    small = args.smoke
    args.epochs = args.epochs or (1 if small else 10)
    args.batch_size = args.batch_size or (32 if small else 128)
    args.latent_dim = args.latent_dim or (2 if small else 10)
    args.hidden = (32,) if small else (512, 256)
    args.channels = (8, 16) if small else (32, 64, 64)
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    """Shapes (generated) or binarized MNIST, shrunk for ``--smoke`` / ``--num-train``."""
    if args.data == "shapes":
        if args.smoke:
            return make_shapes(num_train=256, num_valid=64, num_test=64, size=16, seed=args.seed)
        return make_shapes(num_train=args.num_train or 20000, seed=args.seed)
    ds = load_binarized_mnist(args.data_dir)
    if args.smoke or args.num_train:
        n = args.num_train or 256
        # the test split is sorted by class: subset() draws random rows, a head slice would not
        ds = ds.subset({"train": n, "valid": max(64, n // 10), "test": max(64, n // 10)})
    return ds


@torch.no_grad()
def most_active_dims(vae: VAE, x: torch.Tensor, k: int = 2) -> list[int]:
    """The ``k`` latent dimensions whose posterior mean varies most over the data,
    Var_x(E_q[z_d | x]) (Burda et al., 2016's activity), most active first. An inactive
    dimension (its q(z|x) equal to the prior) changes nothing in a decoded grid."""
    loc, _ = vae.encode(x)
    activity = loc.double().var(0) if loc.shape[0] > 1 else loc.double().abs()[0]
    return activity.argsort(descending=True)[:k].tolist()


@torch.no_grad()
def latent_grid(
    vae: VAE, steps: int = 10, span: float = 2.5, dims: list[int] | None = None
) -> torch.Tensor:
    """E[x|z] over a grid of two latent dimensions ``dims`` (default the first two; the
    example passes :func:`most_active_dims`), the others at 0: ``[steps * steps, ...]``,
    ``dims[0]`` varying along a row, ``dims[1]`` down the columns."""
    dims = list(dims) if dims is not None else list(range(min(2, vae.latent_dim)))
    values = torch.linspace(-span, span, steps)
    z = torch.zeros(steps * steps, vae.latent_dim)
    z[:, dims[0]] = values.repeat(steps)
    if len(dims) > 1:
        z[:, dims[1]] = values.flip(0).repeat_interleave(steps)
    return vae.decode(z)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    run, figures = out / "run", out / "figures"
    if (run / "config.json").exists():
        raise SystemExit(f"{run} already holds a run; choose another --out.")

    ds = load_data(args)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    print(
        f"data: {ds.name}, {len(train)} train / {len(valid)} valid / {len(test)} test images "
        f"of shape {list(ds.image_shape)}"
    )

    torch.manual_seed(args.seed)  # the initial weights
    vae = VAE(
        data_shape=ds.image_shape,
        latent_dim=args.latent_dim,
        network=args.network,
        hidden=args.hidden,
        channels=args.channels,
    )
    trainer = Trainer(
        vae,
        run_dir=run,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device="cpu",
        progress=not args.smoke,
        log_every=10,
    )
    start = time.perf_counter()
    history = trainer.fit(train, valid)
    print(
        f"trained {trainer.state.step} steps in {time.perf_counter() - start:.1f} s "
        f"({trainer.steps_per_second:.1f} steps/s)"
    )

    # save (the trainer already did, at each checkpoint; this is the explicit call) and reload
    save_model(vae, run, data=ds.describe())
    loaded = load_model(run)
    trained_elbo = evaluate_elbo(vae, test, seed=args.seed).summary()
    result = evaluate_elbo(loaded, test, seed=args.seed).summary()
    same = all(trained_elbo[k] == result[k] for k in ("elbo", "reconstruction", "kl"))
    same_samples = torch.equal(vae.sample(8, seed=1), loaded.sample(8, seed=1))
    print(f"reloaded from {run}: same test ELBO: {same}, same samples for one seed: {same_samples}")
    print(
        f"test ELBO {result['elbo']:.2f} ± {result['elbo_se']:.2f} nats = reconstruction "
        f"{result['reconstruction']:.2f} − KL {result['kl']:.2f}"
    )

    g = torch.Generator().manual_seed(args.seed)
    shown = test[torch.randperm(len(test), generator=g)[:20]]
    dims = most_active_dims(loaded, test[:1000])  # not dims 0 and 1: one may be inactive
    written = [
        plots.save_figure(plots.training_curves(history, "VAE"), figures / "training_curves.png"),
        plots.save_figure(
            plots.image_grid(loaded.sample(64, seed=args.seed), title="x ~ p(x|z), z ~ p(z)"),
            figures / "samples.png",
        ),
        plots.save_figure(
            plots.image_grid(loaded.sample(64, seed=args.seed, mean=True), title="E[x|z]"),
            figures / "samples_mean.png",
        ),
        plots.save_figure(
            plots.reconstruction_figure(shown, loaded.reconstruct(shown)),
            figures / "reconstructions.png",
        ),
        plots.save_figure(
            plots.image_grid(
                latent_grid(loaded, dims=dims),
                ncols=10,
                title=f"E[x|z] over the most active z[{dims[0]}] (→)"
                + (f", z[{dims[1]}] (↑)" if len(dims) > 1 else "")
                + "; the others 0",
            ),
            figures / "latent_grid.png",
        ),
    ]
    summary = {
        "data": ds.name,
        "steps": trainer.state.step,
        "steps_per_second": trainer.steps_per_second,
        "test": result,
        "reload_identical": same and same_samples,
        "run": str(run),
    }
    write_json(out / "summary.json", summary)
    for path in [run / "config.json", run / "model.safetensors", *written, out / "summary.json"]:
        print(f"wrote {path}")
    return 0 if same and same_samples else 1


if __name__ == "__main__":
    raise SystemExit(main())
