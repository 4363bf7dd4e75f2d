"""Checkpoints: round trips, and clear errors for everything that is not a good pyro_gen file."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pyro_gen.io
from pyro_gen.errors import CheckpointError, ConfigError
from pyro_gen.infer import latest_checkpoint, list_checkpoints, read_checkpoint
from pyro_gen.infer.checkpoint import write_checkpoint
from pyro_gen.models import (
    VAE,
    load_model,
    load_tensors,
    load_weights,
    read_config,
    save_model,
    save_tensors,
)


def small_vae(**kwargs) -> VAE:
    return VAE(**{"data_shape": (1, 8, 8), "latent_dim": 2, "hidden": (16,), **kwargs})


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders anywhere below ``folder``."""
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or "tmp" in p.name]


@pytest.fixture
def saved(tmp_path) -> tuple[VAE, Path]:
    vae = small_vae(likelihood="gaussian", learn_scale=True)
    with torch.no_grad():
        vae.likelihood.log_scale.fill_(-1.234)  # not the initial value: a real round trip
    save_model(vae, tmp_path / "run", data={"name": "toy"})
    return vae, tmp_path / "run"


def test_round_trip(saved):
    vae, run = saved
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors"]
    config = read_config(run)
    assert config["model"] == {"name": "vae", "args": vae.config}
    assert config["data"] == {"name": "toy"}
    assert {"pyro_gen", "pyro", "torch"} <= set(config["versions"])
    loaded = load_model(run)
    assert isinstance(loaded, VAE) and loaded.config == vae.config
    own, back = vae.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys()
    assert all(torch.equal(own[k], back[k]) for k in own)
    assert torch.equal(loaded.sample(4, seed=3), vae.sample(4, seed=3))


def test_save_model_keeps_other_config_sections(saved):
    vae, run = saved
    save_model(vae, run, train={"epochs": 2})
    config = read_config(run)
    assert config["data"] == {"name": "toy"} and config["train"] == {"epochs": 2}


def test_tensors_keep_dtype_and_metadata(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.int64).reshape(2, 3), "b": torch.rand(4).double()}
    save_tensors(tmp_path / "t.safetensors", tensors, note="hello")
    back, meta = load_tensors(tmp_path / "t.safetensors")
    assert back["a"].dtype == torch.int64 and torch.equal(back["a"], tensors["a"])
    assert torch.equal(back["b"], tensors["b"])
    assert meta["note"] == "hello" and meta["format"] == "pyro_gen/1" and len(meta["sha256"]) == 64


# -- damaged and foreign files --------------------------------------------------------------------
def _data_offset(raw: bytes) -> int:
    (header_len,) = struct.unpack("<Q", raw[:8])
    return 8 + header_len


def test_a_header_length_that_looks_like_pickle_magic_still_loads(tmp_path):
    """A safetensors header of 0x0480 bytes starts the file with b'\\x80\\x04' (pickle's magic)."""
    path = tmp_path / "t.safetensors"
    tensors = {"w": torch.ones(3)}
    for pad in range(0, 1600, 8):
        save_tensors(path, tensors, pad="x" * pad)
        head = path.read_bytes()[:2]
        if head[0] == 0x80 and head[1] in (2, 3, 4, 5):
            break
    else:  # pragma: no cover - the header grows by 8 bytes a step, so 0x0280 is reached
        pytest.fail("no header length with a pickle-like first two bytes was produced")
    back, meta = load_tensors(path)
    assert torch.equal(back["w"], tensors["w"]) and len(meta["pad"]) == pad


def test_flipped_bytes_in_the_tensor_data_fail_the_checksum(saved):
    _, run = saved
    path = run / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[_data_offset(raw) + 17] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_model(run)


@pytest.mark.parametrize("keep", ["half", "header-only", "empty"])
def test_truncated_file(saved, keep):
    _, run = saved
    path = run / "model.safetensors"
    raw = path.read_bytes()
    cut = {"half": len(raw) // 2, "header-only": _data_offset(raw), "empty": 0}[keep]
    path.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_model(run)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_file_is_refused_without_unpickling(saved, protocol):
    _, run = saved
    path = run / "model.safetensors"

    class Boom:
        def __reduce__(self):  # would raise if anything unpickled the file
            return (os._exit, (13,))

    with open(path, "wb") as f:
        pickle.dump({"weights": torch.zeros(2), "boom": Boom()}, f, protocol=protocol)
    with pytest.raises(CheckpointError, match="pickle file") as info:
        load_model(run)
    assert "never unpickles" in str(info.value)


@pytest.mark.parametrize("zipfile", [True, False])
def test_torch_save_file_is_refused(saved, zipfile):
    vae, run = saved
    path = run / "model.safetensors"
    torch.save(vae.state_dict(), path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(CheckpointError, match="zip archive" if zipfile else "pickle file"):
        load_model(run)


def test_foreign_safetensors_file_is_refused(saved):
    vae, run = saved
    save_file(vae.state_dict(), run / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not one written by pyro_gen") as info:
        load_model(run)
    assert "'pt'" in str(info.value)


def test_missing_files_and_folders(tmp_path, saved):
    _, run = saved
    with pytest.raises(CheckpointError, match="not a folder"):
        load_model(tmp_path / "nowhere")
    (run / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(run)
    (run / "config.json").write_text(json.dumps({"format": "keras"}))
    with pytest.raises(CheckpointError, match="not a pyro_gen config"):
        read_config(run)


def test_checkpoint_of_another_architecture(tmp_path, saved):
    _, run = saved
    other = small_vae(latent_dim=3, likelihood="gaussian", learn_scale=True)
    with pytest.raises(CheckpointError, match="shape .* architectures differ"):
        load_weights(other, run)
    conv = small_vae(network="conv", channels=(4,))
    with pytest.raises(CheckpointError, match="missing keys .*another model or architecture"):
        load_weights(conv, run)
    # a config.json that does not match its weights
    config = json.loads((run / "config.json").read_text())
    config["model"]["args"]["latent_dim"] = 4
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="architectures differ"):
        load_model(run)


def test_unknown_config_key_is_a_config_error(saved):
    _, run = saved
    config = json.loads((run / "config.json").read_text())
    config["model"]["args"]["latnet_dim"] = 2
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="'latnet_dim'.*Did you mean 'latent_dim'"):
        load_model(run)


def test_unregistered_module_saves_weights_only(tmp_path):
    net = torch.nn.Linear(3, 2)
    save_model(net, tmp_path / "run")
    assert read_config(tmp_path / "run")["model"]["name"] is None
    with pytest.raises(CheckpointError, match="unregistered module .*load_weights"):
        load_model(tmp_path / "run")
    other = load_weights(torch.nn.Linear(3, 2), tmp_path / "run")
    assert torch.equal(other.weight, net.weight)


# -- atomic writes and trainer checkpoints --------------------------------------------------------
def test_writes_leave_no_temporary_files(tmp_path):
    vae = small_vae()
    run = tmp_path / "run"
    save_model(vae, run)
    for step in (1, 2, 3):
        write_checkpoint(run, step, vae, {"step": step, "t": torch.ones(2)}, keep=2)
    assert leftovers(run) == []


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    run = tmp_path / "run"
    old = small_vae()
    save_model(old, run)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(pyro_gen.io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_model(small_vae(), run)  # other random weights
    monkeypatch.undo()
    assert leftovers(run) == []
    loaded = load_model(run)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in old.state_dict().items())


def test_a_failed_checkpoint_leaves_no_folder(tmp_path):
    run = tmp_path / "run"
    vae = small_vae()
    write_checkpoint(run, 1, vae, {"ok": 1})
    with pytest.raises(CheckpointError, match="cannot store a set"):
        write_checkpoint(run, 2, vae, {"bad": {1, 2}})
    assert [p.name for p in list_checkpoints(run)] == ["step-000000001"]
    assert leftovers(run) == []


def test_trainer_state_round_trip(tmp_path):
    vae = small_vae()
    state = {
        "nested": {0: (1, 2.5, "a"), "t": torch.arange(3)},
        "list": [torch.ones(2, 2), None, True],
    }
    path = write_checkpoint(tmp_path / "run", 7, vae, state)
    weights, back = read_checkpoint(path)
    assert back["nested"][0] == (1, 2.5, "a")  # int keys and tuples survive JSON
    assert torch.equal(back["nested"]["t"], torch.arange(3))
    assert torch.equal(back["list"][0], torch.ones(2, 2)) and back["list"][1:] == [None, True]
    assert all(torch.equal(weights[k], v) for k, v in vae.state_dict().items())
    # the run's top-level weights follow the newest checkpoint
    top, _ = load_tensors(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(top[k], v) for k, v in vae.state_dict().items())


def test_inconsistent_checkpoint_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "run", 3, small_vae(), {"a": torch.ones(1)})
    info = json.loads((path / "trainer.json").read_text())
    info["step"] = 4
    (path / "trainer.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="inconsistent"):
        read_checkpoint(path)


def test_keep_only_the_newest_checkpoints(tmp_path):
    vae = small_vae()
    run = tmp_path / "run"
    for step in (1, 2, 10, 11, 100):
        write_checkpoint(run, step, vae, {"step": step}, keep=3)
    assert [p.name for p in list_checkpoints(run)] == [
        "step-000000010",
        "step-000000011",
        "step-000000100",
    ]
    assert latest_checkpoint(run).name == "step-000000100"
    assert latest_checkpoint(tmp_path / "empty") is None


def test_a_former_lightning_loops_checkpoint_is_refused_by_name(tmp_path):
    """Checkpoints of the Lightning loop this version replaced: a clear error, never a resume
    from a state read as something else."""
    from pyro_gen.infer.checkpoint import ForeignCheckpointError, resume_checkpoint

    module = torch.nn.Linear(2, 2)
    write_checkpoint(tmp_path, 3, module, {"engine": "lightning", "lightning": {"step": 3}})
    with pytest.raises(ForeignCheckpointError, match="earlier pyro_gen's Lightning loop"):
        resume_checkpoint(tmp_path)
    write_checkpoint(tmp_path, 4, module, {"trainer": {"step": 4}})
    assert read_checkpoint(list_checkpoints(tmp_path)[-1])[1] == {"trainer": {"step": 4}}
