"""What the ``pyro-gen`` verbs share: argument types, the data options and data specs, ``--import``
of a user's modules, opening and writing run folders."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from pyro_gen.data import DATASETS, Dataset, load_dataset
from pyro_gen.device import resolve_device
from pyro_gen.errors import ConfigError, DataError, did_you_mean
from pyro_gen.infer.trainer import parse_duration
from pyro_gen.io import read_json, write_json
from pyro_gen.models import MODELS, get_model_class
from pyro_gen.models.persistence import load_model, read_config

__all__ = [
    "DATA_ARGS",
    "add_data_arguments",
    "add_import_argument",
    "data_options",
    "data_spec",
    "duration",
    "import_modules",
    "int_list",
    "json_value",
    "key_value",
    "load_data",
    "model_batch",
    "model_class",
    "open_run",
    "require_method",
    "run_data_spec",
    "subset",
    "update_summary",
]

DATA_ARGS = ("data", "data_dir", "num_train", "num_valid", "num_test", "image_size", "binarize")
IMPORT_HELP = (
    "import MODULE first (a dotted module name importable from the current folder or "
    "sys.path, or a path to a .py file), so that its @register_model classes are known "
    "(repeatable)"
)


# -- argument types ------------------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    """Integers separated by commas and/or whitespace: ``"256,128"``, ``"256 128"`` and
    ``"256, 128"`` are all ``[256, 128]`` (argparse.ArgumentTypeError for anything else)."""
    try:
        return [int(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas or spaces (256,128), got {text!r}"
        ) from None


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h`` or ``2d``."""
    try:
        return parse_duration(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def json_value(text: str) -> Any:
    """A JSON value (``3``, ``[1, 2]``, ``"tanh"``), or the text itself when it is no JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), json_value(value)


# -- shared options ------------------------------------------------------------------------------
def add_import_argument(parser: argparse.ArgumentParser | Any, **kwargs) -> None:
    kwargs.setdefault("dest", "imports")
    parser.add_argument("--import", action="append", metavar="MODULE", help=IMPORT_HELP, **kwargs)


def add_data_arguments(group: Any, data_help: str) -> None:
    """The data options of ``train``; the verbs that read data take them to override a run's."""
    group.add_argument("--data", choices=DATASETS, help=data_help)
    group.add_argument("--data-dir", help="folder with the data files (or set PYRO_GEN_DATA_DIR)")
    group.add_argument("--num-train", type=int, help="shapes: training images (default 20000)")
    group.add_argument("--num-valid", type=int, help="shapes: validation images (default 2000)")
    group.add_argument("--num-test", type=int, help="shapes: test images (default 2000)")
    group.add_argument("--image-size", type=int, help="shapes: image side in pixels (default 32)")
    group.add_argument(
        "--binarize", choices=("dynamic", "static", "none"), help="mnist (IDX): binarization"
    )


# -- data ----------------------------------------------------------------------------------------
# a data flag's dest -> the loader option it sets, where the two names differ
DATA_OPTION_NAME = {"image_size": "size"}


def data_options(s: dict) -> dict:
    name = s["data"]
    opts: dict[str, Any] = {}
    if name == "shapes":
        for arg in ("num_train", "num_valid", "num_test", "image_size"):
            if s.get(arg) is not None:
                opts[DATA_OPTION_NAME.get(arg, arg)] = s[arg]
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


def data_spec(s: dict) -> dict:
    """The ``data`` section of config.json from the data settings (and ``seed``) in ``s``."""
    return {"name": s["data"], "data_dir": s.get("data_dir"), "options": data_options(s)}


# a data option's name in the loaders -> the command-line flag that sets it
OPTION_FLAGS = {
    DATA_OPTION_NAME.get(arg, arg): "--" + arg.replace("_", "-")
    for arg in ("num_train", "num_valid", "num_test", "image_size", "binarize")
}


def load_data(spec: dict) -> Dataset:
    """The data set of ``spec``; a loader's complaint about an option names its flag."""
    options = spec.get("options", {})
    try:
        return load_dataset(spec["name"], data_dir=spec.get("data_dir"), **options)
    except DataError as e:
        named = str(e).split(" ", 1)[0]
        if named in OPTION_FLAGS and named in options:
            raise DataError(f"{OPTION_FLAGS[named]} ({named}): {e}") from e
        raise


def model_batch(model: torch.nn.Module, ds: Dataset, split: str) -> dict[str, torch.Tensor]:
    """What model and guide read from one split: the model's ``batch_from_dataset`` (a
    conditional model adds its attributes to ``{"x": images}``), else ``{"x": images}``."""
    fn = getattr(model, "batch_from_dataset", None)
    return fn(ds, split) if callable(fn) else {"x": ds.split(split)}


def run_data_spec(run: Path, config: dict, args: argparse.Namespace) -> dict:
    """The data of a run: its config's ``data`` section, or the one the data options give.

    ``--data NAME`` replaces the run's spec (shapes and mnist are drawn from ``--seed``, as by
    ``train``); the other data options alone change the run's spec.
    """
    given = {k: getattr(args, k, None) for k in DATA_ARGS}
    spec = config.get("data")
    if given["data"] is not None:
        new = data_spec({**given, "seed": args.seed})
        if not spec:  # nothing to check against: say so once
            print(
                f"pyro-gen: note: {run} records no training data, so pyro-gen cannot check that "
                f"the {getattr(args, 'split', 'test')} split of {new['name']} {new['options']} "
                "is disjoint from the data it was trained on.",
                file=sys.stderr,
            )
            return new
        return _same_data(run, spec, new)
    if not spec:
        raise ConfigError(
            f"{run} has no data spec: its config.json has no 'data' section (the run was written "
            "from the Python API, e.g. Trainer(model, run_dir=...).fit(x)), and "
            f"'pyro-gen {args.verb}' needs data. Give it with --data NAME and the options the "
            "model was trained with, as for 'pyro-gen train': e.g. --data shapes (with its "
            "--image-size, --num-train, --num-valid, --num-test and --seed), or "
            "--data mnist --data-dir DIR."
        )
    if not any(v is not None for k, v in given.items() if k != "data"):
        return spec
    options = dict(spec.get("options") or {})
    extra = {k: v for k, v in given.items() if v is not None and k != "data_dir"}
    options.update(
        data_options({**extra, "data": spec["name"], "seed": options.get("seed", args.seed)})
    )
    data_dir = given["data_dir"] if given["data_dir"] is not None else spec.get("data_dir")
    return _same_data(run, spec, {**spec, "data_dir": data_dir, "options": options})


def _same_data(run: Path, trained: dict, new: dict) -> dict:
    """``new`` if it names the data ``run`` was trained on (only the folder may differ, for a
    moved run); otherwise a ConfigError: other options cut other splits from the same stream
    (shapes), so a "test" split could hold training images and score the run on them."""
    keys = ("name", "options")
    if all(trained.get(k) == new.get(k) for k in keys):
        return new
    raise ConfigError(
        f"the data options give other data than {run} was trained on: it was trained on "
        f"{trained['name']} {trained.get('options')}, these give {new['name']} "
        f"{new.get('options')}. Its splits could overlap the training data, and the numbers "
        "would be wrong. Leave the data options out to evaluate on the run's own data "
        "(--data-dir alone may change, for a run whose data moved)."
    )


def subset(x: torch.Tensor | dict, limit: int | None, seed: int) -> torch.Tensor | dict:
    """A seeded random subset of ``limit`` rows, in their original order (test sets may be
    sorted by class, so the first rows are no sample); of a named batch, the same rows of
    every entry."""
    n = (x["x"] if isinstance(x, dict) else x).shape[0]
    if limit is None or limit >= n:
        return x
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1; got {limit}.")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=g)[:limit].sort().values
    return {k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows]


# -- --import ------------------------------------------------------------------------------------
def _is_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def _import_file(path: Path) -> ModuleType:
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    name = path.stem if path.stem.isidentifier() else "pyro_gen_user_module"
    if name in sys.modules:
        name = f"pyro_gen_user_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_dotted(name: str) -> ModuleType:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:  # as `python -m`: the current folder first
        sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_module(name: str) -> str:
    """Import a user's module (dotted name or .py path); the name a run records for it (a
    file's absolute path). Import failures are ConfigErrors that name the module."""
    try:
        if _is_path(name):
            path = Path(name).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"cannot import {name!r}: there is no file {path}.")
            _import_file(path)
            return str(path)
        _import_dotted(name)
        return name
    except (ImportError, SyntaxError, OSError) as e:
        raise ConfigError(
            f"cannot import module {name!r} ({type(e).__name__}: {e}). --import takes a dotted "
            "module name importable from the current folder or sys.path (PYTHONPATH), or the "
            "path of a .py file."
        ) from None


def import_modules(names: list[str] | None) -> list[str]:
    """Import every module of ``--import`` in order; their recorded names, without repeats."""
    done: list[str] = []
    for name in names or []:
        recorded = import_module(name)
        if recorded not in done:
            done.append(recorded)
    return done


def model_class(name: str) -> type:
    """The registered class ``name``; the error suggests ``--import`` for a user's model."""
    try:
        return get_model_class(name)
    except ConfigError as e:
        raise ConfigError(
            f"{e} If model {name!r} is defined in your own module, load it with --import MODULE "
            "(a dotted module name or a path to a .py file)."
        ) from None


def ensure_run_model(run: Path, config: dict) -> None:
    """Import the modules a run records (``imports`` in config.json), so its model is known."""
    name = (config.get("model") or {}).get("name")
    failed: list[tuple[str, ConfigError]] = []
    for module in config.get("imports") or []:
        try:
            import_module(module)
        except ConfigError as e:
            failed.append((module, e))
    if not name or name in MODELS:
        for module, e in failed:  # the model came from elsewhere (--import): say, and go on
            print(f"pyro-gen: note: {run} records --import {module}, skipped: {e}", file=sys.stderr)
        return
    if failed:
        module, e = failed[0]
        raise ConfigError(
            f"{run} holds model {name!r} from module {module!r} (the 'imports' of its "
            f"config.json), which cannot be imported here: {e} Run from the folder that holds "
            f"it, add its folder to PYTHONPATH, or give it with --import MODULE (e.g. --import "
            f"path/to/{Path(module).stem.split('.')[-1]}.py)."
        )
    raise ConfigError(
        f"{run} holds model {name!r}, which is not registered (registered: {sorted(MODELS)})."
        + did_you_mean(name, MODELS)
        + " Import the module that defines it with --import MODULE (a dotted module name or a "
        "path to a .py file)."
    )


def describe_elbo_result(result: dict, digits: int = 3) -> str:
    """The line's words for an ELBO result: "ELBO v ± se nats = reconstruction − KL", the
    point-mass guide's reconstruction-only 'ELBO', or, without a latent site (MADE), "log p(x)
    v ± se nats, exact" (its ELBO is log p(x) itself: no reconstruction or KL to speak of)."""
    from pyro_gen.evaluate.diagnostics import NO_LATENT_NOTE
    from pyro_gen.evaluate.elbo import describe_parts
    from pyro_gen.evaluate.terms import KL_NONE

    value = f"{result['elbo']:.{digits}f} ± {result['elbo_se']:.{digits}f} nats"
    if "note" in result:  # a point-mass guide (β = 0): it has a latent, but no KL and no bound
        return (
            f"reconstruction-only 'ELBO' (not a bound) {value} = {describe_parts(result, digits)}"
        )
    if result.get("kl_estimate") == KL_NONE:
        return f"log p(x) {value}, exact ({NO_LATENT_NOTE})"
    return f"ELBO {value} = {describe_parts(result, digits)}"


# -- run folders ---------------------------------------------------------------------------------
def open_run(run: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The run's model (in eval mode, on ``device``) and its config.json."""
    config = read_config(run)
    ensure_run_model(Path(run), config)
    model = load_model(run, device=resolve_device(device))
    return model.eval(), config


def require_method(model: torch.nn.Module, method: str, verb: str) -> None:
    """ConfigError unless ``model`` has ``method``: a shipped model says why it has none (its
    ``lacks_latent_tools``), a user's is told to add one."""
    if callable(getattr(model, method, None)):
        return
    why = getattr(model, "lacks_latent_tools", None)
    if why:
        raise ConfigError(
            f"'pyro-gen {verb}' needs {method}(), which {type(model).__name__} does not have: "
            f"{why}."
        )
    raise ConfigError(
        f"{type(model).__name__} has no {method}() method, so 'pyro-gen {verb}' cannot use it; "
        f"give the model class {method}() (as pyro_gen.models.VAE has)."
    )


def update_summary(run: Path, verb: str, values: dict) -> None:
    """Set ``summary.json``'s section ``verb`` to ``values``. A ``train`` (a resume) marks the
    evaluations made of the weights before it as stale (``"stale"``: why), so that neither the
    report nor a reader takes them for the new weights'."""
    from pyro_gen.report.run import stale_note, weights_digest, weights_step

    path = run / "summary.json"
    summary = read_json(path, "summary") if path.exists() else {}
    summary[verb] = values
    if verb == "train":
        digest, step = weights_digest(run), weights_step(values)
        for key in ("evaluate", "evaluate_ais"):
            ev = summary.get(key)
            if isinstance(ev, dict) and not ev.get("stale"):
                # an evaluation without a stamp (an older pyro-gen) came before this training
                why = stale_note(ev, digest, step) if ev.get("weights_digest") else None
                if why is None and not ev.get("weights_digest"):
                    at = ev.get("weights_step", "?")
                    why = f"evaluated at step {at}; the weights are now at step {step}: run "
                    why += "pyro-gen evaluate again"
                if why:
                    ev["stale"] = why
    write_json(path, summary)
