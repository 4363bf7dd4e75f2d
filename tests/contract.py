"""The contract every model family passes (as diffusers' ``ModelTesterMixin``).

A family's test module subclasses :class:`ModelContract` and gives ``make_model()`` (a small
model, seeded) and ``make_data()`` (a batch mapping ``{"x": ..., **observed}`` it fits). The
mixin checks: the pair check, save/load round trip, a training step, exact resume, the
evaluators' numbers (ELBO = reconstruction − KL; IS log p(x) above the ELBO on average) and that
captured steps change nothing (losses, weights, buffers).
"""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import evaluate_elbo, log_likelihood
from pyro_gen.infer import Trainer
from pyro_gen.models import as_pair, check_pair, load_model, save_model

SETTINGS = dict(batch_size=16, log_every=1, progress=False, lr=1e-2)


class ModelContract:
    """Mixin: subclasses define ``make_model`` and ``make_data`` (and may set ``capturable``)."""

    num_data = 64
    settings: dict = {}  # training settings the family needs, e.g. {"elbo": "enum"}

    def make_model(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def make_data(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, model, data, **kw):
        trainer = Trainer(model, **{**SETTINGS, **self.settings, **kw})
        return trainer, trainer.fit(data)

    # -- the pair ----------------------------------------------------------------------------
    def test_pair_check_passes(self):
        data = self.make_data()
        x, kw = data["x"][:8], {k: v[:8] for k, v in data.items() if k != "x"}
        check_pair(as_pair(self.make_model()), x, **kw)

    def test_save_load_round_trip(self, tmp_path):
        model = self.make_model()
        save_model(model, tmp_path / "m")
        loaded = load_model(tmp_path / "m")
        assert type(loaded) is type(model) and loaded.config == model.config
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key

    # -- training ----------------------------------------------------------------------------
    def test_a_training_step_moves_every_trainable_parameter(self):
        model = self.make_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        _, history = self._fit(model, self.make_data(), max_steps=1)
        assert len(history) == 1 and isinstance(history[0]["loss"], float)
        moved = [n for n, p in model.named_parameters() if n in before]
        assert all(not torch.equal(before[n], dict(model.named_parameters())[n]) for n in moved)

    def test_resume_continues_exactly(self, tmp_path):
        data = self.make_data()
        full_model = self.make_model()
        _, full = self._fit(full_model, data, max_steps=6, seed=3)
        run = tmp_path / "run"
        part = self.make_model()
        own = {**SETTINGS, **self.settings}
        Trainer(part, run_dir=run, **{**own, "max_steps": 3, "seed": 3}).fit(data)
        resumed = load_model(run)
        settings = {**own, "max_steps": 6, "seed": 3}
        history = Trainer(resumed, run_dir=run, resume=True, **settings).fit(data)
        assert [r["loss"] for r in history] == [r["loss"] for r in full]
        for key, value in full_model.state_dict().items():
            assert torch.equal(value, resumed.state_dict()[key]), key
        with pytest.raises(ConfigError, match=r"seed=4 \(the run has 3\)"):
            Trainer(resumed, run_dir=run, resume=True, **{**settings, "seed": 4}).fit(data)

    def test_captured_steps_change_nothing(self):
        data = self.make_data()
        runs = []
        for capture in ("off", "on"):
            model = self.make_model()
            trainer, history = self._fit(model, data, max_steps=6, capture=capture)
            runs.append(([r["loss"] for r in history], model.state_dict()))
        (losses_a, state_a), (losses_b, state_b) = runs
        assert losses_a == losses_b
        for key, value in state_a.items():  # parameters and buffers
            assert torch.equal(value, state_b[key]), key

    # -- evaluation --------------------------------------------------------------------------
    def test_evaluators_agree_with_each_other(self):
        model, data = self.make_model(), self.make_data()
        x, kw = data["x"], {k: v for k, v in data.items() if k != "x"}
        result = evaluate_elbo(model, x, **kw, seed=0)
        attributes = result.attributes_log_prob  # log p(y) of a conditional model's attributes
        attributes = 0.0 if attributes is None else attributes
        torch.testing.assert_close(result.elbo, result.reconstruction + attributes - result.kl)
        pyro.set_rng_seed(0)
        log_px = log_likelihood(model, x, num_samples=64, **kw)
        assert log_px.shape == result.elbo.shape
        # importance sampling with 64 draws is a tighter bound than the ELBO, on average
        assert float(log_px.mean()) >= float(result.elbo.mean()) - 1e-3
