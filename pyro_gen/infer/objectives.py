"""The SVI objectives a trainer can use, by name.

>>> make_elbo("trace")
Trace_ELBO(num_particles=1, ...)  # doctest: +SKIP
"""

from __future__ import annotations

from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)

from pyro_gen.errors import ConfigError, did_you_mean

__all__ = ["ELBOS", "make_elbo"]

ELBOS = {
    "trace": Trace_ELBO,
    "meanfield": TraceMeanField_ELBO,
    "jit": JitTrace_ELBO,
    "jit_meanfield": JitTraceMeanField_ELBO,
}


def make_elbo(
    name: str = "trace", num_particles: int = 1, max_plate_nesting: int | None = None
) -> ELBO:
    """``"trace"`` (Trace_ELBO), ``"meanfield"`` (analytic KL where it exists), ``"jit"``,
    ``"jit_meanfield"``; particles are vectorised when more than one."""
    if name not in ELBOS:
        raise ConfigError(
            f"unknown elbo {name!r}; choose one of {sorted(ELBOS)}." + did_you_mean(name, ELBOS)
        )
    if num_particles < 1:
        raise ConfigError(f"num_particles must be >= 1; got {num_particles}.")
    kwargs: dict = {"num_particles": num_particles}
    if num_particles > 1:
        kwargs.update(vectorize_particles=True, max_plate_nesting=max_plate_nesting or 1)
    elif max_plate_nesting is not None:
        kwargs["max_plate_nesting"] = max_plate_nesting
    if name.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True
    return ELBOS[name](**kwargs)
