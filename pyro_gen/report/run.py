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
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyro_gen.errors import ConfigError

__all__ = ["RunRecord", "RunSet", "load_run", "stale_note", "weights_stamp"]


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


def weights_digest(path: Path) -> str | None:
    """The first 16 hex digits of the SHA-256 of ``path/model.safetensors`` (None without one)."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        return None
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def weights_step(train: Any) -> int | None:
    """The training step ``model.safetensors`` holds, from summary.json's "train" section: the
    best validation step where the best weights were restored, else the last step."""
    if not isinstance(train, dict):
        return None
    best = train.get("best")
    if isinstance(best, dict) and best.get("restored") and isinstance(best.get("step"), int):
        return best["step"]
    steps = train.get("steps")
    return steps if isinstance(steps, int) else None


def weights_stamp(path: str | os.PathLike) -> dict:
    """What an evaluation records about the weights it evaluated: ``weights_step`` (the
    training step), ``weights_digest`` (of model.safetensors) and ``evaluated_at`` (UTC, ISO
    8601), so that a report can tell an evaluation of older weights (after ``train --resume``)
    from the current one.

    >>> import tempfile
    >>> sorted(weights_stamp(tempfile.mkdtemp()))
    ['evaluated_at', 'weights_digest', 'weights_step']
    """
    path = Path(path)
    summary = _read_json(path / "summary.json")
    train = summary.get("train") if isinstance(summary, dict) else None
    return {
        "weights_step": weights_step(train),
        "weights_digest": weights_digest(path),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }


def stale_note(ev: dict, digest: str | None, step: int | None) -> str | None:
    """Why the evaluation ``ev`` is of older weights than the run's current ones (``digest``
    of model.safetensors, training ``step``), or None when it is current or cannot be told."""
    if ev.get("stale"):
        return str(ev["stale"])
    then, now = ev.get("weights_digest"), digest
    old = (then and now and then != now) or (
        not then
        and ev.get("weights_step") is not None
        and step is not None
        and ev["weights_step"] != step
    )
    if not old:
        return None
    at = ev.get("weights_step")
    return (
        f"evaluated at step {at if at is not None else '?'}; the weights are now at step "
        f"{step if step is not None else '?'}: run pyro-gen evaluate again"
    )


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

    @property
    def weights(self) -> tuple[str | None, int | None]:
        """(digest of model.safetensors, the training step it holds)."""
        if not hasattr(self, "_weights"):
            self._weights = (weights_digest(self.path), weights_step(self.summary.get("train")))
        return self._weights

    def stale(self, ev: dict | None) -> str | None:
        """Why ``ev`` (an evaluation record) is of older weights, or None."""
        return stale_note(ev, *self.weights) if ev else None

    def _evaluations(self) -> list[dict]:
        """The evaluations there are, newest first (``evaluated_at``); on a tie (``evaluate
        --num-samples`` writes both) or without times, eval/diagnostics.json, the fuller."""
        found = []
        if self.diagnostics:
            found.append({"source": "eval/diagnostics.json", **self.diagnostics})
        ev = self.summary.get("evaluate")
        if ev:
            found.append({"source": "summary.json (evaluate)", **ev})
        return sorted(found, key=lambda e: str(e.get("evaluated_at") or ""), reverse=True)

    def stale_notes(self) -> list[str]:
        """A note per evaluation left out of the report for being of older weights."""
        notes = []
        for ev in self._evaluations():
            why = self.stale(ev)
            note = f"The evaluation in {ev['source']} is not shown: {why}."
            if why and not any(why in n for n in notes):
                notes.append(note)
        return notes

    def evaluation(self) -> dict | None:
        """The newest evaluation of the current weights: eval/diagnostics.json (importance
        sampled) or the last ``evaluate`` summary, whichever is newer; else the ELBO ``train``
        measured at its end. One of older weights (before a ``train --resume``) is left out
        (:meth:`stale_notes` says so)."""
        for ev in self._evaluations():
            if not self.stale(ev):
                return ev
        train = self.summary.get("train") or {}
        for key, value in train.items():
            if key.endswith("_elbo") and isinstance(value, dict):
                split = key[: -len("_elbo")]
                return {"source": f"summary.json (train, {split} split)", "split": split, **value}
        return None

    def classifier(self) -> list[dict]:
        """The model's own classifier q(y|x) scored on labelled splits (an SSVAE's label
        accuracy, a CVAE's inferred attributes): the newest ``pyro-gen evaluate`` of the
        current weights, else what ``train`` measured at its end (test and validation);
        each a dict with ``split``, ``num_datapoints``, the scores and ``source``."""
        found = []
        for verb in ("evaluate", "evaluate_ais"):
            c = (self.summary.get(verb) or {}).get("classifier")
            if isinstance(c, dict) and not self.stale(c):
                found.append({"source": f"summary.json ({verb})", **c})
        found.sort(key=lambda e: str(e.get("evaluated_at") or ""), reverse=True)
        found = found[:1]
        train = self.summary.get("train") or {}
        for key, value in train.items():
            if key.endswith("_classifier") and isinstance(value, dict):
                if not any(f.get("split") == value.get("split") for f in found):
                    found.append({"source": "summary.json (train)", **value})
        return found

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
    config, summary = _read_json(path / "config.json"), _read_json(path / "summary.json")
    diagnostics = _read_json(path / "eval" / "diagnostics.json")
    for name, value in (
        ("config.json", config),
        ("summary.json", summary),
        ("eval/diagnostics.json", diagnostics),
    ):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(
                f"{path / name} holds {type(value).__name__} {value!r:.40}, not a JSON object as "
                "pyro-gen writes it; restore it or remove the file and run the verb again."
            )
    for key, value in (summary or {}).items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"{path / 'summary.json'}: section {key!r} is {value!r:.40}, not a JSON object "
                f"as pyro-gen writes it; remove the section (or rerun pyro-gen {key})."
            )
    figures = {}
    if (path / "figures").is_dir():
        figures = {p.stem: p for p in sorted((path / "figures").glob("*.png"))}
    return RunRecord(
        path=path,
        config=config or {},
        summary=summary or {},
        history=history,
        diagnostics=diagnostics,
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
