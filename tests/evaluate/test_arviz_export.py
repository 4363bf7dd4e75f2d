"""InferenceData export: groups and dims, netCDF round trip, az.summary, posterior draws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import (
    diagnose,
    guide_draws,
    load_inference_data,
    save_inference_data,
    to_inference_data,
)
from pyro_gen.evaluate.diagnostics import import_arviz


def test_round_trip_through_netcdf_and_az_summary(lg, tmp_path):
    make, x = lg
    m = make(guide="meanfield", widen=1.2)
    d = diagnose(m, x, num_samples=100)
    idata = to_inference_data(m, x, d, points=[0, 3, 7], num_chains=2, num_draws=200)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "sample_stats"}
    assert dict(idata.posterior["z"].sizes) == {
        "chain": 2,
        "draw": 200,
        "point": 3,
        "latent_dim": 2,
    }
    assert idata.posterior["point"].values.tolist() == [0, 3, 7]

    path = save_inference_data(idata, tmp_path / "eval" / "inference_data.nc")
    back = load_inference_data(path)
    np.testing.assert_array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    np.testing.assert_allclose(back.log_likelihood["x"].values[0, 0], d.log_px.numpy())
    np.testing.assert_allclose(back.sample_stats["khat"].values[0, 0], d.khat.numpy())
    np.testing.assert_allclose(back.sample_stats["gap"].values[0, 0], d.gap.numpy())
    np.testing.assert_allclose(back.sample_stats["kl_per_dim"].values[0, 0], d.kl_per_dim.numpy())
    assert back.sample_stats["kl_dim"].values.tolist() == ["z[0]", "z[1]"]
    assert back.sample_stats.attrs["num_samples"] == 100
    assert back.sample_stats.attrs["active_units"] == d.active_units

    az = import_arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(back)
    assert len(table) == 3 * 2
    assert (table["r_hat"] < 1.05).all()  # independent draws in both chains
    # the draws' means are the guide's means at those points
    loc, _ = m.guide_params(x)
    np.testing.assert_allclose(table["mean"].values.reshape(3, 2), loc[[0, 3, 7]].numpy(), atol=0.1)


def test_guide_draws_follow_each_datapoint(lg):
    make, x = lg
    m = make(guide="exact")
    draws = guide_draws(m, x[:4], num_draws=3000)
    z = draws["z"]
    assert z.shape == (3000, 4, 2)
    loc, cov = m.posterior(x[:4])
    torch.testing.assert_close(z.mean(0), loc, rtol=0, atol=0.05)
    torch.testing.assert_close(torch.cov(z[:, 1].T), cov, rtol=0, atol=0.03)


def test_points_outside_x_are_refused(lg):
    make, x = lg
    m = make(guide="meanfield")
    d = diagnose(m, x, num_samples=2)
    with pytest.raises(ConfigError, match="row indices"):
        to_inference_data(m, x, d, points=[0, 20])
    with pytest.raises(ConfigError, match="cover 20 datapoints"):
        to_inference_data(m, x[:5], d)
