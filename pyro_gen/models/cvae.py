"""The conditional VAE: attributes are observed sample sites of the model.

    p(z) = N(0, I),  p(y_a) per attribute a,  p(x | z, y) = Bernoulli(logits = f(z, y)) (or
    Gaussian),  q(z | x, y) = N(g(x, y), diag s(x, y)²)

(Sohn, Lee & Yan, "Learning structured output representation using deep conditional generative
models", NeurIPS 2015; Kingma et al. 2014's M2 with every label observed). The ELBO bounds
log p(x, y) = log p(y) + log p(x | y); only the decoder and the guide depend on y.

Each attribute is one site with its own name (``"shape"``, ``"scale"``, ``"digit"``...):
``"categorical"`` (int64 class indices, uniform prior), ``"binary"`` ({0, 1}, Bernoulli
prior) or ``"continuous"`` (Normal prior with the training data's mean and spread). The
decoder sees ``[z, y]`` with y encoded as one-hot classes, 0/1 flags and standardised values;
a periodic continuous attribute (spec key ``"period"``, e.g. an orientation in radians with
period 2π; :func:`attributes_from_dataset` sets it for the shapes data's orientation) is
encoded as ``cos(2πkv / period), sin(2πkv / period)`` for k = 1..``harmonics`` (default 4), so
that 0 and 2π look alike and a shape's symmetry (a square repeats every π/2: k = 4) is one
feature away instead of a function the decoder must learn.

Partly observed attributes: pass ``<name>_mask`` (bool ``[N]``, True where observed) beside
the values. The site then splits under ``poutine.mask``: ``<name>`` observed where the mask is
True, ``<name>_missing`` a latent drawn from the prior where it is False, with a guide
q(y_a | x) (build the model with ``missing=True``). Values at masked-out rows are never read
(no sentinel such as −1 reaches a likelihood or the decoder); an attribute left out of the call
altogether is latent for every row.

>>> import torch
>>> from pyro_gen.models import CVAE
>>> m = CVAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(16,),
...          attributes=[{"name": "shape", "kind": "categorical", "values": ["a", "b"]}])
>>> m.generate(3, {"shape": "b"}, seed=0).shape
torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import is_validation_enabled

from pyro_gen.errors import ConfigError, DataError, ShapeError, did_you_mean
from pyro_gen.models.base import GenerativeModel, KLWeighted, check_data_shape
from pyro_gen.models.likelihoods import (
    DEFAULT_AR_HIDDEN,
    DEFAULT_SCALE,
    likelihood_from_args,
)
from pyro_gen.models.registry import register_model
from pyro_gen.models.sampling import make_generator
from pyro_gen.nn import ACTIVATIONS
from pyro_gen.nn.classifier import Classifier
from pyro_gen.nn.conditional import ConditionalDecoder, ConditionalEncoder

__all__ = ["CVAE", "ATTRIBUTE_KINDS", "attributes_from_dataset"]

ATTRIBUTE_KINDS = ("categorical", "binary", "continuous")
RESERVED = ("x", "z", "subsample_size")
MASK_SUFFIX = "_mask"
MISSING_SUFFIX = "_missing"
CLASSIFY_SUFFIX = "_classify"  # the observed sites of the α·log q(y|x) term (train mode)
# names of a label attribute by data set (default "label")
LABEL_NAMES = {"mnist": "digit", "binarized_mnist": "digit"}
# periodic attribute columns by data set (a Dataset's info["attribute_periods"] adds to these)
PERIODS = {"shapes": {"orientation": 2 * math.pi}}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _normalise(raw: Mapping[str, Any] | str) -> dict[str, Any]:
    """One attribute spec, checked and with its defaults filled in (JSON-able)."""
    if isinstance(raw, str):
        raise ConfigError(
            f"attribute {raw!r} is a bare name; give a spec such as {{'name': {raw!r}, 'kind': "
            "'continuous'}, or build the attributes from a data set with "
            "attributes_from_dataset(ds, names)."
        )
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"an attribute spec is a mapping with a 'name'; got {raw!r}.")
    a = dict(raw)
    name = str(a["name"])
    if not name.isidentifier() or name in RESERVED or name.endswith((MASK_SUFFIX, MISSING_SUFFIX)):
        raise ConfigError(
            f"attribute name {name!r} cannot be used: names must be Python identifiers, not "
            f"{list(RESERVED)}, and not end in {MASK_SUFFIX!r} or {MISSING_SUFFIX!r}."
        )
    kind = a.get("kind")
    if kind not in ATTRIBUTE_KINDS:
        raise ConfigError(
            f"attribute {name!r} has kind {kind!r}; choose one of {ATTRIBUTE_KINDS}."
            + did_you_mean(str(kind), ATTRIBUTE_KINDS)
        )
    out: dict[str, Any] = {"name": name, "kind": kind, "source": a.get("source", "attribute")}
    if out["source"] not in ("attribute", "label"):
        raise ConfigError(f"attribute {name!r}: source must be 'attribute' or 'label'.")
    out["column"] = str(a.get("column", name))
    if kind == "categorical":
        values = a.get("values")
        if values is None:
            k = int(a.get("num_classes", 0))
            values = [str(i) for i in range(k)]
        values = [str(v) for v in values]
        if len(values) < 2 or len(set(values)) != len(values):
            raise ConfigError(
                f"categorical attribute {name!r} needs at least two distinct class names "
                f"('values'); got {values}."
            )
        out["values"] = values
    elif kind == "binary":
        p = float(a.get("p", 0.5))
        if not 0 < p < 1:
            raise ConfigError(f"binary attribute {name!r}: prior p must be in (0, 1); got {p}.")
        out["p"] = p
    else:
        loc, scale = float(a.get("loc", 0.0)), float(a.get("scale", 1.0))
        low, high = float(a.get("low", -math.inf)), float(a.get("high", math.inf))
        if not (scale > 0 and math.isfinite(loc) and low < high):
            raise ConfigError(
                f"continuous attribute {name!r} needs finite loc, scale > 0 and low < high; got "
                f"loc={loc}, scale={scale}, low={low}, high={high}."
            )
        out.update(loc=loc, scale=scale, low=low, high=high)
        if a.get("period") is not None:
            period, harmonics = float(a["period"]), int(a.get("harmonics", 4))
            if not (math.isfinite(period) and period > 0 and harmonics >= 1):
                raise ConfigError(
                    f"periodic attribute {name!r} needs a finite period > 0 and harmonics >= 1; "
                    f"got period={a['period']}, harmonics={a.get('harmonics', 4)}."
                )
            out.update(period=period, harmonics=harmonics)
    return out


def _describe(a: Mapping[str, Any]) -> str:
    if a["kind"] == "categorical":
        return f"{a['name']} (categorical: {', '.join(a['values'])})"
    if a["kind"] == "binary":
        return f"{a['name']} (binary: 0 or 1)"
    return f"{a['name']} (continuous in [{a['low']:g}, {a['high']:g}])"


def attributes_from_dataset(ds, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Attribute specs for a ``pyro_gen.data.Dataset`` (its training split sets the priors).

    Candidates: every attribute column (integral columns equal to the labels become
    categorical with ``label_names``; {0, 1} columns binary; others continuous with their
    mean, standard deviation and range), plus the labels themselves when no column equals them
    (named ``"digit"`` for MNIST, else ``"label"``). Without ``names``, binary columns that are
    one class of the labels (one-hot codes such as ``is_heart``) are left out. Raises
    ConfigError for a name the data set does not have, listing those it has.
    """
    split = "train" if "train" in ds.splits else next(iter(ds.splits))
    labels = ds.labels.get(split)
    label_values = list(ds.label_names) or (
        [str(i) for i in range(int(labels.max()) + 1)] if labels is not None else []
    )
    found: dict[str, dict[str, Any]] = {}
    redundant: set[str] = set()
    label_column = None
    table = ds.attributes.get(split)
    periods = {**PERIODS.get(ds.name, {}), **dict((ds.info or {}).get("attribute_periods", {}))}
    for j, col in enumerate(ds.attribute_names):
        v = table[:, j].double()
        integral = bool(torch.equal(v, v.round()))
        if labels is not None and integral and torch.equal(v.long(), labels):
            found[col] = {"name": col, "kind": "categorical", "values": label_values}
            label_column = col
        elif bool(((v == 0) | (v == 1)).all()):
            found[col] = {"name": col, "kind": "binary", "p": float(v.mean().clamp(0.01, 0.99))}
            if labels is not None and any(
                torch.equal(v.bool(), labels == k) for k in range(len(label_values))
            ):
                redundant.add(col)
        else:
            found[col] = {
                "name": col,
                "kind": "continuous",
                "loc": float(v.mean()),
                "scale": float(v.std()) if len(v) > 1 and float(v.std()) > 0 else 1.0,
                # the training range, widened to two decimals (0.50032 -> 0.5, 0.999 -> 1.0)
                "low": math.floor(float(v.min()) * 100) / 100,
                "high": math.ceil(float(v.max()) * 100) / 100,
            }
            if col in periods:
                found[col]["period"] = float(periods[col])
    if labels is not None and label_column is None:
        name = LABEL_NAMES.get(ds.name, "label")
        found[name] = {
            "name": name,
            "kind": "categorical",
            "values": label_values,
            "source": "label",
        }
    if not found:
        raise ConfigError(
            f"data set {ds.name!r} has neither labels nor attributes in split {split!r}; a "
            "conditional model needs at least one attribute."
        )
    if names is None:
        return [_normalise(a) for n, a in found.items() if n not in redundant]
    chosen = []
    for n in names:
        if n not in found:
            raise ConfigError(
                f"data set {ds.name!r} has no attribute {n!r}; it has: {', '.join(found)}."
                + did_you_mean(str(n), found)
            )
        chosen.append(_normalise(found[n]))
    return chosen


@register_model("cvae")
class CVAE(KLWeighted, GenerativeModel):
    """A conditional VAE whose attributes are observed sample sites (see the module text).

    Args:
        data_shape: shape of one datapoint, e.g. ``(1, 28, 28)``.
        attributes: specs, each ``{"name", "kind", ...}``: categorical ``"values"`` (class
            names), binary ``"p"`` (prior), continuous ``"loc"``, ``"scale"`` (the Normal
            prior, also used to standardise) and ``"low"``, ``"high"`` (values that
            :meth:`generate` accepts); ``"source"`` ``"attribute"`` (a data set column,
            ``"column"``, default the name) or ``"label"``. :func:`attributes_from_dataset`
            builds them.
        latent_dim: size of z.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"autoregressive"`` (as the VAE).
        network: ``"mlp"`` or ``"conv"``.
        hidden: widths of the encoder's dense layers (the decoder mirrors them).
        channels: conv channels of the encoder (the decoder mirrors them).
        beta: the KL weight of the training objective (0: point-mass guide).
        missing: add q(y_a | x) so that attributes may be unobserved (masked or left out).
        alpha: with ``missing``, the weight α of the classification term α·log q(y_a | x) on
            the rows where y_a is observed, in train mode only (Kingma et al. 2014, eq. 9, as
            the SSVAE's): without it q(y_a | x) learns only from rows whose y_a is missing, and
            never when every training row is labelled. Observed sites ``<name>_classify``
            under ``poutine.scale``; no part of the model's density (absent in eval mode).
        scale, learn_scale: σ of a Gaussian likelihood.
        ar_hidden: the MADE's hidden widths of an autoregressive likelihood.
        activation: hidden-layer activation.
        condition: where the decoder reads y: ``"every"`` layer (default; the condition is
            concatenated to each layer's input, so the decoder does not have to carry it
            through its hidden units and leans less on z) or ``"input"`` (``[z, y]`` at the
            first layer only; run folders saved before ``condition`` existed were built so
            and ``load_model`` rebuilds them so: ``SAVED_DEFAULTS``). On the shapes data
            (20,000 images, 3 CPU-minutes) this took the judged class accuracy of z ~ p(z)
            samples from 55% to 66%, and cos/sin orientation harmonics then to 96%.

    Raises ConfigError for bad specs or settings.
    """

    capturable = True
    # arguments added after runs were saved without them: what those runs were built with
    SAVED_DEFAULTS = {"condition": "input", "alpha": 0.0}

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        attributes: Sequence[Mapping[str, Any]] | None = None,
        latent_dim: int = 16,
        likelihood: str = "bernoulli",
        network: str = "mlp",
        hidden: Sequence[int] = (512, 256),
        channels: Sequence[int] = (32, 64, 64),
        beta: float = 1.0,
        missing: bool = False,
        scale: float = DEFAULT_SCALE,
        learn_scale: bool = False,
        ar_hidden: Sequence[int] = DEFAULT_AR_HIDDEN,
        activation: str = "relu",
        condition: str = "every",
        alpha: float = 50.0,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if isinstance(alpha, bool) or not float(alpha) >= 0:
            raise ConfigError(f"alpha must be >= 0 (0: no classification term); got {alpha}.")
        self.alpha = float(alpha)
        if not attributes:
            raise ConfigError(
                "a CVAE needs at least one attribute: attributes=[{'name': ..., 'kind': ...}], "
                "e.g. attributes_from_dataset(ds) (pyro-gen train fills them from --data)."
            )
        self.attributes = [_normalise(a) for a in attributes]
        names = [a["name"] for a in self.attributes]
        if len(set(names)) != len(names):
            raise ConfigError(f"attribute names must be distinct; got {names}.")
        self._by_name = {a["name"]: a for a in self.attributes}
        if int(latent_dim) < 1:
            raise ConfigError(f"latent_dim must be >= 1; got {latent_dim}.")
        self.latent_dim = int(latent_dim)
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
                + did_you_mean(str(activation), ACTIVATIONS)
            )
        if network not in ("mlp", "conv"):
            raise ConfigError(
                f"unknown network {network!r}; choose one of ('mlp', 'conv')."
                + did_you_mean(str(network), ("mlp", "conv"))
            )
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ConfigError("hidden needs at least one width.")
        channels = tuple(int(c) for c in channels)
        self.beta = beta
        self.condition_dim = sum(self._width(a) for a in self.attributes)
        self.encoder = ConditionalEncoder(
            self.data_shape,
            self.condition_dim,
            self.latent_dim,
            network,
            hidden=hidden[-1],
            hidden_layers=hidden[:-1],
            channels=channels,
            activation=activation,
        )
        self.decoder = ConditionalDecoder(
            self.latent_dim,
            self.condition_dim,
            self.data_shape,
            network,
            hidden=hidden[-1],
            hidden_layers=hidden[:-1][::-1],
            channels=channels[::-1],
            activation=activation,
            condition=condition,
        )
        self.likelihood = likelihood_from_args(
            likelihood, self.data_shape, scale, learn_scale, ar_hidden
        )
        self.missing = bool(missing)
        self.attribute_net = (
            Classifier(
                self.data_shape,
                sum(self._q_width(a) for a in self.attributes),
                network="mlp" if network == "mlp" else "auto",
                hidden=hidden[-1],
                hidden_layers=hidden[:-1],
                channels=channels[:2],
                activation=activation,
            )
            if self.missing
            else None
        )

    # -- attributes ------------------------------------------------------------------------------
    @staticmethod
    def _width(a: Mapping[str, Any]) -> int:
        if a["kind"] == "categorical":
            return len(a["values"])
        return 2 * a["harmonics"] if a.get("period") is not None else 1

    @staticmethod
    def _q_width(a: Mapping[str, Any]) -> int:
        return {"categorical": len(a.get("values", ())), "binary": 1, "continuous": 2}[a["kind"]]

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a["name"] for a in self.attributes)

    def describe_attributes(self) -> str:
        """One line naming every attribute with its kind and valid values."""
        return "; ".join(_describe(a) for a in self.attributes)

    def _unknown(self, name: str) -> ConfigError:
        return ConfigError(
            f"unknown attribute {name!r}; this model's attributes are: "
            f"{self.describe_attributes()}." + did_you_mean(name, self.attribute_names)
        )

    def _prior(self, a: Mapping[str, Any], like: torch.Tensor) -> dist.Distribution:
        if a["kind"] == "categorical":
            return dist.Categorical(logits=like.new_zeros(len(a["values"])))
        if a["kind"] == "binary":
            return dist.Bernoulli(probs=like.new_tensor(a["p"]))
        return dist.Normal(like.new_tensor(a["loc"]), like.new_tensor(a["scale"]))

    def encode_attributes(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The decoder's/encoder's view of attributes ``[..., condition_dim]``: one-hot
        classes, 0/1 flags and ``(value - loc) / scale`` (a periodic attribute:
        ``cos, sin`` of ``2πk value / period``, k = 1..harmonics) in the order of
        ``attributes``."""
        parts = []
        for a in self.attributes:
            v = values[a["name"]]
            if a["kind"] == "categorical":
                # one-hot by comparison: F.one_hot reads the values on the host
                classes = torch.arange(len(a["values"]), device=v.device)
                parts.append((v.long().unsqueeze(-1) == classes).float())
            elif a["kind"] == "binary":
                parts.append(v.float().unsqueeze(-1))
            elif a.get("period") is not None:
                k = torch.arange(1, a["harmonics"] + 1, device=v.device, dtype=torch.float32)
                angle = v.float().unsqueeze(-1) * k * (2 * math.pi / a["period"])
                parts += [torch.cos(angle), torch.sin(angle)]
            else:
                parts.append(((v.float() - a["loc"]) / a["scale"]).unsqueeze(-1))
        return torch.cat(parts, -1)

    def _check_value(self, a: Mapping[str, Any], v: torch.Tensor, valid: torch.Tensor | None):
        """Type and, under ``pyro.enable_validation``, support of observed values (only where
        ``valid``; the support check reads values on the host, which a captured step cannot)."""
        if not is_validation_enabled():
            return v.long() if a["kind"] == "categorical" else v.float()
        name = a["name"]
        w = v if valid is None else v[valid]
        if a["kind"] == "categorical":
            if v.is_floating_point():
                if not bool(torch.equal(w, w.round())):
                    raise DataError(f"attribute {name!r} is categorical: give class indices.")
            k = len(a["values"])
            if w.numel() and (int(w.min()) < 0 or int(w.max()) >= k):
                raise DataError(
                    f"attribute {name!r} holds classes in [{int(w.min())}, {int(w.max())}]; its "
                    f"classes are 0..{k - 1} ({', '.join(a['values'])})."
                )
            return v.long()
        if a["kind"] == "binary":
            if not bool(((w == 0) | (w == 1)).all()):
                raise DataError(f"attribute {name!r} is binary: its values must be 0 or 1.")
            return v.float()
        if not bool(torch.isfinite(w.float()).all()):
            raise DataError(f"attribute {name!r} holds NaN or Inf where it is observed.")
        return v.float()

    def _observed(self, observed: Mapping[str, Any], n: int):
        """(values, masks) per attribute from the keyword arguments, checked."""
        values: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for key in observed:
            base = key[: -len(MASK_SUFFIX)] if key.endswith(MASK_SUFFIX) else key
            if base not in self._by_name:
                raise self._unknown(base)
            if key.endswith(MASK_SUFFIX) and base not in observed:
                raise ConfigError(f"{key} is given but not the values of {base!r}.")
        for a in self.attributes:
            name = a["name"]
            if name not in observed or observed[name] is None:
                if not self.missing:
                    raise ConfigError(
                        f"attribute {name!r} is not given and this CVAE has no q(y | x) for "
                        f"missing attributes; pass {name}=... (or build it with missing=True)."
                    )
                continue
            v = observed[name]
            if not isinstance(v, torch.Tensor) or v.shape != (n,):
                raise ShapeError(
                    f"attribute {name!r} must be a tensor of shape [{n}] (one value per "
                    f"datapoint); got {getattr(v, 'shape', type(v).__name__)}."
                )
            m = observed.get(name + MASK_SUFFIX)
            if m is not None:
                if not self.missing:
                    raise ConfigError(
                        f"{name}{MASK_SUFFIX} marks missing values, but this CVAE has no "
                        "q(y | x) for them; build it with missing=True."
                    )
                if not isinstance(m, torch.Tensor) or m.shape != (n,):
                    raise ShapeError(f"{name}{MASK_SUFFIX} must be a tensor of shape [{n}].")
                m = m.bool()
                # rows where the value is missing get a placeholder inside the support; it is
                # never read: masked out of log p(y) and replaced by the latent draw
                fill = 0.0 if a["kind"] != "continuous" else a["loc"]
                v = torch.where(m, v, torch.full_like(v, fill))
                masks[name] = m
            values[name] = self._check_value(a, v, m)
        return values, masks

    # -- the Pyro program ------------------------------------------------------------------------
    def model(
        self, x: torch.Tensor, *, subsample_size: int | None = None, **observed
    ) -> torch.Tensor:
        """Π_a p(y_a) p(z) p(x | z, y); attributes observed (site ``<name>``), partly observed
        (``<name>`` under ``poutine.mask(mask)`` and latent ``<name>_missing`` under
        ``poutine.mask(~mask)``) or latent (``<name>``)."""
        check_data_shape(x, self.data_shape)
        values, masks = self._observed(observed, x.shape[0])
        zeros = x.new_zeros(self.latent_dim)
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            sub = (lambda t: t) if subsample_size is None else (lambda t: t.index_select(0, idx))
            xs = sub(x)
            ys = {}  # y before z, in the guide's order: a missing y keeps an analytic KL
            for a in self.attributes:
                name, prior = a["name"], self._prior(a, x)
                if name not in values:
                    ys[name] = pyro.sample(name, prior)
                elif name not in masks:
                    ys[name] = pyro.sample(name, prior, obs=sub(values[name]))
                else:
                    m = sub(masks[name])
                    with poutine.mask(mask=m):
                        v = pyro.sample(name, prior, obs=sub(values[name]))
                    with poutine.mask(mask=~m):
                        u = pyro.sample(name + MISSING_SUFFIX, prior)
                    ys[name] = torch.where(m, v, u)
            z = pyro.sample("z", dist.Normal(zeros, zeros + 1).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z, self.encode_attributes(ys))), obs=xs)
            if self.training and self.missing and self.alpha > 0:
                self._classification_term(xs, values, masks, sub)
        return z

    def _classification_term(self, xs, values, masks, sub) -> None:
        """α·log q(y_a | x) on the rows where y_a is observed (train mode; see ``alpha``)."""
        known = [a["name"] for a in self.attributes if a["name"] in values]
        if not known:
            return
        q = self._q_attribute(xs)
        for name in known:
            # rows whose y_a is missing hold a placeholder inside the support: masked out
            mask = sub(masks[name]) if name in masks else True
            with poutine.mask(mask=mask), poutine.scale(scale=self.alpha):
                pyro.sample(name + CLASSIFY_SUFFIX, q[name], obs=sub(values[name]))

    def _q_attribute(self, xs: torch.Tensor) -> dict[str, dist.Distribution]:
        out = self.attribute_net(xs)
        q, i = {}, 0
        for a in self.attributes:
            w = self._q_width(a)
            o = out[..., i : i + w]
            i += w
            if a["kind"] == "categorical":
                q[a["name"]] = dist.Categorical(logits=o)
            elif a["kind"] == "binary":
                q[a["name"]] = dist.Bernoulli(logits=o[..., 0])
            else:
                scale = torch.nn.functional.softplus(o[..., 1]) + 1e-3
                q[a["name"]] = dist.Normal(a["loc"] + a["scale"] * o[..., 0], a["scale"] * scale)
        return q

    def guide(
        self, x: torch.Tensor, *, subsample_size: int | None = None, **observed
    ) -> torch.Tensor:
        """q(y_a | x) for attributes not observed, then q(z | x, y) (a point mass if β = 0)."""
        check_data_shape(x, self.data_shape)
        values, masks = self._observed(observed, x.shape[0])
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=x.device) as idx:
            sub = (lambda t: t) if subsample_size is None else (lambda t: t.index_select(0, idx))
            xs = sub(x)
            need = [a for a in self.attributes if a["name"] not in values or a["name"] in masks]
            q = self._q_attribute(xs) if need else {}
            ys = {}
            for a in self.attributes:
                name = a["name"]
                if name not in values:
                    ys[name] = pyro.sample(name, q[name])
                elif name in masks:
                    m = sub(masks[name])
                    with poutine.mask(mask=~m):
                        u = pyro.sample(name + MISSING_SUFFIX, q[name])
                    ys[name] = torch.where(m, sub(values[name]), u)
                else:
                    ys[name] = sub(values[name])
            loc, scale = self.encoder(xs, self.encode_attributes(ys))
            if self.beta == 0:
                return pyro.sample("z", dist.Delta(loc).to_event(1))
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- data ------------------------------------------------------------------------------------
    def batch_from_dataset(self, dataset, split: str) -> dict[str, torch.Tensor]:
        """``{"x": images, <attribute>: values}`` of one split (class indices int64, binary and
        continuous values float32). Raises DataError when the split lacks an attribute."""
        batch = {"x": dataset.split(split)}
        for a in self.attributes:
            if a["source"] == "label":
                if split not in dataset.labels:
                    raise DataError(
                        f"split {split!r} of {dataset.name!r} has no labels, which attribute "
                        f"{a['name']!r} needs (for MNIST use --data mnist, which has labels)."
                    )
                v = dataset.labels[split]
            else:
                v = dataset.attribute(split, a["column"])
            batch[a["name"]] = v.long() if a["kind"] == "categorical" else v.float()
        return batch

    @classmethod
    def config_from_dataset(cls, dataset, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments with ``attributes`` filled from the data set: all of them when
        not given, resolved by name when given as a list of names."""
        kwargs = dict(kwargs)
        given = kwargs.get("attributes")
        if not given:
            kwargs["attributes"] = attributes_from_dataset(dataset)
        elif isinstance(given, str) or all(isinstance(a, str) for a in given):
            names = given.split(",") if isinstance(given, str) else list(given)
            kwargs["attributes"] = attributes_from_dataset(dataset, [n.strip() for n in names])
        return kwargs

    # -- values asked by a person ----------------------------------------------------------------
    def parse_attributes(self, y: Mapping[str, Any], n: int) -> dict[str, torch.Tensor]:
        """Attribute values ``[n]`` from names, indices, numbers or strings (as on the command
        line: ``shape="heart"``, ``shape=2``, ``scale="0.8"``, ``flag="yes"``), each a scalar
        (repeated n times) or a sequence/tensor of length n. Attributes not in ``y`` are left
        out. Raises ConfigError for an unknown name and DataError for a value outside the
        attribute's classes or range; both list the valid ones."""
        out = {}
        for name, raw in y.items():
            if name not in self._by_name:
                raise self._unknown(str(name))
            a = self._by_name[name]
            items = raw.tolist() if isinstance(raw, torch.Tensor) else raw
            seq = items if isinstance(items, (list, tuple)) else [items] * n
            if len(seq) != n:
                raise ShapeError(f"attribute {name!r} has {len(seq)} values for {n} samples.")
            out[name] = torch.tensor(
                [self._parse_one(a, v) for v in seq],
                dtype=torch.long if a["kind"] == "categorical" else None,
            )
        return out

    def _parse_one(self, a: Mapping[str, Any], v: Any) -> float | int:
        name = a["name"]
        if a["kind"] == "categorical":
            names = a["values"]
            if isinstance(v, str) and v in names:
                return names.index(v)
            try:
                i = int(v) if not isinstance(v, float) or v.is_integer() else None
            except (TypeError, ValueError):
                i = None
            if i is not None and 0 <= i < len(names) and not isinstance(v, bool):
                return i
            raise DataError(
                f"{v!r} is not a class of attribute {name!r}; valid: {', '.join(names)} (or "
                f"their indices 0..{len(names) - 1})." + did_you_mean(str(v), names)
            )
        if a["kind"] == "binary":
            if isinstance(v, bool) or v in (0, 1):
                return float(v)
            if isinstance(v, str) and v.lower() in _TRUE + _FALSE:
                return float(v.lower() in _TRUE)
            raise DataError(f"{v!r} is not a value of binary attribute {name!r}; valid: 0 or 1.")
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        if math.isfinite(f) and a.get("period") and not a["low"] <= f <= a["high"]:
            # a periodic value names the same angle one period on: bring it into the range
            f = a["low"] + (f - a["low"]) % a["period"]
        if not (math.isfinite(f) and a["low"] <= f <= a["high"]):
            raise DataError(
                f"{v!r} is not a valid value of attribute {name!r}: give a number in "
                f"[{a['low']:g}, {a['high']:g}] (the range seen in training)."
            )
        return f

    @torch.no_grad()
    def sample_attributes(
        self, n: int, y: Mapping[str, Any] | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Every attribute ``[n]``: those in ``y`` parsed (:meth:`parse_attributes`), the rest
        drawn from their priors (continuous ones clipped to the training range)."""
        values = self.parse_attributes(y or {}, n)
        dev = self.device
        for a in self.attributes:
            if a["name"] in values:
                continue
            if a["kind"] == "categorical":
                v = torch.randint(len(a["values"]), (n,), generator=generator, device=dev)
            elif a["kind"] == "binary":
                v = (torch.rand(n, generator=generator, device=dev) < a["p"]).float()
            else:
                v = a["loc"] + a["scale"] * torch.randn(n, generator=generator, device=dev)
                v = v.clamp(a["low"], a["high"])
            values[a["name"]] = v
        return {k: v.to(dev) for k, v in values.items()}

    # -- conveniences ----------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, y: Mapping[str, Any], mean: bool = True) -> torch.Tensor:
        """E[x | z, y] (``mean=True``) or the decoder's raw parameters, for z ``[N, latent_dim]``
        and attribute values ``y`` (anything :meth:`parse_attributes` takes, all attributes)."""
        if z.shape[-1] != self.latent_dim:
            raise ShapeError(
                f"z must end in the latent size {self.latent_dim}; got {list(z.shape)}."
            )
        values = self._full(y, z.shape[0])
        params = self.decoder(z, self.encode_attributes(values).to(z))
        return self.likelihood.mean(params) if mean else params

    def _full(self, y: Mapping[str, Any], n: int) -> dict[str, torch.Tensor]:
        missing = [a["name"] for a in self.attributes if a["name"] not in y]
        if missing:
            raise ConfigError(
                f"give every attribute; missing: {missing}. This model's attributes are: "
                f"{self.describe_attributes()}."
            )
        values = dict(y)
        parse = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
        values.update(self.parse_attributes(parse, n))
        return {k: v.to(self.device) for k, v in values.items()}

    def encode(self, x: torch.Tensor, **observed) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q(z | x, y), each ``[N, latent_dim]``; every attribute given (as
        tensors ``[N]``), or missing ones filled with q(y | x)'s most probable value."""
        check_data_shape(x, self.data_shape)
        values, masks = self._observed(observed, x.shape[0])
        need = [a for a in self.attributes if a["name"] not in values or a["name"] in masks]
        if need:
            q = self._q_attribute(x)
            for a in need:
                d = q[a["name"]]
                guess = (
                    d.probs.argmax(-1)
                    if a["kind"] == "categorical"
                    else (d.probs > 0.5).float()
                    if a["kind"] == "binary"
                    else d.mean
                )
                v = values.get(a["name"])
                values[a["name"]] = guess if v is None else torch.where(masks[a["name"]], v, guess)
        return self.encoder(x, self.encode_attributes(values))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool | None = None, **observed) -> torch.Tensor:
        """Decode the guide's mean with the same attributes: E[x | z = g(x, y), y] (a draw of
        x when ``mean=False``; None: the mean where the likelihood has one, else a draw)."""
        values, masks = self._observed(observed, x.shape[0])
        loc, _ = self.encode(x, **observed)
        full = dict(values)
        if len(full) < len(self.attributes) or masks:
            raise ConfigError(
                "reconstruct needs every attribute observed; pass all of "
                f"{list(self.attribute_names)}."
            )
        params = self.decoder(loc, self.encode_attributes(full))
        if mean is None:
            mean = self.likelihood.has_mean
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        y: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        mean: bool = False,
        z: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` images ``[n, *data_shape]`` with chosen attributes: x ~ p(x | z, y), z ~ p(z)
        (or the given ``z`` ``[n, latent_dim]``), y from ``y`` where given (names, indices or
        values; see :meth:`parse_attributes`) and from the prior otherwise; ``mean=True`` gives
        E[x | z, y]. Raises ConfigError/DataError naming the valid attributes and values."""
        if int(n) < 1:
            raise ConfigError(f"the number of samples must be >= 1; got {n}.")
        n = int(n)
        g = make_generator(seed, generator, self.device)
        values = self.sample_attributes(n, y, g)
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=g, device=self.device)
        elif tuple(z.shape) != (n, self.latent_dim):
            raise ShapeError(f"z must have shape [{n}, {self.latent_dim}]; got {list(z.shape)}.")
        params = self.decoder(z, self.encode_attributes(values))
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params, g)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        mean: bool = False,
    ) -> torch.Tensor:
        """``n`` draws of x from p(z) p(y) p(x | z, y) (attributes from their priors)."""
        return self.generate(n, None, seed=seed, generator=generator, mean=mean)
