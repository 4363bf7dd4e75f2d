"""Training: steps (objectives + optimisers), one loop with callbacks, schedules, checkpoints.

The model/guide contract and model persistence live in :mod:`pyro_gen.models`; per-datapoint
terms in :mod:`pyro_gen.evaluate`.
"""

from pyro_gen.infer.capture import CapturedLoss
from pyro_gen.infer.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)
from pyro_gen.infer.objectives import ELBOS, make_elbo
from pyro_gen.infer.schedules import BETA_SCHEDULES, BetaSchedule
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
    "read_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
]
