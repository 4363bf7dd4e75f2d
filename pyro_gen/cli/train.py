"""``pyro-gen train``: build a registered model from flags, train it, write the run folder.

The model options come from the registered class's constructor: every named argument
``some_arg`` is a flag ``--some-arg`` (ints, floats, strings, booleans, comma-separated integer
lists; anything else as JSON), ``data_shape`` comes from the data, and ``--model-arg KEY=VALUE``
sets any argument by name.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import signal
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_gen.adversarial import AdversarialStep  # registers "gan"
from pyro_gen.cli.common import (
    DATA_ARGS,
    DATA_OPTION_NAME,
    add_data_arguments,
    add_import_argument,
    data_spec,
    describe_elbo_result,
    duration,
    ensure_run_model,
    import_modules,
    int_list,
    json_value,
    key_value,
    load_data,
    model_batch,
    model_class,
    update_summary,
)
from pyro_gen.cli.report import write_run_report
from pyro_gen.data import Dataset
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
from pyro_gen.infer.callbacks import Callback
from pyro_gen.infer.loggers import LOGGERS
from pyro_gen.io import read_json
from pyro_gen.models import LIKELIHOODS, MODELS, VAE
from pyro_gen.models.likelihoods import has_mean_image
from pyro_gen.models.persistence import load_model, read_config
from pyro_gen.models.vae import NETWORKS

__all__ = ["add_parser", "cmd_train", "model_parameters", "steps_line"]

TRAIN_ARGS = tuple(TrainConfig.__dataclass_fields__)
DISTRIBUTED_ARGS = ("devices", "num_nodes", "strategy", "accelerator")
# Settings of `train` other than the model's constructor arguments, with their defaults. The
# config file uses the same names (dashes or underscores).
DEFAULTS: dict[str, Any] = {
    "model": "vae",
    "imports": [],
    "data": "shapes",
    **{k: None for k in DATA_ARGS if k != "data"},
    "model_arg": [],
    **{k: v.default for k, v in TrainConfig.__dataclass_fields__.items()},
    "epochs": 30,
    "lr": 2e-3,
    "out": None,
    "resume": False,
    "log_every": 20,
    "logger": "none",
    **{k: None for k in DISTRIBUTED_ARGS},
}
# Constructor arguments filled from the data, never flags.
FROM_DATA = ("data_shape",)
LABELLED_TWIN = {"binarized_mnist": "mnist"}  # a data set without labels -> one with them
# Where the CLI's default differs from the constructor's.
CLI_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {"latent_dim": 10},
    "ssvae": {"elbo": "enum"},  # the missing labels are summed out
}
# The recipe of a model on a data set, where it differs from the defaults above: the one-layer
# VAE on 28 x 28 binary MNIST is Burda et al.'s 784-500-500-50 network with batches of 100,
# Adam 2e-3 decayed to 0 by a cosine over the run and a linear KL warm-up over the first 5,000
# steps (10 CPU-minutes: 88.38 nats with it, 96.34 without); the run keeps its best validation
# weights (keep_best). Measured in benchmarks/README.md ("The zoo at 20 CPU-minutes per model"
# and "The one-layer VAE in 10 CPU-minutes"). Flags and --config override.
MNIST_RECIPE: dict[str, Any] = {
    "latent_dim": 50,
    "hidden": [500, 500],
    "batch_size": 100,
    "lr": 2e-3,
    "lr_schedule": "cosine",
    "beta_schedule": "linear",
    "warmup_steps": 5000,
    "epochs": 45,
}
# The learned-prior VAE (same network by default) and the hierarchical VAE: the same batches,
# schedule and warm-up (the VampPrior VAE: 85.36 nats with it, 89.44 without, 20 CPU-minutes
# each). Burda et al.'s 100-unit tanh hierarchy learns slowly from PyTorch's initialisation;
# elu and 500-500 below z1 learn in a CPU budget.
VAMP_MNIST_RECIPE: dict[str, Any] = {
    k: v for k, v in MNIST_RECIPE.items() if k not in ("latent_dim", "hidden")
}
HVAE_MNIST_RECIPE: dict[str, Any] = {
    **VAMP_MNIST_RECIPE,
    "activation": "elu",
    "hidden": [500, 500],
    "hidden_top": [100, 100],
}
# MADE: one mask, 2000 hidden units (86.52 nats after 5 CPU-minutes on all 10,000 test
# images, 85.22 after 20, where 1 x 500 gave 89.13 after 16 and 2 x 1000 89.09 after 5), Adam
# 3e-3 with a cosine decay, batches of 100; 40 epochs are about 20 CPU-minutes.
MADE_MNIST_RECIPE: dict[str, Any] = {
    "hidden": [2000],
    "batch_size": 100,
    "lr": 3e-3,
    "lr_schedule": "cosine",
    "epochs": 40,
}
DATA_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    **{("vae", d): MNIST_RECIPE for d in ("binarized_mnist", "mnist")},
    **{("vamp_vae", d): VAMP_MNIST_RECIPE for d in ("binarized_mnist", "mnist")},
    **{("hvae", d): HVAE_MNIST_RECIPE for d in ("binarized_mnist", "mnist")},
    **{("made", d): MADE_MNIST_RECIPE for d in ("binarized_mnist", "mnist")},
}
# Descriptions of the usual constructor arguments, for any model that takes them.
MODEL_HELP = {
    "latent_dim": "size of z",
    "likelihood": "p(x|z)",
    "network": "encoder/decoder kind",
    "hidden": "MLP widths, e.g. 512,256",
    "channels": "conv channels, e.g. 32,64,64",
    "beta": "KL weight: 0 autoencoder, <1, 1 VAE, >1",
    "scale": "σ of a Gaussian likelihood",
    "learn_scale": "learn σ per pixel (Gaussian)",
    "activation": "activation of the hidden layers",
}
LIST_HELP = {"hidden", "channels"}  # their MODEL_HELP describes a comma-separated list
# Choices of the VAE family's arguments (argparse checks them).
VAE_CHOICES = {"likelihood": sorted(LIKELIHOODS), "network": list(NETWORKS)}


def model_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named constructor arguments of ``cls`` (without ``self``, ``*args``, ``**kwargs``);
    a constructor that forwards ``**kwargs`` (``super().__init__(**kw)``) also takes its base
    class's named arguments, which follow its own."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = {
        p.name: p
        for p in params
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    if _takes_any_keyword(cls):
        base = next((b for b in cls.__mro__[1:] if "__init__" in vars(b)), None)
        generic = ("builtins", "pyro.nn.module", "torch.nn.modules.module")
        if base is not None and base.__module__ not in generic:
            for name, p in model_parameters(base).items():
                named.setdefault(name, p)
    return named


def _takes_any_keyword(cls: type) -> bool:
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(cls.__init__).parameters.values()
    )


def _kind(param: inspect.Parameter) -> str:
    """bool, int, float, str, int_list or json, from the annotation or else the default."""
    ann = param.annotation
    if ann is not inspect.Parameter.empty:
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))
        text = text.replace("typing.", "").replace("collections.abc.", "").strip()
        if text in ("bool", "int", "float", "str"):
            return text
        if re.fullmatch(r"(Sequence|list|List|tuple|Tuple)\[int(, \.\.\.)?\]", text):
            return "int_list"
    d = param.default
    if isinstance(d, bool):
        return "bool"
    if isinstance(d, (int, float, str)):
        return type(d).__name__
    if isinstance(d, (list, tuple)) and d and all(type(v) is int for v in d):
        return "int_list"
    return "json"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def docstring_args(cls: type) -> dict[str, str]:
    """Descriptions of constructor arguments from the ``Args:`` sections (Google style) of
    ``cls`` and its bases: ``{"latent_dim": "size of z."}``; ``a, b: text`` describes both."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:
        lines = inspect.cleandoc(klass.__doc__ or "").splitlines()
        try:
            start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
        except StopIteration:
            continue
        names: list[str] = []
        indent = None
        for line in lines[start + 1 :]:
            if not line.strip():
                if names:
                    break
                continue
            width = len(line) - len(line.lstrip())
            if indent is None:
                indent = width
            if width < indent:
                break
            entry = re.match(r"\s*([A-Za-z_][\w, ]*):\s*(.*)", line) if width == indent else None
            if entry:
                names = [n.strip() for n in entry.group(1).split(",")]
                for n in names:
                    out.setdefault(n, "")
                text = entry.group(2)
            elif width == indent:  # an entry this parser does not read ("a, ...: as X")
                names, text = [], ""
            else:
                text = line.strip()
            for n in names:
                out[n] = (out[n] + " " + text).strip()
    roles = re.compile(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`")  # :class:`~a.b.VAE` -> VAE
    return {
        k: roles.sub(r"\1", re.sub(r"``([^`]*)``", r"\1", v)).rstrip(".")
        for k, v in out.items()
        if v
    }


def add_model_arguments(g: Any, name: str) -> None:
    """One flag per named constructor argument of the model registered as ``name``."""
    cls = MODELS.get(name)
    if cls is None:  # unknown: cmd_train says so (main refuses it before parsing)
        return
    cli_defaults = CLI_MODEL_DEFAULTS.get(name, {})
    described = docstring_args(cls)
    for key, param in model_parameters(cls).items():
        if key in FROM_DATA:
            continue
        flag = "--" + key.replace("_", "-")
        kind = _kind(param)
        default = cli_defaults.get(key, param.default)
        text = described.get(key) or MODEL_HELP.get(key, f"{cls.__name__} argument {key!r}")
        if key in LIST_HELP and kind != "int_list" and key not in described:
            text = f"{cls.__name__} argument {key!r} ({kind})"  # one number, not "512,256"
        if kind == "int_list":
            text += "; comma-separated"
        if default is inspect.Parameter.empty:
            text += " (required)"
        elif kind == "bool":
            text += " (default on)" if default else ""
        elif default is not None and kind != "json":
            text += f" (default {_show(default)})"
        # argparse formats help with %: a literal "55%" in a docstring would crash --help
        kwargs: dict[str, Any] = {"help": text.replace("%", "%%")}
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str, "int_list": int_list}.get(
                kind, json_value
            )
            if kind == "json":
                kwargs["metavar"] = "JSON"
            if key in VAE_CHOICES and issubclass(cls, VAE):
                kwargs["choices"] = VAE_CHOICES[key]
        try:
            g.add_argument(flag, **kwargs)
        except argparse.ArgumentError:  # named like a run option (seed): --model-arg reaches it
            continue


def add_parser(verbs: Any, model: str | None = None) -> argparse.ArgumentParser:
    """The ``train`` verb; its model options are those of ``model`` (default: vae)."""
    t = verbs.add_parser(
        "train",
        allow_abbrev=False,  # --beta must not silently mean --beta-schedule
        help="train a model and write a run folder",
        description="Train a model with SVI and write config.json, weights, checkpoints, "
        "history.csv, figures and summary.json to the run folder (--out). The model options "
        "are the registered model's constructor arguments: 'pyro-gen train --model NAME --help' "
        "lists those of NAME.",
        argument_default=argparse.SUPPRESS,  # unset options stay absent: files and defaults fill
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
    g.add_argument(
        "--logger",
        choices=LOGGERS,
        help="also log the loss, validation ELBO, β, lr and sample grids for TensorBoard "
        "(RUN/tensorboard; needs the tensorboard package; default none)",
    )
    add_import_argument(g)
    add_data_arguments(
        t.add_argument_group("data"),
        "data set (default: shapes, generated, no download). On binarized_mnist and mnist the "
        "vae, vamp_vae and hvae start from a recipe: batches of 100, Adam 2e-3 with a cosine "
        "decay over 45 epochs, a 5,000-step linear KL warm-up, and a network (the vae's "
        "784-500-500-50; the hvae's elu 500-500 below z1, 100-100 above); made: one mask of "
        "2000 hidden units, Adam 3e-3 with a cosine decay over 40 epochs; flags override them "
        "(README, 'The binarized MNIST recipe')",
    )
    g = t.add_argument_group("model")
    g.add_argument(
        "--model",
        help=f"registered model name (known: {', '.join(sorted(MODELS))}; more with --import)",
    )
    add_model_arguments(g, model or DEFAULTS["model"])
    g.add_argument(
        "--model-arg",
        type=key_value,
        action="append",
        help="any constructor argument of the model as KEY=JSON_VALUE (repeatable)",
    )
    g = t.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="passes over the training data (default 30)")
    g.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    g.add_argument(
        "--max-time",
        type=duration,
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
        "analytic KL where it exists (reparameterised guides; a point mass works too); "
        "enum = TraceEnum_ELBO, sums out sites marked with config_enumerate; jit, "
        "jit_meanfield, jit_enum = the same compiled with Pyro's JIT "
        "(fixed shapes, constant β); iwae = the per-datapoint importance-weighted bound with "
        "k = --num-particles; iwae_dreg = the same with the doubly-reparameterised gradient",
    )
    g.add_argument(
        "--num-particles",
        type=int,
        help="ELBO particles per datapoint; k of iwae (default 1: iwae is then the plain ELBO)",
    )
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
    return t


# -- settings ------------------------------------------------------------------------------------
def read_settings_file(path: Path) -> dict:
    """The raw settings of a JSON (or TOML) file, keys with underscores, ``import`` -> imports."""
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
    out = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        dest = "imports" if dest == "import" else dest
        if dest == "imports" and isinstance(value, str):
            value = [value]
        out[dest] = value
    return out


def _check_settings_file(path: Path, values: dict, params: dict) -> dict:
    known = [*DEFAULTS, *(k for k in params if k not in FROM_DATA)]
    settings = {}
    for dest, value in values.items():
        if dest not in known or dest in ("config", "resume"):
            raise ConfigError(
                f"unknown setting {dest!r} in {path}."
                + did_you_mean(dest, known)
                + " Settings use the names of the 'pyro-gen train' options."
            )
        if dest == "max_time" and isinstance(value, str):
            try:
                value = duration(value)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"max_time in {path}: {e}") from None
        if dest == "model_arg" and isinstance(value, dict):
            value = list(value.items())
        if dest in params and isinstance(value, str) and _kind(params[dest]) == "int_list":
            try:  # the flag's own syntax, "256,128", as well as the JSON list [256, 128]
                value = int_list(value)
            except argparse.ArgumentTypeError:
                raise ConfigError(
                    f"{dest} in {path}: expected a list of integers, as JSON [256, 128] or as "
                    f'the flag writes it "256,128"; got {value!r}.'
                ) from None
        settings[dest] = value
    return settings


def _settings(args: argparse.Namespace) -> tuple[dict, set[str]]:
    given = {k: v for k, v in vars(args).items() if k not in ("verb", "config")}
    config = getattr(args, "config", None)
    raw = read_settings_file(config) if config else {}
    imports = import_modules([*raw.get("imports", []), *given.get("imports", [])])
    name = given.get("model", raw.get("model", DEFAULTS["model"]))
    if given.get("resume"):  # the model is the run's
        params = model_parameters(MODELS[name]) if name in MODELS else {}
    else:
        params = model_parameters(model_class(name))
    from_file = _check_settings_file(config, raw, params) if config else {}
    data = given.get("data", from_file.get("data", DEFAULTS["data"]))
    recipe = DATA_RECIPES.get((name, data), {})
    s = {**DEFAULTS, **CLI_MODEL_DEFAULTS.get(name, {}), **recipe, **from_file, **given}
    s["imports"] = imports
    return s, set(given) | set(from_file)


def _model_kwargs(s: dict, ds: Dataset, given: set[str]) -> dict:
    name = s["model"]
    cls = model_class(name)
    params = model_parameters(cls)
    kwargs: dict[str, Any] = {}
    if "data_shape" in params:
        kwargs["data_shape"] = list(ds.image_shape)
    for key in params:
        if key in s and key not in FROM_DATA:
            kwargs[key] = s[key]
    for key, value in s.get("model_arg") or []:
        if key not in params and not _takes_any_keyword(cls):
            names = ", ".join(params) or "none"
            raise ConfigError(
                f"model {name!r} has no argument {key!r} (--model-arg {key}=...); its arguments "
                f"are: {names}." + did_you_mean(key, params)
            )
        kwargs[key] = value
    hook = getattr(cls, "config_from_dataset", None)  # e.g. a CVAE's attributes
    if callable(hook):
        try:
            kwargs = hook(ds, kwargs)
        except PyroGenError as e:  # e.g. a CVAE on images without labels: say where some are
            twin = LABELLED_TWIN.get(ds.name)
            if twin is None or "train" in ds.labels or f"--data {twin}" in str(e):
                raise
            raise type(e)(f"{e} For these images with labels use --data {twin}.") from None
    missing = [
        k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs
    ]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise ConfigError(f"model {name!r} needs {flags} (it has no default).")
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


def _figures(model, s: dict, test, figures: Path, title: str | None) -> list[str]:
    """Samples and reconstructions for models that have sample()/reconstruct(); the names
    written. A model without either gets a one-line note."""
    from pyro_gen import plots

    written = []
    # E[x|z] where the likelihood has it; an autoregressive one's images are draws of x
    mean = has_mean_image(model)
    if callable(getattr(model, "sample", None)):
        title = "samples E[x|z], z ~ p(z)" if mean else "samples x ~ p(x|z), z ~ p(z)"
        plots.save_figure(
            plots.image_grid(model.sample(64, seed=s["seed"], mean=mean), title=title),
            figures / "samples.png",
        )
        written.append("figures/samples.png")
    else:
        print(f"pyro-gen: note: {type(model).__name__} has no sample() method; no samples.png")
    if test is None:
        return written
    if callable(getattr(model, "reconstruct", None)) and getattr(model, "can_reconstruct", True):
        plots.save_figure(
            plots.reconstruction_figure(test["x"], model.reconstruct(**test)),
            figures / "reconstructions.png",
        )
        written.append("figures/reconstructions.png")
    else:
        print(
            f"pyro-gen: note: {type(model).__name__} has no reconstruct() method; "
            "no reconstructions.png"
        )
    return written


# -- the verb ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from pyro_gen import plots

    s, given = _settings(args)
    imports = s["imports"]
    if s["resume"]:
        if not s.get("out"):
            raise ConfigError("--resume needs --out RUN, the run folder to continue.")
        run = Path(s["out"])
        config = read_config(run)
        _check_resume_engine(s, run, config)
        ensure_run_model(run, config)
        imports = list(dict.fromkeys([*(config.get("imports") or []), *imports]))
        spec = config["data"]
        ignored = sorted(
            k
            for k in given
            if k not in TRAIN_ARGS
            and k not in RESUME_ARGS
            and s[k] is not None
            and not _as_in_run(k, s[k], config)
        )
        if ignored:  # the model and the data are the run's: such flags would do nothing
            flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
            raise ConfigError(
                f"--resume continues {run} with its own model and data; {flags} would be "
                "ignored. Leave them out, or start a new run with another --out."
            )
        train_cfg = {**config["train"], **{k: s[k] for k in given if k in TRAIN_ARGS}}
        model = load_model(run)
        ds = load_data(spec)
    else:
        spec = data_spec(s)
        ds = load_data(spec)
        cls = model_class(s["model"])
        pyro.set_rng_seed(s["seed"])  # the initial weights too come from --seed
        kwargs = _model_kwargs(s, ds, given)
        try:
            model = cls(**kwargs)
        except (TypeError, ValueError) as e:
            if isinstance(e, PyroGenError):
                raise
            raise ConfigError(
                f"model {s['model']!r} could not be built from {kwargs}: {type(e).__name__}: {e}. "
                f"Check the values and types of its options (pyro-gen train --model "
                f"{s['model']} --help lists them)."
            ) from e
        run = _new_run_dir(s)
        if run.exists() and any(run.iterdir()):
            if not (run / "checkpoints").is_dir():
                raise ConfigError(
                    f"{run} already exists and holds no checkpoint (a run that stopped before "
                    "its first checkpoint, or another folder): there is nothing to resume. "
                    "Remove it or choose another --out."
                )
            raise ConfigError(
                f"{run} already exists and is not empty; use --resume or another --out."
            )
        train_cfg = {k: s[k] for k in TRAIN_ARGS}
    sections: dict[str, Any] = {"data": spec}
    if imports:
        sections["imports"] = imports
    likelihood_free = bool(getattr(model, "likelihood_free", False))  # a GAN: no ELBO
    if any(s.get(k) is not None for k in DISTRIBUTED_ARGS):
        if likelihood_free:
            raise ConfigError(
                f"{type(model).__name__} trains with the adversarial step, which the distributed "
                "path does not run; train it without --devices/--num-nodes/--strategy."
            )
        return _train_distributed(s, model, ds, sections, run, train_cfg)
    device = resolve_device(train_cfg.get("device", "auto"))
    print(
        f"pyro-gen: training {type(model).__name__} on {ds.name} "
        f"({len(ds.split('train'))} images {list(ds.image_shape)}) on {device}; run folder {run}"
    )
    step = {"step_class": AdversarialStep} if likelihood_free else {}
    trainer = Trainer(
        model,
        run_dir=run,
        resume=s["resume"],
        sections=sections,
        callbacks=_loggers(s) + _classifier_callbacks(model, ds),
        **step,
        **train_cfg,
    )
    start = time.perf_counter()
    valid = model_batch(model, ds, "valid") if "valid" in ds.splits else None
    valid = None if likelihood_free else valid  # no validation ELBO without a density
    existed = run.exists()  # a fresh run's folder is absent or empty (checked above)
    try:
        history = trainer.fit(
            model_batch(model, ds, "train"), valid, dynamic_binarization=ds.dynamic_binarization
        )
    except Exception:
        if not s["resume"]:
            _remove_unfinished(run, existed)
        raise
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
    loss_label = "generator loss (not an ELBO)" if likelihood_free else None
    plots.save_figure(
        plots.training_curves(history, run.name, loss_label), figures / "training_curves.png"
    )
    split = "test" if "test" in ds.splits else "train"
    batch = model_batch(model, ds, split)
    # 20 random rows, not the first: a split sorted by label (binarized MNIST's test) would
    # show one digit only
    n = next(iter(batch.values())).shape[0]
    shown = torch.randperm(n, generator=torch.Generator().manual_seed(s["seed"]))[:20]
    test = {k: v[shown] for k, v in batch.items()}
    written = ["figures/training_curves.png", *_figures(model, s, test, figures, run.name)]
    result = {
        "steps": trainer.state.step,
        "epochs": trainer.state.epoch,
        "wall_seconds": round(wall, 2),
        "steps_per_second": round(trainer.steps_per_second, 2),
        "final_train_loss": next((r["loss"] for r in reversed(history) if r["loss"] != ""), None),
        # a point-mass guide (β = 0) has no ELBO: its validation value is the reconstruction
        ("best_valid_reconstruction" if trainer.point_mass else "best_valid_elbo"): (
            trainer.state.best_valid if trainer.state.best_valid > -float("inf") else None
        ),
        "steps_this_session": trainer.steps_this_fit,
        # which weights model.safetensors holds: the best validation ELBO's (step, epoch);
        # a point-mass guide's value is the reconstruction term, so it is named so
        "best": (
            {
                ("valid_reconstruction" if k == "valid_elbo" else k): v
                for k, v in trainer.best.items()
            }
            if trainer.point_mass and isinstance(trainer.best, dict)
            else trainer.best
        ),
        "device": str(device),
    }
    if likelihood_free:
        last = next((r for r in reversed(history) if r.get("divergence", "") != ""), {})
        result["final_divergence"] = last.get("divergence")
        from pyro_gen.adversarial.objectives import estimate_label

        result["final_divergence_estimates"] = estimate_label(model.objective)
        update_summary(run, "train", result)
        steps = steps_line(
            result["steps"], trainer.steps_this_fit, wall, result["steps_per_second"]
        )
        print(
            f"pyro-gen: {steps}; objective {model.objective}: the critic's last estimate of "
            f"{result['final_divergence_estimates']} = {result['final_divergence']} "
            f"(no ELBO: x = G(z) has no density; judge the samples with: pyro-gen quality {run})"
        )
        print(
            f"pyro-gen: wrote {run}/ (config.json, model.safetensors, history.csv, "
            f"summary.json, {', '.join(written)})"
        )
        write_run_report(run)
        return 0
    ev, skipped = _end_elbo(model, ds, split, s["seed"])
    if skipped is None:
        result[f"{split}_elbo"] = ev
    else:
        result[f"{split}_elbo_note"] = skipped
    scored = _classifier_results(model, ds, split)
    result.update(scored)
    update_summary(run, "train", result)
    steps = steps_line(result["steps"], trainer.steps_this_fit, wall, result["steps_per_second"])
    if skipped is not None:
        print(f"pyro-gen: {steps}; no {split} ELBO")
        print(f"pyro-gen: note: {skipped}")
    else:
        print(f"pyro-gen: {steps}; {split} {describe_elbo_result(ev, 2)}")
        if "note" in ev:
            print(f"pyro-gen: note: {ev['note']}")
    _print_classifier_results(scored)
    from pyro_gen.cli.evaluate import prior_stage_note

    prior_note = prior_stage_note(model, run)  # a VQ-VAE's prior was fitted jointly only
    if prior_note is not None:
        print(f"pyro-gen: note: {prior_note}.")
    print(
        f"pyro-gen: wrote {run}/ (config.json, model.safetensors, history.csv, summary.json, "
        f"{', '.join(written)})"
    )
    report = write_run_report(run)
    if report is not None:
        print(f"pyro-gen: open {report} in a browser: the run on one page")
    return 0


def _global_latents(model, batch: dict) -> list[str]:
    """The latent sites of guide or model outside ``pyro.plate("data")`` (global latents),
    from one trace on two rows (no training noise drawn, no buffer moved)."""
    from pyro import poutine
    from pyro.poutine.util import site_is_subsample

    from pyro_gen.infer.capture import buffers_kept
    from pyro_gen.models.pair import DATA_PLATE, as_pair, forked_rng

    pair = as_pair(model)
    small = {k: v[:2] for k, v in batch.items()}
    x = small.pop("x")
    with (
        forked_rng(x.device),
        buffers_kept(pair.module),
        torch.no_grad(),
        pyro.settings.context(module_local_params=True),
        pyro.validation_enabled(False),
    ):
        guide_tr = poutine.trace(pair.guide).get_trace(x, **small)
        model_tr = poutine.trace(poutine.replay(pair.model, trace=guide_tr)).get_trace(x, **small)
    names: list[str] = []
    for tr in (guide_tr, model_tr):
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                continue
            if DATA_PLATE not in [f.name for f in site["cond_indep_stack"]] and name not in names:
                names.append(name)
    return names


def _end_elbo(model, ds: Dataset, split: str, seed: int) -> tuple[dict | None, str | None]:
    """The ELBO on ``split`` at the end of training (:func:`evaluate_elbo`'s summary), or
    (None, a note saying why not) for a program with global latents: the per-datapoint ELBO
    needs every latent under ``pyro.plate("data")``, so it is skipped as the validation ELBO
    is, and the run still gets its summary.json."""
    batch = model_batch(model, ds, split)
    found = _global_latents(model, batch)
    if found:
        sites = ", ".join(repr(n) for n in found)
        return None, (
            f"no {split} ELBO: the program has latent sites outside pyro.plate('data') "
            f"(global latents: {sites}), and the per-datapoint ELBO that pyro-gen reports needs "
            "every latent under it (the validation ELBO was skipped for the same reason). The "
            "model was trained on the full-data ELBO all the same."
        )
    return evaluate_elbo(**batch, model=model, seed=seed).summary(), None


def _remove_unfinished(run: Path, existed: bool) -> None:
    """After a fresh run failed before its first checkpoint: remove what it wrote (config.json,
    model.safetensors, history.csv: the untrained weights would look like a finished run to
    evaluate/sample, and the folder would block a new run with the same --out). The folder
    was absent or empty before (cmd_train checks), so everything in it is this run's. A run
    with a checkpoint is kept: --resume continues it."""
    import shutil

    from pyro_gen.infer.checkpoint import latest_checkpoint

    if not run.is_dir() or latest_checkpoint(run) is not None:
        return
    entries = list(run.iterdir())
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if not existed:
        run.rmdir()
    if not entries and existed:
        return  # it failed before writing anything
    print(
        f"pyro-gen: training failed before its first checkpoint; removed what it wrote in {run} "
        "(no run folder is left that looks finished)."
    )


def steps_line(total: int, this_session: int, wall: float, rate: float) -> str:
    """``780 steps in 6.2 s (125.8 steps/s)``; after a resume the time and the rate are this
    session's, so they go with this session's steps, and the run's total is said apart:
    ``this session 156 steps in 6.2 s (25.2 steps/s); 780 steps in all``. The rate is the
    training loop's; where ``wall`` (setup, validation set-up, ...) is longer than the loop's
    own time, the loop's time goes with the rate and ``wall`` is said apart:
    ``780 steps in 6.2 s of training (125.8 steps/s; 9.0 s with setup)``."""
    loop = this_session / rate if rate and math.isfinite(rate) and rate > 0 else wall
    time_and_rate = f"{wall:.1f} s ({rate:g} steps/s)"
    if abs(loop - wall) > max(0.1, 0.02 * wall):
        time_and_rate = f"{loop:.1f} s of training ({rate:g} steps/s; {wall:.1f} s with setup)"
    if this_session == total:
        return f"{total} steps in {time_and_rate}"
    return f"this session {this_session} steps in {time_and_rate}; {total} steps in all"


class ClassifierValidation(Callback):
    """After each epoch, the model's own classifier q(y|x) on the validation split (the SSVAE's
    label accuracy, a CVAE's inferred attributes): columns ``valid_accuracy`` (or
    ``valid_<attribute>_accuracy``/``_mae``) of history.csv, on the validation row. Runs after
    the built-in callbacks; it leaves the training's random streams as they were."""

    def __init__(self, model, batch: dict) -> None:
        self.model, self.batch = model, batch

    def on_epoch_end(self, trainer) -> None:
        from pyro_gen.evaluate.classification import classifier_scores

        scores = classifier_scores(self.model, self.batch)
        if not scores:
            return
        s = trainer.state
        if not (s.history and s.history[-1]["step"] == s.step):
            s.history.append(trainer.row(loss=""))
        s.history[-1].update({f"valid_{k}": v for k, v in scores.items()})


def _classifier_callbacks(model, ds: Dataset) -> list:
    """A :class:`ClassifierValidation` when the model has a classifier q(y|x) and the data a
    validation split with its labels; else none."""
    from pyro_gen.evaluate.classification import classifier_batch, classifier_scores

    if "valid" not in ds.splits:
        return []
    batch = classifier_batch(model, ds, "valid")
    if batch is None or not classifier_scores(model, {k: v[:2] for k, v in batch.items()}):
        return []
    return [ClassifierValidation(model, batch)]


def _classifier_results(model, ds: Dataset, split: str) -> dict:
    """``{"<split>_classifier": {...}, "valid_classifier": {...}}``: the trained model's own
    classifier q(y|x) on the test (and validation) split; {} when it has none."""
    from pyro_gen.evaluate.classification import (
        WHAT,
        classifier_batch,
        classifier_note,
        classifier_scores,
    )

    out = {}
    for name in dict.fromkeys((split, "valid")):
        if name not in ds.splits:
            continue
        batch = classifier_batch(model, ds, name)
        scores = classifier_scores(model, batch) if batch is not None else {}
        if scores:
            out[f"{name}_classifier"] = {
                "what": f"{name} {WHAT}: the model's own classifier against the split's true "
                "labels (accuracy: fraction in [0, 1]; mae: attribute units)",
                **scores,
                **classifier_note(model),
                "split": name,
                "num_datapoints": int(batch["x"].shape[0]),
            }
    return out


def _print_classifier_results(scored: dict) -> None:
    from pyro_gen.evaluate.classification import describe_scores

    for c in scored.values():
        print(
            f"pyro-gen: {describe_scores(c, c['split'])} ({c['num_datapoints']} datapoints; the "
            "model's own classifier)"
        )


def _loggers(s: dict) -> list:
    """``--logger``: the logging callbacks (TensorBoard), the same on either engine."""
    from pyro_gen.infer.loggers import make_logger

    logger = make_logger(s.get("logger"), seed=s["seed"])
    return [logger] if logger is not None else []


def _as_in_run(key: str, value: Any, config: dict) -> bool:
    """Whether a model or data flag repeats the run's own value (harmless on a resume)."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    model, data = config.get("model", {}), config.get("data", {})
    if key == "model":
        return value == model.get("name")
    if key == "data":
        return value == data.get("name")
    options = data.get("options") or {}
    option = DATA_OPTION_NAME.get(key, key)
    if key in DATA_ARGS and option in options:
        return same(value, options[option])
    args = model.get("args") or {}
    return key in args and same(value, args[key])


# flags that make sense on a resume besides the training settings
RESUME_ARGS = (
    "resume",
    "out",
    "import",
    "imports",
    "config",
    "seed",
    "device",
    "progress",
    "logger",
    "devices",
    "num_nodes",
    "strategy",
    "accelerator",
    "verb",
)


def _check_resume_engine(s: dict, run: Path, config: dict) -> None:
    """A run resumes on as many processes as it trained on (the Trainer refuses any other
    number too; here the error names the flags). A one-process run resumes on either path."""
    spec = config.get("distributed") or {}
    world = int(spec.get("world_size", 1))
    if world > 1 and not any(s.get(k) is not None for k in DISTRIBUTED_ARGS):
        flags = f"--devices {spec.get('devices', 1)}"
        if spec.get("num_nodes", 1) != 1:
            flags += f" --num-nodes {spec['num_nodes']}"
        raise ConfigError(
            f"{run} was trained on {world} processes; resume it on as many: pyro-gen train "
            f"--out {run} --resume {flags} (add --accelerator as before)."
        )


def _train_distributed(
    s: dict, model, ds: Dataset, sections: dict, run: Path, train_cfg: dict
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
            model_batch(model, ds, "train"),
            model_batch(model, ds, "valid") if "valid" in ds.splits else None,
            devices=devices,
            num_nodes=s.get("num_nodes") or 1,
            strategy=s.get("strategy") or "ddp",
            accelerator=accelerator,
            run_dir=run,
            resume=bool(s["resume"]),
            dynamic_binarization=ds.dynamic_binarization,
            sections=sections,
            callbacks=_loggers(s),
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
                f"pyro-gen: interrupted ({result.stopped_by}) at step {result.steps}; checkpoint "
                "written. "
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
    _figures(model, s, None, figures, run.name)
    split = "test" if "test" in ds.splits else "train"
    ev, skipped = _end_elbo(model, ds, split, s["seed"])
    summary = {
        "steps": result.steps,
        "epochs": result.epochs,
        "wall_seconds": round(result.wall_seconds, 2),
        "world_size": result.world_size,
        "replicas_identical": result.replicas_identical,
    }
    if skipped is None:
        summary[f"{split}_elbo"] = ev
    else:
        summary[f"{split}_elbo_note"] = skipped
    scored = _classifier_results(model, ds, split)
    summary.update(scored)
    update_summary(run, "train", summary)
    print(
        f"pyro-gen: {result.steps} steps on {result.world_size} processes in "
        f"{result.wall_seconds:.1f} s (replicas identical: {result.replicas_identical}); "
        + (f"{split} ELBO {ev['elbo']:.2f} nats" if skipped is None else f"no {split} ELBO")
        + f"; wrote {run}/"
    )
    if skipped is not None:
        print(f"pyro-gen: note: {skipped}")
    _print_classifier_results(scored)
    report = write_run_report(run)
    if report is not None:
        print(f"pyro-gen: open {report} in a browser: the run on one page")
    return 0
