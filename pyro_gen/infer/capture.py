"""An SVI loss captured as a flat graph of tensor operations and replayed without Pyro's Python.

A Pyro step spends 0.5-1 ms in Python (handlers, messages, traces, distribution objects) on
top of the tensor work: a fifth of a small-batch step on CPU, more on a GPU. The tensor work
itself is the same as a hand-written loss. :class:`CapturedLoss` runs the program once under
``torch.fx``'s ``make_fx`` (the program runs as usual and every tensor operation, random
draws included, is recorded), then replays the recorded operations on later calls. A replay
draws fresh noise from the same generator in the same order, so values and gradients are
bit-for-bit the eager ones (checked on every capture) and seeded runs stay reproducible.

A capture is made per *key* (batch shape, dtype and device, grad and training mode, autocast,
plus whatever ``key`` adds, e.g. β), and only once the same key comes twice in a row, so a β
that changes every step runs eagerly until it settles. The program runs eagerly instead
(with one warning that says why) when it

- reads a tensor value on the host (``.item()``, ``if x.sum() > 0``): data-dependent control
  flow cannot be replayed;
- uses a tensor that needs a gradient but is not one of ``tensors`` (e.g. ``pyro.param`` in the
  global param store);
- gives a different loss or gradient from the eager run on the capture's check.

Buffers (BatchNorm's running statistics, counters) advance exactly once per call, as in eager
mode: a capture runs the program three times (trace, eager check, replay), so the buffers are
snapshot before and restored before each run, and the check compares the buffers the eager run
and the replay leave behind as well as the loss and gradients. When the check fails the eager
run's loss, buffers and random state are the ones kept.

What cannot be seen is Python state that changes between steps without being in the key (an
attribute counting calls, Python's ``random``): such a program runs its Python three times on a
capture. That is why the trainer captures only model classes that declare ``capturable = True``.

>>> import pyro, torch
>>> from pyro_gen.infer.objectives import make_elbo
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> elbo = make_elbo("trace")
>>> loss = CapturedLoss(lambda x: elbo.differentiable_loss(vae.model, vae.guide, x), vae)
>>> x = torch.ones(3, 4)
>>> with pyro.validation_enabled(False):  # validation reads values on the host
...     for _ in range(3):
...         loss(x).backward()
>>> loss.stats["replays"], loss.disabled
(1, None)
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import torch
from torch import nn

from pyro_gen.infer.graph_passes import flat_arguments, simplify

__all__ = ["CapturedLoss", "buffers_kept"]


def _autocast_state() -> tuple:
    """Which autocast is on, and to what dtype (it decides the casts a capture records)."""
    try:
        return tuple(
            (kind, torch.get_autocast_dtype(kind))
            for kind in ("cpu", "cuda")
            if torch.is_autocast_enabled(kind)
        )
    except TypeError:  # torch < 2.4: no device-type argument
        return (torch.is_autocast_enabled(), torch.is_autocast_cpu_enabled())


class CapturedLoss:
    """``loss_fn(*batch)`` (a scalar tensor) replayed from a captured graph where that is safe.

    Args:
        loss_fn: the loss of one batch, given as positional tensors; it may use any parameter
            or buffer of ``module``.
        module: owns the tensors the loss reads (they become the graph's inputs, so optimiser
            updates are seen by every replay).
        key: extra program state that changes what runs (called every step; hashable).
        max_graphs: captures kept (least recently used go first).
        enabled: False runs ``loss_fn`` eagerly every time.

    ``stats`` counts ``eager`` calls, ``captures`` and ``replays``; ``disabled`` is None or the
    reason capture was given up.
    """

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        module: nn.Module,
        *,
        key: Callable[[], Hashable] | None = None,
        max_graphs: int = 4,
        enabled: bool = True,
    ) -> None:
        self.loss_fn = loss_fn
        self.module = module
        self.key = key
        self.max_graphs = max_graphs
        self.disabled: str | None = None if enabled else "capture is off"
        self.stats = {"eager": 0, "captures": 0, "replays": 0}
        self._graphs: OrderedDict[Hashable, tuple[Callable, list]] = OrderedDict()
        self._last_key: Hashable | None = None

    def _tensors(self) -> list[torch.Tensor]:
        return [*self.module.parameters(), *self.module.buffers()]

    def _key(self, batch: tuple[torch.Tensor, ...]) -> Hashable:
        extra = self.key() if self.key is not None else None
        return (
            tuple((tuple(x.shape), x.dtype, x.device) for x in batch),
            torch.is_grad_enabled(),
            self.module.training,
            _autocast_state(),
            extra,
        )

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        if self.disabled is not None:
            self.stats["eager"] += 1
            return self.loss_fn(*batch)
        key = self._key(batch)
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            self.stats["replays"] += 1
            graph, tensors = entry
            return graph(*tensors, *batch)
        if key != self._last_key:  # not (yet) a steady state: run the program as usual
            self._last_key = key
            self.stats["eager"] += 1
            return self.loss_fn(*batch)
        return self._capture(key, batch)

    def _give_up(self, reason: str, batch: tuple, eager: torch.Tensor | None = None):
        """Stop capturing; return ``eager`` (a call already made) or run the program now."""
        self.disabled = reason
        self._graphs.clear()
        warnings.warn(
            f"the loss is not replayed from a captured graph ({reason}); it runs eagerly, "
            "which is correct but slower. Turn capture off to silence this "
            "(Trainer: capture='off').",
            stacklevel=3,
        )
        self.stats["eager"] += 1
        return eager if eager is not None else self.loss_fn(*batch)

    def _capture(self, key: Hashable, batch: tuple) -> torch.Tensor:
        from torch.fx.experimental.proxy_tensor import make_fx

        tensors = self._tensors()
        start = _Snapshot(self.module, batch[0].device)  # random state and buffers
        if self.stats["captures"] >= 4 * self.max_graphs:
            return self._give_up(
                f"the program changed {self.stats['captures']} times; a capture costs more "
                "than it saves",
                batch,
            )
        try:
            # the program reads self.module's own tensors; passing the same objects as inputs
            # makes them placeholders of the graph instead of constants
            graph = make_fx(lambda ts, *b: self.loss_fn(*b))(tensors, *batch)
            simplify(graph, [*tensors, *batch])
            flat_arguments(graph)  # graph(*tensors, *batch): no pytree flattening per call
        except Exception as e:  # anything the tracer cannot follow
            start.restore()
            if "_local_scalar_dense" in str(e) or "data-dependent" in str(e):
                return self._give_up("the program reads a tensor value on the host", batch)
            return self._give_up(f"capture failed: {type(e).__name__}: {_first_line(e)}", batch)
        stray = [
            name
            for name, value in list(graph.named_parameters()) + list(graph.named_buffers())
            if value.requires_grad
        ]
        stray += [
            n.target
            for n in graph.graph.nodes
            if n.op == "get_attr" and getattr(getattr(graph, n.target, None), "requires_grad", 0)
        ]
        if stray:
            start.restore()
            return self._give_up(
                "the program uses tensors that need gradients outside the module's parameters "
                "(e.g. pyro.param in the global param store)",
                batch,
            )
        # the check: eager and replayed, from the same random state and buffers, must agree on
        # the loss, the gradients and the buffers they leave behind
        needs_grad = [t for t in tensors if t.requires_grad]
        start.restore()
        eager = self.loss_fn(*batch)
        eager_grads = _grads(eager, needs_grad, keep=True)
        after_eager = _Snapshot(self.module, batch[0].device)
        start.restore()
        replayed = graph(*tensors, *batch)
        same = _same(eager, replayed) and after_eager.buffers.same_as_now()
        same = same and all(
            _same(a, b) for a, b in zip(eager_grads, _grads(replayed, needs_grad, keep=True))
        )
        if not same:  # keep what the eager run did: its loss, buffers and random state
            after_eager.restore()
            return self._give_up(
                "the captured graph does not reproduce the eager loss", batch, eager=eager
            )
        self._graphs[key] = (graph, tensors)  # the module's tensors, walked once
        if len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        self.stats["captures"] += 1
        return replayed


class _BufferState:
    """A copy of a module's buffers (running statistics, counters), to put back or compare."""

    def __init__(self, module: nn.Module) -> None:
        self.buffers = list(module.buffers())
        self.saved = [b.detach().clone() for b in self.buffers]

    def restore(self) -> None:
        with torch.no_grad():
            for b, v in zip(self.buffers, self.saved):
                b.copy_(v)

    def same_as_now(self) -> bool:
        return all(_same(v, b) for b, v in zip(self.buffers, self.saved))


class _Snapshot:
    """The global random state (CPU and the batch's GPU) and the module's buffers, to put back
    before each of a capture's runs of the program."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.rng = _rng_restorer(device)
        self.buffers = _BufferState(module)

    def restore(self) -> None:
        self.rng()
        self.buffers.restore()


@contextlib.contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """Run a check of the program without moving the module's buffers (running statistics,
    counters): they are put back afterwards, so checks never change what training does."""
    state = _BufferState(module)
    try:
        yield
    finally:
        state.restore()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _rng_restorer(device: torch.device) -> Callable[[], None]:
    """Puts the global random state (CPU, and the batch's GPU) back to what it is now."""
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore() -> None:
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)

    return restore


def _grads(loss: torch.Tensor, tensors: list, keep: bool = False) -> list:
    if not loss.requires_grad or not tensors:
        return []
    grads = torch.autograd.grad(loss, tensors, retain_graph=keep, allow_unused=True)
    return [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, tensors)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal on CPU; within float round-off elsewhere (GPU reductions need not be bitwise)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    exact = a.device.type == "cpu"
    rtol, atol = (0.0, 0.0) if exact else (1e-4, 1e-6)
    return torch.allclose(a.detach(), b.detach(), rtol=rtol, atol=atol, equal_nan=True)
