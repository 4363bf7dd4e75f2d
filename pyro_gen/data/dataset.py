"""The one data set type: named splits of tensors plus what is known about them.

>>> import torch
>>> from pyro_gen.data import Dataset
>>> ds = Dataset("toy", {"train": torch.zeros(4, 1, 2, 2)}, image_shape=(1, 2, 2))
>>> ds.split("train").shape
torch.Size([4, 1, 2, 2])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pyro_gen.errors import DataError, did_you_mean

__all__ = ["Dataset"]


@dataclass
class Dataset:
    """Named splits (``train``/``valid``/``test``) of float32 tensors ``[N, *image_shape]``.

    Optional per-split ``labels`` (int64 ``[N]``, names in ``label_names``) and ``attributes``
    (float32 ``[N, A]``, names in ``attribute_names``: e.g. ground-truth factors). ``binary``
    tells whether every value is in {0, 1}; ``dynamic_binarization`` asks the trainer to draw a
    fresh Bernoulli binarization of the grey values for every training batch.
    """

    name: str
    splits: dict[str, torch.Tensor]
    image_shape: tuple[int, ...]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)
    label_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()
    binary: bool = True
    dynamic_binarization: bool = False
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)
        if not self.splits:
            raise DataError(f"data set {self.name!r} has no splits; give at least 'train'.")
        for split, x in self.splits.items():
            if tuple(x.shape[1:]) != self.image_shape:
                raise DataError(
                    f"split {split!r} of {self.name!r} has shape {tuple(x.shape)}, "
                    f"expected [N, {', '.join(map(str, self.image_shape))}]."
                )
            for kind, table in (("labels", self.labels), ("attributes", self.attributes)):
                if split in table and len(table[split]) != len(x):
                    raise DataError(
                        f"{kind} of split {split!r} have {len(table[split])} rows, "
                        f"the images {len(x)}."
                    )
        for split, y in self.labels.items():
            if (
                y.numel()
                and self.label_names
                and (int(y.min()) < 0 or int(y.max()) >= len(self.label_names))
            ):
                raise DataError(
                    f"labels of split {split!r} lie in [{int(y.min())}, {int(y.max())}] but there "
                    f"are {len(self.label_names)} classes {list(self.label_names)}; labels must be "
                    f"0..{len(self.label_names) - 1}."
                )
        for split, a in self.attributes.items():
            if a.ndim != 2 or a.shape[1] != len(self.attribute_names):
                raise DataError(
                    f"attributes of split {split!r} have shape {tuple(a.shape)}, expected "
                    f"[N, {len(self.attribute_names)}] for names {self.attribute_names}."
                )

    def split(self, name: str) -> torch.Tensor:
        """The images of one split; a clear error names the splits there are."""
        if name not in self.splits:
            raise DataError(
                f"data set {self.name!r} has no split {name!r}; it has {sorted(self.splits)}."
                + did_you_mean(name, self.splits)
            )
        return self.splits[name]

    def attribute(self, split: str, name: str) -> torch.Tensor:
        """One attribute column ``[N]`` of a split, by name."""
        if name not in self.attribute_names:
            raise DataError(
                f"data set {self.name!r} has no attribute {name!r}; "
                f"it has {list(self.attribute_names)}." + did_you_mean(name, self.attribute_names)
            )
        if split not in self.attributes:
            raise DataError(f"split {split!r} of {self.name!r} carries no attributes.")
        return self.attributes[split][:, self.attribute_names.index(name)]

    @property
    def num_pixels(self) -> int:
        n = 1
        for s in self.image_shape:
            n *= s
        return n

    def subset(self, sizes: dict[str, int], seed: int = 0) -> Dataset:
        """A smaller data set: ``sizes[split]`` rows of each split, drawn without replacement."""
        g = torch.Generator().manual_seed(seed)
        splits, labels, attributes = {}, {}, {}
        for split, x in self.splits.items():
            n = min(int(sizes.get(split, len(x))), len(x))
            idx = torch.randperm(len(x), generator=g)[:n].sort().values
            splits[split] = x[idx]
            if split in self.labels:
                labels[split] = self.labels[split][idx]
            if split in self.attributes:
                attributes[split] = self.attributes[split][idx]
        return Dataset(
            self.name,
            splits,
            self.image_shape,
            labels,
            attributes,
            self.label_names,
            self.attribute_names,
            self.binary,
            self.dynamic_binarization,
            dict(self.info),
        )

    def describe(self) -> dict:
        """A JSON-able description (written to a run's ``config.json``)."""
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "binary": self.binary,
            "dynamic_binarization": self.dynamic_binarization,
            "label_names": list(self.label_names),
            "attribute_names": list(self.attribute_names),
            **self.info,
        }
