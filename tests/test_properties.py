"""Property-based tests (hypothesis) of shape handling in models and evaluators.

For any datapoint shape, latent size, batch size and particle count: the model and guide put
"z" and "x" under the plate "data" with the right shapes, per-datapoint evaluation returns
``[K, N]`` tables whose ELBO is reconstruction − KL, and a datapoint of the wrong shape is
refused with a ShapeError that names both shapes.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")

import pyro  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pyro import poutine  # noqa: E402

from pyro_gen.errors import ShapeError  # noqa: E402
from pyro_gen.evaluate import (  # noqa: E402
    evaluate_elbo,
    log_likelihood,
    pointwise_terms,  # noqa: E402
)
from pyro_gen.models import VAE  # noqa: E402

FAST = settings(max_examples=25, deadline=None)

flat_shapes = st.tuples(st.integers(1, 12))
image_shapes = st.tuples(st.integers(1, 2), st.integers(3, 9), st.integers(3, 9))


def _vae(shape, latent, network="mlp"):
    torch.manual_seed(0)
    return VAE(data_shape=shape, latent_dim=latent, hidden=(8,), channels=(4, 4), network=network)


def _data(n, shape, seed=0):
    return torch.bernoulli(
        torch.full((n, *shape), 0.4), generator=torch.Generator().manual_seed(seed)
    )


@FAST
@given(
    shape=st.one_of(flat_shapes, image_shapes),
    latent=st.integers(1, 4),
    n=st.integers(1, 6),
    k=st.integers(1, 5),
)
def test_sites_and_pointwise_tables_have_the_right_shapes(shape, latent, n, k):
    vae = _vae(shape, latent)
    x = _data(n, shape)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert model_tr.nodes["z"]["value"].shape == (n, latent)
    assert model_tr.nodes["x"]["fn"].event_shape == torch.Size(shape)
    assert model_tr.nodes["x"]["fn"].batch_shape == (n,)
    assert [f.name for f in model_tr.nodes["x"]["cond_indep_stack"]] == ["data"]
    with torch.no_grad():
        t = pointwise_terms(vae.model, vae.guide, x, num_particles=k)
    for table in (t.log_lik, t.log_prior, t.log_q, t.kl):
        assert table.shape == (k, n) and torch.isfinite(table).all()
    r = evaluate_elbo(vae, x, num_particles=k)
    assert r.elbo.shape == (n,)
    assert torch.allclose(r.elbo, r.reconstruction - r.kl, atol=1e-4)


@FAST
@given(shape=image_shapes, latent=st.integers(1, 3), n=st.integers(1, 4))
def test_conv_networks_take_any_image_size(shape, latent, n):
    if min(shape[1:]) < 4:  # too small for two stride-2 layers: a clear error instead
        with pytest.raises(ShapeError, match="too small"):
            _vae(shape, latent, network="conv")
        return
    vae = _vae(shape, latent, network="conv")
    x = _data(n, shape)
    assert vae.reconstruct(x).shape == x.shape
    assert vae.sample(n, seed=1).shape == x.shape


@FAST
@given(
    shape=st.one_of(flat_shapes, image_shapes),
    other=st.one_of(flat_shapes, image_shapes),
    n=st.integers(1, 4),
)
def test_a_wrong_datapoint_shape_is_refused_naming_both_shapes(shape, other, n):
    if tuple(other) == tuple(shape):
        return
    vae = _vae(shape, 2)
    x = _data(n, other)
    with pytest.raises(ShapeError) as info:
        vae.model(x)
    assert str(list(shape)) in str(info.value) and str(list(x.shape)) in str(info.value)


@FAST
@given(n=st.integers(1, 5), k=st.integers(1, 40), max_rows=st.integers(1, 64))
def test_log_likelihood_does_not_depend_on_the_chunking(n, k, max_rows):
    vae = _vae((5,), 2)
    x = _data(n, (5,))
    pyro.set_rng_seed(0)
    a = log_likelihood(vae, x, num_samples=k, max_rows=max_rows, batch_size=2, seed=3)
    assert a.shape == (n,) and torch.isfinite(a).all()
    # the estimate is at least the ELBO on average, whatever the chunking (K >= 1)
    b = log_likelihood(vae, x, num_samples=k, max_rows=10_000, batch_size=100, seed=3)
    assert torch.allclose(a.mean(), b.mean(), atol=3.0)
