"""β schedules fed to ``poutine.scale`` each step (constant, linear warm-up, cyclical).

>>> s = BetaSchedule("linear", beta=1.0, warmup_steps=4)
>>> [s(t) for t in range(5)]
[0.25, 0.5, 0.75, 1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

from pyro_gen.errors import ConfigError, did_you_mean

__all__ = ["BetaSchedule", "BETA_SCHEDULES"]

BETA_SCHEDULES = ("constant", "linear", "cyclical")


@dataclass(frozen=True)
class BetaSchedule:
    """β at a given optimisation step.

    * ``constant``: β throughout.
    * ``linear``: β·min(1, (t+1)/warmup_steps) — the KL warm-up of Bowman et al. / Sønderby et al.
    * ``cyclical``: ``cycles`` cycles over ``total_steps``; within each, a linear ramp over the
      first ``ratio`` of the cycle, then β (Fu et al., 2019).

    Ramps start at β/warmup rather than 0, since β = 0 changes the guide to a point mass.
    """

    kind: str = "constant"
    beta: float = 1.0
    warmup_steps: int = 0
    total_steps: int = 0
    cycles: int = 4
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in BETA_SCHEDULES:
            raise ConfigError(
                f"unknown beta schedule {self.kind!r}; choose one of {BETA_SCHEDULES}."
                + did_you_mean(self.kind, BETA_SCHEDULES)
            )
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0; got {self.beta}.")
        if self.kind == "linear" and self.warmup_steps < 1:
            raise ConfigError("the linear beta schedule needs warmup_steps >= 1.")
        if self.kind == "cyclical" and (self.total_steps < self.cycles or not 0 < self.ratio <= 1):
            raise ConfigError(
                "the cyclical beta schedule needs total_steps >= cycles and 0 < ratio <= 1."
            )

    def __call__(self, step: int) -> float:
        if self.kind == "constant" or self.beta == 0:
            return self.beta
        if self.kind == "linear":
            return self.beta * min(1.0, (step + 1) / self.warmup_steps)
        period = self.total_steps / self.cycles
        ramp = max(1.0, period * self.ratio)
        return self.beta * min(1.0, ((step % period) + 1) / ramp)
