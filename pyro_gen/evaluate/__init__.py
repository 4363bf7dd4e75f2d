"""Evaluation that tells the truth: ELBO split, importance-sampled log p(x), diagnostics,
ArviZ export and model comparison."""

from pyro_gen.evaluate.ais import AISResult, DiscreteLatentError, ais, ais_schedule
from pyro_gen.evaluate.arviz_export import (
    guide_draws,
    load_inference_data,
    save_inference_data,
    to_inference_data,
)
from pyro_gen.evaluate.bdmc import BDMCResult, bdmc, choose_num_steps
from pyro_gen.evaluate.classification import classifier_batch, classifier_scores
from pyro_gen.evaluate.compare import Comparison, compare
from pyro_gen.evaluate.diagnostics import (
    AU_THRESHOLD,
    KHAT_THRESHOLD,
    Diagnostics,
    diagnose,
    pareto_khat,
)
from pyro_gen.evaluate.elbo import AttributeTerm, ELBOResult, attribute_term, evaluate_elbo
from pyro_gen.evaluate.judge import JUDGE_KINDS, Judge, load_judge, train_judge
from pyro_gen.evaluate.log_likelihood import (
    NonFiniteWeightsError,
    PointMassGuideError,
    log_likelihood,
)
from pyro_gen.evaluate.terms import PointwiseTerms, TraceSiteError, elbo_terms, pointwise_terms

__all__ = [
    "ais",
    "ais_schedule",
    "AISResult",
    "DiscreteLatentError",
    "bdmc",
    "BDMCResult",
    "choose_num_steps",
    "ELBOResult",
    "evaluate_elbo",
    "AttributeTerm",
    "attribute_term",
    "classifier_batch",
    "classifier_scores",
    "log_likelihood",
    "NonFiniteWeightsError",
    "PointMassGuideError",
    "Diagnostics",
    "diagnose",
    "pareto_khat",
    "AU_THRESHOLD",
    "KHAT_THRESHOLD",
    "to_inference_data",
    "save_inference_data",
    "load_inference_data",
    "guide_draws",
    "Comparison",
    "compare",
    "pointwise_terms",
    "elbo_terms",
    "PointwiseTerms",
    "TraceSiteError",
    "Judge",
    "JUDGE_KINDS",
    "train_judge",
    "load_judge",
]
