"""The Mutual Information Gap (MIG; Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of
Disentanglement in VAEs", eq. 6), estimated as in Locatello et al. 2019's disentanglement_lib:

    MIG = 1/K Σ_k  ( I(z_{j_k}; v_k) − max_{j ≠ j_k} I(z_j; v_k) ) / H(v_k),
    j_k = argmax_j I(z_j; v_k),

for latent codes z (the encoder's means, ``[N, D]``) and ground-truth factors v (``[N, K]``).
Each code dimension is discretised into ``num_bins`` equal-width bins between its minimum and
maximum (disentanglement_lib's ``histogram_discretize``, 20 bins), each continuous factor the
same way, a discrete factor (integer values) keeps its values; I and H are the plug-in
estimates of the discrete distributions, in nats. MIG lies in [0, 1]: 1 when each factor is
read off one dimension alone, 0 when no dimension knows a factor better than another one does.

Small-sample bias: the plug-in estimate of mutual information is biased upward. For two
independent variables with ``B_a`` and ``B_b`` occupied bins it is, to first order,
``(B_a − 1)(B_b − 1) / (2N)`` nats in expectation instead of 0 (Miller 1955; Panzeri & Treves
1996, "Analytical estimates of limited sampling biases in different information measures"):
with 20 × 20 bins that is 0.18 nats at N = 1,000 against a factor entropy of at most
log 20 ≈ 3.0 nats. The bias adds to every dimension's I(z_j; v_k) alike, so it cancels in part
in the gap, but the runner-up (a max over noisy estimates) and the normalised terms still move,
and a factor no dimension knows gets a spurious positive I. :func:`mutual_information_gap`
warns (:class:`MIGBiasWarning`) when this first-order bias exceeds ``BIAS_TOLERANCE`` (2%) of a
factor's entropy, i.e. when there are too few datapoints per joint bin; give more datapoints
(about ``(B_a − 1)(B_b − 1) / (2 · 0.02 · H(v_k))``) or fewer bins. The bias per pair is in
``MIGResult.plug_in_bias``.

>>> import torch
>>> v = torch.randint(4, (2000, 2)).float()
>>> round(mutual_information_gap(v, v, discrete=[True, True]).score, 2)
1.0
>>> round(mutual_information_gap(torch.cat([v[:, :1], v[:, :1]], 1), v[:, :1]).score, 2)
0.0
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.latent._model import encode_mean

__all__ = [
    "BIAS_TOLERANCE",
    "MIGBiasWarning",
    "MIGResult",
    "mutual_information_gap",
    "model_mig",
    "discretize",
    "discrete_mutual_info",
]

# warn when the plug-in estimator's first-order bias exceeds this fraction of a factor's entropy
BIAS_TOLERANCE = 0.02


class MIGBiasWarning(UserWarning):
    """Too few datapoints per joint bin: the plug-in mutual information (and so MIG) is biased
    upward by a noticeable fraction of a factor's entropy (see the module docstring)."""


@dataclass
class MIGResult:
    """``score`` (the MIG, in [0, 1]); per factor: ``gap`` (normalised), the best dimension
    ``top_dim``; ``mutual_info`` ``[D, K]`` and ``factor_entropy`` ``[K]`` in nats;
    ``plug_in_bias`` ``[D, K]``: the first-order upward bias of each mutual-information estimate,
    ``(B_a − 1)(B_b − 1) / (2N)`` nats (occupied bins of code dimension and factor)."""

    score: float
    gap: torch.Tensor
    top_dim: torch.Tensor
    mutual_info: torch.Tensor
    factor_entropy: torch.Tensor
    factor_names: tuple[str, ...] = field(default_factory=tuple)
    plug_in_bias: torch.Tensor | None = None

    def table(self) -> list[dict]:
        """One row per factor: name, entropy, best dimension, its MI, the runner-up's, gap."""
        rows = []
        for k in range(self.mutual_info.shape[1]):
            mi = self.mutual_info[:, k].sort(descending=True).values
            rows.append(
                {
                    "factor": self.factor_names[k] if self.factor_names else str(k),
                    "entropy": float(self.factor_entropy[k]),
                    "top_dim": int(self.top_dim[k]),
                    "mi_top": float(mi[0]),
                    "mi_second": float(mi[1]) if len(mi) > 1 else 0.0,
                    "gap": float(self.gap[k]),
                }
            )
        return rows


def discretize(values: torch.Tensor, num_bins: int = 20) -> torch.Tensor:
    """Column-wise equal-width bins between each column's min and max: int64 ``[N, C]`` in
    ``0..num_bins-1`` (a constant column is all 0)."""
    if values.dim() != 2:
        raise ShapeError(f"expected a [N, C] table; got shape {list(values.shape)}.")
    if int(num_bins) < 2:
        raise ConfigError(f"num_bins must be >= 2; got {num_bins}.")
    v = values.double()
    lo, hi = v.min(0).values, v.max(0).values
    width = (hi - lo).clamp_min(1e-12)
    return ((v - lo) / width * num_bins).floor().clamp(0, num_bins - 1).long()


def _codes(labels: torch.Tensor) -> torch.Tensor:
    """Map each column's values to 0..M-1 (M distinct values)."""
    return torch.stack([col.unique(return_inverse=True)[1] for col in labels.T], 1)


def discrete_mutual_info(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plug-in mutual information (nats) between every column of ``a`` ``[N, D]`` and of ``b``
    ``[N, K]`` (integer codes): ``[D, K]``. ``I(a; a)`` is ``H(a)``."""
    a, b = _codes(a), _codes(b)
    n = a.shape[0]
    out = torch.zeros(a.shape[1], b.shape[1], dtype=torch.float64)
    for j in range(a.shape[1]):
        na = int(a[:, j].max()) + 1
        for k in range(b.shape[1]):
            nb = int(b[:, k].max()) + 1
            joint = torch.bincount(a[:, j] * nb + b[:, k], minlength=na * nb).reshape(na, nb)
            p = joint.double() / n
            pa, pb = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
            nz = p > 0
            out[j, k] = (p[nz] * (p[nz] / (pa * pb).expand_as(p)[nz]).log()).sum()
    return out.clamp_min(0.0)


def mutual_information_gap(
    codes: torch.Tensor,
    factors: torch.Tensor,
    *,
    num_bins: int = 20,
    discrete: Sequence[bool] | None = None,
    factor_names: Sequence[str] = (),
) -> MIGResult:
    """MIG of latent ``codes`` ``[N, D]`` (e.g. encoder means) for ``factors`` ``[N, K]``.

    Args:
        num_bins: equal-width bins per code dimension (and per continuous factor).
        discrete: per factor, whether it is categorical (kept as is); default: a factor is
            discrete when all its values are integers and it has at most ``num_bins`` of them.
        factor_names: names for :meth:`MIGResult.table`.

    Raises ShapeError (shapes), DataError (NaN/Inf, fewer than 2 rows, a factor that is
    constant: its entropy is 0 and MIG divides by it) and ConfigError (``num_bins``, a
    ``discrete``/``factor_names`` list of the wrong length). Warns :class:`MIGBiasWarning`
    when N is too small for the bins: the plug-in estimate's first-order bias
    ``(B_a − 1)(B_b − 1) / (2N)`` nats exceeds ``BIAS_TOLERANCE`` of a factor's entropy.
    """
    if codes.dim() != 2 or factors.dim() != 2 or codes.shape[0] != factors.shape[0]:
        raise ShapeError(
            f"codes must be [N, D] and factors [N, K] with the same N; got "
            f"{list(codes.shape)} and {list(factors.shape)}."
        )
    if codes.shape[0] < 2:
        raise DataError("MIG needs at least 2 datapoints.")
    for what, t in (("codes", codes), ("factors", factors)):
        if not torch.isfinite(t.double()).all():
            raise DataError(f"{what} hold NaN or Inf values; remove those rows first.")
    codes, factors = codes.detach().cpu(), factors.detach().cpu()
    k = factors.shape[1]
    if discrete is None:
        discrete = [
            bool((col == col.round()).all()) and col.unique().numel() <= num_bins
            for col in factors.T
        ]
    if len(discrete) != k:
        raise ConfigError(f"discrete needs one flag per factor ({k}); got {len(discrete)}.")
    if factor_names and len(factor_names) != k:
        raise ConfigError(f"factor_names needs {k} names; got {len(factor_names)}.")
    binned = discretize(factors, num_bins)
    v = torch.stack([factors[:, i].long() if discrete[i] else binned[:, i] for i in range(k)], 1)
    entropy = discrete_mutual_info(v, v).diagonal().clone()
    if (entropy <= 0).any():
        bad = int((entropy <= 0).nonzero()[0])
        raise DataError(f"factor {bad} is constant (entropy 0): MIG is undefined for it.")
    code_bins = discretize(codes, num_bins)
    mi = discrete_mutual_info(code_bins, v)  # [D, K]
    bias = _plug_in_bias(code_bins, v)
    _warn_if_biased(bias, entropy, len(v), num_bins, factor_names)
    if mi.shape[0] == 1:
        top, second = mi[0], torch.zeros(k, dtype=mi.dtype)
        top_dim = torch.zeros(k, dtype=torch.long)
    else:
        ranked = mi.sort(0, descending=True)
        top, second, top_dim = ranked.values[0], ranked.values[1], ranked.indices[0]
    gap = (top - second) / entropy
    return MIGResult(
        score=float(gap.mean()),
        gap=gap,
        top_dim=top_dim,
        mutual_info=mi,
        factor_entropy=entropy,
        factor_names=tuple(factor_names),
        plug_in_bias=bias,
    )


def _plug_in_bias(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """First-order bias (nats) of the plug-in mutual information of every column pair,
    ``(B_a − 1)(B_b − 1) / (2N)`` with ``B`` the occupied values of each column (Miller 1955;
    Panzeri & Treves 1996): ``[D, K]``."""
    occupied_a = torch.tensor([col.unique().numel() for col in a.T], dtype=torch.float64)
    occupied_b = torch.tensor([col.unique().numel() for col in b.T], dtype=torch.float64)
    return (occupied_a - 1)[:, None] * (occupied_b - 1)[None, :] / (2 * a.shape[0])


def _warn_if_biased(bias, entropy, n: int, num_bins: int, names: Sequence[str]) -> None:
    relative = bias.max(0).values / entropy  # [K], worst dimension per factor
    k = int(relative.argmax())
    if float(relative[k]) <= BIAS_TOLERANCE:
        return
    name = names[k] if names else str(k)
    needed = int(float(bias[:, k].max()) * n / (BIAS_TOLERANCE * float(entropy[k]))) + 1
    warnings.warn(
        f"MIG from {n} datapoints with {num_bins} bins: the plug-in mutual information is "
        f"biased upward by about {float(bias[:, k].max()):.3f} nats for factor {name!r} "
        f"({100 * float(relative[k]):.1f}% of its entropy {float(entropy[k]):.2f} nats; "
        f"tolerance {100 * BIAS_TOLERANCE:g}%). Use about {needed} datapoints or more, or "
        "fewer bins (num_bins), for a MIG this bias does not move.",
        MIGBiasWarning,
        stacklevel=3,
    )


def model_mig(
    model,
    x: torch.Tensor,
    factors: torch.Tensor,
    *,
    num_bins: int = 20,
    discrete: Sequence[bool] | None = None,
    factor_names: Sequence[str] = (),
    batch_size: int = 1000,
) -> MIGResult:
    """MIG of a model's guide means E_q[z | x] (``model.encode(x) -> (loc, scale)``, as VAE
    has) for ``factors`` ``[N, K]`` of the images ``x`` ``[N, *data_shape]``."""
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        codes = encode_mean(model, x, batch_size=batch_size)
    finally:
        if hasattr(model, "train"):
            model.train(was)
    return mutual_information_gap(
        codes, factors, num_bins=num_bins, discrete=discrete, factor_names=factor_names
    )
