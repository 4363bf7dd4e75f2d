"""Your own model and guide in raw Pyro, trained, saved, loaded and evaluated with pyro_gen's tools.

The package does not ship this model: a VAE whose prior is a **learned mixture of Gaussians**

    c ~ Categorical(softmax(w)),  z | c ~ N(μ_c, diag σ_c²)    (c summed out: a MoG density)
    x | z ~ Bernoulli(logits = decoder(z))                     (every pixel, one event)
    q(z | x) = N(encoder_μ(x), diag encoder_σ(x)²)

written as two plain functions, ``model(nets, x)`` and ``guide(nets, x)``, with every parameter
(the mixture weights, means and scales, encoder and decoder) owned by one ``nn.Module``. The only
things pyro_gen asks of a program are in it: observations under ``pyro.plate("data", N)``, each
datapoint one event (``.to_event(...)``), and the same latent site names in model and guide.

It shows the two ways to hand such a program to pyro_gen:

1. **Two callables plus the module** that owns their parameters:
   ``Trainer(model_fn, guide_fn, module=nets)``; the weights are saved with ``save_model`` and
   loaded back with ``load_weights`` into a module you build yourself.
2. **A registered PyroModule** (``@register_model("mog_prior_vae")``) with ``model``/``guide``
   methods: its constructor arguments become ``config.json``, so ``load_model(run)`` rebuilds
   it by name (in another process, import this file first so the name is registered).

Both are evaluated with ``pyro_gen.evaluate.evaluate_elbo`` (ELBO = reconstruction − KL; the KL
against a mixture has no closed form, so it is estimated from the traces). Figures: samples from
each mixture component, and the test images' codes with the learned component means.

To try another likelihood, change one line of ``model``: e.g. for grey-valued images
``dist.Laplace(loc, scale).to_event(3)`` or ``dist.StudentT(df, loc, scale).to_event(3)``.

Usage::

    python examples/custom_model.py                          # shapes, 5 epochs
    python examples/custom_model.py --components 5 --epochs 10
    python examples/custom_model.py --smoke --out /tmp/mog   # tiny data, a few seconds

``--smoke`` (every example has it) shrinks data and budget to a few seconds for tests; any
budget flag given with it (``--epochs``, ``--max-steps``) still wins.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_gen import plots
from pyro_gen.data import make_shapes
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.infer import Trainer
from pyro_gen.io import write_json
from pyro_gen.models import load_model, load_weights, register_model, save_model

__all__ = ["MoGPriorNets", "model", "guide", "MoGPriorVAE", "main"]


# -- the program: parameters in a module, model and guide in raw Pyro -----------------------------
class MoGPriorNets(nn.Module):
    """Every parameter of the model and the guide (plain torch, no Pyro here)."""

    def __init__(
        self, data_shape: Sequence[int], latent_dim: int = 2, components: int = 3, hidden: int = 256
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        pixels = int(torch.Size(self.data_shape).numel())
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )
        self.mix_logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(2.0 * torch.randn(components, latent_dim))  # spread out
        self.log_scales = nn.Parameter(torch.zeros(components, latent_dim))

    def prior(self) -> dist.MixtureSameFamily:
        """p(z) = Σ_c π_c N(z; μ_c, diag σ_c²), one event of size latent_dim."""
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.mix_logits),
            dist.Normal(self.means, self.log_scales.exp()).to_event(1),
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(*z.shape[:-1], *self.data_shape)


def model(nets: MoGPriorNets, x: torch.Tensor) -> torch.Tensor:
    """p(z) p(x | z) with a mixture-of-Gaussians prior; x observed under the plate "data"."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", nets.prior())
        likelihood = dist.Bernoulli(logits=nets.logits(z)).to_event(len(nets.data_shape))
        pyro.sample("x", likelihood, obs=x)
    return z


def guide(nets: MoGPriorNets, x: torch.Tensor) -> torch.Tensor:
    """q(z | x): a diagonal Gaussian from the encoder."""
    loc, raw_scale = nets.encoder(x).chunk(2, dim=-1)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample(
            "z", dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-4).to_event(1)
        )


# -- the same program as a registered model: config.json + load_model by name --------------------
@register_model("mog_prior_vae")
class MoGPriorVAE(PyroModule):
    """The program above as a PyroModule with ``model``/``guide`` methods (a registered model)."""

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 32, 32),
        latent_dim: int = 2,
        components: int = 3,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.nets = MoGPriorNets(data_shape, latent_dim, components, hidden)

    def model(self, x: torch.Tensor) -> torch.Tensor:
        return model(self.nets, x)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        return guide(self.nets, x)

    @torch.no_grad()
    def sample(
        self, n: int, *, seed: int | None = None, component: int | None = None, mean: bool = True
    ) -> torch.Tensor:
        """``n`` images from p(z) p(x|z) (E[x|z] when ``mean``), optionally from one component."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        nets = self.nets
        if component is None:
            c = torch.multinomial(nets.mix_logits.softmax(0), n, replacement=True, generator=g)
        else:
            c = torch.full((n,), int(component), dtype=torch.long)
        eps = torch.randn(n, nets.latent_dim, generator=g)
        z = nets.means[c] + nets.log_scales.exp()[c] * eps
        probs = nets.logits(z).sigmoid()
        return probs if mean else torch.bernoulli(probs, generator=g)


# -- the script -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", type=int, default=3, help="mixture components (default 3)")
    p.add_argument("--latent-dim", type=int, default=2, help="size of z (default 2)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the data (default 5)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 128)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/examples/custom_model"))
    p.add_argument("--smoke", action="store_true", help="tiny data and budget (for tests)")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (1 if args.smoke else 5)
    args.batch_size = args.batch_size or (32 if args.smoke else 128)
    args.hidden = 32 if args.smoke else 256
    return args


def latent_figure(nets: MoGPriorNets, x: torch.Tensor, labels: torch.Tensor, names: Sequence[str]):
    """Codes E_q[z | x] of test images (first two dimensions) and the mixture's means."""
    import matplotlib.pyplot as plt  # after pyro_gen.plots, which picks a headless backend

    with torch.no_grad():
        loc = nets.encoder(x).chunk(2, dim=-1)[0].numpy()
        means, weights = nets.means.detach().numpy(), nets.mix_logits.softmax(0).numpy()
    labels = labels.numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    dims = (0, 1) if nets.latent_dim > 1 else (0, 0)
    for k, name in enumerate(names):
        sel = labels == k
        ax.scatter(loc[sel, dims[0]], loc[sel, dims[1]], s=8, alpha=0.6, label=name)
    ax.scatter(
        means[:, dims[0]],
        means[:, dims[1]],
        s=400 * weights,
        marker="X",
        c="k",
        label="component means (size ∝ weight)",
    )
    ax.set(xlabel="z1", ylabel="z2", title="test codes and the learned mixture prior")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    figures = out / "figures"
    if args.smoke:
        ds = make_shapes(num_train=256, num_valid=64, num_test=64, size=16, seed=args.seed)
    else:
        ds = make_shapes(num_train=20000, num_valid=1000, num_test=2000, seed=args.seed)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    arch = {"latent_dim": args.latent_dim, "components": args.components, "hidden": args.hidden}
    settings = dict(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device="cpu",
        progress=False,
    )

    # 1. two callables + the module that owns their parameters
    torch.manual_seed(args.seed)
    nets = MoGPriorNets(ds.image_shape, **arch)
    model_fn, guide_fn = functools.partial(model, nets), functools.partial(guide, nets)
    trainer = Trainer(model_fn, guide_fn, module=nets, **settings)
    history = trainer.fit(train, valid)
    r1 = evaluate_elbo(model_fn, test, guide=guide_fn, module=nets, seed=args.seed).summary()
    print(
        f"[callables] {trainer.state.step} steps; test ELBO {r1['elbo']:.2f} = reconstruction "
        f"{r1['reconstruction']:.2f} − KL {r1['kl']:.2f} (MC estimate)"
    )
    save_model(nets, out / "callables")  # an unregistered module: weights (+ class name) only
    again = load_weights(MoGPriorNets(ds.image_shape, **arch), out / "callables")
    r1b = evaluate_elbo(
        functools.partial(model, again),
        test,
        guide=functools.partial(guide, again),
        module=again,
        seed=args.seed,
    ).summary()
    print(f"[callables] reloaded with load_weights: same test ELBO: {r1b['elbo'] == r1['elbo']}")

    # 2. the registered PyroModule: start from the weights above, train on in a run folder
    mog = MoGPriorVAE(data_shape=ds.image_shape, **arch)
    mog.nets.load_state_dict(nets.state_dict())
    run = out / "run"
    Trainer(mog, run_dir=run, **{**settings, "epochs": 1, "max_steps": None}).fit(train, valid)
    loaded = load_model(run)  # rebuilt by name from config.json
    assert isinstance(loaded, MoGPriorVAE)
    r2 = evaluate_elbo(mog, test, seed=args.seed).summary()
    r2b = evaluate_elbo(loaded, test, seed=args.seed).summary()
    same = r2["elbo"] == r2b["elbo"] and r1b["elbo"] == r1["elbo"]
    print(
        f"[registered] test ELBO {r2['elbo']:.2f} = reconstruction {r2['reconstruction']:.2f} "
        f"− KL {r2['kl']:.2f}; after load_model: same test ELBO: {r2['elbo'] == r2b['elbo']}"
    )
    weights = loaded.nets.mix_logits.softmax(0).tolist()
    print("learned mixture weights: " + ", ".join(f"{w:.3f}" for w in weights))

    rows = torch.cat(
        [loaded.sample(8, seed=args.seed + k, component=k) for k in range(args.components)]
    )
    written = [
        plots.save_figure(
            plots.image_grid(rows, ncols=8, title="E[x|z], z from component 1, 2, ... (rows)"),
            figures / "samples_per_component.png",
        ),
        plots.save_figure(
            plots.image_grid(loaded.sample(64, seed=args.seed, mean=False), title="x ~ p(x)"),
            figures / "samples.png",
        ),
        plots.save_figure(
            latent_figure(loaded.nets, test, ds.labels["test"], ds.label_names),
            figures / "latent_codes.png",
        ),
        plots.save_figure(
            plots.training_curves(history, "MoG-prior VAE"), figures / "training_curves.png"
        ),
    ]
    write_json(
        out / "summary.json",
        {"callables": r1, "registered": r2, "mixture_weights": weights, "reload_identical": same},
    )
    for path in [
        out / "callables" / "model.safetensors",
        run / "config.json",
        *written,
        out / "summary.json",
    ]:
        print(f"wrote {path}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
