"""The SVI objectives a trainer can use, by name.

``"trace"`` and ``"meanfield"`` are Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` with a
``differentiable_loss`` that never leaves the device: Pyro's own calls ``.item()`` on every site
and tests the loss for NaN on the host (a GPU synchronisation each, several per step), while
these keep the same sums on the device in float64. The value and the gradient are bit-for-bit
Pyro's; only Pyro's "Encountered NaN" warnings are gone (the trainer checks finiteness itself).

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> loss = make_elbo("trace").differentiable_loss(vae.model, vae.guide, torch.ones(3, 4))
>>> loss.shape, loss.requires_grad
(torch.Size([]), True)
"""

from __future__ import annotations

import numbers

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import check_fully_reparametrized, is_validation_enabled
from torch.distributions import kl_divergence

from pyro_gen.errors import ConfigError, did_you_mean
from pyro_gen.infer.iwae import IWAE_ELBO

__all__ = [
    "ELBOS",
    "ENUM_ELBOS",
    "IWAE_ELBOS",
    "make_elbo",
    "DeviceTrace_ELBO",
    "DeviceTraceMeanField_ELBO",
    "JitMeanField_ELBO",
]


def _f64(value):
    """A site's log-density sum as Pyro's ``torch_item`` sees it, but kept on the device:
    float32 -> float64 is exact, and float64 sums round exactly as Python floats do."""
    if isinstance(value, numbers.Number):
        return float(value)
    return value.detach().to(torch.float64)


class _DeviceLoss:
    """``differentiable_loss`` of ``Trace_ELBO`` without host synchronisation.

    ``exact_value=False`` returns the surrogate loss itself wherever its value *is* the ELBO
    (no score-function term: every site reparameterised), summed in the loss's own precision:
    the same gradient with about twenty fewer scalar operations per step, and a value that may
    differ from Pyro's float64 sum in the last bits."""

    num_particles: int
    exact_value: bool = True

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The loss tensor: Pyro's value (float64 sum of the sites' sums, rounded once; see
        ``exact_value``) with the surrogate's gradient; no ``.item()``, no NaN test on the host."""
        surrogate_loss = 0.0
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss_particle, surrogate_loss_particle = self._device_loss_particle(
                model_trace, guide_trace
            )
            if self.num_particles == 1:  # x / 1 and 0.0 + x are x: two operations fewer
                surrogate_loss = surrogate_loss_particle
            else:
                surrogate_loss += surrogate_loss_particle / self.num_particles
            particles.append((loss_particle, surrogate_loss_particle))
        if all(value is None for value, _ in particles):  # the surrogate's value is the loss
            return torch.as_tensor(surrogate_loss)
        loss = 0.0
        for value, surrogate in particles:
            loss = loss + (_f64(surrogate) if value is None else value) / self.num_particles
        if not isinstance(surrogate_loss, torch.Tensor):
            return torch.as_tensor(loss)
        value = torch.as_tensor(loss, device=surrogate_loss.device).to(surrogate_loss.dtype)
        return value + (surrogate_loss - surrogate_loss.detach())


class DeviceTrace_ELBO(_DeviceLoss, Trace_ELBO):
    """``Trace_ELBO`` whose ``differentiable_loss`` keeps everything on the device."""

    def _device_loss_particle(self, model_trace, guide_trace):
        # Trace_ELBO._differentiable_loss_particle with torch_item(x) -> _f64(x)
        elbo_particle = 0
        surrogate_elbo_particle = 0
        log_r = None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo_particle = elbo_particle + _f64(site["log_prob_sum"])
                surrogate_elbo_particle = surrogate_elbo_particle + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                log_prob, score_function_term, entropy_term = site["score_parts"]
                elbo_particle = elbo_particle - _f64(site["log_prob_sum"])
                if not is_identically_zero(entropy_term):
                    surrogate_elbo_particle = surrogate_elbo_particle - entropy_term.sum()
                if not is_identically_zero(score_function_term):
                    if log_r is None:
                        log_r = _compute_log_r(model_trace, guide_trace)
                    term = log_r.sum_to(site["cond_indep_stack"])
                    surrogate_elbo_particle = (
                        surrogate_elbo_particle + (term * score_function_term).sum()
                    )
        if not self.exact_value and log_r is None:
            return None, -surrogate_elbo_particle
        return -elbo_particle, -surrogate_elbo_particle


def _guide_log_q_sum(guide_site):
    """The guide site's log q(z) summed, as the sampled KL estimate subtracts it: Pyro's
    ``entropy_term`` (log q with its reparameterised gradient) where the site has one, else its
    ``log_prob_sum``. A site without ``rsample`` has ``entropy_term`` the int 0 (its log q is in
    the score-function term), and Pyro's ``entropy_term.sum()`` failed on it; its value is
    log q, and its gradient is only right where q has no trained parameters, e.g. a point mass
    on codes chosen outside autograd (the VQ-VAE's guide; :class:`~pyro_gen.infer.SVIStep`
    refuses the other cases)."""
    entropy_term = guide_site["score_parts"].entropy_term
    if is_identically_zero(entropy_term):
        return guide_site["log_prob_sum"]
    return entropy_term.sum()


def _meanfield_elbo_particle(model_trace, guide_trace):
    """One particle's ELBO as ``TraceMeanField_ELBO._differentiable_loss_particle`` sums it
    (analytic KL where ``kl_divergence`` has it, else the sampled log p(z) − log q(z)), with
    the sampled estimate also for guide sites without ``rsample`` (:func:`_guide_log_q_sum`)
    and for sites the guide draws before a latent the model draws first
    (:func:`pyro_gen.evaluate.terms.drawn_too_late`: there the closed form is biased; Pyro's
    ``TraceMeanField_ELBO`` assumes that order and uses it anyway)."""
    from pyro_gen.evaluate.terms import drawn_too_late

    # a site the guide draws before a latent the model draws first (a bottom-up guide of a
    # top-down model) gets the sampled estimate: its closed-form KL at those draws is biased
    late = drawn_too_late(guide_trace, model_trace)
    elbo_particle = 0
    for name, model_site in model_trace.nodes.items():
        if model_site["type"] != "sample":
            continue
        if model_site["is_observed"]:
            elbo_particle = elbo_particle + model_site["log_prob_sum"]
            continue
        guide_site = guide_trace.nodes[name]
        if is_validation_enabled():
            check_fully_reparametrized(guide_site)
        try:
            if late.get(name):
                raise NotImplementedError  # the sampled estimate below
            kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            elbo_particle = (
                elbo_particle + model_site["log_prob_sum"] - _guide_log_q_sum(guide_site)
            )
            continue
        kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"])
        if torch.is_tensor(kl_qp):
            kl_qp_sum = kl_qp.sum()
        else:
            kl_qp_sum = kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
        elbo_particle = elbo_particle - kl_qp_sum
    for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
        if guide_site["type"] == "sample" and name not in model_trace.nodes:
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            elbo_particle = elbo_particle - _guide_log_q_sum(guide_site)
    return elbo_particle


class DeviceTraceMeanField_ELBO(_DeviceLoss, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (analytic KL) whose ``differentiable_loss`` stays on the device;
    the sampled KL estimate also works for a guide site without ``rsample`` (a point mass)."""

    def _device_loss_particle(self, model_trace, guide_trace):
        # TraceMeanField_ELBO._differentiable_loss_particle, ending in _f64 (not torch_item)
        elbo_particle = _meanfield_elbo_particle(model_trace, guide_trace)
        if not self.exact_value:
            return None, -elbo_particle
        return -_f64(elbo_particle), -elbo_particle


class JitMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro's ``JitTraceMeanField_ELBO`` with the particle of :class:`DeviceTraceMeanField_ELBO`
    (the sampled KL estimate works for a guide site without ``rsample``)."""

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo_particle = _meanfield_elbo_particle(model_trace, guide_trace)
        if torch._C._get_tracing_state() or not torch.is_tensor(elbo_particle):
            loss = -elbo_particle.detach() if torch.is_tensor(elbo_particle) else -elbo_particle
        else:
            loss = -float(elbo_particle.detach())
        return loss, -elbo_particle


ELBOS = {
    "trace": DeviceTrace_ELBO,
    "meanfield": DeviceTraceMeanField_ELBO,
    "jit": JitTrace_ELBO,
    "jit_meanfield": JitMeanField_ELBO,
    "enum": TraceEnum_ELBO,
    "jit_enum": JitTraceEnum_ELBO,
    "iwae": IWAE_ELBO,
    "iwae_dreg": IWAE_ELBO,
}
ENUM_ELBOS = ("enum", "jit_enum")  # sum out the sites marked for enumeration
# the per-datapoint importance-weighted bound (num_particles = k); _dreg: DReG gradient
IWAE_ELBOS = ("iwae", "iwae_dreg")


def make_elbo(
    name: str = "trace",
    num_particles: int = 1,
    max_plate_nesting: int | None = None,
    exact_value: bool = True,
) -> ELBO:
    """``"trace"`` (Trace_ELBO), ``"meanfield"`` (analytic KL where it exists), ``"enum"``
    (TraceEnum_ELBO: sites marked ``infer={"enumerate": "parallel"}``, e.g. by
    ``config_enumerate``, are summed out exactly; needs ``max_plate_nesting``, which the trainer
    finds from the program), ``"jit"``, ``"jit_meanfield"``, ``"jit_enum"``, ``"iwae"`` (the
    per-datapoint importance-weighted bound with k = ``num_particles``, :class:`IWAE_ELBO`),
    ``"iwae_dreg"`` (the same with the doubly-reparameterised gradient); particles are
    vectorised when more than one. ``exact_value=False``
    (trace, meanfield): the value is the surrogate's own sum where that is the ELBO (fewer
    operations; last-bit differences from Pyro's float64 value)."""
    if name not in ELBOS:
        raise ConfigError(
            f"unknown elbo {name!r}; choose one of {sorted(ELBOS)}." + did_you_mean(name, ELBOS)
        )
    if num_particles < 1:
        raise ConfigError(f"num_particles must be >= 1; got {num_particles}.")
    kwargs: dict = {"num_particles": num_particles}
    if name in IWAE_ELBOS:
        nesting = float("inf") if max_plate_nesting is None else max_plate_nesting
        return IWAE_ELBO(num_particles, max_plate_nesting=nesting, dreg=name == "iwae_dreg")
    if name in ENUM_ELBOS and max_plate_nesting is None:
        raise ConfigError(
            f"elbo={name!r} needs max_plate_nesting (how many plates the program nests); the "
            "Trainer finds it from the program."
        )
    if num_particles > 1:
        kwargs.update(vectorize_particles=True, max_plate_nesting=max_plate_nesting or 1)
    elif max_plate_nesting is not None:
        kwargs["max_plate_nesting"] = max_plate_nesting
    if name.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True
    elbo = ELBOS[name](**kwargs)
    if not exact_value and isinstance(elbo, _DeviceLoss):
        elbo.exact_value = False
    return elbo
