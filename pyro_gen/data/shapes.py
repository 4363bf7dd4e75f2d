"""A procedurally generated dSprites-like data set: white shapes on black, known factors.

Every image shows one shape (square, ellipse or heart) with a scale, an orientation and a
position drawn uniformly at random; the factors are kept as ``attributes`` so that
disentanglement and latent-arithmetic tools have a ground truth. Nothing is downloaded: the
images are rendered with torch from implicit inequalities, deterministically from ``seed``.

>>> from pyro_gen.data import make_shapes
>>> ds = make_shapes(num_train=8, num_valid=2, num_test=2, size=32, seed=0)
>>> ds.split("train").shape
torch.Size([8, 1, 32, 32])
>>> ds.attribute_names[:5]
('shape', 'scale', 'orientation', 'pos_x', 'pos_y')
"""

from __future__ import annotations

import math

import torch

from pyro_gen.data.dataset import Dataset
from pyro_gen.errors import DataError

__all__ = ["SHAPE_NAMES", "ATTRIBUTE_NAMES", "make_shapes", "render_shapes"]

SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")
"""Shape names; a shape's index in this tuple is its label."""

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "shape",
    "scale",
    "orientation",
    "pos_x",
    "pos_y",
    "is_square",
    "is_ellipse",
    "is_heart",
)
"""Columns of ``attributes``: the five factors, then a one-hot code of the shape."""

SCALE_RANGE = (0.5, 1.0)
BASE_RADIUS = 0.22
"""Half-width of a shape at scale 1, as a fraction of the image side."""

# Every shape lies inside the disc of radius sqrt(2) in its own (u, v) units (the square's
# corners are farthest), so a centre at least this far (plus half a pixel) from the border
# keeps the shape wholly inside the image whatever its scale and orientation.
_MARGIN = BASE_RADIUS * math.sqrt(2.0)

# The heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 = 0 spans x in [-1.139, 1.139] and
# y in [-1, 1.236]; scaling by 1.139 and shifting y by 0.118 centres it on the unit box.
_HEART_SCALE = 1.139
_HEART_SHIFT = 0.118

_CHUNK = 2048


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def render_shapes(
    shape: torch.Tensor,
    scale: torch.Tensor,
    orientation: torch.Tensor,
    pos_x: torch.Tensor,
    pos_y: torch.Tensor,
    size: int = 32,
) -> torch.Tensor:
    """Binary float32 images ``[N, 1, size, size]`` for given factors (each a tensor ``[N]``).

    ``shape`` holds indices into :data:`SHAPE_NAMES`; ``orientation`` is in radians,
    counter-clockwise as seen on screen; ``pos_x``/``pos_y`` in [0, 1] move the centre
    left to right and top to bottom.

    >>> import torch
    >>> one = torch.ones(1)
    >>> img = render_shapes(torch.tensor([0]), one, 0 * one, one / 2, one / 2, size=16)
    >>> img.shape, bool(img.sum() > 0)
    (torch.Size([1, 1, 16, 16]), True)
    """
    size = _check_count("size", size, 16)
    n = len(shape)
    if n == 0:
        return torch.zeros(0, 1, size, size)
    margin = _MARGIN * size + 0.5
    span = size - 2.0 * margin
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    out = torch.empty(n, 1, size, size)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        s = shape[sl].long().view(-1, 1, 1)
        r = (BASE_RADIUS * size * scale[sl].float()).view(-1, 1, 1)
        th = orientation[sl].float().view(-1, 1, 1)
        cx = (margin + span * pos_x[sl].float()).view(-1, 1, 1)
        cy = (margin + span * pos_y[sl].float()).view(-1, 1, 1)
        x = coords.view(1, 1, -1) - cx  # to the right
        y = cy - coords.view(1, -1, 1)  # upwards (rows grow downwards)
        cos, sin = torch.cos(th), torch.sin(th)
        u = (cos * x + sin * y) / r  # inverse rotation, then inverse scaling
        v = (cos * y - sin * x) / r
        square = torch.maximum(u.abs(), v.abs()) <= 1.0
        ellipse = u * u + (v / 0.5) ** 2 <= 1.0
        hx = u * _HEART_SCALE
        hy = v * _HEART_SCALE + _HEART_SHIFT
        hx2 = hx * hx
        heart = (hx2 + hy * hy - 1.0) ** 3 - hx2 * hy**3 <= 0.0
        inside = torch.where(s == 0, square, torch.where(s == 1, ellipse, heart))
        out[sl, 0] = inside.float()
    return out


def make_shapes(
    num_train: int = 20000,
    num_valid: int = 2000,
    num_test: int = 2000,
    size: int = 32,
    seed: int = 0,
) -> Dataset:
    """The "shapes" data set: binary ``[N, 1, size, size]`` images with known factors.

    Factors per image, uniform and independent: shape (square/ellipse/heart, the label),
    scale in [0.5, 1], orientation in [0, 2π) (a square looks the same every π/2 and an
    ellipse every π), ``pos_x`` and ``pos_y`` in [0, 1]. Image ``i`` of the concatenation
    train + valid + test depends only on ``seed`` and ``i``: the splits are disjoint draws
    from one ``torch.Generator`` stream, and a smaller ``num_train`` gives a prefix of the
    larger training set. Needs ``size >= 16``; every image has pixels on (at least 3 at
    ``size=16``, at least 16 at ``size=32``).

    >>> ds = make_shapes(num_train=4, num_valid=0, num_test=0, size=16)
    >>> sorted(ds.splits), ds.labels["train"].dtype
    (['train'], torch.int64)
    """
    num_train = _check_count("num_train", num_train, 1)
    num_valid = _check_count("num_valid", num_valid, 0)
    num_test = _check_count("num_test", num_test, 0)
    size = _check_count("size", size, 16)
    total = num_train + num_valid + num_test

    gen = torch.Generator().manual_seed(int(seed))
    # One row of five uniforms per image, in image order.
    draws = torch.rand(total, 5, generator=gen)
    shape = (draws[:, 0] * len(SHAPE_NAMES)).long().clamp_(max=len(SHAPE_NAMES) - 1)
    lo, hi = SCALE_RANGE
    scale = lo + (hi - lo) * draws[:, 1]
    orientation = 2.0 * math.pi * draws[:, 2]
    pos_x, pos_y = draws[:, 3], draws[:, 4]

    one_hot = torch.nn.functional.one_hot(shape, len(SHAPE_NAMES)).float()
    attributes = torch.cat(
        [torch.stack([shape.float(), scale, orientation, pos_x, pos_y], dim=1), one_hot], dim=1
    )

    splits, labels, attrs = {}, {}, {}
    start = 0
    for name, count in (("train", num_train), ("valid", num_valid), ("test", num_test)):
        if count == 0:
            continue
        sl = slice(start, start + count)
        splits[name] = render_shapes(
            shape[sl], scale[sl], orientation[sl], pos_x[sl], pos_y[sl], size
        )
        labels[name] = shape[sl].clone()  # own storage: saving one split saves only it
        attrs[name] = attributes[sl].clone()
        start += count
    return Dataset(
        name="shapes",
        splits=splits,
        image_shape=(1, size, size),
        labels=labels,
        attributes=attrs,
        label_names=SHAPE_NAMES,
        attribute_names=ATTRIBUTE_NAMES,
        binary=True,
        info={"generator": "pyro_gen.shapes", "seed": int(seed), "size": size},
    )
