"""TensorBoard logging during training, as a callback of the one loop (either engine).

:class:`TensorBoardLogger` writes, with ``torch.utils.tensorboard.SummaryWriter`` (the
``tensorboard`` package), to ``RUN/tensorboard`` (or ``log_dir``):

    train/loss            mean β-weighted −ELBO per datapoint since the last point (nats)
    train/<metric>        any other metric the step reports (a critic's loss, ...)
    train/beta, train/lr  β and the learning rate at that step
    valid/elbo            the validation ELBO after each epoch (nats per datapoint); a β = 0
                          run's is ``valid/reconstruction`` (not a bound)
    samples               a grid of E[x|z], z ~ p(z), after each epoch (models with sample())

The run folder (``history.csv``) stays the source of truth; this is a view where researchers
already look (``tensorboard --logdir runs``). Only what every loop has is used: the hooks, and
``trainer.state.step``, ``trainer.state.history``, ``trainer.step.beta``/``.lr``,
``trainer.config.log_every``, ``trainer.module``, ``trainer.run_dir`` and (when present)
``trainer.world.is_global_zero``: only the global rank 0 writes. A resumed run continues its
curves (an earlier session's events after the checkpoint's step are dropped).

    pyro-gen train --logger tensorboard --out runs/vae     # then: tensorboard --logdir runs

    Trainer(vae, run_dir="runs/vae", callbacks=[TensorBoardLogger()]).fit(x)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pyro_gen.errors import ConfigError
from pyro_gen.infer.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from pyro_gen.infer.trainer import Trainer

__all__ = ["TensorBoardLogger", "LOGGERS", "make_logger"]

LOGGERS = ("none", "tensorboard")
INTERNAL = ("probe", "skipped")  # what a step reports for the guard, not a curve


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is absent
        raise ConfigError(
            "TensorBoard logging needs the tensorboard package: pip install tensorboard "
            f"(or pip install 'pyro-gen[tensorboard]'); {e}"
        ) from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Training curves and sample grids for TensorBoard (see the module's docstring).

    Args:
        log_dir: where the event files go (default ``RUN/tensorboard``; a run without a folder
            needs it).
        every: steps between loss points (default the trainer's ``log_every``).
        num_samples: images in the grid after each epoch (0: no grid).
        seed: the grid's seed, the same every epoch, so the grids show one z changing.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        every: int | None = None,
        num_samples: int = 64,
        seed: int = 0,
    ) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.every = every
        self.num_samples = int(num_samples)
        self.seed = seed
        self.writer = None
        self.window: dict[str, torch.Tensor] = {}
        self.count = 0

    # -- hooks -----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        world = getattr(trainer, "world", None)
        if world is not None and not world.is_global_zero:
            return
        log_dir = self.log_dir
        if log_dir is None:
            if trainer.run_dir is None:
                raise ConfigError(
                    "TensorBoardLogger needs log_dir= when the trainer has no run_dir."
                )
            log_dir = Path(trainer.run_dir) / "tensorboard"
        self.every = self.every or trainer.config.log_every
        step = trainer.state.step
        # a resume drops what an earlier session wrote after the checkpoint it continues from
        purge = step + 1 if step else None
        self.writer = _summary_writer()(log_dir=str(log_dir), purge_step=purge)
        self.window, self.count = {}, 0

    def on_step_end(self, trainer: Trainer, metrics: dict) -> None:
        if self.writer is None or metrics.get("skipped"):
            return
        for name, value in metrics.items():
            if name in INTERNAL or not isinstance(value, (torch.Tensor, float, int)):
                continue
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
            total = self.window.get(name)
            self.window[name] = value.clone() if total is None else total + value
        self.count += 1
        if trainer.state.step % self.every == 0:
            self.flush_scalars(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        if self.count:
            self.flush_scalars(trainer)
        step = trainer.state.step
        row = trainer.state.history[-1] if trainer.state.history else {}
        if row.get("step") == step:
            for key, tag in (
                ("valid_elbo", "valid/elbo"),
                ("valid_reconstruction", "valid/reconstruction"),
            ):
                if row.get(key) not in ("", None):
                    self.writer.add_scalar(tag, float(row[key]), step)
        self.add_samples(trainer)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        if self.count:
            self.flush_scalars(trainer)
        self.writer.close()
        self.writer = None

    # -- what is written -------------------------------------------------------------------------
    def flush_scalars(self, trainer: Trainer) -> None:
        step = trainer.state.step
        for name, total in self.window.items():
            tag = "train/loss" if name == "loss" else f"train/{name}"
            self.writer.add_scalar(tag, float(total) / self.count, step)
        self.writer.add_scalar("train/beta", float(trainer.step.beta), step)
        self.writer.add_scalar("train/lr", float(trainer.step.lr), step)
        self.window, self.count = {}, 0

    @torch.no_grad()
    def add_samples(self, trainer: Trainer) -> None:
        module = trainer.module
        sample = getattr(module, "sample", None)
        if self.num_samples < 1 or not callable(sample):
            return
        from pyro_gen.plots import _as_images, _tile

        was_training = module.training
        module.eval()
        try:
            try:
                x = sample(self.num_samples, seed=self.seed, mean=True)
            except TypeError:  # a sample() without those options
                x = sample(self.num_samples)
            images = _as_images(torch.as_tensor(x).cpu())
        except (ValueError, RuntimeError):  # not images (e.g. flat data of no square size)
            return
        finally:
            module.train(was_training)
        ncols = max(1, min(8, images.shape[0]))
        grid = _tile(images, ncols)
        self.writer.add_image(
            "samples",
            grid.numpy(),
            trainer.state.step,
            dataformats="HW" if grid.dim() == 2 else "HWC",
        )


def make_logger(name: str | None, **kwargs) -> TensorBoardLogger | None:
    """The logger callback named ``name`` (``"tensorboard"``), or None for ``"none"``/None."""
    if name in (None, "none"):
        return None
    if name == "tensorboard":
        _summary_writer()  # fail now, before training, when the package is absent
        return TensorBoardLogger(**kwargs)
    raise ConfigError(f"unknown logger {name!r}; choose one of {LOGGERS}.")
