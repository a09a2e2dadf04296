"""Tests of the trellis description, the stem's description and the resampling edges."""

from __future__ import annotations

import itertools
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.config import SearchModelConfig, config_to_dict
from autodeeplab.genotype import PAPER_GENOTYPE
from autodeeplab.model.backbone import Backbone, Stem
from autodeeplab.model.complexity import count_multiply_adds
from autodeeplab.space.network import SearchNetwork, SearchStem
from autodeeplab.trellis import (
    PAPER_STEM,
    PAPER_SUPERNET,
    Resample,
    StemSpec,
    SupernetSpec,
    Trellis,
    beta_mask,
    direction,
    edge_index,
    edges,
    halve,
    level_sizes,
    levels_at,
    num_edges,
)


def test_nodes_are_the_supernets() -> None:
    net = SearchNetwork(3, num_layers=5, num_blocks=2, filter_multiplier=2, strides=(4, 8, 16))
    trellis = Trellis(5, 3, 2, 2)
    built = [
        (layer, node.level, node.sources, node.prev_prev_level)
        for layer, nodes in enumerate(net.layers, start=1)
        for node in nodes
    ]
    assert built == [tuple(node) for node in trellis.nodes()]
    assert [trellis.levels_at(layer) for layer in range(-1, 4)] == [
        [-1],
        [0],
        [0, 1],
        [0, 1, 2],
        [0, 1, 2],
    ]
    assert trellis.levels_at(2) == levels_at(2, 3)
    assert [trellis.channels(layer, 1) for layer in (-1, 0, 1)] == [64, 128, 2 * 2 * 2]


# -- edges ----------------------------------------------------------------------------------


def _brute_force_edges(num_layers: int, strides: list[int]) -> list[tuple[int, int, int, int]]:
    """Every (layer, source level, target level, direction) from strides alone: the stem is
    stride 4, layer l reaches the first l + 1 strides, and an edge halves, keeps or doubles
    the stride (direction 0, 1, 2 in beta's last axis)."""
    found = []
    for layer in range(num_layers):
        here, there = strides[: layer + 1], strides[: layer + 2]
        for a, b in itertools.product(here, there):
            if b * 2 == a or b == a or b == 2 * a:
                move = {a // 2: 0, a: 1, 2 * a: 2}[b]
                found.append((layer, strides.index(a), strides.index(b), move))
    return sorted(found, key=lambda e: (e[0], e[1], e[3]))


@pytest.mark.parametrize(("num_layers", "num_levels"), [(1, 1), (1, 4), (3, 2), (5, 3), (12, 4)])
def test_edges_are_the_brute_force_ones(num_layers: int, num_levels: int) -> None:
    strides = [4 * 2**s for s in range(num_levels)]
    found = edges(num_layers, num_levels)
    assert [tuple(e) for e in found] == _brute_force_edges(num_layers, strides)
    assert all(e.direction == direction(e.source, e.target) for e in found)
    assert Trellis(num_layers, num_levels, 2, 2).edges() == found
    mask = torch.zeros(num_layers, num_levels, 3, dtype=torch.bool)
    for layer, source, _, move in _brute_force_edges(num_layers, strides):
        mask[layer, source, move] = True
    assert torch.equal(beta_mask(num_layers, num_levels), mask)
    # A node's sources are the edges into it, finest first.
    into = {(e.layer + 1, e.target): [] for e in found}
    for e in found:
        into[e.layer + 1, e.target].append(e.source)
    assert {
        (n.layer, n.level): n.sources for n in Trellis(num_layers, num_levels, 2, 2).nodes()
    } == into


def test_the_paper_trellis_has_105_edges_and_directions_name_the_move() -> None:
    assert len(edges(12, 4)) == 105
    assert [direction(2, target) for target in (1, 2, 3)] == [0, 1, 2]


def test_edge_index_numbers_the_cell_edges_as_darts() -> None:
    # DARTS: block i's edges follow block i-1's and read the states 0..i+1 in order.
    order = [(block, state) for block in range(6) for state in range(block + 2)]
    assert [edge_index(b, s) for b, s in order] == list(range(len(order)))
    assert [num_edges(b) for b in range(1, 6)] == [2, 5, 9, 14, 20]


# -- the supernet's spec ----------------------------------------------------------------------


def test_the_config_section_and_the_supernet_take_the_specs_fields_and_defaults() -> None:
    spec_fields = [f.name for f in fields(SupernetSpec)]
    model_fields = {f.name: f.default for f in fields(SearchModelConfig)}
    assert set(model_fields) == {*spec_fields, "checkpoint_cells"}
    for f in fields(SupernetSpec):
        assert model_fields[f.name] == f.default == getattr(PAPER_SUPERNET, f.name), f.name
    assert SearchModelConfig().supernet_spec() == PAPER_SUPERNET
    assert list(config_to_dict(SearchModelConfig())) == [*spec_fields, "checkpoint_cells"]
    with torch.device("meta"):  # the paper's supernet, without the memory
        net = SearchNetwork(19)
    assert net.spec == PAPER_SUPERNET and net.num_layers == 12 and net.strides == (4, 8, 16, 32)
    assert net.model_kwargs == {
        "num_classes": 19,
        **PAPER_SUPERNET.kwargs(),
        "checkpoint_cells": False,
    }


def test_the_supernet_takes_a_spec_or_its_fields() -> None:
    spec = SupernetSpec(num_layers=2, num_blocks=2, filter_multiplier=2, strides=[4, 8])
    assert spec.strides == (4, 8) and spec.num_levels == 2  # sequences kept as tuples
    by_spec = SearchNetwork(3, spec=spec)
    by_name = SearchNetwork(3, num_layers=2, num_blocks=2, filter_multiplier=2, strides=(4, 8))
    by_position = SearchNetwork(3, 2, 2, 2, (4, 8))
    for net in (by_name, by_position, SearchNetwork(**by_spec.model_kwargs)):
        assert net.spec == spec and net.model_kwargs == by_spec.model_kwargs
        assert net.state_dict().keys() == by_spec.state_dict().keys()
    with pytest.raises(TypeError, match="spec or the spec's fields"):
        SearchNetwork(3, spec=spec, num_layers=3)
    with pytest.raises(TypeError):
        SearchNetwork(3, bogus=1)


def test_sizes_halve_up() -> None:
    assert halve((9, 8)) == (5, 4)
    assert level_sizes((65, 33), 4) == [(17, 9), (9, 5), (5, 3), (3, 2)]


@pytest.mark.parametrize("channels", [(64, 64, 128), (4, 6, 8)])
def test_stem_spec_counts_both_stem_modules(channels: tuple[int, int, int]) -> None:
    spec = StemSpec(channels)
    for stem in (SearchStem(spec), Stem(spec=spec)):
        assert sum(p.numel() for p in stem.parameters()) == spec.weight_count()
        floats = [b for b in stem.buffers() if b.dtype.is_floating_point]
        assert sum(b.numel() for b in floats) == spec.buffer_count()
    assert count_multiply_adds(Stem(spec=spec), (37, 50)) == spec.multiply_adds((37, 50))


def test_the_two_stem_modules_compute_the_same(randomize) -> None:
    # One description, two module classes only for their state-dict keys (saved checkpoints).
    search, retrain = randomize(SearchStem(StemSpec((4, 6, 8)))), Stem(spec=StemSpec((4, 6, 8)))
    src = search.state_dict()
    renamed = {}
    for key, value in src.items():
        conv, index, rest = key.split(".", 2)
        renamed[f"{conv}.{rest}" if index == "0" else f"bn{conv[-1]}.{rest}"] = value
    retrain.load_state_dict(renamed)
    x = torch.randn(2, 3, 19, 23)
    for a, b in zip(search.eval()(x), retrain.eval()(x), strict=True):
        torch.testing.assert_close(a, b)


def test_paper_stem_is_the_retrain_backbones() -> None:
    backbone = Backbone(PAPER_GENOTYPE, 8)
    assert sum(p.numel() for p in backbone.stem.parameters()) == PAPER_STEM.weight_count()


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("delta", [-2, -1, 0, 1, 2])
def test_resample_profile_equals_the_module(delta: int, affine: bool) -> None:
    op = Resample(6, 5, delta, affine)
    assert sum(p.numel() for p in op.parameters()) == Resample.weight_count(6, 5, delta, affine)
    floats = [b for b in op.buffers() if b.dtype.is_floating_point]
    assert sum(b.numel() for b in floats) == Resample.buffer_count(5, delta)


# -- Resample ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level_delta", "in_size", "out_size"),
    [
        (1, (9, 7), (5, 4)),
        (2, (9, 7), (3, 2)),
        (1, (17, 33), (9, 17)),
        (0, (9, 7), (9, 7)),
        (-1, (5, 4), (9, 7)),
        (-2, (3, 2), (9, 7)),
        (-1, (9, 17), (17, 33)),
    ],
)
def test_resample_size_and_channels(
    level_delta: int, in_size: tuple[int, int], out_size: tuple[int, int]
) -> None:
    op = Resample(6, 5, level_delta)
    y = op(torch.randn(2, 6, *in_size), out_size)
    assert tuple(y.shape) == (2, 5, *out_size)
    y.sum().backward()
    assert all(p.grad is not None for p in op.parameters())


def test_resample_structure() -> None:
    down2 = Resample(6, 5, 2)
    convs = [m for m in down2.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (6, 5, (3, 3), (2, 2)),
        (5, 5, (3, 3), (2, 2)),
    ]
    up = Resample(6, 5, -1)
    convs = [m for m in up.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((1, 1), (1, 1))]
    # affine=False by default: the search-time convention (docs/design.md §12.4).
    assert sum(p.numel() for p in Resample(6, 5, 0).parameters()) == 30
    assert sum(p.numel() for p in Resample(6, 5, 0, affine=True).parameters()) == 40


def test_resample_upsampling_is_conv_then_bilinear(randomize) -> None:
    op = randomize(Resample(4, 3, -1)).eval()
    x = torch.randn(1, 4, 5, 4)
    ref = F.interpolate(op.body(x), size=(9, 7), mode="bilinear", align_corners=False)
    torch.testing.assert_close(op(x, (9, 7)), ref)
