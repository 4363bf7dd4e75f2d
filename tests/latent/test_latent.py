"""Latent arithmetic against exact answers: an identity "model" (encode(x) = (x, σ), decode(z) =
z) makes attribute vectors, edits and traversals closed-form; slerp's endpoints and norms."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.latent import (
    add_vector,
    attribute_vector,
    has_attribute,
    interpolate,
    kl_per_dimension,
    lerp,
    slerp,
    traversal_order,
    traverse,
)
from pyro_gen.models import VAE


class Identity(torch.nn.Module):
    """q(z | x) = N(x, diag σ²) with a fixed σ per dimension; E[x | z] = z."""

    def __init__(self, scale):
        super().__init__()
        self.scale = torch.as_tensor(scale, dtype=torch.float32)

    def encode(self, x):
        return x, self.scale.expand_as(x)

    def decode(self, z):
        return z


def test_slerp_endpoints_and_norms():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    z1 = z1 / z1.norm(dim=-1, keepdim=True) * z0.norm(dim=-1, keepdim=True)  # equal norms
    path = slerp(z0, z1, 7)
    assert path.shape == (7, 5, 8)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    # equal norms stay equal along the great circle; the straight line cuts inside
    torch.testing.assert_close(path.norm(dim=-1), z0.norm(dim=-1).expand(7, 5))
    straight = lerp(z0, z1, 7)
    assert bool((straight[3].norm(dim=-1) < z0.norm(dim=-1) - 1e-3).all())
    # equal angles between steps
    unit = path / path.norm(dim=-1, keepdim=True)
    angles = torch.arccos((unit[1:] * unit[:-1]).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(angles, angles[:1].expand_as(angles), atol=1e-4, rtol=0)
    # orthogonal unit vectors: the midpoint is (z0 + z1)/√2 exactly
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, torch.tensor([0.5]))[0]
    torch.testing.assert_close(mid, torch.tensor([1.0, 1.0]) / math.sqrt(2))
    # parallel ends fall back to the straight line (no 0/0)
    torch.testing.assert_close(slerp(a, 3 * a, 5), lerp(a, 3 * a, 5))
    with pytest.raises(ShapeError):
        slerp(torch.zeros(3), torch.zeros(4), 2)


def test_attribute_vector_and_edits_are_exact_for_the_identity_model():
    model = Identity(torch.ones(3))
    x = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    has = torch.tensor([True, True, False, False])
    v = attribute_vector(model, x, has)
    torch.testing.assert_close(v, torch.tensor([2.0, -2.0, 1.0]))
    edited = add_vector(model, x[2:], v, alphas=[0.0, 1.0, 2.5])
    for i, a in enumerate([0.0, 1.0, 2.5]):
        torch.testing.assert_close(edited[i], x[2:] + a * v)
    with pytest.raises(DataError, match="with and without"):
        attribute_vector(model, x, torch.ones(4, dtype=torch.bool))
    assert has_attribute(torch.tensor([0.0, 2.0, 1.0]), "categorical", 2).tolist() == [
        False,
        True,
        False,
    ]
    assert has_attribute(torch.tensor([0.1, 0.9, 0.5]), "continuous").tolist() == [
        False,
        True,
        False,
    ]


def test_kl_per_dimension_closed_form():
    loc = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    scale = torch.tensor([[1.0, 0.5], [1.0, 0.5]])
    expect = torch.tensor([0.0, 0.5 * (1 + 0.25 - 1) - math.log(0.5)])
    torch.testing.assert_close(kl_per_dimension(loc, scale), expect)


def test_traversal_follows_kl_not_index():
    # KL per dimension is set by σ (loc = x is ~0): σ = 1 -> 0 nats; smaller σ -> more
    scale = torch.tensor([1.0, 0.1, 0.9, 0.3])
    model = Identity(scale)
    x = torch.zeros(10, 4)
    kl = kl_per_dimension(x, scale.expand(10, 4))
    assert traversal_order(kl).tolist() == [1, 3, 2, 0]
    t = traverse(model, x, num_dims=3, values=[-1.0, 0.0, 2.0], base=torch.ones(4))
    assert t.dims.tolist() == [1, 3, 2]
    torch.testing.assert_close(t.kl, kl[[1, 3, 2]])
    assert t.images.shape == (3, 3, 4)
    for row, d in enumerate(t.dims.tolist()):
        torch.testing.assert_close(t.images[row, :, d], torch.tensor([-1.0, 0.0, 2.0]))
        others = [i for i in range(4) if i != d]
        torch.testing.assert_close(t.images[row][:, others], torch.ones(3, 3))
    with pytest.raises(ConfigError, match="1..4"):
        traverse(model, x, num_dims=5)


def test_on_a_vae_shapes_and_ends():
    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=3, hidden=(8,)).eval()
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    path = interpolate(vae, x[:2], x[2:], steps=5, method="slerp")
    assert path.shape == (2, 5, 6)
    torch.testing.assert_close(path[:, 0], vae.reconstruct(x[:2]))
    torch.testing.assert_close(path[:, -1], vae.reconstruct(x[2:]))
    assert traverse(vae, x, num_dims=2).images.shape == (2, 9, 6)
    with pytest.raises(ConfigError, match="slerp"):
        interpolate(vae, x[:2], x[2:], method="spline")


class CondRecorder(torch.nn.Module):
    """encode(x, **y) = (x, 1); decode(z, y) = z, recording the attributes it was given."""

    attributes = [
        {"name": "shape", "kind": "categorical"},
        {"name": "scale", "kind": "continuous"},
        {"name": "flag", "kind": "binary"},
    ]

    def encode(self, x, **y):
        return x, torch.ones_like(x)

    def decode(self, z, y):
        self.seen = {k: v.clone() for k, v in y.items()}
        return z


def test_interpolate_a_conditional_model_keeps_each_ends_attributes():
    model = CondRecorder()
    x = torch.zeros(2, 3)
    c0 = {
        "shape": torch.tensor([0, 1]),
        "scale": torch.tensor([0.5, 1.0]),
        "flag": torch.tensor([0.0, 1.0]),
    }
    c1 = {
        "shape": torch.tensor([2, 2]),
        "scale": torch.tensor([1.0, 0.5]),
        "flag": torch.tensor([1.0, 0.0]),
    }
    interpolate(model, x, x, steps=5, method="lerp", condition=c0, condition1=c1)
    seen = {k: v.view(2, 5) for k, v in model.seen.items()}  # t = 0, .25, .5, .75, 1
    assert seen["shape"].tolist() == [[0, 0, 2, 2, 2], [1, 1, 2, 2, 2]]
    assert seen["flag"].tolist() == [[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]]
    torch.testing.assert_close(
        seen["scale"],
        torch.tensor([[0.5, 0.625, 0.75, 0.875, 1.0], [1.0, 0.875, 0.75, 0.625, 0.5]]),
    )
    with pytest.raises(ConfigError, match="same attributes"):
        interpolate(model, x, x, 3, "lerp", c0, {"shape": c1["shape"]})


def test_interpolate_a_cvae_ends_are_each_images_reconstruction():
    from pyro_gen.models import CVAE

    torch.manual_seed(0)
    attrs = [
        {"name": "shape", "kind": "categorical", "values": ["a", "b", "c"]},
        {"name": "scale", "kind": "continuous", "loc": 0.7, "scale": 0.2, "low": 0.5, "high": 1.0},
    ]
    m = CVAE(data_shape=(1, 4, 4), attributes=attrs, latent_dim=2, hidden=(8,)).eval()
    x = torch.bernoulli(torch.full((4, 1, 4, 4), 0.5))
    c0 = {"shape": torch.tensor([0, 0]), "scale": torch.tensor([0.6, 0.9])}
    c1 = {"shape": torch.tensor([2, 1]), "scale": torch.tensor([0.8, 0.5])}
    path = interpolate(m, x[:2], x[2:], 4, "slerp", c0, c1)
    torch.testing.assert_close(path[:, 0], m.reconstruct(x[:2], **c0))
    torch.testing.assert_close(path[:, -1], m.reconstruct(x[2:], **c1))


def test_binary_attribute_honours_the_value():
    flags = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert has_attribute(flags, "binary").tolist() == [True, True, False, False]
    assert has_attribute(flags, "binary", 1.0).tolist() == [True, True, False, False]
    assert has_attribute(flags, "binary", 0).tolist() == [False, False, True, True]
    model = Identity(torch.ones(3))
    x = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    toward_0 = attribute_vector(model, x, has_attribute(flags, "binary", 0))
    torch.testing.assert_close(toward_0, torch.tensor([-2.0, 2.0, -1.0]))
    with pytest.raises(ConfigError, match="0 or 1"):
        has_attribute(flags, "binary", 0.5)
