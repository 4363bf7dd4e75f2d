"""Likelihood-free generators as Pyro models, critics, adversarial objectives and steps, and the
density-ratio trick as a tool of its own.

>>> import torch
>>> from pyro_gen.adversarial import GAN, density_ratio
>>> GAN(data_shape=(2,), latent_dim=2, hidden=(8,), output="identity").sample(4).shape
torch.Size([4, 2])
"""

from pyro_gen.adversarial.density_ratio import DensityRatio, density_ratio
from pyro_gen.adversarial.generator import GAN
from pyro_gen.adversarial.objectives import (
    F_DIVERGENCES,
    OBJECTIVES,
    FDivergence,
    critic_loss,
    divergence_estimate,
    generator_loss,
    gradient_penalty,
)
from pyro_gen.adversarial.step import AdversarialStep

__all__ = [
    "GAN",
    "AdversarialStep",
    "DensityRatio",
    "density_ratio",
    "OBJECTIVES",
    "F_DIVERGENCES",
    "FDivergence",
    "critic_loss",
    "generator_loss",
    "divergence_estimate",
    "gradient_penalty",
]
