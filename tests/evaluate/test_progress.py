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


def test_the_bar_moves_within_a_chunk_per_piece_of_particles():
    from pyro_gen.evaluate.log_likelihood import importance_chunks
    from pyro_gen.models.pair import as_pair

    x = torch.bernoulli(torch.full((10, 4), 0.5))
    steps: list[int] = []
    with torch.no_grad():
        chunks = list(
            importance_chunks(
                as_pair(_vae(0), None, None), x, 20, batch_size=10, max_rows=50,
                on_progress=steps.append,
            )
        )  # fmt: skip
    assert len(chunks) == 1  # one chunk of 10 datapoints, 20 particles in pieces of 5
    assert steps == [2, 3, 2, 3]  # 10 x 5/20 = 2.5, 5, 7.5, 10 datapoints' worth, floored


def test_diagnose_advances_its_bar_more_often_than_once_per_chunk(monkeypatch):
    import pyro_gen.evaluate.diagnostics as d
    from pyro_gen.evaluate.progress import progress_bar

    updates: list[int] = []

    def recording_bar(*args, **kwargs):
        bar = progress_bar(*args, **kwargs)
        update = bar.update
        bar.update = lambda n=1: (updates.append(n), update(n))[1]
        return bar

    monkeypatch.setattr(d, "progress_bar", recording_bar)
    x = torch.bernoulli(torch.full((20, 4), 0.5))
    diagnose(_vae(0), x, num_samples=30, batch_size=10, max_rows=100, progress=False)
    assert sum(updates) == 20 and len(updates) == 6  # 2 chunks x 3 pieces of 10 particles
