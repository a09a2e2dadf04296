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

from autodeeplab.checkpoint import read, write
from autodeeplab.checkpoint.read import *  # noqa: F403 - the package re-exports both modules
from autodeeplab.checkpoint.write import *  # noqa: F403

__all__ = [*read.__all__, *write.__all__]
