"""Critics (discriminators): networks that score a datapoint with one real number, and a plain
torch trainer of a binary classifier between two sample sets.

A critic maps ``x [N, *data_shape]`` (and optionally an extra vector per datapoint, ``[N, E]``:
a latent code for BiGAN/ALI or a one-hot attribute for a conditional GAN) to raw scores
``[N]``. What the score means depends on the objective: a logit for the (non-)saturating GAN and
the density-ratio trick, the argument of an f-GAN output activation, or a 1-Lipschitz function
for WGAN-GP (:mod:`pyro_gen.adversarial.objectives`).

>>> import torch
>>> critic = MLPCritic((1, 8, 8), hidden=(16,))
>>> critic(torch.zeros(5, 1, 8, 8)).shape
torch.Size([5])
>>> ConvCritic((1, 16, 16), channels=(8,), hidden=16)(torch.zeros(3, 1, 16, 16)).shape
torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_gen.errors import ShapeError
from pyro_gen.nn.heads import numel
from pyro_gen.nn.mlp import MLP

__all__ = ["MLPCritic", "ConvCritic", "train_binary_classifier"]


def _extra(x: torch.Tensor, extra: torch.Tensor | None, extra_dim: int) -> torch.Tensor | None:
    if extra_dim == 0:
        if extra is not None:
            raise ShapeError("this critic was built without extra inputs (extra_dim=0).")
        return None
    if extra is None or extra.shape != (x.shape[0], extra_dim):
        got = None if extra is None else list(extra.shape)
        raise ShapeError(
            f"this critic takes an extra input of shape [N, {extra_dim}] beside x (a latent code "
            f"or a one-hot attribute); got {got} for N = {x.shape[0]}."
        )
    return extra


class MLPCritic(nn.Module):
    """``x [N, *data_shape]`` (+ ``extra [N, extra_dim]``) -> scores ``[N]``: an MLP on the
    flattened datapoint concatenated with ``extra``. LeakyReLU(0.2) between layers (Radford et
    al. 2016); no normalisation layer, so a gradient penalty is per-sample (Gulrajani et al.
    2017, §4)."""

    def __init__(
        self, data_shape: Sequence[int], hidden: Sequence[int] = (512, 256), extra_dim: int = 0
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.extra_dim = int(extra_dim)
        sizes = [numel(self.data_shape) + self.extra_dim, *[int(h) for h in hidden]]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        e = _extra(x, extra, self.extra_dim)
        if e is not None:
            h = torch.cat([h, e.to(h.dtype)], dim=-1)
        return self.net(h).squeeze(-1)


class ConvCritic(nn.Module):
    """Images ``[N, C, H, W]`` (+ ``extra``) -> scores ``[N]``: stride-2 4x4 convolutions with
    LeakyReLU(0.2) (DCGAN's critic without batch norm), then an MLP head on the features
    concatenated with ``extra``."""

    def __init__(
        self,
        data_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        extra_dim: int = 0,
    ) -> None:
        super().__init__()
        if len(data_shape) != 3:
            raise ShapeError(
                f"a convolutional critic needs images [C, H, W]; got data_shape "
                f"{tuple(data_shape)}. Use critic='mlp' for flat data."
            )
        self.data_shape = tuple(int(s) for s in data_shape)
        self.extra_dim = int(extra_dim)
        c = self.data_shape[0]
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, int(c_out), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = int(c_out)
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, *self.data_shape)).numel()
        self.head = MLP(flat + self.extra_dim, (int(hidden),), 1, "relu")

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv(x).flatten(1)
        e = _extra(x, extra, self.extra_dim)
        if e is not None:
            h = torch.cat([h, e.to(h.dtype)], dim=-1)
        return self.head(F.leaky_relu(h, 0.2)).squeeze(-1)


def train_binary_classifier(
    net: nn.Module,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Fit ``net`` (scores = logits ``[N]``) to tell ``positives`` (label 1) from ``negatives``
    (label 0) by Adam on the class-balanced logistic loss

        L = −½ E_pos[log σ(s)] − ½ E_neg[log(1 − σ(s))]      (nats)

    (each class's mean weighted ½ whatever the sample sizes, so the optimum is
    σ(s*) = p / (p + q), Goodfellow et al. 2014, Prop. 1). Each step draws ``batch_size`` rows
    of each class (with replacement) from ``generator``. Returns the loss of every step.
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    n_pos, n_neg = positives.shape[0], negatives.shape[0]
    losses = []
    net.train()
    for _ in range(int(steps)):
        i = torch.randint(n_pos, (min(batch_size, n_pos),), generator=generator)
        j = torch.randint(n_neg, (min(batch_size, n_neg),), generator=generator)
        loss = 0.5 * (F.softplus(-net(positives[i])).mean() + F.softplus(net(negatives[j])).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses
