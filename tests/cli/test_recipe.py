"""The data-specific recipe of `pyro-gen train`: the one-layer VAE on binary MNIST."""

from __future__ import annotations

from pyro_gen.cli import build_parser
from pyro_gen.cli.train import MNIST_RECIPE, _settings


def _settings_of(*argv: str) -> dict:
    return _settings(build_parser().parse_args(["train", *argv]))[0]


def test_binarized_mnist_gets_the_recipe_and_flags_override_it():
    s = _settings_of("--data", "binarized_mnist")
    assert {k: s[k] for k in MNIST_RECIPE} == MNIST_RECIPE
    assert s["hidden"] == [500, 500] and s["latent_dim"] == 50 and s["lr_schedule"] == "cosine"
    s = _settings_of("--data", "binarized_mnist", "--epochs", "3", "--hidden", "64")
    assert s["epochs"] == 3 and s["hidden"] == [64] and s["batch_size"] == 100


def test_other_data_and_models_keep_the_plain_defaults():
    s = _settings_of("--data", "shapes")
    assert s["latent_dim"] == 10 and s["lr_schedule"] == "constant" and "hidden" not in s
    s = _settings_of("--data", "binarized_mnist", "--model", "hvae")
    assert s["lr_schedule"] == "constant"
