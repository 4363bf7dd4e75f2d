"""Lightning DDP: two CPU processes (gloo) end with identical replicas and a loadable run folder;
mid-run checkpoints in the Trainer's layout, and resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the optional dependency 'lightning' is not installed")

import lightning.pytorch as pl  # noqa: E402

from pyro_gen.cli import main  # noqa: E402
from pyro_gen.data import make_shapes  # noqa: E402
from pyro_gen.errors import CheckpointError, ConfigError  # noqa: E402
from pyro_gen.evaluate import evaluate_elbo  # noqa: E402
from pyro_gen.infer import Trainer, list_checkpoints, read_checkpoint  # noqa: E402
from pyro_gen.infer.lightning import ELBOLoss, fit_lightning, state_digest  # noqa: E402
from pyro_gen.models import (  # noqa: E402
    VAE,  # noqa: E402
    load_model,
    load_weights,
    read_config,
)

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import torch
    from pyro_gen.data import make_shapes
    from pyro_gen.infer.lightning import fit_lightning, state_digest
    from pyro_gen.models import VAE

    out = Path(sys.argv[1])
    ds = make_shapes(num_train=256, num_valid=64, num_test=64, size=16, seed=0)
    # a different initialisation on each rank: DDP must broadcast rank 0's weights
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", 0)))
    vae = VAE(data_shape=(1, 16, 16), latent_dim=2, hidden=(32,))
    run = fit_lightning(
        vae, ds.split("train"), ds.split("valid"), devices=2, accelerator="cpu",
        strategy="ddp", run_dir=out / "run", batch_size=32, epochs=2, log_every=2,
        progress=False, sections={"data": {"name": "shapes"}},
    )
    (out / f"rank{run.global_rank}.json").write_text(
        '{"digest": "%s", "steps": %d, "world": %d, "identical": %s}'
        % (state_digest(vae), run.steps, run.world_size, str(run.replicas_identical).lower())
    )
    """
)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "NODE_RANK")}
    env.pop("MASTER_PORT", None)  # Lightning picks a free port: parallel test runs do not clash
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _run_script(tmp_path: Path, name: str, source: str, *args) -> None:
    """Write ``source`` to ``tmp_path/name`` and run it in a fresh process (it must succeed)."""
    script = tmp_path / name
    script.write_text(source)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_two_cpu_processes_identical_replicas_and_loadable_run(tmp_path: Path):
    _run_script(tmp_path, "ddp_train.py", SCRIPT)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert all(r["world"] == 2 and r["identical"] for r in ranks)
    assert ranks[0]["steps"] == 8  # 256 images / 2 ranks / batch 32 = 4 steps x 2 epochs

    run = tmp_path / "run"
    model = load_model(run)
    assert state_digest(model) == ranks[0]["digest"]
    config = read_config(run)
    assert config["distributed"]["world_size"] == 2 and config["train"]["batch_size"] == 32
    assert config["data"] == {"name": "shapes"}
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,epoch,loss,valid_elbo") and len(history) >= 3
    # rank 0 checkpointed each epoch's end, in the single-process Trainer's layout
    assert [p.name for p in list_checkpoints(run)] == ["step-000000004", "step-000000008"]
    weights, state = read_checkpoint(list_checkpoints(run)[-1], engine="lightning")
    assert adam_steps(state["lightning"]) == {8.0}
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    test = make_shapes(num_train=8, num_valid=8, num_test=64, size=16, seed=0).split("test")
    summary = evaluate_elbo(model, test).summary()
    assert torch.isfinite(torch.tensor(summary["elbo"]))


def test_cli_routes_devices_to_lightning(tmp_path: Path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pyro_gen.cli", "train", "--data", "shapes", "--num-train", "128"]
    cmd += ["--num-valid", "32", "--num-test", "32", "--image-size", "16", "--hidden", "16"]
    cmd += ["--latent-dim", "2", "--max-steps", "3", "--batch-size", "32", "--no-progress"]
    cmd += ["--devices", "1", "--accelerator", "cpu", "--strategy", "ddp", "--out", str(out)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, env=_env(), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())["train"]
    assert summary["steps"] == 3 and summary["world_size"] == 1 and summary["replicas_identical"]
    assert read_config(out)["distributed"]["engine"] == "lightning"
    assert load_model(out).latent_dim == 2
    assert (out / "figures" / "samples.png").is_file()


def test_elbo_loss_is_a_module_over_the_pairs_parameters():
    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
    loss_fn = ELBOLoss(vae)
    assert {id(p) for p in loss_fn.parameters()} == {id(p) for p in vae.parameters()}
    loss = loss_fn(torch.ones(3, 4))
    loss.backward()
    assert all(p.grad is not None for p in vae.parameters())


# -- mid-run checkpoints and resume (one process in this one, no process group) -------------------
SIZE = 16
FAST = {
    "devices": 1,
    "accelerator": "cpu",
    "strategy": "auto",
    "batch_size": 32,
    "log_every": 1,
    "progress": False,
}


@pytest.fixture(scope="module")
def shapes():
    """128 train / 32 valid binary 16x16 images: 4 steps per epoch at batch 32."""
    return make_shapes(num_train=128, num_valid=32, num_test=32, size=SIZE, seed=0)


def make_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(data_shape=(1, SIZE, SIZE), latent_dim=2, hidden=(16,))


@pytest.fixture(scope="module")
def one_epoch(shapes, tmp_path_factory) -> tuple[Path, list[dict]]:
    """A run folder trained for 1 epoch (4 steps; a checkpoint at its end), and its history."""
    run = tmp_path_factory.mktemp("lightning") / "one-epoch"
    result = fit_lightning(
        make_vae(), shapes.split("train"), shapes.split("valid"), run_dir=run, epochs=1, **FAST
    )
    assert result.steps == 4 and not result.interrupted
    return run, result.history


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def history_steps(run: Path) -> list[int]:
    with open(run / "history.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def newest(run: Path) -> tuple[dict, dict]:
    """(weights, Lightning's checkpoint dict) of the newest checkpoint."""
    weights, state = read_checkpoint(list_checkpoints(run)[-1], engine="lightning")
    return weights, state["lightning"]


def adam_steps(checkpoint: dict) -> set[float]:
    return {float(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()}


class Probe(pl.Callback):
    """What training starts from: the weights, the optimiser state and the step counter."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        self.weights = {k: v.clone() for k, v in pl_module.loss_fn.net.state_dict().items()}
        opt = trainer.optimizers[0]
        self.opt_state = [
            {k: v.clone() for k, v in opt.state[p].items()} for p in opt.param_groups[0]["params"]
        ]


def test_checkpoints_are_the_trainers_layout_without_pickle(shapes, one_epoch, tmp_path):
    run = copy_run(one_epoch[0], tmp_path)
    assert [p.name for p in list_checkpoints(run)] == ["step-000000004"]  # the epoch's end
    ckpt = list_checkpoints(run)[0]
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors",
        "trainer.json",
        "trainer.safetensors",
    ]
    assert not list(run.rglob("*.ckpt")) and not list(run.rglob("*.pt"))
    weights, checkpoint = newest(run)
    assert checkpoint["global_step"] == 4 and adam_steps(checkpoint) == {4.0}
    # the run's weights are the newest checkpoint's, and load_model reads them
    assert state_digest(load_model(run)) == state_digest(load_weights(make_vae(seed=1), ckpt))
    model = make_vae(seed=1)
    model.load_state_dict(weights)
    assert state_digest(model) == state_digest(load_model(run))
    assert read_config(run)["distributed"]["engine"] == "lightning"
    assert history_steps(run) == [1, 2, 3, 4]
    # the single-process Trainer does not take it for one of its own
    with pytest.raises(CheckpointError, match="fit_lightning"):
        read_checkpoint(ckpt)

    # checkpoint_every and keep_checkpoints as in the Trainer; the end is always checkpointed
    run = tmp_path / "every"
    settings = {**FAST, "max_steps": 7, "checkpoint_every": 2, "keep_checkpoints": 3}
    fit_lightning(make_vae(), shapes.split("train"), run_dir=run, **settings)
    assert [p.name for p in list_checkpoints(run)] == [f"step-00000000{i}" for i in (4, 6, 7)]
    assert history_steps(run) == list(range(1, 8))


def test_resume_starts_from_the_saved_parameters_and_optimizer_state(shapes, one_epoch, tmp_path):
    """2 epochs straight vs 1 epoch + resume for 1 more: same steps, history continues, and the
    resumed run starts from the checkpoint's parameters and Adam state (exactly)."""
    x, valid = shapes.split("train"), shapes.split("valid")
    straight = fit_lightning(make_vae(), x, valid, run_dir=tmp_path / "straight", epochs=2, **FAST)
    run = copy_run(one_epoch[0], tmp_path)
    saved_weights, saved = newest(run)

    probe = Probe()
    model = make_vae(seed=7)  # other weights: they must be replaced by the checkpoint's
    resumed = fit_lightning(
        model,
        x,
        valid,
        run_dir=run,
        epochs=2,
        resume=True,
        trainer_kwargs={"callbacks": [probe]},
        **FAST,
    )
    assert resumed.resumed_from == run / "checkpoints" / "step-000000004"
    assert probe.step == 4
    assert probe.weights.keys() == saved_weights.keys()
    assert all(torch.equal(probe.weights[k], saved_weights[k]) for k in saved_weights)
    saved_opt = saved["optimizer_states"][0]["state"]
    assert len(probe.opt_state) == len(saved_opt)
    for i, state in enumerate(probe.opt_state):
        assert state.keys() == saved_opt[i].keys()
        assert all(torch.equal(state[k].cpu(), saved_opt[i][k]) for k in state)

    assert resumed.steps == straight.steps == 8 and resumed.epochs == straight.epochs == 2
    keys = ("step", "epoch")
    assert [tuple(r[k] for k in keys) for r in resumed.history] == [
        tuple(r[k] for k in keys) for r in straight.history
    ]
    assert resumed.history[:4] == one_epoch[1]  # the first epoch's rows as they were
    assert history_steps(run) == list(range(1, 9))
    assert [p.name for p in list_checkpoints(run)] == ["step-000000004", "step-000000008"]
    assert adam_steps(newest(run)[1]) == adam_steps(newest(tmp_path / "straight")[1]) == {8.0}
    assert state_digest(load_model(run)) == state_digest(model)


def test_resume_refuses_finished_missing_and_foreign_runs(shapes, one_epoch, tmp_path):
    x = shapes.split("train")
    run = copy_run(one_epoch[0], tmp_path)
    with pytest.raises(ConfigError, match="has finished: epochs=1"):
        fit_lightning(make_vae(), x, run_dir=run, epochs=1, resume=True, **FAST)
    with pytest.raises(ConfigError, match="raise max_steps"):
        fit_lightning(make_vae(), x, run_dir=run, max_steps=4, resume=True, **FAST)
    with pytest.raises(ConfigError, match="already holds a run"):
        fit_lightning(make_vae(), x, run_dir=run, epochs=2, **FAST)
    missing = tmp_path / "missing" / "run"
    with pytest.raises(CheckpointError, match="nothing to resume.*does not exist"):
        fit_lightning(make_vae(), x, run_dir=missing, resume=True, **FAST)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ConfigError, match="needs the run_dir"):
        fit_lightning(make_vae(), x, resume=True, **FAST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints/ folder"):
        fit_lightning(make_vae(), x, run_dir=empty, resume=True, **FAST)
    assert list(empty.iterdir()) == []

    # the two trainers do not resume each other's checkpoints
    single = tmp_path / "single"
    Trainer(make_vae(), run_dir=single, max_steps=2, batch_size=32, progress=False).fit(x)
    trainer = Trainer(make_vae(), run_dir=run, resume=True, epochs=2, batch_size=32, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="single-process pyro_gen.infer.Trainer"):
            fit_lightning(make_vae(), x, run_dir=single, max_steps=4, resume=True, **FAST)
        with pytest.raises(CheckpointError, match="written by pyro_gen.infer.lightning"):
            trainer.fit(x)
    # a foreign checkpoint is not "damaged": no checkpoint is skipped, the error says why
    assert not [w for w in caught if "skipping" in str(w.message)]


def test_resume_skips_a_damaged_newest_checkpoint(shapes, tmp_path):
    x = shapes.split("train")
    run = tmp_path / "run"
    fit_lightning(make_vae(), x, run_dir=run, max_steps=4, checkpoint_every=2, **FAST)
    assert [p.name for p in list_checkpoints(run)] == ["step-000000002", "step-000000004"]
    damaged = list_checkpoints(run)[-1] / "trainer.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping damaged checkpoint .*step-000000004"):
        result = fit_lightning(make_vae(), x, run_dir=run, max_steps=6, resume=True, **FAST)
    assert result.resumed_from.name == "step-000000002"
    assert result.steps == 6 and [r["step"] for r in result.history] == list(range(1, 7))
    assert adam_steps(newest(run)[1]) == {6.0}


class SigtermAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop between steps


def test_sigterm_writes_a_checkpoint_that_resume_continues(shapes, tmp_path):
    x = shapes.split("train")
    run = tmp_path / "run"
    settings = {**FAST, "epochs": 2, "checkpoint_every": 100}
    first = fit_lightning(
        make_vae(), x, run_dir=run, trainer_kwargs={"callbacks": [SigtermAt(2)]}, **settings
    )
    assert first.interrupted and first.steps == 2
    assert [p.name for p in list_checkpoints(run)] == ["step-000000002"]
    assert history_steps(run) == [1, 2]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="skipping damaged checkpoint")  # it is complete
        second = fit_lightning(make_vae(seed=3), x, run_dir=run, resume=True, **settings)
    assert not second.interrupted and second.steps == 8
    assert [r["step"] for r in second.history] == list(range(1, 9))
    assert adam_steps(newest(run)[1]) == {8.0}


def test_cli_resumes_a_lightning_run(tmp_path, capsys):
    run = tmp_path / "run"
    data = ["--data", "shapes", "--num-train", "128", "--num-valid", "32", "--num-test", "32"]
    data += ["--image-size", "16", "--hidden", "16", "--latent-dim", "2", "--batch-size", "32"]
    lightning = ["--devices", "1", "--accelerator", "cpu", "--strategy", "auto", "--no-progress"]
    assert main(["train", *data, *lightning, "--max-steps", "3", "--out", str(run)]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-000000003"]
    resume = ["train", "--out", str(run), "--resume", *lightning]
    assert main([*resume, "--max-steps", "5"]) == 0
    summary = json.loads((run / "summary.json").read_text())["train"]
    assert summary["steps"] == 5
    assert history_steps(run)[-1] == 5 and len(history_steps(run)) == len(set(history_steps(run)))
    # the end of epoch 1 (step 4) and the end of the run; keep_checkpoints=2
    assert [p.name for p in list_checkpoints(run)] == ["step-000000004", "step-000000005"]
    capsys.readouterr()
    assert main(resume) == 2  # max_steps 5 from config.json: done
    assert "has finished: max_steps=5" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "trained with Lightning" in capsys.readouterr().err


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import lightning.pytorch as pl
    from pyro_gen.data import make_shapes
    from pyro_gen.models import load_model
    from pyro_gen.infer.lightning import fit_lightning, state_digest
    from pyro_gen.models import VAE

    out, epochs, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            opt = trainer.optimizers[0]
            self.start = {
                "step": trainer.global_step,
                "digest": state_digest(pl_module.loss_fn.net),
                "adam_steps": sorted({float(s["step"]) for s in opt.state.values()}),
            }

    ds = make_shapes(num_train=256, num_valid=64, num_test=64, size=16, seed=0)
    resume = mode == "resume"
    model = load_model(out / "run") if resume else VAE(
        data_shape=(1, 16, 16), latent_dim=2, hidden=(32,)
    )
    probe = Probe()
    run = fit_lightning(
        model, ds.split("train"), ds.split("valid"), devices=2, accelerator="cpu",
        strategy="ddp", run_dir=out / "run", resume=resume, batch_size=32, epochs=epochs,
        log_every=2, progress=False, trainer_kwargs={"callbacks": [probe]},
    )
    (out / f"{mode}-rank{run.global_rank}.json").write_text(json.dumps({
        "start": probe.start, "steps": run.steps, "identical": run.replicas_identical,
        "final": run.digest, "history": [r["step"] for r in run.history],
    }))
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_resume(tmp_path: Path):
    """2 processes (gloo): 1 epoch, then resume for a second; every rank starts from the
    checkpoint's weights, Adam state step count and global step."""
    for epochs, mode in ((1, "new"), (2, "resume")):
        _run_script(tmp_path, "ddp_resume.py", RESUME_SCRIPT, epochs, mode)
    first = json.loads((tmp_path / "new-rank0.json").read_text())
    ranks = [json.loads((tmp_path / f"resume-rank{r}.json").read_text()) for r in (0, 1)]
    assert first["steps"] == 4 and first["history"] == [2, 4]  # 256 / 2 ranks / 32 per epoch
    run = tmp_path / "run"
    for r in ranks:
        assert r["start"] == {"step": 4, "digest": first["final"], "adam_steps": [4.0]}
        assert r["steps"] == 8 and r["identical"] and r["final"] == ranks[0]["final"]
    assert ranks[0]["history"] == [2, 4, 6, 8]
    assert [p.name for p in list_checkpoints(run)] == ["step-000000004", "step-000000008"]
    assert history_steps(run) == [2, 4, 6, 8]
    assert state_digest(load_model(run)) == ranks[0]["final"]
    assert adam_steps(newest(run)[1]) == {8.0}


def test_max_time_stops_lightning_with_a_checkpoint(tmp_path):
    """The wall-clock budget on the Lightning path too: stops early, the last step checkpointed."""
    x = torch.bernoulli(torch.full((4000, 12), 0.3), generator=torch.Generator().manual_seed(0))
    run = tmp_path / "run"
    result = fit_lightning(
        VAE(data_shape=(12,), latent_dim=2, hidden=(8,)),
        x,
        devices=1,
        accelerator="cpu",
        epochs=1000,
        batch_size=8,
        max_time=1.0,
        progress=False,
        run_dir=run,
    )
    assert 0 < result.steps < 1000 * 500
    assert list_checkpoints(run)[-1].name == f"step-{result.steps:09d}"


def test_elbo_loss_weights_the_latents_by_beta():
    """Lightning's loss is the step's β-ELBO: β moves it by (β − 1)·(log q − log p)."""
    import pyro

    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 4), 0.5), generator=torch.Generator().manual_seed(0))
    loss_fn = ELBOLoss(vae, elbo="meanfield")
    values = {}
    for beta in (1.0, 3.0):
        loss_fn.beta = beta
        pyro.set_rng_seed(0)
        values[beta] = float(loss_fn(x))
    pyro.set_rng_seed(0)
    with torch.no_grad(), pyro.settings.context(module_local_params=True):
        loc, scale = vae.encoder(x)
        kl = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).sum() / 5
    assert values[3.0] - values[1.0] == pytest.approx(2 * float(kl), rel=1e-4)
