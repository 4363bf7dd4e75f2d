"""Multi-GPU and multi-node training with PyTorch Lightning Fabric: the same loop, step,
callbacks and checkpoints as one process.

:func:`fit_lightning` lets Lightning Fabric start the processes (``devices`` x ``num_nodes``)
and pick each one's device, then runs :class:`~pyro_gen.infer.Trainer` in every process with a
:class:`~pyro_gen.infer.distributed.ProcessGroup`: each process trains on its shard of every
epoch's order, loss and gradients are averaged over processes in one collective per step
(data-parallel SGD, what DDP does with a single bucket), so every replica holds the same
parameters after each step; the global rank 0 writes the run folder (``config.json``,
``model.safetensors``, ``history.csv``, ``checkpoints/step-N/``). Everything the single-process
Trainer does, it does here: objectives by name, β schedules, captured steps, the non-finite
guard with ``max_bad_batches``, validation and early stopping, ``max_time``, progress (rank 0),
user callbacks, and **exact resume**: the checkpoint holds every rank's random state, the data
order is a function of (seed, epoch, rank), so a resumed run continues bit for bit. Resume
with the same number of processes (a ConfigError says so otherwise). On one process the run is
the single-process Trainer's, bit for bit.

Launch:

- one machine: ``pyro-gen train --devices 4 --out RUN`` (Fabric starts the other processes by
  re-running the same command with ``LOCAL_RANK`` set);
- several machines: the same command on every node with ``--num-nodes M`` and the rendezvous in
  the environment: ``MASTER_ADDR`` (node 0's address), ``MASTER_PORT``, ``NODE_RANK``
  (0 .. M-1) — or under SLURM (``srun``) or ``torchrun``, which Lightning detects. ``--out``
  must name a folder on a file system every process reads (resume) and rank 0 writes.

``batch_size`` is per process: with ``devices=4, num_nodes=2`` a step sees 8 x batch_size
datapoints. Each process draws its own Monte-Carlo noise (seed + rank x 1,000,003).

:class:`ELBOLoss` is the objective as an ``nn.Module`` for a user's own LightningModule.
Lightning is an optional dependency (``pip install 'pyro-gen[lightning]'``); it is imported only
when one of these functions runs.

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

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.infer.callbacks import Callback
from pyro_gen.infer.distributed import ProcessGroup
from pyro_gen.infer.step import SVIStep
from pyro_gen.infer.trainer import TrainConfig, Trainer
from pyro_gen.models.pair import ModelGuidePair, as_pair

__all__ = [
    "ELBOLoss",
    "LightningRun",
    "fit_lightning",
    "require_lightning",
    "state_digest",
    "LIGHTNING_EXTRA",
    "STRATEGIES",
]

LIGHTNING_EXTRA = "pip install 'pyro-gen[lightning]'  (or: pip install lightning)"
STRATEGIES = ("ddp", "auto")  # data parallelism: every process holds the whole model


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
        pair = model if isinstance(model, ModelGuidePair) else as_pair(model, guide, module)
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
    resumed: bool = False
    interrupted: bool = False  # a signal (or max_time on another rank) stopped training
    stopped_by: str | None = None  # "max_time", "early_stopping", a signal, or None

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0


def fit_lightning(
    model,
    train: torch.Tensor | dict,
    valid: torch.Tensor | dict | None = None,
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
    callbacks: list[Callback] | None = None,
    step_class: type[SVIStep] = SVIStep,
    **overrides,
) -> LightningRun:
    """Train a model/guide pair on ``devices`` x ``num_nodes`` processes (Lightning Fabric).

    Args:
        model, guide, module, config, overrides, run_dir, resume, sections, callbacks,
            step_class: as for :class:`~pyro_gen.infer.Trainer` (``batch_size`` is per process;
            ``device`` is Fabric's choice for each process; the step class must declare
            ``data_parallel = True``).
        train, valid: tensors ``[N, *data_shape]`` or mappings of equal-length tensors
            (``{"x": X, "y": Y}``), the whole data set on every process (each trains on its
            shard).
        devices, num_nodes, accelerator: Lightning Fabric's.
        strategy: ``"ddp"`` (or ``"auto"``): data parallelism; others raise ConfigError.
        dynamic_binarization: as for ``Trainer.fit``.

    Returns a :class:`LightningRun` on every rank (``replicas_identical`` compares the digests
    of all replicas' parameters and buffers, gathered after training). Raises ConfigError,
    DataError, ShapeError, NonFiniteError, CheckpointError as the Trainer does, on every rank.
    """
    require_lightning()
    from lightning.fabric import Fabric

    if strategy not in STRATEGIES:
        raise ConfigError(
            f"strategy {strategy!r} is not supported: pyro_gen trains data-parallel (every "
            f"process holds the whole model); use one of {list(STRATEGIES)}."
        )
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue.")
    fabric = Fabric(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy
    )
    fabric.launch()  # from here on this code runs in every process
    world = ProcessGroup() if fabric.world_size > 1 else None
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = TrainConfig.from_dict({**base, **overrides, "device": str(fabric.device)})
    spec = {
        "engine": "lightning",
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "accelerator": accelerator,
        "world_size": fabric.world_size,
    }
    trainer = Trainer(
        model,
        guide,
        module=module,
        config=cfg,
        run_dir=run_dir,
        resume=resume,
        sections={**(sections or {}), "distributed": spec},
        callbacks=callbacks,
        step_class=step_class,
        collective=world,
    )
    start = time.perf_counter()
    history = trainer.fit(train, valid, dynamic_binarization=dynamic_binarization)
    wall = time.perf_counter() - start
    digest = state_digest(trainer.module)
    digests = world.gather_object(digest) if world is not None else [digest]
    return LightningRun(
        history=history,
        steps=trainer.state.step,
        epochs=trainer.state.epoch,
        global_rank=fabric.global_rank,
        world_size=fabric.world_size,
        digest=digest,
        replicas_identical=len(set(digests)) == 1,
        wall_seconds=wall,
        run_dir=Path(run_dir) if run_dir is not None else None,
        resumed=resume,
        interrupted=trainer.interrupted,
        stopped_by=trainer.stopped_by,
    )
