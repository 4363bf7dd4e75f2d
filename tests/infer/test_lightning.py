"""Lightning DDP: two CPU processes (gloo) end with identical replicas and a loadable run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the optional dependency 'lightning' is not installed")

from pyro_gen.data import make_shapes  # noqa: E402
from pyro_gen.evaluate import evaluate_elbo  # noqa: E402
from pyro_gen.infer import load_model, read_config  # noqa: E402
from pyro_gen.infer.lightning import ELBOLoss, state_digest  # noqa: E402
from pyro_gen.models import VAE  # noqa: E402

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


def test_ddp_two_cpu_processes_identical_replicas_and_loadable_run(tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
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
