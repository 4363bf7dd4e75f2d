"""SVI training for any model/guide pair: minibatches on the device, schedules, checkpoints.

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
import csv
import dataclasses
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from tqdm.auto import tqdm

from pyro_gen.data import Dataset
from pyro_gen.device import resolve_device
from pyro_gen.errors import CheckpointError, ConfigError, DataError, NonFiniteError, did_you_mean
from pyro_gen.evaluate.terms import elbo_terms
from pyro_gen.infer.capture import CapturedLoss
from pyro_gen.infer.checkpoint import (
    latest_checkpoint,
    resume_checkpoint,
    write_checkpoint,
)
from pyro_gen.infer.objectives import ELBOS, make_elbo
from pyro_gen.infer.schedules import BetaSchedule
from pyro_gen.io import atomic_open, check_writable
from pyro_gen.models.pair import ModelGuidePair, as_pair, check_pair
from pyro_gen.models.persistence import save_model

__all__ = ["TrainConfig", "Trainer", "OPTIMIZERS", "LR_SCHEDULES"]

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
LR_SCHEDULES = ("constant", "cosine", "exponential")
FUSED_OPTIMIZERS = ("adam", "adamw", "sgd")
CAPTURE_MODES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in ``config.json`` under ``"train"``)."""

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    fused: bool = False  # the optimiser's fused kernel (adam, adamw, sgd): faster, last-bit changes
    capture: str = "auto"  # loss replayed from a captured graph: auto (pyro_gen models), on, off
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
    log_every: int = 50
    max_bad_batches: int = 0
    validate: bool = True
    progress: bool = True

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
    """What a checkpoint must hold to continue a run exactly."""

    step: int = 0
    epoch: int = 0
    best_valid: float = -math.inf
    bad_epochs: int = 0
    bad_batches: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)


@dataclass
class _Run:
    """What one call of ``fit`` works with (rebuilt on resume; nothing here is saved)."""

    train: torch.Tensor
    valid: torch.Tensor | None
    dynamic: bool
    steps_per_epoch: int
    total_steps: int
    betas: BetaSchedule
    optimizer: torch.optim.Optimizer
    scheduler: object
    elbo: object
    model_fn: Callable
    guide_fn: Callable
    params: list
    deferred: _DeferredCheck | None
    window_loss: torch.Tensor
    window_n: int = 0
    loss: CapturedLoss | None = None
    start: float = 0.0
    last_ckpt: int = 0
    beta: float = 1.0
    batch: torch.Tensor | None = None
    progress: tqdm | None = None


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


def _finite_probe(
    loss: torch.Tensor, params: list[torch.Tensor], grad_norm: torch.Tensor | None
) -> torch.Tensor:
    """A scalar that is finite iff the loss and every gradient are: one reduction over the
    gradients (a sum per tensor; the clipping norm when there is one), no rescaling pass."""
    probe = loss.detach()
    if grad_norm is not None:
        return probe + grad_norm
    sums = [
        p.grad.sum(dtype=torch.float64 if p.grad.dtype == torch.float64 else torch.float32)
        for p in params
        if p.grad is not None
    ]
    return probe + torch.stack(sums).sum() if sums else probe


def _grad_norm(params: list[torch.Tensor]) -> float:
    norms = [torch.linalg.vector_norm(p.grad.float()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


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


def _jit_pair(pair: ModelGuidePair) -> tuple[Callable, Callable]:
    """Model and guide that register the module's parameters with ``pyro.module``, which Pyro's
    JIT needs to pass them to the compiled graph as inputs (used inside a param-store scope)."""
    module = pair.module

    def model(*args, **kwargs):
        pyro.module("pyro_gen", module)
        return pair.model(*args, **kwargs)

    def guide(*args, **kwargs):
        pyro.module("pyro_gen", module)
        return pair.guide(*args, **kwargs)

    return model, guide


class Trainer:
    """Stochastic variational inference for a model/guide pair.

    Args:
        model: a module with ``model``/``guide`` methods (e.g. ``VAE``), or a model callable.
        guide: the guide callable when ``model`` is a callable.
        module: the ``nn.Module`` owning the parameters of a callable model/guide.
        config: a ``TrainConfig``; keyword arguments override its fields.
        run_dir: folder for ``config.json``, checkpoints, ``history.csv``; None keeps nothing.
        resume: continue from the newest good checkpoint in ``run_dir``.
        sections: extra sections for the run's ``config.json`` (e.g. ``{"data": {...}}``).

    The loss is the negative ELBO per datapoint of the β-weighted objective; ``history`` rows
    hold ``step, epoch, loss, valid_elbo, beta, lr, elapsed``.

    Speed: the data stay on the device and batches are index-selected; the ELBOs keep their
    sums on the device. A non-finite loss or gradient is caught before the update on CPU; on
    other devices it is looked at every ``log_every`` steps and before each checkpoint (no host
    sync per step; ``max_bad_batches > 0`` checks every step). ``fused=True`` uses the fused
    Adam/AdamW/SGD kernel (much faster on CPU at small batches; results differ in the last bits).
    ``elbo="jit"`` compiles the step with Pyro's JIT (fixed shapes, constant β).
    ``capture`` replays the loss from a captured graph of its tensor operations
    (:class:`~pyro_gen.infer.capture.CapturedLoss`: no Pyro Python per step, bit-identical
    values); ``"auto"`` does so for pyro_gen's own models, ``"on"`` for any model/guide (whose
    Python side effects then run at capture only), ``"off"`` never.
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
        **overrides,
    ) -> None:
        base = dataclasses.asdict(config) if config is not None else {}
        self.config = TrainConfig.from_dict({**base, **overrides})
        self.pair: ModelGuidePair = as_pair(model, guide, module)
        self.module = self.pair.module
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.sections = dict(sections or {})
        if resume and self.run_dir is None:
            raise ConfigError("resume=True needs the run_dir of the run to continue.")
        self.device = resolve_device(self.config.device)
        self.beta_target = float(getattr(self.module, "beta", 1.0))
        self.state = _State()
        self.interrupted = False
        self.stop_signal: int | None = None  # SIGINT/SIGTERM that stopped fit(), if any
        self.steps_per_second = float("nan")
        self.loss: CapturedLoss | None = None  # the last fit()'s loss: .stats, .disabled

    def _rng_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    # -- set-up ------------------------------------------------------------------------------
    @property
    def history(self) -> list[dict]:
        return self.state.history

    def _beta_schedule(self, total_steps: int) -> BetaSchedule:
        c = self.config
        return BetaSchedule(
            c.beta_schedule,
            self.beta_target,
            c.warmup_steps,
            total_steps,
            c.beta_cycles,
            c.beta_ratio,
        )

    def _make_optimizer(self, total_steps: int):
        c = self.config
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the module has no trainable parameters.")
        kwargs = {"lr": c.lr}
        if c.weight_decay:
            kwargs["weight_decay"] = c.weight_decay
        if c.fused:
            if c.optimizer not in FUSED_OPTIMIZERS:
                raise ConfigError(
                    f"fused=True needs one of {list(FUSED_OPTIMIZERS)}; {c.optimizer!r} has no "
                    "fused kernel."
                )
            kwargs["fused"] = True
        optimizer = OPTIMIZERS[c.optimizer](params, **kwargs)
        if c.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, total_steps)
            )
        elif c.lr_schedule == "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=c.lr_gamma)
        else:
            scheduler = None
        return optimizer, scheduler

    def _prepare_data(self, data, what: str) -> torch.Tensor | None:
        if data is None:
            return None
        if isinstance(data, Dataset):
            raise DataError("pass tensors to fit(); for a Dataset use fit(ds.split('train'), ...).")
        if not isinstance(data, torch.Tensor):
            raise DataError(f"{what} data must be a torch.Tensor; got {type(data).__name__}.")
        if data.shape[0] == 0:
            raise DataError(f"{what} data is empty (shape {list(data.shape)}).")
        if not data.is_floating_point():
            data = data.float()
        if self.config.validate:
            check = self.pair.check_data
            if check is not None:
                check(data) if not self._dynamic else check(torch.bernoulli(data.clamp(0, 1)))
            elif not torch.isfinite(data).all():
                raise DataError(f"{what} data holds NaN or Inf values.")
        return data.to(self.device)

    # -- checkpoints -------------------------------------------------------------------------
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

    def _checkpoint(self, run: _Run) -> Path | None:
        self.state.elapsed = time.perf_counter() - run.start
        run.last_ckpt = self.state.step
        if self.run_dir is None:
            return None
        state = {
            "trainer": dataclasses.asdict(self.state),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "rng": self._rng_state(),
        }
        path = write_checkpoint(
            self.run_dir, self.state.step, self.module, state, keep=self.config.keep_checkpoints
        )
        self._write_history()
        return path

    def _restore(self, optimizer, scheduler) -> None:
        _, weights, state = resume_checkpoint(self.run_dir, stacklevel=3)
        self.module.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.state = _State(**state["trainer"])
        self._set_rng_state(state["rng"])

    def _write_history(self) -> None:
        if self.run_dir is None:
            return
        cols = ["step", "epoch", "loss", "valid_elbo", "beta", "lr", "elapsed"]
        with atomic_open(self.run_dir / "history.csv") as f:
            writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.state.history)

    # -- the non-finite guard ----------------------------------------------------------------
    def _diagnose(self, batch: torch.Tensor) -> str:
        bad = []
        try:
            with torch.no_grad():
                guide_tr = poutine.trace(self.pair.guide).get_trace(batch)
                model_tr = poutine.trace(poutine.replay(self.pair.model, trace=guide_tr)).get_trace(
                    batch
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

    # -- the loop ----------------------------------------------------------------------------
    def fit(
        self,
        train: torch.Tensor,
        valid: torch.Tensor | None = None,
        *,
        dynamic_binarization: bool = False,
    ) -> list[dict]:
        """Train on ``train`` (``[N, *data_shape]``); evaluate the ELBO on ``valid`` each epoch.

        Returns the history (also written to ``run_dir/history.csv``). Ctrl-C or SIGTERM stops
        at the next step with a checkpoint written; ``self.interrupted`` is then True.
        """
        run = self._start(train, valid, dynamic_binarization)
        s = self.state
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
                while s.step < run.total_steps and self._epoch(run, stop):
                    pass
                if hasattr(self.module, "beta"):
                    self.module.beta = self.beta_target
                self._settle(run)
        finally:
            run.progress.close()
        s.elapsed = time.perf_counter() - run.start
        done = s.step - steps_at_start
        self.steps_per_second = done / max(1e-9, time.perf_counter() - t_at_start)
        if run.last_ckpt != s.step or self.interrupted:
            self._checkpoint(run)
        self._write_history()
        return s.history

    def _capture_wanted(self) -> bool:
        """``capture="auto"``: only pyro_gen's own models, whose programs are known to replay
        exactly; a user's program may keep Python state between steps, so it opts in."""
        mode = self.config.capture
        if mode != "auto":
            return mode == "on"
        pair = self.pair
        own = getattr(pair.model, "__self__", None) is pair.module
        own = own and getattr(pair.guide, "__self__", None) is pair.module
        return own and type(pair.module).__module__.startswith("pyro_gen.")

    # -- one run of fit() --------------------------------------------------------------------
    def _start(self, train, valid, dynamic: bool) -> _Run:
        """Check everything, then write the run folder (or restore it): nothing is written
        before the data, the sizes and the model/guide pair have passed their checks."""
        c = self.config
        self._dynamic = dynamic
        if not self.resume:
            pyro.set_rng_seed(c.seed)
        train = self._prepare_data(train, "training")
        valid = self._prepare_data(valid, "validation")
        n = train.shape[0]
        if c.batch_size > n:
            raise ConfigError(
                f"batch_size {c.batch_size} is larger than the training data ({n} datapoints); "
                f"use batch_size <= {n}."
            )
        self.module.to(self.device)
        steps_per_epoch = n // c.batch_size  # the last partial batch is dropped (fixed shapes)
        total_steps = c.max_steps or c.epochs * steps_per_epoch
        betas = self._beta_schedule(total_steps)
        jit = c.elbo.startswith("jit")
        if jit and betas.kind != "constant":
            raise ConfigError("a JIT-compiled ELBO bakes β in; use elbo='trace' with a β schedule.")
        optimizer, scheduler = self._make_optimizer(total_steps)
        model_fn, guide_fn = _jit_pair(self.pair) if jit else (self.pair.model, self.pair.guide)
        # on CPU every step is checked before the update; elsewhere a per-step check would stall
        # the device, so it is looked at every log_every steps (each step with max_bad_batches)
        defer = getattr(self, "_defer_checks", None)  # None: decided by the device (tests set it)
        defer = self.device.type != "cpu" if defer is None else defer
        run = _Run(
            train=train,
            valid=valid,
            dynamic=dynamic,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            betas=betas,
            optimizer=optimizer,
            scheduler=scheduler,
            elbo=make_elbo(c.elbo, c.num_particles, exact_value=False),
            model_fn=model_fn,
            guide_fn=guide_fn,
            params=[p for p in self.module.parameters() if p.requires_grad],
            deferred=_DeferredCheck(self.device) if defer and c.max_bad_batches == 0 else None,
            window_loss=torch.zeros((), device=self.device),
        )
        run.loss = self.loss = CapturedLoss(
            lambda xb: run.elbo.differentiable_loss(run.model_fn, run.guide_fn, xb) / xb.shape[0],
            self.module,
            key=lambda: run.beta,
            enabled=not jit and self._capture_wanted(),
        )
        if c.validate:  # before anything is written, on a forked RNG stream
            with torch.random.fork_rng(devices=self._rng_devices()):
                check_pair(self.pair, self._batch(run, 0, self._permutation(run, 0))[:8])
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
            weights = sum(t.numel() * t.element_size() for t in self.module.state_dict().values())
            # model + optimiser moments per checkpoint, kept checkpoints + the one being written
            check_writable(self.run_dir, 4 * weights * (c.keep_checkpoints + 1))
        if self.resume:
            self._restore(optimizer, scheduler)
        elif self.run_dir is not None:
            save_model(self.module, self.run_dir, train=dataclasses.asdict(c), **self.sections)
        s = self.state
        run.start = time.perf_counter() - s.elapsed
        run.last_ckpt = s.step
        run.progress = tqdm(
            total=total_steps,
            initial=s.step,
            desc="train",
            unit="step",
            disable=not c.progress,
            dynamic_ncols=True,
            leave=True,
        )
        return run

    def _permutation(self, run: _Run, epoch: int) -> torch.Tensor:
        """The epoch's data order: a function of (seed, epoch), so a resumed run needs no state."""
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(run.train.shape[0], generator=g).to(self.device)

    def _batch(self, run: _Run, i: int, perm: torch.Tensor) -> torch.Tensor:
        b = self.config.batch_size
        xb = run.train.index_select(0, perm[i * b : (i + 1) * b])
        return torch.bernoulli(xb) if run.dynamic else xb

    def _epoch(self, run: _Run, stop: _StopRequest) -> bool:
        """The rest of the current epoch; False when training must stop (the step budget is
        spent inside the epoch, a signal came, or early stopping says so)."""
        c, s = self.config, self.state
        perm = self._permutation(run, s.epoch)
        for i in range(s.step - s.epoch * run.steps_per_epoch, run.steps_per_epoch):
            if s.step >= run.total_steps:
                return False
            if stop.signal is not None:
                self.interrupted, self.stop_signal = True, stop.signal
                return False
            run.beta = run.betas(s.step)
            if hasattr(self.module, "beta"):
                self.module.beta = run.beta
            run.batch = self._batch(run, i, perm)
            if not self._step(run):
                continue  # a skipped non-finite batch
            if s.step % c.log_every == 0 or s.step == run.total_steps:
                self._settle(run)
                self._log(run)
                run.progress.set_postfix(
                    loss=f"{s.history[-1]['loss']:.3f}", beta=f"{run.beta:.3g}"
                )
            if c.checkpoint_every and s.step - run.last_ckpt >= c.checkpoint_every:
                self._settle(run)
                self._checkpoint(run)
        self._settle(run)
        s.epoch += 1
        if run.window_n:
            self._log(run)
        if run.valid is not None and self._validate(run):
            return False
        if c.checkpoint_every is None or s.step - run.last_ckpt >= c.checkpoint_every:
            self._checkpoint(run)
        return True

    def _step(self, run: _Run) -> bool:
        """One SVI update on ``run.batch``; False when a non-finite batch was skipped."""
        c, s = self.config, self.state
        xb = run.batch
        loss = run.loss(xb)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(run.params, c.clip_norm)
            if c.clip_norm is not None
            else None
        )
        # a finite loss can still have a NaN gradient, which must not reach step()
        probe = _finite_probe(loss, run.params, grad_norm)
        if run.deferred is not None:
            run.deferred.add(probe, s.step)
        elif not bool(torch.isfinite(probe)):
            s.bad_batches += 1
            if s.bad_batches > c.max_bad_batches:
                if torch.isfinite(loss):
                    norm = float(grad_norm) if grad_norm is not None else _grad_norm(run.params)
                    what = f"the gradient norm is {norm}"
                else:
                    what = f"the loss is {float(loss.detach())}"
                self._raise_non_finite(run, f"training stopped at step {s.step}", what)
            warnings.warn(
                f"step {s.step}: non-finite loss or gradient; batch skipped "
                f"({s.bad_batches}/{c.max_bad_batches}).",
                stacklevel=4,
            )
            run.optimizer.zero_grad(set_to_none=True)
            s.step += 1
            run.progress.update(1)
            return False
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        s.step += 1
        run.window_loss += loss.detach()
        run.window_n += 1
        run.progress.update(1)
        return True

    def _settle(self, run: _Run) -> None:
        """Look at the deferred non-finite check (a no-op where every step is checked)."""
        bad = run.deferred.first_bad() if run.deferred is not None else None
        if bad is not None:
            c = self.config
            self._raise_non_finite(
                run,
                f"training stopped at step {self.state.step}",
                f"the loss or a gradient was non-finite at step {bad} and the update was applied "
                f"(on {self.device.type} the check runs every log_every={c.log_every} steps, "
                "without a per-step host sync; max_bad_batches > 0 checks every step)",
            )

    def _raise_non_finite(self, run: _Run, headline: str, what: str) -> None:
        where = self._diagnose(run.batch)
        kept = latest_checkpoint(self.run_dir) if self.run_dir else None
        run.progress.close()
        raise NonFiniteError(
            f"{headline} (epoch {self.state.epoch}): {what}; {where}. "
            + (f"The last good checkpoint is {kept}. " if kept else "")
            + "Try a lower lr, clip_norm, or check the data and the model's scales."
        )

    def _log(self, run: _Run) -> None:
        mean_loss = float(run.window_loss) / run.window_n
        run.window_loss.zero_()
        run.window_n = 0
        self.state.history.append(self._row(run, mean_loss, run.beta))

    def _row(self, run: _Run, loss: float, beta: float) -> dict:
        s = self.state
        return {
            "step": s.step,
            "epoch": s.epoch,
            "loss": loss,
            "valid_elbo": "",
            "beta": beta,
            "lr": run.optimizer.param_groups[0]["lr"],
            "elapsed": round(time.perf_counter() - run.start, 3),
        }

    def _validate(self, run: _Run) -> bool:
        """Record the validation ELBO; True when early stopping says stop."""
        c = self.config
        s = self.state
        value = self.evaluate(run.valid)
        if s.history and s.history[-1]["step"] == s.step:
            s.history[-1]["valid_elbo"] = value
        else:
            row = self._row(run, float("nan"), getattr(self.module, "beta", 1.0))
            s.history.append({**row, "loss": "", "valid_elbo": value})
        if value > s.best_valid:
            s.best_valid, s.bad_epochs = value, 0
        else:
            s.bad_epochs += 1
        return c.early_stopping is not None and s.bad_epochs >= c.early_stopping

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> float:
        """Mean ELBO per datapoint on ``x`` (β = 1, the model's true bound), with a fixed seed so
        that epochs are compared on the same noise; the training RNG stream is untouched."""
        c = self.config
        devices = self._rng_devices()
        was_training = self.module.training
        self.module.eval()
        with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
            torch.manual_seed(c.seed + 1)
            elbo = torch.cat(
                [
                    elbo_terms(
                        self.pair.model,
                        self.pair.guide,
                        x[i : i + 1024],
                        num_particles=c.valid_particles,
                    )["elbo"]
                    for i in range(0, x.shape[0], 1024)
                ]
            )
        self.module.train(was_training)
        return float(elbo.mean())
