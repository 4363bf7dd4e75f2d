"""Faults during training: signals, a crash while writing a checkpoint, unwritable folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pyro_gen.errors import CheckpointError, RunFolderError
from pyro_gen.infer import Trainer, list_checkpoints, read_checkpoint
from pyro_gen.models import VAE, load_model
from pyro_gen.models.persistence import save_tensors

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pyro_gen.models import VAE
    from pyro_gen.infer import Trainer
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((512, 1, 8, 8), 0.3))
    vae = VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(16,))
    t = Trainer(vae, run_dir=sys.argv[1], max_steps=10**7, batch_size=32, checkpoint_every=20,
                progress=False, log_every=1)
    t.fit(x)
    print("INTERRUPTED" if t.interrupted else "FINISHED", t.state.step, t.stop_signal, flush=True)
    """
)


def _tiny_data(n: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=g)


def _tiny_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(16,))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_final_checkpoint_and_resume_continues(tmp_path: Path, sig: int):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not list_checkpoints(run):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    word, step, stop = out.split()
    assert word == "INTERRUPTED" and int(stop) == sig
    newest = list_checkpoints(run)[-1]
    assert int(newest.name.split("-")[1]) == int(step)  # the final checkpoint is the stop step
    _, state = read_checkpoint(newest)
    assert state["trainer"]["step"] == int(step)

    model = load_model(run)
    t = Trainer(
        model,
        run_dir=run,
        resume=True,
        max_steps=int(step) + 5,
        batch_size=32,
        progress=False,
        log_every=1,
    )
    t.fit(torch.bernoulli(torch.full((512, 1, 8, 8), 0.3)))
    assert t.state.step == int(step) + 5


def test_crash_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path: Path):
    run = tmp_path / "run"
    Trainer(
        _tiny_vae(), run_dir=run, max_steps=16, batch_size=32, progress=False, checkpoint_every=8
    ).fit(_tiny_data())
    good = list_checkpoints(run)
    assert [p.name for p in good] == ["step-000000008", "step-000000016"]
    # a process killed mid-write leaves a temporary folder with a half-written file
    tmp = run / "checkpoints" / ".tmp-step-000000024-abc"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes((good[-1] / "model.safetensors").read_bytes()[:100])
    assert list_checkpoints(run) == good  # never mistaken for a checkpoint
    t = Trainer(
        load_model(run), run_dir=run, resume=True, max_steps=20, batch_size=32, progress=False
    )
    t.fit(_tiny_data())
    assert t.state.step == 20


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path):
    run = tmp_path / "run"
    Trainer(
        _tiny_vae(), run_dir=run, max_steps=16, batch_size=32, progress=False, checkpoint_every=8
    ).fit(_tiny_data())
    newest = list_checkpoints(run)[-1]
    weights = newest / "trainer.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # truncated
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(newest)
    t = Trainer(
        load_model(run), run_dir=run, resume=True, max_steps=20, batch_size=32, progress=False
    )
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        t.fit(_tiny_data())
    assert t.state.step == 20


def test_flipped_byte_fails_the_checksum(tmp_path: Path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.arange(100.0)})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        from pyro_gen.models import load_tensors

        load_tensors(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_run_folder_fails_before_training(tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match="cannot write"):
            Trainer(
                _tiny_vae(), run_dir=ro / "run", max_steps=2, batch_size=32, progress=False
            ).fit(_tiny_data())
    finally:
        ro.chmod(0o700)


def test_unwritable_run_folder_fails_before_training(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    vae = _tiny_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with pytest.raises(RunFolderError, match="cannot write"):
        Trainer(vae, run_dir=blocker / "run", max_steps=2, batch_size=32, progress=False).fit(
            _tiny_data()
        )
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())  # nothing trained


def test_not_enough_space_fails_before_training(tmp_path: Path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10))
    with pytest.raises(RunFolderError, match="MiB free"):
        Trainer(
            _tiny_vae(), run_dir=tmp_path / "run", max_steps=2, batch_size=32, progress=False
        ).fit(_tiny_data())
