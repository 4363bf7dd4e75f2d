"""Sample quality for any generator (GAN or VAE alike): how close are its samples to real data?

Every metric compares real samples ``[N, ...]`` with generated ones ``[M, ...]``, either raw
(flattened) or in a feature space given by a ``features`` callable (e.g. a classifier trained on
real data, :meth:`pyro_gen.evaluate.judge.Judge.features`):

* :func:`classifier_two_sample_test` — accuracy of a classifier told to separate real from
  generated on held-out samples; 0.5 = indistinguishable (Lopez-Paz & Oquab 2017), with the
  binomial p-value of "accuracy = 0.5".
* :func:`frechet_distance` — ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}) between Gaussians
  fitted to the features (Heusel et al. 2017's FID, here in a small classifier's features: the
  numbers are comparable only with the same features).
* :func:`precision_recall` — k-NN precision (share of generated samples inside the real data's
  manifold: fidelity) and recall (share of real samples inside the generated manifold:
  coverage), a manifold being the union of balls reaching each point's k-th nearest neighbour
  (Kynkäänniemi et al. 2019).
* :func:`mmd` — the unbiased estimate of MMD² with a Gaussian RBF kernel
  k(a, b) = exp(−‖a − b‖² / (2σ²)), σ the median pairwise distance of the pooled samples (median
  heuristic) unless given (Gretton et al. 2012, eq. 3).
* :func:`class_histogram` — the classes a classifier assigns to the samples: their proportions,
  entropy, classes covered and KL to the real data's proportions. A collapsed generator puts its
  mass on few classes (mode collapse).

:func:`sample_quality` runs them all and returns one flat dict.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> a, b = torch.randn(200, 3, generator=g), torch.randn(200, 3, generator=g) + 2
>>> mmd(a, b).mmd2 > mmd(a, torch.randn(200, 3, generator=g)).mmd2
True
>>> round(frechet_distance(a, a), 6)
0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.nn.critic import MLPCritic, train_binary_classifier

__all__ = [
    "C2STResult",
    "MMDResult",
    "PrecisionRecall",
    "ClassHistogram",
    "classifier_two_sample_test",
    "frechet_distance",
    "gaussian_frechet_distance",
    "precision_recall",
    "mmd",
    "class_histogram",
    "sample_quality",
]

Features = Callable[[torch.Tensor], torch.Tensor]


def _flat(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 2:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{what} must be a tensor [N, ...] with N >= 2; got {shape}.")
    x = x.reshape(x.shape[0], -1).double()
    if not torch.isfinite(x).all():
        raise DataError(f"{what} holds NaN or Inf values.")
    return x


def _pair(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r, f = _flat(real, "real"), _flat(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ShapeError(
            f"real and fake must have the same number of features per sample; got "
            f"{r.shape[1]} and {f.shape[1]}."
        )
    return r, f


# -- classifier two-sample test ------------------------------------------------------------------
@dataclass
class C2STResult:
    """``accuracy`` on held-out samples (class-balanced: the mean of the real and the fake
    held-out accuracies; 0.5 = indistinguishable), its one-sided ``p_value`` under
    "accuracy = 0.5" (normal approximation), ``num_test`` held-out real samples and
    ``num_duplicates_dropped`` held-out rows left out as exact copies of the other class's
    training rows."""

    accuracy: float
    p_value: float
    num_test: int
    num_duplicates_dropped: int = 0


def classifier_two_sample_test(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    hidden: Sequence[int] = (128,),
    steps: int = 500,
    holdout: float = 0.5,
    seed: int = 0,
) -> C2STResult:
    """Train an MLP to tell ``real`` from ``fake`` (raw or feature vectors ``[N, ...]``) on one
    part of each and report its accuracy on the rest (Lopez-Paz & Oquab 2017, §2).

    Memorised samples: a held-out fake that is an exact copy of a real *training* row was
    trained on as "real", so it would be called real and pull the accuracy below 0.5 (e.g.
    ``classifier_two_sample_test(a, a.clone())`` gave 0.445); likewise a held-out real row that
    copies a fake training row. Such rows are dropped from the held-out parts (counted in
    ``num_duplicates_dropped``; ``num_test`` is the held-out size per class before dropping);
    a generator that copies its training data is better caught by a nearest-neighbour check
    than by this test. Needs at least 4 samples of each (2 to train, 2 held out); raises
    DataError otherwise.

    >>> a = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    >>> r = classifier_two_sample_test(a, a.clone(), steps=50)
    >>> r.num_duplicates_dropped > 0 and 0.4 < r.accuracy < 0.6
    True
    """
    r, f = _pair(real, fake)
    r, f = r.float(), f.float()
    n = min(r.shape[0], f.shape[0])
    if n < 4:
        raise DataError(
            f"too few samples for a two-sample test: {r.shape[0]} real and {f.shape[0]} fake; "
            "need at least 4 of each (2 to train the classifier, 2 held out), and hundreds "
            "for a meaningful accuracy."
        )
    g = torch.Generator().manual_seed(int(seed))
    r = r[torch.randperm(r.shape[0], generator=g)[:n]]
    f = f[torch.randperm(f.shape[0], generator=g)[:n]]
    k = max(1, int(round(holdout * n)))
    if k >= n - 1 or k < 2:
        raise ConfigError(
            f"holdout {holdout} of {n} samples leaves {n - k} to train and {k} held out; "
            "choose a holdout in (0, 1) that leaves at least 2 of each."
        )
    r_test, dropped_r = _drop_copies(r[:k], f[k:])
    f_test, dropped = _drop_copies(f[:k], r[k:])
    if f_test.shape[0] == 0 or r_test.shape[0] == 0:
        raise DataError(
            "every held-out sample of one side is an exact copy of a training sample of the "
            "other: the fakes are (memorised) real data, so the two-sample test cannot judge "
            "them."
        )
    mu, sd = r[k:].mean(0), r[k:].std(0) + 1e-6  # standardise on the training part
    r, f = (r - mu) / sd, (f - mu) / sd
    r_test, f_test = (r_test - mu) / sd, (f_test - mu) / sd
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        net = MLPCritic((r.shape[1],), hidden)
    train_binary_classifier(net, r[k:], f[k:], steps=steps, batch_size=256, generator=g)
    with torch.no_grad():
        acc_real = float((net(r_test) > 0).float().mean())
        acc_fake = float((net(f_test) <= 0).float().mean())
    kr, kf = r_test.shape[0], f_test.shape[0]
    accuracy = 0.5 * (acc_real + acc_fake)
    # one-sided normal approximation: Var(accuracy) = ¼ (¼/kr + ¼/kf) under chance
    z = (accuracy - 0.5) / math.sqrt(0.0625 * (1 / kr + 1 / kf))
    p_value = 0.5 * math.erfc(z / math.sqrt(2))
    return C2STResult(
        accuracy=accuracy, p_value=p_value, num_test=k, num_duplicates_dropped=dropped + dropped_r
    )


def _drop_copies(test: torch.Tensor, train_other: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rows of ``test`` that are not exact copies of a row of ``train_other``, and how many
    were dropped (a copy was trained on with the other class's label)."""
    seen = {row.numpy().tobytes() for row in train_other}
    keep = torch.tensor([row.numpy().tobytes() not in seen for row in test], dtype=torch.bool)
    return test[keep], int(test.shape[0] - keep.sum())


# -- Fréchet distance ------------------------------------------------------------------------------
def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def gaussian_frechet_distance(
    mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor
) -> float:
    """The squared 2-Wasserstein distance between N(mu1, cov1) and N(mu2, cov2):
    ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}) (Dowson & Landau 1982)."""
    mu1, mu2 = mu1.double().reshape(-1), mu2.double().reshape(-1)
    d = mu1.shape[0]
    cov1, cov2 = cov1.double().reshape(d, d), cov2.double().reshape(d, d)
    s1 = _sqrt_psd(cov1)
    cross = _sqrt_psd(s1 @ cov2 @ s1)
    value = (
        (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * torch.trace(cross)
    )
    return float(value.clamp(min=0))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to the rows of
    ``real`` ``[N, F]`` and ``fake`` ``[M, F]`` (feature vectors; other shapes are flattened).
    One-feature data ``[N]`` or ``[N, 1]`` works (covariances are kept ``[1, 1]``).
    In squared feature units; 0 for identical moments."""
    r, f = _pair(real, fake)
    return gaussian_frechet_distance(r.mean(0), _cov(r), f.mean(0), _cov(f))


def _cov(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance ``[F, F]`` of the rows of ``x`` ``[N, F]``; stays 2-D for F = 1
    (``torch.cov`` returns a 0-d tensor there)."""
    return torch.cov(x.T).reshape(x.shape[1], x.shape[1])


# -- k-NN precision / recall -----------------------------------------------------------------------
@dataclass
class PrecisionRecall:
    """k-NN ``precision`` (fidelity) and ``recall`` (coverage), each in [0, 1], with ``k``."""

    precision: float
    recall: float
    k: int


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 0 distance to itself is the first


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    return (torch.cdist(points, centres) <= radii.unsqueeze(0)).any(dim=1)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1–2): a sample is inside a
    set's manifold when it lies within the k-NN radius of some point of that set."""
    r, f = _pair(real, fake)
    if not 1 <= k < min(r.shape[0], f.shape[0]):
        raise ConfigError(f"k must be in [1, {min(r.shape[0], f.shape[0]) - 1}]; got {k}.")
    precision = float(_inside(f, r, _kth_radius(r, k)).double().mean())
    recall = float(_inside(r, f, _kth_radius(f, k)).double().mean())
    return PrecisionRecall(precision=precision, recall=recall, k=int(k))


# -- MMD -------------------------------------------------------------------------------------------
@dataclass
class MMDResult:
    """Unbiased MMD² (``mmd2``, may be slightly negative when P = Q) with a Gaussian RBF kernel
    of ``bandwidth`` σ."""

    mmd2: float
    bandwidth: float
    kernel: str = "gaussian rbf exp(-|a-b|^2 / (2 sigma^2)), sigma = median heuristic"


def mmd(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None) -> MMDResult:
    """Unbiased MMD² between the rows of ``x`` ``[N, ...]`` and ``y`` ``[M, ...]``:

        (1/(N(N−1))) Σ_{i≠j} k(x_i, x_j) + (1/(M(M−1))) Σ_{i≠j} k(y_i, y_j)
        − (2/(NM)) Σ_{i,j} k(x_i, y_j)

    with k(a, b) = exp(−‖a − b‖² / (2σ²)); σ = ``bandwidth`` or the median of the pooled
    samples' pairwise distances (Gretton et al. 2012, Lemma 6)."""
    a, b = _pair(x, y)
    if bandwidth is None:
        pooled = torch.cat([a, b])
        d = torch.pdist(pooled)
        bandwidth = float(d.median()) if d.numel() else 1.0
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    elif not bandwidth > 0:
        raise ConfigError(f"bandwidth must be > 0; got {bandwidth}.")
    gamma = 1.0 / (2 * bandwidth**2)
    n, m = a.shape[0], b.shape[0]
    kxx = torch.exp(-gamma * torch.cdist(a, a).pow(2))
    kyy = torch.exp(-gamma * torch.cdist(b, b).pow(2))
    kxy = torch.exp(-gamma * torch.cdist(a, b).pow(2))
    value = (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )
    return MMDResult(mmd2=float(value), bandwidth=float(bandwidth))


# -- class histogram -------------------------------------------------------------------------------
@dataclass
class ClassHistogram:
    """Class proportions of samples. ``counts`` per class; ``proportions``; ``entropy`` (nats;
    log K for a uniform spread); ``covered`` classes holding at least ``min_share`` of the
    samples; ``kl_to_reference`` KL(samples ‖ reference) in nats (reference: the real data's
    proportions, else uniform)."""

    counts: list[int]
    proportions: list[float]
    entropy: float
    covered: int
    kl_to_reference: float


def class_histogram(
    labels: torch.Tensor,
    num_classes: int,
    *,
    reference: torch.Tensor | None = None,
    min_share: float = 0.01,
) -> ClassHistogram:
    """The histogram of integer class ``labels`` ``[N]`` (e.g. a classifier's predictions on
    generated samples) over ``num_classes``; ``reference`` are labels whose proportions are the
    target (e.g. real data's), else uniform."""
    if labels.dim() != 1 or labels.numel() == 0:
        raise ShapeError(f"labels must be a non-empty [N] tensor; got {list(labels.shape)}.")
    labels = labels.long()
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}).")
    counts = torch.bincount(labels, minlength=num_classes).double()
    p = counts / counts.sum()
    if reference is None:
        q = torch.full_like(p, 1.0 / num_classes)
    else:
        q = torch.bincount(reference.long(), minlength=num_classes).double()
        q = q / q.sum()
    entropy = float(-(torch.xlogy(p, p)).sum())
    kl = float((torch.xlogy(p, p) - torch.xlogy(p, q.clamp(min=1e-12))).sum())
    return ClassHistogram(
        counts=[int(c) for c in counts],
        proportions=[float(v) for v in p],
        entropy=entropy,
        covered=int((p >= min_share).sum()),
        kl_to_reference=kl,
    )


# -- all of them -----------------------------------------------------------------------------------
def sample_quality(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    features: Features | None = None,
    classify: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_classes: int | None = None,
    real_labels: torch.Tensor | None = None,
    k: int = 3,
    c2st_steps: int = 500,
    seed: int = 0,
) -> dict:
    """All metrics of this module on ``real`` and ``fake`` samples, as one flat dict.

    ``features(x) -> [N, F]`` is the space of the Fréchet distance, precision/recall, MMD and
    the two-sample test (default: flattened pixels, which makes the Fréchet distance a pixel
    statistic; pass a classifier's features for an FID-like number). ``classify(x) -> labels
    [N]`` with ``num_classes`` adds the class histogram of the samples (``classes_*`` keys)
    next to the real data's: ``real_labels [N_real]`` (the true labels, when the data have
    them) or else ``classify(real)``; ``classes_reference`` says which.
    """
    fr = features(real) if features is not None else real
    ff = features(fake) if features is not None else fake
    fr, ff = fr.detach().cpu(), ff.detach().cpu()
    out: dict = {"num_real": int(real.shape[0]), "num_fake": int(fake.shape[0])}
    out["features"] = "classifier" if features is not None else "pixels"
    c2st = classifier_two_sample_test(fr, ff, steps=c2st_steps, seed=seed)
    out["c2st_accuracy"] = c2st.accuracy
    out["c2st_p_value"] = c2st.p_value
    out["frechet_distance"] = frechet_distance(fr, ff)
    pr = precision_recall(fr, ff, k=k)
    out["precision"], out["recall"], out["knn_k"] = pr.precision, pr.recall, pr.k
    m = mmd(fr, ff)
    out["mmd2"], out["mmd_bandwidth"] = m.mmd2, m.bandwidth
    if classify is not None:
        if num_classes is None:
            raise ConfigError("classify needs num_classes for the class histogram.")
        if real_labels is None:
            real_labels = classify(real).cpu()
            out["classes_reference"] = "judge predictions"
        else:
            real_labels = torch.as_tensor(real_labels).long().cpu()
            out["classes_reference"] = "true labels"
        hist = class_histogram(classify(fake).cpu(), num_classes, reference=real_labels)
        real_hist = class_histogram(real_labels, num_classes)
        for key, value in asdict(hist).items():
            out[f"classes_{key}"] = value
        out["classes_real_proportions"] = real_hist.proportions
        out["classes_real_entropy"] = real_hist.entropy
    return out
