"""``pyro-gen``: train, sample, reconstruct and evaluate generative models from the shell.

Each verb reads or writes a run folder (``config.json``, ``model.safetensors``, ``history.csv``,
``figures/*.png``, ``summary.json``). The CLI is thin: it parses, calls the library, writes files.

    pyro-gen train                          # VAE on the embedded shapes data -> runs/vae-shapes
    pyro-gen train --data binarized_mnist --data-dir ../shared/data --epochs 20
    pyro-gen sample runs/vae-shapes --num 64
    pyro-gen evaluate runs/vae-shapes
"""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_gen.data import DATASETS, Dataset, load_dataset
from pyro_gen.device import resolve_device
from pyro_gen.errors import ConfigError, PyroGenError, did_you_mean
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.infer import (
    BETA_SCHEDULES,
    CAPTURE_MODES,
    ELBOS,
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainConfig,
    Trainer,
)
from pyro_gen.infer.trainer import parse_duration
from pyro_gen.io import read_json, write_json
from pyro_gen.models import LIKELIHOODS, MODELS, get_model_class
from pyro_gen.models.persistence import load_model, read_config
from pyro_gen.models.vae import NETWORKS

__all__ = ["main", "build_parser"]

# Settings of `train`, by destination: where they go and their defaults. The config file uses
# the same names (dashes or underscores).
MODEL_ARGS = (
    "latent_dim",
    "likelihood",
    "network",
    "hidden",
    "channels",
    "beta",
    "scale",
    "learn_scale",
)
DATA_ARGS = ("data", "data_dir", "num_train", "num_valid", "num_test", "image_size", "binarize")
TRAIN_ARGS = tuple(TrainConfig.__dataclass_fields__)
DEFAULTS: dict[str, Any] = {
    "model": "vae",
    "data": "shapes",
    "data_dir": None,
    "num_train": None,
    "num_valid": None,
    "num_test": None,
    "image_size": None,
    "binarize": None,
    "latent_dim": 10,
    "likelihood": "bernoulli",
    "network": "mlp",
    "hidden": [512, 256],
    "channels": [32, 64, 64],
    "beta": 1.0,
    "scale": 0.1,
    "learn_scale": False,
    "model_arg": [],
    **{k: v.default for k, v in TrainConfig.__dataclass_fields__.items()},
    "epochs": 30,
    "lr": 2e-3,
    "out": None,
    "resume": False,
    "log_every": 20,
    "devices": None,
    "num_nodes": None,
    "strategy": None,
    "accelerator": None,
}
DISTRIBUTED_ARGS = ("devices", "num_nodes", "strategy", "accelerator")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h`` or ``2d``."""
    try:
        return parse_duration(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-gen",
        description="Deep generative models as Pyro model/guide pairs: train, sample, "
        "reconstruct, evaluate. Every verb works on a run folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  pyro-gen train\n  pyro-gen train --data binarized_mnist --data-dir "
        "../shared/data --epochs 20\n  pyro-gen evaluate runs/vae-shapes\n\n"
        "Run 'pyro-gen VERB --help' for the options of a verb.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    S = argparse.SUPPRESS  # unset options stay absent, so config files and defaults can fill them

    t = verbs.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a model with SVI and write config.json, weights, checkpoints, "
        "history.csv, figures and summary.json to the run folder (--out).",
        argument_default=S,
    )
    g = t.add_argument_group("run")
    g.add_argument("--config", type=Path, help="JSON (or TOML) file of settings; flags override it")
    g.add_argument(
        "--out", type=Path, help="run folder (default: runs/MODEL-DATA, numbered if taken)"
    )
    g.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    g.add_argument("--device", help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")
    g.add_argument("--seed", type=int, help="seed of every random number (default 0)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g = t.add_argument_group("data")
    g.add_argument(
        "--data", choices=DATASETS, help="data set (default: shapes, generated, no download)"
    )
    g.add_argument("--data-dir", help="folder with the data files (or set PYRO_GEN_DATA_DIR)")
    g.add_argument("--num-train", type=int, help="shapes: training images (default 20000)")
    g.add_argument("--num-valid", type=int, help="shapes: validation images (default 2000)")
    g.add_argument("--num-test", type=int, help="shapes: test images (default 2000)")
    g.add_argument("--image-size", type=int, help="shapes: image side in pixels (default 32)")
    g.add_argument(
        "--binarize", choices=("dynamic", "static", "none"), help="mnist (IDX): binarization"
    )
    g = t.add_argument_group("model")
    g.add_argument("--model", help=f"registered model name (known: {', '.join(sorted(MODELS))})")
    g.add_argument("--latent-dim", type=int, help="size of z (default 10)")
    g.add_argument("--likelihood", choices=sorted(LIKELIHOODS), help="p(x|z) (default bernoulli)")
    g.add_argument("--network", choices=NETWORKS, help="encoder/decoder kind (default mlp)")
    g.add_argument("--hidden", type=_int_list, help="MLP widths, e.g. 512,256")
    g.add_argument("--channels", type=_int_list, help="conv channels, e.g. 32,64,64")
    g.add_argument("--beta", type=float, help="KL weight: 0 autoencoder, <1, 1 VAE, >1 (default 1)")
    g.add_argument("--scale", type=float, help="σ of a Gaussian likelihood (default 0.1)")
    g.add_argument("--learn-scale", action="store_true", help="learn σ per pixel (Gaussian)")
    g.add_argument(
        "--model-arg",
        type=_key_value,
        action="append",
        help="any other constructor argument as KEY=JSON_VALUE (repeatable)",
    )
    g = t.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="passes over the training data (default 30)")
    g.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    g.add_argument(
        "--max-time",
        type=_duration,
        help="wall-clock budget (600, 90s, 10m, 1.5h): training stops there with a checkpoint; "
        "counted over resumes",
    )
    g.add_argument("--batch-size", type=int, help="minibatch size (default 128)")
    g.add_argument("--lr", type=float, help="learning rate (default 2e-3)")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="torch optimiser (default adam)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="learning-rate schedule")
    g.add_argument(
        "--elbo",
        choices=sorted(ELBOS),
        help="SVI objective (default trace): trace = Trace_ELBO (Monte-Carlo KL); meanfield = "
        "analytic KL where it exists; enum = TraceEnum_ELBO, sums out sites marked with "
        "config_enumerate; jit, jit_meanfield, jit_enum = the same compiled with Pyro's JIT "
        "(fixed shapes, constant β)",
    )
    g.add_argument("--num-particles", type=int, help="ELBO particles per datapoint (default 1)")
    g.add_argument("--beta-schedule", choices=BETA_SCHEDULES, help="β per step (default constant)")
    g.add_argument("--warmup-steps", type=int, help="steps of the linear β warm-up (default 1000)")
    g.add_argument("--clip-norm", type=float, help="clip the gradient norm to this value")
    g.add_argument(
        "--early-stopping", type=int, help="stop after N epochs without a better validation ELBO"
    )
    g.add_argument(
        "--checkpoint-every", type=int, help="steps between checkpoints (default: each epoch)"
    )
    g.add_argument(
        "--max-bad-batches", type=int, help="skip up to N non-finite batches before stopping"
    )
    g.add_argument(
        "--fused", action="store_true", help="fused optimiser kernel (adam/adamw/sgd; faster)"
    )
    g.add_argument(
        "--capture",
        choices=CAPTURE_MODES,
        help="replay each step's loss from a captured graph of its tensor operations: the same "
        "numbers without Pyro's Python per step (auto, the default: pyro_gen's models; off)",
    )
    g = t.add_argument_group(
        "distributed (PyTorch Lightning, optional: pip install 'pyro-gen[lightning]')",
        "Any of these trains with Lightning DDP instead of the single-process trainer. "
        "--batch-size is per process. Multi-node: run the same command on every node with "
        "MASTER_ADDR, MASTER_PORT and NODE_RANK set (or under SLURM / torchrun).",
    )
    g.add_argument("--devices", help="processes (GPUs, or CPU processes) per node, or 'auto'")
    g.add_argument("--num-nodes", type=int, help="machines taking part (default 1)")
    g.add_argument("--strategy", help="Lightning strategy (default ddp)")
    g.add_argument(
        "--accelerator", help="Lightning accelerator: auto, cpu, gpu (default from --device)"
    )

    def run_verb(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help, description=description)
        p.add_argument("run", type=Path, help="run folder written by 'pyro-gen train'")
        p.add_argument("--device", default="cpu", help="device to run on (default cpu)")
        p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
        return p

    p = run_verb(
        "sample",
        "draw new data from the model's prior",
        "Sample x ~ p(z) p(x|z); writes figures/samples.png.",
    )
    p.add_argument("--num", type=int, default=64, help="how many samples (default 64)")
    p.add_argument("--mean", action="store_true", help="show E[x|z] instead of a draw of x")
    p = run_verb(
        "reconstruct",
        "encode and decode test data",
        "Reconstruct test images; writes figures/reconstructions.png.",
    )
    p.add_argument("--num", type=int, default=20, help="how many images (default 20)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p = run_verb(
        "evaluate",
        "test ELBO = reconstruction − KL; with --num-samples: log p(x), gap, k̂",
        "Evaluate the ELBO = reconstruction − KL on a split (summary.json). With --num-samples K "
        "also the importance-sampled log p(x), the gap log p(x) − ELBO, KL per dimension, active "
        "units, ESS and PSIS k̂ (eval/diagnostics.json, eval/inference_data.nc, figures/).",
    )
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument(
        "--num-particles", type=int, default=1, help="Monte-Carlo draws per datapoint (default 1)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate on a random subset of N datapoints (drawn with --seed)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        metavar="K",
        help="importance samples per datapoint: also estimate log p(x) and write the full "
        "diagnostics (eval/diagnostics.json, eval/inference_data.nc, figures/)",
    )
    p.add_argument(
        "--points", type=int, default=10, help="datapoints with posterior draws in the .nc (10)"
    )
    p.add_argument("--batch-size", type=int, default=1000, help="datapoints per chunk (1000)")

    p = verbs.add_parser(
        "compare",
        help="compare runs on the same test points",
        description="Rank runs by importance-sampled log p(x) on the same test points, with "
        "paired differences; writes comparison.md, comparison.csv and comparison.png.",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run folders written by 'pyro-gen train'")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN1/eval)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use a random subset of N datapoints (drawn with --seed; the same for every run)",
    )
    p.add_argument(
        "--num-samples", type=int, default=1000, metavar="K", help="importance samples (1000)"
    )
    p.add_argument("--batch-size", type=int, default=1000, help="datapoints per chunk (1000)")
    p.add_argument("--device", default="cpu", help="device to run on (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    return parser


# -- settings ------------------------------------------------------------------------------------
def _read_settings_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ConfigError("TOML config files need Python >= 3.11; use JSON.") from None
        values = tomllib.loads(path.read_text())
    else:
        values = read_json(path, "config file")
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings.")
    settings = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in DEFAULTS or dest in ("config", "resume"):
            raise ConfigError(
                f"unknown setting {key!r} in {path}."
                + did_you_mean(dest, DEFAULTS)
                + " Settings use the names of the 'pyro-gen train' options."
            )
        if dest == "max_time" and isinstance(value, str):
            try:
                value = _duration(value)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"max_time in {path}: {e}") from None
        settings[dest] = value
    return settings


def _settings(args: argparse.Namespace) -> dict:
    given = {k: v for k, v in vars(args).items() if k not in ("verb", "config")}
    from_file = _read_settings_file(args.config) if getattr(args, "config", None) else {}
    return {**DEFAULTS, **from_file, **given}


def _data_options(s: dict) -> dict:
    name = s["data"]
    opts: dict[str, Any] = {}
    if name == "shapes":
        for key, arg in (
            ("num_train", "num_train"),
            ("num_valid", "num_valid"),
            ("num_test", "num_test"),
            ("size", "image_size"),
        ):
            if s.get(arg) is not None:
                opts[key] = s[arg]
        opts["seed"] = s["seed"]
    elif name == "mnist":
        if s.get("binarize"):
            opts["binarize"] = None if s["binarize"] == "none" else s["binarize"]
        opts["seed"] = s["seed"]
    else:
        for arg in ("num_train", "num_valid", "num_test", "image_size", "binarize"):
            if s.get(arg) is not None:
                raise ConfigError(
                    f"--{arg.replace('_', '-')} applies to other data sets, not {name!r}."
                )
    return opts


def _load_data(spec: dict) -> Dataset:
    return load_dataset(spec["name"], data_dir=spec.get("data_dir"), **spec.get("options", {}))


def _model_kwargs(s: dict, ds: Dataset, given: set[str]) -> dict:
    cls = get_model_class(s["model"])
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "data_shape" in params:
        kwargs["data_shape"] = list(ds.image_shape)
    for key in MODEL_ARGS:
        if key in params:
            kwargs[key] = s[key]
        elif key in given:
            raise ConfigError(f"model {s['model']!r} takes no --{key.replace('_', '-')}.")
    for key, value in s.get("model_arg") or []:
        if key not in params:
            raise ConfigError(
                f"model {s['model']!r} has no argument {key!r}." + did_you_mean(key, params)
            )
        kwargs[key] = value
    return kwargs


def _new_run_dir(s: dict) -> Path:
    if s.get("out"):
        return Path(s["out"])
    base = Path("runs") / f"{s['model']}-{s['data']}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _update_summary(run: Path, verb: str, values: dict) -> None:
    path = run / "summary.json"
    summary = read_json(path, "summary") if path.exists() else {}
    summary[verb] = values
    write_json(path, summary)


# -- verbs ---------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    s = _settings(args)
    given = set(vars(args)) - {"verb", "config"}
    if s["resume"]:
        if not s.get("out"):
            raise ConfigError("--resume needs --out RUN, the run folder to continue.")
        run = Path(s["out"])
        config = read_config(run)
        _check_resume_engine(s, run, config)
        data_spec = config["data"]
        train_cfg = {**config["train"], **{k: s[k] for k in given if k in TRAIN_ARGS}}
        model = load_model(run)
        ds = _load_data(data_spec)
    else:
        data_spec = {"name": s["data"], "data_dir": s["data_dir"], "options": _data_options(s)}
        ds = _load_data(data_spec)
        cls = get_model_class(s["model"])
        pyro.set_rng_seed(s["seed"])  # the initial weights too come from --seed
        model = cls(**_model_kwargs(s, ds, given))
        run = _new_run_dir(s)
        if run.exists() and any(run.iterdir()):
            raise ConfigError(
                f"{run} already exists and is not empty; use --resume or another --out."
            )
        train_cfg = {k: s[k] for k in TRAIN_ARGS}
    if any(s.get(k) is not None for k in DISTRIBUTED_ARGS):
        return _train_distributed(s, model, ds, data_spec, run, train_cfg)
    device = resolve_device(train_cfg.get("device", "auto"))
    print(
        f"pyro-gen: training {type(model).__name__} on {ds.name} "
        f"({len(ds.split('train'))} images {list(ds.image_shape)}) on {device}; run folder {run}"
    )
    trainer = Trainer(
        model, run_dir=run, resume=s["resume"], sections={"data": data_spec}, **train_cfg
    )
    start = time.perf_counter()
    history = trainer.fit(
        ds.split("train"), ds.splits.get("valid"), dynamic_binarization=ds.dynamic_binarization
    )
    wall = time.perf_counter() - start
    if trainer.interrupted:
        print(
            f"pyro-gen: interrupted at step {trainer.state.step}; checkpoint written. "
            f"Continue with: pyro-gen train --out {run} --resume"
        )
        return 128 + int(trainer.stop_signal or 2)

    if trainer.stopped_by == "max_time":
        print(
            f"pyro-gen: the --max-time budget ({train_cfg['max_time']:g} s) ran out at step "
            f"{trainer.state.step}; checkpoint written. Continue with a larger budget: "
            f"pyro-gen train --out {run} --resume --max-time ..."
        )
    model.to("cpu").eval()
    figures = run / "figures"
    plots.save_figure(
        plots.training_curves(history, title=run.name), figures / "training_curves.png"
    )
    plots.save_figure(
        plots.image_grid(
            model.sample(64, seed=s["seed"], mean=True), title="samples E[x|z], z ~ p(z)"
        ),
        figures / "samples.png",
    )
    test = ds.splits.get("test", ds.split("train"))[:20]
    plots.save_figure(
        plots.reconstruction_figure(test, model.reconstruct(test)), figures / "reconstructions.png"
    )
    result = {
        "steps": trainer.state.step,
        "epochs": trainer.state.epoch,
        "wall_seconds": round(wall, 2),
        "steps_per_second": round(trainer.steps_per_second, 2),
        "final_train_loss": next((r["loss"] for r in reversed(history) if r["loss"] != ""), None),
        "best_valid_elbo": trainer.state.best_valid
        if trainer.state.best_valid > -float("inf")
        else None,
        "device": str(device),
    }
    split = "test" if "test" in ds.splits else "train"
    ev = evaluate_elbo(model, ds.split(split), seed=s["seed"]).summary()
    result[f"{split}_elbo"] = ev
    _update_summary(run, "train", result)
    rate = result["steps_per_second"]
    print(
        f"pyro-gen: {result['steps']} steps in {wall:.1f} s ({rate} steps/s); {split} ELBO "
        f"{ev['elbo']:.2f} nats = reconstruction {ev['reconstruction']:.2f} − KL {ev['kl']:.2f}"
    )
    if "note" in ev:
        print(f"pyro-gen: note: {ev['note']}")
    print(
        f"pyro-gen: wrote {run}/ (config.json, model.safetensors, history.csv, summary.json, "
        f"figures/training_curves.png, figures/samples.png, figures/reconstructions.png)"
    )
    return 0


def _check_resume_engine(s: dict, run: Path, config: dict) -> None:
    """A run continues on the trainer that started it: the single-process Trainer and
    Lightning keep different training state in their checkpoints."""
    spec = config.get("distributed") or {}
    lightning = spec.get("engine") == "lightning"
    distributed = any(s.get(k) is not None for k in DISTRIBUTED_ARGS)
    if lightning and not distributed:
        flags = f"--devices {spec.get('devices', 1)}"
        if spec.get("num_nodes", 1) != 1:
            flags += f" --num-nodes {spec['num_nodes']}"
        raise ConfigError(
            f"{run} was trained with Lightning (world size {spec.get('world_size', '?')}); "
            f"resume it the same way: pyro-gen train --out {run} --resume {flags} (add "
            "--accelerator/--strategy as before)."
        )
    if distributed and not lightning:
        raise ConfigError(
            f"{run} was trained by the single-process trainer; resume it without --devices, "
            "--num-nodes, --strategy and --accelerator."
        )


def _train_distributed(
    s: dict, model, ds: Dataset, data_spec: dict, run: Path, train_cfg: dict
) -> int:
    """``train`` on PyTorch Lightning (DDP); every rank runs this, the global rank 0 writes."""
    from pyro_gen import plots

    try:
        from pyro_gen.infer.lightning import fit_lightning
    except ImportError as e:  # pragma: no cover - the module itself imports lightning lazily
        raise ConfigError(str(e)) from None
    devices = s.get("devices") or 1
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    device = str(train_cfg.get("device", "auto"))
    accelerator = s.get("accelerator") or (
        "auto" if device == "auto" else "gpu" if device.startswith("cuda") else device
    )
    try:
        result = fit_lightning(
            model,
            ds.split("train"),
            ds.splits.get("valid"),
            devices=devices,
            num_nodes=s.get("num_nodes") or 1,
            strategy=s.get("strategy") or "ddp",
            accelerator=accelerator,
            run_dir=run,
            resume=bool(s["resume"]),
            dynamic_binarization=ds.dynamic_binarization,
            sections={"data": data_spec},
            **train_cfg,
        )
    except ImportError as e:
        raise ConfigError(str(e)) from None
    if result.interrupted:
        if result.is_global_zero:
            flags = " ".join(
                f"--{k.replace('_', '-')} {s[k]}" for k in DISTRIBUTED_ARGS if s.get(k) is not None
            )
            print(
                f"pyro-gen: interrupted (SIGTERM) at step {result.steps}; checkpoint written. "
                f"Continue with: pyro-gen train --out {run} --resume {flags}"
            )
        return 128 + int(signal.SIGTERM)
    if not result.is_global_zero:
        return 0
    model.to("cpu").eval()
    figures = run / "figures"
    if result.history:
        plots.save_figure(
            plots.training_curves(result.history, title=run.name), figures / "training_curves.png"
        )
    plots.save_figure(
        plots.image_grid(
            model.sample(64, seed=s["seed"], mean=True), title="samples E[x|z], z ~ p(z)"
        ),
        figures / "samples.png",
    )
    split = "test" if "test" in ds.splits else "train"
    ev = evaluate_elbo(model, ds.split(split), seed=s["seed"]).summary()
    summary = {
        "steps": result.steps,
        "epochs": result.epochs,
        "wall_seconds": round(result.wall_seconds, 2),
        "world_size": result.world_size,
        "replicas_identical": result.replicas_identical,
        f"{split}_elbo": ev,
    }
    _update_summary(run, "train", summary)
    print(
        f"pyro-gen: {result.steps} steps on {result.world_size} processes in "
        f"{result.wall_seconds:.1f} s (replicas identical: {result.replicas_identical}); "
        f"{split} ELBO {ev['elbo']:.2f} nats; wrote {run}/"
    )
    return 0


def _open_run(args: argparse.Namespace):
    model = load_model(args.run, device=resolve_device(args.device))
    return model.eval(), read_config(args.run)


def cmd_sample(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    model, _ = _open_run(args)
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1; got {args.num}.")
    x = model.sample(args.num, seed=args.seed, mean=args.mean)
    path = plots.save_figure(
        plots.image_grid(x, title="E[x|z]" if args.mean else "x ~ p(x|z)"),
        args.run / "figures" / "samples.png",
    )
    _update_summary(args.run, "sample", {"num": args.num, "seed": args.seed, "figure": str(path)})
    print(f"pyro-gen: wrote {path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    model, config = _open_run(args)
    x = _load_data(config["data"]).split(args.split)[: args.num].to(model.device)
    x_hat = model.reconstruct(x)
    path = plots.save_figure(
        plots.reconstruction_figure(x, x_hat), args.run / "figures" / "reconstructions.png"
    )
    err = float((x - x_hat).abs().mean())
    _update_summary(
        args.run,
        "reconstruct",
        {"split": args.split, "num": int(x.shape[0]), "mean_abs_error": err, "figure": str(path)},
    )
    print(f"pyro-gen: wrote {path} (mean |x − x̂| = {err:.4f})")
    return 0


def _subset(x: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset of ``limit`` rows, in their original order (test sets may be
    sorted by class, so the first rows are no sample)."""
    if limit is None or limit >= x.shape[0]:
        return x
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1; got {limit}.")
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(x.shape[0], generator=g)[:limit].sort().values]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyro_gen.evaluate import PointMassGuideError

    model, config = _open_run(args)
    x = _load_data(config["data"]).split(args.split)
    x = _subset(x, args.limit, args.seed)
    skipped = ""
    if args.num_samples is not None:
        try:
            return _evaluate_diagnostics(args, model, x)
        except PointMassGuideError as e:  # raised before any file is written
            skipped = (
                f"skipped the importance-sampled diagnostics (--num-samples {args.num_samples}: "
                "log p(x), gap, ESS, k̂, KL per dimension, eval/inference_data.nc): they need a "
                f"density for q(z|x), and {e}"
            )
    result = evaluate_elbo(model, x, num_particles=args.num_particles, seed=args.seed).summary()
    result["split"] = args.split
    if skipped:
        result["skipped"] = skipped
    _update_summary(args.run, "evaluate", result)
    label = "ELBO" if "note" not in result else "reconstruction-only 'ELBO' (not a bound)"
    print(
        f"pyro-gen: {args.split} {label} {result['elbo']:.3f} ± {result['elbo_se']:.3f} nats = "
        f"reconstruction {result['reconstruction']:.3f} − KL {result['kl']:.3f} "
        f"({result['num_datapoints']} datapoints); wrote {args.run / 'summary.json'}"
    )
    if "note" in result:
        print(f"pyro-gen: note: {result['note']}")
    if skipped:
        print(f"pyro-gen: note: {skipped}")
    return 0


def _evaluate_diagnostics(args: argparse.Namespace, model, x: torch.Tensor) -> int:
    import math

    from pyro_gen import plots
    from pyro_gen.evaluate import diagnose, save_inference_data, to_inference_data

    start = time.perf_counter()
    diag = diagnose(
        model, x, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed
    )
    wall = time.perf_counter() - start
    result = {**diag.summary(), "split": args.split, "wall_seconds": round(wall, 2)}
    result = {  # strict JSON: NaN (k̂ not computed for K < 21) and inf become null
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()
    }
    eval_dir, figures = args.run / "eval", args.run / "figures"
    write_json(eval_dir / "diagnostics.json", result)
    idata = to_inference_data(model, x, diag, points=args.points, seed=args.seed)
    save_inference_data(idata, eval_dir / "inference_data.nc")
    for name, fig in (
        ("kl_per_dimension", plots.kl_per_dimension(diag)),
        ("khat", plots.khat_histogram(diag.khat, diag.khat_threshold)),
        ("log_px_vs_elbo", plots.log_px_vs_elbo(diag.log_px, diag.elbo)),
    ):
        plots.save_figure(fig, figures / f"{name}.png")
    _update_summary(
        args.run, "evaluate", {k: v for k, v in result.items() if not isinstance(v, list)}
    )
    r = diag.summary()
    print(
        f"pyro-gen: {args.split} log p(x) {r['log_px']:.3f} ± {r['log_px_se']:.3f} nats "
        f"(K={r['num_samples']}); ELBO {r['elbo']:.3f} (reconstruction {r['reconstruction']:.3f} "
        f"− KL {r['kl']:.3f}); gap {r['gap']:.3f}; active units {r['active_units']}/"
        f"{r['latent_dims']}; k̂ > {r['khat_threshold']} for {100 * r['khat_share_unreliable']:.1f}%"
        f" ({r['num_datapoints']} datapoints, {wall:.1f} s)"
    )
    print(
        f"pyro-gen: wrote {eval_dir}/diagnostics.json, {eval_dir}/inference_data.nc, "
        f"{figures}/kl_per_dimension.png, khat.png, log_px_vs_elbo.png"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pyro_gen import plots
    from pyro_gen.evaluate import compare

    device = resolve_device(args.device)
    models, x = {}, None
    for run in args.runs:
        data = _load_data(read_config(run)["data"]).split(args.split)
        data = _subset(data, args.limit, args.seed)
        if x is None:
            x = data
        elif x.shape != data.shape or not torch.equal(x, data):
            raise ConfigError(
                f"{run} was trained on other data than {args.runs[0]} ({args.split} split "
                "differs); compare needs the same test points."
            )
        models[str(run)] = load_model(run, device=device).eval()
    names = [r.name for r in args.runs]
    if len(set(names)) == len(names):
        models = dict(zip(names, models.values()))
    result = compare(
        models, x, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed
    )
    out = args.out or args.runs[0] / "eval"
    paths = result.write(out)
    ranked = result.ranked_rows
    if ranked:  # the figure shows log p̂(x): runs flagged as not a bound have none
        paths.append(plots.save_figure(plots.comparison_plot(ranked), out / "comparison.png"))
    print(result.to_markdown())
    flagged = [r["model"] for r in result.rows if not r["is_bound"]]
    if flagged:
        print(f"pyro-gen: note: not ranked (not a bound: point-mass guide): {', '.join(flagged)}")
    print("pyro-gen: wrote " + ", ".join(map(str, paths)))
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except PyroGenError as e:
        print(f"pyro-gen {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
