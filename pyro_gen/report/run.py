"""A run folder read for a report: config, summary, history, evaluation and figures.

Nothing is recomputed here: the report shows what ``train``, ``evaluate`` and the other verbs
wrote (the run folder is the source of truth), so ``pyro-gen report`` needs neither the data nor
the model's code.

>>> import tempfile, pathlib
>>> run = load_run(tempfile.mkdtemp())
>>> run.model_name, run.history
('', [])
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyro_gen.errors import ConfigError

__all__ = ["RunRecord", "RunSet", "load_run"]


def _number(text: str) -> Any:
    if text == "":
        return ""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); was it written completely?") from None


@dataclass
class RunRecord:
    """What a run folder holds (missing files give empty values)."""

    path: Path
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    diagnostics: dict | None = None
    figures: dict[str, Path] = field(default_factory=dict)  # stem -> figures/<stem>.png
    claimed: set[str] = field(default_factory=set)  # figures a section has shown

    def claim(self, stem: str) -> Path | None:
        """The figure ``figures/<stem>.png`` if there is one, marked as shown (the last
        section, "Other figures", shows those no section claimed)."""
        self.claimed.add(stem)
        return self.figures.get(stem)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def model_name(self) -> str:
        return str((self.config.get("model") or {}).get("name", ""))

    @property
    def model_args(self) -> dict:
        model = self.config.get("model") or {}
        return dict(model.get("args") or model.get("kwargs") or {})

    @property
    def point_mass(self) -> bool:
        """A β = 0 run (point-mass guide): its 'ELBO' is the reconstruction term only."""
        if any(r.get("valid_reconstruction") not in ("", None) for r in self.history):
            return True
        train = self.summary.get("train") or {}
        return "best_valid_reconstruction" in train or self.model_args.get("beta") == 0

    def evaluation(self) -> dict | None:
        """The fullest evaluation there is: eval/diagnostics.json (importance sampled), else
        the last ``evaluate`` summary, else the ELBO ``train`` measured at its end."""
        if self.diagnostics:
            return {"source": "eval/diagnostics.json", **self.diagnostics}
        ev = self.summary.get("evaluate")
        if ev:
            return {"source": "summary.json (evaluate)", **ev}
        train = self.summary.get("train") or {}
        for key, value in train.items():
            if key.endswith("_elbo") and isinstance(value, dict):
                split = key[: -len("_elbo")]
                return {"source": f"summary.json (train, {split} split)", "split": split, **value}
        return None

    def khat_share(self) -> float | None:
        ev = self.evaluation() or {}
        v = ev.get("khat_share_unreliable")
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read the run folder ``path`` (config.json, summary.json, history.csv,
    eval/diagnostics.json, figures/*.png)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"run folder {path} does not exist (a folder written by pyro-gen train).")
    history = []
    if (path / "history.csv").is_file():
        with open(path / "history.csv", newline="") as f:
            history = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    figures = {}
    if (path / "figures").is_dir():
        figures = {p.stem: p for p in sorted((path / "figures").glob("*.png"))}
    return RunRecord(
        path=path,
        config=_read_json(path / "config.json") or {},
        summary=_read_json(path / "summary.json") or {},
        history=history,
        diagnostics=_read_json(path / "eval" / "diagnostics.json"),
        figures=figures,
    )


@dataclass
class RunSet:
    """What a page over several runs is about: the runs, and optionally their
    :class:`~pyro_gen.evaluate.Comparison` on the same test points; ``links_from`` is the folder
    the page is written to (links to each run's report.html are relative to it)."""

    runs: list[RunRecord]
    comparison: Any = None
    links_from: Path | None = None
