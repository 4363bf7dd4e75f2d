"""Generative models as Pyro model/guide pairs (``PyroModule`` s built from ``pyro_gen.nn``),
the pair contract every tool takes, and model persistence (config + safetensors)."""

from pyro_gen.models.autoregressive import MADEModel
from pyro_gen.models.base import GenerativeModel, beta_scale, check_data_shape, check_finite
from pyro_gen.models.cvae import CVAE, attributes_from_dataset
from pyro_gen.models.hvae import HierarchicalVAE
from pyro_gen.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from pyro_gen.models.pair import (
    DATA_PLATE,
    ModelGuidePair,
    as_pair,
    check_pair,
    evaluating,
    forked_rng,
    prepare_and_check,
    prepare_data,
)
from pyro_gen.models.persistence import (
    load_model,
    load_tensors,
    load_weights,
    read_config,
    save_model,
    save_tensors,
)
from pyro_gen.models.priors import LearnedPriorVAE
from pyro_gen.models.registry import (
    MODELS,
    build_model,
    get_model_class,
    model_config,
    register_model,
)
from pyro_gen.models.ssvae import SSVAE
from pyro_gen.models.vae import VAE
from pyro_gen.models.vqvae import VQVAE

__all__ = [
    "GenerativeModel",
    "VAE",
    "LearnedPriorVAE",
    "HierarchicalVAE",
    "CVAE",
    "attributes_from_dataset",
    "MADEModel",
    "VQVAE",
    "SSVAE",
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
    "DATA_PLATE",
    "ModelGuidePair",
    "as_pair",
    "check_pair",
    "evaluating",
    "forked_rng",
    "prepare_data",
    "prepare_and_check",
    "save_model",
    "load_model",
    "load_weights",
    "read_config",
    "save_tensors",
    "load_tensors",
]
