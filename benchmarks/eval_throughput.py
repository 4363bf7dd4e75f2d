"""Evaluation throughput: importance-sampled log p(x) with K particles over the MNIST test set.

The model is the 784-500-500-50 MLP Bernoulli VAE of ``svi_overhead.py`` (untrained, or a run
folder's with ``--run``); the data are the 10,000 statically binarized MNIST test images from
``--data-dir`` (``binarized_mnist.npz``), or random binary images of the same shape when the file
is absent. Three measurements, each on a fresh process on CPU so that its peak resident memory
(``VmHWM``, reset after loading) is its own (CUDA: ``torch.cuda.max_memory_allocated``):

1. the headline: K = ``--num-samples`` (5000) over N = ``--num-images`` (10,000) images;
2. growth with K: K in ``--k-grid`` on ``--grid-images`` images (time and peak memory);
3. growth with the chunk: ``max_rows`` (datapoints x particles per model call) in
   ``--rows-grid`` at K = the largest of the K grid.

Printed as tables; ``--out OUT`` writes ``OUT.json`` and ``OUT.png`` (time and memory against K
and against the chunk). The full headline is long on a CPU (about 5·10^7 model rows); the tables
also give rows/s so the time for other N and K follows.

    python benchmarks/eval_throughput.py --quick                      # smoke (~1 min)
    python benchmarks/eval_throughput.py --data-dir ../shared/data --out bench/eval
    python benchmarks/eval_throughput.py --device cuda --num-samples 5000 --out bench/eval-gpu
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch

from pyro_gen.io import write_json
from pyro_gen.plots import save_figure

__all__ = ["load_images", "build_model", "measure", "run", "main"]

ARCH = {"data_shape": (1, 28, 28), "latent_dim": 50, "hidden": (500, 500)}


def load_images(data_dir: str | None, n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` binarized MNIST test images (a random subset when n < 10,000; the file is sorted
    by class) or, without the file, random binary images; returns (images, source)."""
    g = torch.Generator().manual_seed(seed)
    try:
        from pyro_gen.data import load_binarized_mnist

        test = load_binarized_mnist(data_dir).split("test")
        if n < test.shape[0]:
            test = test[torch.randperm(test.shape[0], generator=g)[:n]]
        return test[:n].contiguous(), "binarized_mnist test"
    except (FileNotFoundError, OSError, ValueError):
        return torch.bernoulli(torch.full((n, *ARCH["data_shape"]), 0.13), generator=g), "random"


def build_model(run: str | None, device: str):
    """The benchmark's VAE (seed 0) or the model of a run folder, in eval mode on ``device``."""
    if run:
        from pyro_gen.models import load_model

        return load_model(run, device=device).eval()
    from pyro_gen.models import VAE

    torch.manual_seed(0)
    return VAE(**ARCH).to(device).eval()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0), so that the peak read
    afterwards is this measurement's and not the data loading's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _log_likelihood(model, x, num_samples: int, batch_size: int, max_rows: int) -> torch.Tensor:
    try:
        from pyro_gen.evaluate.log_likelihood import log_likelihood
    except ImportError:  # the fallback: the same estimator from pointwise_terms
        from pyro_gen.evaluate.terms import pointwise_terms

        out = []
        with torch.no_grad(), pyro.validation_enabled(False):
            for i in range(0, x.shape[0], batch_size):
                xs = x[i : i + batch_size].to(next(model.parameters()).device)
                lw = pointwise_terms(
                    model.model, model.guide, xs, num_particles=num_samples, max_rows=max_rows
                ).log_weight
                out.append(torch.logsumexp(lw.double(), 0) - torch.log(torch.tensor(num_samples)))
        return torch.cat(out)
    return log_likelihood(
        model, x, num_samples=num_samples, batch_size=batch_size, max_rows=max_rows, seed=0
    )


def measure(spec: dict) -> dict:
    """One measurement in this process: ``spec`` has num_images, num_samples, batch_size,
    max_rows, device, data_dir, run, threads. Returns times, rows/s, memory and mean log p(x)."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    pyro.enable_validation(False)
    device = torch.device(spec["device"])
    x, source = load_images(spec.get("data_dir"), int(spec["num_images"]))
    model = build_model(spec.get("run"), str(device))
    # warm-up on a few images (allocator, kernels) before the clock and the memory baseline
    _log_likelihood(model, x[:2], 2, 2, 64)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    gc.collect()
    reset = _reset_peak_rss()
    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    log_px = _log_likelihood(
        model, x, int(spec["num_samples"]), int(spec["batch_size"]), int(spec["max_rows"])
    ).cpu()
    wall = time.perf_counter() - t0
    out = {
        **spec,
        "source": source,
        "wall_seconds": wall,
        "rows": int(spec["num_images"]) * int(spec["num_samples"]),
        "rows_per_second": int(spec["num_images"]) * int(spec["num_samples"]) / wall,
        "images_per_second": int(spec["num_images"]) / wall,
        "mean_log_px": float(log_px.mean()),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
        out["memory"] = "torch.cuda.max_memory_allocated above the model"
    else:
        peak = _peak_rss_bytes()
        out["peak_bytes"] = max(0, peak - rss_before)
        out["peak_rss_bytes"] = peak
        out["memory"] = (
            "peak RSS (VmHWM, reset after set-up) above the RSS after set-up"
            if reset
            else "peak RSS of the process (ru_maxrss, includes set-up) above the RSS after set-up"
        )
    return out


def _measure_isolated(spec: dict) -> dict:
    """``measure`` in a fresh Python process (CPU: the peak RSS is then this measurement's)."""
    if torch.device(spec["device"]).type == "cuda":
        return measure(spec)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(b: float) -> str:
    return f"{b / 2**20:9.1f}"


def _line(r: dict) -> str:
    return (
        f"{r['num_images']:>7} {r['num_samples']:>6} {r['batch_size']:>6} {r['max_rows']:>8} "
        f"{r['wall_seconds']:>9.2f} {r['rows_per_second']:>10.0f} {r['images_per_second']:>8.2f} "
        f"{_mib(r['peak_bytes'])} {r['mean_log_px']:>10.2f}"
    )


HEADER = "      N      K  batch max_rows    time_s     rows/s  images/s  peakMiB  mean_logpx"


def run(args: argparse.Namespace, log=print) -> dict:
    base = {
        "device": args.device,
        "data_dir": args.data_dir,
        "run": args.run,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "max_rows": args.max_rows,
    }
    result: dict = {
        "benchmark": "eval_throughput",
        "architecture": "784-500-500-50 MLP VAE, Bernoulli",
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "pyro": pyro.__version__},
    }
    k_grid = [int(k) for k in args.k_grid.split(",") if k]
    rows_grid = [int(r) for r in args.rows_grid.split(",") if r]
    log("# growth with K")
    log(HEADER)
    result["k_grid"] = []
    for k in k_grid:
        r = _measure_isolated({**base, "num_images": args.grid_images, "num_samples": k})
        result["k_grid"].append(r)
        log(_line(r))
    log(f"# growth with the chunk (max_rows), K = {max(k_grid)}")
    log(HEADER)
    result["rows_grid"] = []
    for rows in rows_grid:
        spec = {**base, "num_images": args.grid_images, "num_samples": max(k_grid)}
        r = _measure_isolated({**spec, "max_rows": rows})
        result["rows_grid"].append(r)
        log(_line(r))
    if not args.skip_headline:
        log(f"# headline: K = {args.num_samples} over N = {args.num_images}")
        log(HEADER)
        r = _measure_isolated(
            {**base, "num_images": args.num_images, "num_samples": args.num_samples}
        )
        result["headline"] = r
        log(_line(r))
    source = (result.get("headline") or result["k_grid"][0])["source"]
    result["source"] = source
    log(f"# data: {source}; device {result['device']} ({result['device_name']})")
    return result


def figure(result: dict):
    """Time and peak memory against K, and against the chunk size."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xkey, xlabel in (
        (axes[0], "k_grid", "num_samples", "K (particles per image)"),
        (axes[1], "rows_grid", "max_rows", "max_rows (datapoints x particles per call)"),
    ):
        rows = result.get(key) or []
        if not rows:
            continue
        xs = [r[xkey] for r in rows]
        ax.plot(xs, [r["wall_seconds"] for r in rows], "o-", color="C0", label="time")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="seconds")
        ax.set_xticks(xs, [str(v) for v in xs], minor=False)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"log p(x) on {rows[0]['num_images']} images ({result['device']})")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["peak_bytes"] / 2**20 for r in rows], "s--", color="C1", label="peak MiB")
        ax2.set_ylabel("peak memory (MiB)")
        ax.grid(alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small N and K")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--data-dir", default=None, help="folder with binarized_mnist.npz")
    p.add_argument("--run", default=None, help="evaluate this run folder's model instead")
    p.add_argument("--num-samples", type=int, default=None, help="K of the headline (5000)")
    p.add_argument("--num-images", type=int, default=None, help="N of the headline (10000)")
    p.add_argument("--grid-images", type=int, default=None, help="N of the grids (100)")
    p.add_argument("--k-grid", default=None, help="K values (default 50,500,5000)")
    p.add_argument("--rows-grid", default=None, help="max_rows values (4096,32768,131072)")
    p.add_argument("--batch-size", type=int, default=1000, help="datapoints per chunk")
    p.add_argument("--max-rows", type=int, default=32768, help="rows per model call")
    p.add_argument("--skip-headline", action="store_true", help="grids only")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.png")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child is not None:
        print(json.dumps(measure(json.loads(a._child))))
        return 0
    q = a.quick
    a.num_samples = a.num_samples or (200 if q else 5000)
    a.num_images = a.num_images or (50 if q else 10000)
    a.grid_images = a.grid_images or (20 if q else 100)
    a.k_grid = a.k_grid or ("10,100,1000" if q else "50,500,5000")
    a.rows_grid = a.rows_grid or ("2048,8192,32768" if q else "4096,32768,131072")
    result = run(a)
    if a.out is not None:
        write_json(a.out.with_suffix(".json"), result)
        save_figure(figure(result), a.out.with_suffix(".png"))
        print(f"wrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
