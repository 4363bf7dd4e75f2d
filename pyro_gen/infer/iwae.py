"""The importance-weighted bound (IWAE) per datapoint, and its doubly-reparameterised gradient.

For each datapoint x_n, k particles z_kn ~ q(z | x_n) give log-weights

    log w_kn = log p(x_n, z_kn) − log q(z_kn | x_n)

(every sample site under the ``"data"`` plate, summed over all its other dimensions), and the
bound of Burda, Grosse & Salakhutdinov (2016, eq. 8) is

    L_k(x_n) = logsumexp_k log w_kn − log k  ≤  log p(x_n),     L_1 = ELBO,  L_k ↑ with k.

The objective is the sum over the batch (times N/B for a minibatch, as the ELBO's data plate).
Pyro's ``RenyiELBO(alpha=0)`` sums each particle's log-weight over the plates that are *not
common to all sites* (``pyro.infer.util.get_dependent_plate_dims``) before the logsumexp: with
every site under ``"data"`` it is this bound, but a single site outside the plate (a global
latent, a ``pyro.factor``) makes it log mean_k Π_n w_kn over the whole batch, barely tighter
than the ELBO for a large batch (``tests/infer/test_iwae.py`` shows both). The particles are
drawn in one vectorised pass (an outer plate left of the program's plates), so the guide's
and the model's networks see k x B rows at once.

``dreg=True``: the doubly-reparameterised gradient (DReG; Tucker, Lawson, Gu & Maddison 2018,
eq. 5). The bound's value is the same; the guide's gradient is

    ∇_φ = Σ_k w̃_k² ∂ log w_k / ∂z_k · dz_k / dφ,     w̃ = softmax_k log w,

with log q evaluated at stop-gradient guide parameters (the guide is re-run on the drawn values
with its module's parameters detached, so a hierarchical guide keeps its z → q(z'|z) paths),
while the model's gradient is IWAE's Σ_k w̃_k ∇_θ log w_k. It removes the score-function term
whose variance grows with k (Rainforth et al. 2018). It needs the ``nn.Module`` that owns the
guide's parameters (``module=``, set by the trainer; a bound method's owner is found).

β and the data-plate scale: a latent site's scale relative to the observed sites' (β from
``ScaleLatents``) weights its log-density inside log w (β-IWAE; β = 1 is the bound, and k = 1
is the β-ELBO); the observed sites' scale (N/B from ``ScaleData`` or a subsampled plate)
multiplies the sum over the batch. Refused with a ConfigError: latent sites outside the
``"data"`` plate (global latents: a per-datapoint bound does not exist), guide sites without
``rsample`` (no reparameterised gradient), sites marked for enumeration.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> elbo = IWAE_ELBO(num_particles=5)
>>> elbo.pointwise_bound(vae.model, vae.guide, torch.ones(3, 4)).shape
torch.Size([3])
>>> loss = elbo.differentiable_loss(vae.model, vae.guide, torch.ones(3, 4))
>>> loss.shape, loss.requires_grad
(torch.Size([]), True)
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.models.pair import DATA_PLATE, base_distribution, forked_rng

__all__ = ["IWAE_ELBO", "PARTICLE_PLATE", "particle_shape_errors"]

PARTICLE_PLATE = "_iwae_particles"


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``holder["w"]`` (the normalised
    weights, known only after the model has run) laid out as the site's value."""

    @staticmethod
    def forward(ctx, value, holder, layout):
        ctx.holder, ctx.layout = holder, layout
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        pdim, ddim, event_dim = ctx.layout
        w = ctx.holder["w"]  # [k, n]
        batch_dims = grad.dim() - event_dim
        shape = [1] * batch_dims
        shape[batch_dims + pdim], shape[batch_dims + ddim] = w.shape
        factor = w.reshape(shape + [1] * event_dim).to(grad.dtype)
        return grad * factor, None, None


class _Owner(nn.Module):
    """Holds ``module`` so that :func:`torch.func.functional_call` swaps its parameters while
    any callable runs: ``forward(fn)`` returns ``fn()``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, fn):
        return fn()


def _at_detached_parameters(module: nn.Module, fn):
    """``fn()`` with ``module``'s parameters replaced by detached copies (gradients still flow
    through ``fn``'s inputs, not into the parameters); through the public
    :func:`torch.func.functional_call`, which also detaches a tied parameter's other names."""
    detached = {f"module.{name}": p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(_Owner(module), detached, (fn,))


def _data_frame(site: dict):
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame
    return None


def _table(value: torch.Tensor, pdim: int, k: int, ddim: int, n: int) -> torch.Tensor:
    """A site's log-density (batch shape) -> ``[k, n]``: particle and data axes to the front,
    every other axis summed."""
    need = max(-pdim, -ddim)
    if value.dim() < need:  # broadcasts over the missing leading axes
        value = value.reshape((1,) * (need - value.dim()) + tuple(value.shape))
    value = value.movedim([pdim, ddim], [0, 1])
    value = value.expand(k, n, *value.shape[2:])
    return value.reshape(k, n, -1).sum(-1)


def _masked(value: torch.Tensor, mask) -> torch.Tensor:
    if mask is None or mask is True:
        return value
    if mask is False:
        return torch.zeros_like(value)
    return torch.where(mask, value, value.new_zeros(()))


class IWAE_ELBO(ELBO):
    """The per-datapoint importance-weighted bound with ``num_particles`` = k (module docs).

    Args:
        num_particles: k, importance samples per datapoint (vectorised).
        max_plate_nesting: how many batch dims the program's plates use (found by one traced
            run when not given); the particles go one dim to the left.
        dreg: the doubly-reparameterised gradient estimator (same value, lower variance).
        module: the ``nn.Module`` owning the guide's parameters (needed for ``dreg``; found
            from a bound method ``guide.__self__`` when not given).

    ``differentiable_loss`` returns −Σ_n L_k(x_n) (times N/B under a minibatch scale), nats.
    """

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = float("inf"),
        dreg: bool = False,
        module: nn.Module | None = None,
    ) -> None:
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles (k) must be >= 1; got {num_particles}.")
        super().__init__(num_particles=int(num_particles), max_plate_nesting=max_plate_nesting)
        self.dreg = bool(dreg)
        self.module = module

    @property
    def capturable(self) -> bool:
        """DReG's gradient scaling is a custom autograd function: not replayable from a capture."""
        return not self.dreg

    # -- the program's layout ------------------------------------------------------------------
    def _nesting(self, model, guide, args, kwargs) -> int:
        if self.max_plate_nesting != float("inf"):
            return int(self.max_plate_nesting)
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        device = x.device if x is not None else torch.device("cpu")
        with forked_rng(device), torch.no_grad(), poutine.block():
            guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(
                *args, **kwargs
            )
        dims = [
            -f.dim
            for tr in (guide_tr, model_tr)
            for site in tr.nodes.values()
            if site["type"] == "sample" and not site_is_subsample(site)
            for f in site["cond_indep_stack"]
            if f.vectorized and f.name != PARTICLE_PLATE
        ]
        self.max_plate_nesting = max(dims, default=0)
        return int(self.max_plate_nesting)

    def _guide_module(self, guide) -> nn.Module:
        module = self.module if self.module is not None else getattr(guide, "__self__", None)
        if not isinstance(module, nn.Module):
            raise ConfigError(
                "elbo='iwae_dreg' re-runs the guide with its parameters detached and needs the "
                "nn.Module that owns them: IWAE_ELBO(dreg=True, module=my_module) (the trainer "
                "sets it)."
            )
        return module

    def _get_trace(self, model, guide, args, kwargs):
        """(model trace, guide trace) with the k particles on the particle plate (Pyro's
        ``ELBO`` interface; the guide trace is the one log q is read from)."""
        model_tr, q_tr, *_ = self._traces(model, guide, args, kwargs)
        return model_tr, q_tr

    # -- the log-weights -----------------------------------------------------------------------
    def _traces(self, model, guide, args, kwargs):
        """Guide traced under the particle plate (values rescaled for DReG), model replayed;
        for DReG also the guide re-run at detached parameters. Returns
        (model_tr, q_tr, k, pdim, holder)."""
        k = self.num_particles
        pdim = -(self._nesting(model, guide, args, kwargs) + 1)
        holder: dict = {}
        x = args[0] if args else None
        with pyro.plate(PARTICLE_PLATE, k, dim=pdim), particle_shape_errors(k, x):
            guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
            self._check_guide(guide_tr)
            q_tr = guide_tr
            if self.dreg:
                for site in guide_tr.nodes.values():
                    if _is_latent(site):
                        frame = _data_frame(site)
                        event_dim = site["fn"].event_dim
                        site["value"] = _ScaleGrad.apply(
                            site["value"], holder, (pdim, frame.dim, event_dim)
                        )
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(
                *args, **kwargs
            )
            if self.dreg:
                replayed = poutine.trace(poutine.replay(guide, trace=guide_tr))
                q_tr = _at_detached_parameters(
                    self._guide_module(guide), lambda: replayed.get_trace(*args, **kwargs)
                )
        return model_tr, q_tr, k, pdim, holder

    @staticmethod
    def _check_guide(guide_tr) -> None:
        for name, site in guide_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            _check_common(name, site, "guide")
            fn = site["fn"]
            if not getattr(fn, "has_rsample", False):
                base = base_distribution(fn)  # name what is inside Independent, Masked
                what = f"guide site {name!r} ({type(base).__name__}) has no reparameterised "
                if not getattr(fn.support, "is_discrete", False):
                    fix = "Use a reparameterisable guide, or elbo='trace' (score function)."
                elif bool((fn.log_prob(site["value"]).abs() <= 1e-6).all()):
                    fix = (
                        "It puts all its mass on one value (a point mass, as a VQ-VAE's nearest "
                        "code), so k particles would be k copies of one draw: train it with "
                        "elbo='trace'."
                    )
                else:
                    fix = "Sum the discrete latent out with elbo='enum', or use elbo='trace'."
                raise ConfigError(
                    what + "sampler (rsample): the IWAE objective differentiates through the "
                    "draws. " + fix
                )

    def _log_weights(self, model_tr, q_tr, k: int, pdim: int) -> tuple[torch.Tensor, float]:
        """``[k, n]`` log-weights (latent sites weighted by their scale relative to the
        observed sites': β) and the observed sites' scale (N/B or 1)."""
        observed = [
            (name, site)
            for name, site in model_tr.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and site["is_observed"]
        ]
        if not observed:
            raise ConfigError(
                "the model has no observed sample site (obs=...): there is nothing to weight."
            )
        data_scale = None
        for name, site in observed:
            _check_common(name, site, "model")
            scale = site["scale"]
            if not isinstance(scale, numbers.Number):
                raise ConfigError(
                    f"observed site {name!r} has a tensor scale (poutine.scale with a tensor): "
                    "the IWAE objective needs one number per batch (β, N/B); use a mask for "
                    "per-datapoint weights."
                )
            if data_scale is None:
                data_scale = float(scale)
            elif not math.isclose(float(scale), data_scale, rel_tol=1e-6):
                raise ConfigError(
                    f"observed sites have different scales ({data_scale} and {scale} at "
                    f"{name!r}): the IWAE objective needs the data plate's one scale."
                )
        n = _data_frame(observed[0][1]).size
        log_w = None

        def add(total, name, site, sign):
            frame = _data_frame(site)
            rel = site["scale"] / data_scale if data_scale else site["scale"]
            lp = _masked(site["fn"].log_prob(site["value"]), site["mask"])
            table = _table(lp, pdim, k, frame.dim, n)
            if not (isinstance(rel, numbers.Number) and rel == 1.0):
                table = table * rel
            return sign * table if total is None else total + sign * table

        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                log_w = add(log_w, name, site, 1.0)
            elif name in q_tr.nodes:
                _check_common(name, site, "model")
                log_w = add(log_w, name, site, 1.0)
            # a latent the guide does not sample is drawn from its prior: proposal = prior
        for name, site in q_tr.nodes.items():
            if _is_latent(site):
                log_w = add(log_w, name, site, -1.0)
        return log_w, data_scale

    # -- the bound -------------------------------------------------------------------------------
    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``[k, N]`` log-weights log p(x_n, z_kn) − log q(z_kn | x_n) (nats; β-weighted
        latent terms under ``ScaleLatents``)."""
        model_tr, q_tr, k, pdim, _ = self._traces(model, guide, args, kwargs)
        return self._log_weights(model_tr, q_tr, k, pdim)[0]

    def pointwise_bound(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``[N]``: L_k(x_n) = logsumexp_k log w_kn − log k (nats), a stochastic lower bound of
        log p(x_n) for each datapoint."""
        lw = self.log_weights(model, guide, *args, **kwargs)
        return torch.logsumexp(lw, 0) - math.log(lw.shape[0])

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−Σ_n L_k(x_n) × (the observed sites' scale), with IWAE's (or DReG's) gradient."""
        model_tr, q_tr, k, pdim, holder = self._traces(model, guide, args, kwargs)
        log_w, data_scale = self._log_weights(model_tr, q_tr, k, pdim)
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        loss = -data_scale * bound.sum() if data_scale != 1.0 else -bound.sum()
        if not self.dreg:
            return loss
        w = torch.softmax(log_w.detach(), 0)
        holder["w"] = w  # the values' gradients get a second w̃ (see _ScaleGrad)
        surrogate = -(w * log_w).sum() * data_scale
        return loss.detach() + (surrogate - surrogate.detach())

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss as a float (no gradient)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss, with gradients accumulated into the parameters (Pyro's SVI interface)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return float(loss)


@contextlib.contextmanager
def particle_shape_errors(
    k: int, x: torch.Tensor | None, objective: str = "the IWAE objective"
) -> Iterator[None]:
    """Turn Pyro's "Shape mismatch inside plate" from a program that does not broadcast over
    vectorised particles (``k`` of them, a dim left of the batch ``x``) into a ConfigError
    that says what the program must do; any other error passes unchanged.

    Raises:
        ConfigError: the program flattened or reshaped away the particle dim.
    """
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        text = str(e)
        if "Shape mismatch inside plate" not in text:
            raise
        first = text.splitlines()[0]
        rows = f"{k} x {x.shape[0]}" if isinstance(x, torch.Tensor) and x.dim() > 0 else f"{k} x B"
        raise ConfigError(
            f"{objective} runs model and guide once on all k = {k} particles, as a leading "
            f"particle dim left of the batch ({rows} draws of each latent), and the program "
            f"does not broadcast over it: {first}. Write the model and guide so that every "
            "tensor keeps the latent's leading dims, e.g. do not flatten the batch with "
            "reshape(-1, *data_shape) (use reshape(*z.shape[:-1], *data_shape), or "
            "unflatten(-1, data_shape)). elbo='trace' with num_particles=1 runs such a program "
            "as it is."
        ) from None


def _is_latent(site: dict) -> bool:
    return site["type"] == "sample" and not site_is_subsample(site) and not site["is_observed"]


def _check_common(name: str, site: dict, role: str) -> None:
    if site["infer"].get("enumerate"):
        raise ConfigError(
            f"{role} site {name!r} is marked for enumeration; the IWAE objective samples every "
            "latent. Use elbo='enum' to sum it out, or remove the mark."
        )
    if _data_frame(site) is None:
        plates = [f.name for f in site["cond_indep_stack"] if f.name != PARTICLE_PLATE]
        raise ConfigError(
            f"{role} site {name!r} is outside pyro.plate({DATA_PLATE!r}) (plates: "
            f"{plates or 'none'}): the IWAE bound is per datapoint and has no place for global "
            "latent variables. Put every sample site under the data plate, or use "
            "elbo='trace'."
        )
