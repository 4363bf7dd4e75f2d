"""What the training loop does around each step, as callbacks (Lightning's and Keras' pattern).

The loop (:class:`~pyro_gen.infer.Trainer`) owns order, epochs and the budget; it calls
``step.update(batch)`` and these hooks, in list order:

    on_fit_start(trainer)                  after the checks, before the first step
    on_step_start(trainer)                 before each update (schedules set β here)
    on_update(trainer, metrics)            right after it, before the step counter moves (guard)
    on_step_end(trainer, metrics)          after the counter moved (history, progress, checkpoint)
    on_epoch_end(trainer)                  validation, early stopping, checkpoint
    on_fit_end(trainer)                    the final checkpoint and history

A callback stops training by setting ``trainer.should_stop = True``: the loop stops after
the current step (``trainer.stopped_by`` is then ``"callback"`` unless the callback set it).
Callbacks keep what a resume needs in ``trainer.state`` (saved in every checkpoint), so a
resumed run continues exactly.

>>> import torch
>>> from pyro_gen.infer import Trainer
>>> from pyro_gen.models import VAE
>>> class CountSteps(Callback):
...     steps = 0
...     def on_step_end(self, trainer, metrics):
...         self.steps += 1
>>> counter = CountSteps()
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> _ = Trainer(vae, batch_size=8, max_steps=3, progress=False, callbacks=[counter]).fit(
...     torch.ones(16, 4))
>>> counter.steps
3
"""

from __future__ import annotations

import csv
import warnings
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from pyro_gen.infer.schedules import BetaSchedule
from pyro_gen.io import atomic_open

if TYPE_CHECKING:  # pragma: no cover
    from pyro_gen.infer.trainer import Trainer

__all__ = [
    "Callback",
    "BetaScheduler",
    "NonFiniteGuard",
    "History",
    "ProgressBar",
    "Validation",
    "Checkpointing",
    "HISTORY_COLUMNS",
]

HISTORY_COLUMNS = ["step", "epoch", "loss", "valid_elbo", "beta", "lr", "elapsed"]


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_start(self, trainer: Trainer) -> None: ...

    def on_update(self, trainer: Trainer, metrics: dict) -> None: ...

    def on_step_end(self, trainer: Trainer, metrics: dict) -> None: ...

    def on_epoch_end(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class BetaScheduler(Callback):
    """Sets ``step.beta`` from a :class:`BetaSchedule` before every update: β is the objective's
    argument (KL warm-up, cyclical annealing), never written into the model."""

    def __init__(self, schedule_args: dict) -> None:
        self.schedule_args = schedule_args
        self.schedule: BetaSchedule | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.schedule = BetaSchedule(total_steps=trainer.total_steps, **self.schedule_args)
        trainer.step.beta = self.schedule(trainer.state.step)

    def on_step_start(self, trainer: Trainer) -> None:
        trainer.step.beta = self.schedule(trainer.state.step)


class _DeferredCheck:
    """The non-finite guard without a host synchronisation per step (CUDA and other devices):
    the device remembers whether, and at which step first, a probe was non-finite since the
    last look; ``first_bad()`` looks (one sync) at log rows, checkpoints and the end."""

    def __init__(self, device: torch.device) -> None:
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.pending = False

    def add(self, probe: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(probe)
        self.first = torch.where(bad & ~self.bad, step, self.first)
        self.bad = self.bad | bad
        self.pending = True

    def first_bad(self) -> int | None:
        if not self.pending:
            return None
        self.pending = False
        return int(self.first) if bool(self.bad) else None


class NonFiniteGuard(Callback):
    """A non-finite loss or gradient never reaches the optimiser silently.

    Checked before the update on every step (``check_every_step``, the default on CPU): the step
    skips the batch; more than ``max_bad_batches`` skips raise NonFiniteError naming the sites
    whose log-density is non-finite. Deferred (GPU): the device records the first bad step and
    :meth:`settle` looks at it every ``log_every`` steps and before each checkpoint."""

    def __init__(self, max_bad_batches: int, check_every_step: bool) -> None:
        self.max_bad_batches = max_bad_batches
        self.check_every_step = check_every_step
        self.deferred: _DeferredCheck | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.deferred = None if self.check_every_step else _DeferredCheck(trainer.device)

    def on_update(self, trainer: Trainer, metrics: dict) -> None:
        s = trainer.state
        if self.deferred is not None:
            self.deferred.add(metrics["probe"], s.step)
            return
        if not metrics.get("skipped"):
            return
        s.bad_batches += 1
        if s.bad_batches > self.max_bad_batches:
            loss = metrics["loss"]
            if torch.isfinite(loss):
                what = f"the gradient norm is {trainer.step.grad_norm()}"
            else:
                what = f"the loss is {float(loss)}"
            trainer.raise_non_finite(f"training stopped at step {s.step}", what)
        warnings.warn(
            f"step {s.step}: non-finite loss or gradient; batch skipped "
            f"({s.bad_batches}/{self.max_bad_batches}).",
            stacklevel=4,
        )

    def settle(self, trainer: Trainer) -> None:
        """Look at the deferred check (a no-op where every step is checked)."""
        bad = self.deferred.first_bad() if self.deferred is not None else None
        if bad is not None:
            trainer.raise_non_finite(
                f"training stopped at step {trainer.state.step}",
                f"the loss or a gradient was non-finite at step {bad} and the update was applied "
                f"(on {trainer.device.type} the check runs every log_every="
                f"{trainer.config.log_every} steps, without a per-step host sync; "
                "max_bad_batches > 0 checks every step)",
            )


class History(Callback):
    """A row every ``log_every`` steps and at each epoch's end: the mean of each of the step's
    metrics since the last row (``loss``, and any other a step reports, e.g. a critic's loss:
    each becomes a column), β, lr, elapsed seconds; ``history.csv`` in the run folder."""

    INTERNAL = ("probe", "skipped")  # what a step reports for the guard, not for the history

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.window: dict[str, torch.Tensor] = {}
        self.count = 0

    def on_step_end(self, trainer: Trainer, metrics: dict) -> None:
        if metrics.get("skipped"):
            return
        for name, value in metrics.items():
            if name in self.INTERNAL:
                continue
            total = self.window.get(name)
            self.window[name] = value.clone() if total is None else total + value
        self.count += 1
        s = trainer.state
        if s.step % self.log_every == 0 or s.step == trainer.total_steps:
            trainer.settle()
            self.log(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.count:
            self.log(trainer)

    def log(self, trainer: Trainer) -> None:
        means = {name: float(total) / self.count for name, total in self.window.items()}
        self.window, self.count = {}, 0
        loss = means.pop("loss")
        trainer.state.history.append({**trainer.row(loss=loss), **means})
        trainer.progress_postfix(loss=f"{loss:.3f}", beta=f"{trainer.step.beta:.3g}")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.count:  # stopped inside an epoch (a signal, max_time): the steps since the row
            self.log(trainer)
        self.write(trainer)

    @staticmethod
    def write(trainer: Trainer) -> None:
        if trainer.run_dir is None or not trainer.world.is_global_zero:
            return
        columns = list(HISTORY_COLUMNS)
        for row in trainer.state.history:  # a step's own metrics, in the order first seen
            columns += [k for k in row if k not in columns]
        with atomic_open(trainer.run_dir / "history.csv") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(trainer.state.history)


class ProgressBar(Callback):
    """A tqdm bar over the step budget (``progress=False`` hides it)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            total=trainer.total_steps,
            initial=trainer.state.step,
            desc="train",
            unit="step",
            disable=not self.enabled,
            dynamic_ncols=True,
            leave=True,
        )

    def on_step_end(self, trainer: Trainer, metrics: dict) -> None:
        self.bar.update(1)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Validation(Callback):
    """The validation ELBO (β = 1: the model's true bound, nats per datapoint) after each epoch
    and early stopping after ``patience`` epochs without improvement. A point-mass guide (β = 0)
    gives no bound: its column is the reconstruction term, and a warning says so.

    ``keep_best``: a copy of the weights at the best validation value is kept (``best_state``;
    its step and epoch in ``trainer.state.best_step``/``best_epoch``); the trainer puts them
    back into the model and into the run's ``model.safetensors`` when training ends (the
    checkpoints keep the last weights, for an exact resume)."""

    def __init__(
        self, valid: torch.Tensor | dict, patience: int | None, keep_best: bool = False
    ) -> None:
        self.valid = valid
        self.patience = patience
        self.warned = False
        self.keep_best = keep_best
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        # a resumed run: the earlier sessions' best, read before this session's checkpoints
        # overwrite model.safetensors
        if self.keep_best and trainer.resume and trainer.state.best_step > 0:
            self.best_state = trainer.saved_best()

    def on_epoch_end(self, trainer: Trainer) -> None:
        s = trainer.state
        value = trainer.evaluate(self.valid)
        # a point-mass guide gives no bound: the value is the reconstruction term, said so
        column = "valid_reconstruction" if trainer.point_mass else "valid_elbo"
        if trainer.point_mass and not self.warned:
            self.warned = True
            warnings.warn(
                f"validation: {trainer.point_mass} The history records the reconstruction term "
                "as 'valid_reconstruction'; 'valid_elbo' stays empty.",
                stacklevel=4,
            )
        if s.history and s.history[-1]["step"] == s.step:
            s.history[-1][column] = value
        else:
            s.history.append({**trainer.row(loss=""), column: value})
        if value > s.best_valid:
            s.best_valid, s.bad_epochs = value, 0
            s.best_step, s.best_epoch = s.step, s.epoch
            if self.keep_best:
                self.best_state = {
                    k: v.detach().clone() for k, v in trainer.module.state_dict().items()
                }
        else:
            s.bad_epochs += 1
        if self.patience is not None and s.bad_epochs >= self.patience:
            trainer.should_stop, trainer.stopped_by = True, "early_stopping"


class Checkpointing(Callback):
    """Writes ``checkpoints/step-N/`` every ``every`` steps (None: at each epoch's end) and at
    the end; the newest ``keep`` are kept (see :mod:`pyro_gen.infer.checkpoint`)."""

    def __init__(self, every: int | None) -> None:
        self.every = every
        self.last = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.last = trainer.state.step

    def on_step_end(self, trainer: Trainer, metrics: dict) -> None:
        if self.every and trainer.state.step - self.last >= self.every:
            self.save(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.every is None or trainer.state.step - self.last >= self.every:
            self.save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.last != trainer.state.step or trainer.interrupted:
            self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        trainer.settle()
        self.last = trainer.state.step
        trainer.write_checkpoint()
