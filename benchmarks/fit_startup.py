"""A fit's fixed cost: ``Trainer.fit`` for k steps versus a hand-written PyTorch loop for k steps.

The difference of the two wall times (same VAE, same data, same optimiser; the model is built
outside both timers) is what the trainer adds once per fit: data checks, the pair check, the
step's inspection of the program, optimiser set-up and, with captured steps, the capture.

    python benchmarks/fit_startup.py                    # batch 16 and 128, 7 repeats
    python benchmarks/fit_startup.py --quick

Prints the median fixed cost in seconds per variant (capture auto and off).
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
import torch.nn.functional as F
from _common import add_threads_argument, set_threads

from pyro_gen.infer import Trainer
from pyro_gen.models import VAE


def hand_loop(vae: VAE, x: torch.Tensor, batch: int, steps: int) -> None:
    """The same objective in plain PyTorch (single-sample reparameterised ELBO, Adam)."""
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        xb = x[torch.randint(0, x.shape[0], (batch,), generator=g)]
        loc, scale = vae.encoder(xb)
        z = loc + scale * torch.randn_like(loc)
        logits = vae.decoder(z)
        rec = -F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
        loss = -(rec - kl) / batch
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    add_threads_argument(p)
    args = p.parse_args()
    set_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    x = torch.bernoulli(torch.full((4096, 784), 0.3), generator=torch.Generator().manual_seed(0))
    print(f"# fit fixed cost over a hand-written loop, {args.steps} steps, {repeats} repeats")
    print(" batch  capture  fixed cost (s, median)  [min, max]")
    for batch in (16, 128):
        for capture in ("auto", "off"):
            costs = []
            for r in range(-1, repeats):  # repeat -1 warms up (first-call costs) and is dropped
                pyro.set_rng_seed(max(r, 0))
                vae = VAE(data_shape=(784,), latent_dim=50, hidden=(500, 500))
                t = time.perf_counter()
                hand_loop(vae, x, batch, args.steps)
                hand = time.perf_counter() - t
                vae = VAE(data_shape=(784,), latent_dim=50, hidden=(500, 500))
                t = time.perf_counter()
                Trainer(
                    vae, batch_size=batch, max_steps=args.steps, capture=capture, progress=False
                ).fit(x)
                if r >= 0:
                    costs.append(time.perf_counter() - t - hand)
            print(
                f" {batch:5d}  {capture:7s}  {statistics.median(costs):8.3f}"
                f"               [{min(costs):.3f}, {max(costs):.3f}]"
            )


if __name__ == "__main__":
    main()
