"""The data-specific recipes of `pyro-gen train`: the one-layer, learned-prior and hierarchical
VAEs and MADE on binary MNIST."""

from __future__ import annotations

from pyro_gen.cli import build_parser
from pyro_gen.cli.train import HVAE_MNIST_RECIPE, MADE_MNIST_RECIPE, MNIST_RECIPE, _settings


def _settings_of(*argv: str) -> dict:
    return _settings(build_parser().parse_args(["train", *argv]))[0]


def test_binarized_mnist_gets_the_recipe_and_flags_override_it():
    s = _settings_of("--data", "binarized_mnist")
    assert {k: s[k] for k in MNIST_RECIPE} == MNIST_RECIPE
    assert s["hidden"] == [500, 500] and s["latent_dim"] == 50 and s["lr_schedule"] == "cosine"
    assert s["beta_schedule"] == "linear" and s["warmup_steps"] == 5000  # the KL warm-up
    s = _settings_of("--data", "binarized_mnist", "--epochs", "3", "--hidden", "64")
    assert s["epochs"] == 3 and s["hidden"] == [64] and s["batch_size"] == 100


def test_other_data_and_models_keep_the_plain_defaults():
    s = _settings_of("--data", "shapes")
    assert s["latent_dim"] == 10 and s["lr_schedule"] == "constant" and "hidden" not in s
    s = _settings_of("--data", "shapes", "--model", "hvae")
    assert s["lr_schedule"] == s["beta_schedule"] == "constant" and "activation" not in s


def test_learned_prior_and_hierarchical_vaes_get_their_mnist_recipes():
    s = _settings_of("--data", "mnist", "--model", "vamp_vae")
    assert s["lr_schedule"] == "cosine" and s["lr"] == 2e-3 and s["batch_size"] == 100
    assert s["beta_schedule"] == "linear" and s["warmup_steps"] == 5000
    assert "hidden" not in s  # the VampPrior VAE's own 784-500-500-50 defaults
    s = _settings_of("--data", "binarized_mnist", "--model", "hvae")
    assert {k: s[k] for k in HVAE_MNIST_RECIPE} == HVAE_MNIST_RECIPE
    assert s["activation"] == "elu" and s["beta_schedule"] == "linear"
    s = _settings_of("--data", "binarized_mnist", "--model", "hvae", "--activation", "tanh")
    assert s["activation"] == "tanh"  # a flag wins


def test_made_gets_its_wide_single_mask_recipe_on_mnist():
    s = _settings_of("--data", "binarized_mnist", "--model", "made")
    assert {k: s[k] for k in MADE_MNIST_RECIPE} == MADE_MNIST_RECIPE
    assert s["hidden"] == [2000] and s["lr"] == 3e-3 and s["lr_schedule"] == "cosine"
    assert "beta_schedule" not in MADE_MNIST_RECIPE  # no latent: nothing to warm up
    assert _settings_of("--data", "mnist", "--model", "made", "--hidden", "500")["hidden"] == [500]
