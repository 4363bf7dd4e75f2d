"""The model's own classifier q(y|x): SSVAE label accuracy and a CVAE's inferred attributes,
found by what a model has (accuracy/classify, a guide that samples a left-out attribute)."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ShapeError
from pyro_gen.evaluate.classification import (
    classifier_scores,
    describe_scores,
    score_items,
)
from pyro_gen.models import CVAE, SSVAE, VAE

ATTRIBUTES = [
    {"name": "shape", "kind": "categorical", "values": ["a", "b", "c"]},
    {"name": "size", "kind": "continuous", "loc": 1.0, "scale": 2.0},
    {"name": "flag", "kind": "binary", "p": 0.5},
]


def _x(n: int = 6) -> torch.Tensor:
    return torch.bernoulli(
        torch.full((n, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(0)
    )


def test_ssvae_accuracy_is_that_of_classify_against_the_labels():
    torch.manual_seed(0)
    m = SSVAE(data_shape=(1, 4, 4), num_classes=3, latent_dim=2, hidden=(8,))
    x = _x()
    guess = m.classify(x)
    y = guess.clone()
    y[:2] = (y[:2] + 1) % 3  # two of six wrong
    m.train()
    state = torch.get_rng_state()
    s = classifier_scores(m, {"x": x, "y": y}, batch_size=4)
    assert s == {"accuracy": pytest.approx(4 / 6)}
    assert m.training and torch.equal(state, torch.get_rng_state())  # mode and RNG as they were
    assert describe_scores(s) == "test accuracy of q(y|x) 66.67%"
    with pytest.raises(ShapeError, match="one per row"):
        classifier_scores(m, {"x": x, "y": y[:3]})


def test_cvae_scores_come_from_the_guide_s_q_of_each_left_out_attribute(monkeypatch):
    """q(y|x) fixed by hand: class 1, size mean loc + scale * 0.5 = 2, flag p > 0.5 (logit 2):
    accuracy and mean absolute error in closed form, in chunks."""
    torch.manual_seed(0)
    m = CVAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), attributes=ATTRIBUTES, missing=True)
    fixed = torch.tensor([0.0, 3.0, 0.0, 0.5, 0.0, 2.0])  # shape logits, size (o0, o1), flag

    def q_net(x):
        return fixed.expand(*x.shape[:-3], 6)

    monkeypatch.setattr(m.attribute_net, "forward", q_net)
    x = _x()
    batch = {
        "x": x,
        "shape": torch.tensor([1, 1, 0, 2, 1, 0]),
        "size": torch.tensor([2.0, 3.0, 1.0, 2.5, 2.0, 0.0]),
        "flag": torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
    }
    state = torch.get_rng_state()
    s = classifier_scores(m, batch, batch_size=4)
    assert s["shape_accuracy"] == pytest.approx(3 / 6)
    assert s["size_mae"] == pytest.approx((0 + 1 + 1 + 0.5 + 0 + 2) / 6)
    assert s["flag_accuracy"] == pytest.approx(4 / 6)
    assert torch.equal(state, torch.get_rng_state())
    text = describe_scores(s)
    assert "accuracy of q(y|x)" in text and "shape 50.0%" in text and "size 0.75" in text
    assert ("size: mean absolute error of q(y|x)'s mean", "0.75") in score_items(s)


def test_models_without_a_classifier_get_none():
    x = _x()
    no_q = CVAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), attributes=ATTRIBUTES)
    batch = {"x": x, "shape": torch.zeros(6, dtype=torch.long), "size": torch.ones(6),
             "flag": torch.ones(6)}  # fmt: skip
    assert classifier_scores(no_q, batch) == {}  # attributes required: no q(y|x)
    assert classifier_scores(VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,)), {"x": x}) == {}
    assert describe_scores({}) == ""


def test_a_periodic_attributes_error_wraps_around(monkeypatch):
    """An angle with period 2π: q's mean 6.2 against a truth of 0.05 is 2π − 6.15 ≈ 0.133
    apart, not 6.15; non-periodic attributes keep the plain absolute error."""
    import math

    angle = {"name": "angle", "kind": "continuous", "loc": 0.0, "scale": 1.0, "period": 2 * math.pi}
    torch.manual_seed(0)
    m = CVAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), attributes=[angle], missing=True)
    fixed = torch.tensor([6.2, 0.0])  # q's mean: loc + scale * 6.2

    monkeypatch.setattr(m.attribute_net, "forward", lambda x: fixed.expand(*x.shape[:-3], 2))
    x = _x()[:2]
    s = classifier_scores(m, {"x": x, "angle": torch.tensor([0.05, 6.0])})
    expected = (2 * math.pi - 6.15 + 0.2) / 2
    assert s["angle_mae"] == pytest.approx(expected, abs=1e-5)
