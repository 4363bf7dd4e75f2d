"""Long evaluations show a progress bar when asked (or on a terminal) and nothing otherwise."""

from __future__ import annotations

import torch

from pyro_gen.evaluate import compare, diagnose
from pyro_gen.models import VAE


def _vae(seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE(data_shape=(4,), latent_dim=2, hidden=(8,))


def test_diagnose_shows_its_progress_over_the_datapoints(capsys):
    x = torch.bernoulli(torch.full((30, 4), 0.5))
    diagnose(_vae(0), x, num_samples=25, batch_size=10, progress=True)
    err = capsys.readouterr().err
    assert "diagnose (K=25)" in err and "/30 [" in err and "datapoint" in err
    diagnose(_vae(0), x, num_samples=25, batch_size=10, progress=False)
    diagnose(_vae(0), x, num_samples=25, batch_size=10)  # None: stderr is no terminal here
    assert capsys.readouterr().err == ""


def test_compare_shows_the_models_done(capsys):
    x = torch.bernoulli(torch.full((12, 4), 0.5))
    result = compare({"a": _vae(0), "b": _vae(1)}, x, num_samples=25, progress=True)
    err = capsys.readouterr().err
    assert "compare" in err and "2/2" in err and "model" in err
    assert sorted(result.names) == ["a", "b"]


def test_log_likelihood_shows_its_progress(capsys):
    from pyro_gen.evaluate import log_likelihood

    x = torch.bernoulli(torch.full((20, 4), 0.5))
    quiet = log_likelihood(_vae(0), x, num_samples=10, batch_size=10)
    assert capsys.readouterr().err == ""
    shown = log_likelihood(_vae(0), x, num_samples=10, batch_size=10, progress=True)
    assert "log p(x) (K=10)" in capsys.readouterr().err
    assert torch.equal(quiet, shown)  # the bar changes nothing
