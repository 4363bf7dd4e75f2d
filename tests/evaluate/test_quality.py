"""Sample-quality metrics pinned to closed forms and exact small cases."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_gen.errors import DataError, ShapeError
from pyro_gen.evaluate.quality import (
    class_histogram,
    classifier_two_sample_test,
    frechet_distance,
    gaussian_frechet_distance,
    mmd,
    precision_recall,
    sample_quality,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- Fréchet distance --------------------------------------------------------------------------
def test_frechet_of_diagonal_gaussians_is_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([2.0, 2.0, 1.5])
    exact = float((mu1 - mu2).pow(2).sum() + (s1 - s2).pow(2).sum())  # 5 + 1 + 0 + 1
    value = gaussian_frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert value == pytest.approx(exact, abs=1e-9)


def test_frechet_of_non_commuting_covariances_matches_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    g = _gen(0)
    a, b = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g)
    c1, c2 = a @ a.T + 0.1 * torch.eye(4), (b @ b.T).double() + 0.1 * torch.eye(4)
    mu1, mu2 = torch.zeros(4), torch.ones(4)
    cross = linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    exact = 4.0 + float(torch.trace(c1) + torch.trace(c2)) - 2 * float(cross.trace())
    assert gaussian_frechet_distance(mu1, c1, mu2, c2) == pytest.approx(exact, rel=1e-8)


def test_frechet_from_samples_approaches_the_closed_form():
    g = _gen(1)
    x = torch.randn(20000, 3, generator=g)
    y = torch.randn(20000, 3, generator=g) * torch.tensor([1.0, 2.0, 1.0]) + 1.0
    exact = 3.0 + 1.0  # ‖μ‖² = 3, (σ1 − σ2)² summed = 1
    assert frechet_distance(x, y) == pytest.approx(exact, abs=0.1)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


# -- MMD ---------------------------------------------------------------------------------------
def test_mmd_exact_small_case():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[0.0], [2.0]])
    k = lambda d: math.exp(-(d**2) / 2)  # noqa: E731  σ = 1
    exact = k(1) + k(2) - 2 * (k(0) + k(2) + k(1) + k(1)) / 4
    assert mmd(x, y, bandwidth=1.0).mmd2 == pytest.approx(exact, abs=1e-12)


def test_mmd_is_zero_in_expectation_for_identical_distributions_and_positive_for_shifted():
    same, shifted = [], []
    for seed in range(20):
        g = _gen(100 + seed)
        a, b = torch.randn(60, 2, generator=g), torch.randn(60, 2, generator=g)
        same.append(mmd(a, b).mmd2)
        shifted.append(mmd(a, b + 1.0).mmd2)
    same_t = torch.tensor(same)
    se = float(same_t.std()) / math.sqrt(len(same))
    assert abs(float(same_t.mean())) < 3 * se
    assert min(same) < 0 < max(same)  # unbiased: it takes both signs
    assert min(shifted) > max(same)


def test_mmd_median_heuristic_bandwidth():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0], [4.0]])
    # pooled pairwise distances 1, 3, 4, 2, 3, 1 -> median (torch: lower middle) 2
    assert mmd(x, y).bandwidth == 2.0


# -- precision / recall --------------------------------------------------------------------------
def test_precision_recall_exact_small_case():
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])  # k=1 radii 1, 1, 1, 8
    fake = torch.tensor([[0.5], [5.0], [30.0]])  # k=1 radii 4.5, 4.5, 25
    pr = precision_recall(real, fake, k=1)
    assert pr.precision == pytest.approx(2 / 3)  # 30 is 20 from 10 > 8
    assert pr.recall == 1.0  # 10 lies within 25 of 30


def test_mode_collapse_keeps_precision_and_loses_recall():
    g = _gen(2)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    real = centres[torch.arange(400) % 4] + 0.3 * torch.randn(400, 2, generator=g)
    collapsed = centres[0] + 0.3 * torch.randn(400, 2, generator=g)
    good = centres[torch.arange(400) % 4] + 0.3 * torch.randn(400, 2, generator=g)
    pr_bad, pr_good = precision_recall(real, collapsed), precision_recall(real, good)
    assert pr_bad.precision > 0.9 and pr_bad.recall < 0.3
    assert pr_good.precision > 0.9 and pr_good.recall > 0.9


# -- two-sample test ---------------------------------------------------------------------------
def test_c2st_chance_for_identical_and_high_for_different():
    g = _gen(3)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    same = classifier_two_sample_test(a, b, hidden=(32,), steps=150, seed=0)
    assert abs(same.accuracy - 0.5) < 0.06 and same.p_value > 0.01
    diff = classifier_two_sample_test(a, b + 1.5, hidden=(32,), steps=150, seed=0)
    # Bayes accuracy of N(0, I) vs N(1.5·1, I): Φ(‖Δ‖/2) = Φ(1.06) = 0.855
    assert diff.accuracy == pytest.approx(0.855, abs=0.04) and diff.p_value < 1e-6


def test_c2st_drops_held_out_fakes_that_copy_real_training_rows_and_needs_four_samples():
    a = torch.randn(400, 2, generator=_gen(4))
    r = classifier_two_sample_test(a, a.clone(), hidden=(32,), steps=100, seed=0)
    # 200 held out per class; rows copying the other class's training rows are dropped (~half)
    assert 120 < r.num_duplicates_dropped < 280 and r.num_test == 200
    # what is left is the same rows on both sides, so exactly chance (was 0.445 with copies in)
    assert r.accuracy == pytest.approx(0.5) and r.p_value == pytest.approx(0.5)
    b = torch.randn(400, 2, generator=_gen(5))
    assert classifier_two_sample_test(a, b, steps=10).num_duplicates_dropped == 0
    for n in (2, 3):
        with pytest.raises(DataError, match="too few samples"):
            classifier_two_sample_test(torch.randn(n, 2), torch.randn(n, 2))
    assert classifier_two_sample_test(torch.randn(4, 2), torch.randn(4, 2), steps=5).num_test == 2


# -- class histogram ---------------------------------------------------------------------------
def test_class_histogram_exact():
    h = class_histogram(torch.tensor([0, 0, 1, 1]), 4)
    assert h.counts == [2, 2, 0, 0] and h.covered == 2
    assert h.entropy == pytest.approx(math.log(2))
    assert h.kl_to_reference == pytest.approx(math.log(2))  # KL((½,½,0,0) ‖ uniform of 4)
    ref = class_histogram(torch.tensor([0, 1, 2, 3]), 4, reference=torch.tensor([0, 1, 2, 3]))
    assert ref.kl_to_reference == pytest.approx(0.0) and ref.entropy == pytest.approx(math.log(4))


def test_bad_inputs():
    with pytest.raises(ShapeError, match="same number of features"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(torch.zeros(4, 2), torch.full((4, 2), float("nan")))
    with pytest.raises(DataError, match="lie in"):
        class_histogram(torch.tensor([0, 5]), 3)


def test_sample_quality_with_features_and_classes():
    g = _gen(4)
    real = torch.rand(300, 1, 4, 4, generator=g)
    fake = torch.rand(300, 1, 4, 4, generator=g) * 0.5

    def features(x):
        return x.reshape(x.shape[0], -1)[:, :5]

    def classify(x):
        return (x.reshape(x.shape[0], -1).mean(1) > 0.4).long()

    out = sample_quality(
        real, fake, features=features, classify=classify, num_classes=2, c2st_steps=100
    )
    for key in (
        "c2st_accuracy",
        "frechet_distance",
        "precision",
        "recall",
        "mmd2",
        "classes_proportions",
        "classes_real_proportions",
    ):
        assert key in out
    assert out["features"] == "classifier"
    assert out["classes_proportions"][0] > 0.9  # the darker fakes fall in class 0
    assert out["c2st_accuracy"] > 0.8


def test_frechet_and_sample_quality_on_one_feature_data():
    # 1-D closed form (m1 - m2)^2 + (s1 - s2)^2: fake = 3 a + 2 gives (2 + 2 m)^2 + 4 s^2
    a = torch.randn(500, 1, generator=_gen(0))
    m, var = float(a.double().mean()), float(a.double().var())
    exact = (2 + 2 * m) ** 2 + 4 * var
    assert frechet_distance(a, a + 2) == pytest.approx(4.0, abs=1e-6)
    assert frechet_distance(a, 3 * a + 2) == pytest.approx(exact, rel=1e-6)
    assert frechet_distance(a[:, 0], 3 * a[:, 0] + 2) == pytest.approx(exact, rel=1e-6)
    out = sample_quality(a, a + 2, c2st_steps=20)
    assert out["frechet_distance"] == pytest.approx(4.0, abs=1e-6)
