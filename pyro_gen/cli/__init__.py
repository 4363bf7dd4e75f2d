"""``pyro-gen``: train, sample, reconstruct and evaluate generative models from the shell.

Each verb reads or writes a run folder (``config.json``, ``model.safetensors``, ``history.csv``,
``figures/*.png``, ``summary.json``). The CLI is thin: it parses, calls the library, writes files.
One module per verb (``train``, ``sample``, ``reconstruct``, ``evaluate``, ``compare``); what they
share is in ``common``.

    pyro-gen train                          # VAE on the embedded shapes data -> runs/vae-shapes
    pyro-gen train --data binarized_mnist --data-dir ../shared/data --epochs 20
    pyro-gen train --import my_models.py --model my_vae --latent-dim 8
    pyro-gen sample runs/vae-shapes --num 64
    pyro-gen evaluate runs/vae-shapes
    pyro-gen report runs/vae-shapes         # -> runs/vae-shapes/report.html
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from pyro_gen.cli import (
    compare,
    edit,
    evaluate,
    generate,
    interpolate,
    quality,
    reconstruct,
    report,
    sample,
    train,
    traverse,
)
from pyro_gen.cli.common import add_data_arguments, add_import_argument, import_modules
from pyro_gen.errors import PyroGenError

__all__ = ["main", "build_parser"]

COMMANDS = {
    "train": train.cmd_train,
    "sample": sample.cmd_sample,
    "reconstruct": reconstruct.cmd_reconstruct,
    "evaluate": evaluate.cmd_evaluate,
    "compare": compare.cmd_compare,
    "report": report.cmd_report,
    "generate": generate.cmd_generate,
    "edit": edit.cmd_edit,
    "interpolate": interpolate.cmd_interpolate,
    "traverse": traverse.cmd_traverse,
    "quality": quality.cmd_quality,
}


def _run_verb(
    verbs: Any, name: str, help: str, description: str, data: bool = False
) -> argparse.ArgumentParser:
    """A verb on one run folder; ``data``: it reads data (the run's, or the data options')."""
    p = verbs.add_parser(name, help=help, description=description, allow_abbrev=False)
    p.add_argument("run", type=Path, help="run folder written by 'pyro-gen train'")
    p.add_argument("--device", default="cpu", help="device to run on (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_import_argument(p)
    if data:
        add_data_arguments(
            p.add_argument_group("data (instead of the run's config.json data)"),
            "data set to use (needed for a run written from the Python API, whose config.json "
            "has no data section); shapes and mnist are drawn with --seed as by 'train'",
        )
    return p


def build_parser(model: str | None = None) -> argparse.ArgumentParser:
    """The ``pyro-gen`` parser; ``train``'s model options are those of ``model`` (default
    vae), which must be registered (``main`` imports ``--import`` modules first)."""
    parser = argparse.ArgumentParser(
        prog="pyro-gen",
        allow_abbrev=False,
        description="Deep generative models as Pyro model/guide pairs: train, sample, "
        "reconstruct, evaluate. Every verb works on a run folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  pyro-gen train\n  pyro-gen train --data binarized_mnist --data-dir "
        "../shared/data --epochs 20\n  pyro-gen evaluate runs/vae-shapes\n  pyro-gen train "
        "--import my_models.py --model my_vae\n\n"
        "Run 'pyro-gen VERB --help' for the options of a verb.",
    )
    add_import_argument(parser, dest="imports_first")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    train.add_parser(verbs, model)
    sample.add_parser(verbs, _run_verb)
    reconstruct.add_parser(verbs, _run_verb)
    evaluate.add_parser(verbs, _run_verb)
    compare.add_parser(verbs)
    report.add_parser(verbs)
    generate.add_parser(verbs, _run_verb)
    edit.add_parser(verbs, _run_verb)
    interpolate.add_parser(verbs, _run_verb)
    traverse.add_parser(verbs, _run_verb)
    quality.add_parser(verbs, _run_verb)
    return parser


def _prescan(argv: list[str]) -> tuple[str, list[str], str | None]:
    """The verb, the --import modules and train's --model, before the full parse (the model's
    options depend on them). A --config file's model counts too."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    pre.add_argument("--model")
    pre.add_argument("--config", type=Path)
    known, rest = pre.parse_known_args(argv)
    verb = next((a for a in rest if not a.startswith("-")), "")
    imports, model = list(known.imports), known.model
    if verb == "train" and known.config is not None and known.config.is_file():
        try:
            raw = train.read_settings_file(known.config)
        except PyroGenError:
            raw = {}  # cmd_train reports it
        imports = [*raw.get("imports", []), *imports]
        model = model or raw.get("model")
    return verb, imports, model if isinstance(model, str) else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb, imports, model = _prescan(argv)
    try:
        import_modules(imports)
        if verb == "train" and model is not None:
            train.model_class(model)
    except PyroGenError as e:
        print(f"pyro-gen{' ' + verb if verb in COMMANDS else ''}: error: {e}", file=sys.stderr)
        return 2
    args = build_parser(model).parse_args(argv)
    first = args.__dict__.pop("imports_first", None) or []
    if first or getattr(args, "imports", None):
        args.imports = [*first, *(getattr(args, "imports", None) or [])]
    plain_notes = warnings.formatwarning
    warnings.formatwarning = _format_warning  # our own warnings as one-line notes
    try:
        if args.verb != "train":
            import_modules(getattr(args, "imports", None))
        status = COMMANDS[args.verb](args)
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's exit
        return status
    except PyroGenError as e:
        print(f"pyro-gen {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pyro-gen evaluate ... | head`: the reader left; end quietly
        _silence_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE (128 + 13)
    finally:
        warnings.formatwarning = plain_notes


_PACKAGE = str(Path(__file__).resolve().parents[1])


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A UserWarning of pyro_gen's (a β = 0 run's "not a bound", a skipped checkpoint) as the
    one line ``pyro-gen: note: ...`` a user reads, not Python's file, line and source line;
    warnings of other libraries keep Python's format."""
    if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(_PACKAGE):
        return f"pyro-gen: note: {message}\n"
    return _PLAIN_FORMAT(message, category, filename, lineno, line)


_PLAIN_FORMAT = warnings.formatwarning


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush of the broken pipe
    prints no second error (the Python documentation's recipe for SIGPIPE)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass
