"""keep_best: the best validation ELBO's weights end in the model and in ``model.safetensors``."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.infer import Trainer
from pyro_gen.infer.callbacks import Callback
from pyro_gen.infer.checkpoint import latest_checkpoint
from pyro_gen.models import VAE
from pyro_gen.models.persistence import load_tensors


class Spoil(Callback):
    """After the validation of epoch ``at``, add large noise to every weight: the next
    validation ELBOs are worse, so the best is epoch ``at``'s."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer) -> None:
        if trainer.state.epoch == self.at:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in trainer.module.parameters():
                    p.add_(3.0 * torch.randn(p.shape, generator=g))


def _setup():
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((96, 8), 0.3), generator=g)
    return VAE(data_shape=(8,), latent_dim=2, hidden=(16,)), x[:64], x[64:]


def _trainer(vae, run, epochs, resume=False, **kw):
    return Trainer(
        vae,
        run_dir=run,
        resume=resume,
        batch_size=16,
        epochs=epochs,
        lr=1e-5,
        progress=False,
        callbacks=[Spoil(2)],
        capture="off",
        **kw,
    )


def _valid_rows(history):
    return [(r["step"], r["valid_elbo"]) for r in history if r["valid_elbo"] != ""]


def test_best_weights_are_restored_and_written(tmp_path):
    vae, train, valid = _setup()
    trainer = _trainer(vae, tmp_path / "run", epochs=4)
    history = trainer.fit(train, valid)
    rows = _valid_rows(history)
    best_step, best_value = max(rows, key=lambda r: r[1])
    assert best_step == 8 and rows[-1][1] < best_value  # epoch 2 of 4 steps each
    assert trainer.best == {"step": 8, "epoch": 2, "valid_elbo": best_value, "restored": True}
    assert trainer.evaluate(valid) == pytest.approx(best_value, abs=1e-6)  # the model is the best
    saved, meta = load_tensors(tmp_path / "run" / "model.safetensors")
    assert meta["best_step"] == "8" and meta["best_epoch"] == "2"
    for k, v in vae.state_dict().items():
        assert torch.equal(saved[k], v), k
    last, _ = load_tensors(latest_checkpoint(tmp_path / "run") / "model.safetensors")
    assert any(not torch.equal(last[k], saved[k]) for k in saved)  # checkpoints: last weights


def test_a_resumed_run_restores_the_earlier_sessions_best(tmp_path):
    vae, train, valid = _setup()
    first = _trainer(vae, tmp_path / "run", epochs=3)
    first.fit(train, valid)
    best = {k: v.clone() for k, v in vae.state_dict().items()}
    vae2, _, _ = _setup()
    second = _trainer(vae2, tmp_path / "run", epochs=4, resume=True)
    second.fit(train, valid)
    assert second.state.best_step == 8
    for k, v in vae2.state_dict().items():
        assert torch.equal(best[k], v), k
