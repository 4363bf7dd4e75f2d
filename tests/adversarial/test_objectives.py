"""Adversarial objectives pinned to closed forms: the optimal critic's value of each f-GAN bound
is D_f(P ‖ Q), the GAN's is 2 JSD − log 4, and WGAN-GP's penalty on a linear critic."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_gen.adversarial.objectives import (
    ESTIMATE_LABELS,
    F_DIVERGENCES,
    OBJECTIVES,
    critic_loss,
    divergence_estimate,
    estimate_label,
    generator_loss,
    gradient_penalty,
)
from pyro_gen.errors import ConfigError

# two distributions on 3 points; "samples" repeat each point by its probability x 10, so a mean
# over them is the expectation exactly
P = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
Q = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
COUNTS_P, COUNTS_Q = (P * 10).round().long(), (Q * 10).round().long()
U = P / Q  # density ratio per point


def _samples(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(values, counts)


# v* = g⁻¹(f'(u)) per divergence (Nowozin et al. 2016: T* = f'(p/q))
OPTIMAL_V = {
    "kl": lambda u: torch.log(u) + 1,
    "reverse_kl": torch.log,
    "js": torch.log,
    "pearson": lambda u: 2 * (u - 1),
    "hellinger": lambda u: 0.5 * torch.log(u),
}


def _jsd(p: torch.Tensor, q: torch.Tensor) -> float:
    m = (p + q) / 2
    return float(0.5 * (p * torch.log(p / m)).sum() + 0.5 * (q * torch.log(q / m)).sum())


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_f_gan_optimal_value_is_the_divergence(name):
    fd = F_DIVERGENCES[name]
    exact = float((Q * fd.f(U)).sum())  # D_f(P ‖ Q) = Σ q f(p/q)
    v = OPTIMAL_V[name](U)
    real, fake = _samples(v, COUNTS_P), _samples(v, COUNTS_Q)
    assert float(divergence_estimate(name, real, fake)) == pytest.approx(exact, abs=1e-12)
    assert float(critic_loss(name, real, fake)) == pytest.approx(-exact, abs=1e-12)
    # any other critic gives a lower bound
    for shift in (-0.3, 0.2):
        worse = divergence_estimate(name, real + shift, fake + shift)
        assert float(worse) < exact


def test_named_divergences_match_their_closed_forms():
    kl = float((P * torch.log(P / Q)).sum())
    assert float((Q * F_DIVERGENCES["kl"].f(U)).sum()) == pytest.approx(kl)
    reverse = float((Q * torch.log(Q / P)).sum())
    assert float((Q * F_DIVERGENCES["reverse_kl"].f(U)).sum()) == pytest.approx(reverse)
    assert float((Q * F_DIVERGENCES["js"].f(U)).sum()) == pytest.approx(2 * _jsd(P, Q))
    chi2 = float(((P - Q) ** 2 / Q).sum())
    assert float((Q * F_DIVERGENCES["pearson"].f(U)).sum()) == pytest.approx(chi2)
    h2 = float(0.5 * ((P.sqrt() - Q.sqrt()) ** 2).sum())
    assert float((Q * F_DIVERGENCES["hellinger"].f(U)).sum()) == pytest.approx(2 * h2)


def test_gan_optimal_critic_value_is_jsd():
    # D* = p / (p + q): logit D* = log(p/q)
    v = torch.log(U)
    real, fake = _samples(v, COUNTS_P), _samples(v, COUNTS_Q)
    value = -float(critic_loss("minimax", real, fake))  # E_P log D* + E_Q log(1 − D*)
    assert value == pytest.approx(2 * _jsd(P, Q) - math.log(4), abs=1e-12)
    assert float(divergence_estimate("nonsaturating", real, fake)) == pytest.approx(
        _jsd(P, Q), abs=1e-12
    )


def test_generator_losses():
    fake = torch.tensor([0.5, -1.0], dtype=torch.float64)
    d = torch.sigmoid(fake)
    assert float(generator_loss("minimax", fake)) == pytest.approx(float(torch.log(1 - d).mean()))
    assert float(generator_loss("nonsaturating", fake)) == pytest.approx(
        float(-torch.log(d).mean())
    )
    assert float(generator_loss("wgan-gp", fake)) == pytest.approx(0.25)
    assert float(generator_loss("kl", fake)) == pytest.approx(0.25)
    for name in OBJECTIVES:
        assert torch.isfinite(generator_loss(name, fake * 50))
        assert torch.isfinite(critic_loss(name, fake * 3, fake * 3))


def test_wgan_critic_loss_and_w1():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert float(critic_loss("wgan-gp", real, fake)) == -2.0
    assert float(divergence_estimate("wgan-gp", real, fake)) == 2.0


@pytest.mark.parametrize("w_norm", [0.3, 1.0, 2.5])
def test_gradient_penalty_of_a_linear_critic(w_norm):
    # critic(x) = w·x + b has gradient w everywhere: the penalty is λ (‖w‖ − 1)²
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64)
    w = w / w.norm() * w_norm

    def critic(x):
        return x.reshape(x.shape[0], -1) @ w + 0.7

    real = torch.randn(7, 5, dtype=torch.float64)
    fake = torch.randn(7, 5, dtype=torch.float64)
    pen = gradient_penalty(critic, (real,), (fake,), weight=10.0)
    assert float(pen) == pytest.approx(10 * (w_norm - 1) ** 2, abs=1e-9)


def test_gradient_penalty_of_a_pair_critic_uses_the_joint_norm():
    wx = torch.tensor([3.0, 0.0], dtype=torch.float64)
    wz = torch.tensor([4.0], dtype=torch.float64)

    def critic(x, z):
        return x @ wx + z @ wz

    pen = gradient_penalty(
        critic,
        (torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)),
        (torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)),
        weight=1.0,
    )
    assert float(pen) == pytest.approx((5.0 - 1) ** 2)


def test_gradient_penalty_is_differentiable_in_the_critic():
    w = torch.tensor([2.0, 0.0], requires_grad=True)
    pen = gradient_penalty(lambda x: x @ w, (torch.ones(3, 2),), (torch.zeros(3, 2),), weight=1.0)
    (grad,) = torch.autograd.grad(pen, w)
    assert torch.allclose(grad, torch.tensor([2.0, 0.0]))  # d/dw (‖w‖ − 1)² = 2(‖w‖−1) w/‖w‖


def test_unknown_objective():
    with pytest.raises(ConfigError, match="nonsaturating"):
        critic_loss("non-saturating", torch.zeros(1), torch.zeros(1))


def test_estimate_labels_name_the_quantity_each_objective_reports():
    # exact discrete case: P = (1/2, 1/2), Q = (1/4, 3/4); optimal logit v = log p/q for both
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    v = torch.log(p / q).double()
    real, fake = v[[0, 1]], v[[0, 1, 1, 1]]  # samples in exact proportions
    m = (p + q) / 2
    jsd = float(0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())
    assert float(divergence_estimate("minimax", real, fake)) == pytest.approx(jsd, rel=1e-6)
    assert float(divergence_estimate("js", real, fake)) == pytest.approx(2 * jsd, rel=1e-6)
    assert estimate_label("minimax").startswith("JSD(P, Q) (nats")
    assert estimate_label("js").startswith("D_JS,f = 2·JSD(P, Q) (nats")
    # hellinger: T* = f'(u) = 1 − u^{−½} = 1 − e^{−v} at v = ½ log p/q; D_f = ∫(√p − √q)² = 2 H²
    two_h2 = float(((p.sqrt() - q.sqrt()) ** 2).sum())
    hellinger = float(divergence_estimate("hellinger", real / 2, fake / 2))
    assert hellinger == pytest.approx(two_h2, rel=1e-5)
    assert estimate_label("hellinger").startswith("2·H²(P, Q)")
    assert set(ESTIMATE_LABELS) == set(OBJECTIVES)
    with pytest.raises(ConfigError):
        estimate_label("jsd")
