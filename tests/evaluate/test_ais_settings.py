"""AISSettings: the one place ais and bdmc read, check and resolve their settings."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import ais, bdmc
from pyro_gen.evaluate.ais import AISSettings, ais_schedule

NOT_SETTINGS = {"model", "x", "guide", "module", "seed", "progress", "kwargs", "site"}


@pytest.mark.parametrize("fn", [ais, bdmc], ids=["ais", "bdmc"])
def test_ais_and_bdmc_take_exactly_the_settings_with_the_same_defaults(fn):
    params = {
        n: p.default for n, p in inspect.signature(fn).parameters.items() if n not in NOT_SETTINGS
    }
    fields = {f.name: f.default for f in dataclasses.fields(AISSettings) if f.init}
    assert params == fields


def test_counts_are_resolved_once():
    s = AISSettings(num_steps=1000)
    assert (s.T, s.tune_steps, s.num_bins) == (1000, 250, 50)  # min(T, max(100, T/4))
    s = AISSettings(num_steps=400.0, num_chains=4.0, num_leapfrog=2.0)
    assert (s.tune_steps, s.num_chains, s.num_leapfrog) == (100, 4, 2)
    assert isinstance(s.num_chains, int) and isinstance(s.num_leapfrog, int)
    s = AISSettings(num_steps=30)  # T < 100: tune over the whole schedule, bins <= T − 1
    assert (s.tune_steps, s.num_bins) == (30, 29)
    s = AISSettings(num_steps=30, tune_steps=5, num_bins=0)
    assert (s.tune_steps, s.num_bins) == (5, 1)
    assert torch.equal(s.betas, ais_schedule(30, "sigmoid"))
    assert torch.equal(s.tune_betas, ais_schedule(5, "sigmoid"))


def test_a_schedule_given_as_numbers_sets_t_and_is_reported_custom():
    beta = torch.tensor([0.0, 0.1, 0.5, 1.0])
    s = AISSettings(num_steps=1000, schedule=beta, tune_steps=2)
    assert s.T == 3 and s.schedule_name == "custom"
    assert torch.equal(s.betas, beta.double())
    # the tuning pass: tune_steps + 1 quantiles of the given β's (midway between 0.1 and 0.5)
    assert torch.allclose(s.tune_betas, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64))
    assert AISSettings(num_steps=3).schedule_name == "sigmoid"


def test_chunk_size_reads_batch_size_then_max_rows():
    assert AISSettings(num_chains=4, batch_size=3, max_rows=100).chunk_size("cpu") == 3
    assert AISSettings(num_chains=4, max_rows=100).chunk_size("cpu") == 25
    assert AISSettings(num_chains=16, max_rows=0).chunk_size("cpu") == 1
    assert AISSettings(num_chains=4).chunk_size("cpu") >= 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"mass": "full", "num_steps": 0}, "mass must be"),  # mass is checked first
        ({"num_chains": 2.5}, "num_chains must be a whole number"),
        ({"target_accept": 1.0}, r"target_accept must be in \(0, 1\)"),
        ({"start": "posterior"}, "start must be 'guide' or 'prior'"),
        ({"tune_steps": 0}, "tune_steps must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_a_bad_setting_is_refused_on_construction(bad, message):
    with pytest.raises(ConfigError, match=message):
        AISSettings(**bad)


def test_settings_are_frozen():
    s = AISSettings(num_steps=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_chains = 3
