"""A model on disk: ``config.json`` (constructor arguments) + ``model.safetensors`` weights.

Models own their config and persistence (as diffusers' ``ModelMixin``); the trainer's
checkpoints (``pyro_gen.infer.checkpoint``) store models through these functions.

No pickle anywhere: weights are safetensors (with a SHA-256 of the tensor data in their
metadata, so bit rot and truncation are caught), everything else is JSON. Every file is written
atomically; a trainer checkpoint is a folder written under a temporary name and renamed into
place, so a crash never leaves a half-written checkpoint.

>>> import tempfile
>>> from pyro_gen.models import VAE
>>> run = tempfile.mkdtemp()
>>> save_model(VAE(data_shape=(4,), latent_dim=2, hidden=(8,)), run)
>>> load_model(run).latent_dim
2
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save
from torch import nn

import pyro_gen
from pyro_gen.errors import CheckpointError, ConfigError
from pyro_gen.io import atomic_open, read_json, write_json
from pyro_gen.models.likelihoods import UnusedArgumentError
from pyro_gen.models.registry import build_model, get_model_class, model_config

__all__ = [
    "FORMAT",
    "CONFIG",
    "WEIGHTS",
    "save_model",
    "load_model",
    "load_weights",
    "save_tensors",
    "load_tensors",
    "read_config",
]

FORMAT = "pyro_gen/1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


# -- tensors on disk -----------------------------------------------------------------------------
def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _sniff(path: Path) -> None:
    """Refuse pickle and torch.save files before any parser sees them."""
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file opens with its header's length (u64, little-endian), then the JSON
    # header: recognise it first, since a length such as 0x0480 also starts with b"\x80\x04".
    length = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and 8 + length <= path.stat().st_size:
        return
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        kind = "a pickle file"
    elif head[:4] == b"PK\x03\x04":
        kind = "a zip archive (torch.save format, which holds a pickle)"
    else:
        return
    raise CheckpointError(
        f"{path} is {kind}. pyro_gen never unpickles files (unpickling can run arbitrary code); "
        "it reads safetensors only. If you trust the file, convert it once: "
        "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')."
    )


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], **metadata: str
) -> None:
    """Write tensors (moved to CPU, made contiguous) as safetensors, atomically, with a digest."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "sha256": _digest(tensors),
        **{k: str(v) for k, v in metadata.items()},
    }
    data = save(tensors, metadata=meta)
    with atomic_open(path, "wb") as f:
        f.write(data)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file written by pyro_gen; corrupt, truncated or foreign files give a
    CheckpointError that says which."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist.")
    _sniff(path)
    try:
        tensors = load(path.read_bytes())
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it is truncated or corrupt. "
            "Use an earlier checkpoint from the run's checkpoints/ folder."
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not one written by pyro_gen (format "
            f"{meta.get('format')!r}, expected {FORMAT!r}). Load its tensors with "
            "safetensors directly and copy them into a model with load_state_dict."
        )
    if meta.get("sha256") and _digest(tensors) != meta["sha256"]:
        raise CheckpointError(
            f"{path} fails its checksum: the tensor data changed after it was written (disk "
            "corruption or a foreign edit). Use an earlier checkpoint."
        )
    return tensors, meta


# -- models --------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import pyro

    return {"pyro_gen": pyro_gen.__version__, "pyro": pyro.__version__, "torch": torch.__version__}


def save_model(module: nn.Module, path: str | os.PathLike, **sections: Any) -> None:
    """Save ``module`` into the folder ``path``: ``config.json`` + ``model.safetensors``.

    A registered model (``@register_model``) records its name and constructor arguments so that
    ``load_model(path)`` rebuilds it; other modules save weights only (use ``load_weights``).
    Extra keyword sections (``data=...``, ``train=...``) are stored in ``config.json`` too.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model_config(module)
    config_path = path / CONFIG
    config = read_json(config_path, "config") if config_path.exists() else {}
    config.update(
        {
            "format": FORMAT,
            "model": {"name": cfg[0], "args": cfg[1]}
            if cfg
            else {"name": None, "class": f"{type(module).__module__}.{type(module).__qualname__}"},
            "versions": _versions(),
        }
    )
    config.update(sections)
    save_tensors(path / WEIGHTS, module.state_dict(), kind="model", model=cfg[0] if cfg else "")
    try:
        write_json(config_path, config)
    except TypeError as e:
        raise ConfigError(f"the model's configuration is not JSON-serialisable: {e}") from e


def read_config(path: str | os.PathLike) -> dict:
    """``config.json`` of a run folder, checked to be a pyro_gen config."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder; give a run folder written by pyro_gen.")
    config = read_json(path / CONFIG, "config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f"{path / CONFIG} is not a pyro_gen config (format "
            f"{config.get('format') if isinstance(config, dict) else None!r}, expected {FORMAT!r})."
        )
    return config


def load_weights(module: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load ``model.safetensors`` (a file, or the one in a run folder) into ``module``."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    tensors, meta = load_tensors(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path} does not fit this {type(module).__name__} (saved from model "
            f"{meta.get('model') or 'unknown'!r}): missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}. Is it a checkpoint of another model or architecture?"
        )
    for key, value in tensors.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(value.shape)} in the file but "
                f"{list(own[key].shape)} in the model; the architectures differ."
            )
    module.load_state_dict(tensors, strict=strict)
    return module


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a registered model from a run folder (``config.json`` + ``model.safetensors``)."""
    path = Path(path)
    config = read_config(path)
    path = path if path.is_dir() else path.parent
    spec = config.get("model") or {}
    if not spec.get("name"):
        raise CheckpointError(
            f"{path} holds weights of an unregistered module ({spec.get('class')}); build the "
            "module yourself and call pyro_gen.infer.load_weights(module, path)."
        )
    args = dict(spec.get("args", {}))
    # an argument added after this run was saved: the value that builds what the run was
    for key, value in getattr(get_model_class(spec["name"]), "SAVED_DEFAULTS", {}).items():
        args.setdefault(key, value)
    try:
        model = build_model(spec["name"], args)
    except UnusedArgumentError as e:  # saved before they were refused: ignored then, and now
        warnings.warn(
            f"{path}: config.json's {', '.join(e.names)} had no effect with this run's "
            "likelihood when it was trained and are ignored now as then.",
            stacklevel=2,
        )
        model = build_model(spec["name"], {k: v for k, v in args.items() if k not in e.names})
    load_weights(model, path / WEIGHTS)
    return model.to(device)
