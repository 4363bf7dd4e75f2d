"""``pyro-gen report RUN [RUN ...]``: the run's page, ``RUN/report.html``, rebuilt from the run
folder (no data, no model code needed); with several runs also one page over all of them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyro_gen.errors import ConfigError

__all__ = ["add_parser", "cmd_report", "write_run_report"]

RUN_FILES = ("config.json", "summary.json", "history.csv")  # one of them makes a run folder


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    p = verbs.add_parser(
        "report",
        allow_abbrev=False,
        help="write RUN/report.html, one page a person opens in a browser",
        description="Write RUN/report.html for each run: one self-contained HTML page (figures "
        "embedded, no network, no script) with the configuration, the training curves, samples "
        "and reconstructions, and the evaluation (log p(x), ELBO = reconstruction − KL, gap, KL "
        "per dimension, active units, ESS, PSIS k̂ and what it means). It is built from the run "
        "folder only; 'train' and 'evaluate' write it too. With several runs it also writes one "
        "page over all of them (--out).",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run folders written by 'pyro-gen train'")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with several runs: the page over all of them (default RUN1/eval/runs.html)",
    )
    return p


def write_run_report(run: Path) -> Path | None:
    """Write ``run/report.html`` at the end of a verb; a failure is a printed note, never the
    verb's failure (the run folder is the record, the page a view of it)."""
    from pyro_gen.report import write_report

    try:
        return write_report(run)
    except Exception as e:  # noqa: BLE001 - the report must not undo a finished run
        print(
            f"pyro-gen: note: report.html not written ({type(e).__name__}: {e}); "
            f"try pyro-gen report {run}"
        )
        return None


def cmd_report(args: argparse.Namespace) -> int:
    from pyro_gen.report import write_comparison_report, write_report

    for run in args.runs:
        if not run.is_dir():
            raise ConfigError(
                f"run folder {run} does not exist (a folder written by pyro-gen train)."
            )
        if not any((run / f).is_file() for f in RUN_FILES):
            raise ConfigError(
                f"{run} is not a run folder: it has none of {', '.join(RUN_FILES)} (what "
                "pyro-gen train writes). Give the folder passed to train --out."
            )
    if args.out is not None and len(args.runs) == 1:
        raise ConfigError(
            "--out names the page over several runs; give two runs or more (one "
            "run's page is always RUN/report.html)."
        )
    for run in args.runs:
        start = time.perf_counter()
        path = write_report(run)
        print(f"pyro-gen: wrote {path} ({time.perf_counter() - start:.2f} s)")
    if len(args.runs) > 1:
        out = args.out or args.runs[0] / "eval" / "runs.html"
        path = write_comparison_report(args.runs, out)
        print(f"pyro-gen: wrote {path} (the runs side by side)")
    return 0
