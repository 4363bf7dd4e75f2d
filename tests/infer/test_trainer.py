"""The SVI trainer: learning, exact resume, the non-finite guard, schedules, custom pairs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_gen.data import make_shapes
from pyro_gen.errors import CheckpointError, ConfigError, NonFiniteError, ShapeError
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.infer import (
    BetaSchedule,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)
from pyro_gen.models import VAE, load_model, load_weights, read_config

SIZE = 16


@pytest.fixture(scope="module")
def shapes():
    """128 train / 32 valid / 32 test binary 16x16 images (4 steps per epoch at batch 32)."""
    return make_shapes(num_train=128, num_valid=32, num_test=32, size=SIZE, seed=0)


def make_vae(seed: int = 123, **kwargs) -> VAE:
    pyro.set_rng_seed(seed)
    return VAE(**{"data_shape": (1, SIZE, SIZE), "latent_dim": 2, "hidden": (32,), **kwargs})


def rows(history: list[dict], *keys: str) -> list[tuple]:
    return [tuple(r[k] for k in keys) for r in history]


def read_history_csv(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- learning -------------------------------------------------------------------------------------
def test_loss_decreases_on_tiny_shapes(shapes, tmp_path):
    vae = make_vae()
    trainer = Trainer(
        vae, batch_size=32, epochs=4, lr=3e-3, log_every=1, progress=False, run_dir=tmp_path / "r"
    )
    history = trainer.fit(shapes.split("train"), shapes.split("valid"))
    losses = [r["loss"] for r in history]
    assert len(losses) == 16 and trainer.state.step == 16 and trainer.state.epoch == 4
    assert sum(losses[:3]) / 3 - sum(losses[-3:]) / 3 > 10.0  # nats per datapoint
    valid = [r["valid_elbo"] for r in history if r["valid_elbo"] != ""]
    assert len(valid) == 4 and valid[-1] > valid[0]
    assert trainer.state.best_valid == max(valid)
    assert trainer.steps_per_second > 0
    # the history on disk is the same table
    on_disk = read_history_csv(tmp_path / "r")
    assert list(on_disk[0]) == ["step", "epoch", "loss", "valid_elbo", "beta", "lr", "elapsed"]
    assert [float(r["loss"]) for r in on_disk] == pytest.approx(losses)


# -- exact resume ---------------------------------------------------------------------------------
RESUME_SETTINGS = dict(
    batch_size=32,
    epochs=3,
    log_every=1,
    progress=False,
    beta_schedule="linear",
    warmup_steps=5,
    lr_schedule="exponential",
    lr_gamma=0.9,
    seed=4,
)


@pytest.fixture(scope="module")
def uninterrupted(shapes) -> tuple[list[dict], dict]:
    """The reference: 12 steps in one go, no run folder (so checkpoints cannot perturb it)."""
    vae = make_vae()
    history = Trainer(vae, **RESUME_SETTINGS).fit(shapes.split("train"), shapes.split("valid"))
    return history, vae.state_dict()


def _assert_same_run(a: list[dict], b: list[dict], weights_a: dict, weights_b: dict) -> None:
    keys = ("step", "epoch", "loss", "valid_elbo", "beta", "lr")
    assert len(a) == 12  # one row per step
    assert rows(a, *keys) == rows(b, *keys)  # bit-for-bit, not approximately
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize("stop", [4, 6], ids=["end-of-epoch", "mid-epoch"])
def test_resume_after_max_steps_gives_the_same_losses(shapes, uninterrupted, tmp_path, stop):
    full, full_weights = uninterrupted
    run = tmp_path / "part"
    first = Trainer(make_vae(), run_dir=run, **{**RESUME_SETTINGS, "max_steps": stop})
    first.fit(shapes.split("train"), shapes.split("valid"))
    assert first.state.step == stop
    assert latest_checkpoint(run).name == f"step-{stop:09d}"

    pyro.set_rng_seed(999)  # a different global state must not matter: resume restores it
    vae = load_model(run)
    second = Trainer(vae, run_dir=run, resume=True, **RESUME_SETTINGS)
    history = second.fit(shapes.split("train"), shapes.split("valid"))
    _assert_same_run(full, history, full_weights, vae.state_dict())


def test_resume_after_an_interrupt_gives_the_same_losses(shapes, uninterrupted, tmp_path):
    """SIGINT in the middle of an epoch: a checkpoint is written and resume continues exactly."""
    full, full_weights = uninterrupted
    vae = make_vae()
    calls = {"n": 0}

    def model(x):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 7:  # during step 7: the loop stops before step 8
                os.kill(os.getpid(), signal.SIGINT)
        return vae.model(x)

    run = tmp_path / "interrupted"
    first = Trainer(model, vae.guide, module=vae, run_dir=run, **RESUME_SETTINGS)
    first.fit(shapes.split("train"), shapes.split("valid"))
    assert first.interrupted and first.state.step == 7
    assert latest_checkpoint(run).name == "step-000000007"

    resumed = load_model(run)
    history = Trainer(resumed, run_dir=run, resume=True, **RESUME_SETTINGS).fit(
        shapes.split("train"), shapes.split("valid")
    )
    _assert_same_run(full, history, full_weights, resumed.state_dict())
    assert [int(r["step"]) for r in read_history_csv(run)] == list(range(1, 13))


def test_resume_skips_a_damaged_newest_checkpoint(shapes, tmp_path):
    run = tmp_path / "run"
    settings = {**RESUME_SETTINGS, "checkpoint_every": 2, "keep_checkpoints": 3, "max_steps": 6}
    Trainer(make_vae(), run_dir=run, **settings).fit(shapes.split("train"))
    assert [p.name for p in list_checkpoints(run)] == [f"step-00000000{i}" for i in (2, 4, 6)]
    newest = latest_checkpoint(run) / "trainer.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    trainer = Trainer(load_model(run), run_dir=run, resume=True, **settings)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        trainer.fit(shapes.split("train"))
    assert trainer.state.step == 6
    assert [r["step"] for r in trainer.history] == [1, 2, 3, 4, 5, 6]


def test_run_folder_rules(shapes, tmp_path):
    x = shapes.split("train")
    with pytest.raises(ConfigError, match="needs the run_dir"):
        Trainer(make_vae(), resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        Trainer(make_vae(), run_dir=tmp_path / "empty", resume=True, progress=False).fit(x)
    Trainer(make_vae(), run_dir=tmp_path / "r", max_steps=1, batch_size=32, progress=False).fit(x)
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(make_vae(), run_dir=tmp_path / "r", batch_size=32, progress=False).fit(x)
    with pytest.raises(ConfigError, match="batch_size 256 is larger"):
        Trainer(make_vae(), batch_size=256, progress=False).fit(x)


def test_saved_model_gives_the_same_elbo_in_a_new_process(shapes, tmp_path):
    vae = make_vae()
    run = tmp_path / "run"
    Trainer(vae, run_dir=run, batch_size=32, max_steps=6, progress=False).fit(shapes.split("train"))
    here = evaluate_elbo(vae, shapes.split("test"), num_particles=3, seed=0).summary()
    code = (
        "import json, sys\n"
        "from pyro_gen.data import make_shapes\n"
        "from pyro_gen.evaluate import evaluate_elbo\n"
        "from pyro_gen.models import load_model\n"
        f"x = make_shapes(num_train=128, num_valid=32, num_test=32, size={SIZE}, seed=0)"
        ".split('test')\n"
        "r = evaluate_elbo(load_model(sys.argv[1]), x, num_particles=3, seed=0)\n"
        "print(json.dumps(r.summary()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    there = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("elbo", "reconstruction", "kl"):
        assert there[key] == pytest.approx(here[key], rel=1e-6, abs=1e-6)
    assert there["num_datapoints"] == 32


# -- the non-finite guard -------------------------------------------------------------------------
class Blowup(nn.Module):
    """x ~ N(loc, exp(log_scale)) per datapoint; breaks on chosen (gradient-enabled) calls."""

    def __init__(self, zero_scale_from: int | None = None, nan_grad_at: int | None = None):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(4))
        self.log_scale = nn.Parameter(torch.zeros(4))
        self.zero_scale_from = zero_scale_from
        self.zero_scale_only = False
        self.nan_grad_at = nan_grad_at
        self.calls = 0

    def model(self, x: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # training steps only, not the checks or the diagnosis
            self.calls += 1
        loc, scale = self.loc, self.log_scale.exp()
        z = self.zero_scale_from
        if z is not None and (self.calls == z or (self.calls > z and not self.zero_scale_only)):
            scale = scale * 0.0  # the likelihood's scale collapses: log p = nan
        if self.calls == self.nan_grad_at:
            loc = loc + torch.sqrt(self.loc * 0.0)  # a finite loss with a NaN gradient
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pass


@pytest.fixture
def gaussian_data() -> torch.Tensor:
    return torch.randn(64, 4, generator=torch.Generator().manual_seed(0))


def _blowup_trainer(net: Blowup, **settings) -> Trainer:
    """A Trainer of the Blowup pair (batches of 16, no progress bar)."""
    return Trainer(net.model, net.guide, module=net, batch_size=16, progress=False, **settings)


def _finite_weights(path: Path) -> bool:
    weights, _ = read_checkpoint(path)
    return all(torch.isfinite(v).all() for v in weights.values())


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nonfinite_loss_names_step_and_site_and_keeps_the_checkpoint(gaussian_data, tmp_path):
    net = Blowup(zero_scale_from=6)  # steps 1-5 are fine, the 6th (index 5) breaks
    run = tmp_path / "run"
    trainer = _blowup_trainer(net, run_dir=run, epochs=4, checkpoint_every=2)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(gaussian_data)
    msg = str(info.value)
    assert "at step 5 " in msg and "loss is nan" in msg
    assert "model site 'x'" in msg
    kept = latest_checkpoint(run)
    assert kept.name == "step-000000004" and str(kept) in msg
    assert _finite_weights(kept)
    fresh = load_weights(Blowup(), run)  # the top-level weights are the good ones too
    assert torch.isfinite(fresh.loc).all() and not torch.equal(fresh.loc, torch.zeros(4))


def test_nonfinite_gradient_is_caught_before_the_update(gaussian_data, tmp_path):
    net = Blowup(nan_grad_at=4)
    run = tmp_path / "run"
    trainer = _blowup_trainer(net, run_dir=run, epochs=2, checkpoint_every=1)
    with pytest.raises(NonFiniteError, match="at step 3 .*gradient norm is nan"):
        trainer.fit(gaussian_data)
    assert torch.isfinite(net.loc).all()  # the NaN gradient never reached the optimiser
    assert latest_checkpoint(run).name == "step-000000003"
    assert all(_finite_weights(p) for p in list_checkpoints(run))


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_an_infinite_parameter_is_named(gaussian_data):
    net = Blowup()
    with torch.no_grad():
        net.log_scale[2] = float("inf")
    with pytest.raises(NonFiniteError) as info:
        _blowup_trainer(net).fit(gaussian_data)
    msg = str(info.value)
    assert "at step 0 " in msg and "non-finite parameters: ['log_scale']" in msg


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_max_bad_batches_skips_then_stops(gaussian_data):
    net = Blowup(zero_scale_from=3)
    net.zero_scale_only = True  # only the 3rd step is bad
    trainer = _blowup_trainer(net, epochs=2, max_bad_batches=1, log_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(gaussian_data)
    skipped = [str(w.message) for w in caught if "batch skipped" in str(w.message)]
    assert skipped == ["step 2: non-finite loss or gradient; batch skipped (1/1)."]
    assert trainer.state.step == 8 and trainer.state.bad_batches == 1
    assert [r["step"] for r in history] == [1, 2, 4, 5, 6, 7, 8]  # no row for the skipped step
    assert torch.isfinite(net.loc).all()

    net = Blowup(zero_scale_from=3)  # every step from the 3rd on is bad: 1 skip, then stop
    trainer = _blowup_trainer(net, epochs=2, max_bad_batches=1)
    with pytest.warns(UserWarning, match="batch skipped"), pytest.raises(NonFiniteError):
        trainer.fit(gaussian_data)
    assert trainer.state.step == 3


# -- β schedules ----------------------------------------------------------------------------------
def test_beta_schedule_values():
    assert [BetaSchedule("constant", 0.5)(t) for t in (0, 10, 1000)] == [0.5, 0.5, 0.5]
    linear = BetaSchedule("linear", beta=2.0, warmup_steps=4)
    assert [linear(t) for t in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    cyc = BetaSchedule("cyclical", beta=2.0, total_steps=8, cycles=2, ratio=0.5)
    assert [cyc(t) for t in range(8)] == [1.0, 2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0]
    cyc = BetaSchedule("cyclical", beta=1.0, total_steps=12, cycles=3, ratio=1.0)
    assert [cyc(t) for t in range(12)] == [0.25, 0.5, 0.75, 1.0] * 3
    assert BetaSchedule("linear", beta=0.0, warmup_steps=3)(0) == 0.0  # β = 0 stays 0
    with pytest.raises(ConfigError, match="Did you mean 'linear'"):
        BetaSchedule("linaer")
    with pytest.raises(ConfigError, match="warmup_steps >= 1"):
        BetaSchedule("linear", warmup_steps=0)
    with pytest.raises(ConfigError, match="total_steps >= cycles"):
        BetaSchedule("cyclical", total_steps=2, cycles=4)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({"beta_schedule": "linear", "warmup_steps": 4}, [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0]),
        ({"beta_schedule": "cyclical", "beta_cycles": 2}, [1.0, 2.0, 2.0, 2.0] * 2),
    ],
)
def test_trainer_sets_beta_per_step(shapes, tmp_path, schedule, expected):
    vae = make_vae(beta=2.0)
    seen = []

    def model(x):  # the scale the objective gives the latent site, as the ELBO sees it
        with poutine.trace() as tr:
            out = vae.model(x)
        if torch.is_grad_enabled():
            seen.append(float(tr.trace.nodes["z"]["scale"]))
        return out

    trainer = Trainer(
        model,
        vae.guide,
        module=vae,
        run_dir=tmp_path / "r",
        batch_size=32,
        epochs=2,
        log_every=1,
        progress=False,
        **schedule,
    )
    history = trainer.fit(shapes.split("train"))
    assert seen == expected  # what the model actually used, step by step
    assert [r["beta"] for r in history] == expected
    assert [float(r["beta"]) for r in read_history_csv(tmp_path / "r")] == expected
    assert vae.beta == 2.0  # restored after training


def test_jit_elbo_refuses_a_beta_schedule(shapes):
    with pytest.raises(ConfigError, match="JIT"):
        Trainer(make_vae(), elbo="jit", beta_schedule="linear", batch_size=32, progress=False).fit(
            shapes.split("train")
        )


# -- early stopping -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "valid_elbos, patience, epochs_run",
    [([-100, -101, -102, -103, -104, -105], 2, 3), ([-100, -99, -98, -97, -96, -95], 2, 6)],
    ids=["worsening-stops", "improving-runs-on"],
)
def test_early_stopping(shapes, valid_elbos, patience, epochs_run):
    trainer = Trainer(make_vae(), batch_size=32, epochs=6, early_stopping=patience, progress=False)
    values = iter(valid_elbos)
    trainer.evaluate = lambda x: float(next(values))
    history = trainer.fit(shapes.split("train"), shapes.split("valid"))
    assert trainer.state.epoch == epochs_run and trainer.state.step == 4 * epochs_run
    assert [r["valid_elbo"] for r in history if r["valid_elbo"] != ""] == valid_elbos[:epochs_run]
    assert trainer.state.best_valid == max(valid_elbos[:epochs_run])


# -- configuration --------------------------------------------------------------------------------
def test_train_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="'epohcs'.*Did you mean 'epochs'"):
        TrainConfig.from_dict({"epohcs": 3})
    with pytest.raises(ConfigError, match="unknown training setting 'learning_rate'"):
        Trainer(make_vae(), learning_rate=0.1)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("epochs", "3", "'epochs' should be int"),
        ("epochs", 2.0, "'epochs' should be int"),
        ("batch_size", True, "'batch_size' should be int"),
        ("lr", "1e-3", "'lr' should be float"),
        ("progress", 1, "'progress' should be bool"),
        ("optimizer", 3, "'optimizer' should be str"),
        ("clip_norm", "big", "'clip_norm' should be float"),
        ("epochs", 0, "epochs must be >= 1"),
        ("lr", 0.0, "lr must be > 0"),
        ("max_steps", 0, "max_steps must be >= 1"),
        ("clip_norm", -1.0, "clip_norm must be > 0"),
        ("optimizer", "adma", "Did you mean 'adam'"),
        ("elbo", "meanfeild", "Did you mean 'meanfield'"),
        ("lr_schedule", "cosnie", "Did you mean 'cosine'"),
    ],
)
def test_train_config_rejects_bad_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{key: value})


def test_train_config_accepts_ints_for_floats_and_none_for_optionals():
    c = TrainConfig(lr=1, clip_norm=None, max_steps=None, early_stopping=3)
    assert c.lr == 1 and c.early_stopping == 3
    base = TrainConfig(epochs=3)
    assert Trainer(make_vae(), config=base, lr=0.5).config.epochs == 3  # overrides merge


# -- custom model/guide pairs ---------------------------------------------------------------------
class FactorAnalysis(nn.Module):
    """A model the package does not ship: z ~ N(0, I), x ~ N(Wz + b, σ²), amortised guide."""

    def __init__(self, dim: int = 6, latent: int = 2) -> None:
        super().__init__()
        self.decoder = nn.Linear(latent, dim)
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.encoder = nn.Linear(dim, 2 * latent)
        self.latent = latent


def fa_pair(net: FactorAnalysis):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(net.latent), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(net.decoder(z), net.log_sigma.exp()).to_event(1), obs=x)

    def guide(x):
        loc, raw = net.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    return model, guide


def test_custom_pair_trains_saves_and_evaluates(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 2, generator=g)
    x = torch.randn(256, 2, generator=g) @ w.T + 0.1 * torch.randn(256, 6, generator=g)
    net = FactorAnalysis()
    model, guide = fa_pair(net)
    with pytest.raises(ConfigError, match="module="):
        Trainer(model, guide)
    run = tmp_path / "run"
    trainer = Trainer(
        model,
        guide,
        module=net,
        run_dir=run,
        batch_size=32,
        epochs=8,
        lr=1e-2,
        log_every=1,
        progress=False,
    )
    history = trainer.fit(x[:192], x[192:])
    losses = [r["loss"] for r in history if r["loss"] != ""]
    assert sum(losses[:4]) / 4 - sum(losses[-4:]) / 4 > 1.0
    assert len(pyro.get_param_store()) == 0
    assert read_config(run)["model"]["name"] is None  # unregistered: weights only
    clone = FactorAnalysis()
    load_weights(clone, run)
    r1 = evaluate_elbo(model, x[192:], guide=guide, module=net, seed=1).summary()
    r2 = evaluate_elbo(*fa_pair(clone)[:1], x[192:], guide=fa_pair(clone)[1], module=clone, seed=1)
    assert r2.summary()["elbo"] == pytest.approx(r1["elbo"], rel=1e-6)
    assert r1["elbo"] == pytest.approx(trainer.state.best_valid, abs=1.0)


def test_missing_data_plate_is_a_shape_error_with_trace_shapes():
    net = FactorAnalysis()

    def model(x):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(2))
        pyro.sample("x", dist.Normal(net.decoder(z), 1.0).to_event(2), obs=x)

    def guide(x):
        loc, _ = net.encoder(x).chunk(2, -1)
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(2))

    with pytest.raises(ShapeError) as info:
        Trainer(model, guide, module=net, batch_size=16, progress=False).fit(torch.randn(32, 6))
    msg = str(info.value)
    assert "observed site 'x' is not inside pyro.plate('data')" in msg
    assert "Trace Shapes" in msg and "x dist" in msg and "8 6" in msg


def test_likelihood_without_to_event_is_a_shape_error_with_trace_shapes():
    net = FactorAnalysis()
    _, guide = fa_pair(net)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(net.decoder(z), 1.0), obs=x)  # forgot .to_event(1)

    with pytest.raises(ShapeError) as info:
        Trainer(model, guide, module=net, batch_size=16, progress=False).fit(torch.randn(32, 6))
    msg = str(info.value)
    assert "x of shape [8, 6]" in msg
    assert "Trace Shapes" in msg and "z dist" in msg
    assert "to_event" in msg  # the hint


def test_a_model_without_observations_is_refused():
    net = FactorAnalysis()
    _, guide = fa_pair(net)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ShapeError, match="no observed sample site"):
        Trainer(model, guide, module=net, batch_size=16, progress=False).fit(torch.randn(32, 6))
