"""A training step: an objective and its optimiser turn a named batch into an update + metrics.

The loop (:class:`~pyro_gen.infer.Trainer`) owns order, epochs and budget and calls
``step.update(batch)``; a new objective or model family adds a step, not a loop (NumPyro's
``SVI.update`` is the model). A batch is a mapping of equal-length tensors passed to model and
guide by name: ``{"x": X, "y": Y}`` runs ``model(X, y=Y)`` and ``guide(X, y=Y)``.

:class:`SVIStep` minimises the negative β-ELBO per datapoint of the full data set:

    loss = −(1/N) [ (N/B) Σ_{n in batch} (E_q log p(x_n | z_n) − β KL_n) − β KL_global ]

(local latents only: the batch mean of −ELBO_n; Hoffman et al. 2013 for the N/B scaling of the
``"data"`` plate, Higgins et al. 2017 for β). ``init`` checks what the objective cannot do
right and refuses it with the fix:

* sites marked for enumeration (``config_enumerate``) under an objective that would sample them:
  use ``elbo="enum"``;
* a ``pyro.param`` in Pyro's global param store: the step optimises the module's parameters
  only, so such a parameter would silently never move; make it an ``nn.Parameter`` /
  ``PyroParam`` of the module;
* ``meanfield`` with a guide site drawn without ``rsample`` whose q has trained parameters
  (no score-function term: part of the gradient would be missing); use ``elbo="trace"``;
* vectorised particles (``iwae``, or ``num_particles > 1``) on a program that does not
  broadcast over their leading dim (e.g. it flattens the batch with ``reshape(-1, ...)``).

``iwae`` with one particle warns: k = 1 is the plain ELBO.

>>> import torch
>>> from pyro_gen.models import VAE, as_pair
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> step = SVIStep(as_pair(vae), lr=1e-2)
>>> batch = {"x": torch.ones(8, 4)}
>>> step.init(batch, num_data=8, total_steps=10)
>>> sorted(step.update(batch))
['loss', 'probe']
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_gen.errors import ConfigError
from pyro_gen.infer.capture import CapturedLoss, buffers_kept
from pyro_gen.infer.handlers import ScaleData, ScaleLatents
from pyro_gen.infer.iwae import particle_shape_errors
from pyro_gen.infer.objectives import ENUM_ELBOS, IWAE_ELBOS, make_elbo
from pyro_gen.models.pair import DATA_PLATE, ModelGuidePair, base_distribution, forked_rng

__all__ = ["SVIStep", "OPTIMIZERS", "LR_SCHEDULES", "FUSED_OPTIMIZERS", "make_optimizer"]

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
MEANFIELD_ELBOS = ("meanfield", "jit_meanfield")
LR_SCHEDULES = ("constant", "cosine", "exponential")
FUSED_OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(
    params: list[torch.Tensor],
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    fused: bool = False,
    lr_schedule: str = "constant",
    lr_gamma: float = 0.9999,
    total_steps: int = 1,
):
    """A torch optimiser and its lr scheduler (None for ``"constant"``), by name.

    Raises ConfigError for no trainable parameters or ``fused`` with an optimiser without a fused
    kernel."""
    if not params:
        raise ConfigError("the module has no trainable parameters.")
    kwargs: dict = {"lr": lr}
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    if fused:
        if optimizer not in FUSED_OPTIMIZERS:
            raise ConfigError(
                f"fused=True needs one of {list(FUSED_OPTIMIZERS)}; {optimizer!r} has no "
                "fused kernel."
            )
        kwargs["fused"] = True
    opt = OPTIMIZERS[optimizer](params, **kwargs)
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    elif lr_schedule == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_gamma)
    else:
        scheduler = None
    return opt, scheduler


def _finite_probe(
    loss: torch.Tensor, params: list[torch.Tensor], grad_norm: torch.Tensor | None
) -> torch.Tensor:
    """A scalar that is finite iff the loss and every gradient are: one reduction over the
    gradients (a sum per tensor; the clipping norm when there is one), no rescaling pass."""
    probe = loss.detach()
    if grad_norm is not None:
        return probe + grad_norm
    sums = [
        p.grad.sum(dtype=torch.float64 if p.grad.dtype == torch.float64 else torch.float32)
        for p in params
        if p.grad is not None
    ]
    return probe + torch.stack(sums).sum() if sums else probe


class SVIStep:
    """Stochastic variational inference on a model/guide pair: ``update(batch) -> metrics``.

    Args:
        pair: the model/guide pair (:func:`pyro_gen.models.as_pair`).
        elbo: objective by name (:data:`pyro_gen.infer.ELBOS`): ``trace``, ``meanfield``,
            ``enum``, ``jit``, ``jit_meanfield``, ``jit_enum``, ``iwae``, ``iwae_dreg``.
        num_particles: Monte-Carlo samples per datapoint (vectorised); k of ``iwae``.
        optimizer, lr, weight_decay, fused, lr_schedule, lr_gamma: see :func:`make_optimizer`.
        clip_norm: clip the gradient's global norm.
        capture: replay the loss from a captured graph (:class:`CapturedLoss`).

    ``beta`` (>= 0) weights the latent sites of model and guide; a schedule sets it before each
    update. ``update`` returns ``{"loss": the loss tensor (nats per datapoint, on the device),
    "probe": finite iff loss and gradients are}``; with ``check=True`` a non-finite probe skips
    the optimiser step and adds ``"skipped": True`` (one host sync).
    """

    data_parallel = True  # update() averages loss and gradients through ``reduce`` when set

    def __init__(
        self,
        pair: ModelGuidePair,
        *,
        elbo: str = "trace",
        num_particles: int = 1,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        fused: bool = False,
        lr_schedule: str = "constant",
        lr_gamma: float = 0.9999,
        clip_norm: float | None = None,
        capture: bool = False,
    ) -> None:
        self.pair = pair
        self.elbo_name = elbo
        self.num_particles = num_particles
        self.opt_settings = dict(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            fused=fused,
            lr_schedule=lr_schedule,
            lr_gamma=lr_gamma,
        )
        self.clip_norm = clip_norm
        self.capture = capture
        self.beta = 1.0
        self.data_scale = 1.0  # N/B where the program has global latents, else 1
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.loss: CapturedLoss | None = None
        self._names: tuple[str, ...] = ("x",)
        self._num_data = 0
        # data parallelism: the mean over processes of a flat buffer (set by the loop)
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    # -- set-up --------------------------------------------------------------------------------
    def init(self, batch: Mapping[str, torch.Tensor], *, num_data: int, total_steps: int) -> None:
        """Check the program against the objective on ``batch``, then build the objective and
        the optimiser. Raises ConfigError for what the objective cannot do right."""
        if getattr(self.pair.module, "likelihood_free", False):
            raise ConfigError(
                f"{type(self.pair.module).__name__} is likelihood-free (x = G(z), no p(x | z)): "
                "an ELBO cannot train it. Use the adversarial step: Trainer(model, "
                "step_class=pyro_gen.adversarial.AdversarialStep, ...)."
            )
        self._names = tuple(batch)
        self._num_data = int(num_data)
        x, kw = _split(batch)
        globals_, nesting = self._inspect(x, kw)
        if self.elbo_name in MEANFIELD_ELBOS:
            self._check_reparameterised(x, kw)
        self.data_scale = self._num_data / x.shape[0] if globals_ else 1.0
        if self.elbo_name not in ENUM_ELBOS + IWAE_ELBOS:
            nesting = None  # only enumeration and the IWAE particle plate need it
        self.elbo = make_elbo(
            self.elbo_name, self.num_particles, max_plate_nesting=nesting, exact_value=False
        )
        if self.elbo_name in IWAE_ELBOS:  # DReG re-runs the guide at detached parameters
            self.elbo.module = self.pair.module
        if self.num_particles > 1 and not self.elbo_name.startswith("jit"):
            self._check_particles(x, kw)
        if self.elbo_name in IWAE_ELBOS and self.num_particles == 1:
            warnings.warn(
                f"elbo={self.elbo_name!r} with num_particles=1: at k = 1 the importance-weighted "
                "bound is the plain ELBO, the bound elbo='trace' optimises. Give "
                "num_particles=k (pyro-gen train --num-particles k, e.g. 5 or 50) for a tighter "
                "bound.",
                stacklevel=4,
            )
        params = [p for p in self.pair.module.parameters() if p.requires_grad]
        self.params = params
        self.optimizer, self.scheduler = make_optimizer(
            params, total_steps=total_steps, **self.opt_settings
        )
        jit = self.elbo_name.startswith("jit")
        self._model, self._guide = self._wrapped(jit)
        self.loss = CapturedLoss(
            self.objective,
            self.pair.module,
            key=lambda: (self.beta, self.data_scale),
            enabled=self.capture
            and not jit
            and self.elbo_name not in ENUM_ELBOS
            and getattr(self.elbo, "capturable", True),
        )

    @contextlib.contextmanager
    def _probe(self, x: torch.Tensor, kw: dict, grad: bool):
        """The first (at most 8) datapoints and their per-datapoint arguments, for a trace
        before training that changes nothing: a forked random stream, buffers (BatchNorm
        statistics, EMA codebooks) restored, module-local parameters, validation off."""
        n = min(8, x.shape[0])
        small = {k: v[:n] if _per_datapoint(v, x) else v for k, v in kw.items()}
        with (
            forked_rng(x.device),
            buffers_kept(self.pair.module),
            torch.enable_grad() if grad else torch.no_grad(),
            pyro.settings.context(module_local_params=True),
            pyro.validation_enabled(False),
        ):
            yield x[:n], small

    def _inspect(self, x: torch.Tensor, kw: dict) -> tuple[bool, int]:
        """Trace guide and model once; refuse enumeration marks the objective would ignore and
        global ``pyro.param`` s. Returns (a latent site lies outside the ``"data"`` plate, how
        many batch dims the program's plates use)."""
        with self._probe(x, kw, grad=False) as (xs, small):
            try:
                guide_tr = poutine.trace(self.pair.guide).get_trace(xs, **small)
                model_tr = poutine.trace(poutine.replay(self.pair.model, trace=guide_tr)).get_trace(
                    xs, **small
                )
            except TypeError as e:
                raise argument_error(self._names, e) from e
        own = {id(p) for p in self.pair.module.parameters()}
        store = pyro.get_param_store()
        has_global, marked, nesting, draws = False, False, 0, []
        for role, tr in (("guide", guide_tr), ("model", model_tr)):
            for name, site in tr.nodes.items():
                if site["type"] == "param":
                    if name in store and id(store._params.get(name)) not in own:
                        raise ConfigError(
                            f"the {role} uses pyro.param({name!r}), a parameter in Pyro's global "
                            "param store: pyro_gen optimises the module's own parameters, so it "
                            "would never be trained. Make it a parameter of the module: "
                            f"self.{name} = torch.nn.Parameter(init) (or pyro.nn.PyroParam(init, "
                            "constraint=...)) in a PyroModule's __init__, and use self."
                            f"{name} in the {role}."
                        )
                    continue
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                dims = [-f.dim for f in site["cond_indep_stack"] if f.dim is not None]
                nesting = max([nesting, *dims])
                marked |= bool(site["infer"].get("enumerate"))
                if site["infer"].get("enumerate") and self.elbo_name not in ENUM_ELBOS:
                    raise ConfigError(
                        f"the {role}'s site {name!r} is marked for enumeration "
                        f"(infer={site['infer']}), but elbo={self.elbo_name!r} would sample it "
                        "and ignore the mark. Use elbo='enum' (pyro-gen train --elbo enum) to sum "
                        "it out, or remove the mark to sample it on purpose."
                    )
                if not site["is_observed"]:
                    frames = [f.name for f in site["cond_indep_stack"]]
                    has_global |= DATA_PLATE not in frames
                    if role == "guide":
                        draws.append(_is_delta(site["fn"]))
        if self.elbo_name in ENUM_ELBOS and not marked:
            warnings.warn(
                f"elbo={self.elbo_name!r}, but no sample site is marked for enumeration "
                "(config_enumerate or infer={'enumerate': 'parallel'}): nothing is summed out, "
                "and the objective is the plain ELBO.",
                stacklevel=4,
            )
        if self.elbo_name in IWAE_ELBOS and self.num_particles > 1 and all(draws):
            warnings.warn(
                f"elbo={self.elbo_name!r} with num_particles={self.num_particles}, but the guide "
                + (
                    "draws no latent: every particle is the same, so the bound is log p(x) itself"
                    if not draws
                    else "draws only point masses (Delta): every particle is the same draw "
                    "(and a point-mass guide's objective is no bound on log p(x))"
                )
                + f", at {self.num_particles} times the cost. Use elbo='trace'.",
                stacklevel=4,
            )
        return has_global, nesting

    def _check_particles(self, x: torch.Tensor, kw: dict) -> None:
        """One loss on the first batch before training (no gradient): a program that cannot
        take the vectorised particles' leading dim (it flattens the batch with
        ``reshape(-1, ...)``) is refused with a ConfigError that says so, not Pyro's shape
        error at the first step."""
        objective = (
            f"elbo={self.elbo_name!r}"
            if self.elbo_name in IWAE_ELBOS
            else f"elbo={self.elbo_name!r} with num_particles={self.num_particles}"
        )
        with (
            forked_rng(x.device),
            buffers_kept(self.pair.module),
            torch.no_grad(),
            pyro.settings.context(module_local_params=True),
            pyro.validation_enabled(False),
            particle_shape_errors(self.num_particles, x, objective),
        ):
            self.elbo.differentiable_loss(self.pair.model, self.pair.guide, x, **kw)

    def _check_reparameterised(self, x: torch.Tensor, kw: dict) -> None:
        """Refuse ``meanfield`` for a guide site drawn without ``rsample`` whose log q depends
        on trained parameters: the mean-field objective has no score-function term, so the
        gradient of E_q[log p(x | z)] with respect to q would be silently missing. A site
        whose q has no trained parameters (a point mass on codes chosen outside autograd, as
        the VQ-VAE's guide) is fine: its sampled log q needs no gradient."""
        with self._probe(x, kw, grad=True) as (xs, small):
            guide_tr = poutine.trace(self.pair.guide).get_trace(xs, **small)
            for name, site in guide_tr.nodes.items():
                if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                    continue
                fn = site["fn"]
                if fn.has_rsample or not fn.log_prob(site["value"]).requires_grad:
                    continue
                raise ConfigError(
                    f"elbo={self.elbo_name!r} needs every guide site reparameterised, but guide "
                    f"site {name!r} ({_base_name(fn)}) is drawn without rsample and its "
                    "distribution depends on trained parameters: the mean-field objective has "
                    "no score-function term, so the gradient through the samples (the "
                    "reconstruction term's, for the guide's parameters) would be silently "
                    "missing. Use elbo='trace' (pyro-gen train --elbo trace: score-function "
                    "gradient), or mark the site for enumeration and use elbo='enum'."
                )

    def _wrapped(self, jit: bool) -> tuple[Callable, Callable]:
        """Model and guide under β and the data-plate scale (read at call time); under JIT
        they also register the module's parameters (Pyro's JIT finds them in the store)."""
        pair, module = self.pair, self.pair.module

        def handled(fn):
            def run(*args, **kwargs):
                if jit:
                    pyro.module("pyro_gen", module)
                with (
                    ScaleData(self.data_scale) if self.data_scale != 1.0 else _null(),
                    ScaleLatents(self.beta) if self.beta != 1.0 else _null(),
                ):
                    return fn(*args, **kwargs)

            return run

        return handled(pair.model), handled(pair.guide)

    # -- the objective and the update ----------------------------------------------------------
    def objective(self, *values: torch.Tensor) -> torch.Tensor:
        """The loss of one batch given as tensors in the batch's key order (nats/datapoint)."""
        kw = dict(zip(self._names, values))
        x = kw.pop("x")
        loss = self.elbo.differentiable_loss(self._model, self._guide, x, **kw)
        return loss / (self._num_data if self.data_scale != 1.0 else x.shape[0])

    def update(self, batch: Mapping[str, torch.Tensor], *, check: bool = True) -> dict:
        """One optimiser step on ``batch``; see the class docstring for the metrics."""
        loss = self.loss(*(batch[k] for k in self._names))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.reduce is not None:
            loss = self._average_over_processes(loss)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            if self.clip_norm is not None
            else None
        )
        # a finite loss can still have a NaN gradient, which must not reach step()
        probe = _finite_probe(loss, self.params, grad_norm)
        metrics = {"loss": loss.detach(), "probe": probe}
        if check and not bool(torch.isfinite(probe)):  # the gradients stay for a diagnosis
            metrics["skipped"] = True
            return metrics
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return metrics

    def _average_over_processes(self, loss: torch.Tensor) -> torch.Tensor:
        """Loss and gradients averaged over the processes in one collective (data-parallel SGD:
        the gradient of the mean loss over every process's batch). A parameter without a
        gradient on this process counts as a zero gradient."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        head = loss.detach().reshape(1).to(grads[0].dtype)
        flat = torch.cat([head] + [g.reshape(-1) for g in grads])
        flat = self.reduce(flat)
        offset = 1
        for p, g in zip(self.params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(p)
            offset += g.numel()
        return flat[0]

    def grad_norm(self) -> float:
        """The gradients' global norm (for error messages; syncs)."""
        norms = [
            torch.linalg.vector_norm(p.grad.float()) for p in self.params if p.grad is not None
        ]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def argument_error(names, e: TypeError) -> Exception:
    """A ConfigError naming the batch's entries when model or guide refused one (else ``e``)."""
    if "argument" not in str(e):
        return e
    call = ", ".join(["x", *(f"{k}=..." for k in names if k != "x")])
    return ConfigError(
        f"the batch's entries {list(names)} are passed to model and guide as model({call}); "
        f"{e}. Give the batch exactly the arguments model and guide take."
    )


def _base_name(fn) -> str:
    """The distribution's class name under its wrappers: ``Bernoulli in Independent``."""
    wrappers = []
    while hasattr(fn, "base_dist"):
        wrappers.append(type(fn).__name__)
        fn = fn.base_dist
    return type(fn).__name__ + (f" in {', '.join(wrappers)}" if wrappers else "")


def _null():
    return contextlib.nullcontext()


def _split(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    kw = dict(batch)
    return kw.pop("x"), kw


def _per_datapoint(v, x: torch.Tensor) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == x.shape[0]


def _is_delta(fn) -> bool:
    """Whether a site's distribution is a point mass (a Delta, possibly wrapped)."""
    return isinstance(base_distribution(fn), pyro.distributions.Delta)
