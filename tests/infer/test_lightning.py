"""Lightning Fabric: the one loop on several processes. Two CPU processes (gloo) end with
identical replicas and a loadable run folder in the single-process layout; one process is the
single-process Trainer bit for bit; resume is exact (every rank's random state is in the
checkpoint)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the optional dependency 'lightning' is not installed")

from pyro_gen.cli import main  # noqa: E402
from pyro_gen.data import make_shapes  # noqa: E402
from pyro_gen.errors import ConfigError  # noqa: E402
from pyro_gen.evaluate import evaluate_elbo  # noqa: E402
from pyro_gen.infer import Trainer, list_checkpoints, read_checkpoint  # noqa: E402
from pyro_gen.infer.lightning import ELBOLoss, fit_lightning, state_digest  # noqa: E402
from pyro_gen.models import VAE, load_model, read_config  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    from pyro_gen.data import make_shapes
    from pyro_gen.infer.lightning import fit_lightning, state_digest
    from pyro_gen.models import VAE, load_model

    out, name, epochs, resume = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ds = make_shapes(num_train=256, num_valid=64, num_test=64, size=16, seed=0)
    # a different initialisation on each rank: the loop must broadcast rank 0's weights
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", 0)))
    run_dir = out / name
    model = (load_model(run_dir) if resume == "resume"
             else VAE(data_shape=(1, 16, 16), latent_dim=2, hidden=(32,)))
    run = fit_lightning(
        model, ds.split("train"), ds.split("valid"), devices=2, accelerator="cpu",
        strategy="ddp", run_dir=run_dir, resume=resume == "resume", batch_size=32,
        epochs=epochs, log_every=2, progress=False, sections={"data": {"name": "shapes"}},
    )
    (out / f"{name}-{resume}-rank{run.global_rank}.json").write_text(json.dumps({
        "digest": state_digest(model), "steps": run.steps, "world": run.world_size,
        "identical": run.replicas_identical, "losses": [r["loss"] for r in run.history],
    }))
    """
)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "NODE_RANK")}
    env.pop("MASTER_PORT", None)  # Lightning picks a free port: parallel test runs do not clash
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _ddp(tmp_path: Path, name: str, epochs: int, resume: str = "new") -> list[dict]:
    """Run SCRIPT on 2 processes; the JSON each rank wrote."""
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), name, str(epochs), resume],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"{name}-{resume}-rank{r}.json").read_text()) for r in (0, 1)]


def adam_steps(state: dict) -> set[float]:
    return {float(s["step"]) for s in state["optimizer"]["state"].values()}


def test_ddp_two_cpu_processes_identical_replicas_and_loadable_run(tmp_path: Path):
    ranks = _ddp(tmp_path, "run", epochs=2)
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert all(r["world"] == 2 and r["identical"] for r in ranks)
    assert ranks[0]["steps"] == 8  # 256 images / 2 ranks / batch 32 = 4 steps x 2 epochs
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the loss is the mean over the ranks

    run = tmp_path / "run"
    model = load_model(run)
    assert state_digest(model) == ranks[0]["digest"]
    config = read_config(run)
    assert config["distributed"]["world_size"] == 2 and config["train"]["batch_size"] == 32
    assert config["data"] == {"name": "shapes"}
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,epoch,loss,valid_elbo") and len(history) >= 3
    # rank 0 checkpointed each epoch's end, in the single-process Trainer's format
    assert [p.name for p in list_checkpoints(run)] == ["step-000000004", "step-000000008"]
    weights, state = read_checkpoint(list_checkpoints(run)[-1])
    assert adam_steps(state) == {8.0}
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # the two ranks drew different Monte-Carlo noise
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    test = make_shapes(num_train=8, num_valid=8, num_test=64, size=16, seed=0).split("test")
    summary = evaluate_elbo(model, test).summary()
    assert torch.isfinite(torch.tensor(summary["elbo"]))
    # a 2-process run resumes on 2 processes only
    with pytest.raises(ConfigError, match=r"trained on 2 process\(es\)"):
        fit_lightning(
            load_model(run), torch.ones(256, 1, 16, 16), run_dir=run, resume=True, **FAST, epochs=3
        )


@pytest.mark.slow
def test_ddp_two_cpu_processes_resume_exactly(tmp_path: Path):
    """2 processes: 1 epoch, then resumed for a second, equal an uninterrupted 2-epoch run bit
    for bit (weights and every logged loss)."""
    straight = _ddp(tmp_path, "straight", epochs=2)
    _ddp(tmp_path, "parts", epochs=1)
    resumed = _ddp(tmp_path, "parts", epochs=2, resume="resume")
    assert resumed[0]["digest"] == resumed[1]["digest"] == straight[0]["digest"]
    assert resumed[0]["steps"] == 8
    straight_rows = list(csv.DictReader(open(tmp_path / "straight" / "history.csv")))
    parts_rows = list(csv.DictReader(open(tmp_path / "parts" / "history.csv")))
    assert straight_rows == [
        {**p, "elapsed": s["elapsed"]} for p, s in zip(parts_rows, straight_rows)
    ]


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


# -- one process: the single-process Trainer, bit for bit ------------------------------------------
SIZE = 16
FAST = {"devices": 1, "accelerator": "cpu", "strategy": "auto", "batch_size": 32, "log_every": 1}
FAST["progress"] = False


@pytest.fixture(scope="module")
def shapes():
    """128 train / 32 valid binary 16x16 images: 4 steps per epoch at batch 32."""
    return make_shapes(num_train=128, num_valid=32, num_test=32, size=SIZE, seed=0)


def make_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(data_shape=(1, SIZE, SIZE), latent_dim=2, hidden=(16,))


def rows(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in history]


def test_one_process_is_the_trainer_bit_for_bit(shapes):
    x, valid = shapes.split("train"), shapes.split("valid")
    settings = {k: v for k, v in FAST.items() if k not in ("devices", "accelerator", "strategy")}
    alone = make_vae()
    history = Trainer(alone, device="cpu", epochs=2, **settings).fit(x, valid)
    fabric = make_vae()
    result = fit_lightning(fabric, x, valid, epochs=2, **FAST)
    assert rows(result.history) == rows(history) and result.steps == 8 and result.world_size == 1
    assert state_digest(fabric) == state_digest(alone)


def test_resume_continues_exactly(shapes, tmp_path):
    x, valid = shapes.split("train"), shapes.split("valid")
    straight = make_vae()
    full = fit_lightning(straight, x, valid, epochs=2, **FAST)
    run = tmp_path / "run"
    first = fit_lightning(make_vae(), x, valid, run_dir=run, epochs=1, **FAST)
    assert first.steps == 4
    resumed_model = load_model(run)
    second = fit_lightning(resumed_model, x, valid, run_dir=run, resume=True, epochs=2, **FAST)
    assert second.steps == 8 and second.resumed
    assert rows(second.history) == rows(full.history)
    assert state_digest(resumed_model) == state_digest(straight)
    with pytest.raises(ConfigError, match="already holds a run"):
        fit_lightning(make_vae(), x, run_dir=run, epochs=3, **FAST)


def test_max_bad_batches_and_max_time_work_on_the_fabric_path(tmp_path):
    """What the old Lightning loop lacked: the wall-clock budget stops with a checkpoint of the
    last step; max_bad_batches is accepted (the one loop's guard)."""
    x = torch.bernoulli(torch.full((4000, 12), 0.3), generator=torch.Generator().manual_seed(0))
    run = tmp_path / "run"
    result = fit_lightning(
        VAE(data_shape=(12,), latent_dim=2, hidden=(8,)),
        x,
        epochs=1000,
        max_time=1.0,
        max_bad_batches=3,
        run_dir=run,
        **{**FAST, "batch_size": 8},
    )
    assert 0 < result.steps < 1000 * 500 and result.stopped_by == "max_time"
    assert list_checkpoints(run)[-1].name == f"step-{result.steps:09d}"


def test_other_strategies_are_refused():
    with pytest.raises(ConfigError, match="data-parallel"):
        fit_lightning(make_vae(), torch.ones(8, 1, SIZE, SIZE), strategy="fsdp", max_steps=1)


def test_cli_resumes_a_lightning_run_with_or_without_lightning(tmp_path, capsys):
    """A one-process run is the same run on either path: resumable by both."""
    run = tmp_path / "run"
    data = ["--data", "shapes", "--num-train", "128", "--num-valid", "32", "--num-test", "32"]
    data += ["--image-size", "16", "--hidden", "16", "--latent-dim", "2", "--batch-size", "32"]
    lightning = ["--devices", "1", "--accelerator", "cpu", "--strategy", "auto", "--no-progress"]
    assert main(["train", *data, *lightning, "--max-steps", "3", "--out", str(run)]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-000000003"]
    resume = ["train", "--out", str(run), "--resume", *lightning]
    assert main([*resume, "--max-steps", "5"]) == 0
    assert json.loads((run / "summary.json").read_text())["train"]["steps"] == 5
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--max-steps", "6"]) == 0
    assert json.loads((run / "summary.json").read_text())["train"]["steps"] == 6


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
