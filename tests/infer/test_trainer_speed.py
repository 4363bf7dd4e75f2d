"""The trainer's fast loop is still Pyro's SVI step, bit for bit; the speed options work."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_gen.errors import ConfigError, NonFiniteError
from pyro_gen.infer import Trainer, latest_checkpoint, read_checkpoint
from pyro_gen.infer.callbacks import _DeferredCheck
from pyro_gen.models import VAE

N, D, B, STEPS = 64, 12, 16, 6


def _vae() -> VAE:
    torch.manual_seed(7)
    return VAE(data_shape=(D,), latent_dim=3, hidden=(16,))


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.bernoulli(torch.full((N, D), 0.3), generator=torch.Generator().manual_seed(0))


def _reference(data: torch.Tensor, elbo, seed: int = 0) -> tuple[list[float], list]:
    """The loop as it was written first: Pyro's ELBO, clip_grad_norm_(inf) as the NaN guard."""
    vae = _vae()
    pyro.set_rng_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for i in range(STEPS):
            epoch, j = divmod(i, N // B)
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perm = torch.randperm(N, generator=g)
            xb = data.index_select(0, perm[j * B : (j + 1) * B])
            loss = elbo.differentiable_loss(vae.model, vae.guide, xb) / B
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(vae.parameters(), math.inf)
            assert torch.isfinite(loss) and torch.isfinite(norm)
            opt.step()
            losses.append(float(loss.detach()))
    return losses, [p.detach().clone() for p in vae.parameters()]


@pytest.mark.parametrize(
    "name, pyro_elbo", [("trace", Trace_ELBO), ("meanfield", TraceMeanField_ELBO)]
)
def test_the_loop_is_pyros_svi_step_bit_for_bit(data, name, pyro_elbo):
    """The same updates as Pyro's SVI step, bit for bit. The logged loss is the surrogate's own
    float32 sum (exact_value=False), Pyro's a float64 sum: equal to float32 round-off."""
    ref_losses, ref_params = _reference(data, pyro_elbo())
    vae = _vae()
    history = Trainer(
        vae, batch_size=B, max_steps=STEPS, log_every=1, elbo=name, progress=False, validate=False
    ).fit(data)
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in history], dtype=torch.float64),
        torch.tensor(ref_losses, dtype=torch.float64),
        rtol=1e-6,
        atol=0,
    )
    for p, q in zip(vae.parameters(), ref_params):
        assert torch.equal(p.detach(), q)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace, used by Pyro's JIT
def test_jit_elbo_trains_like_trace(data):
    runs = {}
    for name in ("trace", "jit"):
        vae = _vae()
        history = Trainer(
            vae, batch_size=B, max_steps=STEPS, log_every=1, elbo=name, progress=False
        ).fit(data)
        runs[name] = torch.tensor([r["loss"] for r in history])
    # the same objective, but the JIT's compilation runs draw noise of their own
    assert torch.isfinite(runs["jit"]).all()
    assert abs(runs["jit"].mean() / runs["trace"].mean() - 1) < 0.1
    assert pyro.get_param_store().keys() == set()  # the JIT's params stayed in a private scope


def test_fused_optimizer(data):
    vae = _vae()
    history = Trainer(
        vae, batch_size=B, max_steps=STEPS, log_every=1, fused=True, progress=False
    ).fit(data)
    ref_losses, _ = _reference(data, Trace_ELBO())
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in history]), torch.tensor(ref_losses), rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ConfigError, match="fused"):
        Trainer(_vae(), optimizer="rmsprop", fused=True, batch_size=B, progress=False).fit(data)


def test_deferred_check_remembers_the_first_bad_step():
    check = _DeferredCheck(torch.device("cpu"))
    assert check.first_bad() is None
    check.add(torch.tensor(1.0), 0)
    assert check.first_bad() is None
    check.add(torch.tensor(float("nan")), 3)
    check.add(torch.tensor(2.0), 4)
    check.add(torch.tensor(float("inf")), 5)
    assert check.first_bad() == 3
    assert check.first_bad() is None  # nothing new since the last look


class _NaNAt(torch.nn.Module):
    """A Gaussian model whose guide turns NaN from its training call number ``bad`` + 1 on
    (calls without gradients, such as the trainer's checks of the program, do not count)."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(4))
        self.calls, self.bad = 0, bad

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(x.new_zeros(4), 1.0).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        self.calls += torch.is_grad_enabled()
        loc = self.loc * (float("nan") if self.calls > self.bad else 1.0)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(loc.expand(x.shape), 1.0).to_event(1))


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_deferred_guard_stops_at_the_next_log_row_and_names_the_step(tmp_path):
    """The accelerator path (forced on CPU): no per-step sync, found at the next log row,
    and no checkpoint is written from the poisoned parameters."""
    net = _NaNAt(bad=7)  # step 7 is the first bad one
    run = tmp_path / "run"
    trainer = Trainer(
        net.model,
        net.guide,
        module=net,
        batch_size=16,
        max_steps=40,
        log_every=10,
        checkpoint_every=5,
        validate=False,
        progress=False,
        run_dir=run,
    )
    trainer._defer_checks = True
    with pytest.raises(NonFiniteError, match=r"non-finite at step 7 .*every log_every=10"):
        trainer.fit(torch.randn(256, 4, generator=torch.Generator().manual_seed(0)))
    assert trainer.state.step == 10
    newest = latest_checkpoint(run)
    assert newest.name == "step-000000005"  # the checkpoint at step 10 was not written
    weights, _ = read_checkpoint(newest)
    assert all(torch.isfinite(t).all() for t in weights.values())
