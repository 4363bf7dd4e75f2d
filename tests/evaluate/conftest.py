"""A linear-Gaussian model in raw Pyro, whose log p(x) and posterior are known in closed form.

z ~ N(0, I_L),   x | z ~ N(W z + b, σ² I_D)   =>   p(x) = N(b, W Wᵀ + σ² I),
p(z | x) = N(Σ Wᵀ (x − b) / σ², Σ),   Σ = (I + Wᵀ W / σ²)⁻¹
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn


class LinearGaussian(nn.Module):
    """``guide``: "exact" (the posterior, a full-covariance MVN), "meanfield" (the posterior's
    marginals, ``widen`` times wider and moved by ``shift``) or "prior"."""

    def __init__(self, W, b, sigma, guide="exact", widen=1.0, shift=0.0, plate="data"):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)
        self.sigma, self.kind, self.widen, self.shift, self.plate = (
            sigma,
            guide,
            widen,
            shift,
            plate,
        )

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def posterior(self, x):
        L = self.latent_dim
        prec = torch.eye(L, dtype=x.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(prec)
        loc = (x - self.b) @ self.W @ cov / self.sigma**2  # cov symmetric
        return loc, cov

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0], dtype=x.dtype)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def model(self, x):
        with pyro.plate(self.plate, x.shape[0]):
            zeros = x.new_zeros(self.latent_dim)
            z = pyro.sample("z", dist.Normal(zeros, zeros + 1).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide_params(self, x):
        loc, cov = self.posterior(x)
        return loc + self.shift, cov.diagonal().sqrt().expand_as(loc) * self.widen

    def guide(self, x):
        with pyro.plate(self.plate, x.shape[0]):
            if self.kind == "exact":
                loc, cov = self.posterior(x)
                pyro.sample(
                    "z", dist.MultivariateNormal(loc, scale_tril=torch.linalg.cholesky(cov))
                )
            elif self.kind == "meanfield":
                loc, scale = self.guide_params(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            else:
                zeros = x.new_zeros(x.shape[0], self.latent_dim)
                pyro.sample("z", dist.Normal(zeros, zeros + 1).to_event(1))


def make_linear_gaussian(D=5, L=2, sigma=0.5, seed=0, **kw) -> LinearGaussian:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, L, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    return LinearGaussian(W, b, sigma, **kw)


def sample_x(m: LinearGaussian, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, m.latent_dim, generator=g, dtype=torch.float64)
    return (
        z @ m.W.T + m.b + m.sigma * torch.randn(n, m.W.shape[0], generator=g, dtype=torch.float64)
    )


@pytest.fixture
def lg():
    """(model factory, data): 20 datapoints from the model with seed 0."""
    m = make_linear_gaussian()
    return make_linear_gaussian, sample_x(m, 20)
