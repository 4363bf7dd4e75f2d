"""What the benchmark scripts share: a CPU-time budget for ``Trainer.fit`` (optionally with a
cosine learning-rate anneal over it and evaluations at marks, their CPU time not counted), the
``--threads`` option and its set-up, and the machine string of a result file.

The scripts import it as ``from _common import ...`` (run as ``python benchmarks/x.py``, their
folder is on ``sys.path``). Budgets are CPU seconds of this process (``time.process_time``):
on a shared machine they measure the work done, not the waiting.

>>> budget = CPUBudget(60.0)  # Trainer(model, callbacks=[budget]): 60 CPU-seconds of training
>>> budget.budget, budget.points
(60.0, [])
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable, Sequence

import torch

from pyro_gen.infer.callbacks import Callback

__all__ = ["CPUBudget", "add_threads_argument", "machine_string", "set_threads"]


class CPUBudget(Callback):
    """Stops a fit after ``budget`` CPU-seconds of training (evaluations excluded; None: no
    cap) and evaluates the model's ``evaluate(module)`` when the training CPU time passes each
    of ``marks`` (seconds), keeping ``(CPU-minutes, value)`` in :attr:`points`.

    ``offset``: training CPU seconds of earlier stages (a two-stage model's second fit
    continues the first's clock; ``budget`` and ``marks`` are on that clock). ``anneal``: the
    learning rate of every parameter group follows lr0 · ½(1 + cos(π · frac)), frac the share
    of this stage's budget used, ``(used − offset) / (budget − offset)`` (an epoch-keyed cosine
    cannot know how many epochs a CPU budget buys); ignored without a budget. A fit stopped by
    the budget has ``trainer.stopped_by == "cpu_budget"``.
    """

    def __init__(
        self,
        budget: float | None,
        marks: Sequence[float] = (),
        evaluate: Callable | None = None,
        offset: float = 0.0,
        anneal: bool = False,
    ) -> None:
        if marks and evaluate is None:
            raise ValueError("CPUBudget(marks=...) needs evaluate=, the function run at each.")
        self.budget, self.marks, self.evaluate = budget, sorted(marks), evaluate
        self.anneal = anneal and budget is not None
        self.offset = offset
        self.points: list[tuple[float, float]] = []
        self.eval_cpu = 0.0
        self.t0 = 0.0

    def cpu(self) -> float:
        """Training CPU seconds so far: since the fit began, plus ``offset``, minus the CPU
        time of the evaluations this callback ran."""
        return time.process_time() - self.t0 - self.eval_cpu + self.offset

    def on_fit_start(self, trainer) -> None:
        self.t0 = time.process_time()
        self.start = self.offset
        if self.anneal:
            self.lr0 = [g["lr"] for g in trainer.step.optimizer.param_groups]

    def on_step_end(self, trainer, metrics) -> None:
        used = self.cpu()
        if self.anneal:
            frac = min(1.0, (used - self.start) / max(1e-9, self.budget - self.start))
            for g, lr0 in zip(trainer.step.optimizer.param_groups, self.lr0):
                g["lr"] = lr0 * 0.5 * (1.0 + math.cos(math.pi * frac))
        while self.marks and used >= self.marks[0]:
            self.marks.pop(0)
            self.point(trainer.module, used)
        if self.budget is not None and used >= self.budget:
            trainer.stopped_by = "cpu_budget"
            trainer.should_stop = True

    def point(self, module, used: float) -> None:
        """Evaluate now, record ``(used / 60, value)``, and keep its CPU time off the clock."""
        t = time.process_time()
        self.points.append((used / 60, self.evaluate(module)))
        self.eval_cpu += time.process_time() - t


def add_threads_argument(p: argparse.ArgumentParser, default: int | None = 1) -> None:
    """``--threads N``: torch's intra-op threads (default one: CPU time is then the work)."""
    p.add_argument(
        "--threads", type=int, default=default, help="torch.set_num_threads (default %(default)s)"
    )


def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads(threads)`` (None: leave torch's choice); returns the count."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine_string(threads: int) -> str:
    """``"<processor>, <threads> thread(s)"``: the machine a result was measured on."""
    return f"{platform.processor() or platform.machine()}, {threads} thread(s)"
