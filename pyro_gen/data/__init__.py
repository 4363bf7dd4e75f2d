"""Data sets for pyro_gen: one :class:`Dataset` type and loaders that return it.

``load_dataset(name, data_dir=None, **kwargs)`` picks a loader by name: ``"shapes"``
(generated, no files), ``"binarized_mnist"`` and ``"mnist"`` (local files; see
:func:`resolve_data_dir`).

>>> from pyro_gen.data import load_dataset
>>> ds = load_dataset("shapes", num_train=16, num_valid=4, num_test=4, size=16)
>>> ds.describe()["splits"]
{'train': 16, 'valid': 4, 'test': 4}
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from pyro_gen.data.dataset import Dataset
from pyro_gen.data.mnist import load_binarized_mnist, load_mnist, read_idx, resolve_data_dir
from pyro_gen.data.shapes import SHAPE_NAMES, make_shapes
from pyro_gen.errors import DataError, did_you_mean

__all__ = [
    "Dataset",
    "DATASETS",
    "SHAPE_NAMES",
    "load_dataset",
    "make_shapes",
    "load_binarized_mnist",
    "load_mnist",
    "read_idx",
    "resolve_data_dir",
]

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "shapes": make_shapes,
    "binarized_mnist": load_binarized_mnist,
    "mnist": load_mnist,
}

DATASETS: tuple[str, ...] = tuple(_LOADERS)
"""Names :func:`load_dataset` knows."""


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **kwargs) -> Dataset:
    """Load the data set ``name`` (one of :data:`DATASETS`), passing ``kwargs`` to its loader.

    ``data_dir`` goes to the loaders that read files; ``"shapes"`` is generated and
    ignores it. Unknown names and keyword arguments raise :class:`DataError`.

    >>> load_dataset("shapes", num_train=2, num_valid=0, num_test=0).split("train").shape
    torch.Size([2, 1, 32, 32])
    """
    if name not in _LOADERS:
        raise DataError(
            f"unknown data set {name!r}; known: {list(DATASETS)}." + did_you_mean(name, DATASETS)
        )
    loader = _LOADERS[name]
    allowed = [p for p in inspect.signature(loader).parameters if p != "data_dir"]
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        hints = "".join(did_you_mean(k, allowed) for k in unknown)
        raise DataError(
            f"data set {name!r} takes no option(s) {unknown}; allowed: {allowed}." + hints
        )
    if "data_dir" in inspect.signature(loader).parameters:
        kwargs["data_dir"] = data_dir
    return loader(**kwargs)
