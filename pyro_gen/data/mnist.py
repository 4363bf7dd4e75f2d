"""MNIST from local files: the statically binarized benchmark split and the original IDX files.

Nothing is downloaded. The data folder is the ``data_dir`` argument, else the
``PYRO_GEN_DATA_DIR`` environment variable, else ``./data``; a missing file raises
:class:`~pyro_gen.errors.DataNotFoundError` naming the paths looked at.

>>> import tempfile
>>> from pyro_gen.data import load_binarized_mnist
>>> try:
...     load_binarized_mnist(tempfile.mkdtemp())
... except FileNotFoundError as err:
...     print("PYRO_GEN_DATA_DIR" in str(err))
True
"""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from pyro_gen.data.dataset import Dataset
from pyro_gen.errors import DataError, DataNotFoundError, did_you_mean

__all__ = [
    "DATA_DIR_ENV",
    "BINARIZE_MODES",
    "resolve_data_dir",
    "read_idx",
    "load_binarized_mnist",
    "load_mnist",
]

DATA_DIR_ENV = "PYRO_GEN_DATA_DIR"
"""Environment variable naming the data folder when no ``data_dir`` is given."""

BINARIZE_MODES = ("dynamic", "static", None)
"""What :func:`load_mnist` accepts as ``binarize``."""

DIGITS = tuple(str(d) for d in range(10))

_BINARIZED_FILE = "binarized_mnist.npz"
_BINARIZED_KEYS = ("train", "valid", "test", "test_labels")

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type code -> big-endian numpy dtype (all have a torch counterpart).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _data_dir_and_source(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument"
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser(), f"the {DATA_DIR_ENV} environment variable"
    return Path("data"), f"the default ./data ({DATA_DIR_ENV} is unset)"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$PYRO_GEN_DATA_DIR``, else ``./data``.

    >>> resolve_data_dir("/tmp/mnist").as_posix()
    '/tmp/mnist'
    """
    return _data_dir_and_source(data_dir)[0]


def _how_to_set() -> str:
    return (
        f"Set the data folder with the data_dir argument (load_dataset(..., "
        f"data_dir=...)) or the {DATA_DIR_ENV} environment variable."
    )


def load_binarized_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
    """Statically binarized MNIST (Larochelle & Murray split): 50k/10k/10k images, {0, 1}.

    Reads ``binarized_mnist.npz`` with uint8 arrays ``train``, ``valid``, ``test``
    (``[N, 784]``) and ``test_labels`` (``[N]``). Images come back as float32
    ``[N, 1, 28, 28]``; only ``test`` has labels. The test split is sorted by class: use
    :meth:`Dataset.subset` (random rows) rather than slicing its head.

    >>> ds = load_binarized_mnist("/path/to/data")  # doctest: +SKIP
    >>> ds.split("train").shape  # doctest: +SKIP
    torch.Size([50000, 1, 28, 28])
    """
    folder, source = _data_dir_and_source(data_dir)
    path = folder / _BINARIZED_FILE
    if not path.is_file():
        raise DataNotFoundError(
            f"binarized MNIST not found: looked for {path} (folder {folder} from {source}). "
            f"Expected a file {_BINARIZED_FILE} holding uint8 arrays 'train' [50000, 784], "
            f"'valid' [10000, 784], 'test' [10000, 784] with values in {{0, 1}} and "
            f"'test_labels' [10000] with digits 0-9. " + _how_to_set()
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _BINARIZED_KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path} lacks the arrays {missing}; it has {sorted(npz.files)}, expected "
                    f"{list(_BINARIZED_KEYS)} (uint8 images [N, 784] and test labels [N])."
                )
            arrays = {k: npz[k] for k in _BINARIZED_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(
            f"{path} is not a readable .npz archive ({type(err).__name__}: {err}); expected "
            f"numpy's savez format with arrays {list(_BINARIZED_KEYS)}."
        ) from err

    splits = {}
    for split in ("train", "valid", "test"):
        a = arrays[split]
        if a.ndim != 2 or a.shape[1] != 784 or a.dtype.kind not in "uib":
            raise DataError(
                f"array {split!r} in {path} has shape {a.shape} and dtype {a.dtype}; "
                f"expected an integer array [N, 784]."
            )
        if a.size and (a.min() < 0 or a.max() > 1):
            raise DataError(
                f"array {split!r} in {path} has values outside {{0, 1}} "
                f"(min {a.min()}, max {a.max()}); this loader wants binarized images."
            )
        splits[split] = torch.from_numpy(a.astype(np.float32)).reshape(-1, 1, 28, 28)
    labels = arrays["test_labels"]
    if labels.shape != (len(splits["test"]),) or labels.dtype.kind not in "ui":
        raise DataError(
            f"'test_labels' in {path} has shape {labels.shape} and dtype {labels.dtype}; "
            f"expected integers [{len(splits['test'])}] (one per test image)."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"'test_labels' in {path} has values outside 0-9.")
    return Dataset(
        name="binarized_mnist",
        splits=splits,
        image_shape=(1, 28, 28),
        labels={"test": torch.from_numpy(labels.astype(np.int64))},
        label_names=DIGITS,
        binary=True,
        info={"source": str(path)},
    )


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (``*-idx3-ubyte``, ``*-idx1-ubyte``; gzip-compressed or not).

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64; all big-endian), the number of dimensions and
    one big-endian uint32 per dimension. Returns a tensor of that shape and type.

    >>> read_idx("t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
    torch.Size([10000])
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file {path} does not exist.")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({err}).") from err
    if len(raw) < 4:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to be an IDX file.")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex()} (expected "
            f"0x0000 then a type code in "
            f"{[hex(c) for c in _IDX_DTYPES]} and the number of dimensions)."
        )
    if ndim == 0:
        raise DataError(f"{path} declares 0 dimensions; an IDX file needs at least one.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path} is truncated: its header declares {ndim} dimensions but the file ends "
            f"after {len(raw)} bytes."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: dimensions {list(dims)} of {dtype.name} need {expected} data "
            f"bytes, the file has {actual}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    return torch.from_numpy(data.reshape(dims))


def _find_mnist_files(folder: Path, source: str) -> dict[str, Path]:
    found, missing = {}, []
    for key, stem in _MNIST_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(" or ".join(str(p) for p in candidates))
        else:
            found[key] = hit
    if missing:
        raise DataNotFoundError(
            f"MNIST IDX files missing in {folder} (from {source}): looked for "
            + "; ".join(missing)
            + ". Expected the four original files "
            + ", ".join(f"{s}[.gz]" for s in _MNIST_FILES.values())
            + ". "
            + _how_to_set()
        )
    return found


def _read_images_and_labels(images: Path, labels: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != torch.uint8:
        raise DataError(
            f"{images} holds {x.dtype} of shape {list(x.shape)}; expected uint8 [N, rows, cols]."
        )
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{labels} holds shape {list(y.shape)}; expected one label per image of {images} "
            f"([{len(x)}])."
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DataError(f"{labels} holds labels outside 0-9.")
    return x, y.long()


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    binarize: str | None = "dynamic",
    seed: int = 0,
    valid_size: int = 10000,
) -> Dataset:
    """MNIST from the original IDX files, grey values scaled to [0, 1].

    Needs ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
    The last ``valid_size`` training images become the ``valid`` split. ``binarize``:

    * ``"dynamic"`` (default): grey values, ``dynamic_binarization=True`` (the trainer
      draws a fresh Bernoulli binarization of every batch);
    * ``"static"``: one Bernoulli draw per pixel of every split, from ``seed``; binary;
    * ``None``: grey values, ``binary=False``.

    >>> ds = load_mnist("/path/to/mnist", binarize="static")  # doctest: +SKIP
    >>> sorted(ds.splits), ds.binary  # doctest: +SKIP
    (['test', 'train', 'valid'], True)
    """
    if binarize not in BINARIZE_MODES:
        raise DataError(
            f"binarize must be one of {list(BINARIZE_MODES)}, got {binarize!r}."
            + did_you_mean(str(binarize), [m for m in BINARIZE_MODES if m])
        )
    folder, source = _data_dir_and_source(data_dir)
    files = _find_mnist_files(folder, source)
    train_x, train_y = _read_images_and_labels(files["train_images"], files["train_labels"])
    test_x, test_y = _read_images_and_labels(files["test_images"], files["test_labels"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"train images are {list(train_x.shape[1:])}, test images "
            f"{list(test_x.shape[1:])}; they must match."
        )
    if isinstance(valid_size, bool) or int(valid_size) != valid_size:
        raise DataError(f"valid_size must be an integer, got {valid_size!r}.")
    valid_size = int(valid_size)
    if not 0 <= valid_size < len(train_x):
        raise DataError(
            f"valid_size must be in [0, {len(train_x)}) (the training set has {len(train_x)} "
            f"images), got {valid_size}."
        )

    n_train = len(train_x) - valid_size
    grey = {
        "train": train_x[:n_train],
        "valid": train_x[n_train:],
        "test": test_x,
    }
    targets = {"train": train_y[:n_train], "valid": train_y[n_train:], "test": test_y}
    if valid_size == 0:
        del grey["valid"], targets["valid"]

    splits = {k: (v.float() / 255.0).unsqueeze(1) for k, v in grey.items()}
    info: dict = {"source": str(folder), "binarize": binarize, "valid_size": valid_size}
    if binarize == "static":
        gen = torch.Generator().manual_seed(int(seed))
        splits = {k: torch.bernoulli(v, generator=gen) for k, v in splits.items()}
        info["seed"] = int(seed)
    return Dataset(
        name="mnist",
        splits=splits,
        image_shape=(1, *train_x.shape[1:]),
        labels={k: v.clone() for k, v in targets.items()},
        label_names=DIGITS,
        binary=binarize == "static",
        dynamic_binarization=binarize == "dynamic",
        info=info,
    )
