"""Training and the machinery around it: objectives, schedules, checkpoints, traces."""

from pyro_gen.infer.capture import CapturedLoss
from pyro_gen.infer.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_model,
    load_tensors,
    load_weights,
    read_checkpoint,
    read_config,
    save_model,
    save_tensors,
)
from pyro_gen.infer.objectives import ELBOS, make_elbo
from pyro_gen.infer.pair import ModelGuidePair, as_pair, check_pair
from pyro_gen.infer.schedules import BETA_SCHEDULES, BetaSchedule
from pyro_gen.infer.traces import (
    DATA_PLATE,
    PointwiseTerms,
    TraceSiteError,
    elbo_terms,
    pointwise_terms,
)
from pyro_gen.infer.trainer import CAPTURE_MODES, LR_SCHEDULES, OPTIMIZERS, TrainConfig, Trainer

__all__ = [
    "Trainer",
    "TrainConfig",
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "CAPTURE_MODES",
    "CapturedLoss",
    "ELBOS",
    "make_elbo",
    "BetaSchedule",
    "BETA_SCHEDULES",
    "ModelGuidePair",
    "as_pair",
    "check_pair",
    "save_model",
    "load_model",
    "load_weights",
    "read_config",
    "save_tensors",
    "load_tensors",
    "read_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "pointwise_terms",
    "elbo_terms",
    "PointwiseTerms",
    "TraceSiteError",
    "DATA_PLATE",
]
