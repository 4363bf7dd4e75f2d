"""Atomic file writes and small JSON helpers used by every writer in pyro_gen.

A write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the target: a crash leaves either the old file or the new one, never half of one.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_json(p, {"x": 1}); read_json(p)
{'x': 1}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pyro_gen.errors import CheckpointError, RunFolderError

__all__ = ["atomic_open", "write_json", "read_json", "fsync_dir", "check_writable"]


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that renames inside it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_default)
    with atomic_open(path) as f:
        f.write(text + "\n")


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON; a missing or corrupt file gives a CheckpointError that names it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist.") from None
    except UnicodeDecodeError:
        raise CheckpointError(
            f"{what} {path} is not a UTF-8 JSON file (binary or foreign)."
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what} {path} is not valid JSON ({e}); it is corrupt.") from None


def check_writable(folder: str | os.PathLike, need_bytes: int = 0) -> Path:
    """Make sure ``folder`` can be created and written, with ``need_bytes`` free, before any long
    work starts; raise a RunFolderError that says why otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / ".write-check", "wb") as f:
            f.write(b"ok")
        (folder / ".write-check").unlink()
    except OSError as e:
        raise RunFolderError(
            f"cannot write to the run folder {folder}: {e.strerror or e}. Choose a writable "
            "folder (--out) or fix its permissions; nothing was trained."
        ) from e
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise RunFolderError(
            f"only {free / 2**20:.1f} MiB free under {folder}, but checkpoints need about "
            f"{need_bytes / 2**20:.1f} MiB; free some space or choose another --out."
        )
    return folder
