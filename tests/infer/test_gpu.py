"""CUDA paths: training on the GPU, the sync-free loss, the deferred non-finite guard.

Marked ``gpu`` (left out of the default run; ``pytest -m gpu``) and skipped without CUDA.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.errors import NonFiniteError
from pyro_gen.evaluate import evaluate_elbo, log_likelihood
from pyro_gen.infer import Trainer, make_elbo
from pyro_gen.models import VAE, load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _data(n: int = 256, d: int = 16) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_training_on_cuda_keeps_parameters_there_and_is_finite(tmp_path, elbo):
    vae = VAE(data_shape=(16,), latent_dim=2, hidden=(32,))
    run = tmp_path / "run"
    trainer = Trainer(
        vae,
        device="cuda",
        batch_size=32,
        max_steps=20,
        log_every=5,
        elbo=elbo,
        progress=False,
        run_dir=run,
    )
    history = trainer.fit(_data(), _data(64))
    assert all(p.device.type == "cuda" for p in vae.parameters())
    losses = torch.tensor([r["loss"] for r in history if r["loss"] != ""])
    assert len(losses) > 0 and torch.isfinite(losses).all()
    model = load_model(run)  # the run folder loads on the CPU
    assert next(model.parameters()).device.type == "cpu"
    # the same weights evaluated on the GPU and on the CPU estimate the same numbers (their
    # noise differs): agreement within Monte-Carlo error pins the CUDA path's values
    x = _data(64)
    on_cpu = evaluate_elbo(model, x, num_particles=200)
    on_gpu = evaluate_elbo(vae, x, num_particles=200)
    se = float((on_cpu.elbo - on_gpu.elbo).std() / 64**0.5) + 1e-3
    assert abs(float(on_cpu.elbo.mean() - on_gpu.elbo.mean())) < 5 * se
    pyro.set_rng_seed(0)
    lp_cpu = log_likelihood(model, x, num_samples=500)
    lp_gpu = log_likelihood(vae, x, num_samples=500)  # its [K, N] tables live on the GPU
    assert abs(float(lp_cpu.mean() - lp_gpu.cpu().mean())) < 0.5


def test_fused_adam_on_cuda():
    vae = VAE(data_shape=(16,), latent_dim=2, hidden=(32,))
    history = Trainer(
        vae, device="cuda", batch_size=32, max_steps=10, log_every=5, fused=True, progress=False
    ).fit(_data())
    assert torch.isfinite(torch.tensor([r["loss"] for r in history])).all()


@pytest.mark.parametrize("name", ["trace", "meanfield"])
def test_the_loss_and_its_gradient_do_not_synchronise(name):
    vae = VAE(data_shape=(16,), latent_dim=2, hidden=(32,)).cuda()
    x = _data(32).cuda()
    elbo = make_elbo(name)
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        elbo.differentiable_loss(vae.model, vae.guide, x).backward()  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss = elbo.differentiable_loss(vae.model, vae.guide, x)
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


class _NaNAt(nn.Module):
    """A Gaussian model whose loss turns NaN from the step ``bad`` on."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(4))
        self.calls, self.bad = 0, bad

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(4), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        self.calls += torch.is_grad_enabled()  # training calls only (checks run without grad)
        loc = self.loc * (float("nan") if self.calls > self.bad else 1.0)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc.expand(x.shape), 1.0).to_event(1))


def test_deferred_guard_names_the_first_bad_step():
    net = _NaNAt(bad=7)  # the 8th training call of the guide is step 7
    trainer = Trainer(
        net.model,
        net.guide,
        module=net,
        device="cuda",
        batch_size=16,
        max_steps=40,
        log_every=10,
        validate=False,
        progress=False,
    )
    with pytest.raises(NonFiniteError, match=r"non-finite at step 7 .*every log_every=10"):
        trainer.fit(torch.randn(256, 4))
    assert trainer.state.step == 10  # found at the first log row after it


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_captured_loss_on_cuda_matches_eager(elbo):
    """The replayed graph draws the same CUDA noise as the eager program (same generator
    offsets), so the two trainings agree to float round-off."""
    x = _data().cuda()
    weights = []
    for mode in ("off", "auto"):
        torch.manual_seed(0)
        vae = VAE(data_shape=(16,), latent_dim=2, hidden=(32,))
        trainer = Trainer(
            vae, device="cuda", batch_size=32, max_steps=12, elbo=elbo, progress=False, capture=mode
        )
        trainer.fit(x)
        weights.append(torch.cat([p.detach().flatten() for p in vae.parameters()]))
        assert (trainer.loss.stats["replays"] > 0) == (mode == "auto")
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)
