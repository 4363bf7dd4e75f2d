"""A model/guide pair and the module that owns its parameters — the unit every tool takes.

Accepts a ``PyroModule`` with ``model``/``guide`` methods, or two callables plus the
``nn.Module`` holding their parameters. Every entry point (the trainer and each evaluator)
runs the same two checks before any heavy work:

- :func:`prepare_data`: a tensor, not empty, in the module's floating dtype, and valid for the
  model (``check_data`` of a shipped model; finite values otherwise);
- :func:`check_pair`: guide and model run once on a small batch with Pyro's validation on;
  every observed site's value must have exactly the distribution's shape, and a failure is
  raised as the error class of its cause (shapes, data values or dtypes, configuration).

:func:`prepare_and_check` does both, on the first rows and a forked random stream.

>>> from pyro_gen.models import VAE
>>> pair = as_pair(VAE(data_shape=(4,), latent_dim=2, hidden=(8,)))
>>> pair.module is pair.model.__self__, pair.dtype
(True, torch.float32)
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_gen.errors import ConfigError, DataError, PyroGenError, ShapeError
from pyro_gen.models.base import check_finite

__all__ = [
    "DATA_PLATE",
    "CHECK_ROWS",
    "ModelGuidePair",
    "as_pair",
    "check_pair",
    "prepare_data",
    "prepare_and_check",
    "evaluating",
    "forked_rng",
    "refuse_likelihood_free",
    "base_distribution",
]

DATA_PLATE = "data"  # the per-datapoint plate every model puts its observations under
CHECK_ROWS = 8  # datapoints that check_pair runs on before the heavy work of a tool


def base_distribution(fn):
    """The innermost distribution of a site under its wrappers (``Independent``,
    ``MaskedDistribution``, ``ExpandedDistribution``): what the site really draws from.

    >>> import pyro.distributions as dist
    >>> type(base_distribution(dist.Normal(0.0, 1.0).expand([3]).to_event(1))).__name__
    'Normal'
    """
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


@dataclass
class ModelGuidePair:
    model: Callable
    guide: Callable
    module: nn.Module

    @property
    def device(self) -> torch.device:
        """Where the parameters live (CPU for a module without parameters)."""
        return next(iter(self.module.parameters()), torch.empty(0)).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the first floating parameter (else buffer) of the module;
        ``torch.get_default_dtype()`` (float32) for a module without floating tensors."""
        return _state_dtype(self.module) or torch.get_default_dtype()

    @property
    def check_data(self) -> Callable[[torch.Tensor], None] | None:
        return getattr(self.module, "check_data", None)


def _state_dtype(module: nn.Module) -> torch.dtype | None:
    for tensors in (module.parameters(), module.buffers()):
        for t in tensors:
            if t.is_floating_point():
                return t.dtype
    return None


def as_pair(
    model, guide: Callable | None = None, module: nn.Module | None = None
) -> ModelGuidePair:
    """Normalise the ways a user can hand over a model/guide pair (a pair passes through)."""
    if isinstance(model, ModelGuidePair) and guide is None and module is None:
        return model
    if guide is None:
        if not (hasattr(model, "model") and hasattr(model, "guide")):
            raise ConfigError(
                "give either a module with .model and .guide methods, or model=..., guide=..., "
                "module=<the nn.Module that owns their parameters>."
            )
        return ModelGuidePair(model.model, model.guide, module or model)
    if module is None:
        owner = getattr(model, "__self__", None)
        if not isinstance(owner, nn.Module):
            raise ConfigError(
                "a model and guide given as plain functions need module=<the nn.Module that owns "
                "their parameters> (pyro_gen keeps parameters in modules, not in the global "
                "param store)."
            )
        module = owner
    return ModelGuidePair(model, guide, module)


@contextlib.contextmanager
def evaluating(module: nn.Module, seed: int | None = None) -> Iterator[None]:
    """Evaluation conditions: ``seed`` set (if given), the module in eval mode and Pyro's
    validation off inside; the module's train/eval mode is restored afterwards."""
    if seed is not None:
        pyro.set_rng_seed(seed)
    was_training = module.training
    module.eval()
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        module.train(was_training)


@contextlib.contextmanager
def forked_rng(device: torch.device | str | None = None) -> Iterator[None]:
    """``torch.random.fork_rng`` for the CPU and ``device`` (if CUDA): random draws inside
    leave every stream outside as it was."""
    device = torch.device(device or "cpu")
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        yield


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_WRAPPERS = (str(Path(contextlib.__file__).resolve()), "_contextlib.py")  # @torch.no_grad()


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside pyro_gen and decorators (a warning then
    points at the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR)
        or frame.f_code.co_filename.endswith(_WRAPPERS)
    ):
        frame, level = frame.f_back, level + 1
    return level


def prepare_data(pair: ModelGuidePair, x, what: str = "data") -> torch.Tensor:
    """``x`` checked and cast for ``pair``: same shape and device, in the module's dtype.

    Integer and bool data are cast to the module's floating dtype (values kept); floating data
    of another dtype too, with a UserWarning. Then ``pair.check_data(x)`` runs where the module
    has one (shapes, support), else NaN/Inf are refused. Nothing moves between devices.

    Raises:
        DataError: ``x`` is not a tensor, is empty or complex, holds NaN/Inf (counted, the first
            index named) or values the model's ``check_data`` refuses.
        ShapeError: from ``check_data``, when the datapoints have the wrong shape.
    """
    if not isinstance(x, torch.Tensor):
        hint = " Convert it with torch.as_tensor(...)." if hasattr(x, "__array__") else ""
        raise DataError(f"{what} must be a torch.Tensor; got {type(x).__name__}.{hint}")
    if x.dim() == 0:
        raise DataError(
            f"{what} is a 0-dim tensor; pass datapoints along the first axis, [N, ...] "
            "(one datapoint: x.unsqueeze(0))."
        )
    if x.shape[0] == 0 or x.numel() == 0:
        raise DataError(f"{what} is empty (shape {list(x.shape)}); pass at least one datapoint.")
    if x.is_complex():
        raise DataError(f"{what} is complex ({x.dtype}); pyro_gen models take real data.")
    state = _state_dtype(pair.module)
    if not x.is_floating_point():
        x = x.to(state or torch.get_default_dtype())
    elif state is not None and x.dtype != state:
        warnings.warn(
            f"{what} is {_name(x.dtype)} but the model's parameters are {_name(state)}: "
            f"casting {what} to {_name(state)} (cast the data yourself to silence this, or the "
            f"module with module.to(torch.{_name(x.dtype)}) to evaluate in {_name(x.dtype)}).",
            UserWarning,
            stacklevel=_caller_stacklevel(),
        )
        x = x.to(state)
    if pair.check_data is not None:
        pair.check_data(x)
    else:
        check_finite(x, what)
    return x


def prepare_and_check(
    pair: ModelGuidePair, x, what: str = "x", rows: int = CHECK_ROWS, **kwargs
) -> torch.Tensor:
    """:func:`prepare_data` on all of ``x``, then :func:`check_pair` on its first ``rows``
    datapoints (moved to the module's device; tensor keyword arguments whose first axis is
    ``N`` sliced the same way) on a forked random stream. Returns the prepared ``x``.

    Raises what those two raise (DataError, ShapeError, ConfigError), and ConfigError for a
    likelihood-free model (see :func:`refuse_likelihood_free`).
    """
    refuse_likelihood_free(pair)
    x = prepare_data(pair, x, what)
    n, device = x.shape[0], pair.device
    kw = {
        k: v[:rows].to(device)
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n
        else v
        for k, v in kwargs.items()
    }
    with forked_rng(device):
        check_pair(pair, x[:rows].to(device), **kw)
    return x


def refuse_likelihood_free(pair: ModelGuidePair, what: str = "a density evaluation") -> None:
    """Raise ConfigError when ``pair.module`` declares ``likelihood_free = True`` (a GAN's
    generator: x = G(z) has no density p(x | z), so an ELBO, an importance-sampled log p(x) and
    their diagnostics are undefined), naming what is offered instead."""
    if getattr(pair.module, "likelihood_free", False):
        raise ConfigError(
            f"{type(pair.module).__name__} is likelihood-free: x = G(z) is a deterministic "
            f"function of z, so there is no density p(x | z) and {what} (ELBO, importance-sampled "
            "log p(x), ELBO diagnostics) is undefined. Judge it by its samples instead: "
            "pyro_gen.evaluate.quality.sample_quality(real, fake, ...) or 'pyro-gen quality RUN' "
            "(two-sample test, Fréchet distance, precision/recall, MMD, class histogram)."
        )


# -- check_pair ----------------------------------------------------------------------------------
def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shapes(tr) -> str:
    try:
        tr.compute_log_prob()
    except Exception:  # the shapes are what we want to show, even when log_prob fails
        pass
    return tr.format_shapes()  # shows the sites whose log_prob did compute


def _message(e: BaseException) -> str:
    """The error's own words: without Pyro's appended trace shapes and tensor dumps."""
    text = str(e).split("\nTrace Shapes:")[0]
    text = re.sub(r"Error while computing log_prob at site '[^']*':\n", "", text)
    text = text.split(", but found invalid values")[0]
    return text.strip()


_DTYPE_ERROR = re.compile(
    r"same dtype|scalar type|dtype .* but|Input type .* should be the same|"
    r"can't be cast to the desired output type|expected .*dtype|found dtype",
    re.IGNORECASE,
)
_SUPPORT = re.compile(r"within the support \((.*)\) of the distribution (\w+)")
_PARAMETER = re.compile(
    r"Expected parameter (\w+) .*?of distribution (\w+).* to satisfy the constraint (.*)",
    re.DOTALL,
)
_SITE = re.compile(r"at site '([^']*)'|at site (\S+) dim")


def _support_error(e: BaseException, site: str | None, value, fn, observed: bool) -> DataError:
    m = _SUPPORT.search(str(e))
    support, family = (m.group(1), m.group(2)) if m else ("?", type(fn).__name__)
    detail = ""
    if value is not None and fn is not None:
        base = base_distribution(fn)
        try:
            ok = base.support.check(value)
            if ok.shape == value.shape:
                bad = value[~ok]
                detail = (
                    f" {bad.numel()} of {value.numel()} values are not (e.g. "
                    f"{[round(float(v), 4) for v in bad[:3]]}; range "
                    f"[{float(value.min()):.3g}, {float(value.max()):.3g}])."
                )
        except Exception:  # a support without an elementwise check: the names suffice
            detail = ""
    if not observed:
        return DataError(
            f"the guide's draws for latent site {site!r} are outside the support {support} of "
            f"the model's {family} distribution there.{detail} Give the guide a distribution "
            "with the same support (e.g. LogNormal or a TransformedDistribution for a "
            "positive latent)."
        )
    hint = (
        " Binarize the data (e.g. (x > 0.5).float()) or use a likelihood for grey values "
        "(ContinuousBernoulli, Normal)."
        if family == "Bernoulli" or "Boolean" in support
        else " Transform the data into the support or choose a distribution whose support "
        "holds them."
    )
    where = f"observed site {site!r}" if site else "an observed site"
    return DataError(
        f"the values at {where} are outside the support {support} of its {family} "
        f"distribution.{detail}{hint}"
    )


def _dtype_error(e: BaseException, role: str, x, pair: ModelGuidePair, kwargs: dict) -> DataError:
    inputs = {"x": x, **kwargs}
    given = ", ".join(
        f"{k} {_name(v.dtype)}" for k, v in inputs.items() if isinstance(v, torch.Tensor)
    )
    want = _name(pair.dtype)
    odd = [  # floating inputs (and x) in another dtype; integer labels are left alone
        k
        for k, v in inputs.items()
        if isinstance(v, torch.Tensor)
        and (v.is_floating_point() or k == "x")
        and v.dtype != pair.dtype
    ]
    fix = (
        f"cast {', '.join(odd)} to {want} (pyro_gen.models.prepare_data(pair, x) does for x)"
        if odd
        else "look for a tensor the program creates in another dtype (e.g. torch.tensor(...) "
        "without dtype=, or float64 numpy values)"
    )
    return DataError(
        f"a dtype mismatch while running the {role}: {_message(e)}. The inputs are {given}; "
        f"the module's parameters are {want}: {fix}, or cast the module with module.to(...)."
    )


def _classify(
    e: BaseException,
    role: str,
    site: str | None,
    pair,
    x,
    kwargs: dict,
    traces: dict,
    value=None,
    fn=None,
    observed: bool = True,
) -> PyroGenError:
    """The pyro_gen error of a failure of guide or model (``role``) inside check_pair."""
    text = str(e)
    if site is None and (m := _SITE.search(text)):
        site = m.group(1) or m.group(2)
    if "Expected scale > 0" in text:
        return ConfigError(
            f"the {role} uses poutine.scale with a scale that is not > 0 ({_message(e)}). "
            "A scale weights log-densities and must be positive; for β = 0 (a plain "
            "autoencoder) mask the latent site out with poutine.mask(mask=False) in the model "
            "and use a point-mass (Delta) guide (pyro_gen.models.beta_scale masks for you)."
        )
    if "within the support" in text:
        return _support_error(e, site, value, fn, observed)
    if _DTYPE_ERROR.search(_message(e)):
        return _dtype_error(e, role, x, pair, kwargs)
    if m := _PARAMETER.search(_message(e)):
        where = f"site {site!r}" if site else f"a site of the {role}"
        return DataError(
            f"the {m.group(2)} distribution at {where} got a parameter {m.group(1)!r} outside "
            f"its constraint {m.group(3).strip()} (NaN, Inf or out of range). Look for NaN/Inf "
            "in the data and for a network output that needs a transform (e.g. a scale "
            "through softplus or exp)."
        )
    shape = x.shape if isinstance(x, torch.Tensor) else "?"
    parts = [
        f"the model/guide pair failed in the {role} on a batch x of shape {list(shape)}"
        + (f" at site {site!r}" if site else "")
        + f": {_message(e)}"
    ]
    if m := re.search(r"inside plate\('([^']*)'\) at site \S+ dim (-?\d+), (\d+) vs (\d+)", text):
        parts.append(
            f"The distribution has a batch dim of size {m.group(4)} where plate({m.group(1)!r}) "
            f"(size {m.group(3)}) sits, at dim {m.group(2)}: declare one datapoint's dims as "
            "the event with .to_event(k) (k = the number of dims of one datapoint)."
        )
    for name, tr in traces.items():
        if tr is not None:
            parts.append(f"{name} trace shapes (batch | event):\n{_shapes(tr)}")
    parts.append(
        "Common causes: a decoder whose output shape differs from the data's; a likelihood "
        "without .to_event(k) over the datapoint's dims; a site outside pyro.plate('data')."
    )
    return ShapeError("\n".join(parts))


def _plate_dims(site: dict) -> int:
    return max((-f.dim for f in site["cond_indep_stack"] if f.dim is not None), default=0)


def _check_observed_shape(name: str, site: dict, model_tr) -> None:
    """The value of an observed site must be exactly ``batch_shape + event_shape``."""
    fn, value = site["fn"], site["value"]
    batch, event = tuple(fn.batch_shape), tuple(fn.event_shape)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) == batch + event:
        return
    shape = tuple(value.shape)
    plates = min(_plate_dims(site), len(shape))
    want_batch, want_event = shape[:plates], shape[plates:]
    lead = f"[{', '.join(['N', *map(str, want_event)])}]"
    if len(event) != len(want_event):
        hint = (
            f"declare one datapoint's {len(want_event)} dims as the event with "
            f".to_event({len(want_event)}) (the distribution's event_shape is {list(event)})"
        )
    elif event != want_event and want_batch and event[:1] == want_batch[-1:]:
        hint = (
            f"the event_shape {list(event)} starts with the batch size {want_batch[-1]}: the "
            f"decoder's output lacks one of the data's dims, so .to_event({len(event)}) took "
            f"the datapoint axis into the event. Make the output {lead} "
            "(e.g. params.reshape(x.shape)), as the data are"
        )
    elif event != want_event:
        hint = (
            f"the distribution's event_shape {list(event)} is not one datapoint's shape "
            f"{list(want_event)}: make the decoder's output {lead} (e.g. params.reshape(x.shape))"
        )
    else:
        hint = (
            f"the batch_shape {list(batch)} should be the plates' {list(want_batch)}: give the "
            "distribution one row of parameters per datapoint (check its inputs and any .expand)"
        )
    raise ShapeError(
        f"observed site {name!r}: the value has shape {list(shape)} but the distribution's "
        f"batch_shape + event_shape is {list(batch)} + {list(event)} = {list(batch + event)}. "
        "They must be equal: Pyro would broadcast them and score every datapoint against "
        f"other datapoints' parameters. Expected batch_shape {list(want_batch)} (the plates) "
        f"and event_shape {list(want_event)} (one datapoint). Likely fix: {hint}.\n"
        + model_tr.format_shapes()
    )


def _support_tensors(constraint, depth: int = 0) -> list[torch.Tensor]:
    """The tensors a constraint holds (an Interval's bounds, an independent's base's ...)."""
    if depth > 4:
        return []
    out = []
    for v in vars(constraint).values():
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, torch.distributions.constraints.Constraint):
            out.extend(_support_tensors(v, depth + 1))
    return out


def _support_moves_with_latents(pair: ModelGuidePair, x, kwargs: dict, name: str, fn) -> bool:
    """Whether the support of observed site ``name`` depends on the latents (x ~ Uniform(0, z)).

    The pair runs once more (validation off, on a forked random stream) with a second guide
    draw; the support depends on the latents when its bound tensors differ between the two
    draws. A support without tensors (Boolean, real, positive, ...) or with the same bounds
    both times is fixed, so values outside it are the data's fault.
    """
    first = _support_tensors(fn.support)
    if not first:
        return False
    try:
        with forked_rng(x.device), pyro.validation_enabled(False), torch.no_grad():
            guide_tr = poutine.trace(pair.guide).get_trace(x, **kwargs)
            model_tr = poutine.trace(poutine.replay(pair.model, guide_tr)).get_trace(x, **kwargs)
        second = _support_tensors(model_tr.nodes[name]["fn"].support)
    except Exception:  # the rerun failing is no evidence either way: blame the data as before
        return False
    if len(first) != len(second):
        return True
    return any(
        a.shape != b.shape or not torch.equal(a.detach(), b.detach())
        for a, b in zip(first, second, strict=True)
    )


def check_pair(pair: ModelGuidePair, x: torch.Tensor, **kwargs) -> None:
    """Run guide and model once on ``x`` (a small batch) with Pyro's validation on.

    Raises (each message names the site where it can):
        ShapeError: an observed site's value is not exactly the distribution's
            ``batch_shape + event_shape`` (both shown with the likely fix), no observed site,
            an observed site outside ``pyro.plate("data")``, or any other shape failure (every
            site's shape shown, ``Trace.format_shapes()``).
        DataError: NaN/Inf in ``x``, values outside a site's support (the support named, no
            tensor dump), a dtype mismatch (both dtypes named), a distribution parameter
            outside its constraint. An observed site whose support depends on the latents
            (x ~ Uniform(0, z): its bounds change with a second guide draw) is not blamed on
            the data: a zero likelihood for some z is part of such a model.
        ConfigError: ``poutine.scale`` with a scale that is not > 0.
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        check_finite(x, "x")
    traces: dict = {"guide": None, "model": None}
    with pyro.validation_enabled(True), torch.no_grad():
        for role in ("guide", "model"):
            fn = pair.guide if role == "guide" else poutine.replay(pair.model, traces["guide"])
            handler = poutine.trace(fn)
            try:
                traces[role] = handler.get_trace(x, **kwargs)
            except (ValueError, RuntimeError, IndexError) as e:
                if isinstance(e, PyroGenError):
                    raise
                traces[role] = handler.msngr.trace  # the sites up to the failure
                raise _classify(e, role, None, pair, x, kwargs, traces) from e
        model_tr = traces["model"]
        observed = [
            n
            for n, s in model_tr.nodes.items()
            if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s)
        ]
        if not observed:
            raise ShapeError("the model has no observed sample site (pyro.sample(..., obs=x)).")
        for name in observed:
            site = model_tr.nodes[name]
            frames = [f.name for f in site["cond_indep_stack"]]
            if DATA_PLATE not in frames and not site["infer"].get("is_auxiliary"):
                raise ShapeError(
                    f"observed site {name!r} is not inside pyro.plate({DATA_PLATE!r}) (plates: "
                    f"{frames or 'none'}); pyro_gen finds the per-datapoint axis through that "
                    "plate.\n" + model_tr.format_shapes()
                )
        for name in observed:
            if not model_tr.nodes[name]["infer"].get("is_auxiliary"):  # pyro.factor
                _check_observed_shape(name, model_tr.nodes[name], model_tr)
        for role in ("guide", "model"):
            for name, site in traces[role].nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                try:
                    site["fn"].log_prob(site["value"])
                except (ValueError, RuntimeError, IndexError) as e:
                    if (
                        site["is_observed"]
                        and "within the support" in str(e)
                        and _support_moves_with_latents(pair, x, kwargs, name, site["fn"])
                    ):
                        continue  # e.g. x ~ Uniform(0, z): −inf for some z is the model's own
                    raise _classify(
                        e,
                        role,
                        name,
                        pair,
                        x,
                        kwargs,
                        traces,
                        site["value"],
                        site["fn"],
                        site["is_observed"],
                    ) from e
