"""Plain torch networks (no Pyro here): encoders, decoders, heads."""

from pyro_gen.nn.classifier import CLASSIFIER_NETWORKS, Classifier
from pyro_gen.nn.conv import ConvDecoder, ConvEncoder
from pyro_gen.nn.heads import GaussianHead, numel
from pyro_gen.nn.mlp import ACTIVATIONS, MLP, MLPDecoder, MLPEncoder

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "GaussianHead",
    "numel",
    "Classifier",
    "CLASSIFIER_NETWORKS",
]
