"""SVIStep and the loop around it: named batches, objectives by name, the full-data ELBO, the
contract's refusals, the wall-clock budget."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_gen.errors import ConfigError, DataError
from pyro_gen.infer import Trainer
from pyro_gen.infer.step import SVIStep
from pyro_gen.models import VAE, as_pair


# -- fault 3: a global latent with minibatches ----------------------------------------------------
class GlobalMean(PyroModule):
    """x_n ~ N(μ, 1), μ ~ N(0, 10²); q(μ) = N(m, s²): one global latent, outside the plate."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.tensor(0.0))
        self.s = PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(self.m, self.s))


def test_global_latent_objective_is_stationary_at_the_full_data_posterior():
    """Over an epoch of minibatches (B = 50 of N = 2000), the objective's expected gradient is
    zero at the exact posterior q = N(Σx/(N + 1/100), 1/(N + 1/100)), sd 0.0224, and pushes
    down at sd 1/√B = 0.14, the posterior of one batch (where an unscaled likelihood sits)."""
    n, b = 2000, 50
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)) + 3.0
    exact_sd = 1 / math.sqrt(n + 1 / 100)
    exact_mean = float(x.sum()) / (n + 1 / 100)
    net = GlobalMean()
    step = SVIStep(as_pair(net), elbo="meanfield", num_particles=200)
    step.init({"x": x[:b]}, num_data=n, total_steps=1)
    assert step.data_scale == n / b

    def epoch_gradient(sd: float) -> float:
        """d loss / d log sd, averaged over the epoch's batches (loss: nats per datapoint)."""
        with torch.no_grad():
            net.m.fill_(exact_mean)
            net.s = torch.tensor(sd)
        grads = []
        with pyro.settings.context(module_local_params=True):
            for i in range(0, n, b):
                loss = step.objective(x[i : i + b])
                grads.append(torch.autograd.grad(loss, net.s_unconstrained)[0])
        return float(torch.stack(grads).mean())

    pyro.set_rng_seed(0)
    # d/d log s of the full-data objective per datapoint: s² − (1 − s²/100)/N
    batch_sd = 1 / math.sqrt(b)
    want = batch_sd**2 - (1 - batch_sd**2 / 100) / n
    assert epoch_gradient(batch_sd) == pytest.approx(want, rel=0.05)
    assert abs(epoch_gradient(exact_sd)) < 0.02 * want


def test_local_latents_only_keep_the_batch_mean_loss():
    """No global latent: the loss is −ELBO per datapoint of the batch, no N/B factor."""
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((40, 6), 0.4), generator=torch.Generator().manual_seed(1))
    step = SVIStep(as_pair(vae))
    step.init({"x": x[:10]}, num_data=40, total_steps=1)
    assert step.data_scale == 1.0
    with pyro.settings.context(module_local_params=True):
        pyro.set_rng_seed(0)
        loss = step.objective(x[:10])
        pyro.set_rng_seed(0)
        direct = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x[:10]) / 10
    assert float(loss) == pytest.approx(float(direct), rel=1e-6)


# -- fault 1: enumeration marks -------------------------------------------------------------------
class TwoMeans(PyroModule):
    """y ~ Cat(½, ½), x | y ~ N(loc_y, 1); q(y) = Cat(softmax(logits)), marked for enumeration."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2]))
        self.locs = nn.Parameter(torch.tensor([-1.0, 2.0]))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(2)))
            pyro.sample("x", dist.Normal(self.locs[y], 1.0), obs=x)

    @config_enumerate
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=self.logits.expand(x.shape[0], 2)))


def test_an_enumeration_mark_without_elbo_enum_is_refused_with_the_fix():
    x = torch.randn(32)
    with pytest.raises(ConfigError, match=r"site 'y' is marked for enumeration.*elbo='enum'"):
        Trainer(TwoMeans(), batch_size=8, max_steps=2, progress=False).fit(x)


def test_elbo_enum_sums_the_label_out_exactly():
    net, x = TwoMeans(), torch.tensor([-1.5, 0.2, 2.5, 1.0])
    step = SVIStep(as_pair(net), elbo="enum")
    step.init({"x": x}, num_data=4, total_steps=1)
    with pyro.settings.context(module_local_params=True):
        loss = float(step.objective(x))
        again = float(step.objective(x))
    with torch.no_grad():
        q = torch.softmax(net.logits, 0)
        log_joint = math.log(0.5) + dist.Normal(net.locs[:, None], 1.0).log_prob(x)  # [2, N]
        elbo = (q[:, None] * (log_joint - q.log()[:, None])).sum(0)  # exact: no sampling
    assert loss == again  # an exact sum draws no noise
    assert loss == pytest.approx(float(-elbo.mean()), rel=1e-6)
    history = Trainer(net, batch_size=4, max_steps=3, elbo="enum", progress=False).fit(x)
    assert len(history) == 3 and all(math.isfinite(r["loss"]) for r in history)


# -- fault 2: a parameter in Pyro's global param store --------------------------------------------
class GlobalParam(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(0.0))

    def model(self, x):
        shift = pyro.param("shift", torch.tensor(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc + shift, 1.0), obs=x)

    def guide(self, x):
        pass


def test_a_global_pyro_param_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"pyro.param\('shift'\).*nn.Parameter"):
        Trainer(GlobalParam(), batch_size=8, max_steps=2, progress=False).fit(torch.randn(16))


# -- named batches --------------------------------------------------------------------------------
class Shifted(PyroModule):
    """x_n ~ N(loc + y_n, 1): y is an observed attribute passed by name."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(0.0))

    def model(self, x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc + y, 1.0), obs=x)

    def guide(self, x, y):
        pass


def test_named_batches_reach_model_and_guide_by_name():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(256, generator=g) * 5
    x = y + 1.5 + 0.1 * torch.randn(256, generator=g)
    net = Shifted()
    Trainer(net, batch_size=32, epochs=30, lr=0.05, progress=False).fit({"x": x, "y": y})
    assert float(net.loc) == pytest.approx(1.5, abs=0.05)  # only right if y was used row by row


@pytest.mark.parametrize(
    "data, match",
    [
        ({"x": torch.randn(8), "y": torch.randn(7)}, "same length"),
        ({"y": torch.randn(8)}, "no entry 'x'"),
        ({"x": torch.randn(8), "y": [1.0] * 8}, "'y' must be a torch.Tensor"),
        ({"x": torch.randn(8), "y": torch.tensor([0.0] * 7 + [math.nan])}, "'y' holds NaN"),
    ],
)
def test_bad_named_batches_are_refused(data, match):
    with pytest.raises(DataError, match=match):
        Trainer(Shifted(), batch_size=4, max_steps=1, progress=False).fit(data)


# -- the wall-clock budget ------------------------------------------------------------------------
def test_max_time_stops_with_a_checkpoint(tmp_path):
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((64, 6), 0.4), generator=torch.Generator().manual_seed(1))
    trainer = Trainer(
        vae, batch_size=8, max_steps=10**7, max_time=0.5, progress=False, run_dir=tmp_path / "r"
    )
    trainer.fit(x)
    assert trainer.stopped_by == "max_time"
    assert 0 < trainer.state.step < 10**7
    assert 0.5 <= trainer.state.elapsed < 5.0
    assert (tmp_path / "r" / "checkpoints" / f"step-{trainer.state.step:09d}").is_dir()


def test_max_time_must_be_positive():
    with pytest.raises(ConfigError, match="max_time"):
        Trainer(VAE(data_shape=(6,), latent_dim=2, hidden=(8,)), max_time=0)


# -- what a new user tried -------------------------------------------------------------------------
def test_a_callback_stops_training_after_the_current_step():
    from pyro_gen.infer.callbacks import Callback

    class StopAtThree(Callback):
        def on_step_end(self, trainer, metrics):
            if trainer.state.step == 3:
                trainer.should_stop = True

    x = torch.bernoulli(torch.full((200, 6), 0.4), generator=torch.Generator().manual_seed(1))
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    trainer = Trainer(vae, batch_size=10, epochs=5, progress=False, callbacks=[StopAtThree()])
    trainer.fit(x)
    assert trainer.state.step == 3 and trainer.stopped_by == "callback"


@pytest.mark.parametrize("callbacks", [object(), [object()]])
def test_callbacks_are_checked_when_the_trainer_is_built(callbacks):
    with pytest.raises(ConfigError, match="Callback"):
        Trainer(VAE(data_shape=(6,), latent_dim=2, hidden=(8,)), callbacks=callbacks)


def test_max_time_takes_the_clis_durations():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    assert Trainer(vae, max_time="1.5m").config.max_time == 90.0
    with pytest.raises(ConfigError, match="duration"):
        Trainer(vae, max_time="soon")


def test_batch_entries_the_program_does_not_take_are_named():
    x, y = torch.randn(16), torch.randn(16)
    with pytest.raises(ConfigError, match=r"entries \['x', 'y', 'junk'\]"):
        Trainer(Shifted(), batch_size=4, max_steps=1, progress=False).fit(
            {"x": x, "y": y, "junk": torch.zeros(16)}
        )
    with pytest.raises(DataError, match="scalar"):
        Trainer(Shifted(), batch_size=4, max_steps=1, progress=False).fit(
            {"x": x, "y": torch.tensor(1.0)}
        )


def test_float64_named_entries_are_cast_with_the_data():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(64, generator=g, dtype=torch.float64)
    x = y + 1.0
    with pytest.warns(UserWarning, match="'y' from torch.float64"):
        Trainer(Shifted(), batch_size=16, max_steps=2, progress=False).fit({"x": x, "y": y})


def test_a_point_mass_guide_validates_the_reconstruction_not_an_elbo(tmp_path):
    from pyro_gen.evaluate import evaluate_elbo

    x = torch.bernoulli(torch.full((64, 6), 0.4), generator=torch.Generator().manual_seed(1))
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,), beta=0.0)
    trainer = Trainer(vae, batch_size=16, epochs=1, progress=False, run_dir=tmp_path / "r")
    with pytest.warns(UserWarning, match="valid_reconstruction"):
        history = trainer.fit(x, x[:32])
    row = history[-1]
    assert row["valid_elbo"] == "" and "valid_reconstruction" in row
    want = evaluate_elbo(vae, x[:32], seed=trainer.config.seed + 1).reconstruction.mean()
    assert row["valid_reconstruction"] == pytest.approx(float(want), rel=1e-5)
    header = (tmp_path / "r" / "history.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "valid_reconstruction"


def test_a_steps_extra_metrics_become_history_columns(tmp_path):
    from pyro_gen.infer.callbacks import Callback

    class WithGradNorm(SVIStep):
        def update(self, batch, *, check=True):
            metrics = super().update(batch, check=check)
            metrics["grad_norm"] = torch.tensor(self.grad_norm())
            return metrics

    x = torch.bernoulli(torch.full((64, 6), 0.4), generator=torch.Generator().manual_seed(1))
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    seen = []

    class Spy(Callback):
        def on_update(self, trainer, metrics):
            seen.append(float(metrics["grad_norm"]))

    trainer = Trainer(
        vae,
        batch_size=16,
        max_steps=4,
        log_every=2,
        progress=False,
        callbacks=[Spy()],
        step_class=WithGradNorm,
        run_dir=tmp_path / "r",
    )
    history = trainer.fit(x)
    header = (tmp_path / "r" / "history.csv").read_text().splitlines()[0]
    assert header.endswith(",grad_norm")
    assert [r["grad_norm"] for r in history] == pytest.approx(
        [(seen[0] + seen[1]) / 2, (seen[2] + seen[3]) / 2]
    )


def test_a_global_latent_program_trains_without_a_validation_elbo():
    x = torch.randn(64) + 3.0
    with pytest.warns(UserWarning, match="no validation ELBO"):
        history = Trainer(GlobalMean(), batch_size=16, epochs=1, progress=False).fit(x, x[:16])
    assert all(r["valid_elbo"] == "" for r in history)


def test_resume_refuses_a_new_learning_rate(tmp_path):
    x = torch.bernoulli(torch.full((64, 6), 0.4), generator=torch.Generator().manual_seed(1))
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    Trainer(vae, batch_size=16, max_steps=2, progress=False, run_dir=tmp_path / "r").fit(x)
    with pytest.raises(ConfigError, match=r"lr=0.1 \(the run has 0.001\)"):
        Trainer(
            vae,
            batch_size=16,
            max_steps=4,
            lr=0.1,
            progress=False,
            run_dir=tmp_path / "r",
            resume=True,
        ).fit(x)


def test_an_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown activation 'gelu'.*relu"):
        VAE(data_shape=(6,), latent_dim=2, hidden=(8,), activation="gelu")


def test_elbo_enum_without_marks_says_nothing_is_enumerated():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((32, 6), 0.4), generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="no sample site is marked for enumeration"):
        Trainer(vae, batch_size=16, max_steps=1, elbo="enum", progress=False).fit(x)
