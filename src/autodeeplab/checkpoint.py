"""Checkpoints: atomic writes, safe loads, and self-describing metadata.

A checkpoint is a dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so nothing in a user's file is unpickled as code. It
carries ``format_version``, a ``kind`` (``"search"`` or ``"train"``) and the config it was
made with; loading checks them and fails with one line naming the file and the fix.
Writes go to a temporary file in the same directory, are fsynced, then renamed over the
target: a killed process leaves the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "atomic_write",
]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, from another kind of run, or of another version."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, rename over ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(p.parent)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], kind: str) -> None:
    """Write ``state`` plus ``format_version`` and ``kind`` to ``path`` atomically."""
    payload = {"format_version": FORMAT_VERSION, "kind": kind, **state}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (tensors on CPU) and check its version and kind."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: checkpoint not found; pass a .pt file from a run's checkpoints/"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: not a readable autodeeplab checkpoint (truncated, corrupt or unsafe: {first}); "
            "use another checkpoint of the run"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{p}: not an autodeeplab checkpoint (no format_version)")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {state['format_version']} is not supported by this "
            f"autodeeplab (format {FORMAT_VERSION}); use the version that wrote it"
        )
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(
            f"{p}: this is a {state.get('kind')!r} checkpoint, expected a {kind!r} one"
        )
    return state
