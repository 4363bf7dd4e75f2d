"""Reading and editing a learned latent space: attribute vectors (with exaggeration α),
linear and spherical interpolation, traversals ordered by KL per dimension, and the Mutual
Information Gap (disentanglement against ground-truth factors)."""

from pyro_gen.latent.interpolate import INTERPOLATIONS, interpolate, lerp, slerp
from pyro_gen.latent.mig import MIGBiasWarning, MIGResult, model_mig, mutual_information_gap
from pyro_gen.latent.relabel import change_attributes
from pyro_gen.latent.traverse import Traversal, kl_per_dimension, traversal_order, traverse
from pyro_gen.latent.vectors import add_vector, attribute_vector, has_attribute

__all__ = [
    "attribute_vector",
    "add_vector",
    "has_attribute",
    "lerp",
    "slerp",
    "interpolate",
    "INTERPOLATIONS",
    "kl_per_dimension",
    "traversal_order",
    "traverse",
    "Traversal",
    "mutual_information_gap",
    "model_mig",
    "MIGResult",
    "MIGBiasWarning",
    "change_attributes",
]
