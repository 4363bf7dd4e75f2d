"""Data parallelism for the one training loop: what the :class:`~pyro_gen.infer.Trainer` asks of
the processes it trains with.

A :class:`Collective` says which process this is and does the few collective operations the
loop needs: the mean of one flat buffer (the loss and every gradient, once per step: plain
data-parallel SGD, as DDP with one bucket), a vote (stop now: a signal, ``max_time``, a
callback), a barrier around writes, gathering each process's random state into a checkpoint,
and broadcasting the global rank 0's parameters and buffers. :class:`SingleProcess` is the
default (every operation is the identity); :class:`ProcessGroup` uses ``torch.distributed``'s
default process group, however it was set up (Lightning Fabric in
:func:`pyro_gen.infer.lightning.fit_lightning`, ``torchrun``, SLURM).

>>> world = SingleProcess()
>>> world.rank, world.world_size, world.any(True)
(0, 1, True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Collective", "SingleProcess", "ProcessGroup"]


class Collective:
    """The interface (and the single-process implementation) of the loop's collectives."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def mean_(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat`` averaged over the processes, in place (returned)."""
        return flat

    def any(self, flag: bool, device: torch.device | None = None) -> bool:
        """True when ``flag`` is True on any process (every process gets the same answer)."""
        return self.vote(flag, device=device)[0]

    def vote(self, *flags: bool, device: torch.device | None = None) -> tuple[bool, ...]:
        """For each flag, whether it is True on any process (one collective for all)."""
        return tuple(bool(f) for f in flags)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes (a new tensor)."""
        return values

    def barrier(self) -> None:
        """Wait until every process is here."""

    def gather_object(self, obj: Any) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process (picklable objects)."""
        return [obj]

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Copy the global rank 0's parameters and buffers (or buffers only) into ``module``."""


class SingleProcess(Collective):
    """One process: every collective is the identity."""


class ProcessGroup(Collective):
    """All processes of ``torch.distributed``'s default process group (initialised already).

    Raises RuntimeError when no process group is initialised.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "ProcessGroup needs an initialised torch.distributed process group (Lightning "
                "Fabric's launch(), torchrun or init_process_group set one up)."
            )
        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def mean_(self, flat: torch.Tensor) -> torch.Tensor:
        self._dist.all_reduce(flat)
        return flat.div_(self.world_size)

    def vote(self, *flags: bool, device: torch.device | None = None) -> tuple[bool, ...]:
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MAX)
        return tuple(bool(v > 0) for v in t.tolist())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        out = values.clone()
        self._dist.all_reduce(out)
        return out

    def barrier(self) -> None:
        self._dist.barrier()

    def gather_object(self, obj: Any) -> list:
        out: list = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        tensors = (
            list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
        )
        with torch.no_grad():
            for t in tensors:
                self._dist.broadcast(t.data, src=0)
