"""The training loop for any model/guide pair: named minibatches on the device, a step, callbacks.

The loop owns the order of the data, epochs and the budget (``epochs``, ``max_steps``,
``max_time``); a step (:class:`~pyro_gen.infer.step.SVIStep`) turns each batch into an update;
callbacks (:mod:`pyro_gen.infer.callbacks`) do the rest: β schedule, non-finite guard, history,
progress, validation and early stopping, checkpoints.

>>> import torch, tempfile
>>> from pyro_gen.models import VAE
>>> from pyro_gen.infer import Trainer
>>> x = torch.bernoulli(torch.full((64, 1, 4, 4), 0.3))
>>> vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(16,))
>>> history = Trainer(vae, batch_size=16, epochs=2, progress=False).fit(x)
>>> len(history) > 0
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_gen.data import Dataset
from pyro_gen.device import resolve_device
from pyro_gen.errors import CheckpointError, ConfigError, DataError, NonFiniteError, did_you_mean
from pyro_gen.evaluate.elbo import evaluate_elbo
from pyro_gen.infer import callbacks as cb
from pyro_gen.infer.capture import CapturedLoss, buffers_kept
from pyro_gen.infer.checkpoint import latest_checkpoint, resume_checkpoint, write_checkpoint
from pyro_gen.infer.distributed import Collective, SingleProcess
from pyro_gen.infer.objectives import ELBOS
from pyro_gen.infer.step import (
    FUSED_OPTIMIZERS,
    LR_SCHEDULES,
    OPTIMIZERS,
    SVIStep,
    argument_error,
)
from pyro_gen.io import check_writable
from pyro_gen.models.pair import ModelGuidePair, as_pair, check_pair, forked_rng, prepare_data
from pyro_gen.models.persistence import WEIGHTS, load_tensors, read_config, save_model, save_tensors
from pyro_gen.models.registry import model_config

__all__ = [
    "TrainConfig",
    "Trainer",
    "parse_duration",
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "FUSED_OPTIMIZERS",
]

CAPTURE_MODES = ("auto", "on", "off")
_RANK_SEED = 1_000_003  # process r of a data-parallel run seeds its noise with seed + r * this
# settings a resume must share with the run it continues (data order, objective, optimiser state)
# (lr and weight decay too: the optimiser's saved state restores them, a new value would be lost)
RESUME_FIXED = (
    "seed",
    "batch_size",
    "elbo",
    "num_particles",
    "optimizer",
    "beta_schedule",
    "lr",
    "weight_decay",
    "lr_schedule",
)


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in ``config.json`` under ``"train"``)."""

    epochs: int = 10
    max_steps: int | None = None
    max_time: float | None = None  # wall-clock budget in seconds (over resumes too)
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    fused: bool = False  # the optimiser's fused kernel (adam, adamw, sgd): faster, last-bit changes
    capture: str = "auto"  # loss replayed from a captured graph: auto (capturable models), on, off
    lr_schedule: str = "constant"
    lr_gamma: float = 0.9999
    elbo: str = "trace"
    num_particles: int = 1
    beta_schedule: str = "constant"
    warmup_steps: int = 1000
    beta_cycles: int = 4
    beta_ratio: float = 0.5
    clip_norm: float | None = None
    device: str = "auto"
    seed: int = 0
    valid_particles: int = 1
    early_stopping: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    keep_best: bool = True  # the best validation ELBO's weights end in model + model.safetensors
    log_every: int = 50
    max_bad_batches: int = 0
    validate: bool = True  # check the data and the model/guide pair up front (not validation data)
    progress: bool = True

    def optimizer_settings(self) -> dict:
        """The arguments of :func:`~pyro_gen.infer.step.make_optimizer` (and ``SVIStep``)."""
        names = ("optimizer", "lr", "weight_decay", "fused", "lr_schedule", "lr_gamma")
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict; unknown keys and ill-typed values give a ConfigError."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(
                    f"unknown training setting {key!r}."
                    + did_you_mean(key, names)
                    + f" Known settings: {names}."
                )
        return cls(**values)

    def __post_init__(self) -> None:
        if isinstance(self.max_time, str):  # "90s", "10m", "1.5h" as on the CLI
            self.max_time = parse_duration(self.max_time)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if value is None and "None" in want:
                continue
            if "int" in want and "float" not in want:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif "float" in want:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif "bool" in want:
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ConfigError(
                    f"training setting {f.name!r} should be {want}; got {value!r} "
                    f"({type(value).__name__})."
                )
        positive = ("epochs", "batch_size", "num_particles", "valid_particles", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.max_time is not None and not self.max_time > 0:
            raise ConfigError(f"max_time must be > 0 seconds or None; got {self.max_time}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0; got {self.lr}.")
        for name in ("max_steps", "checkpoint_every", "early_stopping"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None; got {value}.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"clip_norm must be > 0 or None; got {self.clip_norm}.")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
            ("elbo", ELBOS),
            ("capture", CAPTURE_MODES),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(
                    f"unknown {name} {value!r}; choose one of {sorted(choices)}."
                    + did_you_mean(value, choices)
                )


@dataclass
class _State:
    """What a checkpoint must hold to continue a run exactly (the loop's and the callbacks')."""

    step: int = 0
    epoch: int = 0
    best_valid: float = -math.inf
    best_step: int = 0  # where best_valid was reached (0: not yet)
    best_epoch: int = 0
    bad_epochs: int = 0
    bad_batches: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


Batch = Mapping[str, torch.Tensor]


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number or ``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"``, ``"2d"``; ValueError
    (a ConfigError) when it is none of these or not > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        text = str(value).strip().lower()
        scale = units.get(text[-1:])
        try:
            seconds = float(text[:-1] if scale else text) * (scale or 1)
        except ValueError:
            raise ConfigError(
                f"expected a duration such as 600, '90s', '10m' or '1.5h'; got {value!r}."
            ) from None
    if not seconds > 0:
        raise ConfigError(f"a duration must be > 0 seconds; got {value!r}.")
    return seconds


def _check_callbacks(callbacks) -> list:
    if callbacks is None:
        return []
    if isinstance(callbacks, cb.Callback) or not isinstance(callbacks, (list, tuple)):
        raise ConfigError(
            f"callbacks must be a list of pyro_gen.infer.callbacks.Callback; got "
            f"{type(callbacks).__name__} (wrap a single one: callbacks=[it])."
        )
    hooks = ("on_fit_start", "on_step_start", "on_update", "on_step_end", "on_epoch_end")
    for c in callbacks:
        missing = [h for h in hooks + ("on_fit_end",) if not callable(getattr(c, h, None))]
        if missing:
            raise ConfigError(
                f"callback {c!r} lacks {missing}; subclass pyro_gen.infer.callbacks.Callback "
                "(its hooks do nothing until overridden)."
            )
    return list(callbacks)


class Trainer:
    """The training loop: named minibatches, an :class:`SVIStep`, callbacks.

    Args:
        model: a module with ``model``/``guide`` methods (e.g. ``VAE``), or a model callable.
        guide: the guide callable when ``model`` is a callable.
        module: the ``nn.Module`` owning the parameters of a callable model/guide.
        config: a ``TrainConfig``; keyword arguments override its fields.
        run_dir: folder for ``config.json``, checkpoints, ``history.csv``; None keeps nothing.
        resume: continue from the newest good checkpoint in ``run_dir``.
        sections: extra sections for the run's ``config.json`` (e.g. ``{"data": {...}}``).
        callbacks: extra :class:`~pyro_gen.infer.callbacks.Callback` s, run after the built-in
            ones (β schedule, non-finite guard, history, progress, validation, checkpoints).
        step_class: the step the loop drives (an :class:`SVIStep` subclass, built with the
            config's objective and optimiser settings); its extra metrics become history
            columns.
        collective: the processes of a data-parallel run
            (:class:`~pyro_gen.infer.distributed.ProcessGroup`; default one process). Each
            process trains on its shard of every epoch's order with ``batch_size`` datapoints a
            step; loss and gradients are averaged over processes in one collective per step;
            the global rank 0 writes the run folder.
            :func:`~pyro_gen.infer.lightning.fit_lightning` starts the processes and passes it.

    ``fit(train)`` takes a tensor ``[N, *data_shape]`` (the batch ``{"x": ...}``) or a mapping
    of equal-length tensors passed to model and guide by name (``{"x": X, "y": Y}`` runs
    ``model(X, y=Y)``). The loss is the negative β-ELBO per datapoint of the full data set (with
    minibatches the ``"data"`` plate counts N/B times, global latents once); ``history`` rows
    hold ``step, epoch, loss, valid_elbo, beta, lr, elapsed``.

    β is the objective's: the schedule's target is ``module.beta`` where the module has one (the
    β a VAE was built with), else 1; the model is never written to. Objectives by name
    (``elbo``): ``trace``, ``meanfield``, ``enum`` (sums out sites marked with
    ``config_enumerate``), ``jit``, ``jit_meanfield``, ``jit_enum``.

    Speed: the data stay on the device and batches are index-selected; the ELBOs keep their
    sums on the device. A non-finite loss or gradient is caught before the update on CPU; on
    other devices it is looked at every ``log_every`` steps and before each checkpoint (no host
    sync per step; ``max_bad_batches > 0`` checks every step). ``fused=True`` uses the fused
    Adam/AdamW/SGD kernel. ``capture`` replays the loss from a captured graph of its tensor
    operations (:class:`~pyro_gen.infer.capture.CapturedLoss`: no Pyro Python per step,
    bit-identical values and buffers); ``"auto"`` does so for model classes that declare
    ``capturable = True`` (pyro_gen's VAE), ``"on"`` for any model/guide (whose Python side
    effects then run three times at capture), ``"off"`` never.

    Raises ConfigError (settings, a program the objective cannot train right: enumeration marks
    without ``elbo="enum"``, a global ``pyro.param``), DataError (data), ShapeError (the pair
    does not fit the data), NonFiniteError (a NaN/Inf loss or gradient, with the sites named).
    """

    def __init__(
        self,
        model,
        guide: Callable | None = None,
        *,
        module: nn.Module | None = None,
        config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        sections: dict | None = None,
        callbacks: list[cb.Callback] | None = None,
        step_class: type[SVIStep] = SVIStep,
        collective: Collective | None = None,
        **overrides,
    ) -> None:
        base = dataclasses.asdict(config) if config is not None else {}
        self.config = TrainConfig.from_dict({**base, **overrides})
        self.pair: ModelGuidePair = as_pair(model, guide, module)
        self.module = self.pair.module
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.sections = dict(sections or {})
        self.extra_callbacks = _check_callbacks(callbacks)
        self.step_class = step_class
        self.world = collective if collective is not None else SingleProcess()
        if resume and self.run_dir is None:
            raise ConfigError("resume=True needs the run_dir of the run to continue.")
        self.device = resolve_device(self.config.device)
        self.beta_target = float(getattr(self.module, "beta", 1.0))
        self.state = _State()
        self.interrupted = False
        self.stop_signal: int | None = None  # SIGINT/SIGTERM that stopped fit(), if any
        self.stopped_by: str | None = None  # "max_time", "early_stopping", a signal, or None
        self.should_stop = False
        self.steps_per_second = float("nan")  # of the last fit() call
        self.steps_this_fit = 0  # steps the last fit() call took (a resumed run: since resume)
        self.step: SVIStep | None = None
        self.callbacks: list[cb.Callback] = []
        self.total_steps = 0
        self.batch: dict | None = None
        self._point_mass = ""  # why the last validation value is no bound ("": it is one)

    @property
    def history(self) -> list[dict]:
        return self.state.history

    @property
    def loss(self) -> CapturedLoss | None:
        """The last fit's loss: ``.stats`` (eager calls, captures, replays), ``.disabled``."""
        return self.step.loss if self.step is not None else None

    # -- data ----------------------------------------------------------------------------------
    def _prepare_data(self, data, what: str) -> dict | None:
        """A dict of equal-length tensors on the device, checked (``"x"`` by the model)."""
        if data is None:
            return None
        if isinstance(data, Dataset):
            raise DataError("pass tensors to fit(); for a Dataset use fit(ds.split('train'), ...).")
        if isinstance(data, torch.Tensor):
            data = {"x": data}
        if not isinstance(data, Mapping):
            raise DataError(
                f"{what} data must be a torch.Tensor or a mapping of tensors such as "
                f"{{'x': X, 'y': Y}}; got {type(data).__name__}."
            )
        if "x" not in data:
            raise DataError(
                f"{what} data has no entry 'x' (got {sorted(data)}); the observations are passed "
                "as the model's first argument x, the other entries by name."
            )
        out = {}
        n = None
        for name, value in data.items():
            if not isinstance(value, torch.Tensor):
                raise DataError(
                    f"{what} data entry {name!r} must be a torch.Tensor; got "
                    f"{type(value).__name__}."
                )
            if value.dim() == 0:
                raise DataError(
                    f"{what} data entry {name!r} is a scalar: entries need a datapoint axis "
                    "first (one value per datapoint); pass a constant as a model argument."
                )
            if value.shape[0] == 0:
                raise DataError(f"{what} data entry {name!r} is empty (shape {list(value.shape)}).")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise DataError(
                    f"{what} data entries must have the same length (datapoints along the first "
                    f"axis): 'x' has {n}, {name!r} has {value.shape[0]}."
                )
            if name == "x":
                value = self._prepare_x(value, what)
            elif value.is_floating_point() and self.config.validate:
                if value.dtype != self.pair.dtype:
                    warnings.warn(
                        f"casting {what} data entry {name!r} from {value.dtype} to the model's "
                        f"{self.pair.dtype}.",
                        stacklevel=4,
                    )
                    value = value.to(self.pair.dtype)
                if not torch.isfinite(value).all():
                    bad = (~torch.isfinite(value)).nonzero()[0].tolist()
                    raise DataError(
                        f"{what} data entry {name!r} holds NaN or Inf values (the first at index "
                        f"{bad}). Remove them, or mask missing values in the model."
                    )
            out[name] = value.to(self.device)
        return out

    def _prepare_x(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """The observations: cast to the model's dtype and checked by the one check every entry
        point shares (:func:`pyro_gen.models.prepare_data`); with dynamic binarization the
        check sees one binarised draw (on a forked random stream)."""
        if not self.config.validate:
            return x if x.dtype == self.pair.dtype else x.to(self.pair.dtype)
        if not self._dynamic:
            return prepare_data(self.pair, x, what=f"{what} data")
        x = x if x.is_floating_point() else x.to(self.pair.dtype)
        with forked_rng(x.device):
            checked = prepare_data(self.pair, torch.bernoulli(x.clamp(0, 1)), what=f"{what} data")
        return x.to(checked.dtype)

    def _permutation(self, n: int, epoch: int) -> torch.Tensor:
        """The epoch's data order: a function of (seed, epoch), so a resumed run needs no state."""
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        world = self.world
        if world.world_size > 1:  # this process's shard: every world_size-th datapoint
            perm = perm[world.rank : (n // world.world_size) * world.world_size : world.world_size]
        return perm.to(self.device)

    def _batch(self, i: int, perm: torch.Tensor) -> dict:
        b = self.config.batch_size
        idx = perm[i * b : (i + 1) * b]
        batch = {k: v.index_select(0, idx) for k, v in self._train.items()}
        if self._dynamic:
            batch["x"] = torch.bernoulli(batch["x"])
        return batch

    # -- the loop ------------------------------------------------------------------------------
    def fit(
        self,
        train: torch.Tensor | Batch,
        valid: torch.Tensor | Batch | None = None,
        *,
        dynamic_binarization: bool = False,
    ) -> list[dict]:
        """Train on ``train``; evaluate the validation ELBO on ``valid`` after each epoch.

        ``dynamic_binarization``: every training batch is a fresh Bernoulli draw of the grey
        values; ``valid`` is binarized once (seeded), so epochs are compared on the same data.

        Returns the history (also written to ``run_dir/history.csv``). Ctrl-C or SIGTERM stops
        at the next step with a checkpoint written; ``self.interrupted`` is then True.
        """
        self._start(train, valid, dynamic_binarization)
        s = self.state
        if self.resume and s.step >= self.total_steps:
            warnings.warn(
                f"nothing to train: the resumed run is at step {s.step} and the budget is "
                f"{self.total_steps} steps; raise epochs or max_steps to train further.",
                stacklevel=2,
            )
        if valid is None and self.config.early_stopping is not None:
            warnings.warn(
                "early_stopping needs validation data (fit(train, valid)); without it training "
                "runs to its budget.",
                stacklevel=2,
            )
        steps_at_start, t_at_start = s.step, time.perf_counter()
        jit = self.config.elbo.startswith("jit")
        try:
            with (
                _StopRequest() as stop,
                # Pyro's JIT finds parameters through the param store: a private scope of it
                pyro.get_param_store().scope() if jit else contextlib.nullcontext(),
                pyro.settings.context(module_local_params=not jit),
                pyro.validation_enabled(False),
            ):
                self.module.train()
                for c in self.callbacks:
                    c.on_fit_start(self)
                while s.step < self.total_steps and self._epoch(stop):
                    pass
                self.settle()
                s.elapsed = time.perf_counter() - self._t0
                for c in self.callbacks:
                    c.on_fit_end(self)
                self._restore_best()
        finally:
            self._progress.close()
        done = self.steps_this_fit = s.step - steps_at_start
        self.steps_per_second = done / max(1e-9, time.perf_counter() - t_at_start)
        return s.history

    def _out_of_budget(self, stop: _StopRequest) -> bool:
        c, s = self.config, self.state
        if s.step >= self.total_steps:
            return True
        timed_out = c.max_time is not None and time.perf_counter() - self._t0 >= c.max_time
        signalled = stop.signal is not None
        if self.world.world_size > 1:
            # the processes stop at the same step for the same reason, or none does (their
            # clocks and signals differ; what they do next, e.g. a checkpoint, must not)
            anywhere, timed_out = self.world.vote(signalled, timed_out, device=self.device)
            if anywhere and not signalled:
                self.interrupted, self.stopped_by = True, "a signal on another process"
                return True
        if signalled:
            self.interrupted, self.stop_signal = True, stop.signal
            self.stopped_by = signal.Signals(stop.signal).name
            return True
        if timed_out:
            self.stopped_by = "max_time"
            return True
        return False

    def _stop_requested(self) -> bool:
        """A callback asked to stop (on any process: all stop at the same step)."""
        if self.world.world_size > 1:
            return self.world.any(self.should_stop, self.device)
        return self.should_stop

    def _epoch(self, stop: _StopRequest) -> bool:
        """The rest of the current epoch; False when training must stop (the budget is spent
        inside the epoch, a signal came, or a callback says so)."""
        s = self.state
        perm = self._permutation(self._n, s.epoch)
        for i in range(s.step - s.epoch * self._steps_per_epoch, self._steps_per_epoch):
            if self._out_of_budget(stop):
                return False
            for c in self.callbacks:
                c.on_step_start(self)
            self.batch = self._batch(i, perm)
            metrics = self.step.update(self.batch, check=self._check_every_step)
            if self._sync_buffers:  # running statistics: rank 0's, as DDP's broadcast_buffers
                self.world.broadcast_module(self.module, buffers_only=True)
            for c in self.callbacks:
                c.on_update(self, metrics)
            s.step += 1
            for c in self.callbacks:
                c.on_step_end(self, metrics)
            if self._stop_requested():  # a callback asked: stop after this step
                self.stopped_by = self.stopped_by or "callback"
                return False
        self.settle()
        s.epoch += 1
        for c in self.callbacks:
            c.on_epoch_end(self)
        if self._stop_requested():
            self.stopped_by = self.stopped_by or "callback"
            return False
        return True

    def settle(self) -> None:
        """Look at the deferred non-finite check (a host sync; a no-op on CPU)."""
        self._guard.settle(self)

    def row(self, loss) -> dict:
        """A history row at the current step (``loss``: the mean since the last row, or "").

        ``epoch`` is the 1-based epoch the row's last step belongs to, the same on a row logged
        inside an epoch, at its last step, and on its validation row (it used to read the
        0-based running epoch inside an epoch and the count of finished epochs at its end)."""
        s = self.state
        spe = self._steps_per_epoch
        return {
            "step": s.step,
            "epoch": -(-s.step // spe) if spe else s.epoch,
            "loss": loss,
            "valid_elbo": "",
            "beta": self.step.beta,
            "lr": self.step.lr,
            "elapsed": round(time.perf_counter() - self._t0, 3),
        }

    def progress_postfix(self, **values) -> None:
        if self._progress.bar is not None:
            self._progress.bar.set_postfix(**values)

    def _capture_wanted(self) -> bool:
        """``capture="auto"``: only model classes that declare ``capturable = True`` (their
        programs are known to replay exactly: no Python state between steps)."""
        mode = self.config.capture
        if mode != "auto":
            return mode == "on"
        pair = self.pair
        own = getattr(pair.model, "__self__", None) is pair.module
        own = own and getattr(pair.guide, "__self__", None) is pair.module
        # read on the instance: a model may be capturable in one configuration only
        return own and bool(getattr(pair.module, "capturable", False))

    # -- one run of fit() ----------------------------------------------------------------------
    def _start(self, train, valid, dynamic: bool) -> None:
        """Check everything, then write the run folder (or restore it): nothing is written
        before the data, the sizes and the model/guide pair have passed their checks."""
        c = self.config
        self._dynamic = dynamic
        self.should_stop, self.stopped_by, self.interrupted = False, None, False
        world = self.world
        if not self.resume:  # each process its own Monte-Carlo noise; rank 0 that of one process
            pyro.set_rng_seed(c.seed + _RANK_SEED * world.rank)
        self._train = self._prepare_data(train, "training")
        valid = self._prepare_data(valid, "validation")
        if valid is not None and dynamic:
            # one fixed binarization (seeded): epochs are compared on the same binary data
            xv = valid["x"]
            g = torch.Generator().manual_seed(c.seed + 2)
            valid["x"] = torch.bernoulli(xv.detach().cpu().clamp(0, 1), generator=g).to(xv)
        if valid is not None and set(valid) != set(self._train):
            raise DataError(
                f"the validation data's entries {sorted(valid)} differ from the training data's "
                f"{sorted(self._train)}: model and guide get the same arguments in both; give "
                "the validation data the same entries."
            )
        self._n = n = self._train["x"].shape[0]
        shard = n // world.world_size  # datapoints per process and epoch
        if c.batch_size > shard:
            per = f" per process ({world.world_size} processes)" if world.world_size > 1 else ""
            raise ConfigError(
                f"batch_size {c.batch_size} is larger than the training data{per} ({shard} "
                f"datapoints); use batch_size <= {shard}."
            )
        self.module.to(self.device)
        world.broadcast_module(self.module)  # every replica starts from rank 0's weights
        self._steps_per_epoch = shard // c.batch_size  # the last partial batch is dropped
        self.total_steps = c.max_steps or c.epochs * self._steps_per_epoch
        jit = c.elbo.startswith("jit")
        if jit and c.beta_schedule != "constant":
            raise ConfigError("a JIT-compiled ELBO bakes β in; use elbo='trace' with a β schedule.")
        # on CPU every step is checked before the update; elsewhere a per-step check would stall
        # the device, so it is looked at every log_every steps (each step with max_bad_batches)
        defer = getattr(self, "_defer_checks", None)  # None: decided by the device (tests set it)
        defer = self.device.type != "cpu" if defer is None else defer
        self._check_every_step = not defer or c.max_bad_batches > 0
        self.step = self.step_class(
            self.pair,
            elbo=c.elbo,
            num_particles=c.num_particles,
            clip_norm=c.clip_norm,
            capture=self._capture_wanted(),
            **c.optimizer_settings(),
        )
        if world.world_size > 1:
            if not getattr(self.step, "data_parallel", False):
                raise ConfigError(
                    f"{type(self.step).__name__} does not declare data_parallel = True: its "
                    "update must average loss and gradients over processes through step.reduce "
                    "(as SVIStep does), else the replicas drift apart. Train it on one process."
                )
            self.step.reduce = world.mean_
        self._sync_buffers = world.world_size > 1 and any(True for _ in self.module.buffers())
        first = self._batch(0, self._permutation(n, 0))
        # the checks draw no training noise and move no buffer
        with forked_rng(self.device):
            if c.validate:
                with buffers_kept(self.module):
                    x, kw = first["x"][:8], {k: v[:8] for k, v in first.items() if k != "x"}
                    try:
                        check_pair(self.pair, x, **kw)
                    except TypeError as e:
                        raise argument_error(first, e) from e
            with pyro.validation_enabled(False):
                self.step.init(first, num_data=n, total_steps=self.total_steps)
        if valid is not None and self.step.data_scale != 1.0:
            warnings.warn(
                "no validation ELBO: the program has latent sites outside the 'data' plate "
                "(global latents), and the per-datapoint ELBO needs every latent under it; "
                "training uses the full-data ELBO all the same.",
                stacklevel=3,
            )
            valid = None
        self.callbacks = self._default_callbacks(valid) + self.extra_callbacks
        if self.run_dir is not None:
            if self.resume and latest_checkpoint(self.run_dir) is None:
                raise CheckpointError(
                    f"nothing to resume in {self.run_dir}: it holds no checkpoints/ folder. "
                    "Start a new run without resume."
                )
            if not self.resume and latest_checkpoint(self.run_dir) is not None:
                raise ConfigError(
                    f"{self.run_dir} already holds a run; pass resume=True (--resume) to continue "
                    "it, or choose a new folder."
                )
            world.barrier()  # every process has looked before the first write
            weights = sum(t.numel() * t.element_size() for t in self.module.state_dict().values())
            # model + optimiser moments per checkpoint, kept checkpoints + the one being written
            if world.is_global_zero:
                check_writable(self.run_dir, 4 * weights * (c.keep_checkpoints + 1))
        if self.resume:
            self._restore()
        elif self.run_dir is not None and world.is_global_zero:
            save_model(self.module, self.run_dir, train=dataclasses.asdict(c), **self.sections)
        self._t0 = time.perf_counter() - self.state.elapsed

    def _default_callbacks(self, valid: dict | None) -> list[cb.Callback]:
        c = self.config
        self._guard = cb.NonFiniteGuard(c.max_bad_batches, self._check_every_step)
        self._progress = cb.ProgressBar(c.progress and self.world.is_global_zero)
        callbacks: list[cb.Callback] = [
            cb.BetaScheduler(
                dict(
                    kind=c.beta_schedule,
                    beta=self.beta_target,
                    warmup_steps=c.warmup_steps,
                    cycles=c.beta_cycles,
                    ratio=c.beta_ratio,
                )
            ),
            self._guard,
            cb.History(c.log_every),
            self._progress,
        ]
        if valid is not None:
            callbacks.append(cb.Validation(valid, c.early_stopping, keep_best=c.keep_best))
        callbacks.append(cb.Checkpointing(c.checkpoint_every))
        return callbacks

    # -- the best weights ----------------------------------------------------------------------
    def _restore_best(self) -> None:
        """``keep_best``: the weights of the best validation ELBO go back into the model and
        into the run's ``model.safetensors`` (its metadata name ``best_step``/``best_epoch``);
        the checkpoints keep the last weights, so a resume continues exactly."""
        s = self.state
        validation = next((c for c in self.callbacks if isinstance(c, cb.Validation)), None)
        if validation is None or not self.config.keep_best or s.best_valid == -math.inf:
            return
        best = validation.best_state
        if best is None:  # a resumed run whose earlier best weights were not found
            warnings.warn(
                f"keep_best: the best validation ELBO ({s.best_valid:.3f}, step "
                f"{s.best_step}) came from an earlier session whose best weights are not in "
                f"{self.run_dir}/model.safetensors; the last weights are kept.",
                stacklevel=3,
            )
            return
        if s.best_step != s.step:
            self.module.load_state_dict(best)
        if self.run_dir is not None and self.world.is_global_zero:
            cfg = model_config(self.module)
            save_tensors(
                self.run_dir / WEIGHTS,
                best,
                kind="model",
                model=cfg[0] if cfg else "",
                best_step=s.best_step,
                best_epoch=s.best_epoch,
                best_valid=repr(s.best_valid),
            )

    def saved_best(self) -> dict | None:
        """The best weights an earlier session wrote (``model.safetensors`` whose metadata
        names the state's ``best_step``), else None (read by a resumed run's validation)."""
        if self.run_dir is None or not (self.run_dir / WEIGHTS).is_file():
            return None
        try:
            tensors, meta = load_tensors(self.run_dir / WEIGHTS)
        except CheckpointError:
            return None
        if meta.get("best_step") != str(self.state.best_step):
            return None
        return {k: v.to(self.device) for k, v in tensors.items()}

    @property
    def best(self) -> dict | None:
        """Where the best validation ELBO was reached: ``{"step", "epoch", "valid_elbo",
        "restored"}`` (``restored``: the model holds those weights), or None without
        validation."""
        s = self.state
        if s.best_valid == -math.inf:
            return None
        return {
            "step": s.best_step,
            "epoch": s.best_epoch,
            "valid_elbo": s.best_valid,
            "restored": bool(self.config.keep_best),
        }

    # -- checkpoints ---------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def write_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N/`` (model, step state, loop state, RNG) and the history."""
        self.state.elapsed = time.perf_counter() - self._t0
        if self.run_dir is None:
            return None
        world = self.world
        rngs = world.gather_object(self._rng_state())  # a collective: every process is here
        path = None
        if world.is_global_zero:
            state = {
                "trainer": dataclasses.asdict(self.state),
                **self.step.state_dict(),
                "rng": rngs[0],
                "world_size": world.world_size,
                "num_data": self._n,
            }
            if world.world_size > 1:
                state["rng_ranks"] = rngs
            path = write_checkpoint(
                self.run_dir, self.state.step, self.module, state, keep=self.config.keep_checkpoints
            )
            cb.History.write(self)
        world.barrier()  # nobody trains on (or reads the folder) before it is written
        return path

    def _restore(self) -> None:
        self._check_same_run()
        ckpt, weights, state = resume_checkpoint(self.run_dir, stacklevel=4)
        try:
            self.module.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(
                f"{ckpt} holds the weights of another architecture than this "
                f"{type(self.module).__name__}: {str(e).splitlines()[0]} Resume with the run's "
                "model (pyro_gen.models.load_model(run_dir)), or start a new run."
            ) from None
        saved = int(state.get("world_size", 1))
        if saved != self.world.world_size:
            raise ConfigError(
                f"{self.run_dir} was trained on {saved} process(es); resume it on the same "
                f"number (here: {self.world.world_size}): a step's batch and an epoch's order "
                "depend on it (pyro-gen train --resume --devices N as before)."
            )
        saved_n = int(state.get("num_data", self._n))
        if saved_n != self._n:
            raise ConfigError(
                f"{self.run_dir} was trained on {saved_n} datapoints, this resume gives "
                f"{self._n}: the data order, the epochs and the N/B scale depend on them. Resume "
                "with the run's training data."
            )
        self.step.load_state_dict(state)
        self.state = _State(**state["trainer"])
        rng = state["rng_ranks"][self.world.rank] if saved > 1 else state["rng"]
        self._set_rng_state(rng)

    def _check_same_run(self) -> None:
        """A resume continues the run it finds: the settings that decide the data order, the
        objective and the optimiser's state must be the saved ones (else a silently different
        run); budgets (epochs, max_steps, max_time) and the rest may change."""
        try:
            saved = read_config(self.run_dir).get("train") or {}
        except Exception:  # an older run folder without a train section: nothing to compare
            return
        mine = dataclasses.asdict(self.config)
        differ = {
            k: (saved[k], mine[k])
            for k in RESUME_FIXED
            if k in saved and k in mine and saved[k] != mine[k]
        }
        if differ:
            what = ", ".join(
                f"{k}={new!r} (the run has {old!r})" for k, (old, new) in differ.items()
            )
            raise ConfigError(
                f"resume of {self.run_dir} with other settings: {what}. A resumed run continues "
                "with the saved data order, objective and optimiser: pass the run's settings "
                "(pyro-gen train --resume reads them from config.json), or start a new run."
            )

    # -- the non-finite guard ------------------------------------------------------------------
    def raise_non_finite(self, headline: str, what: str) -> None:
        """Raise NonFiniteError naming the non-finite sites of the current batch."""
        where = self._diagnose(self.batch)
        kept = latest_checkpoint(self.run_dir) if self.run_dir else None
        self._progress.close()
        raise NonFiniteError(
            f"{headline} (epoch {self.state.epoch}): {what}; {where}. "
            + (f"The last good checkpoint is {kept}. " if kept else "")
            + "Try a lower lr, clip_norm, or check the data and the model's scales."
        )

    def _diagnose(self, batch: dict) -> str:
        bad = []
        x, kw = batch["x"], {k: v for k, v in batch.items() if k != "x"}
        try:
            with torch.no_grad():
                guide_tr = poutine.trace(self.pair.guide).get_trace(x, **kw)
                model_tr = poutine.trace(poutine.replay(self.pair.model, trace=guide_tr)).get_trace(
                    x, **kw
                )
                for role, tr in (("guide", guide_tr), ("model", model_tr)):
                    for name, site in tr.nodes.items():
                        if site["type"] == "sample" and not site_is_subsample(site):
                            if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                                bad.append(f"{role} site {name!r}")
        except Exception as e:  # the diagnosis must never hide the original error
            bad.append(f"(tracing failed: {e})")
        params = [n for n, p in self.module.named_parameters() if not torch.isfinite(p).all()]
        text = (
            f"non-finite log-probabilities at {', '.join(bad)}"
            if bad
            else "no site is non-finite on re-evaluation"
        )
        if params:
            text += f"; non-finite parameters: {params[:5]}"
        return text

    # -- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: torch.Tensor | Batch) -> float:
        """Mean ELBO per datapoint on ``data`` (β = 1, the model's true bound, nats) by
        :func:`~pyro_gen.evaluate.evaluate_elbo`, with a fixed seed so that epochs are compared
        on the same noise; the training RNG stream is untouched. For a point-mass guide (β = 0)
        it is the reconstruction term E log p(x|z) (no bound): see ``point_mass``."""
        batch = data if isinstance(data, Mapping) else {"x": data}
        world = self.world
        if world.world_size > 1:  # each process its share; the mean over all of them
            batch = {k: v[world.rank :: world.world_size] for k, v in batch.items()}
        kw = {k: v for k, v in batch.items() if k != "x"}
        with forked_rng(self.device):
            torch.manual_seed(self.config.seed + 1)
            result = evaluate_elbo(
                self.pair,
                batch["x"],
                num_particles=self.config.valid_particles,
                batch_size=1024,
                seed=None,
                **kw,
            )
        self._point_mass = result.note
        values = result.elbo if result.is_bound else result.reconstruction
        if world.world_size > 1:
            total = world.sum(torch.stack([values.sum(), values.new_tensor(float(values.numel()))]))
            return float(total[0] / total[1])
        return float(values.mean())

    @property
    def point_mass(self) -> str:
        """Why the validation "ELBO" is no bound ("" when it is one): a point-mass guide."""
        return self._point_mass
