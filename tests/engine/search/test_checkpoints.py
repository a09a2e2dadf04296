"""Search checkpoint files: names, which is newest, pruning, and what a resume may load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autodeeplab.config import SearchConfig, config_from_dict, config_to_dict
from autodeeplab.engine.search.checkpoints import (
    CHECKPOINT_KIND,
    decode_checkpoint,
    epoch_end_path,
    find_latest_checkpoint,
    load_resume_state,
    prune_checkpoints,
    stop_path,
)
from autodeeplab.space.network import SearchNetwork


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


def _supernet_checkpoint(path: Path, with_kwargs: bool, model_section: dict) -> SearchNetwork:
    """A search checkpoint of a small supernet, its config's model section as given."""
    net = SearchNetwork(
        3,
        num_layers=3,
        num_blocks=2,
        filter_multiplier=2,
        strides=(4, 8),
        primitives=("none", "skip_connect", "sep_conv_3x3"),
        stem_channels=(4, 4, 8),
    )
    with torch.no_grad():
        net.alpha.normal_()
        net.beta.normal_()
    config = config_to_dict(config_from_dict({"model": model_section}, SearchConfig()))
    extra = {"model_kwargs": net.model_kwargs} if with_kwargs else {}
    _write(path, model=net.state_dict(), config=config, **extra)
    return net


def test_decode_reads_the_supernets_keyword_arguments_from_the_checkpoint(tmp_path: Path):
    # The config's model section here describes another space: the stored kwargs win.
    path = tmp_path / "epoch_0001.pt"
    net = _supernet_checkpoint(path, True, {"num_blocks": 5})
    assert load_checkpoint(path, CHECKPOINT_KIND)["model_kwargs"]["primitives"] == [
        "none",
        "skip_connect",
        "sep_conv_3x3",
    ]
    assert decode_checkpoint(path)[0] == net.genotype()


def test_decode_of_a_checkpoint_without_keyword_arguments_uses_its_config(tmp_path: Path):
    path = tmp_path / "epoch_0001.pt"
    model = {
        "num_layers": 3,
        "num_blocks": 2,
        "filter_multiplier": 2,
        "strides": [4, 8],
        "primitives": ["none", "skip_connect", "sep_conv_3x3"],
    }
    net = _supernet_checkpoint(path, False, model)
    assert decode_checkpoint(path)[0] == net.genotype()


def test_decode_refuses_keyword_arguments_without_the_architectures_shape(tmp_path: Path):
    path = tmp_path / "epoch_0001.pt"
    _supernet_checkpoint(path, True, {})
    state = load_checkpoint(path, CHECKPOINT_KIND)
    save_checkpoint(path, {**state, "model_kwargs": {"num_layers": 3}}, CHECKPOINT_KIND)
    with pytest.raises(CheckpointError, match="model_kwargs does not hold the supernet's"):
        decode_checkpoint(path)
