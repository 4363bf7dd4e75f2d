"""The generated shapes data set: determinism, layout, and that every factor shows in the image."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_gen.data import SHAPE_NAMES, make_shapes
from pyro_gen.data.shapes import ATTRIBUTE_NAMES, render_shapes
from pyro_gen.errors import DataError

SIZES = {"num_train": 3000, "num_valid": 300, "num_test": 300}


@pytest.fixture(scope="module")
def ds():
    return make_shapes(**SIZES, size=32, seed=0)


def _render(shape, scale=1.0, orientation=0.0, pos_x=0.5, pos_y=0.5, size=32):
    n = max(len(v) if isinstance(v, list) else 1 for v in (shape, scale, orientation, pos_x, pos_y))

    def col(v):
        return torch.tensor(v if isinstance(v, list) else [v] * n, dtype=torch.float32)

    return render_shapes(
        col(shape).long(), col(scale), col(orientation), col(pos_x), col(pos_y), size=size
    )[:, 0]


def _centre_of_mass(images):
    size = images.shape[-1]
    grid = torch.arange(size, dtype=torch.float32)
    mass = images.sum((-2, -1))
    cx = (images.sum(-2) * grid).sum(-1) / mass
    cy = (images.sum(-1) * grid).sum(-1) / mass
    return cx, cy


def test_same_seed_gives_identical_data(ds):
    again = make_shapes(**SIZES, size=32, seed=0)
    for split in ("train", "valid", "test"):
        assert torch.equal(ds.split(split), again.split(split))
        assert torch.equal(ds.labels[split], again.labels[split])
        assert torch.equal(ds.attributes[split], again.attributes[split])


def test_different_seeds_give_different_data(ds):
    other = make_shapes(**SIZES, size=32, seed=1)
    for split in ("train", "valid", "test"):
        assert not torch.equal(ds.split(split), other.split(split))
        assert not torch.equal(ds.attributes[split], other.attributes[split])


def test_splits_are_disjoint_draws_of_one_stream(ds):
    # Image i of train + valid + test depends only on the seed and i.
    small = make_shapes(num_train=100, num_valid=0, num_test=0, seed=0)
    assert torch.equal(small.split("train"), ds.split("train")[:100])
    joined = make_shapes(num_train=3600, num_valid=0, num_test=0, seed=0)
    assert torch.equal(joined.attributes["train"][3000:3300], ds.attributes["valid"])
    assert torch.equal(joined.split("train")[3300:], ds.split("test"))
    # No factor vector repeats between splits.
    train = {tuple(r) for r in ds.attributes["train"][:, 1:5].tolist()}
    assert not any(tuple(r) in train for r in ds.attributes["test"][:, 1:5].tolist())


def test_layout_dtypes_and_metadata(ds):
    assert ds.name == "shapes"
    assert ds.image_shape == (1, 32, 32)
    assert ds.binary is True and ds.dynamic_binarization is False
    assert ds.label_names == SHAPE_NAMES == ("square", "ellipse", "heart")
    assert ds.attribute_names == ATTRIBUTE_NAMES
    assert ds.attribute_names == (
        "shape",
        "scale",
        "orientation",
        "pos_x",
        "pos_y",
        "is_square",
        "is_ellipse",
        "is_heart",
    )
    assert ds.info == {"generator": "pyro_gen.shapes", "seed": 0, "size": 32}
    for split, n in (("train", 3000), ("valid", 300), ("test", 300)):
        x = ds.split(split)
        assert x.shape == (n, 1, 32, 32) and x.dtype == torch.float32
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert ds.labels[split].shape == (n,) and ds.labels[split].dtype == torch.int64
        assert ds.attributes[split].shape == (n, 8)
        assert ds.attributes[split].dtype == torch.float32
    json.dumps(ds.describe())


def test_factors_match_labels_and_ranges(ds):
    for split in ("train", "valid", "test"):
        a, y = ds.attributes[split], ds.labels[split]
        assert torch.equal(ds.attribute(split, "shape").long(), y)
        assert torch.equal(a[:, 5:].argmax(1), y)
        assert torch.equal(a[:, 5:].sum(1), torch.ones(len(a)))
        assert set(a[:, 5:].unique().tolist()) == {0.0, 1.0}
        scale = ds.attribute(split, "scale")
        assert scale.min() >= 0.5 and scale.max() <= 1.0
        theta = ds.attribute(split, "orientation")
        assert theta.min() >= 0.0 and theta.max() < 2 * math.pi
        for name in ("pos_x", "pos_y"):
            p = ds.attribute(split, name)
            assert p.min() >= 0.0 and p.max() <= 1.0
    # Uniform draws: every shape about a third, factors spread over their ranges.
    counts = torch.bincount(ds.labels["train"], minlength=3).float() / 3000
    assert torch.all((counts - 1 / 3).abs() < 0.04), counts
    a = ds.attributes["train"]
    assert (a[:, 1].mean() - 0.75).abs() < 0.02
    assert (a[:, 2].mean() - math.pi).abs() < 0.15
    assert (a[:, 3:5].mean(0) - 0.5).abs().max() < 0.03


def test_every_image_has_pixels_on_and_stays_inside(ds):
    x = ds.split("train")[:, 0]
    assert x.sum((1, 2)).min() >= 16
    border = x[:, 0].sum() + x[:, -1].sum() + x[:, :, 0].sum() + x[:, :, -1].sum()
    assert border == 0
    small = make_shapes(num_train=2000, num_valid=0, num_test=0, size=16, seed=3)
    assert small.split("train").sum((1, 2, 3)).min() >= 3


def test_position_moves_the_centre_of_mass(ds):
    pos = [0.0, 0.25, 0.5, 0.75, 1.0]
    for shape in range(3):
        cx, cy = _centre_of_mass(_render([shape] * 5, pos_x=pos))
        assert torch.all(cx.diff() > 1.5) and torch.all(cy.diff().abs() < 0.5)
        cx, cy = _centre_of_mass(_render([shape] * 5, pos_y=pos))
        assert torch.all(cy.diff() > 1.5) and torch.all(cx.diff().abs() < 0.5)  # downwards
    # The same holds across the generated data set.
    x = ds.split("train")[:, 0]
    cx, cy = _centre_of_mass(x)
    for centre, name in ((cx, "pos_x"), (cy, "pos_y")):
        p = ds.attribute("train", name)
        r = torch.corrcoef(torch.stack([centre, p]))[0, 1]
        assert r > 0.95, (name, r)


def test_larger_scale_means_more_pixels(ds):
    scales = [0.5, 0.625, 0.75, 0.875, 1.0]
    for shape in range(3):
        area = _render([shape] * 5, scale=scales, orientation=0.3).sum((1, 2))
        assert torch.all(area.diff() > 0), (shape, area)
    area = ds.split("train").sum((1, 2, 3))
    scale = ds.attribute("train", "scale")
    for shape in range(3):
        m = ds.labels["train"] == shape
        small, large = area[m & (scale < 0.6)], area[m & (scale > 0.9)]
        assert large.mean() > 2.5 * small.mean(), (shape, small.mean(), large.mean())


def test_orientation_rotates_the_shape():
    square = _render([0, 0, 0], orientation=[0.0, math.pi / 4, math.pi / 2])
    assert not torch.equal(square[0], square[1])
    assert (square[0] != square[2]).sum() <= 4  # a square looks the same after a quarter turn
    ellipse = _render([1, 1], orientation=[0.0, math.pi / 2])
    # At orientation 0 the ellipse's long axis is horizontal; a quarter turn makes it vertical.
    cols0, rows0 = ellipse[0].amax(0).sum(), ellipse[0].amax(1).sum()
    cols1, rows1 = ellipse[1].amax(0).sum(), ellipse[1].amax(1).sum()
    assert cols0 > 1.5 * rows0 and rows1 > 1.5 * cols1
    heart = _render([2, 2], orientation=[0.0, math.pi])
    assert torch.equal(heart[1], heart[0].flip(0, 1))  # a half turn turns it upside down
    # Upright at orientation 0: the two lobes are at the top, the point at the bottom.
    top, bottom = heart[0, :16].sum(), heart[0, 16:].sum()
    assert top > bottom
    top_row = heart[0][heart[0].sum(1) > 0][0]
    assert top_row.nonzero().squeeze(1).diff().max() > 1  # a notch between the lobes


def test_the_three_shapes_differ():
    imgs = _render([0, 1, 2], orientation=0.2)
    area = imgs.sum((1, 2))
    assert area[0] > area[2] > area[1]  # square > heart > ellipse at equal scale
    for i in range(3):
        for j in range(i + 1, 3):
            assert (imgs[i] != imgs[j]).sum() > 20


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 8},
        {"size": 32.5},
        {"num_train": 0},
        {"num_valid": -1},
        {"num_test": 1.5},
        {"num_train": True},
    ],
)
def test_bad_arguments_raise_data_error(kwargs):
    with pytest.raises(DataError):
        make_shapes(**{"num_train": 4, "num_valid": 0, "num_test": 0, **kwargs})


def test_empty_splits_are_left_out():
    small = make_shapes(num_train=5, num_valid=0, num_test=2)
    assert sorted(small.splits) == ["test", "train"]
    assert small.describe()["splits"] == {"train": 5, "test": 2}
