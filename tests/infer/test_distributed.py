"""The loop's data parallelism without processes: a simulated world of two (identity
collectives) checks the sharding, the step's one-buffer averaging and the refusals."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.infer import Trainer
from pyro_gen.infer.callbacks import Callback
from pyro_gen.infer.distributed import Collective, SingleProcess
from pyro_gen.infer.step import SVIStep
from pyro_gen.models import VAE, as_pair


class Simulated(Collective):
    """Rank ``rank`` of a world of ``world_size`` whose collectives see only this process."""

    def __init__(self, rank: int, world_size: int = 2) -> None:
        self.rank, self.world_size = rank, world_size


class Batches(Callback):
    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def on_update(self, trainer, metrics) -> None:
        self.rows.append(trainer.batch["i"])


def data(n: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.bernoulli(torch.full((n, 6), 0.3), generator=g), "i": torch.arange(n)}


class Indexed(VAE):
    """A VAE that takes (and ignores) the datapoints' indices, to see which rows a step gets."""

    def model(self, x, i=None):
        return super().model(x)

    def guide(self, x, i=None):
        return super().guide(x)


def test_each_rank_trains_on_its_own_shard_of_every_epoch():
    seen = {}
    for rank in (0, 1):
        torch.manual_seed(0)
        batches = Batches()
        trainer = Trainer(
            Indexed(data_shape=(6,), latent_dim=2, hidden=(8,)),
            batch_size=8,
            epochs=2,
            progress=False,
            callbacks=[batches],
            collective=Simulated(rank),
        )
        trainer.fit(data(66))  # 66 / 2 ranks = 33 per rank: 4 steps of 8, the rest dropped
        assert trainer.state.step == 8
        seen[rank] = [b.tolist() for b in batches.rows]
    for epoch in (0, 1):
        a = sum(seen[0][4 * epoch : 4 * epoch + 4], [])
        b = sum(seen[1][4 * epoch : 4 * epoch + 4], [])
        assert not set(a) & set(b) and len(set(a + b)) == 64  # disjoint shards of one order
    assert seen[0][:4] != seen[0][4:]  # a new order each epoch


def test_the_step_averages_loss_and_every_gradient_through_one_buffer():
    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    batch = {"x": data()["x"][:8]}
    plain, doubled = SVIStep(as_pair(vae), optimizer="sgd", lr=0.0), None
    plain.init(batch, num_data=64, total_steps=1)
    torch.manual_seed(1)
    loss = plain.update(batch)["loss"]
    grads = [p.grad.clone() for p in plain.params]
    doubled = SVIStep(as_pair(vae), optimizer="sgd", lr=0.0)
    doubled.init(batch, num_data=64, total_steps=1)
    buffers = []
    doubled.reduce = lambda flat: buffers.append(flat.numel()) or flat * 2
    torch.manual_seed(1)
    assert float(doubled.update(batch)["loss"]) == pytest.approx(2 * float(loss))
    assert buffers == [1 + sum(p.numel() for p in vae.parameters())]  # one collective
    for p, g in zip(doubled.params, grads):
        assert torch.allclose(p.grad, 2 * g)  # each gradient back in its own parameter


def test_a_step_that_does_not_average_is_refused_on_several_processes():
    class Private(SVIStep):
        data_parallel = False

    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    with pytest.raises(ConfigError, match="does not declare data_parallel"):
        Trainer(
            vae, batch_size=8, max_steps=1, progress=False, step_class=Private,
            collective=Simulated(0),
        ).fit(data()["x"])  # fmt: skip
    Trainer(vae, batch_size=8, max_steps=1, progress=False, step_class=Private).fit(data()["x"])


def test_batch_size_is_checked_against_the_shard():
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    with pytest.raises(ConfigError, match=r"per process \(2 processes\) \(32 datapoints\)"):
        Trainer(vae, batch_size=40, max_steps=1, progress=False, collective=Simulated(0)).fit(
            data()["x"]
        )


def test_single_process_collectives_are_the_identity():
    world = SingleProcess()
    t = torch.arange(3.0)
    assert world.mean_(t) is t and torch.equal(world.sum(t), t) and world.gather_object(5) == [5]
    assert world.any(False) is False and world.is_global_zero


class Remote(Simulated):
    """Rank 0 of two, whose partner votes ``remote`` (signalled, timed out) from step ``at``."""

    def __init__(self, remote: tuple[bool, bool], at: int) -> None:
        super().__init__(0)
        self.remote, self.at, self.calls = remote, at, 0

    def vote(self, *flags, device=None):
        self.calls += len(flags) == 2  # the budget's vote, once before each step
        if len(flags) == 2 and self.calls > self.at:
            return tuple(a or b for a, b in zip(flags, self.remote))
        return tuple(bool(f) for f in flags)


@pytest.mark.parametrize(
    "remote, stopped_by, interrupted",
    [((False, True), "max_time", False), ((True, False), "a signal on another process", True)],
)
def test_every_process_stops_at_the_same_step_for_the_same_reason(
    remote, stopped_by, interrupted, tmp_path
):
    """Another process's clock ran out (or a signal came there): this one stops after the same
    step and takes the same reason, so the final checkpoint (a collective) is written by all
    or by none."""
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    trainer = Trainer(
        vae, batch_size=8, epochs=10, max_time=3600, progress=False, run_dir=tmp_path / "run",
        collective=Remote(remote, at=3),
    )  # fmt: skip
    trainer.fit(data()["x"])
    assert trainer.state.step == 3
    assert (trainer.stopped_by, trainer.interrupted) == (stopped_by, interrupted)
