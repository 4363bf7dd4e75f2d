"""MADE: a masked autoencoder whose output for variable d depends only on variables < d.

Germain, Gregor, Murray & Larochelle (2015), "MADE: Masked Autoencoder for Distribution
Estimation", ICML, Sec. 4 (mask construction, eq. 12-13). Each hidden unit k gets a degree
m(k) in {1, ..., D-1}; a weight from a unit of degree a to a hidden unit of degree b is kept
iff b >= a, and to an output of variable d (degree d) iff d > a. Inputs have degrees 1..D in
the (fixed) variable order, so output d sees inputs 1..d-1 only.

Variables may be *groups*: each of the ``num_vars`` variables has ``in_per_var`` inputs (e.g.
1 for a binary pixel, K for a one-hot code index) and ``out_per_var`` outputs (1 logit, or K
logits of a categorical); a group's inputs and outputs share the variable's degree. Inputs and
outputs are laid out variable-major: ``[..., num_vars * in_per_var]`` with variable ``d``'s
entries at ``d*in_per_var : (d+1)*in_per_var``.

Plain torch (no Pyro). Degrees of hidden units are drawn once from a seeded generator
(``seed``) and stored as buffers, so a saved model rebuilds the same masks.

``num_masks = M > 1`` keeps M connectivity patterns (Germain et al. Sec. 4.2,
"connectivity-agnostic training"): mask m's hidden degrees come from ``seed + m`` (mask 0 is
the single-mask MADE's), the variable order is the same for all, and ``forward(x, mask=m)``
uses pattern m. Each pattern is an autoregressive network over the same order, so each is a
normalised distribution and so is their uniform mixture (the "mask ensemble" of their Table 6).

>>> import torch
>>> made = MADE(num_vars=4, hidden=(16,))
>>> made(torch.zeros(2, 4)).shape
torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_gen.errors import ConfigError, ShapeError
from pyro_gen.nn.mlp import ACTIVATIONS

__all__ = ["MADE", "MaskedLinear", "made_degrees"]


class MaskedLinear(nn.Linear):
    """``y = x @ (W * mask).T + b`` with a fixed 0/1 ``mask`` buffer ``[out, in]``, or
    ``[M, out, in]`` for M masks of which ``forward(x, m)`` uses the m-th."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor) -> None:
        super().__init__(in_features, out_features)
        if tuple(mask.shape[-2:]) != (out_features, in_features) or mask.dim() not in (2, 3):
            raise ConfigError(
                f"mask shape {list(mask.shape)} != [out, in] = [{out_features}, {in_features}] "
                f"(or [M, out, in] for M masks)."
            )
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor, m: int = 0) -> torch.Tensor:
        mask = self.mask if self.mask.dim() == 2 else self.mask[m]
        return F.linear(x, self.weight * mask, self.bias)


def made_degrees(
    num_vars: int, hidden: Sequence[int], seed: int = 0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Degrees (1-based) of the variables ``[num_vars]`` and of each hidden layer's units.

    Hidden degrees cycle through 1..D-1 (every degree present when the layer is wide enough,
    the "deterministic" assignment of Germain et al.) in a seeded random permutation; with
    D = 1 there is nothing to condition on and hidden units get degree 0 (they see no input).
    """
    g = torch.Generator().manual_seed(int(seed))
    var = torch.arange(1, num_vars + 1)
    layers = []
    for h in hidden:
        if num_vars > 1:
            deg = torch.arange(h) % (num_vars - 1) + 1
            deg = deg[torch.randperm(h, generator=g)]
        else:
            deg = torch.zeros(h, dtype=torch.long)
        layers.append(deg)
    return var, layers


class MADE(nn.Module):
    """Autoregressive network ``[..., num_vars*in_per_var] -> [..., num_vars*out_per_var]``.

    Output group d depends only on input groups < d (group 0's outputs are constants: a learned
    bias). ``direct=True`` adds a masked input->output connection (Germain et al. Sec. 4.4).

    Args:
        num_vars: D, the number of variables (pixels, code positions).
        hidden: widths of the hidden layers (at least one).
        in_per_var, out_per_var: entries per variable in the input and the output.
        activation: ``"relu"``, ``"tanh"``, ``"elu"`` or ``"softplus"``.
        direct: add the masked direct connection.
        seed: seeds the hidden degrees (mask m: ``seed + m``).
        num_masks: M connectivity patterns over the same variable order (see the module doc).
        context_features: C > 0 adds an unmasked ``Linear(C, hidden[0])`` of a context
            ``[..., C]`` (e.g. a latent's features) to the first hidden layer, so
            ``forward(x, context=c)`` is autoregressive in x given c. Outputs 2..D depend on
            c through the hidden units; output 1 sees no hidden unit and stays a constant (add
            c's own term to the logits for a conditional first variable, as
            :class:`~pyro_gen.models.likelihoods.AutoregressiveLikelihood` does).
    """

    def __init__(
        self,
        num_vars: int,
        hidden: Sequence[int] = (500,),
        in_per_var: int = 1,
        out_per_var: int = 1,
        activation: str = "relu",
        direct: bool = True,
        seed: int = 0,
        num_masks: int = 1,
        context_features: int = 0,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if (
            isinstance(context_features, bool)
            or int(context_features) != context_features
            or context_features < 0
        ):
            raise ConfigError(
                f"context_features must be an integer >= 0; got {context_features!r}."
            )
        if int(num_vars) < 1 or not hidden or min(hidden) < 1:
            raise ConfigError(
                f"MADE needs num_vars >= 1 and at least one hidden width >= 1; got "
                f"num_vars={num_vars}, hidden={list(hidden)}."
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose {sorted(ACTIVATIONS)}.")
        if isinstance(num_masks, bool) or int(num_masks) != num_masks or num_masks < 1:
            raise ConfigError(f"num_masks must be an integer >= 1; got {num_masks!r}.")
        self.num_vars, self.in_per_var, self.out_per_var = int(num_vars), in_per_var, out_per_var
        self.num_masks = int(num_masks)
        patterns = [made_degrees(self.num_vars, hidden, seed + m) for m in range(self.num_masks)]
        var = patterns[0][0]
        d_in = var.repeat_interleave(in_per_var)
        d_out = var.repeat_interleave(out_per_var)

        def stacked(masks: list[torch.Tensor]) -> torch.Tensor:
            return masks[0] if len(masks) == 1 else torch.stack(masks)

        blocks: list[nn.Module] = []
        for i in range(len(hidden)):
            # input -> hidden: keep iff deg(hidden) >= deg(input); hidden -> hidden alike
            masks = []
            for _, layers in patterns:
                a = d_in if i == 0 else layers[i - 1]
                masks.append((layers[i][:, None] >= a[None, :]).long())
            blocks += [MaskedLinear(masks[0].shape[1], hidden[i], stacked(masks))]
            blocks.append(ACTIVATIONS[activation]())
        out = stacked([_out_mask(d_out, layers[-1]) for _, layers in patterns])
        blocks.append(MaskedLinear(hidden[-1], len(d_out), out))
        self.net = nn.Sequential(*blocks)
        self.direct = (
            MaskedLinear(len(d_in), len(d_out), (d_out[:, None] > d_in[None, :]).long())
            if direct
            else None
        )
        self.context_features = int(context_features)
        self.context = nn.Linear(self.context_features, hidden[0]) if context_features else None

    def forward(
        self, x: torch.Tensor, mask: int = 0, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[..., num_vars*out_per_var]`` under connectivity pattern ``mask``; a MADE
        built with ``context_features = C`` needs ``context`` ``[..., C]`` (broadcast with x's
        leading dims)."""
        if not 0 <= int(mask) < self.num_masks:
            raise ConfigError(f"mask {mask} is out of range: this MADE has {self.num_masks}.")
        if (context is None) != (self.context is None):
            raise ConfigError(
                f"this MADE has context_features={self.context_features}, so it needs "
                + ("a context [..., C]" if context is None else "no context")
                + " in forward."
            )
        if context is not None and context.shape[-1] != self.context_features:
            raise ShapeError(
                f"context has {context.shape[-1]} features in its last dim (shape "
                f"{list(context.shape)}); this MADE was built with context_features="
                f"{self.context_features}."
            )
        out = x
        for i, block in enumerate(self.net):
            out = block(out, mask) if isinstance(block, MaskedLinear) else block(out)
            if i == 0 and context is not None:
                out = out + self.context(context)
        if self.direct is not None:
            out = out + self.direct(x)
        return out


def _out_mask(d_out: torch.Tensor, d_hidden: torch.Tensor) -> torch.Tensor:
    """hidden -> output: keep iff deg(output) > deg(hidden) (strict: output d sees < d)."""
    return (d_out[:, None] > d_hidden[None, :]).long()
