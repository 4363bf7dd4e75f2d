"""What every shipped model shares: the model/guide contract, β handling and shape checks.

>>> import torch
>>> from pyro_gen.models.base import check_data_shape
>>> check_data_shape(torch.zeros(4, 1, 2, 2), (1, 2, 2))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_gen.errors import ConfigError, DataError, ShapeError

__all__ = ["GenerativeModel", "KLWeighted", "beta_scale", "check_data_shape", "check_finite"]


@contextlib.contextmanager
def beta_scale(beta: float) -> Iterator[None]:
    """Scale the log-densities of the sites inside by β (use around the latent site).

    ``poutine.scale`` refuses 0, so β = 0 masks the sites out instead: with a deterministic
    (Delta) guide the objective is then the reconstruction term alone — a plain autoencoder.
    """
    beta = float(beta)
    if beta < 0 or beta != beta:
        raise ConfigError(f"beta must be >= 0 (0 gives a plain autoencoder); got {beta}.")
    if beta == 1.0:
        yield
    elif beta == 0.0:
        with poutine.mask(mask=False):
            yield
    else:
        with poutine.scale(scale=beta):
            yield


def check_data_shape(x: torch.Tensor, data_shape: Sequence[int], what: str = "x") -> None:
    """Raise a ShapeError naming both shapes unless ``x`` is ``[N, *data_shape]``."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a torch.Tensor; got {type(x).__name__}.")
    data_shape = tuple(data_shape)
    if tuple(x.shape[1:]) == data_shape and x.dim() == len(data_shape) + 1:
        return
    per_point = 1
    for s in data_shape:
        per_point *= s
    hint = ""
    if tuple(x.shape) == data_shape:  # checked first: it is also divisible below
        hint = f" A single datapoint needs a batch axis: {what}.unsqueeze(0)."
    elif x.dim() >= 1 and x.numel() % per_point == 0 and x.numel() > 0:
        hint = f" Reshape with {what}.reshape(-1, {', '.join(map(str, data_shape))})."
    raise ShapeError(
        f"the model was built for datapoints of shape {list(data_shape)}, i.e. {what} of shape "
        f"[N, {', '.join(map(str, data_shape))}], but {what} has shape {list(x.shape)}.{hint}"
    )


def check_finite(x: torch.Tensor, what: str = "x") -> None:
    """Raise a DataError that counts and locates NaN/Inf values."""
    bad = ~torch.isfinite(x)
    if bad.any():
        first = [int(i) for i in bad.nonzero()[0]]
        raise DataError(
            f"{what} holds {int(bad.sum())} non-finite values (NaN or Inf), the first at index "
            f"{first}. Remove or impute them before training or evaluating."
        )


class KLWeighted:
    """Mixin of a model built with a KL weight ``beta``: the β (>= 0) its training objective
    uses, the trainer's β target (Higgins et al. 2017); ConfigError below 0."""

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        value = float(value)
        if not value >= 0:
            raise ConfigError(f"beta must be >= 0 (0 gives a plain autoencoder); got {value}.")
        object.__setattr__(self, "_beta", value)


class GenerativeModel(PyroModule):
    """Base class: a ``PyroModule`` with ``model(x, **observed)`` and ``guide(x, **observed)``.

    Subclasses put observations under ``pyro.plate("data", ...)`` and implement ``model``,
    ``guide`` and, where they have a likelihood, ``check_data``.
    """

    data_shape: tuple[int, ...] = ()
    capturable: bool = False  # True: no Python state between calls, the loss may be replayed
    # constructor arguments added after runs were saved without them, with the value that
    # rebuilds what such a run was (load_model fills them in; a new default may differ)
    SAVED_DEFAULTS: dict[str, Any] = {}

    def model(self, x: torch.Tensor, **observed):  # pragma: no cover - abstract
        raise NotImplementedError

    def guide(self, x: torch.Tensor, **observed):  # pragma: no cover - abstract
        raise NotImplementedError

    def batch_from_dataset(self, dataset, split: str) -> dict[str, torch.Tensor]:
        """The named entries that model and guide read from one split of a
        ``pyro_gen.data.Dataset``: ``{"x": images}`` here; conditional models add theirs
        (attributes, labels, observed-masks), each with the images' first axis ``N``."""
        return {"x": dataset.split(split)}

    def check_data(self, x: torch.Tensor) -> None:
        """Check shape and values of data before training or evaluation (may sync a GPU)."""
        check_data_shape(x, self.data_shape)
        check_finite(x)

    @property
    def config(self) -> dict:
        """The constructor arguments (JSON-able); ``build_model(name, config)`` rebuilds it."""
        cfg = getattr(self, "_pyro_gen_config", None)
        return dict(cfg[1]) if cfg else {}

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")
