"""Multi-GPU and multi-node SVI on PyTorch Lightning (DDP), writing pyro_gen's run folder.

The Pyro ELBO becomes an ``nn.Module`` (:class:`ELBOLoss`: parameters = the pair's module,
run with ``module_local_params=True``), a ``LightningModule`` (:func:`svi_module`) trains it with
a torch optimiser, and Lightning's DDP all-reduces the gradients, so every replica holds the same
parameters after each step. :func:`fit_lightning` writes the single-process run folder on the
global rank 0: ``config.json`` + ``model.safetensors`` (:func:`pyro_gen.infer.save_model`),
``history.csv`` and ``checkpoints/step-N/`` (:func:`pyro_gen.infer.write_checkpoint`), so
``load_model``, ``evaluate_elbo`` and every ``pyro-gen`` verb read the result like a
single-process run.

Checkpoints and resume. Checkpoints are written when the single-process Trainer writes them:
every ``checkpoint_every`` steps, at the end of each epoch when ``checkpoint_every`` is None (or
that many steps have passed), and at the end; the newest ``keep_checkpoints`` are kept. A
checkpoint is Lightning's own checkpoint dict stored the pyro_gen way (no pickle, no ``.ckpt``):
the pair's weights as ``model.safetensors``, everything else as ``trainer.json`` +
``trainer.safetensors`` marked ``engine: "lightning"``. Every rank builds the dict, rank 0 writes
it and the others wait at a barrier. ``fit_lightning(..., resume=True)`` (``pyro-gen train
--resume --devices N``) continues from the newest readable checkpoint (a damaged one is skipped
for the one before) to ``epochs`` / ``max_steps``; a run that has spent that budget, or stopped
early, is refused with a ConfigError, a missing run with a CheckpointError. Restored exactly:
the parameters, the optimiser state (moments, step counts), the lr scheduler, the step and epoch
counters and Lightning's loop progress, EarlyStopping's state, the history rows. Not restored,
so a resumed run is not bit-for-bit an uninterrupted one (the single-process Trainer's is):

- the random streams: each rank reseeds from ``seed + rank + 1_000_003 * step``, so the
  Monte-Carlo noise after a resume differs from the uninterrupted run's;
- the data order: resuming in the middle of an epoch draws that epoch's remaining steps from a
  new pass over the data; on one process the shuffling restarts from the seed (under DDP the
  ``DistributedSampler``'s order is a function of the seed and the epoch);
- the mean loss of the steps since the last history row.

Every rank reads the checkpoint (a file system they share, as on one machine); resume with the
same number of processes (a step's batch and an epoch's steps depend on it). The two trainers do
not resume each other's checkpoints (their state differs; the error says which to use). When
Lightning stops on SIGTERM (between steps), rank 0 writes a checkpoint and ``LightningRun``
says ``interrupted``; Ctrl-C (KeyboardInterrupt, which can land in the middle of a step) writes
none: resume from the last periodic checkpoint.

Lightning is an optional dependency (``pip install 'pyro-gen[lightning]'``); it is imported only
when one of these functions runs.

``batch_size`` is per process: with ``devices=4, num_nodes=2`` a step sees 8 x batch_size
datapoints (each rank a different shard, ``DistributedSampler``); the gradient is that of the
mean loss over all of them. Each rank draws its own Monte-Carlo noise (seed + rank).

Launch:

- one machine: ``pyro-gen train --devices 4 --strategy ddp --out RUN`` (Lightning starts the
  other processes itself by re-running the same command with ``LOCAL_RANK`` set);
- several machines: run the same command on every node with ``--num-nodes M`` and the
  rendezvous in the environment: ``MASTER_ADDR`` (node 0's address), ``MASTER_PORT``,
  ``NODE_RANK`` (0 .. M-1) — or under SLURM (``srun``) or ``torchrun``, which Lightning detects.
  ``--out`` must name a folder on a file system the global rank 0 writes to.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> loss = ELBOLoss(vae)(torch.ones(3, 4))
>>> loss.shape
torch.Size([])
>>> run = fit_lightning(vae, torch.ones(32, 4), devices=1, max_steps=2,
...                     batch_size=8, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from pyro_gen.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from pyro_gen.evaluate.terms import elbo_terms
from pyro_gen.infer.callbacks import HISTORY_COLUMNS
from pyro_gen.infer.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    resume_checkpoint,
    write_checkpoint,
)
from pyro_gen.infer.schedules import BetaSchedule
from pyro_gen.infer.step import SVIStep, make_optimizer
from pyro_gen.infer.trainer import TrainConfig
from pyro_gen.io import atomic_open, check_writable
from pyro_gen.models.pair import ModelGuidePair, as_pair, check_pair
from pyro_gen.models.persistence import save_model

__all__ = [
    "ELBOLoss",
    "LightningRun",
    "svi_module",
    "fit_lightning",
    "require_lightning",
    "state_digest",
    "LIGHTNING_EXTRA",
]

LIGHTNING_EXTRA = "pip install 'pyro-gen[lightning]'  (or: pip install lightning)"


def require_lightning():
    """``lightning.pytorch``, or an ImportError that says how to install it."""
    try:
        import lightning.pytorch as pl
    except ImportError as e:
        raise ImportError(
            "multi-GPU / multi-node training needs PyTorch Lightning, an optional dependency of "
            f"pyro_gen: {LIGHTNING_EXTRA}. ({e})"
        ) from e
    return pl


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's ``state_dict`` (names, dtypes, shapes, bytes): equal iff the
    replicas hold bit-identical parameters and buffers."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ELBOLoss(nn.Module):
    """The negative β-ELBO per datapoint of a model/guide pair, as an ``nn.Module``: the
    objective of :class:`~pyro_gen.infer.step.SVIStep` (the same checks, β on the latents, the
    N/B scale of the ``"data"`` plate where the program has global latents, named batches).

    Its parameters are those of the pair's module (the ``net`` submodule), so a torch optimiser,
    DDP or Lightning see them; ``forward(x, **observed)`` runs Pyro with
    ``module_local_params=True`` (no global param store) and validation off. ``beta`` is set by
    the β schedule; ``num_data`` (N, default: the batch's size) by :func:`fit_lightning`.
    """

    def __init__(
        self,
        model,
        guide: Callable | None = None,
        *,
        module: nn.Module | None = None,
        elbo: str = "trace",
        num_particles: int = 1,
    ) -> None:
        super().__init__()
        pair = _to_pair(model, guide, module)
        if elbo.startswith("jit"):
            raise ConfigError(
                "a JIT-compiled ELBO needs Pyro's global param store; use elbo='trace' or "
                "'meanfield' with Lightning."
            )
        self.net = pair.module
        object.__setattr__(self, "pair", pair)  # not a submodule: net already is
        object.__setattr__(self, "step", SVIStep(pair, elbo=elbo, num_particles=num_particles))
        self.beta = 1.0
        self.num_data: int | None = None

    def forward(self, x: torch.Tensor, **observed) -> torch.Tensor:
        batch = {"x": x, **observed}
        with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
            if self.step.loss is None:  # the objective is built (and checked) on first use
                self.step.init(batch, num_data=self.num_data or x.shape[0], total_steps=1)
            self.step.beta = self.beta
            return self.step.objective(*batch.values())


@dataclass
class LightningRun:
    """What :func:`fit_lightning` returns on every rank."""

    history: list[dict] = field(default_factory=list)
    steps: int = 0
    epochs: int = 0
    global_rank: int = 0
    world_size: int = 1
    digest: str = ""
    replicas_identical: bool = True
    wall_seconds: float = 0.0
    run_dir: Path | None = None
    resumed_from: Path | None = None  # the checkpoint folder a resumed run started from
    interrupted: bool = False  # SIGTERM stopped training (a checkpoint was written)

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0


_CLASS_CACHE: dict[str, type] = {}


def svi_module(
    model,
    guide: Callable | None = None,
    *,
    module: nn.Module | None = None,
    config: TrainConfig | None = None,
    **overrides,
):
    """A ``LightningModule`` that trains a model/guide pair by SVI (see :class:`ELBOLoss`).

    Training settings are a :class:`~pyro_gen.infer.TrainConfig` (keyword overrides allowed):
    optimiser, lr, schedules, β schedule, particles, clip_norm (as Lightning's
    ``gradient_clip_val``), log_every. It logs ``train_loss`` and ``valid_elbo``.
    """
    pl = require_lightning()
    if "SVIModule" not in _CLASS_CACHE:
        _CLASS_CACHE["SVIModule"] = _make_class(pl)
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = TrainConfig.from_dict({**base, **overrides})
    return _CLASS_CACHE["SVIModule"](_to_pair(model, guide, module), cfg)


def _to_pair(model, guide, module) -> ModelGuidePair:
    return model if isinstance(model, ModelGuidePair) else as_pair(model, guide, module)


def _make_class(pl) -> type:
    class SVIModule(pl.LightningModule):
        """SVI for a model/guide pair; the ELBO is the ``loss_fn`` submodule."""

        def __init__(self, pair: ModelGuidePair, config: TrainConfig) -> None:
            super().__init__()
            self.config = config
            self.loss_fn = ELBOLoss(pair, elbo=config.elbo, num_particles=config.num_particles)
            self.beta_target = float(getattr(pair.module, "beta", 1.0))
            self.dynamic_binarization = False
            self.rows: list[dict] = []
            self._window: list[torch.Tensor] = []
            self._t0 = time.perf_counter()
            self._elapsed0 = 0.0  # seconds trained before a resume
            self._row_step = -1  # the step of the last row logged at a batch end
            self._betas: BetaSchedule | None = None

        @property
        def pair(self) -> ModelGuidePair:
            return self.loss_fn.pair

        # -- optimisation ------------------------------------------------------------------
        def configure_optimizers(self):
            c = self.config
            optimizer, sched = make_optimizer(
                [p for p in self.loss_fn.parameters() if p.requires_grad],
                total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
                **c.optimizer_settings(),
            )
            if sched is None:
                return optimizer
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": sched, "interval": "step"},
            }

        def on_train_start(self) -> None:
            c = self.config
            total = max(1, int(self.trainer.estimated_stepping_batches))
            self._betas = BetaSchedule(
                c.beta_schedule,
                self.beta_target,
                c.warmup_steps,
                total,
                c.beta_cycles,
                c.beta_ratio,
            )
            # replicas start equal (DDP broadcasts rank 0's weights); their noise must differ.
            # A resumed run starts at its step: a fresh stream, not the one the run began with.
            pyro.set_rng_seed((c.seed + self.global_rank + 1_000_003 * self.global_step) % 2**32)
            self._t0 = time.perf_counter()

        def training_step(self, batch, batch_idx: int) -> torch.Tensor:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if self.dynamic_binarization:
                x = torch.bernoulli(x)
            # β is the objective's argument (the model is never written to)
            self.loss_fn.beta = self._betas(self.global_step) if self._betas is not None else 1.0
            loss = self.loss_fn(x)
            self._window.append(loss.detach())
            return loss

        def on_before_optimizer_step(self, optimizer) -> None:
            # after DDP's all-reduce every rank holds the same gradients, so every rank
            # reaches the same verdict (no rank is left waiting in a collective)
            if self.device.type != "cpu" and (self.global_step + 1) % self.config.log_every:
                return  # on accelerators: look every log_every steps (no per-step sync)
            grads = [p.grad for p in self.loss_fn.parameters() if p.grad is not None]
            if grads and not bool(torch.isfinite(torch.stack([g.sum() for g in grads]).sum())):
                raise NonFiniteError(
                    f"training stopped at step {self.global_step}: a gradient is non-finite "
                    "(NaN or Inf) on every replica after the all-reduce. Try a lower lr, "
                    "clip_norm, or check the data and the model's scales."
                )

        def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
            self.log_due_row()

        def log_due_row(self) -> None:
            """The history row of this step if one is due (every ``log_every`` steps and the
            last); once per step (the checkpoint callback calls it before saving). A collective:
            every rank calls it at the same step."""
            step = self.global_step
            if step == self._row_step:
                return
            last = step >= max(1, int(self.trainer.estimated_stepping_batches))
            if step % self.config.log_every and not last:
                return
            self._row_step = step
            self._log_row(step)

        def elapsed(self) -> float:
            return self._elapsed0 + time.perf_counter() - self._t0

        # -- checkpoints (written by RunFolderIO, below) ----------------------------------
        def on_save_checkpoint(self, checkpoint: dict) -> None:
            trainer = self.trainer
            checkpoint["pyro_gen"] = {
                "history": [dict(r) for r in self.rows],
                "elapsed": self.elapsed(),
                "epochs_done": int(trainer.fit_loop.epoch_progress.current.processed),
                "stopped_early": bool(trainer.should_stop),
                "world_size": int(trainer.world_size),
            }

        def on_load_checkpoint(self, checkpoint: dict) -> None:
            info = checkpoint.get("pyro_gen", {})
            self.rows = [dict(r) for r in info.get("history", [])]
            self._elapsed0 = float(info.get("elapsed", 0.0))

        def on_train_epoch_end(self) -> None:
            if self._window:
                self._log_row(self.global_step)

        def _log_row(self, step: int) -> None:
            window = torch.stack(self._window).mean()
            self._window = []
            mean = self.trainer.strategy.reduce(window, reduce_op="mean")  # a collective
            value = float(mean)
            self.log("train_loss", value, rank_zero_only=True)
            lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else 0
            self.rows.append(
                {
                    "step": step,
                    "epoch": self.current_epoch,
                    "loss": value,
                    "valid_elbo": "",
                    "beta": self._betas(max(0, step - 1)) if self._betas else 1.0,
                    "lr": lr,
                    "elapsed": round(self.elapsed(), 3),
                }
            )

        # -- validation --------------------------------------------------------------------
        def validation_step(self, batch, batch_idx: int) -> None:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            devices = [self.device] if self.device.type == "cuda" else []
            with pyro.validation_enabled(False), torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.seed + 1)
                with pyro.settings.context(module_local_params=True):
                    elbo = elbo_terms(
                        self.pair.model,
                        self.pair.guide,
                        x,
                        num_particles=self.config.valid_particles,
                    )["elbo"]
            self.log("valid_elbo", elbo.mean(), sync_dist=True, batch_size=x.shape[0])

        def on_validation_epoch_end(self) -> None:
            value = self.trainer.callback_metrics.get("valid_elbo")
            if value is None or self.trainer.sanity_checking:
                return
            value = float(value)
            if self._window and not self.trainer.sanity_checking:
                # the steps since the last row get theirs first (as in the Trainer): one row per
                # step, with the loss and the validation ELBO (every rank runs this hook)
                self._row_step = self.global_step
                self._log_row(self.global_step)
            if self.rows and self.rows[-1]["step"] == self.global_step:
                self.rows[-1]["valid_elbo"] = value
            else:
                self.rows.append(
                    {
                        "step": self.global_step,
                        "epoch": self.current_epoch,
                        "loss": "",
                        "valid_elbo": value,
                        "beta": self.beta_target,
                        "lr": "",
                        "elapsed": round(self.elapsed(), 3),
                    }
                )

    return SVIModule


ENGINE = "lightning"  # the ``engine`` of a checkpoint's trainer state (see read_checkpoint)
_NET = "loss_fn.net."  # where the pair's module sits in the LightningModule's state_dict


def _run_folder_classes() -> tuple[type, type]:
    """(the CheckpointIO plugin, the checkpoint callback), built once Lightning is imported."""
    if "RunFolderIO" not in _CLASS_CACHE:
        from lightning.fabric.plugins import CheckpointIO
        from lightning.pytorch.callbacks import Checkpoint

        _CLASS_CACHE["RunFolderIO"] = _make_io_class(CheckpointIO)
        _CLASS_CACHE["RunFolderCheckpoints"] = _make_callback_class(Checkpoint)
    return _CLASS_CACHE["RunFolderIO"], _CLASS_CACHE["RunFolderCheckpoints"]


def _make_io_class(base: type) -> type:
    class RunFolderIO(base):
        """Lightning's checkpoint dict <-> a pyro_gen checkpoint folder, never a pickle.

        ``save_checkpoint(ckpt, RUN)`` (global rank 0, called by ``Trainer.save_checkpoint``)
        writes ``RUN/checkpoints/step-N/`` with :func:`~pyro_gen.infer.write_checkpoint`: the
        pair's weights as ``model.safetensors`` (the Trainer's format, so ``load_model`` reads
        them) and the rest of Lightning's dict (loops, optimiser, lr scheduler, callbacks,
        history) as ``trainer.json`` + ``trainer.safetensors`` with ``engine: "lightning"``.
        ``load_checkpoint(step-N folder)`` rebuilds the dict for ``Trainer.fit(ckpt_path=...)``.
        """

        def __init__(self, module: nn.Module, keep: int, preloaded=None) -> None:
            super().__init__()
            self.module = module
            self.keep = keep
            self.preloaded = preloaded  # (folder, weights, state) read before fit

        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            weights = checkpoint["state_dict"]
            state = {k: v for k, v in checkpoint.items() if k != "state_dict"}
            # the pair's weights are model.safetensors; anything else the LightningModule holds
            # (nothing, for SVIModule) goes with the trainer state
            state["extra_state_dict"] = {k: v for k, v in weights.items() if not k.startswith(_NET)}
            step = int(checkpoint["global_step"])
            write_checkpoint(
                path, step, self.module, {"engine": ENGINE, "lightning": state}, keep=self.keep
            )
            _write_history(Path(path), checkpoint.get("pyro_gen", {}).get("history", []))

        def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
            if self.preloaded is not None and Path(path) == self.preloaded[0]:
                weights, state = self.preloaded[1], self.preloaded[2]
                self.preloaded = None  # read once
            else:
                weights, state = read_checkpoint(path, engine=ENGINE)
            checkpoint = dict(state["lightning"])
            extra = checkpoint.pop("extra_state_dict", {}) or {}
            checkpoint["state_dict"] = {**{_NET + k: v for k, v in weights.items()}, **extra}
            return checkpoint

        def remove_checkpoint(self, path) -> None:
            shutil.rmtree(path, ignore_errors=True)

    return RunFolderIO


def _make_callback_class(base: type) -> type:
    class RunFolderCheckpoints(base):
        """When to checkpoint, as :class:`~pyro_gen.infer.Trainer` does: every
        ``checkpoint_every`` steps, at the end of an epoch when ``checkpoint_every`` is None or
        that many steps have passed, and at the end of training (also on SIGTERM, rank 0 only).

        Every rank calls ``Trainer.save_checkpoint`` (its dump is local for DDP); the global
        rank 0 writes, then all wait at Lightning's barrier, so no rank trains on while the
        checkpoint is written. A ``Checkpoint`` subclass: Lightning calls it after the
        LightningModule's and EarlyStopping's epoch-end hooks (the epoch's rows and the stop
        decision are in the checkpoint).
        """

        def __init__(self, run_dir: Path, every: int | None, start: Callable) -> None:
            self.run_dir = Path(run_dir)
            self.every = every
            self.start = start  # writes config.json etc. for a new run (global rank 0)
            self.last = 0  # the step of the newest checkpoint

        def setup(self, trainer, pl_module, stage) -> None:
            # after the processes are started (Lightning's launcher re-runs the script: nothing
            # may be written before), before training; Lightning's barrier follows
            if trainer.is_global_zero:
                self.start(trainer)

        def on_train_start(self, trainer, pl_module) -> None:
            self.last = trainer.global_step

        def _max_steps_reached(self, trainer) -> bool:
            return trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                return  # the epoch's end checkpoints it, after validation
            step = trainer.global_step
            if (self.every and step - self.last >= self.every) or self._max_steps_reached(trainer):
                self._save(trainer, pl_module)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            step = trainer.global_step
            if step == self.last:
                return
            done = trainer.fit_loop.epoch_progress.current.processed
            final = (
                trainer.should_stop
                or self._max_steps_reached(trainer)
                or (trainer.max_epochs not in (None, -1) and done >= trainer.max_epochs)
            )
            if self.every is None or step - self.last >= self.every or final:
                self._save(trainer, pl_module)

        def on_exception(self, trainer, pl_module, exception) -> None:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            # Lightning raises SIGTERMException between steps (on every rank after a broadcast,
            # or at an epoch's end): a consistent state. Rank 0 writes it alone; there is no
            # barrier, since the other ranks may be gone.
            if not isinstance(exception, SIGTERMException) or not trainer.is_global_zero:
                return
            if trainer.global_step == self.last:
                return
            try:
                checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.run_dir)
                self.last = trainer.global_step
            except Exception as e:  # never hide the signal
                warnings.warn(f"no checkpoint written on SIGTERM: {e}", stacklevel=2)

        def _save(self, trainer, pl_module) -> None:
            pl_module.log_due_row()  # this step's history row goes into the checkpoint
            trainer.save_checkpoint(self.run_dir, weights_only=False)
            self.last = trainer.global_step

    return RunFolderCheckpoints


def _resume_point(run_dir: Path, cfg: TrainConfig) -> tuple[Path, dict, dict]:
    """The newest readable checkpoint of a Lightning run (folder, weights, state); older ones
    are tried when the newest is damaged. CheckpointError when there is none, ConfigError when
    the run has already spent ``cfg``'s budget. Reads only."""
    if not run_dir.is_dir():
        raise CheckpointError(
            f"nothing to resume: the run folder {run_dir} does not exist. Start a new run "
            "without resume."
        )
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(
            f"nothing to resume in {run_dir}: it holds no checkpoints/ folder. Start a new run "
            "without resume."
        )
    ckpt, weights, state = resume_checkpoint(run_dir, engine=ENGINE, stacklevel=3)
    info = state["lightning"].get("pyro_gen", {})
    step = int(state["lightning"]["global_step"])
    epochs = int(info.get("epochs_done", 0))
    where = f"{ckpt.name} (step {step}, {epochs} epochs done)"
    if info.get("stopped_early"):
        raise ConfigError(
            f"{run_dir} has finished: early stopping ended it at {where}. Start a new run to "
            "train further."
        )
    if cfg.max_steps is not None and step >= cfg.max_steps:
        raise ConfigError(
            f"{run_dir} has finished: max_steps={cfg.max_steps} and its newest checkpoint is "
            f"{where}. To train further, raise max_steps (--max-steps)."
        )
    if cfg.max_steps is None and epochs >= cfg.epochs:
        raise ConfigError(
            f"{run_dir} has finished: epochs={cfg.epochs} and its newest checkpoint is {where}. "
            "To train further, raise epochs (--epochs)."
        )
    return ckpt, weights, state


def _loader(x: torch.Tensor, batch_size: int, shuffle: bool, drop_last: bool, seed: int):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(x), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=g
    )


def _has_unused_parameters(loss_fn: ELBOLoss, x: torch.Tensor) -> bool:
    """Whether one backward pass leaves a trainable parameter without a gradient (DDP must
    then look for unused parameters every step)."""
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    with torch.random.fork_rng(devices=[]):
        for p in params:
            p.grad = None
        loss_fn(x).backward()
        unused = any(p.grad is None for p in params)
    for p, g in zip(params, saved):
        p.grad = g
    return unused


def fit_lightning(
    model,
    train: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    config: TrainConfig | None = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "ddp",
    accelerator: str = "auto",
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    dynamic_binarization: bool = False,
    sections: dict | None = None,
    trainer_kwargs: dict | None = None,
    **overrides,
) -> LightningRun:
    """Train a model/guide pair with Lightning on ``devices`` x ``num_nodes`` processes.

    Args:
        model, guide, module: as for :class:`~pyro_gen.infer.Trainer`.
        train, valid: ``[N, *data_shape]`` tensors (each rank reads its shard).
        config, overrides: :class:`~pyro_gen.infer.TrainConfig` settings; ``batch_size`` is per
            process; ``checkpoint_every`` and ``keep_checkpoints`` as for the Trainer. Not
            supported here: ``elbo='jit'``, ``max_bad_batches``.
        devices, num_nodes, strategy, accelerator: Lightning's (``strategy="ddp"`` looks for
            unused parameters only when one backward pass leaves one without a gradient).
        run_dir: where the global rank 0 writes ``config.json``, checkpoints
            (``checkpoints/step-N/``), ``model.safetensors`` and ``history.csv`` (the
            single-process layout and formats); None writes nothing.
        resume: continue the run in ``run_dir`` from its newest readable checkpoint (see the
            module's docstring for what is restored); every rank reads it.
        sections: extra ``config.json`` sections (e.g. ``data={...}``).
        trainer_kwargs: further ``lightning.pytorch.Trainer`` arguments.

    Returns a :class:`LightningRun` on every rank (``replicas_identical`` compares the digests
    of all replicas' parameters, gathered after training).
    """
    pl = require_lightning()
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = TrainConfig.from_dict({**base, **overrides})
    if cfg.max_bad_batches:
        raise ConfigError("max_bad_batches is not supported with Lightning; leave it at 0.")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue.")
    run_path = Path(run_dir) if run_dir is not None else None
    pair = as_pair(model, guide, module)
    train = _as_data(train, pair, cfg, "training", dynamic_binarization)
    valid = _as_data(valid, pair, cfg, "validation", False) if valid is not None else None
    if cfg.batch_size > train.shape[0]:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is larger than the training data ({train.shape[0]})."
        )
    pyro.set_rng_seed(cfg.seed)
    lit = svi_module(pair, config=cfg)
    lit.loss_fn.num_data = train.shape[0]  # the full-data ELBO where there are global latents
    lit.dynamic_binarization = dynamic_binarization
    owner = next(iter(pair.module.parameters()), None)
    probe = train[: min(8, cfg.batch_size)].to(owner.device if owner is not None else "cpu")
    if dynamic_binarization:
        probe = torch.bernoulli(probe.clamp(0, 1))
    if cfg.validate:
        with torch.random.fork_rng(devices=[]):
            check_pair(pair, probe)
    # the run folder is only read here, on every rank (with Lightning's launcher the other
    # ranks re-run this code while rank 0 waits for them): the first write is in setup()
    resume_from = None
    if resume:
        resume_from = _resume_point(run_path, cfg)
    elif run_path is not None and latest_checkpoint(run_path) is not None:
        raise ConfigError(
            f"{run_path} already holds a run; pass resume=True (--resume) to continue it, or "
            "choose a new folder."
        )
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=_has_unused_parameters(lit.loss_fn, probe))
    kwargs: dict[str, Any] = {
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "accelerator": accelerator,
        "max_epochs": cfg.epochs if cfg.max_steps is None else -1,
        "max_steps": cfg.max_steps if cfg.max_steps is not None else -1,
        # the wall-clock budget: Lightning's Timer (its elapsed time is in every checkpoint, so
        # the budget counts over resumes, as on one process)
        "max_time": datetime.timedelta(seconds=cfg.max_time) if cfg.max_time else None,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": cfg.progress,
        "num_sanity_val_steps": 0,
        "gradient_clip_val": cfg.clip_norm,
        "gradient_clip_algorithm": "norm",
        "deterministic": False,
        "default_root_dir": str(run_path) if run_path is not None else None,
    }

    def distributed(trainer, **extra) -> dict:
        return {
            "engine": ENGINE,
            "devices": devices,
            "num_nodes": num_nodes,
            "strategy": strategy if isinstance(strategy, str) else "ddp",
            "accelerator": accelerator,
            "world_size": trainer.world_size,
            **extra,
        }

    def start(trainer) -> None:  # global rank 0, once the processes are up
        if resume_from is not None:  # the run folder is there, with its config.json
            saved = resume_from[2]["lightning"].get("pyro_gen", {}).get("world_size")
            if saved is not None and saved != trainer.world_size:
                warnings.warn(
                    f"resuming a run trained on {saved} processes on {trainer.world_size}: a "
                    "step now sees a different number of datapoints, and an epoch that was "
                    "interrupted is counted in the new number of steps.",
                    stacklevel=2,
                )
            return
        weights = sum(t.numel() * t.element_size() for t in pair.module.state_dict().values())
        # model + optimiser moments per checkpoint, kept checkpoints + the one being written
        check_writable(run_path, 4 * weights * (cfg.keep_checkpoints + 1))
        save_model(
            pair.module,
            run_path,
            train=dataclasses.asdict(cfg),
            distributed=distributed(trainer),
            **(sections or {}),
        )

    callbacks = []
    if cfg.early_stopping is not None and valid is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        callbacks.append(EarlyStopping("valid_elbo", patience=cfg.early_stopping, mode="max"))
    extra = dict(trainer_kwargs or {})
    callbacks += list(extra.pop("callbacks", None) or [])
    plugins = list(extra.pop("plugins", None) or [])
    if run_path is not None:
        io_class, callback_class = _run_folder_classes()
        plugins.append(io_class(pair.module, cfg.keep_checkpoints, resume_from))
        callbacks.append(callback_class(run_path, cfg.checkpoint_every, start))
        kwargs["enable_checkpointing"] = True  # with ours as the Checkpoint callback
    kwargs["callbacks"] = callbacks
    if plugins:
        kwargs["plugins"] = plugins
    kwargs.update(extra)
    trainer = pl.Trainer(**kwargs)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    start_time = time.perf_counter()
    interrupted = False
    with warnings.catch_warnings():
        if resume_from is not None:  # said in the docs: a mid-epoch resume draws new batches
            warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
        try:
            trainer.fit(
                lit,
                train_dataloaders=_loader(train, cfg.batch_size, True, True, cfg.seed),
                val_dataloaders=_loader(valid, 1024, False, False, cfg.seed)
                if valid is not None
                else None,
                ckpt_path=str(resume_from[0]) if resume_from is not None else None,
            )
        except SIGTERMException:
            interrupted = True
    wall = time.perf_counter() - start_time
    digest = state_digest(pair.module)
    digests = [digest]
    if trainer.world_size > 1 and torch.distributed.is_available() and not interrupted:
        if torch.distributed.is_initialized():
            digests = [None] * trainer.world_size
            torch.distributed.all_gather_object(digests, digest)
    result = LightningRun(
        history=lit.rows,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        global_rank=trainer.global_rank,
        world_size=trainer.world_size,
        digest=digest,
        replicas_identical=len(set(digests)) == 1,
        wall_seconds=wall,
        run_dir=run_path,
        resumed_from=resume_from[0] if resume_from is not None else None,
        interrupted=interrupted,
    )
    if run_path is not None and trainer.is_global_zero:
        if not interrupted:
            pair.module.to("cpu")
            save_model(
                pair.module,
                run_path,
                train=dataclasses.asdict(cfg),
                distributed=distributed(trainer, replicas_identical=result.replicas_identical),
                **(sections or {}),
            )
        _write_history(run_path, lit.rows)
    return result


def _as_data(
    data, pair: ModelGuidePair, cfg: TrainConfig, what: str, dynamic: bool
) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{what} data must be a torch.Tensor; got {type(data).__name__}.")
    if data.shape[0] == 0:
        raise DataError(f"{what} data is empty (shape {list(data.shape)}).")
    if not data.is_floating_point():
        data = data.float()
    if cfg.validate:
        check = pair.check_data
        if check is not None:
            check(torch.bernoulli(data.clamp(0, 1)) if dynamic else data)
        elif not torch.isfinite(data).all():
            raise DataError(f"{what} data holds NaN or Inf values.")
    return data.cpu()


def _write_history(run_dir: Path, rows: list[dict]) -> None:
    with atomic_open(run_dir / "history.csv") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(
            {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows
        )
