"""The Dataset type and the load_dataset dispatcher."""

from __future__ import annotations

import json

import pytest
import torch

import pyro_gen.data as data
from pyro_gen.data import DATASETS, Dataset, load_dataset
from pyro_gen.errors import DataError, DataNotFoundError


def _toy(n_train=10, n_test=4) -> Dataset:
    def rows(n):
        return torch.arange(n, dtype=torch.float32)

    return Dataset(
        "toy",
        {
            "train": rows(n_train).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone(),
            "test": torch.zeros(n_test, 1, 2, 2),
        },
        image_shape=(1, 2, 2),
        labels={"train": rows(n_train).long() % 3},
        attributes={"train": torch.stack([rows(n_train), -rows(n_train)], 1)},
        label_names=("a", "b", "c"),
        attribute_names=("index", "minus_index"),
        binary=False,
        info={"origin": "unit test"},
    )


# --- validation --------------------------------------------------------------------------------


def test_no_splits():
    with pytest.raises(DataError, match="no splits"):
        Dataset("empty", {}, image_shape=(1, 2, 2))


def test_wrong_image_shape():
    with pytest.raises(DataError, match=r"expected \[N, 1, 2, 2\]"):
        Dataset("bad", {"train": torch.zeros(3, 1, 2, 3)}, image_shape=(1, 2, 2))


def test_labels_of_wrong_length():
    with pytest.raises(DataError, match="labels of split 'train' have 2 rows, the images 3"):
        Dataset(
            "bad",
            {"train": torch.zeros(3, 1, 2, 2)},
            image_shape=(1, 2, 2),
            labels={"train": torch.zeros(2, dtype=torch.long)},
        )


def test_attributes_of_wrong_width():
    with pytest.raises(DataError, match="attributes of split 'train'"):
        Dataset(
            "bad",
            {"train": torch.zeros(3, 1, 2, 2)},
            image_shape=(1, 2, 2),
            attributes={"train": torch.zeros(3, 3)},
            attribute_names=("a", "b"),
        )


def test_image_shape_is_normalised_to_ints():
    ds = Dataset("toy", {"train": torch.zeros(2, 1, 2, 3)}, image_shape=[1, 2, 3])
    assert ds.image_shape == (1, 2, 3) and ds.num_pixels == 6


def test_errors_are_value_errors():
    assert issubclass(DataError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


# --- access ------------------------------------------------------------------------------------


def test_split_unknown_suggests():
    ds = _toy()
    with pytest.raises(DataError, match="Did you mean 'train'") as err:
        ds.split("trian")
    assert "['test', 'train']" in str(err.value)
    assert ds.split("test").shape == (4, 1, 2, 2)


def test_attribute_unknown_suggests():
    ds = _toy()
    with pytest.raises(DataError, match="Did you mean 'index'"):
        ds.attribute("train", "indx")
    assert ds.attribute("train", "minus_index").tolist() == [-float(i) for i in range(10)]


def test_attribute_of_split_without_attributes():
    with pytest.raises(DataError, match="carries no attributes"):
        _toy().attribute("test", "index")


# --- subset and describe -----------------------------------------------------------------------


def test_subset_keeps_rows_aligned():
    ds = _toy(n_train=50)
    sub = ds.subset({"train": 7}, seed=1)
    assert len(sub.split("train")) == 7 and len(sub.split("test")) == 4  # unnamed: kept whole
    idx = sub.split("train")[:, 0, 0, 0]
    assert torch.all(idx.diff() > 0)  # sorted, without replacement
    assert torch.equal(sub.attribute("train", "index"), idx)
    assert torch.equal(sub.labels["train"], idx.long() % 3)
    assert sub.info == ds.info and sub.info is not ds.info
    assert sub.label_names == ds.label_names and sub.binary is False


def test_subset_is_deterministic_and_seeded():
    ds = _toy(n_train=50)
    a = ds.subset({"train": 7}, seed=1).split("train")
    assert torch.equal(a, ds.subset({"train": 7}, seed=1).split("train"))
    assert not torch.equal(a, ds.subset({"train": 7}, seed=2).split("train"))


def test_subset_larger_than_split_keeps_all():
    ds = _toy()
    assert len(ds.subset({"train": 1000}).split("train")) == 10


def test_describe_is_json_and_includes_info():
    d = _toy().describe()
    assert json.loads(json.dumps(d)) == d
    assert d["splits"] == {"train": 10, "test": 4}
    assert d["image_shape"] == [1, 2, 2] and d["origin"] == "unit test"
    assert d["attribute_names"] == ["index", "minus_index"] and d["binary"] is False


# --- load_dataset ------------------------------------------------------------------------------


def test_known_names():
    assert DATASETS == ("shapes", "binarized_mnist", "mnist")


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError) as err:
        load_dataset("binarised_mnist")
    msg = str(err.value)
    assert "Did you mean 'binarized_mnist'" in msg
    for name in DATASETS:
        assert repr(name) in msg


def test_unknown_option_names_allowed_ones():
    with pytest.raises(DataError) as err:
        load_dataset("shapes", num_trian=5)
    msg = str(err.value)
    assert "num_trian" in msg and "Did you mean 'num_train'" in msg
    for option in ("num_train", "num_valid", "num_test", "size", "seed"):
        assert option in msg
    with pytest.raises(DataError, match="binarize"):
        load_dataset("mnist", binarise="static")


def test_shapes_through_load_dataset_ignores_data_dir(tmp_path):
    ds = load_dataset("shapes", data_dir=tmp_path, num_train=6, num_valid=0, num_test=0, seed=2)
    direct = data.make_shapes(num_train=6, num_valid=0, num_test=0, seed=2)
    assert torch.equal(ds.split("train"), direct.split("train"))


def test_data_dir_reaches_file_loaders(tmp_path):
    for name in ("binarized_mnist", "mnist"):
        with pytest.raises(DataNotFoundError, match=str(tmp_path)):
            load_dataset(name, data_dir=tmp_path)


def test_package_exports():
    for name in data.__all__:
        assert hasattr(data, name), name
    expected = {"Dataset", "make_shapes", "load_binarized_mnist", "load_mnist", "read_idx"}
    expected |= {"resolve_data_dir", "SHAPE_NAMES", "DATASETS", "load_dataset"}
    assert expected <= set(data.__all__)
