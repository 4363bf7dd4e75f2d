"""The semi-supervised VAE "M2" (Kingma, Rezende, Mohamed & Welling 2014, §2.2 and §3.1.2).

Generative model and guide, for a batch whose labels are known on some rows only::

    p(y) = Cat(1/K),  p(z) = N(0, I),  p(x | y, z) = Bernoulli(logits = f(y, z))   (eq. 2)
    q(y | x) = Cat(π(x)),  q(z | x, y) = N(μ(x, y), diag σ²(x, y))                  (eq. 4)

A batch is ``model(x, y=Y, observed=M)``: ``M`` (bool ``[N]``) says which rows' label ``Y`` is
known. Those rows observe the site ``"y"``; on the others the site is masked out with
``poutine.mask`` (their entry of ``Y`` never reaches a likelihood: any value, e.g. 0, is
ignored) and the label is the latent site ``"y_missing"``, which the guide marks with
``config_enumerate`` so that ``elbo="enum"`` (``TraceEnum_ELBO``) sums it out exactly:

    labelled:    log p(x, y) >= E_q(z|x,y) [log p(x|y,z) + log p(y) + log p(z) − log q(z|x,y)]
    unlabelled:  log p(x)    >= Σ_y q(y|x) [the same with y] + H(q(y|x))                   (eq. 7)

On labelled rows ``"y_missing"`` is an auxiliary variable with q = p = p(y) that nothing reads:
its log p − log q is exactly 0 and the enumeration averages the row's terms over the K values
(K draws of z, the same expectation). It is *not* masked there on purpose: with a masked
enumerated guide site (as ``pyro.sample(..., obs_mask=...)`` builds) TraceEnum_ELBO's value on
those rows is no longer the average of their draws (``tests/models/test_ssvae.py`` pins the
exact sum on the same draws).

The classifier q(y|x) is also trained on the labelled rows directly (Kingma et al.'s eq. 9,
J^α = J + α · E_labelled[−log q(y|x)]): in training mode the model adds the observed site
``"y_classify"`` = log q(y | x) under ``poutine.mask(observed)`` and ``poutine.scale(α)``. In
eval mode (the evaluators) that term is absent, so ``evaluate_elbo`` is the model's true bound,
and ``"y_missing"`` is drawn from q(y|x) instead of enumerated (importance sampling cannot replay
an enumerated site): the same guide, hence unbiased ELBO and log-likelihood estimates.

>>> import torch
>>> from pyro_gen.models import SSVAE
>>> m = SSVAE(data_shape=(1, 8, 8), num_classes=3, latent_dim=2, hidden=(16,))
>>> x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3))
>>> m.classify(x).shape, m.sample(2, y=torch.tensor([0, 2]), seed=0).shape
(torch.Size([4]), torch.Size([2, 1, 8, 8]))
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from torch import nn
from torch.nn import functional as F

from pyro_gen.errors import ConfigError, DataError, ShapeError, did_you_mean
from pyro_gen.models.base import GenerativeModel, check_data_shape
from pyro_gen.models.likelihoods import make_likelihood
from pyro_gen.models.registry import register_model
from pyro_gen.models.sampling import make_generator
from pyro_gen.nn import ACTIVATIONS
from pyro_gen.nn.classifier import Classifier
from pyro_gen.nn.heads import GaussianHead, numel
from pyro_gen.nn.mlp import MLP

__all__ = ["SSVAE", "ENUMERATE_MODES", "NO_LABELS_NOTE", "LABEL"]

LABEL = "label"  # the name of y where values are asked for by name: generate({"label": ...})

NO_LABELS_NOTE = (
    "trained with no labels (num_labels = 0): q(y|x)'s classes are unsupervised clusters in an "
    "arbitrary order, so its accuracy against the true labels means nothing (about chance)"
)

ENUMERATE_MODES = ("parallel", "sequential")


class _LabelEncoder(nn.Module):
    """(x ``[..., *data_shape]``, one-hot y ``[..., K]``) -> (loc, scale) ``[..., latent_dim]``.

    The leading dims of x and y broadcast (y carries the enumeration dim, x does not)."""

    def __init__(self, data_shape, num_classes, latent_dim, hidden, activation) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        d = numel(self.data_shape)
        self.body = MLP(d + num_classes, hidden[:-1], hidden[-1], activation)
        self.act = ACTIVATIONS[activation]()
        self.head = GaussianHead(hidden[-1], latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        flat = x.reshape(*x.shape[: x.dim() - len(self.data_shape)], -1)
        batch = torch.broadcast_shapes(flat.shape[:-1], y.shape[:-1])
        h = torch.cat([flat.expand(*batch, -1), y.expand(*batch, -1)], -1)
        return self.head(self.act(self.body(h)))


class _LabelDecoder(nn.Module):
    """(z ``[..., latent_dim]``, one-hot y ``[..., K]``) -> parameters ``[..., *data_shape]``."""

    def __init__(self, latent_dim, num_classes, hidden, data_shape, activation) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = MLP(latent_dim + num_classes, hidden, numel(self.data_shape), activation)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(z.shape[:-1], y.shape[:-1])
        h = torch.cat([z.expand(*batch, -1), y.expand(*batch, -1)], -1)
        return self.net(h).reshape(*batch, *self.data_shape)


@register_model("ssvae")
class SSVAE(GenerativeModel):
    """Kingma et al.'s M2 semi-supervised VAE; train with ``Trainer(model, elbo="enum")``.

    Args:
        data_shape: shape of one datapoint, e.g. ``(1, 28, 28)``.
        num_classes: K, the number of labels.
        latent_dim: size of z (the "style").
        hidden: hidden widths of q(z|x,y) (p(x|y,z) mirrors them).
        classifier: network of q(y|x): ``"mlp"`` (Kingma et al.'s) or ``"conv"`` (the
            package's :class:`~pyro_gen.nn.classifier.Classifier`, images only).
        classifier_hidden: feature width of q(y|x) (and its MLP's earlier layer widths are
            ``classifier_layers``).
        classifier_layers: widths of the MLP classifier's earlier layers.
        channels: conv channels of the conv classifier.
        alpha: weight α of the classification term α·log q(y|x) per labelled datapoint
            (Kingma et al. use α = 0.1·N on a mean over labelled points; Pyro's example 46).
            MNIST with 3,000 labels, conv q(y|x), 10 epochs: test accuracy 95.2% at α = 50,
            96.2% at 500 and 2000; 20 epochs at 500: 96.7% (``benchmarks/ssvae_labels.py``).
        enumerate: ``"parallel"`` (one vectorised pass over the K labels) or ``"sequential"``
            (K passes; the same value) for the missing labels.
        likelihood: ``"bernoulli"`` (binary data) or ``"gaussian"``.
        activation: ``"relu"``, ``"tanh"``, ``"elu"`` or ``"softplus"``.
        num_labels: how many training images keep their label when the batch comes from a
            data set (:meth:`batch_from_dataset`: the first ``num_labels`` of ``"train"``;
            more than the split has is a ConfigError there; 0 trains q(y|x) on no label at
            all, with a warning: its accuracy is then meaningless).
        class_names: the names of the K classes, which :meth:`generate` takes as values of
            ``"label"`` (besides their indices); :meth:`config_from_dataset` records the data
            set's label names; None: ``"0"``..``"K-1"``.

    Batches: ``{"x": X, "y": Y, "observed": M}`` with ``Y`` int64 ``[N]`` in ``0..K-1`` and
    ``M`` bool ``[N]`` (``y`` alone: every row labelled; neither: none). Raises ConfigError
    (settings), DataError (labels out of range, a mask that is not boolean) and ShapeError.
    """

    # why traverse, interpolate and edit (encode(x) -> (loc, scale), decode(z)) do not apply
    lacks_latent_tools = (
        "its decoder takes the label y with z (p(x | y, z)); draw images of a chosen label "
        "with pyro-gen generate --attr label=NAME, and see reconstructions with pyro-gen "
        "reconstruct"
    )

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        latent_dim: int = 32,
        hidden: Sequence[int] = (256,),
        classifier: str = "mlp",
        classifier_hidden: int = 256,
        classifier_layers: Sequence[int] = (512,),
        channels: Sequence[int] = (32, 64),
        alpha: float = 500.0,
        enumerate: str = "parallel",
        likelihood: str = "bernoulli",
        activation: str = "relu",
        num_labels: int = 3000,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be >= 2; got {num_classes}.")
        if int(latent_dim) < 1:
            raise ConfigError(f"latent_dim must be >= 1; got {latent_dim}.")
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ConfigError("hidden needs at least one width.")
        if not float(alpha) >= 0:
            raise ConfigError(f"alpha must be >= 0 (0: no classification term); got {alpha}.")
        if enumerate not in ENUMERATE_MODES:
            raise ConfigError(
                f"unknown enumerate {enumerate!r}; choose one of {ENUMERATE_MODES}."
                + did_you_mean(str(enumerate), ENUMERATE_MODES)
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
                + did_you_mean(str(activation), ACTIVATIONS)
            )
        if int(num_labels) < 0:
            raise ConfigError(f"num_labels must be >= 0; got {num_labels}.")
        names = [str(i) for i in range(int(num_classes))] if class_names is None else class_names
        if (
            isinstance(names, str)
            or not all(isinstance(c, str) and c for c in names)
            or len(set(names)) != len(names)
            or len(names) != int(num_classes)
        ):
            raise ConfigError(
                f"class_names must be {num_classes} distinct non-empty names (one per class); "
                f"got {class_names!r}."
            )
        self.class_names = tuple(names)
        self.num_labels = int(num_labels)
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.alpha = float(alpha)
        self.enumerate = enumerate
        self.classifier = Classifier(
            self.data_shape,
            self.num_classes,
            network=classifier,
            hidden=int(classifier_hidden),
            channels=channels,
            hidden_layers=classifier_layers,
            activation=activation,
        )
        self.encoder = _LabelEncoder(
            self.data_shape, self.num_classes, self.latent_dim, hidden, activation
        )
        self.decoder = _LabelDecoder(
            self.latent_dim, self.num_classes, hidden[::-1], self.data_shape, activation
        )
        self.likelihood = make_likelihood(likelihood, self.data_shape)
        # p(y): uniform, as in Kingma et al.
        self.register_buffer("prior_logits", torch.zeros(self.num_classes), persistent=False)

    # -- checks --------------------------------------------------------------------------------
    def check_data(self, x: torch.Tensor) -> None:
        check_data_shape(x, self.data_shape)
        self.likelihood.check(x)

    def _labels(
        self, x: torch.Tensor, y: torch.Tensor | None, observed: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels with the unobserved rows set to 0, which every site masks out; the mask)."""
        n = x.shape[0]
        if y is None:
            if observed is not None and bool(observed.any()):
                raise DataError("observed marks labelled rows, but no labels y were given.")
            none = torch.zeros(n, dtype=torch.bool, device=x.device)
            return x.new_zeros(n, dtype=torch.long), none
        if not isinstance(y, torch.Tensor) or y.shape != (n,):
            raise ShapeError(
                f"y must be a tensor of {n} labels (shape [{n}], one per row of x); got "
                f"{list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}."
            )
        if y.is_floating_point():
            raise DataError(f"y must hold integer labels 0..{self.num_classes - 1}; got {y.dtype}.")
        if observed is None:
            observed = torch.ones(n, dtype=torch.bool, device=x.device)
        if not isinstance(observed, torch.Tensor) or observed.dtype != torch.bool:
            raise DataError(
                "observed must be a bool tensor [N] (True where the label is known); got "
                f"{observed.dtype if isinstance(observed, torch.Tensor) else type(observed)}."
            )
        if observed.shape != (n,):
            raise ShapeError(f"observed must have shape [{n}]; got {list(observed.shape)}.")
        known = y[observed]
        if known.numel() and (int(known.min()) < 0 or int(known.max()) >= self.num_classes):
            raise DataError(
                f"observed labels must lie in 0..{self.num_classes - 1}; got values in "
                f"[{int(known.min())}, {int(known.max())}]."
            )
        return torch.where(observed, y.long(), 0), observed

    def _one_hot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).to(self.prior_logits.dtype)

    # -- the Pyro program ----------------------------------------------------------------------
    def model(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
    ) -> None:
        """p(y) p(z) p(x | y, z), the label observed where ``observed`` (see the module doc)."""
        check_data_shape(x, self.data_shape)
        y, observed = self._labels(x, y, observed)
        prior = dist.Categorical(logits=self.prior_logits)
        zeros = x.new_zeros(self.latent_dim)
        with pyro.plate("data", x.shape[0], dim=-1, device=x.device):
            with poutine.mask(mask=observed):
                pyro.sample("y", prior, obs=y)
            y_missing = pyro.sample("y_missing", prior)
            label = torch.where(observed, y, y_missing)
            z = pyro.sample("z", dist.Normal(zeros, zeros + 1).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z, self._one_hot(label))), obs=x)
            if self.training and self.alpha > 0:
                # J^α (eq. 9): α log q(y|x) on the labelled rows, an observed site
                with poutine.mask(mask=observed), poutine.scale(scale=self.alpha):
                    pyro.sample("y_classify", dist.Categorical(logits=self.classifier(x)), obs=y)

    def guide(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
    ) -> None:
        """q(y | x) q(z | x, y): the missing labels enumerated (training) or drawn (eval)."""
        if self.training:
            return config_enumerate(self._guide, default=self.enumerate)(x, y, observed)
        return self._guide(x, y, observed)

    def _guide(self, x, y, observed) -> None:
        check_data_shape(x, self.data_shape)
        y, observed = self._labels(x, y, observed)
        with pyro.plate("data", x.shape[0], dim=-1, device=x.device):
            logits = self.classifier(x)
            # labelled rows: q = p(y), the auxiliary copy whose log p − log q is 0
            logits = torch.where(observed.unsqueeze(-1), self.prior_logits, logits)
            y_missing = pyro.sample("y_missing", dist.Categorical(logits=logits))
            label = torch.where(observed, y, y_missing)
            loc, scale = self.encoder(x, self._one_hot(label))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- data ----------------------------------------------------------------------------------
    def batch_from_dataset(self, dataset, split: str) -> dict[str, torch.Tensor]:
        """``{"x", "y", "observed"}`` of one split: on ``"train"`` the first ``num_labels``
        images are labelled, the rest not (their ``y`` is 0 and masked, the true label never
        enters); other splits are unlabelled, so their ELBO bounds log p(x) as a VAE's does.
        Raises DataError when the data set has no labels or too few classes."""
        x = dataset.split(split)
        n = x.shape[0]
        if split == "train":
            if "train" not in dataset.labels:
                raise DataError(
                    f"data set {dataset.name!r} has no training labels; the SSVAE needs some "
                    "(for MNIST use --data mnist, which has labels)."
                )
            labels = dataset.labels["train"]
            if self.num_labels == 0:
                _warn_no_labels()
            observed = torch.arange(n) < self.num_labels
            known = labels[observed]
            if known.numel() and int(known.max()) >= self.num_classes:
                raise DataError(
                    f"labels of {dataset.name!r} reach {int(labels.max())}, but the model has "
                    f"{self.num_classes} classes; build it with num_classes="
                    f"{len(dataset.label_names) or int(labels.max()) + 1}."
                )
            y = torch.where(observed, labels, 0)
        else:
            observed = torch.zeros(n, dtype=torch.bool)
            y = torch.zeros(n, dtype=torch.long)
        return {"x": x, "y": y, "observed": observed}

    @classmethod
    def config_from_dataset(cls, dataset, kwargs: dict) -> dict:
        """Constructor arguments with ``num_classes`` and ``class_names`` from the data set's
        label names."""
        kwargs = dict(kwargs)
        if dataset.label_names:
            kwargs["num_classes"] = len(dataset.label_names)
            kwargs.setdefault("class_names", [str(c) for c in dataset.label_names])
        n = int(dataset.split("train").shape[0]) if "train" in dataset.splits else None
        if n is not None:
            if "num_labels" in kwargs:  # asked for: checked, so config.json never overstates it
                _check_num_labels(int(kwargs["num_labels"]), n, dataset.name)
            else:  # the default: at most the images there are, recorded as used
                default = inspect.signature(cls).parameters["num_labels"].default
                kwargs["num_labels"] = min(int(default), n)
        return kwargs

    @property
    def classifier_note(self) -> str | None:
        """What a person must know beside q(y|x)'s accuracy: :data:`NO_LABELS_NOTE` for a
        model built with ``num_labels=0``; else None."""
        return NO_LABELS_NOTE if self.num_labels == 0 else None

    # -- conveniences --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """q(y | x) ``[N, K]`` (probabilities), in eval mode, in chunks of ``batch_size``."""
        check_data_shape(x, self.data_shape)
        was = self.training
        self.eval()
        try:
            out = [
                torch.softmax(self.classifier(x[i : i + batch_size].to(self.device)), -1).cpu()
                for i in range(0, x.shape[0], batch_size)
            ]
        finally:
            self.train(was)
        return torch.cat(out)

    def classify(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The most probable label under q(y | x), int64 ``[N]``."""
        return self.predict_proba(x, batch_size).argmax(-1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
        """Fraction of rows whose ``classify(x)`` equals ``y`` (in [0, 1])."""
        if y.shape != x.shape[:1]:
            raise ShapeError(f"y must have shape [{x.shape[0]}]; got {list(y.shape)}.")
        return float((self.classify(x, batch_size) == y.cpu()).float().mean())

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """(loc, scale) of q(z | x, y), each ``[N, latent_dim]``; ``y=None`` uses classify(x)."""
        check_data_shape(x, self.data_shape)
        y = self.classify(x).to(x.device) if y is None else y
        return self.encoder(x, self._one_hot(y.long()))

    @torch.no_grad()
    def reconstruct(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        mean: bool | None = None,
    ) -> torch.Tensor:
        """Decode q's means: E[x | y, z = E_q[z | x, y]] with y the known label where
        ``observed`` (as in a batch), else ``classify(x)`` (a sample of x if not ``mean``;
        None: the mean where the likelihood has one, else a sample)."""
        guess = self.classify(x).to(x.device)
        if y is not None:
            y, observed = self._labels(x, y, observed)
            guess = torch.where(observed, y, guess)
        loc, _ = self.encode(x, guess)
        y = guess.to(loc.device)
        params = self.decoder(loc, self._one_hot(y))
        if mean is None:
            mean = self.likelihood.has_mean
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    # -- a chosen label, by name -------------------------------------------------------------
    @property
    def attributes(self) -> list[dict]:
        """``[{"name": "label", "kind": "categorical", "values": class_names}]``: what
        :meth:`generate` can fix, in the form of a CVAE's attribute specs."""
        return [{"name": LABEL, "kind": "categorical", "values": list(self.class_names)}]

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return (LABEL,)

    def parse_label(self, value) -> int:
        """The class index of ``value``: a class name (``"heart"``) or an index (``2``,
        ``"2"``); a DataError lists the valid classes."""
        if isinstance(value, str) and value in self.class_names:
            return self.class_names.index(value)
        try:
            i = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            i = None
        if i is not None and 0 <= i < self.num_classes and not isinstance(value, bool):
            return i
        raise DataError(
            f"{value!r} is not a class of {LABEL!r}; valid: {', '.join(self.class_names)} (or "
            f"their indices 0..{self.num_classes - 1})."
            + did_you_mean(str(value), self.class_names)
        )

    @torch.no_grad()
    def generate(
        self,
        n: int,
        y: dict | None = None,
        *,
        seed: int | None = None,
        mean: bool = False,
    ) -> torch.Tensor:
        """``n`` images ``[n, *data_shape]`` of a chosen class: x ~ p(x | y, z), z ~ p(z),
        with ``y = {"label": NAME_OR_INDEX}`` (as a CVAE's ``generate``; no ``"label"``: drawn
        from p(y)); ``mean=True`` gives E[x | y, z]. Raises ConfigError for another name and
        DataError for a value that is no class, both listing the valid ones."""
        if int(n) < 1:
            raise ConfigError(f"the number of samples must be >= 1; got {n}.")
        labels = None
        for name, value in (y or {}).items():
            if name != LABEL:
                raise ConfigError(
                    f"unknown attribute {name!r}; this model's attributes are: {LABEL} "
                    f"(categorical: {', '.join(self.class_names)})."
                    + did_you_mean(str(name), [LABEL])
                )
            labels = torch.full((int(n),), self.parse_label(value), dtype=torch.long)
        return self.sample(int(n), y=labels, seed=seed, mean=mean)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        y: torch.Tensor | None = None,
        seed: int | None = None,
        mean: bool = False,
    ) -> torch.Tensor:
        """``n`` draws from p(y) p(z) p(x | y, z) (``y`` ``[n]``: those labels); ``mean=True``
        gives E[x | y, z]."""
        if int(n) < 1:
            raise ConfigError(f"the number of samples must be >= 1; got {n}.")
        g = make_generator(seed, None, self.device)
        if y is None:
            y = torch.randint(self.num_classes, (int(n),), generator=g, device=self.device)
        elif y.shape != (int(n),) or int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise DataError(f"y must be {n} labels in 0..{self.num_classes - 1}.")
        z = torch.randn(int(n), self.latent_dim, generator=g, device=self.device)
        params = self.decoder(z, self._one_hot(y.to(self.device).long()))
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params, g)


def _check_num_labels(num_labels: int, num_train: int, name: str) -> None:
    """ConfigError when more labels are asked for than ``name`` has training images."""
    if num_labels > num_train:
        raise ConfigError(
            f"num_labels {num_labels} is more than the {num_train} training images of {name!r}; "
            f"choose at most {num_train} (--num-labels {num_train} labels them all) or more "
            "training images."
        )


def _warn_no_labels() -> None:
    """The classifier q(y|x) of a model built with num_labels = 0 never sees a label."""
    warnings.warn(
        "num_labels = 0: no training image keeps its label, so q(y|x) never sees one and "
        "learns unsupervised clusters in an arbitrary order; its accuracy against the true "
        "labels will be about chance. Give --num-labels N > 0 for a semi-supervised model.",
        UserWarning,
        stacklevel=3,
    )
