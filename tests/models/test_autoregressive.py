"""The exact-likelihood autoregressive model ("made"): MADE's masks, normalisation over every
binary 2x2 image, pixel-by-pixel sampling against the exact distribution, the evaluators on a
program without latents, and the model contract."""

from __future__ import annotations

import itertools

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import diagnose, evaluate_elbo, log_likelihood
from pyro_gen.infer import Trainer
from pyro_gen.models import build_model
from pyro_gen.models.autoregressive import AutoregressiveCategorical, MADEModel
from pyro_gen.nn.made import MADE
from tests.contract import ModelContract

# chi-square 0.999 quantiles (df 15 and 8): a correct sampler fails these 1 time in 1000
CHI2_999 = {15: 37.70, 8: 26.12}


def all_binary(shape=(1, 2, 2)) -> torch.Tensor:
    d = 1
    for s in shape:
        d *= s
    rows = list(itertools.product([0.0, 1.0], repeat=d))
    return torch.tensor(rows).reshape(len(rows), *shape)


def perturbed(model: torch.nn.Module, seed: int = 1, scale: float = 1.5) -> torch.nn.Module:
    """Random non-zero weights everywhere (a fresh MADE's biases are small; make it peaked)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("in_per_var,out_per_var", [(1, 1), (3, 3), (1, 2)])
@pytest.mark.parametrize("direct", [True, False])
def test_made_output_d_depends_only_on_inputs_before_d(in_per_var, out_per_var, direct):
    D = 5
    made = perturbed(MADE(D, (12, 9), in_per_var, out_per_var, direct=direct))
    x = torch.randn(1, D * in_per_var, requires_grad=True)
    out = made(x).reshape(D, out_per_var)
    for d in range(D):
        for j in range(out_per_var):
            (grad,) = torch.autograd.grad(out[d, j], x, retain_graph=True)
            grad = grad.reshape(D, in_per_var).abs().sum(1)
            assert torch.all(grad[d:] == 0), (d, j, grad)
            if d > 0:  # a MADE this wide connects output d to some earlier input
                assert grad[:d].sum() > 0, (d, j)


def test_made_one_variable_is_a_constant():
    made = perturbed(MADE(1, (4,)))
    assert torch.equal(made(torch.zeros(1, 1)), made(torch.ones(1, 1)))


def test_probabilities_of_all_16_binary_2x2_images_sum_to_one():
    model = perturbed(MADEModel(data_shape=(1, 2, 2), hidden=(8, 8)))
    logp = model.log_prob(all_binary())
    assert logp.shape == (16,)
    torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    # and the distribution is not trivially uniform: the check above could fail
    assert float((logp.max() - logp.min()).detach()) > 1.0


def test_probabilities_sum_to_one_after_training():
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 24 + [[0.0, 1.0, 0.0, 1.0]] * 8).reshape(32, 1, 2, 2)
    model = MADEModel(data_shape=(1, 2, 2), hidden=(16,))
    Trainer(model, max_steps=150, batch_size=32, lr=3e-2, progress=False).fit(x)
    p = model.log_prob(all_binary()).exp().detach()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    # the two training images carry most of the mass, in the data's 3:1 ratio
    idx = {tuple(v.flatten().tolist()): i for i, v in enumerate(all_binary())}
    a, b = p[idx[(1.0, 1.0, 0.0, 0.0)]], p[idx[(0.0, 1.0, 0.0, 1.0)]]
    assert a + b > 0.9 and 2.0 < float(a / b) < 4.5


def test_pixel_by_pixel_sampling_gives_the_models_distribution():
    model = perturbed(MADEModel(data_shape=(1, 2, 2), hidden=(8,)), seed=3, scale=0.4)
    exact = model.log_prob(all_binary()).exp().detach()
    n = 20000
    draws = model.sample(n, seed=0).reshape(n, 4)
    codes = (draws * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long()  # itertools order
    counts = torch.bincount(codes, minlength=16).double()
    expected = n * exact.double()
    assert expected.min() > 5  # the chi-square approximation holds
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_999[15], (chi2, counts, expected)


def test_categorical_grid_sums_to_one_and_samples_its_distribution():
    K, D = 3, 2
    net = perturbed(MADE(D, (10,), in_per_var=K, out_per_var=K), seed=2, scale=0.4)
    d = AutoregressiveCategorical(net, (D,), K)
    grid = torch.tensor(list(itertools.product(range(K), repeat=D)))
    p = d.log_prob(grid).exp().detach()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    n = 20000
    s = d.sample((n,), generator=torch.Generator().manual_seed(0))
    assert s.dtype == torch.long and s.shape == (n, D)
    counts = torch.bincount(s[:, 0] * K + s[:, 1], minlength=K * K).double()
    expected = n * p.double()
    assert expected.min() > 5
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_999[8], (chi2, counts, expected)


def test_evaluators_are_exact_without_latents():
    model = perturbed(MADEModel(data_shape=(1, 2, 2), hidden=(8,)))
    x = all_binary()
    exact = model.log_prob(x).detach().double()
    r = evaluate_elbo(model, x)
    torch.testing.assert_close(r.elbo.double(), exact)
    assert torch.all(r.kl == 0) and r.is_bound
    # K = 5000 is run as one particle (all weights are log p(x)): exact and cheap
    torch.testing.assert_close(log_likelihood(model, x, num_samples=5000), exact)
    d = diagnose(model, x, num_samples=100)
    torch.testing.assert_close(d.log_px, exact)
    s = d.summary()
    assert s["gap"] == 0 and s["active_units"] == 0 and s["latent_dims"] == 0
    assert s["ess_min"] == pytest.approx(100) and s["khat_max"] == 0


def test_registered_and_rebuilt_from_config():
    m = build_model("made", {"data_shape": [1, 3, 3], "hidden": [7], "seed": 4})
    assert isinstance(m, MADEModel) and m.config["hidden"] == [7]
    again = build_model("made", m.config)
    for (k, a), b in zip(m.state_dict().items(), again.state_dict().values()):
        if k.endswith("mask"):
            assert torch.equal(a, b), k  # the same degrees: the same masks


class TestMADEContract(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return MADEModel(data_shape=(12,), hidden=(16,))

    def make_data(self):
        g = torch.Generator().manual_seed(0)
        return {"x": torch.bernoulli(torch.full((self.num_data, 12), 0.3), generator=g)}


# -- mask ensembles (connectivity-agnostic training, Germain et al. Sec. 4.2) -----------------
def test_every_mask_of_an_ensemble_is_autoregressive_and_they_differ():
    D = 5
    made = perturbed(MADE(D, (12, 9), num_masks=4))
    x = torch.randn(1, D, requires_grad=True)
    outs = []
    for m in range(4):
        out = made(x, m)
        outs.append(out.detach())
        for d in range(D):
            (grad,) = torch.autograd.grad(out[0, d], x, retain_graph=True)
            assert torch.all(grad[0, d:] == 0), (m, d, grad)
    assert not torch.allclose(outs[0], outs[1])  # other connectivity, other function
    # pattern 0 is the single-mask MADE's (same seed): old checkpoints keep their meaning
    single = MADE(D, (12, 9))
    for (k, a), b in zip(single.state_dict().items(), made.state_dict().values()):
        if k.endswith("mask"):
            assert torch.equal(a, b if b.dim() == 2 else b[0]), k


def test_ensemble_is_the_exact_mixture_and_sums_to_one():
    model = perturbed(MADEModel(data_shape=(1, 2, 2), hidden=(8,), num_masks=3)).eval()
    x = all_binary()
    mix = model.log_prob(x).detach()
    torch.testing.assert_close(mix.exp().sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    per = torch.stack([model.distribution(m).log_prob(x).detach() for m in range(3)])
    for m in range(3):  # each pattern alone is a distribution too
        torch.testing.assert_close(per[m].exp().sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(mix, per.exp().mean(0).log())
    assert not torch.allclose(per[0], per[1])
    # every evaluator sees the mixture (eval mode), even on a model left in train mode
    model.train()
    torch.testing.assert_close(log_likelihood(model, x, num_samples=10).float(), mix)
    torch.testing.assert_close(evaluate_elbo(model, x).elbo.float(), mix)


def test_ensemble_trains_one_pattern_per_step_and_is_not_captured():
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 24 + [[0.0, 1.0, 0.0, 1.0]] * 8).reshape(32, 1, 2, 2)
    model = MADEModel(data_shape=(1, 2, 2), hidden=(16,), num_masks=4)
    assert not model.capturable and MADEModel(data_shape=(1, 2, 2)).capturable
    torch.manual_seed(0)
    trainer = Trainer(model, max_steps=200, batch_size=32, lr=3e-2, progress=False)
    trainer.fit(x)
    # a captured graph would replay one pattern; a single-mask MADE is captured
    assert trainer.step.loss.stats["replays"] == 0 and trainer.step.loss.stats["eager"] > 0
    model.eval()
    p = model.log_prob(all_binary()).exp().detach()
    idx = {tuple(v.flatten().tolist()): i for i, v in enumerate(all_binary())}
    a, b = p[idx[(1.0, 1.0, 0.0, 0.0)]], p[idx[(0.0, 1.0, 0.0, 1.0)]]
    assert a + b > 0.9 and 2.0 < float(a / b) < 4.5
    # every pattern learned (each was drawn in training), not only pattern 0
    for m in range(4):
        pm = model.distribution(m).log_prob(all_binary()).exp().detach()
        assert pm[idx[(1.0, 1.0, 0.0, 0.0)]] + pm[idx[(0.0, 1.0, 0.0, 1.0)]] > 0.8, m


def test_ensemble_sampling_and_mean_images_follow_the_mixture():
    model = perturbed(MADEModel(data_shape=(1, 2, 2), hidden=(8,), num_masks=3), seed=3, scale=0.5)
    model.eval()
    exact = model.log_prob(all_binary()).exp().detach()
    n = 20000
    draws = model.sample(n, seed=0).reshape(n, 4)
    codes = (draws * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long()
    counts = torch.bincount(codes, minlength=16).double()
    expected = n * exact.double()
    assert expected.min() > 5
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_999[15], (chi2, counts, expected)
    # the mean image's first pixel is the mixture's marginal p(x_1 = 1), from the exact table
    probs = model.sample(4, seed=1, mean=True).reshape(4, 4)
    p1 = exact[all_binary().reshape(16, 4)[:, 0] == 1].sum()
    torch.testing.assert_close(probs[:, 0], p1.expand(4), atol=1e-5, rtol=0)


def test_num_masks_is_checked():
    with pytest.raises(ConfigError, match="num_masks"):
        MADE(4, (8,), num_masks=0)
    with pytest.raises(ConfigError, match="out of range"):
        MADE(4, (8,), num_masks=2)(torch.zeros(1, 4), 2)


def test_grey_data_is_a_data_error_that_does_not_suggest_a_gaussian_likelihood():
    from pyro_gen.errors import DataError

    m = build_model("made", {"data_shape": [1, 2, 2], "hidden": [8]})
    with pytest.raises(DataError, match="binary pixels only") as e:
        m.check_data(torch.full((1, 1, 2, 2), 0.5))
    assert "gaussian" not in str(e.value)
