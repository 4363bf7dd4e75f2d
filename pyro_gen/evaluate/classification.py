"""How well a model's own classifier q(y | x) predicts the true labels or attributes of a split.

A semi-supervised model (Kingma et al. 2014's M2, :class:`~pyro_gen.models.SSVAE`) is judged by
the test accuracy of q(y | x); a conditional model whose guide infers missing attributes (a
CVAE built with ``missing=True``) has the same kind of classifier. Any model gets this, by what
it has, not by its class name:

* a method ``accuracy(x, y)`` (or ``classify(x)``, most probable label ``[N]``): scored
  against the data set's labels of the split (``Dataset.labels[split]``); key ``"accuracy"``;
* otherwise a guide that, when a conditioning entry of the model's batch (an attribute ``y_a``
  from ``batch_from_dataset``) is left out, samples it as a site of that name: its
  distribution there is q(y_a | x). Categorical: accuracy of the most probable class
  (``"<name>_accuracy"``); Bernoulli: accuracy of ``p > 0.5``; anything else: mean absolute
  error of its mean (``"<name>_mae"``, in the attribute's units).

Scores are fractions in [0, 1] (accuracy) or attribute units (MAE); none is in nats.

>>> import torch
>>> from pyro_gen.models import SSVAE
>>> m = SSVAE(data_shape=(1, 4, 4), num_classes=3, latent_dim=2, hidden=(8,))
>>> x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
>>> s = classifier_scores(m, {"x": x, "y": torch.tensor([0, 1, 2, 0, 1])})
>>> sorted(s), 0.0 <= s["accuracy"] <= 1.0
(['accuracy'], True)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pyro import poutine
from pyro.distributions import Bernoulli, Categorical

from pyro_gen.errors import PyroGenError, ShapeError
from pyro_gen.models.pair import base_distribution, forked_rng

__all__ = [
    "WHAT",
    "has_classifier",
    "classifier_batch",
    "classifier_scores",
    "describe_scores",
    "score_items",
    "classifier_note",
]

WHAT = "accuracy of q(y|x)"  # what the numbers are: the model's own classifier, not a judge
MASK_SUFFIX = "_mask"


def _by_label(model) -> bool:
    return callable(getattr(model, "accuracy", None)) or callable(getattr(model, "classify", None))


def has_classifier(model) -> bool:
    """Whether ``model`` has an ``accuracy``/``classify`` method (a label classifier q(y|x));
    a guide that infers left-out attributes is found only with data (:func:`classifier_scores`
    returns ``{}`` for a model without)."""
    return _by_label(model)


def classifier_batch(model, dataset, split: str) -> dict[str, torch.Tensor] | None:
    """``{"x": images, <target>: true values}`` to score ``model``'s q(y|x) on ``split``:
    the split's labels as ``"y"`` for a model with ``accuracy``/``classify`` (None when the split
    has none), else the model's own batch (``batch_from_dataset``: a CVAE's attributes; None
    when it holds nothing but ``"x"``). The rows are the split's, in order, so a subset drawn
    with the same seed (``pyro-gen evaluate --limit``) takes the same rows."""
    x = dataset.split(split)
    if _by_label(model):
        labels = getattr(dataset, "labels", {}).get(split)
        return None if labels is None else {"x": x, "y": labels}
    fn = getattr(model, "batch_from_dataset", None)
    if not callable(fn):
        return None
    try:
        batch = fn(dataset, split)
    except PyroGenError:  # e.g. a split without the attribute
        return None
    return batch if len(batch) > 1 else None


def _device(model) -> torch.device:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _guide_scores(model, batch: Mapping[str, torch.Tensor], batch_size: int) -> dict[str, float]:
    x = batch["x"]
    names = [k for k in batch if k != "x" and not k.endswith(MASK_SUFFIX)]
    if not names:
        return {}
    device = _device(model)
    hits: dict[str, float] = {}
    kinds: dict[str, str] = {}
    # a periodic attribute (a CVAE's spec key "period", e.g. an angle): errors wrap around
    periods = {
        a["name"]: a["period"]
        for a in getattr(model, "attributes", None) or []
        if isinstance(a, Mapping) and a.get("period")
    }
    for start in range(0, x.shape[0], batch_size):
        xs = x[start : start + batch_size].to(device)
        try:  # every attribute left out: the guide samples those it can infer from x
            tr = poutine.trace(model.guide).get_trace(xs)
        except (PyroGenError, TypeError, ValueError, KeyError):
            return {}  # attributes are required: no q(y|x) here
        for name in names:
            site = tr.nodes.get(name)
            if site is None or site["type"] != "sample" or site["is_observed"]:
                continue
            fn, truth = (
                base_distribution(site["fn"]),
                batch[name][start : start + batch_size].to(device),
            )
            if isinstance(fn, Categorical):
                kinds[name], score = "accuracy", (fn.probs.argmax(-1) == truth.long()).sum()
            elif isinstance(fn, Bernoulli):
                kinds[name], score = "accuracy", ((fn.probs > 0.5).float() == truth.float()).sum()
            else:
                error = (fn.mean - truth.float()).abs()
                if name in periods:  # 6.2 against 0.05 is 0.13 apart on a circle of 2π
                    error = error % periods[name]
                    error = torch.minimum(error, periods[name] - error)
                kinds[name], score = "mae", error.sum()
            hits[name] = hits.get(name, 0.0) + float(score)
    n = x.shape[0]
    return {f"{name}_{kinds[name]}": hits[name] / n for name in hits}


def classifier_scores(
    model, batch: Mapping[str, torch.Tensor], *, batch_size: int = 1000
) -> dict[str, float]:
    """Scores of ``model``'s own classifier q(y|x) on ``batch`` (see the module text):
    ``{"accuracy": a}`` for a label classifier, ``{"<name>_accuracy"|"<name>_mae": v}`` per
    attribute its guide infers; ``{}`` when it has no classifier. Run in eval mode without
    gradients (the mode and the random streams are left as they were: scoring during training
    changes nothing of it). Raises ShapeError when ``y`` does not have one label per
    row of ``x``."""
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with forked_rng(_device(model)):
            return _scores(model, batch, batch_size)
    finally:
        if hasattr(model, "train"):
            model.train(was)


def _scores(model, batch: Mapping[str, torch.Tensor], batch_size: int) -> dict[str, float]:
    x = batch["x"]
    if _by_label(model):
        y = batch.get("y")
        if y is None:
            return {}
        if y.shape != x.shape[:1]:
            raise ShapeError(
                f"labels y must have shape [{x.shape[0]}] (one per row of x); got {list(y.shape)}."
            )
        if callable(getattr(model, "accuracy", None)):
            return {"accuracy": float(model.accuracy(x, y))}
        guess = torch.cat(
            [model.classify(x[i : i + batch_size]).cpu() for i in range(0, x.shape[0], batch_size)]
        )
        return {"accuracy": float((guess == y.cpu()).float().mean())}
    return _guide_scores(model, batch, batch_size)


def classifier_note(model) -> dict[str, str]:
    """``{"note": text}`` when the model says its classifier's scores need a word beside them
    (an SSVAE trained with no labels: :data:`pyro_gen.models.ssvae.NO_LABELS_NOTE`), else
    ``{}``; recorded beside the scores and shown by :func:`describe_scores`."""
    note = getattr(model, "classifier_note", None)
    return {"note": note} if isinstance(note, str) and note else {}


def describe_scores(scores: Mapping[str, float], split: str = "test") -> str:
    """One line for a person: ``"test accuracy of q(y|x) 93.10%"``, or per attribute
    ``"test accuracy of q(y|x) (attributes inferred from x): shape 98.0%; test mean absolute
    error of q(y|x)'s mean: scale 0.031"``; "" for no scores. A ``"note"`` (see
    :func:`classifier_note`) follows the numbers."""
    if not scores:
        return ""
    note = scores.get("note")
    if isinstance(note, str) and note:
        rest = {k: v for k, v in scores.items() if k != "note"}
        return f"{describe_scores(rest, split)} ({note})"
    if isinstance(scores.get("accuracy"), float):
        return f"{split} {WHAT} {100 * scores['accuracy']:.2f}%"
    acc = [
        f"{k[: -len('_accuracy')]} {100 * v:.1f}%"
        for k, v in scores.items()
        if k.endswith("_accuracy") and isinstance(v, float)
    ]
    mae = [
        f"{k[: -len('_mae')]} {v:.3g}"
        for k, v in scores.items()
        if k.endswith("_mae") and isinstance(v, float)
    ]
    parts = []
    if acc:
        parts.append(f"{split} {WHAT} (attributes inferred from x): " + ", ".join(acc))
    if mae:
        parts.append(f"{split} mean absolute error of q(y|x)'s mean: " + ", ".join(mae))
    return "; ".join(parts)


def score_items(scores: Mapping) -> list[tuple[str, str]]:
    """(what, value) per score for a table: ``("accuracy of q(y|x)", "93.10%")``,
    ``("shape: accuracy of q(y|x)", ...)``, ``("scale: mean absolute error", "0.031")``."""
    out = []
    for key, v in scores.items():
        if not isinstance(v, float):
            continue
        if key == "accuracy":
            out.append((WHAT, f"{100 * v:.2f}%"))
        elif key.endswith("_accuracy"):
            out.append((f"{key[: -len('_accuracy')]}: {WHAT}", f"{100 * v:.2f}%"))
        elif key.endswith("_mae"):
            out.append((f"{key[: -len('_mae')]}: mean absolute error of q(y|x)'s mean", f"{v:.4g}"))
    return out
