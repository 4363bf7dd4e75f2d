"""Trainer checkpoints: ``checkpoints/step-N/`` folders for exact resume, written atomically.

A checkpoint holds the model (``model.safetensors``, see :mod:`pyro_gen.models.persistence`),
the trainer state as ``trainer.json`` + ``trainer.safetensors`` (no pickle), and is written
under a temporary name and renamed into place, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyro_gen.errors import CheckpointError
from pyro_gen.io import atomic_open, fsync_dir, read_json, write_json
from pyro_gen.models.persistence import FORMAT, WEIGHTS, load_tensors, save_tensors
from pyro_gen.models.registry import model_config

__all__ = [
    "pack_state",
    "unpack_state",
    "write_checkpoint",
    "read_checkpoint",
    "resume_checkpoint",
    "ForeignCheckpointError",
    "list_checkpoints",
    "latest_checkpoint",
]


# -- structured state (optimizer, scheduler, RNG) -----------------------------------------------
def pack_state(obj: Any, prefix: str = "", tensors: dict | None = None) -> tuple[Any, dict]:
    """Split a nested state (dicts with int keys, tuples, tensors) into JSON + tensors."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj
        return {"__tensor__": key}, tensors
    if hasattr(obj, "dtype") and hasattr(obj, "tolist") and hasattr(obj, "shape"):  # numpy
        key = prefix or "root"
        tensors[key] = torch.from_numpy(obj.copy())
        return {"__ndarray__": key}, tensors
    if isinstance(obj, dict):
        items = [
            [
                pack_state(k, f"{prefix}/k{i}", tensors)[0],
                pack_state(v, f"{prefix}/{i}", tensors)[0],
            ]
            for i, (k, v) in enumerate(obj.items())
        ]
        return {"__dict__": items}, tensors
    if isinstance(obj, tuple):
        return {
            "__tuple__": [pack_state(v, f"{prefix}/{i}", tensors)[0] for i, v in enumerate(obj)]
        }, tensors
    if isinstance(obj, list):
        return [pack_state(v, f"{prefix}/{i}", tensors)[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise CheckpointError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix}).")


def unpack_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``pack_state``."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy()
        if "__tuple__" in skeleton:
            return tuple(unpack_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {
                unpack_state(k, tensors): unpack_state(v, tensors) for k, v in skeleton["__dict__"]
            }
        raise CheckpointError(f"unknown entry in trainer state: {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unpack_state(v, tensors) for v in skeleton]
    return skeleton


# -- trainer checkpoints -------------------------------------------------------------------------
CHECKPOINTS = "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def write_checkpoint(
    run_dir: str | os.PathLike, step: int, module: nn.Module, state: dict, keep: int = 2
) -> Path:
    """Write ``checkpoints/step-N/{model,trainer}.safetensors + trainer.json`` atomically (a
    temporary folder renamed into place), refresh ``model.safetensors`` at the top of the run,
    and keep the newest ``keep`` checkpoints."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:09d}-", dir=root))
    try:
        cfg = model_config(module)
        save_tensors(tmp / WEIGHTS, module.state_dict(), kind="model", model=cfg[0] if cfg else "")
        skeleton, tensors = pack_state(state)
        save_tensors(tmp / "trainer.safetensors", tensors, kind="trainer", step=str(step))
        write_json(tmp / "trainer.json", {"format": FORMAT, "step": step, "state": skeleton})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the run's top-level weights follow the newest checkpoint (atomic copy)
    with atomic_open(Path(run_dir) / WEIGHTS, "wb") as f, open(final / WEIGHTS, "rb") as src:
        shutil.copyfileobj(src, f)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


class ForeignCheckpointError(CheckpointError):
    """A checkpoint in the format of pyro_gen's former Lightning loop (before the one loop ran
    on every process), which this version cannot resume."""


def read_checkpoint(ckpt: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(model tensors, trainer state) of one checkpoint folder; CheckpointError if damaged,
    ForeignCheckpointError for a former Lightning loop's checkpoint."""
    ckpt = Path(ckpt)
    info = read_json(ckpt / "trainer.json", "trainer state")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt / 'trainer.json'} is not a pyro_gen trainer state.")
    # the tag is plain JSON in trainer.json: looked at before any tensor is read
    if _former_lightning(info.get("state")):
        raise ForeignCheckpointError(
            f"{ckpt} was written by an earlier pyro_gen's Lightning loop, whose training state "
            "this version cannot continue; its weights load with pyro_gen.models.load_weights "
            "(or load_model on the run folder): start a new run from them."
        )
    model_tensors, _ = load_tensors(ckpt / WEIGHTS)
    tensors, meta = load_tensors(ckpt / "trainer.safetensors")
    if meta.get("step") != str(info["step"]):
        raise CheckpointError(
            f"{ckpt}: trainer.json is at step {info['step']} but trainer.safetensors at step "
            f"{meta.get('step')}; the checkpoint is inconsistent."
        )
    return model_tensors, unpack_state(info["state"], tensors)


def _former_lightning(skeleton: Any) -> bool:
    """Whether a packed state (``pack_state``'s JSON) holds ``engine: "lightning"``."""
    items = skeleton.get("__dict__", []) if isinstance(skeleton, dict) else []
    return ["engine", "lightning"] in items


def resume_checkpoint(
    run_dir: str | os.PathLike, stacklevel: int = 2
) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """(folder, model tensors, trainer state) of the newest readable checkpoint.

    A damaged checkpoint is skipped with a warning (the one before it is tried); a former
    Lightning loop's raises :class:`ForeignCheckpointError` at once; none readable raises a
    CheckpointError that lists why each failed."""
    errors = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            weights, state = read_checkpoint(ckpt)
            return ckpt, weights, state
        except ForeignCheckpointError:
            raise  # not damaged: older than this version
        except CheckpointError as e:
            errors.append(str(e))
            warnings.warn(f"skipping damaged checkpoint {ckpt}: {e}", stacklevel=stacklevel + 1)
    raise CheckpointError(
        f"nothing to resume in {run_dir}: no readable checkpoint under checkpoints/"
        + (f" ({'; '.join(errors)})" if errors else "")
        + ". Start a new run without resume."
    )
