"""MNIST loaders and the IDX reader, on the shared files and on small synthetic folders."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_gen.data import load_binarized_mnist, load_dataset, load_mnist, read_idx, resolve_data_dir
from pyro_gen.data.mnist import DATA_DIR_ENV
from pyro_gen.errors import DataError, DataNotFoundError

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C}
IDX_CODES.update({np.float32: 0x0D, np.float64: 0x0E})


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (big-endian), gzip-compressed when the name ends in .gz."""
    code = IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def write_mnist_folder(folder: Path, n_train=40, n_test=12, side=8, gz=False, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


# --- the shared files ------------------------------------------------------------------------


def test_binarized_mnist_layout(shared_data):
    ds = load_binarized_mnist(shared_data)
    assert ds.name == "binarized_mnist" and ds.binary and not ds.dynamic_binarization
    assert ds.image_shape == (1, 28, 28)
    assert {k: len(v) for k, v in ds.splits.items()} == {
        "train": 50000,
        "valid": 10000,
        "test": 10000,
    }
    for x in ds.splits.values():
        assert x.dtype == torch.float32
        assert set(x[:500].unique().tolist()) == {0.0, 1.0}
    assert abs(ds.split("train").mean().item() - 0.1306) < 1e-3
    assert list(ds.labels) == ["test"]
    y = ds.labels["test"]
    assert y.dtype == torch.int64 and y.shape == (10000,)
    assert ds.label_names == tuple("0123456789")
    counts = torch.bincount(y, minlength=10)
    assert counts.min() > 800 and counts.max() < 1200
    assert torch.all(y.diff() >= 0)  # the test split is sorted by class


def test_binarized_mnist_from_env_var(shared_data, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_data))
    ds = load_dataset("binarized_mnist")
    assert ds.split("test").shape == (10000, 1, 28, 28)


def test_read_idx_on_t10k(shared_data):
    x = read_idx(shared_data / "t10k-images-idx3-ubyte.gz")
    y = read_idx(shared_data / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and y.dtype == torch.uint8
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(x.float().mean().item() / 255 - 0.1325) < 1e-3
    assert torch.bincount(y.long(), minlength=10).tolist()[:2] == [980, 1135]


def test_read_idx_uncompressed_copy_matches(shared_data, tmp_path):
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((shared_data / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert torch.equal(read_idx(plain), read_idx(shared_data / "t10k-labels-idx1-ubyte.gz"))


def test_load_mnist_with_only_t10k_files_is_not_found(shared_data, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((shared_data / name).read_bytes())
    with pytest.raises(DataNotFoundError) as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in msg
    assert str(tmp_path / "train-labels-idx1-ubyte") in msg
    assert "t10k-images" in msg  # names the whole set of files it expects
    assert DATA_DIR_ENV in msg


# --- the IDX reader --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("name", ["a-idx3", "a-idx3.gz"])
def test_read_idx_round_trips_every_type(tmp_path, dtype, name):
    a = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        a = (a + 100).astype(np.uint8)
    t = read_idx(write_idx(tmp_path / name, a))
    assert t.shape == (2, 3, 4)
    assert t.dtype == torch.from_numpy(a).dtype
    np.testing.assert_array_equal(t.numpy(), a)


def test_read_idx_detects_gzip_by_content(tmp_path):
    a = np.arange(6, dtype=np.int32)
    t = read_idx(write_idx(tmp_path / "no-suffix", a, compress=True))
    assert t.tolist() == list(range(6))


def test_read_idx_truncated_file(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(path)
    assert "80" in str(err.value) and "77" in str(err.value)  # needed and found bytes


def test_read_idx_truncated_header(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:9])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "x-idx1-ubyte", np.zeros(5, np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="longer"):
        read_idx(path)


@pytest.mark.parametrize(
    "raw", [b"garbage bytes, not an IDX file", b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", b"\x00"]
)
def test_read_idx_garbage(tmp_path, raw):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="IDX"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    path = write_idx(tmp_path / "x-idx1-ubyte.gz", np.zeros(500, np.uint8))
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


# --- binarized MNIST file errors ---------------------------------------------------------------


def test_missing_folder_is_not_found(tmp_path):
    folder = tmp_path / "no" / "such" / "folder"
    with pytest.raises(DataNotFoundError) as err:
        load_binarized_mnist(folder)
    msg = str(err.value)
    assert str(folder / "binarized_mnist.npz") in msg
    assert DATA_DIR_ENV in msg and "data_dir" in msg
    for key in ("'train'", "'valid'", "'test'", "'test_labels'"):
        assert key in msg
    assert isinstance(err.value, FileNotFoundError)


def test_not_an_npz_is_a_data_error(tmp_path):
    (tmp_path / "binarized_mnist.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_binarized_mnist(tmp_path)


def test_npz_missing_keys_is_a_data_error(tmp_path):
    z = np.zeros((3, 784), np.uint8)
    np.savez(tmp_path / "binarized_mnist.npz", train=z, valid=z)
    with pytest.raises(DataError, match="test_labels"):
        load_binarized_mnist(tmp_path)


def test_npz_with_grey_values_is_a_data_error(tmp_path):
    z = np.zeros((3, 784), np.uint8)
    np.savez(
        tmp_path / "binarized_mnist.npz",
        train=z + 7,
        valid=z,
        test=z,
        test_labels=np.zeros(3, np.uint8),
    )
    with pytest.raises(DataError, match="outside"):
        load_binarized_mnist(tmp_path)


def test_small_valid_npz_loads(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        k: rng.integers(0, 2, (n, 784), dtype=np.uint8)
        for k, n in (("train", 6), ("valid", 3), ("test", 4))
    }
    np.savez(tmp_path / "binarized_mnist.npz", **arrays, test_labels=np.array([0, 3, 9, 9]))
    ds = load_binarized_mnist(tmp_path)
    assert ds.split("train").shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(ds.split("valid").reshape(3, 784).numpy(), arrays["valid"])
    assert ds.labels["test"].tolist() == [0, 3, 9, 9]


# --- the data folder ---------------------------------------------------------------------------


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() == Path("data")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path)) == tmp_path


def test_env_var_folder_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    with pytest.raises(DataNotFoundError) as err:
        load_mnist()
    assert str(tmp_path / "from-env" / "train-images-idx3-ubyte") in str(err.value)
    assert "environment variable" in str(err.value)


# --- load_mnist on synthetic IDX folders --------------------------------------------------------


@pytest.fixture
def mnist_folder(tmp_path):
    arrays = write_mnist_folder(tmp_path / "mnist")
    return tmp_path / "mnist", arrays


def test_load_mnist_grey(mnist_folder):
    folder, arrays = mnist_folder
    ds = load_mnist(folder, binarize=None, valid_size=10)
    assert ds.name == "mnist" and not ds.binary and not ds.dynamic_binarization
    assert ds.image_shape == (1, 8, 8)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 30, "valid": 10, "test": 12}
    grey = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255
    assert torch.allclose(ds.split("train")[:, 0], grey[:30])
    assert torch.allclose(ds.split("valid")[:, 0], grey[30:])  # the last valid_size images
    test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255
    assert torch.allclose(ds.split("test")[:, 0], test)
    labels = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    assert ds.labels["train"].tolist() == labels[:30].tolist()
    assert ds.labels["valid"].tolist() == labels[30:].tolist()
    assert ds.labels["test"].dtype == torch.int64
    assert ds.label_names == tuple("0123456789")
    assert 0.0 <= ds.split("train").min() and ds.split("train").max() <= 1.0


def test_load_mnist_dynamic(mnist_folder):
    folder, _ = mnist_folder
    ds = load_mnist(folder, valid_size=10)  # the default
    grey = load_mnist(folder, binarize=None, valid_size=10)
    assert ds.dynamic_binarization and not ds.binary
    for split in ds.splits:
        assert torch.equal(ds.split(split), grey.split(split))
    assert ds.describe()["binarize"] == "dynamic"


def test_load_mnist_static(mnist_folder):
    folder, _ = mnist_folder
    ds = load_mnist(folder, binarize="static", seed=3, valid_size=10)
    grey = load_mnist(folder, binarize=None, valid_size=10)
    assert ds.binary and not ds.dynamic_binarization
    for split in ds.splits:
        assert set(ds.split(split).unique().tolist()) <= {0.0, 1.0}
    # One Bernoulli draw of the grey values: same mean, fixed by the seed.
    assert abs(ds.split("train").mean() - grey.split("train").mean()) < 0.03
    assert torch.equal(ds.split("train"), load_mnist(folder, "static", 3, 10).split("train"))
    assert not torch.equal(ds.split("train"), load_mnist(folder, "static", 4, 10).split("train"))
    assert ds.info["seed"] == 3


def test_load_mnist_gz_files_and_no_valid_split(tmp_path):
    write_mnist_folder(tmp_path, gz=True)
    ds = load_dataset("mnist", data_dir=tmp_path, binarize=None, valid_size=0)
    assert sorted(ds.splits) == ["test", "train"]
    assert len(ds.split("train")) == 40


@pytest.mark.parametrize("valid_size", [-1, 40, 1000, 2.5])
def test_load_mnist_bad_valid_size(mnist_folder, valid_size):
    with pytest.raises(DataError, match="valid_size"):
        load_mnist(mnist_folder[0], valid_size=valid_size)


def test_load_mnist_bad_binarize(mnist_folder):
    with pytest.raises(DataError, match="Did you mean 'static'"):
        load_mnist(mnist_folder[0], binarize="statik")


def test_load_mnist_mismatched_labels(mnist_folder):
    folder, _ = mnist_folder
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match="one label per image"):
        load_mnist(folder)


def test_load_mnist_missing_one_file(mnist_folder):
    folder, _ = mnist_folder
    shutil.move(folder / "t10k-labels-idx1-ubyte", folder.parent / "elsewhere")
    with pytest.raises(DataNotFoundError) as err:
        load_mnist(folder)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in str(err.value)
    assert "train-images-idx3-ubyte or" not in str(err.value)  # only the missing one is listed
