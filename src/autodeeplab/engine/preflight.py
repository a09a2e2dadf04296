"""Validate a command's settings before any work: nothing is written, no step is computed.

The ``check_*_resume`` functions read the checkpoint a ``--resume`` would continue and
refuse one made with another model, data, seed or split, or one that does not fit the
network, before the command writes anything (the loops check the same again).

The loops check their options as they set themselves up, some only after the run folder
is written (the dataset files, the trainA/trainB sizes, the network's constructor). These
checks run the same code up front, so ``search``, ``train``, ``run`` and ``--dry-run`` refuse
a bad setting before the first file is written, and ``run`` refuses a bad training option
before the search (not after it). Each failure is the loop's own one-line error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from autodeeplab.checkpoint import CheckpointError, check_state_dict
from autodeeplab.config import SearchConfig, SearchLoopConfig, TrainConfig, TrainLoopConfig
from autodeeplab.data import dataset_info
from autodeeplab.data.split import check_split, split_indices
from autodeeplab.data.transforms import train_transform
from autodeeplab.distributed import get_world_size
from autodeeplab.engine.device import compile_backend, select_device
from autodeeplab.engine.guards import check_loop_options, resolve_amp
from autodeeplab.engine.search.checkpoints import (
    check_same_model,
    find_latest_checkpoint,
    load_resume_state,
)
from autodeeplab.engine.search.data import check_search_crop, search_datasets
from autodeeplab.engine.search.loop import supernet
from autodeeplab.engine.search.strategies import check_strategy
from autodeeplab.engine.train.data import split_dataset
from autodeeplab.engine.train.model import build_train_model, with_genotype
from autodeeplab.engine.train.state import check_genotype_file, check_same_setup, resume_state
from autodeeplab.genotype import Genotype
from autodeeplab.space.cost import parse_madds_target
from autodeeplab.space.memory import device_memory_bytes

__all__ = [
    "check_run_resume",
    "check_search_resume",
    "check_search_settings",
    "check_train_resume",
    "check_train_settings",
    "placeholder_genotype",
]


# Bytes per parameter that training keeps: fp32 weights, gradients and SGD momentum.
_TRAIN_BYTES_PER_PARAMETER = 3 * 4


def _check_training_memory(model: torch.nn.Module, device: torch.device) -> None:
    """Refuse a network whose weights, gradients and momentum alone exceed the device.

    A deep path level multiplies the width (F * 2**level channels), so a hand-edited genotype
    could ask for terabytes; this is counted on the meta-device network, before allocation.
    """
    available = device_memory_bytes(device.type)
    params = sum(p.numel() for p in model.parameters())
    need = params * _TRAIN_BYTES_PER_PARAMETER
    if available is not None and need > available:
        path = getattr(model, "genotype", None)
        deepest = max(path.path) if path is not None else 0
        raise ValueError(
            f"the network has {params:,} parameters (deepest path level {deepest}, stride "
            f"{4 * 2**deepest}): its weights, gradients and momentum need "
            f"{need / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB of this "
            f"{device.type}; use a genotype with lower levels or a smaller "
            "model.filter_multiplier"
        )


def _check_processes(section: str, loop: SearchLoopConfig | TrainLoopConfig) -> torch.device:
    """The loop's batch shared by the processes, its device, AMP and SyncBatchNorm; the device."""
    world = get_world_size()
    if loop.batch_size % world:
        raise ValueError(
            f"{section}.batch_size={loop.batch_size} cannot be shared by {world} processes; "
            f"use a multiple of {world} (each process takes batch_size / {world})"
        )
    device = select_device(loop.device)
    resolve_amp(loop.amp, device, f"{section}.amp")
    if loop.sync_bn and world > 1 and device.type != "cuda":
        raise ValueError(
            f"{section}.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
            f"set {section}.sync_bn=false"
        )
    return device


def check_search_settings(cfg: SearchConfig) -> int:
    """Everything a search refuses, checked without writing; returns the number of classes.

    Opens the dataset (every file its listing names), draws the trainA/trainB sizes, parses
    the Multi-Adds target and builds the supernet on the meta device (no memory).
    """
    loop, d, m = cfg.search, cfg.data, cfg.model
    check_loop_options("search", loop.nonfinite, loop.max_skipped, loop.amp)
    check_strategy(loop.strategy)
    check_search_crop(cfg)
    _check_processes("search", loop)
    if loop.target_madds:
        parse_madds_target(loop.target_madds)
    num_classes = dataset_info(d.spec).num_classes
    train, _, _ = search_datasets(cfg)  # the search's own set-up: every file its listing names
    train_a, train_b = split_indices(len(train), loop.seed, loop.split_fraction)
    if min(len(train_a), len(train_b)) < loop.batch_size:
        raise ValueError(
            f"trainA/trainB have {len(train_a)}/{len(train_b)} images, fewer than the batch "
            f"size {loop.batch_size}; use more data or a batch size of at most "
            f"{min(len(train_a), len(train_b))}"
        )
    with torch.device("meta"):  # the constructor's checks, without allocating the weights
        supernet(m, num_classes)
    return num_classes


def placeholder_genotype(num_layers: int, num_blocks: int) -> Genotype:
    """A valid genotype of the searched size: stands in for the one ``run`` will decode."""
    block = (("skip_connect", 0), ("skip_connect", 1))
    return Genotype(tuple(block for _ in range(num_blocks)), tuple(0 for _ in range(num_layers)))


def check_train_settings(
    cfg: TrainConfig, genotype: Genotype | None = None, resume_dir: Path | None = None
) -> int:
    """Everything a training run refuses, checked without writing; returns the class count.

    ``genotype``: the network to check in place of the config's (``run`` has none before its
    search); otherwise the config's preset or genotype file is read. ``resume_dir``: the
    run folder a resume continues (a genotype file gone is then named with the run's copy).
    """
    if resume_dir is not None:
        check_genotype_file(cfg, resume_dir)
    loop, d = cfg.train, cfg.data
    if loop.iters < 1 or loop.eval_every < 1 or loop.log_every < 1:
        raise ValueError("train.iters, train.eval_every and train.log_every must be positive")
    check_loop_options("train", loop.nonfinite, loop.max_skipped, loop.amp)
    compile_backend(loop.compile, "train.compile")
    device = _check_processes("train", loop)
    num_classes = dataset_info(d.spec).num_classes
    with torch.device("meta"):  # the constructor's checks, without allocating the weights
        model = build_train_model(cfg, num_classes, genotype)
    _check_training_memory(model, device)
    train_transform(d.crop, d.scale, longest_side=d.longest_side)  # its checks only
    sizes = {split: len(split_dataset(cfg, split)) for split in ("train", "val")}
    if sizes["train"] < loop.batch_size:
        raise ValueError(
            f"the training set has {sizes['train']} images, fewer than the batch size "
            f"{loop.batch_size}; use more data (data.train_samples) or a batch size of at most "
            f"{sizes['train']}"
        )
    return num_classes


def check_search_resume(cfg: SearchConfig, out: Path, resume: str | Path | bool) -> None:
    """Refuse a search resume that would not continue the run in ``out``; reads only.

    The checkpoint's model, data, seed, split settings and batch size must be the
    configured ones, its weights must fit the supernet, and its split the dataset.
    """
    path, state = load_resume_state(out, resume)
    assert state is not None  # resume is given
    check_same_model(state, cfg, path)
    num_classes = dataset_info(cfg.data.spec).num_classes
    with torch.device("meta"):
        model = supernet(cfg.model, num_classes)
        # The weights the strategy adds (spos's path edges) are in its checkpoints too.
        check_strategy(cfg.search.strategy).prepare_model(model, cfg.search)
        expected = model.state_dict()
    check_state_dict(path, expected, state["model"], "model")
    split = state["split"]
    train, _, _ = search_datasets(cfg)  # the set SearchData splits
    fix = "resume from another checkpoint of the run, or start afresh with --overwrite"
    if not isinstance(split, dict):
        raise CheckpointError(f"{path}: 'split' is not the trainA/trainB split; {fix}")
    try:
        check_split(split.get("train_a"), split.get("train_b"), len(train), where=str(path))
    except ValueError as exc:
        raise CheckpointError(f"{exc}; {fix}") from None


def check_train_resume(cfg: TrainConfig, out: Path, resume: str | Path | bool) -> None:
    """Refuse a training resume that would not continue the run in ``out``; reads only.

    The checkpoint's model (its genotype by content), data, seed and batch size must be the
    configured ones, and its weights must fit the network.
    """
    path, state = resume_state(out, resume)
    assert state is not None  # resume is given
    check_same_setup(state, cfg, path)
    num_classes = dataset_info(cfg.data.spec).num_classes
    with torch.device("meta"):
        expected = build_train_model(cfg, num_classes).state_dict()
    check_state_dict(path, expected, state["model"], "model")


def check_run_resume(search_cfg: SearchConfig, train_cfg: TrainConfig, out: Path) -> None:
    """``run --resume``: each stage with a checkpoint must be a resume of that stage."""
    if find_latest_checkpoint(out / "search") is not None:
        check_search_resume(search_cfg, out / "search", True)
    genotype = out / "search" / "genotype.json"
    if (out / "train" / "checkpoints" / "last.pt").is_file() and genotype.is_file():
        check_train_resume(with_genotype(train_cfg, genotype), out / "train", True)
