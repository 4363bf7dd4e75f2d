"""A generative adversarial network as a Pyro model: z ~ N(0, I), x = G(z), no density of x.

    model(x, y=None):  with plate("data", N):
                           z ~ N(0, I)                       (sample site "z")
                           y ~ Categorical(uniform), obs=y   (conditional: sample site "y")
                           x = G(z [, y])                    (pyro.deterministic "x")
    guide(x, y=None):  nothing (a plain GAN cannot encode), or z = E(x) as a point mass
                       (``encoder=True``: BiGAN/ALI, Donahue et al. 2017; Dumoulin et al. 2017)

The generator defines a distribution only through sampling: p(x | z) is a point mass at G(z), so
the ELBO, importance-sampled log p(x) and ELBO diagnostics are undefined and refuse this model
(``likelihood_free = True``); sample quality (:mod:`pyro_gen.evaluate.quality`,
``pyro-gen quality RUN``) is what it is judged by. ``x`` enters the model only through its
number of rows: the data reach training through the critic
(:class:`~pyro_gen.adversarial.step.AdversarialStep`).

The critic is a submodule, so ``save_model``/``load_model`` and checkpoints keep it (a resumed
run continues the game, and a saved critic is a density-ratio estimator of data vs model). The
objective and the number of critic updates per generator update are constructor arguments: the
run's ``config.json`` records them, ``pyro-gen train --model gan --objective wgan-gp`` sets them.

>>> import torch
>>> gan = GAN(data_shape=(1, 8, 8), latent_dim=4, hidden=(16,), critic_hidden=(16,))
>>> gan.sample(3, seed=0).shape
torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_gen.adversarial.objectives import check_objective
from pyro_gen.errors import ConfigError, ShapeError, did_you_mean
from pyro_gen.models.base import GenerativeModel, check_data_shape
from pyro_gen.models.pair import DATA_PLATE
from pyro_gen.models.registry import register_model
from pyro_gen.models.sampling import make_generator
from pyro_gen.nn import ACTIVATIONS, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from pyro_gen.nn.critic import ConvCritic, MLPCritic

__all__ = ["GAN", "OUTPUTS", "NETWORKS"]

OUTPUTS = ("sigmoid", "identity")
NETWORKS = ("mlp", "conv")


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}; choose one of {list(choices)}."
            + did_you_mean(str(value), choices)
        )
    return value


@register_model("gan")
class GAN(GenerativeModel):
    """A (conditional, optionally bidirectional) GAN: generator, critic and optional encoder.

    Args:
        data_shape: one datapoint's shape, e.g. ``(1, 28, 28)`` or ``(2,)``.
        latent_dim: size of z.
        network: generator/encoder networks, "mlp" or "conv" (images).
        hidden: the generator's MLP widths (the encoder mirrors them).
        channels: the generator's conv channels (the encoder mirrors them).
        critic: the critic's network, "mlp" or "conv".
        critic_hidden: the MLP critic's widths.
        critic_channels: the conv critic's channels.
        output: "sigmoid" (pixel intensities in [0, 1]) or "identity" (real-valued data).
        objective: minimax, nonsaturating, kl, reverse_kl, js, pearson, hellinger or wgan-gp.
        critic_steps: critic updates per generator update (5 for WGAN-GP in Gulrajani et al.).
        gp_weight: λ of the WGAN-GP gradient penalty.
        num_classes: > 0 makes a conditional generator G(z, y) and critic D(x, y) with a class
            label ``y`` (int64 ``[N]``) as an observed site; 0 is unconditional.
        encoder: add an encoder E(x) (BiGAN/ALI): the critic scores (x, z) pairs, the guide is
            z = E(x), and ``reconstruct(x) = G(E(x))``.
        activation: the generator's/encoder's activation.

    ``likelihood_free = True``: density evaluators refuse this model (there is no p(x | z)).
    """

    likelihood_free = True

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 16,
        network: str = "mlp",
        hidden: Sequence[int] = (256, 512),
        channels: Sequence[int] = (64, 32),
        critic: str = "mlp",
        critic_hidden: Sequence[int] = (512, 256),
        critic_channels: Sequence[int] = (32, 64),
        output: str = "sigmoid",
        objective: str = "nonsaturating",
        critic_steps: int = 1,
        gp_weight: float = 10.0,
        num_classes: int = 0,
        encoder: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if int(latent_dim) < 1:
            raise ConfigError(f"latent_dim must be >= 1; got {latent_dim}.")
        self.latent_dim = int(latent_dim)
        self.output = _choice("output", output, OUTPUTS)
        self.objective = check_objective(objective)
        if int(critic_steps) < 1:
            raise ConfigError(f"critic_steps must be >= 1; got {critic_steps}.")
        self.critic_steps = int(critic_steps)
        if not float(gp_weight) >= 0:
            raise ConfigError(f"gp_weight must be >= 0; got {gp_weight}.")
        self.gp_weight = float(gp_weight)
        if int(num_classes) < 0:
            raise ConfigError(f"num_classes must be >= 0 (0: unconditional); got {num_classes}.")
        self.num_classes = int(num_classes)
        self.has_encoder = bool(encoder)
        if self.has_encoder and self.objective not in ("minimax", "nonsaturating", "wgan-gp"):
            raise ConfigError(
                f"encoder=True (BiGAN) trains the encoder on the generator's loss with the "
                f"labels swapped, which needs a symmetric objective; choose one of "
                f"['minimax', 'nonsaturating', 'wgan-gp'], not {objective!r}."
            )
        _choice("activation", activation, tuple(ACTIVATIONS))
        _choice("network", network, NETWORKS)
        _choice("critic", critic, NETWORKS)
        k = self.num_classes
        if network == "mlp":
            hidden = tuple(int(h) for h in hidden)
            if not hidden:
                raise ConfigError("hidden needs at least one width for network='mlp'.")
            self.generator = MLPDecoder(self.latent_dim + k, hidden, self.data_shape, activation)
            if self.has_encoder:
                self.encoder = MLPEncoder(
                    self.data_shape, self.latent_dim, hidden[::-1], activation
                )
        else:
            channels = tuple(int(c) for c in channels)
            self.generator = ConvDecoder(
                self.latent_dim + k, self.data_shape, channels, 256, activation
            )
            if self.has_encoder:
                self.encoder = ConvEncoder(
                    self.data_shape, self.latent_dim, channels[::-1], 256, activation
                )
        extra = k + (self.latent_dim if self.has_encoder else 0)
        if critic == "mlp":
            self.critic = MLPCritic(self.data_shape, tuple(int(h) for h in critic_hidden), extra)
        else:
            self.critic = ConvCritic(
                self.data_shape, tuple(int(c) for c in critic_channels), 256, extra
            )
        with torch.no_grad():
            out = self.generator(torch.zeros(2, self.latent_dim + k))
        if tuple(out.shape[1:]) != self.data_shape:
            raise ShapeError(
                f"the generator maps [2, {self.latent_dim + k}] to {list(out.shape)}; datapoints "
                f"have shape {list(self.data_shape)}."
            )

    # -- parameters of the two players ---------------------------------------------------------
    def generator_parameters(self) -> list[torch.nn.Parameter]:
        """The generator's (and encoder's) trainable parameters."""
        mods = [self.generator] + ([self.encoder] if self.has_encoder else [])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def critic_parameters(self) -> list[torch.nn.Parameter]:
        """The critic's trainable parameters."""
        return [p for p in self.critic.parameters() if p.requires_grad]

    @property
    def can_reconstruct(self) -> bool:
        """Whether :meth:`reconstruct` works: only with an encoder (BiGAN)."""
        return self.has_encoder

    def batch_from_dataset(self, dataset, split: str) -> dict[str, torch.Tensor]:
        """``{"x": images}``, and ``"y"``: the split's class labels for a conditional GAN."""
        batch = {"x": dataset.split(split)}
        if self.num_classes:
            if not dataset.labels or split not in dataset.labels:
                raise ConfigError(
                    f"a conditional GAN (num_classes={self.num_classes}) needs class labels; "
                    f"data set {dataset.name!r} has none for split {split!r}."
                )
            batch["y"] = dataset.labels[split]
        return batch

    # -- networks ------------------------------------------------------------------------------
    def _onehot(self, y: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        if self.num_classes == 0:
            if y is not None:
                raise ConfigError(
                    "this GAN is unconditional (num_classes=0) but got y; build it with "
                    "num_classes=K to condition on a class label."
                )
            return None
        if y is None:
            raise ConfigError(
                f"this conditional GAN (num_classes={self.num_classes}) needs y, int64 class "
                f"labels [N] in [0, {self.num_classes})."
            )
        if y.shape != (n,):
            raise ShapeError(f"y must be class labels of shape [{n}]; got {list(y.shape)}.")
        return F.one_hot(y.long().to(device), self.num_classes).float()

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x = G(z [, y]): ``z [N, latent_dim]`` (and labels ``y [N]``) -> ``[N, *data_shape]``
        (with gradients; :meth:`generate` and :meth:`sample` draw z for you)."""
        if z.dim() != 2 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"z must be [N, {self.latent_dim}]; got {list(z.shape)}.")
        h = self._onehot(y, z.shape[0], z.device)
        out = self.generator(z if h is None else torch.cat([z, h.to(z.dtype)], -1))
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def score(
        self, x: torch.Tensor, y: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The critic's raw scores ``[N]`` of ``x`` (with ``y`` if conditional; with the code
        ``z`` for a BiGAN)."""
        parts = []
        h = self._onehot(y, x.shape[0], x.device)
        if h is not None:
            parts.append(h)
        if self.has_encoder:
            if z is None:
                raise ConfigError("a BiGAN critic scores (x, z) pairs; pass z.")
            parts.append(z)
        return self.critic(x, torch.cat(parts, -1) if parts else None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = E(x) ``[N, latent_dim]`` (BiGAN); a plain GAN has no encoder and says so."""
        if not self.has_encoder:
            raise ConfigError(
                "a GAN without an encoder cannot encode an image: G maps z to x and nothing "
                "maps x back (the lecture's point). Build it with encoder=True (BiGAN/ALI; "
                "pyro-gen train --model gan --encoder) to learn E(x) alongside G."
            )
        check_data_shape(x, self.data_shape)
        loc, _ = self.encoder(x)
        return loc

    # -- the Pyro program ----------------------------------------------------------------------
    def model(self, x: torch.Tensor, *, y: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ N(0, I) per datapoint under the ``"data"`` plate, y observed (conditional),
        x = G(z, y) as a deterministic site. ``x`` sets only the plate's size."""
        n = x.shape[0]
        zeros = x.new_zeros(self.latent_dim)
        with pyro.plate(DATA_PLATE, n, device=x.device):
            z = pyro.sample("z", dist.Normal(zeros, zeros + 1).to_event(1))
            if self.num_classes:
                probs = x.new_full((self.num_classes,), 1.0 / self.num_classes)
                y = pyro.sample("y", dist.Categorical(probs), obs=y)
            return pyro.deterministic("x", self.decode(z, y), event_dim=len(self.data_shape))

    def guide(self, x: torch.Tensor, *, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """Nothing for a plain GAN; z = E(x) as a point mass for a BiGAN."""
        if not self.has_encoder:
            return None
        with pyro.plate(DATA_PLATE, x.shape[0], device=x.device):
            return pyro.sample("z", dist.Delta(self.encode(x)).to_event(1))

    # -- conveniences --------------------------------------------------------------------------
    def _labels(self, y, n: int, device) -> torch.Tensor | None:
        """Class labels ``[n]`` from None (classes in turn 0, 1, ..., K−1, 0, ...), an int or a
        string index, a tensor ``[n]``, or ``{"label": value}`` (as ``pyro-gen generate --attr
        label=3`` passes)."""
        if not self.num_classes:
            if y:
                raise ConfigError(
                    f"this GAN is unconditional (num_classes=0); it takes no attributes, got {y!r}."
                )
            return None
        if isinstance(y, dict):
            unknown = [k for k in y if k != "label"]
            if unknown:
                raise ConfigError(f"a conditional GAN has one attribute, 'label'; got {unknown}.")
            y = y.get("label")
        if y is None:
            return torch.arange(n, device=device) % self.num_classes
        if isinstance(y, torch.Tensor) and y.dim() == 1:
            return y.to(device).long()
        try:
            label = int(y)
        except (TypeError, ValueError):
            raise ConfigError(
                f"label must be a class index in [0, {self.num_classes}); got {y!r}."
            ) from None
        if not 0 <= label < self.num_classes:
            raise ConfigError(f"label must be in [0, {self.num_classes}); got {label}.")
        return torch.full((n,), label, device=device, dtype=torch.long)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        y=None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        mean: bool = False,
        z: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` images x = G(z [, y]) ``[n, *data_shape]``, z ~ N(0, I) (or the given ``z``
        ``[n, latent_dim]``). A conditional GAN takes labels ``y``: an index, a tensor ``[n]``
        or ``{"label": index}`` (default: classes in turn). ``mean`` is accepted for the VAE's
        signature and changes nothing (x is a deterministic function of z). Pass ``seed`` or a
        ``torch.Generator`` for reproducible draws."""
        if int(n) < 1:
            raise ConfigError(f"the number of samples must be >= 1; got {n}.")
        n, device = int(n), self.device
        generator = make_generator(seed, generator, device)
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        elif tuple(z.shape) != (n, self.latent_dim):
            raise ShapeError(f"z must have shape [{n}, {self.latent_dim}]; got {list(z.shape)}.")
        return self.decode(z, self._labels(y, n, device))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        mean: bool = False,
    ) -> torch.Tensor:
        """``n`` draws x = G(z), z ~ N(0, I) (a conditional GAN: classes in turn); see
        :meth:`generate`."""
        return self.generate(n, None, seed=seed, generator=generator, mean=mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """G(E(x)) for a BiGAN (ConfigError for a GAN without an encoder). A BiGAN's
        reconstructions resemble x only semantically: E and G invert each other only at the
        game's optimum (Donahue et al. 2017, Thm. 2)."""
        return self.decode(self.encode(x))
