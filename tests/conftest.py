"""Shared tiny fixtures: fixed seeds and a small supernet that runs in milliseconds on CPU."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from autodeeplab.search.network import SearchNetwork

#: A stem much narrower than the paper's 64/64/128, so that supernet tests stay fast.
TINY_STEM = (4, 4, 8)


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tensors are tiny, and on a busy 2-core machine
    OpenMP threads contending for cores make a tiny forward pass 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_net() -> Callable[..., SearchNetwork]:
    """Factory for a seeded tiny supernet; keyword arguments override the tiny defaults."""

    def make(seed: int = 0, **kwargs) -> SearchNetwork:
        args = {
            "num_classes": 3,
            "num_layers": 4,
            "num_blocks": 2,
            "filter_multiplier": 2,
            "strides": (4, 8, 16, 32),
            "stem_channels": TINY_STEM,
        }
        args.update(kwargs)
        torch.manual_seed(seed)
        return SearchNetwork(**args)

    return make


@pytest.fixture
def tiny_net(make_net: Callable[..., SearchNetwork]) -> SearchNetwork:
    """L=4, B=2, F=2, strides 4..32, 3 classes, seed 0."""
    return make_net()


def _randomize(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Fill every parameter and BatchNorm statistic with random values (variances > 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
    return module


def _single_edge_copy(
    batched: torch.nn.Module, single: torch.nn.Module, edge: int, num_edges: int
) -> torch.nn.Module:
    """Load edge ``edge`` of an edge-batched op into the single-edge op ``single``.

    Every tensor of the batched op stacks its edges along dim 0 (edge-major), so edge e
    is chunk e of dim 0; tensors of equal shape (e.g. ``num_batches_tracked``) are copied.
    """
    src = batched.state_dict()
    state = {}
    for name, t in single.state_dict().items():
        s = src[name]
        if s.shape == t.shape and num_edges == 1 or s.ndim == 0:
            state[name] = s.clone()
        else:
            assert s.shape[0] == num_edges * t.shape[0], (name, s.shape, t.shape)
            assert s.shape[1:] == t.shape[1:], (name, s.shape, t.shape)
            state[name] = s.chunk(num_edges, dim=0)[edge].clone()
    single.load_state_dict(state)
    return single


@pytest.fixture
def randomize() -> Callable[..., torch.nn.Module]:
    """``randomize(module, seed=1)``: random parameters and BN statistics, in place."""
    return _randomize


@pytest.fixture
def single_edge_copy() -> Callable[..., torch.nn.Module]:
    """``single_edge_copy(batched, single, edge, num_edges)``: slice edge weights out."""
    return _single_edge_copy
