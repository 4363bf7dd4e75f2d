"""Exceptions raised by pyro_gen.

Every error says what was wrong and what to do about it. They subclass the built-in exception a
user would otherwise catch (``ValueError``, ``FileNotFoundError``, ...) so existing ``except``
clauses keep working.

>>> from pyro_gen.errors import ConfigError
>>> issubclass(ConfigError, ValueError)
True
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "PyroGenError",
    "ConfigError",
    "DataError",
    "ShapeError",
    "CheckpointError",
    "DataNotFoundError",
    "NonFiniteError",
    "RunFolderError",
    "did_you_mean",
]


class PyroGenError(Exception):
    """Base class of every error pyro_gen raises on purpose."""


class ConfigError(PyroGenError, ValueError):
    """An unknown or ill-typed configuration key or value."""


class DataError(PyroGenError, ValueError):
    """Data that a model or tool cannot use: NaN, values outside the support, empty, wrong dtype."""


class ShapeError(PyroGenError, ValueError):
    """Shapes that do not fit together; the message names both shapes."""


class CheckpointError(PyroGenError, ValueError):
    """A checkpoint that is missing, corrupt, truncated, foreign or a pickle file."""


class DataNotFoundError(PyroGenError, FileNotFoundError):
    """A data set's files are missing; the message says where the loader looked."""


class NonFiniteError(PyroGenError, FloatingPointError):
    """A non-finite loss or gradient during training."""


class RunFolderError(PyroGenError, OSError):
    """A run folder that cannot be written (read-only, no space)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint (or '') for a misspelt ``name`` among ``choices``.

    >>> did_you_mean("latnet_dim", ["latent_dim", "hidden"])
    " Did you mean 'latent_dim'?"
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
