"""TensorBoard logging: the curves are history.csv's numbers, sample grids each epoch."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.infer import Trainer
from pyro_gen.infer.loggers import TensorBoardLogger, make_logger
from pyro_gen.models import VAE

pytest.importorskip("tensorboard")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_curves_are_the_history_s(tmp_path):
    vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((64, 1, 4, 4), 0.5))
    trainer = Trainer(
        vae,
        run_dir=tmp_path,
        batch_size=16,
        epochs=2,
        log_every=2,
        progress=False,
        beta_schedule="linear",
        warmup_steps=8,
        callbacks=[TensorBoardLogger(num_samples=6)],
    )
    history = trainer.fit(x, x[:16])
    acc = _events(tmp_path / "tensorboard")
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    rows = {r["step"]: r for r in history if r["loss"] != ""}
    assert sorted(loss) == sorted(rows) == [2, 4, 6, 8]
    for step, value in loss.items():
        assert value == pytest.approx(rows[step]["loss"], rel=1e-5)
    beta = {e.step: e.value for e in acc.Scalars("train/beta")}
    assert beta == pytest.approx({s: rows[s]["beta"] for s in rows})
    assert beta[2] < beta[8]  # the warm-up is seen
    valid = {e.step: e.value for e in acc.Scalars("valid/elbo")}
    expected = {r["step"]: r["valid_elbo"] for r in history if r["valid_elbo"] != ""}
    assert valid == pytest.approx(expected, rel=1e-5) and sorted(valid) == [4, 8]
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([1e-3] * 4)
    images = acc.Images("samples")
    assert [i.step for i in images] == [4, 8]
    # 6 tiles of 4 px on one row, a 1 px border around each
    assert (images[0].width, images[0].height) == (6 * 5 + 1, 5 + 1)


def test_a_resumed_run_continues_its_curves(tmp_path):
    vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((32, 1, 4, 4), 0.5))
    kw = dict(run_dir=tmp_path, batch_size=16, log_every=1, progress=False)
    Trainer(vae, epochs=1, callbacks=[TensorBoardLogger(num_samples=0)], **kw).fit(x)
    Trainer(vae, epochs=2, resume=True, callbacks=[TensorBoardLogger(num_samples=0)], **kw).fit(x)
    steps = [e.step for e in _events(tmp_path / "tensorboard").Scalars("train/loss")]
    assert steps == [1, 2, 3, 4]


def test_make_logger_names_the_choices():
    assert make_logger(None) is None and make_logger("none") is None
    assert isinstance(make_logger("tensorboard"), TensorBoardLogger)
    with pytest.raises(ConfigError, match="tensorboard"):
        make_logger("wandb")
    with pytest.raises(ConfigError, match="log_dir"):
        Trainer(
            VAE(data_shape=(4,), latent_dim=2, hidden=(8,)),
            max_steps=1,
            batch_size=4,
            progress=False,
            callbacks=[TensorBoardLogger()],
        ).fit(torch.ones(8, 4))


def test_pyro_gen_train_logger_tensorboard(tmp_path, capsys):
    from pyro_gen.cli import main

    run = tmp_path / "run"
    tiny = "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 32 --hidden 8"
    argv = ["train", *tiny.split(), "--latent-dim", "2", "--no-progress", "--epochs", "1"]
    assert main([*argv, "--logger", "tensorboard", "--out", str(run)]) == 0
    acc = _events(run / "tensorboard")
    assert [e.step for e in acc.Scalars("valid/elbo")] == [2]
    assert len(acc.Images("samples")) == 1
    with pytest.raises(SystemExit):
        main([*argv, "--logger", "wandb", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'wandb'" in capsys.readouterr().err
