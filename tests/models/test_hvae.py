"""The two-layer hierarchical VAE: closed-form log p(x) in the linear-Gaussian case, per-layer
diagnostics, the contract."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import diagnose, log_likelihood
from pyro_gen.models import MODELS
from pyro_gen.models.hvae import HierarchicalVAE
from tests.contract import ModelContract
from tests.models.test_contract_vae import binary


def _set(head, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor) -> None:
    """A Gaussian head with loc = weight @ h + bias and the constant ``scale`` (raw weights 0)."""
    with torch.no_grad():
        head.loc.weight.copy_(weight)
        head.loc.bias.copy_(bias)
        head.raw_scale.weight.zero_()
        head.raw_scale.bias.copy_(torch.log(torch.expm1(scale - head.min_scale)))


def test_registered_with_burdas_two_layer_mnist_defaults():
    assert MODELS["hvae"] is HierarchicalVAE
    m = HierarchicalVAE()
    assert m.latent_dims == (100, 50) and m.data_shape == (1, 28, 28)


def test_log_likelihood_matches_the_linear_gaussian_closed_form():
    """z2 ~ N(0, 1), z1 | z2 ~ N(L z2 + l, diag s1²), x | z1 ~ N(B z1 + b, σ² I):
    x ~ N(B l + b, B (L Lᵀ + diag s1²) Bᵀ + σ² I). With the guide set to the exact posterior
    (linear-Gaussian, and diagonal because BᵀB is), every importance weight is p(x): the
    estimate equals the closed form for any K."""
    torch.manual_seed(0)
    sigma = 0.5
    m = HierarchicalVAE(
        data_shape=(3,),
        latent_dims=(2, 1),
        hidden=(),
        hidden_top=(),
        likelihood="gaussian",
        scale=sigma,
    )
    L, lb, s1 = torch.tensor([[0.8], [-0.5]]), torch.tensor([0.3, -0.2]), torch.tensor([0.7, 0.4])
    B, b = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), torch.tensor([0.1, -0.3, 0.5])
    _set(m.p_z1[1], L, lb, s1)
    with torch.no_grad():
        m.decoder.net[0].weight.copy_(B)
        m.decoder.net[0].bias.copy_(b)
    S1 = torch.diag(s1**2)
    # q(z2 | x) = p(z2 | x): x | z2 ~ N(M z2 + c, C)
    M, c, C = B @ L, B @ lb + b, B @ S1 @ B.T + sigma**2 * torch.eye(3)
    P2 = 1.0 + M.T @ torch.linalg.solve(C, M)
    W2 = torch.linalg.solve(P2, M.T @ torch.linalg.inv(C))
    _set(m.q_z2[1], W2, -(W2 @ c), P2.inverse().diagonal().sqrt())
    # q(z1 | x, z2) = p(z1 | z2, x): precision S1⁻¹ + BᵀB/σ² (diagonal)
    P1 = torch.linalg.inv(S1) + B.T @ B / sigma**2
    V1 = torch.linalg.inv(P1)
    Wx, Wz = V1 @ B.T / sigma**2, V1 @ torch.linalg.inv(S1) @ L
    bias1 = V1 @ (torch.linalg.inv(S1) @ lb - B.T @ b / sigma**2)
    _set(m.q_z1[1], torch.cat([Wx, Wz], 1), bias1, V1.diagonal().sqrt())
    exact_dist = torch.distributions.MultivariateNormal(c, C + M @ M.T)
    x = exact_dist.sample((20,))
    exact = exact_dist.log_prob(x).double()
    estimate = log_likelihood(m, x, num_samples=8, seed=0)
    torch.testing.assert_close(estimate, exact, atol=2e-4, rtol=0)


def test_diagnose_reports_kl_and_active_units_per_layer():
    torch.manual_seed(0)
    m = HierarchicalVAE(data_shape=(6,), latent_dims=(3, 2), hidden=(8,), hidden_top=(4,))
    x = binary(30, (6,))["x"]
    d = diagnose(m, x, num_samples=10)  # K < 21: no PSIS (fast)
    per = d.summary()["per_site"]
    assert set(per) == {"z1", "z2"}
    assert per["z1"]["dims"] == 3 and per["z2"]["dims"] == 2
    with torch.no_grad():  # the top layer's KL is analytic: KL(q(z2|x) || N(0, I))
        loc, scale = m.q_z2(m._features(x))
        kl2 = torch.distributions.kl_divergence(
            torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)
        )
    assert per["z2"]["kl"] == pytest.approx(float(kl2.sum(-1).mean()), rel=1e-5)
    assert per["z1"]["kl"] > 0
    assert per["z1"]["active_units"] + per["z2"]["active_units"] == d.active_units


def test_bad_configuration_is_a_config_error():
    with pytest.raises(ConfigError, match="latent_dims"):
        HierarchicalVAE(data_shape=(4,), latent_dims=(3,))
    # nothing is truncated or taken apart silently: 8.5, True, "84", a bare int
    for dims in [(8.5, 4), (True, 4), "84", 8, (3, 0)]:
        with pytest.raises(ConfigError, match="latent_dims"):
            HierarchicalVAE(data_shape=(4,), latent_dims=dims)
    assert HierarchicalVAE(data_shape=(4,), latent_dims=[3.0, 2]).latent_dims == (3, 2)
    for beta in (0.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="beta"):
            HierarchicalVAE(data_shape=(4,), beta=beta)


def test_samples_and_reconstructions_have_the_data_shape():
    m = HierarchicalVAE(data_shape=(1, 4, 4), latent_dims=(3, 2), hidden=(8,), hidden_top=(4,))
    assert m.sample(5, seed=1).shape == (5, 1, 4, 4)
    assert torch.equal(m.sample(5, seed=1), m.sample(5, seed=1))
    assert m.reconstruct(torch.zeros(2, 1, 4, 4)).shape == (2, 1, 4, 4)


class TestHierarchicalVAE(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return HierarchicalVAE(data_shape=(12,), latent_dims=(4, 2), hidden=(16,), hidden_top=(8,))

    def make_data(self):
        return binary(self.num_data, (12,))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--model", "hvae", "--latent-dims", "3,2", "--hidden", "16", "--hidden-top", "8"],
        ["--model", "vamp_vae", "--latent-dim", "2", "--hidden", "16", "--num-components", "5"],
        ["--latent-dim", "2", "--hidden", "16", "--elbo", "iwae_dreg", "--num-particles", "3"],
    ],
)
def test_cli_trains_the_new_models_and_objectives(tmp_path, args):
    from pyro_gen.cli import main

    tiny = "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 16".split()
    run = tmp_path / "run"
    assert main(["train", *tiny, *args, "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    assert (run / "model.safetensors").is_file()
