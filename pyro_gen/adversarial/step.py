"""The adversarial training step: two optimisers, n critic updates per generator update.

It plugs into the one training loop (``Trainer(gan, step_class=AdversarialStep, ...)``): the
loop keeps order, budget, the non-finite guard, history, checkpoints and exact resume; this
step turns each batch into updates. Per call of :meth:`AdversarialStep.update`:

1. a critic update on the batch's real images against as many fakes G(z), z ~ N(0, I) (the
   WGAN-GP penalty added for ``"wgan-gp"``; for a BiGAN the critic scores (x, E(x)) against
   (G(z), z));
2. every ``critic_steps``-th call, a generator (and encoder) update on fresh noise against the
   updated critic (Goodfellow et al. 2014, Alg. 1; Gulrajani et al. 2017, Alg. 1 with n_critic
   = ``critic_steps``, each critic update on a new real batch).

Metrics per call (history columns): ``loss`` (the generator's loss on this call's fakes, before
the critic's update), ``critic_loss`` (with the penalty), ``divergence`` (what the critic's value
estimates: JSD, D_f or W₁, :func:`~pyro_gen.adversarial.objectives.divergence_estimate`).

The objective, ``critic_steps`` and λ are the GAN's constructor arguments (its config); a
``functools.partial(AdversarialStep, objective=...)`` overrides them. Adam's betas default to
(0.5, 0.999) (Radford et al. 2016) and (0, 0.9) for WGAN-GP (Gulrajani et al. 2017).

>>> import torch
>>> from pyro_gen.adversarial import GAN
>>> from pyro_gen.infer import Trainer
>>> gan = GAN(data_shape=(2,), latent_dim=2, hidden=(8,), critic_hidden=(8,), output="identity")
>>> history = Trainer(gan, step_class=AdversarialStep, batch_size=16, max_steps=4,
...                   progress=False, log_every=2).fit(torch.randn(64, 2))
>>> sorted(k for k in history[-1] if k in ("loss", "critic_loss", "divergence"))
['critic_loss', 'divergence', 'loss']
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pyro_gen.adversarial.objectives import (
    check_objective,
    critic_loss,
    divergence_estimate,
    generator_loss,
    gradient_penalty,
)
from pyro_gen.errors import ConfigError
from pyro_gen.infer.step import SVIStep, _finite_probe, make_optimizer
from pyro_gen.models.pair import ModelGuidePair

__all__ = ["AdversarialStep"]

_NEEDS = ("decode", "score", "generator_parameters", "critic_parameters", "latent_dim")


class AdversarialStep(SVIStep):
    """Adversarial training of a :class:`~pyro_gen.adversarial.GAN` (see the module docstring).

    Args:
        pair: the GAN's model/guide pair (the module must have ``decode``, ``score``,
            ``generator_parameters``, ``critic_parameters``, ``latent_dim``).
        objective, critic_steps, gp_weight: override the GAN's own.
        critic_lr: the critic's learning rate (default: ``lr``).
        betas: Adam's (β₁, β₂) for both players (default by objective, see above).
        optimizer, lr, weight_decay, fused, lr_schedule, lr_gamma, clip_norm: as for
            :class:`~pyro_gen.infer.step.SVIStep`, applied to both optimisers.
        elbo, num_particles, capture: the loop's SVI settings; only their defaults are
            accepted (an adversarial step has no ELBO).
    """

    # each player's loss and gradients are averaged over processes through step.reduce
    data_parallel = True

    def __init__(
        self,
        pair: ModelGuidePair,
        *,
        objective: str | None = None,
        critic_steps: int | None = None,
        gp_weight: float | None = None,
        critic_lr: float | None = None,
        betas: tuple[float, float] | None = None,
        elbo: str = "trace",
        num_particles: int = 1,
        capture: bool = False,
        **settings,
    ) -> None:
        super().__init__(pair, elbo=elbo, num_particles=num_particles, capture=False, **settings)
        module = pair.module
        missing = [name for name in _NEEDS if not hasattr(module, name)]
        if missing:
            raise ConfigError(
                f"AdversarialStep trains a GAN (pyro_gen.adversarial.GAN); "
                f"{type(module).__name__} lacks {missing}."
            )
        if elbo != "trace" or num_particles != 1:
            raise ConfigError(
                f"an adversarial step has no ELBO: elbo={elbo!r} and num_particles="
                f"{num_particles} do not apply. Leave them at their defaults."
            )
        self.module = module
        self.objective_name = check_objective(objective or module.objective)
        self.critic_steps = int(critic_steps or module.critic_steps)
        self.gp_weight = float(module.gp_weight if gp_weight is None else gp_weight)
        if self.critic_steps < 1 or self.gp_weight < 0:
            raise ConfigError("critic_steps must be >= 1 and gp_weight >= 0.")
        self.critic_lr = critic_lr
        self.betas = betas or ((0.0, 0.9) if self.objective_name == "wgan-gp" else (0.5, 0.999))
        self.count = 0  # critic updates applied; the generator moves every critic_steps-th
        self.critic_optimizer = None
        self.critic_scheduler = None

    # -- set-up --------------------------------------------------------------------------------
    def init(self, batch: Mapping[str, torch.Tensor], *, num_data: int, total_steps: int) -> None:
        """Build the two optimisers (the loop has checked the pair on ``batch``)."""
        self._names = tuple(batch)
        unknown = [k for k in batch if k not in ("x", "y")]
        if unknown:
            raise ConfigError(
                f"an adversarial step takes batches {{'x': images, 'y': labels}} (y for a "
                f"conditional GAN); got extra entries {unknown}."
            )
        self._num_data = int(num_data)
        gen_settings = dict(self.opt_settings)
        critic_settings = dict(self.opt_settings)
        if self.critic_lr is not None:
            critic_settings["lr"] = float(self.critic_lr)
        self.params_g = self.module.generator_parameters()
        self.params_c = self.module.critic_parameters()
        self.params = self.params_g + self.params_c
        gen_steps = max(1, total_steps // self.critic_steps)
        self.optimizer, self.scheduler = make_optimizer(
            self.params_g, total_steps=gen_steps, **gen_settings
        )
        self.critic_optimizer, self.critic_scheduler = make_optimizer(
            self.params_c, total_steps=total_steps, **critic_settings
        )
        if self.opt_settings["optimizer"] in ("adam", "adamw"):
            for opt in (self.optimizer, self.critic_optimizer):
                for group in opt.param_groups:
                    group["betas"] = tuple(float(b) for b in self.betas)
        self.loss = None

    # -- one update ----------------------------------------------------------------------------
    def _clip(self, params) -> torch.Tensor | None:
        if self.clip_norm is None:
            return None
        return torch.nn.utils.clip_grad_norm_(params, self.clip_norm)

    def _averaged(self, loss: torch.Tensor, params: list) -> torch.Tensor:
        """Data-parallel runs (``self.reduce`` set by the loop): ``loss`` and the gradients of
        ``params`` averaged over the processes in one collective; else ``loss`` as it is."""
        if self.reduce is None:
            return loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        head = loss.detach().reshape(1).to(grads[0].dtype)
        flat = self.reduce(torch.cat([head] + [g.reshape(-1) for g in grads]))
        offset = 1
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(p)
            offset += g.numel()
        return flat[0]

    def update(self, batch: Mapping[str, torch.Tensor], *, check: bool = True) -> dict:
        """One critic update, and a generator update every ``critic_steps``-th call. In a
        data-parallel run each player's loss and gradients are averaged over the processes
        (one collective per player and update), so every process takes the same steps."""
        m, obj = self.module, self.objective_name
        real, y = batch["x"], batch.get("y")
        n = real.shape[0]
        # -- the critic
        z = torch.randn(n, m.latent_dim, device=real.device, dtype=real.dtype)
        with torch.no_grad():
            fake = m.decode(z, y)
            code = m.encode(real) if m.has_encoder else None
        s_real = m.score(real, y, code)
        s_fake = m.score(fake, y, z if m.has_encoder else None)
        loss_c = critic_loss(obj, s_real, s_fake)
        if obj == "wgan-gp" and self.gp_weight > 0:
            if m.has_encoder:
                pen = gradient_penalty(
                    lambda xx, zz: m.score(xx, y, zz),
                    (real, code),
                    (fake, z),
                    weight=self.gp_weight,
                )
            else:
                pen = gradient_penalty(
                    lambda xx: m.score(xx, y), (real,), (fake,), weight=self.gp_weight
                )
            loss_c = loss_c + pen
        with torch.no_grad():
            gen_value = generator_loss(obj, s_fake)
            if m.has_encoder:
                gen_value = gen_value + generator_loss(obj, -s_real)
            estimate = divergence_estimate(obj, s_real, s_fake)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_c.backward()
        loss_c = self._averaged(loss_c, self.params_c)
        probe = _finite_probe(loss_c, self.params_c, self._clip(self.params_c))
        metrics = {
            "loss": gen_value,
            "critic_loss": loss_c.detach(),
            "divergence": estimate,
            "probe": probe,
        }
        if check and not bool(torch.isfinite(probe)):
            metrics["skipped"] = True
            return metrics
        self.critic_optimizer.step()
        if self.critic_scheduler is not None:
            self.critic_scheduler.step()
        self.count += 1
        if self.count % self.critic_steps:
            return metrics
        # -- the generator (and encoder), against the updated critic
        z = torch.randn(n, m.latent_dim, device=real.device, dtype=real.dtype)
        fake = m.decode(z, y)
        loss_g = generator_loss(obj, m.score(fake, y, z if m.has_encoder else None))
        if m.has_encoder:  # the encoder plays against the critic with the labels swapped
            loss_g = loss_g + generator_loss(obj, -m.score(real, y, m.encode(real)))
        grads = torch.autograd.grad(loss_g, self.params_g, allow_unused=True)
        for p, g in zip(self.params_g, grads):
            p.grad = g
        loss_g = self._averaged(loss_g.detach(), self.params_g)
        probe_g = _finite_probe(loss_g, self.params_g, self._clip(self.params_g))
        metrics["probe"] = probe + probe_g
        if check and not bool(torch.isfinite(probe_g)):
            metrics["skipped"] = True  # the critic's update stands; the generator's is skipped
            return metrics
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return metrics

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "critic_scheduler": (
                self.critic_scheduler.state_dict() if self.critic_scheduler is not None else None
            ),
            "adversarial": {"count": self.count, "objective": self.objective_name},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self.critic_scheduler is not None and state.get("critic_scheduler") is not None:
            self.critic_scheduler.load_state_dict(state["critic_scheduler"])
        saved = state["adversarial"]
        if saved["objective"] != self.objective_name:
            raise ConfigError(
                f"the checkpoint was trained with objective {saved['objective']!r}; this step "
                f"uses {self.objective_name!r}. Resume with the run's objective."
            )
        self.count = int(saved["count"])
