"""A resume or a fit whose inputs cannot continue the run is refused up front with what to do
(found by a new user's review): other data, another architecture, validation entries that
differ from the training entries, and budgets that leave nothing to do."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import CheckpointError, ConfigError, DataError
from pyro_gen.infer import Trainer
from pyro_gen.infer.step import argument_error
from pyro_gen.models import VAE

SETTINGS = dict(batch_size=8, progress=False, log_every=1)


def binary(n: int) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 6), 0.3), generator=torch.Generator().manual_seed(0))


def vae(hidden=(8,)) -> VAE:
    torch.manual_seed(0)
    return VAE(data_shape=(6,), latent_dim=2, hidden=hidden)


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "run"
    Trainer(vae(), run_dir=path, max_steps=4, **SETTINGS).fit(binary(64))
    return path


def test_resume_on_other_data_is_refused(run):
    with pytest.raises(ConfigError, match="trained on 64 datapoints, this resume gives 32"):
        Trainer(vae(), run_dir=run, resume=True, max_steps=8, **SETTINGS).fit(binary(32))


def test_resume_with_another_architecture_is_a_checkpoint_error(run):
    with pytest.raises(CheckpointError, match="another architecture than this VAE"):
        Trainer(vae(hidden=(16,)), run_dir=run, resume=True, max_steps=8, **SETTINGS).fit(
            binary(64)
        )


def test_a_spent_budget_says_there_is_nothing_to_train(run):
    with pytest.warns(UserWarning, match="nothing to train: the resumed run is at step 4"):
        history = Trainer(vae(), run_dir=run, resume=True, max_steps=4, **SETTINGS).fit(binary(64))
    assert [r["step"] for r in history][-1] == 4


def test_validation_entries_must_be_the_training_entries():
    x = binary(64)
    with pytest.raises(DataError, match=r"entries \['w', 'x'\] differ from the training"):
        Trainer(vae(), max_steps=1, **SETTINGS).fit(x, {"x": x, "w": x})


def test_early_stopping_without_validation_data_says_so():
    with pytest.warns(UserWarning, match="early_stopping needs validation data"):
        Trainer(vae(), max_steps=1, early_stopping=2, **SETTINGS).fit(binary(64))


def test_the_argument_error_writes_the_call_as_python():
    e = TypeError("model() missing 1 required keyword-only argument: 'y'")
    assert "as model(x); " in str(argument_error(("x",), e))
    assert "as model(x, y=...); " in str(argument_error(("x", "y"), e))


def test_grey_validation_data_under_dynamic_binarization_are_binarized_once():
    """Grey validation images with dynamic binarization failed the Bernoulli support check at
    the first epoch's end, after training; now they are one seeded binarization."""
    g = torch.Generator().manual_seed(1)
    x, v = torch.rand(64, 6, generator=g), torch.rand(32, 6, generator=g)
    values = []
    for _ in range(2):
        history = Trainer(vae(), epochs=1, **SETTINGS).fit(x, v, dynamic_binarization=True)
        values.append(history[-1]["valid_elbo"])
    assert values[0] == values[1] and values[0] < 0  # the same fixed draw, a finite bound
