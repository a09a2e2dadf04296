"""Checkpoints: atomic writes, safe loads, and self-describing metadata.

A checkpoint is a dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so nothing in a user's file is unpickled as code. It
carries ``format_version``, a ``kind`` (``"search"`` or ``"train"``) and the config it was
made with; loading checks them and fails with one line naming the file and the fix.

Writes are atomic (temp file, fsync, rename), check the free space first and record the
newest complete checkpoint in ``latest.json``: :mod:`autodeeplab.checkpoint.write`. Reads
and the checks of what was read: :mod:`autodeeplab.checkpoint.read`.
"""

from __future__ import annotations

from autodeeplab.checkpoint.read import (
    check_finite,
    check_state_dict,
    load_checkpoint,
    require_keys,
)
from autodeeplab.checkpoint.write import (
    FORMAT_VERSION,
    LATEST_NAME,
    PAUSE_ENV,
    CheckpointError,
    DiskSpaceError,
    atomic_write,
    clean_stale_temp_files,
    estimate_checkpoint_bytes,
    read_latest,
    save_checkpoint,
)

__all__ = [
    "FORMAT_VERSION",
    "LATEST_NAME",
    "PAUSE_ENV",
    "CheckpointError",
    "DiskSpaceError",
    "atomic_write",
    "check_finite",
    "check_state_dict",
    "clean_stale_temp_files",
    "estimate_checkpoint_bytes",
    "load_checkpoint",
    "read_latest",
    "require_keys",
    "save_checkpoint",
]
