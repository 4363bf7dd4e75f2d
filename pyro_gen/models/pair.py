"""A model/guide pair and the module that owns its parameters — the unit every tool takes.

Accepts a ``PyroModule`` with ``model``/``guide`` methods, or two callables plus the
``nn.Module`` holding their parameters. ``check_pair`` runs both once on a small batch with
Pyro's validation on and turns the usual shape mistakes into messages that show every site's
shape (``Trace.format_shapes()``), before any optimisation step.

>>> from pyro_gen.models import VAE
>>> pair = as_pair(VAE(data_shape=(4,), latent_dim=2, hidden=(8,)))
>>> pair.module is pair.model.__self__
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_gen.errors import ConfigError, ShapeError

__all__ = ["DATA_PLATE", "ModelGuidePair", "as_pair", "check_pair", "evaluating"]

DATA_PLATE = "data"  # the per-datapoint plate every model puts its observations under


@dataclass
class ModelGuidePair:
    model: Callable
    guide: Callable
    module: nn.Module

    @property
    def device(self) -> torch.device:
        """Where the parameters live (CPU for a module without parameters)."""
        return next(iter(self.module.parameters()), torch.empty(0)).device

    @property
    def check_data(self) -> Callable[[torch.Tensor], None] | None:
        return getattr(self.module, "check_data", None)


def as_pair(
    model, guide: Callable | None = None, module: nn.Module | None = None
) -> ModelGuidePair:
    """Normalise the ways a user can hand over a model/guide pair."""
    if guide is None:
        if not (hasattr(model, "model") and hasattr(model, "guide")):
            raise ConfigError(
                "give either a module with .model and .guide methods, or model=..., guide=..., "
                "module=<the nn.Module that owns their parameters>."
            )
        return ModelGuidePair(model.model, model.guide, module or model)
    if module is None:
        owner = getattr(model, "__self__", None)
        if not isinstance(owner, nn.Module):
            raise ConfigError(
                "a model and guide given as plain functions need module=<the nn.Module that owns "
                "their parameters> (pyro_gen keeps parameters in modules, not in the global "
                "param store)."
            )
        module = owner
    return ModelGuidePair(model, guide, module)


@contextlib.contextmanager
def evaluating(module: nn.Module, seed: int | None = None) -> Iterator[None]:
    """Evaluation conditions: ``seed`` set (if given), the module in eval mode and Pyro's
    validation off inside; the module's train/eval mode is restored afterwards."""
    if seed is not None:
        pyro.set_rng_seed(seed)
    was_training = module.training
    module.eval()
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        module.train(was_training)


def _shapes(tr) -> str:
    try:
        tr.compute_log_prob()
        return tr.format_shapes()
    except Exception:  # the shapes are what we want to show, even when log_prob fails
        return tr.format_shapes()  # shows the sites whose log_prob did compute


def check_pair(pair: ModelGuidePair, x: torch.Tensor, **kwargs) -> None:
    """Run guide and model once on ``x`` with validation on; raise a ShapeError that shows every
    site's shape when something does not fit (and name the plate ``"data"`` if it is missing)."""
    guide_tr = model_tr = None
    try:
        with pyro.validation_enabled(True), torch.no_grad():
            guide_tr = poutine.trace(pair.guide).get_trace(x, **kwargs)
            model_tr = poutine.trace(poutine.replay(pair.model, trace=guide_tr)).get_trace(
                x, **kwargs
            )
            guide_tr.compute_log_prob()
            model_tr.compute_log_prob()
    except (ValueError, RuntimeError, IndexError) as e:
        if isinstance(e, ShapeError):
            raise
        parts = [f"the model/guide pair failed on a batch x of shape {list(x.shape)}: {e}"]
        for name, tr in (("guide", guide_tr), ("model", model_tr)):
            if tr is not None:
                parts.append(f"{name} trace shapes (batch | event):\n{_shapes(tr)}")
        parts.append(
            "Common causes: a decoder whose output shape differs from the data's; a likelihood "
            "without .to_event(k) over the datapoint's dims; a site outside pyro.plate('data')."
        )
        raise ShapeError("\n".join(parts)) from e
    observed = [
        n
        for n, s in model_tr.nodes.items()
        if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s)
    ]
    if not observed:
        raise ShapeError("the model has no observed sample site (pyro.sample(..., obs=x)).")
    for name in observed:
        frames = [f.name for f in model_tr.nodes[name]["cond_indep_stack"]]
        if DATA_PLATE not in frames:
            raise ShapeError(
                f"observed site {name!r} is not inside pyro.plate({DATA_PLATE!r}) (plates: "
                f"{frames or 'none'}); pyro_gen finds the per-datapoint axis through that plate.\n"
                + model_tr.format_shapes()
            )
