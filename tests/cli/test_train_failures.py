"""``pyro-gen train`` when something fails or does not apply: a failure before the first
checkpoint leaves no run folder that looks finished; a program with a global latent gets its
summary.json with the test ELBO skipped and said so."""

from __future__ import annotations

import json
import sys

import pytest

from pyro_gen.cli import main
from pyro_gen.infer.step import SVIStep
from pyro_gen.models import MODELS

TINY = (
    "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 16 --epochs 1 "
    "--no-progress"
).split()
MODULE = "cli_failure_models"
SOURCE = '''
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_gen.models import register_model


@register_model("cli_global_vae")
class GlobalVAE(PyroModule):
    """A global temperature t (outside the data plate) and a per-datapoint z."""

    def __init__(self, data_shape=(1, 16, 16), z: int = 2, hidden: int = 16):
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        D = int(torch.Size(self.data_shape).numel())
        self.zd = z
        self.dec = nn.Sequential(nn.Linear(z, hidden), nn.Tanh(), nn.Linear(hidden, D))
        self.enc = nn.Linear(D, 2 * z)
        self.t_loc = nn.Parameter(torch.zeros(()))

    def model(self, x):
        t = pyro.sample("t", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.zd), 1.0).to_event(1))
            logits = self.dec(z).reshape(z.shape[:-1] + self.data_shape) / t
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(self, x):
        pyro.sample("t", dist.LogNormal(self.t_loc, 0.1))
        with pyro.plate("data", x.shape[0]):
            loc, s = self.enc(x.flatten(1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(s) + 1e-3).to_event(1))


@register_model("cli_flat_vae")
class FlatVAE(PyroModule):
    """Flattens the batch with reshape(-1, *data_shape): no room for a particle dim."""

    def __init__(self, data_shape=(1, 16, 16), z: int = 2):
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        D = int(torch.Size(self.data_shape).numel())
        self.zd = z
        self.dec = nn.Linear(z, D)
        self.enc = nn.Linear(D, 2 * z)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.zd), 1.0).to_event(1))
            logits = self.dec(z).reshape(-1, *self.data_shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, s = self.enc(x.flatten(1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(s) + 1e-3).to_event(1))
'''
NAMES = ("cli_global_vae", "cli_flat_vae")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in NAMES:
        MODELS.pop(name, None)
    sys.modules.pop(MODULE, None)


def test_a_global_latent_trains_and_writes_its_summary_with_the_test_elbo_skipped(user_dir, capsys):
    run = user_dir / "run"
    argv = ["train", "--import", MODULE, "--model", "cli_global_vae", *TINY, "--out", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no test ELBO" in out and "global latents: 't'" in out
    train = json.loads((run / "summary.json").read_text())["train"]
    assert "test_elbo" not in train and "'t'" in train["test_elbo_note"]
    assert train["steps"] == 4
    assert (run / "report.html").is_file() and (run / "model.safetensors").is_file()


def test_iwae_on_a_program_that_flattens_the_batch_is_a_clear_error_and_writes_nothing(
    user_dir, capsys
):
    run = user_dir / "run"
    argv = ["train", "--import", MODULE, "--model", "cli_flat_vae", *TINY, "--out", str(run)]
    assert main([*argv, "--elbo", "iwae", "--num-particles", "4"]) == 2
    err = capsys.readouterr().err
    assert "pyro-gen train: error:" in err and "Traceback" not in err
    assert "4 x 16 draws" in err and "reshape(-1, *data_shape)" in err
    assert "elbo='trace' with num_particles=1" in err
    assert not run.exists()
    assert main(argv) == 0  # and trace (one particle) trains it


def test_iwae_without_num_particles_notes_that_k_1_is_the_elbo(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--latent-dim", "2", "--hidden", "8", *TINY, "--out", str(run)]
    with pytest.warns(UserWarning, match="k = 1 .*plain ELBO.*--num-particles k"):
        assert main([*argv, "--elbo", "iwae"]) == 0


def test_a_failure_before_the_first_checkpoint_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    def boom(self, batch, *, check=True):
        raise RuntimeError("a failure in the first step")

    run = tmp_path / "run"
    argv = ["train", "--latent-dim", "2", "--hidden", "8", *TINY, "--out", str(run)]
    with monkeypatch.context() as mp:
        mp.setattr(SVIStep, "update", boom)
        with pytest.raises(RuntimeError, match="first step"):
            main(argv)
    assert not run.exists()  # no config.json + untrained model.safetensors left behind
    assert "removed what it wrote" in capsys.readouterr().out
    # an empty folder given as --out is kept (emptied), and the same --out then trains
    run.mkdir()
    with monkeypatch.context() as mp:
        mp.setattr(SVIStep, "update", boom)
        with pytest.raises(RuntimeError):
            main(argv)
    assert run.is_dir() and not any(run.iterdir())
    assert main(argv) == 0 and (run / "summary.json").is_file()


@pytest.mark.parametrize("elbo", ["meanfield", "jit_meanfield"])
def test_a_vqvae_trains_under_meanfield_as_under_trace(tmp_path, elbo):
    # the point-mass guide has no rsample (its entropy term is the int 0) and the MADE prior
    # no closed-form KL: the sampled estimate crashed; it is trace's loss here
    vq = "--model vqvae --num-codes 8 --code-dim 4 --channels 8,8 --prior-hidden 16".split()
    losses = {}
    for name in ("trace", elbo):
        run = tmp_path / name
        assert main(["train", *vq, *TINY, "--elbo", name, "--out", str(run)]) == 0
        losses[name] = json.loads((run / "summary.json").read_text())["train"]["test_elbo"]
    assert losses[elbo]["elbo"] == pytest.approx(losses["trace"]["elbo"], rel=1e-5)


def test_train_says_a_vqvae_prior_was_fitted_jointly_only(tmp_path, capsys):
    """pyro-gen train has no prior-only stage: a VQ-VAE's run says so and how to run it; a
    plain VAE's does not."""
    vq = "--model vqvae --num-codes 8 --code-dim 4 --channels 8,8 --prior-hidden 16".split()
    assert main(["train", *vq, *TINY, "--out", str(tmp_path / "vq")]) == 0
    out = capsys.readouterr().out
    assert "no prior-only stage" in out and "model.prior_only()" in out
    assert main(["train", "--model", "vae", *TINY, "--out", str(tmp_path / "vae")]) == 0
    assert "prior-only" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--image-size", "12"], "--image-size (size): size must be an integer >= 16"),
        (["--num-train", "0"], "--num-train (num_train): num_train must be an integer >= 1"),
    ],
)
def test_a_bad_data_option_names_the_flag_that_set_it(tmp_path, capsys, flags, says):
    run = tmp_path / "run"
    assert main(["train", *flags, "--epochs", "1", "--no-progress", "--out", str(run)]) == 2
    assert says in capsys.readouterr().err
    assert not run.exists()
