"""CapturedLoss: replayed losses equal eager ones bit for bit, and unsafe programs stay eager."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.infer import Trainer
from pyro_gen.infer.capture import CapturedLoss
from pyro_gen.infer.objectives import make_elbo
from pyro_gen.models import VAE


def make_vae(seed: int = 0, **kw) -> VAE:
    torch.manual_seed(seed)
    return VAE(data_shape=(12,), latent_dim=3, hidden=(16,), **kw)


def data(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 12), 0.3), generator=torch.Generator().manual_seed(seed))


def losses_and_grads(loss_fn, module, x, steps: int, seed: int = 3):
    """Losses and flattened gradients of ``steps`` calls, from one seed."""
    torch.manual_seed(seed)
    out = []
    for _ in range(steps):
        module.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in module.parameters()])
        out.append((loss.detach().clone(), grads))
    return out


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_replays_equal_eager_bit_for_bit(elbo):
    vae, x = make_vae(), data(16)
    objective = make_elbo(elbo)

    def eager(batch):
        return objective.differentiable_loss(vae.model, vae.guide, batch) / batch.shape[0]

    captured = CapturedLoss(eager, vae)
    with pyro.validation_enabled(False), pyro.settings.context(module_local_params=True):
        want = losses_and_grads(eager, vae, x, 5)
        got = losses_and_grads(captured, vae, x, 5)
    assert captured.stats == {"eager": 1, "captures": 1, "replays": 3}
    assert captured.disabled is None
    for (la, ga), (lb, gb) in zip(want, got):
        assert torch.equal(la, lb) and torch.equal(ga, gb)
    assert len({float(loss) for loss, _ in got}) == 5  # fresh noise on every replay


def test_a_new_key_is_captured_once_it_repeats():
    vae = make_vae()
    objective = make_elbo("trace")
    beta = {"value": 1.0}
    loss = CapturedLoss(
        lambda b: objective.differentiable_loss(vae.model, vae.guide, b),
        vae,
        key=lambda: beta["value"],
    )
    with pyro.validation_enabled(False), pyro.settings.context(module_local_params=True):
        for n in (8, 8, 8, 4, 8, 4, 4):  # batch shape is part of the key
            loss(data(n))
        assert loss.stats == {"eager": 2, "captures": 2, "replays": 3}
        beta["value"] = 0.5  # the extra key: eager until it repeats
        loss(data(4))
        assert loss.stats == {"eager": 3, "captures": 2, "replays": 3}
        loss(data(4))
        assert loss.stats["captures"] == 3


def test_unused_random_draws_are_kept():
    """Pruning must not drop a draw whose value is unused: later draws would shift."""
    w = torch.nn.Parameter(torch.ones(3))
    module = torch.nn.Module()
    module.w = w

    def loss_fn(x):
        torch.randn(5)  # consumes the generator, value unused
        return (w * x * torch.rand(3)).sum()

    x = torch.ones(3)
    captured = CapturedLoss(loss_fn, module)
    for fn in (loss_fn, captured):
        torch.manual_seed(0)
        values = [fn(x).item() for _ in range(4)]
        after = torch.rand(1)
        if fn is loss_fn:
            want = (values, after)
    assert captured.stats["replays"] == 2
    assert (values, after) == want


def test_data_dependent_control_flow_stays_eager():
    w = torch.nn.Parameter(torch.ones(3))
    module = torch.nn.Module()
    module.w = w

    def loss_fn(x):
        y = (w * x).sum()
        return y * 2 if y > 0 else -y  # reads a value on the host

    captured = CapturedLoss(loss_fn, module)
    with pytest.warns(UserWarning, match="reads a tensor value on the host"):
        for sign in (1, 1, 1, -1):
            assert captured(sign * torch.ones(3)).item() == loss_fn(sign * torch.ones(3)).item()
    assert captured.stats == {"eager": 4, "captures": 0, "replays": 0}


def test_global_param_store_parameters_stay_eager():
    """pyro.param lives outside the module: a capture would freeze it as a constant."""

    def model(x):
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    objective = make_elbo("trace")
    captured = CapturedLoss(
        lambda b: objective.differentiable_loss(model, guide, b), torch.nn.Module()
    )
    x = torch.randn(10) + 3.0
    with (
        pytest.warns(UserWarning, match="outside the module's parameters"),
        pyro.validation_enabled(False),
    ):
        for _ in range(3):
            captured(x).backward()
    assert captured.disabled and captured.stats["replays"] == 0
    assert pyro.param("loc").grad is not None  # the eager runs still reach it


def conv_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(
        data_shape=(1, 8, 8),
        latent_dim=3,
        network="conv",
        channels=(4, 8),
        likelihood="gaussian",
        learn_scale=True,
    )


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


VARIANTS = {  # model builder, data, Trainer settings, β
    "mlp-bernoulli": (make_vae, data, {}, 1.0),
    "mlp-3-particles": (make_vae, data, {"num_particles": 3}, 1.0),
    "mlp-meanfield": (make_vae, data, {"elbo": "meanfield"}, 1.0),
    "conv-gaussian-beta": (conv_vae, images, {}, 0.5),
    "mlp-autoencoder": (make_vae, data, {}, 0.0),  # β = 0: a point-mass guide, prior masked
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_trainer_results_are_the_same_with_and_without_capture(variant):
    build, make_data, settings, beta = VARIANTS[variant]
    x = make_data(96)
    runs = {}
    for mode in ("off", "auto"):
        vae = build()
        vae.beta = beta
        trainer = Trainer(
            vae,
            batch_size=16,
            epochs=2,
            log_every=3,
            progress=False,
            seed=5,
            capture=mode,
            **settings,
        )
        history = trainer.fit(x, make_data(32, seed=9))
        runs[mode] = (history, {k: v.clone() for k, v in vae.state_dict().items()})
        assert trainer.loss.stats["replays"] == (10 if mode == "auto" else 0)  # 12 steps
    (h_off, w_off), (h_on, w_on) = runs["off"], runs["auto"]
    assert [r["loss"] for r in h_off] == [r["loss"] for r in h_on]
    assert [r["valid_elbo"] for r in h_off] == [r["valid_elbo"] for r in h_on]
    assert all(torch.equal(w_off[k], w_on[k]) for k in w_off)


def test_trainer_captures_after_a_beta_warmup():
    """A β that changes every step runs eagerly; the constant β after warm-up is captured."""
    results = []
    for mode in ("off", "on"):
        vae = make_vae()
        trainer = Trainer(
            vae,
            batch_size=16,
            max_steps=12,
            beta_schedule="linear",
            warmup_steps=6,
            progress=False,
            capture=mode,
        )
        trainer.fit(data(96))
        results.append([p.clone() for p in vae.parameters()])
        # β rises on steps 1-6 (eager; the 6th is β = 1 for the first time), step 7 captures
        assert trainer.loss.stats["replays"] == (5 if mode == "on" else 0)  # steps 8-12
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_capture_auto_leaves_user_programs_eager():
    """A user's program may keep Python state between steps: "auto" does not capture it."""
    vae = make_vae()
    calls = {"n": 0}

    def model(x):
        calls["n"] += 1
        return vae.model(x)

    Trainer(model, vae.guide, module=vae, batch_size=16, max_steps=6, progress=False).fit(data())
    assert calls["n"] >= 6  # every step ran the Python program
    calls["n"] = 0
    trainer = Trainer(
        model, vae.guide, module=vae, batch_size=16, max_steps=6, progress=False, capture="on"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # capturing this program is safe: no fallback warning
        trainer.fit(data())
    assert calls["n"] < 6  # "on": replayed steps skip the Python side effect


def test_unknown_capture_mode_is_refused():
    with pytest.raises(ConfigError, match="unknown capture 'yes'"):
        Trainer(make_vae(), capture="yes")


def test_a_program_that_keeps_changing_stops_being_captured():
    w = torch.nn.Parameter(torch.ones(3))
    module = torch.nn.Module()
    module.w = w
    loss = CapturedLoss(lambda x: (w * x).sum(), module, max_graphs=1)
    with pytest.warns(UserWarning, match="changed 4 times"):
        for n in (2, 2, 3, 3, 2, 2, 3, 3, 2, 2):  # each new shape evicts the one graph kept
            loss(torch.ones(n, 3))
    assert loss.stats["captures"] == 4 and loss.disabled


# -- captured steps never change what a step does -------------------------------------------------
class NormedVAE(VAE):
    """A VAE whose guide normalises its input with BatchNorm1d (running statistics, a counter)."""

    capturable = True

    def __init__(self) -> None:
        super().__init__(data_shape=(12,), latent_dim=3, hidden=(16,))
        self.norm = torch.nn.BatchNorm1d(12)

    def guide(self, x):
        return super().guide(self.norm(x))


def _train_normed(capture: str) -> tuple[NormedVAE, Trainer]:
    torch.manual_seed(0)
    net = NormedVAE()
    trainer = Trainer(
        net,
        batch_size=16,
        max_steps=10,
        log_every=1,
        capture=capture,
        progress=False,
        validate=False,
    )
    trainer.fit(data(160))
    return net, trainer


def test_buffers_advance_exactly_once_per_step_with_capture():
    eager, _ = _train_normed("off")
    captured, trainer = _train_normed("on")
    assert trainer.loss.stats["replays"] >= 7 and trainer.loss.disabled is None
    assert int(eager.norm.num_batches_tracked) == 10
    assert int(captured.norm.num_batches_tracked) == 10  # not 12: capture runs the program 3x
    for key, value in eager.state_dict().items():
        assert torch.equal(value, captured.state_dict()[key]), key


def test_capture_is_opt_in_per_model_class():
    class Plain(VAE):  # a subclass that does not declare itself capturable
        capturable = False

    torch.manual_seed(0)
    trainer = Trainer(
        Plain(data_shape=(12,), latent_dim=3, hidden=(16,)),
        batch_size=16,
        max_steps=4,
        progress=False,
    )
    trainer.fit(data(64))
    assert trainer.loss.disabled == "capture is off" and trainer.loss.stats["replays"] == 0


def test_a_python_counter_outside_the_key_makes_capture_give_up_with_the_eager_value():
    weight = torch.nn.Parameter(torch.tensor(2.0))
    module = torch.nn.Module()
    module.weight = weight
    calls = {"n": 0}

    def loss_fn(x):
        calls["n"] += 1
        return (x * weight).sum() * calls["n"]  # the counter is baked into a capture

    captured = CapturedLoss(loss_fn, module)
    x = torch.ones(3)
    assert float(captured(x)) == 6.0  # eager: n = 1
    with pytest.warns(UserWarning, match="does not reproduce the eager loss"):
        value = captured(x)  # the capture: trace (n = 2), eager check (n = 3), replay (n = 2)
    assert captured.disabled is not None and "does not reproduce" in captured.disabled
    assert float(value) == 18.0  # the eager check's value, not the replay's 12
    value.backward()
    assert float(weight.grad) == 9.0  # and its gradient
