"""Evaluation that tells the truth: ELBO split, importance-sampled log p(x), diagnostics."""

from pyro_gen.evaluate.elbo import ELBOResult, evaluate_elbo

__all__ = ["ELBOResult", "evaluate_elbo"]
