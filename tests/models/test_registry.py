"""The model registry: constructor arguments as configuration, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

import pyro_gen.models.registry as registry
from pyro_gen.errors import ConfigError
from pyro_gen.models import (
    MODELS,
    VAE,
    GenerativeModel,
    build_model,
    get_model_class,
    model_config,
    register_model,
)


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry, so test registrations do not leak into other tests."""
    table = dict(MODELS)
    monkeypatch.setattr(registry, "MODELS", table)
    return table


def test_config_captures_every_constructor_argument():
    vae = VAE(data_shape=(1, 8, 8), latent_dim=3, hidden=(16, 8), beta=0.5)
    name, config = model_config(vae)
    assert name == "vae" and VAE.model_name == "vae"
    assert config == vae.config
    assert config["data_shape"] == [1, 8, 8]  # tuples become JSON lists
    assert config["hidden"] == [16, 8]
    assert config["latent_dim"] == 3 and config["beta"] == 0.5
    assert config["likelihood"] == "bernoulli"  # defaults are recorded too
    assert json.loads(json.dumps(config)) == config
    # the config is a copy: editing it does not change the model's record
    vae.config["latent_dim"] = 99
    assert vae.config["latent_dim"] == 3


def test_build_model_rebuilds_the_same_architecture():
    vae = VAE(data_shape=(12,), latent_dim=2, hidden=(16,), likelihood="gaussian", learn_scale=True)
    again = build_model("vae", vae.config)
    assert isinstance(again, VAE)
    assert again.config == vae.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in vae.state_dict().items()
    }


def test_unknown_key_errors_with_suggestion_and_the_known_keys():
    with pytest.raises(ConfigError) as info:
        build_model("vae", {"data_shape": [4], "latnet_dim": 2})
    msg = str(info.value)
    assert "'latnet_dim'" in msg and "Did you mean 'latent_dim'?" in msg
    assert "'hidden'" in msg  # lists what it does take


@pytest.mark.parametrize(
    "key, value, want",
    [
        ("latent_dim", "2", "int"),
        ("latent_dim", 2.5, "int"),
        ("latent_dim", True, "int"),
        ("hidden", 32, "tuple"),
        ("learn_scale", 1, "bool"),
        ("beta", "high", "float"),
        ("likelihood", 3, "str"),
    ],
)
def test_mistyped_values_error(key, value, want):
    with pytest.raises(ConfigError) as info:
        build_model("vae", {"data_shape": [4], key: value})
    msg = str(info.value)
    assert repr(key) in msg and want in msg and repr(value) in msg


def test_int_is_accepted_for_a_float_argument():
    assert build_model("vae", {"data_shape": [4], "hidden": [8], "beta": 2}).beta == 2.0


def test_unknown_model_name_errors_with_suggestion():
    with pytest.raises(ConfigError) as info:
        build_model("vea", {})
    msg = str(info.value)
    assert "unknown model 'vea'" in msg and "Did you mean 'vae'?" in msg and "register_model" in msg
    with pytest.raises(ConfigError, match="unknown model"):
        get_model_class("nothing-like-it")


def test_constructor_errors_become_config_errors():
    with pytest.raises(ConfigError, match="could not build model 'vae'"):
        build_model("vae", {"data_shape": [4], "latent_dim": None})


def test_registering_a_model_records_its_own_arguments(private_registry):
    @register_model("test_tiny")
    class Tiny(GenerativeModel):
        def __init__(self, data_shape=(3,), width: int = 4, **extra):
            super().__init__()
            self.data_shape = tuple(data_shape)
            self.layer = torch.nn.Linear(width, 1)
            self.extra = extra

    m = Tiny(width=5, colour="red")
    assert model_config(m) == ("test_tiny", {"data_shape": [3], "width": 5, "colour": "red"})
    assert "test_tiny" in private_registry and "test_tiny" not in MODELS
    again = build_model("test_tiny", m.config)
    assert again.layer.in_features == 5 and again.extra == {"colour": "red"}


def test_a_registered_subclass_records_the_outermost_arguments(private_registry):
    @register_model("test_wide_vae")
    class WideVAE(VAE):
        def __init__(self, width: int = 16, **kwargs):
            super().__init__(hidden=(width, width), **kwargs)

    m = WideVAE(width=8, data_shape=(4,), latent_dim=2)
    name, config = model_config(m)
    assert name == "test_wide_vae"
    assert config == {"width": 8, "data_shape": [4], "latent_dim": 2}
    again = build_model(name, config)
    assert isinstance(again, WideVAE) and again.encoder.head.loc.in_features == 8


def test_name_clash_and_var_positional_are_refused(private_registry):
    with pytest.raises(ConfigError, match="already registered"):

        @register_model("vae")
        class Other(GenerativeModel):
            pass

    @register_model("test_star_args")
    class Star(GenerativeModel):
        def __init__(self, *sizes):
            super().__init__()

    with pytest.raises(ConfigError, match="named arguments"):
        Star(1, 2)
    assert private_registry["vae"] is VAE
