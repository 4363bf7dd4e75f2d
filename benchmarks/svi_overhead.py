"""SVI step overhead: pyro_gen's Trainer versus the same VAE written in plain PyTorch.

A 784-500-500-50 MLP VAE with a Bernoulli likelihood. The hand-written loop uses the *same*
``nn`` modules (``VAE(...).encoder`` / ``.decoder``), the reparameterised Gaussian, the analytic KL,
``binary_cross_entropy_with_logits`` and Adam; data resident on the device and index sampling
(one ``randperm`` per epoch), no host synchronisation inside the loop. The pyro_gen side is the
real ``Trainer.fit`` loop (``max_steps``), one variant per ELBO (``trace``, ``meanfield``, ``jit``).

Steps/s are measured after ``warmup`` steps (so JIT compilation and allocator warm-up are left
out): the Trainer's own history rows carry the elapsed time at each ``log_every`` step, and the
row at the end of the warm-up and the last row bracket the timed steps. Variants are interleaved
(the order rotates each repeat) and the table shows medians over repeats; each ratio is the
median of the per-repeat ratios against the plain-PyTorch loop of the same repeat.

    python benchmarks/svi_overhead.py --quick                    # smoke run (~1 min on 2 cores)
    python benchmarks/svi_overhead.py --threads 2 --out bench/svi  # -> svi.json + svi.png
    python benchmarks/svi_overhead.py --device cuda --bf16
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import pyro
import torch
import torch.nn.functional as F

import pyro_gen.infer.trainer as trainer_module
from pyro_gen.infer import Trainer
from pyro_gen.io import write_json
from pyro_gen.models import VAE
from pyro_gen.plots import save_figure

__all__ = [
    "make_vae",
    "torch_steps_per_second",
    "trainer_steps_per_second",
    "measure",
    "run",
    "table",
    "figure",
    "main",
]

ARCH = {"data_shape": (784,), "latent_dim": 50, "hidden": (500, 500)}
BATCH_SIZES = (16, 128, 1024)
ELBOS = ("trace", "meanfield", "jit")


def make_vae(seed: int = 0) -> VAE:
    """The benchmark's model: 784-500-500-50 MLP VAE, Bernoulli likelihood, same init per seed."""
    torch.manual_seed(seed)
    return VAE(**ARCH, likelihood="bernoulli")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Stands in for the ``time`` module inside the trainer so its history rows use ``clock``."""

    def __init__(self, clock) -> None:
        self.perf_counter = clock

    def __getattr__(self, name: str):
        return getattr(time, name)


def _autocast(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def torch_steps_per_second(
    data: torch.Tensor,
    batch_size: int,
    steps: int,
    warmup: int,
    *,
    seed: int = 0,
    bf16: bool = False,
    clock: str = "wall",
    fused: bool = False,
) -> float:
    """Steps/s of a hand-written PyTorch VAE loop (loss + Adam) on ``data`` (on its device)."""
    device = data.device
    vae = make_vae(seed).to(device)
    enc, dec = vae.encoder, vae.decoder
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    n = data.shape[0]
    per_epoch = n // batch_size
    g = torch.Generator().manual_seed(seed)
    running = torch.zeros((), device=device)
    step, total = 0, warmup + steps
    now = CLOCKS[clock]
    t0 = now()
    while step < total:
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(per_epoch):
            if step == warmup:
                _sync(device)
                t0 = now()
            if step >= total:
                break
            xb = data.index_select(0, perm[i * batch_size : (i + 1) * batch_size])
            with _autocast(device, bf16):
                loc, scale = enc(xb)
                z = loc + scale * torch.randn_like(loc)
                logits = dec(z)
                rec = F.binary_cross_entropy_with_logits(logits.float(), xb, reduction="sum")
                kl = 0.5 * (loc.square() + scale.square() - 1).sum() - scale.log().sum()
                loss = (rec + kl.float()) / batch_size
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach()
            step += 1
    _sync(device)
    if not math.isfinite(float(running)):
        raise RuntimeError("the plain-PyTorch loop diverged")
    return steps / (now() - t0)


def trainer_steps_per_second(
    data: torch.Tensor,
    batch_size: int,
    steps: int,
    warmup: int,
    *,
    elbo: str = "trace",
    seed: int = 0,
    bf16: bool = False,
    clock: str = "wall",
    **config,
) -> float:
    """Steps/s of ``Trainer.fit`` (``max_steps = warmup + steps``), timed from its history rows.

    ``clock="cpu"`` makes the trainer's clock the process CPU time (``time.process_time``)."""
    device = data.device
    vae = make_vae(seed)
    trainer = Trainer(
        vae,
        batch_size=batch_size,
        max_steps=warmup + steps,
        log_every=warmup,
        elbo=elbo,
        device=str(device),
        seed=seed,
        progress=False,
        **config,
    )
    with _autocast(device, bf16), mock.patch.object(trainer_module, "time", _Clock(CLOCKS[clock])):
        history = trainer.fit(data)
    at = {row["step"]: row["elapsed"] for row in history}
    return steps / (at[warmup + steps] - at[warmup])


def measure(spec: str, data: torch.Tensor, batch_size: int, steps: int, warmup: int, **opts):
    """Steps/s of one variant: ``torch`` (hand-written) or an ELBO name (the Trainer), each
    optionally with ``+fused`` (the fused Adam kernel), e.g. ``torch+fused``, ``trace+fused``;
    ``+eager`` runs the Trainer without the captured graph (``capture="off"``)."""
    name, *flags = spec.split("+")
    unknown = set(flags) - {"fused", "eager"}
    if unknown:
        raise ValueError(f"unknown variant flag(s) {sorted(unknown)} in {spec!r}")
    fused = "fused" in flags
    if name == "torch":
        return torch_steps_per_second(data, batch_size, steps, warmup, fused=fused, **opts)
    if "eager" in flags:
        if name == "torch":
            raise ValueError("'+eager' is a Trainer option; the plain loop is always eager")
        opts["capture"] = "off"
    if fused:
        opts["fused"] = True
    return trainer_steps_per_second(data, batch_size, steps, warmup, elbo=name, **opts)


def _plan(batch_size: int, quick: bool, budget: float, step_time: float) -> tuple[int, int]:
    """(timed steps, warm-up steps) so that one measurement takes about ``budget`` seconds."""
    lo, hi = (5, 60) if quick else (20, 2000)
    steps = int(min(hi, max(lo, budget / max(step_time, 1e-6))))
    return steps, max(3, min(50, steps // 5))


def run(
    batch_sizes=BATCH_SIZES,
    elbos=ELBOS,
    *,
    device: str = "cpu",
    repeats: int = 3,
    budget: float = 2.0,
    quick: bool = False,
    num_data: int = 16384,
    bf16: bool = False,
    clock: str = "wall",
    seed: int = 0,
    log=print,
) -> dict:
    """Measure every variant at every batch size; return a JSON-able dict of results."""
    dev = torch.device(device)
    pyro.enable_validation(False)
    g = torch.Generator().manual_seed(seed)
    data = torch.bernoulli(torch.full((num_data, 784), 0.13), generator=g).to(dev)
    variants = ["torch", *elbos]
    opts = {"seed": seed, "bf16": bf16, "clock": clock}
    results = []
    for b in batch_sizes:
        # calibrate the step count on the plain loop
        probe = torch_steps_per_second(data, b, 5, 3, **opts)
        steps, warmup = _plan(b, quick, budget, 1.0 / probe)
        samples: dict[str, list[float]] = {v: [] for v in variants}
        errors: dict[str, str] = {}
        for r in range(repeats):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                if v in errors:
                    continue
                try:
                    sps = measure(v, data, b, steps, warmup, **opts)
                except Exception as e:  # a broken variant must not hide the others' numbers
                    errors[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    log(f"# {v} at batch {b} failed: {errors[v]}")
                    continue
                samples[v].append(sps)
        row = {"batch_size": b, "steps": steps, "warmup": warmup, "variants": {}}
        for v in variants:
            if v in errors:
                row["variants"][v] = {"error": errors[v], "median": math.nan, "ratio": math.nan}
                continue
            ratios = [s / t for s, t in zip(samples[v], samples["torch"])]
            row["variants"][v] = {
                "steps_per_second": samples[v],
                "median": statistics.median(samples[v]),
                "ratio": statistics.median(ratios),
            }
            fused_base = samples.get("torch+fused")
            if v.endswith("+fused") and v != "torch+fused" and fused_base and v not in errors:
                # the same optimiser on both sides: against the plain loop with fused Adam
                same = [s / t for s, t in zip(samples[v], fused_base)]
                row["variants"][v]["ratio_to_torch_fused"] = statistics.median(same)
        results.append(row)
        log(_format_row(row, variants))
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
    return {
        "benchmark": "svi_overhead",
        "architecture": "784-500-500-50 MLP VAE, Bernoulli",
        "device": str(dev),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "clock": clock,
        "bf16": bf16,
        "repeats": repeats,
        "versions": {"torch": torch.__version__, "pyro": pyro.__version__, "python": sys.version},
        "variants": variants,
        "results": results,
    }


def _header(variants) -> str:
    cols = [f"{'batch':>6}", f"{'torch steps/s':>14}"]
    cols += [f"{v + ' steps/s (ratio)':>26}" for v in variants[1:]]
    return " ".join(cols)


def _format_row(row: dict, variants) -> str:
    vs = row["variants"]
    cols = [f"{row['batch_size']:>6}", f"{vs['torch']['median']:>14.1f}"]
    cols += [f"{vs[v]['median']:>17.1f} ({vs[v]['ratio']:.2f})" for v in variants[1:]]
    same = [
        f"{v} / torch+fused = {vs[v]['ratio_to_torch_fused']:.2f}"
        for v in variants
        if "ratio_to_torch_fused" in vs.get(v, {})
    ]
    return " ".join(cols) + (f"   [{'; '.join(same)}]" if same else "")


def table(result: dict) -> str:
    """The result as a fixed-width text table."""
    variants = result["variants"]
    lines = [_header(variants)] + [_format_row(r, variants) for r in result["results"]]
    return "\n".join(lines)


def figure(result: dict):
    """Steps/s against batch size (log-log) and the ratio to plain PyTorch."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    bs = [r["batch_size"] for r in result["results"]]
    for i, v in enumerate(result["variants"]):
        style = {"color": f"C{i}", "label": v, "ls": "--" if v.startswith("torch") else "-"}
        ax.plot(bs, [r["variants"][v]["median"] for r in result["results"]], "o", **style)
        if v != "torch":
            ax2.plot(bs, [r["variants"][v]["ratio"] for r in result["results"]], "o", **style)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="steps/s")
    ax.set_title(
        f"SVI steps/s ({result['device']}, {result['threads']} thread(s), {result['clock']} clock)"
    )
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set(xscale="log", xlabel="batch size", ylabel="ratio to plain PyTorch")
    ax2.set_title("ratio to the hand-written loop (default Adam)")
    for a in (ax, ax2):
        a.set_xticks(bs, [str(b) for b in bs])
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, one repeat")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument(
        "--elbos",
        default=",".join(ELBOS),
        help="variants beside the plain loop: ELBO names for the Trainer (trace, meanfield, jit, "
        "jit_meanfield), '+fused' for the fused Adam kernel, '+eager' for the Trainer without "
        "its captured graph, 'torch+fused' for the plain loop with fused Adam (default "
        "trace,meanfield,jit)",
    )
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 5, quick 1)")
    p.add_argument("--budget", type=float, default=None, help="seconds per measurement")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast around both loops")
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall (default) or cpu: process CPU time, steadier on a shared machine",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.png")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    repeats = a.repeats or (1 if a.quick else 5)
    budget = a.budget or (0.3 if a.quick else 2.0)
    batch_sizes = [int(b) for b in a.batch_sizes.split(",") if b]
    elbos = [e for e in a.elbos.split(",") if e]
    variants = ["torch", *elbos]
    print(
        f"# svi_overhead on {a.device}, {torch.get_num_threads()} threads, {repeats} repeats, "
        f"{a.clock} clock; ratio = trainer / plain PyTorch (median of per-repeat ratios)"
    )
    print(_header(variants))
    result = run(
        batch_sizes,
        elbos,
        device=a.device,
        repeats=repeats,
        budget=budget,
        quick=a.quick,
        bf16=a.bf16,
        clock=a.clock,
        seed=a.seed,
    )
    if a.out is not None:
        write_json(a.out.with_suffix(".json"), result)
        save_figure(figure(result), a.out.with_suffix(".png"))
        print(f"wrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
