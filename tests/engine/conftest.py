"""Tiny search and retraining configs, and a trained checkpoint, shared by the engine tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from autodeeplab.config import SearchConfig, TrainConfig, load_config

#: A supernet search of seconds on CPU: L=3, B=2, F=2 at 32x32; trainA and trainB get 4 images
#: each, so an epoch is 2 step pairs; alpha/beta learn from epoch 2 of 2.
TINY_SEARCH = (
    "model.num_layers=3",
    "model.num_blocks=2",
    "model.filter_multiplier=2",
    "model.strides=[4,8]",  # at crop 32 the coarsest level is 4x4 (SPEC.md §12.12)
    "data.crop=32",
    "data.train_samples=8",
    "data.val_samples=4",
    "search.epochs=2",
    "search.batch_size=2",
    "search.arch_start_epoch=1",
    "search.tensorboard=false",
    "search.device=cpu",
)

#: A network that trains in a fraction of a second per step on CPU: F=2, 8-channel heads.
TINY_TRAIN = (
    "model.name=auto-deeplab-s",
    "model.filter_multiplier=2",
    "model.aspp_channels=8",
    "model.decoder_channels=8",
    "data.crop=32",
    "data.train_samples=8",
    "data.val_samples=4",
    "train.iters=4",
    "train.batch_size=2",
    "train.eval_every=2",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.device=cpu",
    "eval.batch_size=2",
)


def _tiny_train_config(*overrides: str) -> TrainConfig:
    return load_config(None, [*TINY_TRAIN, *overrides], base=TrainConfig())


def _tiny_search_config(*overrides: str) -> SearchConfig:
    return load_config(None, [*TINY_SEARCH, *overrides])


@pytest.fixture
def search_config() -> Callable[..., SearchConfig]:
    """``search_config(*overrides)``: the tiny search with ``key=value`` overrides."""
    return _tiny_search_config


@pytest.fixture
def tiny_search_overrides() -> tuple[str, ...]:
    """The tiny search as ``key=value`` overrides (for ``--set`` on a command line)."""
    return TINY_SEARCH


@pytest.fixture
def train_config() -> Callable[..., TrainConfig]:
    """``train_config(*overrides)``: the tiny config with ``key=value`` overrides."""
    return _tiny_train_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-iteration training run folder (best.pt, last.pt, log)."""
    from autodeeplab.engine.train.loop import run_train

    out = tmp_path_factory.mktemp("trained")
    run_train(_tiny_train_config(), out, progress=False)
    return out


@contextlib.contextmanager
def _output_dtypes(cls: type) -> Iterator[list[torch.dtype]]:
    """The output dtype of every forward pass of a ``cls`` module inside the block."""
    seen: list[torch.dtype] = []

    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, cls):
            seen.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture
def output_dtypes() -> Callable[[type], contextlib.AbstractContextManager[list[torch.dtype]]]:
    """``with output_dtypes(cls) as seen:`` records what autocast made of ``cls``'s outputs."""
    return _output_dtypes
