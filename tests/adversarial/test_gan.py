"""The GAN as a Pyro model trained through the one loop: it learns a 2-D mixture, resumes
bit-for-bit, saves and loads, and the density evaluators refuse it with the reason."""

from __future__ import annotations

import functools

import pyro
import pytest
import torch
from pyro import poutine

from pyro_gen.adversarial import GAN, AdversarialStep
from pyro_gen.errors import ConfigError, NonFiniteError
from pyro_gen.evaluate import diagnose, evaluate_elbo, log_likelihood
from pyro_gen.evaluate.quality import mmd
from pyro_gen.infer import Trainer, latest_checkpoint
from pyro_gen.models import as_pair, check_pair, load_model, save_model

CENTRES = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])


def mixture(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(2, (n,), generator=g)
    return CENTRES[idx] + 0.2 * torch.randn(n, 2, generator=g)


def make_gan(seed: int = 0, **kwargs) -> GAN:
    pyro.set_rng_seed(seed)
    settings = dict(
        data_shape=(2,), latent_dim=2, hidden=(32, 32), critic_hidden=(32, 32), output="identity"
    )
    return GAN(**{**settings, **kwargs})


def test_the_program_has_a_latent_site_and_a_deterministic_x():
    gan = make_gan()
    x = torch.zeros(5, 2)
    tr = poutine.trace(gan.model).get_trace(x)
    assert tr.nodes["z"]["fn"].event_shape == (2,) and not tr.nodes["z"]["is_observed"]
    assert [f.name for f in tr.nodes["z"]["cond_indep_stack"]] == ["data"]
    site = tr.nodes["x"]
    assert site["infer"].get("_deterministic") and site["value"].shape == (5, 2)
    assert torch.equal(site["value"], gan.decode(tr.nodes["z"]["value"]))
    check_pair(as_pair(gan), x)
    assert poutine.trace(gan.guide).get_trace(x).stochastic_nodes == []


def _fit_mixture(gan, steps, lr, **step_kw):
    data = mixture(1024)
    before = mmd(data[:400], gan.sample(400, seed=1), bandwidth=1.0).mmd2
    step = functools.partial(AdversarialStep, **step_kw)
    Trainer(
        gan, step_class=step, batch_size=64, max_steps=steps, lr=lr, progress=False, log_every=100
    ).fit(data)
    fake = gan.sample(400, seed=1)
    return before, mmd(data[:400], fake, bandwidth=1.0).mmd2, fake


def test_training_moves_the_generator_toward_a_2d_mixture():
    before, after, fake = _fit_mixture(make_gan(critic_steps=2), steps=600, lr=2e-3)
    assert after < 0.1 * before, (before, after)
    near = torch.cdist(fake, CENTRES).argmin(1)  # both modes are visited
    assert 0.3 < float(near.float().mean()) < 0.7


@pytest.mark.slow
def test_wgan_gp_moves_the_generator_toward_a_2d_mixture():
    gan = make_gan(objective="wgan-gp", critic_steps=5)
    before, after, fake = _fit_mixture(gan, steps=1000, lr=3e-3, betas=(0.5, 0.9))
    assert after < 0.25 * before, (before, after)


def test_history_has_the_players_columns(tmp_path):
    gan = make_gan(objective="wgan-gp", critic_steps=3)
    trainer = Trainer(
        gan,
        step_class=AdversarialStep,
        batch_size=32,
        max_steps=6,
        log_every=3,
        progress=False,
        run_dir=tmp_path / "r",
    )
    history = trainer.fit(mixture(192))  # one epoch of 6 steps
    assert [r["step"] for r in history] == [3, 6]
    assert {"loss", "critic_loss", "divergence"} <= set(history[0])
    assert trainer.step.count == 6  # critic updates; the generator moved twice


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("objective, critic_steps", [("nonsaturating", 1), ("wgan-gp", 2)])
def test_resume_continues_bit_for_bit(tmp_path, objective, critic_steps):
    data = mixture(256)
    settings = dict(
        batch_size=32, epochs=2, log_every=1, progress=False, lr=1e-3, checkpoint_every=3
    )
    step = AdversarialStep
    full_gan = make_gan(objective=objective, critic_steps=critic_steps)
    full = Trainer(full_gan, step_class=step, run_dir=tmp_path / "full", **settings).fit(data)

    part = tmp_path / "part"
    first = make_gan(objective=objective, critic_steps=critic_steps)
    Trainer(first, step_class=step, run_dir=part, max_steps=7, **settings).fit(data)
    assert latest_checkpoint(part).name == "step-000000007"
    pyro.set_rng_seed(999)  # resume restores every random stream
    resumed = load_model(part)
    history = Trainer(resumed, step_class=step, run_dir=part, resume=True, **settings).fit(data)
    assert [r["loss"] for r in history] == [r["loss"] for r in full]
    assert [r["critic_loss"] for r in history] == [r["critic_loss"] for r in full]
    for key, value in full_gan.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_save_load_round_trip_keeps_generator_and_critic(tmp_path):
    gan = make_gan(num_classes=3)
    save_model(gan, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is GAN and loaded.config == gan.config
    assert torch.equal(loaded.sample(6, seed=2), gan.sample(6, seed=2))
    x = torch.randn(4, 2)
    y = torch.tensor([0, 1, 2, 0])
    assert torch.equal(loaded.score(x, y), gan.score(x, y))


def test_density_evaluators_refuse_a_gan():
    gan = make_gan()
    x = mixture(16)
    for evaluator in (evaluate_elbo, log_likelihood, diagnose):
        with pytest.raises(ConfigError, match=r"no density p\(x \| z\).*pyro-gen quality"):
            evaluator(gan, x)


def test_svi_cannot_train_a_gan():
    with pytest.raises(ConfigError, match="AdversarialStep"):
        Trainer(make_gan(), max_steps=1, batch_size=8, progress=False).fit(mixture(16))


def test_conditional_gan_trains_with_labels():
    gan = make_gan(num_classes=2)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (128,), generator=g)
    x = CENTRES[y] + 0.1 * torch.randn(128, 2, generator=g)
    tr = poutine.trace(gan.model).get_trace(x[:4], y=y[:4])
    assert tr.nodes["y"]["is_observed"] and torch.equal(tr.nodes["y"]["value"], y[:4])
    history = Trainer(
        gan, step_class=AdversarialStep, batch_size=32, max_steps=4, progress=False, log_every=2
    ).fit({"x": x, "y": y})
    assert len(history) == 2
    with pytest.raises(ConfigError, match="needs y"):
        gan.decode(torch.zeros(2, 2))


def test_bigan_encodes_and_reconstructs():
    gan = make_gan(encoder=True)
    x = mixture(128)
    tr = poutine.trace(gan.guide).get_trace(x[:4])
    assert torch.equal(tr.nodes["z"]["value"], gan.encode(x[:4]))
    Trainer(gan, step_class=AdversarialStep, batch_size=32, max_steps=4, progress=False).fit(x)
    assert gan.reconstruct(x[:5]).shape == (5, 2)
    with pytest.raises(ConfigError, match="cannot encode an image"):
        make_gan().reconstruct(x[:2])
    with pytest.raises(ConfigError, match="symmetric objective"):
        make_gan(encoder=True, objective="kl")


def test_step_overrides_and_bad_settings():
    step = functools.partial(AdversarialStep, objective="hellinger", critic_steps=2)
    trainer = Trainer(make_gan(), step_class=step, batch_size=16, max_steps=2, progress=False)
    trainer.fit(mixture(32))
    assert trainer.step.objective_name == "hellinger" and trainer.step.count == 2
    with pytest.raises(ConfigError, match="no ELBO"):
        Trainer(
            make_gan(),
            step_class=AdversarialStep,
            elbo="meanfield",
            max_steps=1,
            batch_size=8,
            progress=False,
        ).fit(mixture(16))


def test_non_finite_critic_is_caught():
    gan = make_gan()
    with torch.no_grad():
        gan.critic.net[0].weight[0, 0] = float("nan")
    trainer = Trainer(gan, step_class=AdversarialStep, batch_size=8, max_steps=3, progress=False)
    with pytest.raises(NonFiniteError, match="step 0"):
        trainer.fit(mixture(32))


def test_generate_takes_labels_like_the_conditional_models():
    gan = make_gan(num_classes=3)
    z = torch.randn(4, 2)
    as_dict = gan.generate(4, {"label": "2"}, z=z)
    assert torch.equal(as_dict, gan.decode(z, torch.full((4,), 2)))
    assert torch.equal(gan.generate(4, 2, z=z), as_dict)
    assert torch.equal(gan.generate(3, seed=5), gan.generate(3, seed=5))
    assert torch.equal(gan.sample(3, seed=5), gan.generate(3, seed=5))  # classes 0, 1, 2
    with pytest.raises(ConfigError, match="in \\[0, 3\\)"):
        gan.generate(2, {"label": 7})
    with pytest.raises(ConfigError, match="one attribute, 'label'"):
        gan.generate(2, {"shape": 1})
    with pytest.raises(ConfigError, match="unconditional"):
        make_gan().generate(2, {"label": 1})


def test_data_parallel_averages_each_players_gradients():
    """The loop sets ``step.reduce`` (an average over processes) in a data-parallel run: the
    step sends each player's loss and gradients through it once per update."""
    from pyro_gen.models import as_pair

    gan = make_gan(critic_steps=1)
    step = AdversarialStep(as_pair(gan))
    batch = {"x": mixture(16)}
    step.init(batch, num_data=16, total_steps=4)
    sizes = []

    def reduce(flat):
        sizes.append(flat.numel())
        return flat * 0.5  # "the other process had zero gradients"

    step.reduce = reduce
    critic_before = [p.detach().clone() for p in gan.critic_parameters()]
    metrics = step.update(batch)
    n_c = sum(p.numel() for p in gan.critic_parameters())
    n_g = sum(p.numel() for p in gan.generator_parameters())
    assert sizes == [1 + n_c, 1 + n_g]
    assert step.data_parallel and "skipped" not in metrics
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, gan.critic_parameters()))


def test_the_loop_runs_the_step_in_a_simulated_world_of_two():
    from pyro_gen.infer.distributed import Collective

    class Simulated(Collective):  # rank 1 of 2 whose collectives see only this process
        rank, world_size = 1, 2

    trainer = Trainer(make_gan(), step_class=AdversarialStep, batch_size=8, max_steps=3,
                      progress=False, collective=Simulated())  # fmt: skip
    trainer.fit(mixture(64))
    assert trainer.state.step == 3 and trainer.step.reduce is not None
