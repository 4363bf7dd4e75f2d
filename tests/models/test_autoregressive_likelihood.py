"""The autoregressive likelihood p(x | z) = Π_d p(x_d | x_<d, z): normalised for every z,
sampled pixel by pixel from the same conditionals, usable as the hierarchical VAE's decoder."""

from __future__ import annotations

import itertools

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import log_likelihood
from pyro_gen.models.hvae import HierarchicalVAE
from pyro_gen.models.likelihoods import AutoregressiveLikelihood, make_likelihood
from pyro_gen.nn.made import MADE
from tests.contract import ModelContract
from tests.models.test_contract_vae import binary

ALL_2X2 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 1, 2, 2)


def _likelihood(seed: int = 0) -> AutoregressiveLikelihood:
    torch.manual_seed(seed)
    return make_likelihood("autoregressive", (1, 2, 2), hidden=(16,))


def test_probabilities_sum_to_one_over_all_images_for_every_context():
    lik = _likelihood()
    params = 2 * torch.randn(5, 1, 2, 2)  # five different decoder outputs
    lp = lik(params).log_prob(ALL_2X2.unsqueeze(1))  # [16, 5]: broadcast with the contexts
    assert lp.shape == (16, 5)
    torch.testing.assert_close(lp.logsumexp(0), torch.zeros(5), atol=1e-5, rtol=0)
    # the context matters: different z, different distributions
    assert (lp[:, 0] - lp[:, 1]).abs().max() > 1e-3


def test_pixel_by_pixel_samples_follow_the_same_probabilities():
    lik = _likelihood(1)
    params = torch.randn(1, 1, 2, 2).expand(20000, 1, 2, 2)
    x = lik.sample(params, torch.Generator().manual_seed(0))
    codes = (x.reshape(-1, 4) * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).double() / len(codes)
    p = lik(params[:1]).log_prob(ALL_2X2).exp().double().squeeze(-1)
    se = (p * (1 - p) / len(codes)).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-3).all(), (freq, p)


def test_it_has_no_closed_form_mean_and_says_so():
    lik = _likelihood()
    assert not lik.has_mean
    with pytest.raises(ConfigError, match="no closed-form mean"):
        lik.mean(torch.zeros(2, 1, 2, 2))
    m = HierarchicalVAE((1, 2, 2), (3, 2), (8,), (4,), likelihood="autoregressive", ar_hidden=(8,))
    x = m.reconstruct(torch.ones(3, 1, 2, 2))  # a draw, not a mean
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_a_made_with_context_needs_it_and_a_plain_one_refuses_it():
    with pytest.raises(ConfigError, match="needs a context"):
        MADE(4, (8,), context_features=3)(torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="needs no context"):
        MADE(4, (8,))(torch.zeros(2, 4), context=torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="context_features"):
        MADE(4, (8,), context_features=-1)


def test_the_importance_sampled_log_px_of_the_hvae_uses_the_exact_conditional():
    torch.manual_seed(0)
    m = HierarchicalVAE((1, 2, 2), (3, 2), (8,), (4,), likelihood="autoregressive", ar_hidden=(8,))
    lp = log_likelihood(m, ALL_2X2, num_samples=4000, seed=0)  # every image, IS with q
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=0.03)  # p(x) sums to one


class TestHierarchicalVAEAutoregressive(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return HierarchicalVAE(
            data_shape=(12,),
            latent_dims=(4, 2),
            hidden=(16,),
            hidden_top=(8,),
            likelihood="autoregressive",
            ar_hidden=(16,),
        )

    def make_data(self):
        return binary(self.num_data, (12,))


def test_cli_trains_it_and_draws_its_figures(tmp_path):
    from pyro_gen.cli import main

    tiny = "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 16".split()
    args = ["--model", "hvae", "--latent-dims", "3,2", "--hidden", "16", "--hidden-top", "8"]
    args += ["--likelihood", "autoregressive", "--ar-hidden", "32"]
    run = tmp_path / "run"
    assert main(["train", *tiny, *args, "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    assert (run / "figures" / "samples.png").is_file()


def test_an_argument_of_another_likelihood_is_refused_not_ignored():
    from pyro_gen.models import VAE
    from pyro_gen.models.cvae import CVAE

    with pytest.raises(ConfigError, match="ar_hidden would have no effect"):
        HierarchicalVAE((1, 2, 2), (3, 2), (8,), (4,), ar_hidden=(16,))
    with pytest.raises(ConfigError, match="learn_scale would have no effect"):
        VAE(data_shape=(4,), latent_dim=2, hidden=(8,), learn_scale=True)
    with pytest.raises(ConfigError, match="scale would have no effect"):
        CVAE(data_shape=(4,), attributes=[{"name": "b", "kind": "binary", "p": 0.5}], scale=0.3)
    vae = VAE(
        data_shape=(4,), latent_dim=2, hidden=(8,), likelihood="autoregressive", ar_hidden=(6,)
    )
    assert vae.likelihood.net.made.net[0].out_features == 6


def test_a_made_context_of_the_wrong_width_is_a_shape_error():
    from pyro_gen.errors import ShapeError

    with pytest.raises(ShapeError, match="context_features=3"):
        MADE(4, (8,), context_features=3)(torch.zeros(2, 4), context=torch.zeros(2, 5))


@pytest.mark.parametrize("model", ["cvae", "ssvae"])
def test_conditional_models_reconstruct_with_draws_of_an_autoregressive_likelihood(model):
    from pyro_gen.models.cvae import CVAE
    from pyro_gen.models.ssvae import SSVAE

    x = torch.bernoulli(torch.full((5, 1, 2, 2), 0.5))
    if model == "cvae":
        attrs = [{"name": "b", "kind": "binary", "p": 0.5}]
        m = CVAE((1, 2, 2), attrs, 2, "autoregressive", hidden=(8,))
        out = m.reconstruct(x, b=torch.ones(5))
    else:
        m = SSVAE((1, 2, 2), 3, 2, hidden=(8,), classifier_layers=(8,), likelihood="autoregressive")
        out = m.reconstruct(x)
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}  # draws
    with pytest.raises(ConfigError, match="no closed-form mean"):
        m.reconstruct(x, mean=True, **({"b": torch.ones(5)} if model == "cvae" else {}))


@pytest.mark.parametrize("model", ["cvae", "ssvae"])
def test_cli_train_finishes_a_conditional_model_with_it(tmp_path, model):
    from pyro_gen.cli import main

    tiny = "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 16".split()
    args = ["--model", model, "--likelihood", "autoregressive", "--hidden", "16"]
    if model == "ssvae":
        args += ["--num-labels", "32"]
    run = tmp_path / "run"
    assert main(["train", *tiny, *args, "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    assert (run / "figures" / "reconstructions.png").is_file() and (run / "report.html").is_file()
    html = (run / "report.html").read_text()
    assert "draws of x ~ p(x|z)" in html and "E[x|z] for z" not in html


def test_a_run_saved_with_an_argument_its_likelihood_ignored_still_loads(tmp_path):
    """Before the refusal a run could store, say, scale=0.3 with a Bernoulli likelihood (then
    ignored); it loads as it was trained, with a warning naming the key."""
    import json

    from pyro_gen.models import VAE, load_model, save_model

    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
    save_model(vae, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["args"]["scale"] = 0.3
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="scale had no effect"):
        loaded = load_model(tmp_path / "run")
    for key, value in vae.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
