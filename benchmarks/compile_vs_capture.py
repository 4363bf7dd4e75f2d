"""Captured steps against ``torch.compile`` of the same SVI objective (784-500-500-50 VAE).

Each variant runs ``SVIStep``'s objective with Adam for ``--steps`` steps after a warm-up
(compilation happens there; its time is printed as "first step"), one intra-op thread:

    python benchmarks/compile_vs_capture.py --batch-size 16
    python benchmarks/compile_vs_capture.py --batch-size 128 --variants eager,capture

Variants: eager (Pyro every step), capture (pyro_gen's CapturedLoss), compile:BACKEND
(``torch.compile(step.objective, backend=BACKEND)``, e.g. aot_eager, inductor). Prints steps/s
and the ratio to eager.
"""

from __future__ import annotations

import argparse
import time
import warnings

import pyro
import torch

from pyro_gen.infer.step import SVIStep
from pyro_gen.models import VAE, as_pair

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--steps", type=int, default=150)
p.add_argument("--variants", default="eager,capture,compile:aot_eager,compile:inductor")
args = p.parse_args()
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
B = args.batch_size
x = torch.bernoulli(torch.full((2048, 784), 0.3), generator=torch.Generator().manual_seed(0))


def run(variant: str, steps: int, warm: int = 20) -> tuple[float, float]:
    pyro.set_rng_seed(0)
    vae = VAE(data_shape=(784,), latent_dim=50, hidden=(500, 500))
    step = SVIStep(as_pair(vae), capture=(variant == "capture"))
    step.init({"x": x[:B]}, num_data=2048, total_steps=steps)
    fn = step.loss
    if variant.startswith("compile"):
        fn = torch.compile(step.objective, backend=variant.split(":")[1])
    opt = step.optimizer
    t0 = time.perf_counter()
    first = 0.0
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for i in range(steps + warm):
            if i == warm:
                t0 = time.perf_counter()
            if i == 0:
                tc = time.perf_counter()
            start = (i * B) % 2048
            loss = fn(x[start : start + B])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i == 0:
                first = time.perf_counter() - tc
    return steps / (time.perf_counter() - t0), first


print(f"# batch {B}, {args.steps} steps after 20 warm-up steps, 1 thread")
base = None
for v in args.variants.split(","):
    try:
        sps, first = run(v, args.steps)
    except Exception as e:  # a backend that cannot compile the program
        print(f"{v:20s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
        continue
    base = base or (sps if v == "eager" else None)
    ratio = f"{sps / base:.2f}x eager" if base else ""
    print(f"{v:20s} {sps:7.1f} steps/s  {ratio:12s} first step {first:.2f} s", flush=True)
