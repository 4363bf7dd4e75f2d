"""Every evaluator takes its input through the same checks as the trainer (prepare_data, then
check_pair on the first rows) before any heavy work: casts, refusals and their messages."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.errors import DataError, ShapeError
from pyro_gen.evaluate import (
    compare,
    diagnose,
    elbo_terms,
    evaluate_elbo,
    guide_draws,
    log_likelihood,
    to_inference_data,
)
from pyro_gen.models import VAE


class User(nn.Module):
    """A user's own Bernoulli model over 6 pixels; ``to_event=False`` forgets ``.to_event(1)``,
    ``flat=True`` scores images [N, 1, 2, 3] with logits [N, 2, 3] and ``.to_event(3)``."""

    def __init__(self, to_event: bool = True, flat: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dec, self.enc = nn.Linear(2, 6), nn.Linear(6, 4)
        self.to_event, self.flat = to_event, flat

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            logits = self.dec(z)
            if self.flat:
                lik = dist.Bernoulli(logits=logits.reshape(-1, 2, 3)).to_event(3)
            elif self.to_event:
                lik = dist.Bernoulli(logits=logits.reshape(x.shape)).to_event(x.dim() - 1)
            else:
                lik = dist.Bernoulli(logits=logits)
            pyro.sample("x", lik, obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x.reshape(x.shape[0], -1))
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def data(n: int = 40) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 6), 0.4), generator=torch.Generator().manual_seed(0))


def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(data_shape=(6,), latent_dim=2, hidden=(8,))


EVALUATORS = {
    "evaluate_elbo": lambda m, x: evaluate_elbo(m, x, num_particles=2),
    "log_likelihood": lambda m, x: log_likelihood(m, x, num_samples=3),
    "diagnose": lambda m, x: diagnose(m, x, num_samples=3),
    "to_inference_data": lambda m, x: to_inference_data(m, x, num_samples=3, points=2, num_draws=2),
    "compare": lambda m, x: compare({"m": m}, x, num_samples=3),
    "guide_draws": lambda m, x: guide_draws(m, x, num_draws=2),
}


@pytest.mark.parametrize("evaluator", list(EVALUATORS))
@pytest.mark.parametrize("make", [vae, User], ids=["VAE", "user model"])
def test_nan_data_are_refused_naming_the_index_by_every_evaluator(evaluator, make):
    x = data()
    x[25, 2] = float("nan")  # far past the rows check_pair sees
    with pytest.raises(DataError, match=r"x holds 1 non-finite values .* index \[25, 2\]"):
        EVALUATORS[evaluator](make(), x)


@pytest.mark.parametrize("evaluator", list(EVALUATORS))
def test_a_missing_to_event_is_a_shape_error_in_every_evaluator(evaluator):
    with pytest.raises(ShapeError, match=r"(?s)at site 'x'.*\.to_event\(k\).*Trace Shapes"):
        EVALUATORS[evaluator](User(to_event=False), data())


@pytest.mark.parametrize("evaluator", list(EVALUATORS))
def test_an_observation_that_broadcasts_is_a_shape_error_in_every_evaluator(evaluator):
    x = data().reshape(-1, 1, 2, 3)
    with pytest.raises(ShapeError, match=r"observed site 'x'.*\[8, 1, 2, 3\].*\[8, 8, 2, 3\]"):
        EVALUATORS[evaluator](User(flat=True), x)
    EVALUATORS[evaluator](User(), x)  # the same model with logits shaped as the data


def test_the_check_comes_before_the_heavy_work():
    # K = 10^12 particles would exhaust any memory: the refusal comes first
    with pytest.raises(ShapeError, match="observed site 'x'"):
        log_likelihood(User(flat=True), data().reshape(-1, 1, 2, 3), num_samples=10**12)


@pytest.mark.parametrize("make", [vae, User], ids=["VAE", "user model"])
def test_uint8_and_float64_data_give_the_float32_numbers(make):
    x = data()
    ref = evaluate_elbo(make(), x, num_particles=3, seed=1)
    as_uint8 = evaluate_elbo(make(), x.to(torch.uint8), num_particles=3, seed=1)
    assert torch.equal(as_uint8.elbo, ref.elbo) and torch.equal(as_uint8.kl, ref.kl)
    with pytest.warns(UserWarning, match="x is float64 but the model's parameters are float32"):
        as_f64 = evaluate_elbo(make(), x.double(), num_particles=3, seed=1)
    torch.testing.assert_close(as_f64.elbo, ref.elbo, atol=1e-5, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in (log_likelihood, diagnose):
            a = fn(make(), x, num_samples=4, seed=2)
            b = fn(make(), x.to(torch.uint8), num_samples=4, seed=2)
            c = fn(make(), x.double(), num_samples=4, seed=2)
            a, b, c = (getattr(r, "log_px", r) for r in (a, b, c))
            assert torch.equal(a, b)
            torch.testing.assert_close(c, a, atol=1e-5, rtol=0)


def test_the_seeded_numbers_do_not_depend_on_the_checks():
    """The checks run on a forked random stream: the evaluators' draws are those of the seed."""
    m, x = User(), data()
    pyro.set_rng_seed(3)
    with torch.no_grad():
        direct = elbo_terms(m.model, m.guide, x, num_particles=2)["elbo"]
    torch.testing.assert_close(evaluate_elbo(m, x, num_particles=2, seed=3).elbo, direct)


def test_bad_values_for_a_users_bernoulli_are_a_data_error_not_a_shape_error():
    x = data()
    x[:3] = 0.5
    with pytest.raises(DataError, match=r"site 'x' are outside the support Boolean\(\)") as info:
        evaluate_elbo(User(), x)
    assert not isinstance(info.value, ShapeError) and "tensor(" not in str(info.value)
