"""A trained run and an autocast probe, shared by the engine tests (the tiny configs and their
fixtures are in tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished training run folder (best.pt, last.pt, log) of :func:`tiny_train_config`."""
    from autodeeplab.engine.train.loop import run_train

    out = tmp_path_factory.mktemp("trained")
    run_train(tiny_train_config(), out, progress=False)
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
