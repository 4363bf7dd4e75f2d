"""Generative models as Pyro model/guide pairs (``PyroModule`` s built from ``pyro_gen.nn``)."""

from pyro_gen.models.base import GenerativeModel, beta_scale, check_data_shape, check_finite
from pyro_gen.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from pyro_gen.models.registry import (
    MODELS,
    build_model,
    get_model_class,
    model_config,
    register_model,
)
from pyro_gen.models.vae import VAE

__all__ = [
    "GenerativeModel",
    "VAE",
    "beta_scale",
    "check_data_shape",
    "check_finite",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "make_likelihood",
    "LIKELIHOODS",
    "MODELS",
    "register_model",
    "get_model_class",
    "build_model",
    "model_config",
]
