"""Search checkpoint files: names, which is newest, pruning, and what a resume may load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import CheckpointError, save_checkpoint
from autodeeplab.engine.search_checkpoints import (
    CHECKPOINT_KIND,
    epoch_end_path,
    find_latest_checkpoint,
    load_resume_state,
    prune_checkpoints,
    stop_path,
)


def _write(path: Path, **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"epoch": 0, "w": torch.zeros(1), **extra}, CHECKPOINT_KIND)
    return path


def _names(ckpt_dir: Path) -> list[str]:
    return sorted(p.name for p in ckpt_dir.glob("*.pt"))


def test_a_stop_in_epoch_3_is_newer_than_epoch_2_and_older_than_epoch_3(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    assert stop_path(ckpts, 3, 5).name == "epoch_0003_step_000005.pt"
    _write(epoch_end_path(ckpts, 2))
    _write(stop_path(ckpts, 3, 5))
    assert find_latest_checkpoint(tmp_path) == stop_path(ckpts, 3, 5)
    _write(epoch_end_path(ckpts, 3))
    assert find_latest_checkpoint(tmp_path) == epoch_end_path(ckpts, 3)


def test_the_newest_checkpoint_that_loads_wins(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    _write(epoch_end_path(ckpts, 1))
    epoch_end_path(ckpts, 2).write_bytes(b"cut off mid-write")
    (ckpts / "notes.pt").write_bytes(b"not a checkpoint name")
    assert find_latest_checkpoint(tmp_path) == epoch_end_path(ckpts, 1)
    assert find_latest_checkpoint(tmp_path / "elsewhere") is None


def test_pruning_keeps_the_newest_epoch_ends_and_drops_older_stops(tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    for epoch in (1, 2, 3):
        _write(epoch_end_path(ckpts, epoch))
    _write(stop_path(ckpts, 4, 2))
    # A stop supersedes older stops only: every epoch end stays.
    prune_checkpoints(ckpts, _write(stop_path(ckpts, 4, 7)), keep=1)
    assert _names(ckpts) == [
        "epoch_0001.pt",
        "epoch_0002.pt",
        "epoch_0003.pt",
        "epoch_0004_step_000007.pt",
    ]
    prune_checkpoints(ckpts, _write(epoch_end_path(ckpts, 4)), keep=2)
    assert _names(ckpts) == ["epoch_0003.pt", "epoch_0004.pt"]


def test_pruning_leaves_checkpoints_newer_than_the_one_written(tmp_path: Path):
    # A run resumed from epoch 1 writes epoch 2 again; epoch 3 of the older run stays.
    ckpts = tmp_path / "checkpoints"
    for epoch in (1, 3):
        _write(epoch_end_path(ckpts, epoch))
    prune_checkpoints(ckpts, _write(epoch_end_path(ckpts, 2)), keep=1)
    assert _names(ckpts) == ["epoch_0002.pt", "epoch_0003.pt"]


def test_resume_state(tmp_path: Path):
    assert load_resume_state(tmp_path, None) == (None, None)
    with pytest.raises(FileNotFoundError, match="no complete search checkpoint"):
        load_resume_state(tmp_path, True)
    partial = _write(epoch_end_path(tmp_path / "checkpoints", 1))
    with pytest.raises(CheckpointError, match="w_optimizer"):  # the keys a resume needs
        load_resume_state(tmp_path, True)
    with pytest.raises(CheckpointError, match="w_optimizer"):
        load_resume_state(tmp_path, partial)
