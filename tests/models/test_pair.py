"""The pair contract: prepare_data casts and refuses data, check_pair refuses what cannot be
scored right, with the error class of the cause and a message that names site and shapes."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.models import (
    VAE,
    as_pair,
    check_pair,
    forked_rng,
    prepare_and_check,
    prepare_data,
)


def binary(n: int = 20, shape=(1, 16, 16), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *shape), 0.3), generator=g)


class ImageModel(nn.Module):
    """A user's image model; ``flat_logits=True`` is the reported bug: logits ``[N, 16, 16]``
    for images ``[N, 1, 16, 16]`` with ``.to_event(3)``."""

    def __init__(self, flat_logits: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dec, self.enc, self.flat_logits = nn.Linear(2, 256), nn.Linear(256, 4), flat_logits

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            logits = self.dec(z).reshape(-1, 16, 16)
            if not self.flat_logits:
                logits = logits.reshape(x.shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x.reshape(x.shape[0], -1))
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


class VectorModel(nn.Module):
    """z -> x in R^6 with knobs for the faults a user makes."""

    def __init__(self, lik: str = "bernoulli", scale: float = 1.0, raw_scale: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.dec, self.enc = nn.Linear(2, 6), nn.Linear(6, 4)
        self.lik, self.scale, self.raw_scale = lik, scale, raw_scale

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.scale):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            out = self.dec(z)
            if self.lik == "bernoulli":
                pyro.sample("x", dist.Bernoulli(logits=out).to_event(1), obs=x)
            elif self.lik == "one_loc":  # a loc of one value per datapoint, broadcast to 6
                pyro.sample("x", dist.Normal(out[:, :1], 1.0).to_event(1), obs=x)
            else:  # "no_event": the datapoint's dim left as a batch dim
                pyro.sample("x", dist.Normal(out, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x)
            scale = h[:, 2:] if self.raw_scale else h[:, 2:].exp()
            with poutine.scale(scale=self.scale):
                pyro.sample("z", dist.Normal(h[:, :2], scale).to_event(1))


def vectors(n: int = 8) -> torch.Tensor:
    return binary(n, (6,))


# -- fault 4: observed values must have exactly the distribution's shape -------------------------
def test_broadcasting_observation_is_a_shape_error_naming_site_and_shapes():
    x = binary()
    with pytest.raises(ShapeError) as info:
        check_pair(as_pair(ImageModel(flat_logits=True)), x[:8])
    msg = str(info.value)
    assert "observed site 'x'" in msg
    assert "[8, 1, 16, 16]" in msg and "[8, 8, 16, 16]" in msg  # value vs batch + event
    assert "event_shape [1, 16, 16]" in msg and "reshape(x.shape)" in msg  # the likely fix
    check_pair(as_pair(ImageModel()), x[:8])  # the fixed model passes


def test_a_loc_that_broadcasts_over_the_datapoint_is_refused():
    with pytest.raises(ShapeError, match=r"\[8, 6\].*\[8\] \+ \[1\]") as info:
        check_pair(as_pair(VectorModel("one_loc")), torch.randn(8, 6))
    assert "event_shape [1] is not one datapoint's shape [6]" in str(info.value)


def test_missing_to_event_is_a_shape_error_with_every_sites_shape():
    with pytest.raises(ShapeError) as info:
        check_pair(as_pair(VectorModel("no_event")), torch.randn(8, 6))
    msg = str(info.value)
    assert "at site 'x'" in msg and ".to_event(k)" in msg
    assert "Trace Shapes:" in msg and "z dist 8 | 2" in msg


# -- fault 6: each failure gets the error class of its cause --------------------------------------
def test_values_outside_the_support_are_a_short_data_error():
    x = vectors()
    x[:4] *= 0.5  # grey values for a Bernoulli likelihood
    with pytest.raises(DataError) as info:
        check_pair(as_pair(VectorModel()), x)
    msg = str(info.value)
    assert not isinstance(info.value, ShapeError)
    assert "site 'x'" in msg and "support Boolean()" in msg and "Bernoulli" in msg
    n_bad = int(((x != 0) & (x != 1)).sum())
    assert f"{n_bad} of 48 values" in msg and "e.g. [0.5" in msg and "Binarize" in msg
    assert "tensor(" not in msg and "found invalid values" not in msg and len(msg) < 400


def test_guide_draws_outside_the_priors_support_name_the_latent_site():
    class PositiveLatent(nn.Module):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                s = pyro.sample("s", dist.Gamma(2.0, 1.0))
                pyro.sample(
                    "x", dist.Normal(s.unsqueeze(-1).expand(x.shape), 1.0).to_event(1), obs=x
                )

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("s", dist.Normal(-5.0 + x.new_zeros(x.shape[0]), 0.1))

    with pytest.raises(DataError, match=r"guide's draws for latent site 's' .* GreaterThan"):
        check_pair(as_pair(PositiveLatent().model, PositiveLatent().guide, nn.ReLU()), vectors())


class UniformBelowLatent(nn.Module):
    """z ~ Gamma(2, 1), x ~ Uniform(0, z) (p(x) = e^-x): the support moves with z, so a −inf
    likelihood for one guide draw is the model's, not the data's (``high`` gives fixed bounds
    instead, where values outside are the data's fault)."""

    def __init__(self, high: float | None = None) -> None:
        super().__init__()
        self.high = high

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(2.0, 1.0))
            high = z if self.high is None else torch.full_like(z, self.high)
            pyro.sample("x", dist.Uniform(0.0, high), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LogNormal(x.new_zeros(x.shape[0]), 1.0))


def test_a_support_that_depends_on_the_latents_is_not_blamed_on_the_data():
    x = torch.tensor([0.5, 2.0, 4.0, 6.0, 8.0])  # P(z > 8) under LogNormal(0, 1) is 2 %
    m = UniformBelowLatent()
    for seed in range(3):
        pyro.set_rng_seed(seed)
        assert prepare_and_check(as_pair(m), x) is not None  # no DataError
    with pytest.raises(DataError, match=r"observed site 'x' are outside the support Interval"):
        check_pair(as_pair(UniformBelowLatent(high=1.0)), x)  # fixed bounds: the data's fault


def test_a_dtype_mismatch_is_a_data_error_naming_both_dtypes():
    with pytest.raises(DataError) as info:
        check_pair(as_pair(VectorModel()), vectors().double())
    msg = str(info.value)
    assert "inputs are x float64; the module's parameters are float32" in msg
    assert "cast x to float32" in msg and "prepare_data" in msg


def test_a_dtype_mismatch_in_an_attribute_names_the_attribute():
    class Labelled(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

        def model(self, x, y):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("y", dist.Normal(y @ self.w, 1.0), obs=x[:, 0])

        def guide(self, x, y):
            pass

    with pytest.raises(DataError, match=r"inputs are x float32, y float64.*cast y to float32"):
        check_pair(as_pair(Labelled()), vectors(), y=torch.ones(8, 2, dtype=torch.float64))


def test_nan_in_the_batch_is_a_data_error_naming_the_index():
    x = vectors()
    x[5, 2] = float("nan")
    with pytest.raises(DataError, match=r"1 non-finite values .* index \[5, 2\]"):
        check_pair(as_pair(VectorModel()), x)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_a_non_positive_scale_is_a_config_error(scale):
    with pytest.raises(ConfigError, match=rf"not > 0 .*got {scale}.*poutine.mask"):
        check_pair(as_pair(VectorModel(scale=scale)), vectors())


def test_a_parameter_outside_its_constraint_is_a_data_error_naming_it():
    with pytest.raises(DataError, match=r"Normal distribution .* parameter 'scale' .*GreaterThan"):
        check_pair(as_pair(VectorModel(raw_scale=True)), vectors())


def test_the_check_leaves_the_random_streams_alone():
    pair = as_pair(ImageModel())
    before = torch.get_rng_state()
    prepare_and_check(pair, binary())
    assert torch.equal(before, torch.get_rng_state())
    with forked_rng("cpu"):
        torch.randn(3)
    assert torch.equal(before, torch.get_rng_state())


# -- prepare_data ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "name"), [([[0.0, 1.0]], "list"), (np.zeros((2, 6)), "ndarray"), (None, "NoneType")]
)
def test_non_tensors_are_refused_naming_their_type(x, name):
    with pytest.raises(DataError, match=rf"data must be a torch.Tensor; got {name}"):
        prepare_data(as_pair(VectorModel()), x)


@pytest.mark.parametrize("x", [torch.zeros(0, 6), torch.zeros(4, 0)])
def test_empty_data_are_refused(x):
    with pytest.raises(DataError, match=re.escape(f"test data is empty (shape {list(x.shape)})")):
        prepare_data(as_pair(VectorModel()), x, "test data")
    with pytest.raises(DataError, match=r"0-dim tensor.*unsqueeze\(0\)"):
        prepare_data(as_pair(VectorModel()), torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_and_bool_data_are_cast_keeping_their_values(dtype):
    x = vectors()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a lossless cast
        out = prepare_data(as_pair(VectorModel()), x.to(dtype))
    assert out.dtype == torch.float32 and torch.equal(out, x)


def test_floating_data_of_another_dtype_are_cast_with_a_warning_at_the_callers_line():
    x = vectors()
    with pytest.warns(UserWarning, match="data is float64 but the model's parameters are float32"):
        out = prepare_data(as_pair(VectorModel()), x.double())
    assert out.dtype == torch.float32 and torch.equal(out, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_and_check(as_pair(VectorModel()), x.double())
    assert [w.filename for w in caught] == [__file__]  # it points at the user's call


def test_data_in_the_modules_dtype_pass_unchanged():
    x = vectors().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare_data(as_pair(VectorModel().double()), x) is x
        # no floating parameters or buffers: floating data are taken as they are
        assert prepare_data(as_pair(VectorModel().model, VectorModel().guide, nn.ReLU()), x) is x


def test_dtype_of_the_pair():
    assert as_pair(VectorModel()).dtype == torch.float32
    assert as_pair(VectorModel().double()).dtype == torch.float64
    buffers = nn.Module()
    buffers.register_buffer("w", torch.zeros(2, dtype=torch.float64))
    assert as_pair(VectorModel().model, VectorModel().guide, buffers).dtype == torch.float64
    assert as_pair(VectorModel().model, VectorModel().guide, nn.ReLU()).dtype == torch.float32


def test_shipped_models_check_their_data_and_others_get_finite_values_checked():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    with pytest.raises(DataError, match="binary data"):
        prepare_data(as_pair(vae), vectors() * 0.5)
    with pytest.raises(ShapeError, match=r"\[N, 6\]"):
        prepare_data(as_pair(vae), torch.zeros(4, 7))
    x = vectors()
    x[3, 1] = float("inf")
    with pytest.raises(DataError, match=r"training data holds 1 non-finite .* index \[3, 1\]"):
        prepare_data(as_pair(VectorModel()), x, "training data")


def test_prepare_and_check_returns_the_prepared_data_and_a_pair_passes_through():
    pair = as_pair(VectorModel())
    assert as_pair(pair) is pair
    x = vectors().to(torch.uint8)
    out = prepare_and_check(pair, x)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())
