"""A judge: a classifier/regressor trained on real data that reads attributes off images.

It measures what a generative model was asked to do (attribute control accuracy of a
conditional model, the flip rate of latent arithmetic) and gives features for sample-quality
distances (Fréchet distance on ``Judge.features``). One network with one output head per
target: ``"categorical"`` (int64 ``[N]`` class indices, cross-entropy), ``"binary"`` ({0, 1}
``[N]``, logistic loss) or ``"continuous"`` (float ``[N]``, squared error on the standardised
value). The judge is plain torch (Adam over minibatches), not a Pyro program.

A judge's accuracy on real test images is the ceiling a generator can be held to: report a
generator's judged accuracy beside ``judge.score(x_test, y_test)``.

>>> import torch
>>> x = torch.zeros(40, 6); x[:20, 0] = 1.0
>>> y = (x[:, 0] > 0).long()
>>> judge = train_judge(x, {"on": y}, epochs=30, batch_size=10, hidden=8, hidden_layers=())
>>> judge.score(x, {"on": y})
{'on_accuracy': 1.0}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from pyro_gen.device import resolve_device
from pyro_gen.errors import CheckpointError, ConfigError, DataError, ShapeError, did_you_mean
from pyro_gen.io import read_json, write_json
from pyro_gen.models.persistence import load_tensors, save_tensors
from pyro_gen.nn.classifier import Classifier

__all__ = ["Judge", "JudgeScore", "JUDGE_KINDS", "train_judge", "load_judge"]

JUDGE_KINDS = ("categorical", "binary", "continuous")
FORMAT = "pyro_gen/judge/1"
CONFIG = "judge.json"
WEIGHTS = "judge.safetensors"


# a float target of whole numbers with at most this many distinct values is not taken for a
# regression target without kinds={name: "continuous"}: it is most likely class indices
MAX_CLASS_LIKE = 20


def _infer_kind(name: str, y: torch.Tensor) -> str:
    if y.dtype == torch.bool:
        return "binary"
    if not torch.is_floating_point(y):
        return "categorical"
    finite = y[torch.isfinite(y)]
    if finite.numel() and torch.equal(finite, finite.round()):
        distinct = finite.unique()
        if len(distinct) <= MAX_CLASS_LIKE:
            shown = ", ".join(f"{v:g}" for v in distinct.tolist())
            kind = "binary" if set(distinct.tolist()) <= {0.0, 1.0} else "categorical"
            raise ConfigError(
                f"target {name!r} is a float tensor holding only whole numbers "
                f"({len(distinct)} distinct: {shown}), which looks like class indices or flags, "
                f"not a regression target; say which: kinds={{{name!r}: {kind!r}}} (or "
                f"kinds={{{name!r}: 'continuous'}} for a regression)."
            )
    return "continuous"


class JudgeScore(dict):
    """:meth:`Judge.score`'s result: keys ``"<target>_accuracy"`` (categorical, binary; a
    fraction in [0, 1]) and ``"<target>_mae"`` (continuous; mean absolute error in the
    target's units). Looking up a bare target name (``score["shape"]``) also works and gives
    the same number, for callers written before the keys said what they hold."""

    def __missing__(self, key: str) -> float:
        for suffix in ("_accuracy", "_mae"):
            if isinstance(key, str) and f"{key}{suffix}" in self:
                return self[f"{key}{suffix}"]
        raise KeyError(key)


def _check_target(name: str, kind: str, y: torch.Tensor, n: int, classes: int | None) -> None:
    if not isinstance(y, torch.Tensor):
        raise DataError(f"target {name!r} must be a torch.Tensor; got {type(y).__name__}.")
    if y.dim() != 1 or len(y) != n:
        raise ShapeError(
            f"target {name!r} must have shape [{n}] (one value per image); got {list(y.shape)}."
        )
    if kind == "categorical":
        if torch.is_floating_point(y) and not torch.equal(y, y.round()):
            raise DataError(f"categorical target {name!r} holds non-integer values.")
        if n and (int(y.min()) < 0 or (classes is not None and int(y.max()) >= classes)):
            top = "" if classes is None else f" < {classes}"
            raise DataError(
                f"categorical target {name!r} lies in [{int(y.min())}, {int(y.max())}]; class "
                f"indices must be 0 <= y{top}."
            )
    elif kind == "binary":
        if not bool(((y == 0) | (y == 1)).all()):
            raise DataError(f"binary target {name!r} must hold only 0 and 1.")
    elif not bool(torch.isfinite(y.float()).all()):
        raise DataError(f"continuous target {name!r} holds NaN or Inf.")


class Judge:
    """A trained classifier/regressor with one head per target (build it with
    :func:`train_judge`, or :func:`load_judge`).

    ``heads`` lists dicts ``{"name", "kind", "size", "mean", "std"}``: ``size`` is the number
    of classes (categorical), else 1; ``mean``/``std`` standardise a continuous target.
    """

    def __init__(
        self,
        network: Classifier,
        heads: Sequence[Mapping[str, Any]],
        network_config: Mapping[str, Any],
    ) -> None:
        self.network = network.eval()
        self.heads = [dict(h) for h in heads]
        self.network_config = dict(network_config)
        offset = 0
        self._slices: dict[str, slice] = {}
        for h in self.heads:
            self._slices[h["name"]] = slice(offset, offset + int(h["size"]))
            offset += int(h["size"])

    # -- what it knows ---------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """The targets' names, in head order."""
        return tuple(h["name"] for h in self.heads)

    @property
    def kinds(self) -> dict[str, str]:
        """Name -> ``"categorical"``, ``"binary"`` or ``"continuous"``."""
        return {h["name"]: h["kind"] for h in self.heads}

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.network.data_shape

    def metric(self, name: str) -> str:
        """``"accuracy"`` (categorical, binary) or ``"mae"`` (continuous) for target ``name``."""
        return "mae" if self._head(name)["kind"] == "continuous" else "accuracy"

    def _head(self, name: str) -> dict:
        for h in self.heads:
            if h["name"] == name:
                return h
        raise ConfigError(
            f"the judge has no target {name!r}; it has {list(self.names)}."
            + did_you_mean(name, self.names)
        )

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # -- reading images --------------------------------------------------------------------------
    @torch.no_grad()
    def _outputs(self, x: torch.Tensor, fn, batch_size: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"x must be a torch.Tensor; got {type(x).__name__}.")
        if tuple(x.shape[1:]) != self.data_shape:
            raise ShapeError(
                f"the judge reads images of shape {list(self.data_shape)}, i.e. x of shape "
                f"[N, {', '.join(map(str, self.data_shape))}]; got {list(x.shape)}."
            )
        self.network.eval()
        out = [
            fn(x[i : i + batch_size].to(self.device, torch.float32)).cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out) if out else fn(x.new_zeros(0, *self.data_shape).to(self.device))

    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The network's feature layer ``[N, F]`` (e.g. for a Fréchet distance), on the CPU."""
        return self._outputs(x, self.network.features, batch_size)

    def probabilities(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
        """Class probabilities: ``[N, K]`` per categorical target, P(1) ``[N]`` per binary one."""
        out = self._outputs(x, self.network, batch_size)
        probs = {}
        for h in self.heads:
            o = out[:, self._slices[h["name"]]]
            if h["kind"] == "categorical":
                probs[h["name"]] = o.softmax(-1)
            elif h["kind"] == "binary":
                probs[h["name"]] = o[:, 0].sigmoid()
        return probs

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
        """Per target ``[N]``: the most probable class (int64) for categorical and binary
        targets, the predicted value (float, the target's units) for continuous ones."""
        out = self._outputs(x, self.network, batch_size)
        pred = {}
        for h in self.heads:
            o = out[:, self._slices[h["name"]]]
            if h["kind"] == "categorical":
                pred[h["name"]] = o.argmax(-1)
            elif h["kind"] == "binary":
                pred[h["name"]] = (o[:, 0] > 0).long()
            else:
                pred[h["name"]] = o[:, 0] * h["std"] + h["mean"]
        return pred

    def score(
        self, x: torch.Tensor, targets: Mapping[str, torch.Tensor], batch_size: int = 1000
    ) -> JudgeScore:
        """Accuracy (fraction in [0, 1]) per categorical/binary target, key
        ``"<name>_accuracy"``, and mean absolute error (the target's units) per continuous one,
        key ``"<name>_mae"``, for the targets given (a subset is fine); see :class:`JudgeScore`
        (a bare name is looked up too)."""
        for name in targets:
            self._head(name)
        pred = self.predict(x, batch_size)
        result = JudgeScore()
        for name, y in targets.items():
            y = torch.as_tensor(y)
            if y.shape != (len(x),):
                raise ShapeError(
                    f"target {name!r} must have shape [{len(x)}]; got {list(y.shape)}."
                )
            key = f"{name}_{self.metric(name)}"
            if self._head(name)["kind"] == "continuous":
                result[key] = float((pred[name] - y.float()).abs().mean())
            else:
                result[key] = float((pred[name] == y.long()).float().mean())
        return result

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``judge.json`` (network config and heads) and ``judge.safetensors`` into the
        folder ``path`` (created); returns the folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_tensors(path / WEIGHTS, self.network.state_dict())
        write_json(
            path / CONFIG, {"format": FORMAT, "network": self.network_config, "heads": self.heads}
        )
        return path


def load_judge(path: str | os.PathLike, device: str | torch.device = "cpu") -> Judge:
    """A judge saved by :meth:`Judge.save` (a folder holding judge.json + judge.safetensors)."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} holds no {CONFIG}; save a judge there with Judge.save.")
    cfg = read_json(path / CONFIG, "judge config")
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path / CONFIG} is not a pyro_gen judge (format {FORMAT}).")
    net = Classifier(**cfg["network"])
    tensors, _ = load_tensors(path / WEIGHTS)
    net.load_state_dict(tensors)
    return Judge(net.to(resolve_device(device)), cfg["heads"], cfg["network"])


def train_judge(
    x: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    kinds: Mapping[str, str] | None = None,
    *,
    num_classes: Mapping[str, int] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    network: str = "auto",
    hidden: int = 128,
    channels: Sequence[int] = (32, 64),
    hidden_layers: Sequence[int] = (256,),
    dropout: float = 0.0,
    convs_per_stage: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> Judge:
    """Train a judge on real images ``x`` ``[N, *shape]`` and named ``targets`` (each ``[N]``).

    ``kinds`` gives each target's kind (``"categorical"``, ``"binary"``, ``"continuous"``);
    missing ones are inferred: integer dtype -> categorical, bool -> binary, float ->
    continuous, except that a float target holding only whole numbers with at most
    ``MAX_CLASS_LIKE`` (20) distinct values is refused (ConfigError): it is most likely class
    indices, so say ``kinds={name: "categorical"}`` (or ``"binary"``, or ``"continuous"``).
    A categorical target's class count is ``num_classes[name]`` or ``max + 1``.
    The loss is the sum over heads of cross-entropy (nats), logistic loss (nats) and half the
    squared error of the standardised value. ``seed`` fixes the initial weights and the order
    of the minibatches; the global random state is left as it was. ``device``: None/"auto"
    uses CUDA when present.

    Raises DataError/ShapeError (targets that do not fit ``x``, values outside their kind's
    support, NaN) and ConfigError (an unknown kind, bad settings).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or len(x) == 0:
        raise DataError("x must be a non-empty torch.Tensor [N, *shape].")
    if not torch.isfinite(x).all():
        raise DataError("x holds NaN or Inf values; the judge needs finite images.")
    if not targets:
        raise ConfigError("train_judge needs at least one target, e.g. {'digit': labels}.")
    if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0:
        raise ConfigError(
            f"epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}."
        )
    kinds = dict(kinds or {})
    unknown = [k for k in kinds if k not in targets]
    if unknown:
        raise ConfigError(f"kinds names {unknown}, which are not targets {list(targets)}.")
    num_classes = dict(num_classes or {})
    n = len(x)
    heads = []
    for name, y in targets.items():
        kind = kinds.get(name) or _infer_kind(name, torch.as_tensor(y))
        if kind not in JUDGE_KINDS:
            raise ConfigError(
                f"unknown kind {kind!r} for target {name!r}; choose one of "
                f"{JUDGE_KINDS}." + did_you_mean(str(kind), JUDGE_KINDS)
            )
        classes = num_classes.get(name)
        _check_target(name, kind, y, n, classes)
        head: dict[str, Any] = {"name": str(name), "kind": kind, "size": 1, "mean": 0.0, "std": 1.0}
        if kind == "categorical":
            head["size"] = int(classes if classes is not None else int(y.max()) + 1)
            if head["size"] < 2:
                raise DataError(
                    f"categorical target {name!r} has a single class; a judge needs at least two."
                )
        elif kind == "continuous":
            yf = y.double()
            head["mean"] = float(yf.mean())
            std = float(yf.std()) if n > 1 else 0.0
            head["std"] = std if std > 0 and math.isfinite(std) else 1.0
        heads.append(head)
    dev = resolve_device("auto" if device is None else device)
    config = {
        "data_shape": list(x.shape[1:]),
        "out_features": sum(h["size"] for h in heads),
        "network": network,
        "hidden": int(hidden),
        "channels": [int(c) for c in channels],
        "hidden_layers": [int(h) for h in hidden_layers],
        "dropout": float(dropout),
        "convs_per_stage": int(convs_per_stage),
    }
    batch_size = min(int(batch_size), n)
    ys = [targets[h["name"]] for h in heads]
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(seed))
        net = Classifier(**config).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        g = torch.Generator().manual_seed(int(seed))
        net.train()
        for _ in range(int(epochs)):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                out = net(x[idx].to(dev, torch.float32))
                loss = out.new_zeros(())
                offset = 0
                for h, y in zip(heads, ys):
                    o = out[:, offset : offset + h["size"]]
                    offset += h["size"]
                    t = y[idx].to(dev)
                    if h["kind"] == "categorical":
                        loss = loss + F.cross_entropy(o, t.long())
                    elif h["kind"] == "binary":
                        loss = loss + F.binary_cross_entropy_with_logits(o[:, 0], t.float())
                    else:
                        z = (t.float() - h["mean"]) / h["std"]
                        loss = loss + 0.5 * F.mse_loss(o[:, 0], z)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return Judge(net.eval(), heads, config)
