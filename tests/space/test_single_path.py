"""Tests of the single-path forward of the supernet (``space/single_path.py``)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from autodeeplab.genotype import Genotype, random_genotype
from autodeeplab.model.backbone import Backbone
from autodeeplab.model.cell import Cell
from autodeeplab.ops import PRIMITIVES, resize
from autodeeplab.space import single_path
from autodeeplab.space.cell import edge_index
from autodeeplab.space.network import SearchNetwork
from autodeeplab.space.single_path import batchnorms_used, path_edge_key, recalibrate
from autodeeplab.trellis import PAPER_STEM

#: Every kind of op: edge-batched convs (sliced), pools and skip (shared), on every input.
CELLS = [
    (
        (("sep_conv_3x3", 1), ("dil_conv_5x5", 0)),
        (("max_pool_3x3", 2), ("sep_conv_5x5", 0)),
    ),
    (
        (("skip_connect", 0), ("avg_pool_3x3", 1)),
        (("dil_conv_3x3", 1), ("sep_conv_3x3", 2)),
    ),
    (
        (("sep_conv_3x3", 1), ("sep_conv_5x5", 0)),
        (("sep_conv_3x3", 1), ("dil_conv_3x3", 0)),
    ),
]


def _x(n: int = 2, size: int = 40, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _copy_op(net_node, cell: Cell, genotype: Genotype, single_edge_copy) -> None:
    """Load each branch of ``cell`` from its edge of the supernet node's mixed ops."""
    for j, (op_name, state) in enumerate(b for blk in genotype.cell for b in blk):
        block = j // 2
        mixed = net_node.cell.mixed[state]
        col = mixed.columns.index(PRIMITIVES.index(op_name))
        single_edge_copy(mixed.ops[col], cell.ops[j], block - max(0, state - 1), mixed.num_edges)


class _StemEdgeCell(torch.nn.Module):
    """Layer 1's retrain cell fed its H^{l-2} through the supernet's stem edge."""

    def __init__(self, cell: Cell, edge: torch.nn.Module) -> None:
        super().__init__()
        self.cell, self.edge = cell, edge

    def forward(self, net: torch.Tensor, prev_layer: torch.Tensor, progress) -> torch.Tensor:
        return self.cell(net, self.edge(prev_layer, tuple(net.shape[-2:])), progress)


@pytest.mark.parametrize("cell", CELLS)
def test_single_path_equals_the_retrain_backbone_on_the_same_weights(
    make_net, randomize, single_edge_copy, cell
) -> None:
    # Affine BNs, plain pools and the paper's stem: the supernet's modules are then the
    # retrain backbone's, along a path that stays at stride 4.
    net = make_net(affine=True, pool_bn=False, stem_channels=PAPER_STEM.channels)
    net = randomize(net, seed=2).eval()
    genotype = Genotype(cell, (0, 0, 0, 0))
    backbone = Backbone(genotype, filter_multiplier=2).eval()
    stem = {  # SearchStem's Sequential(conv, bn) -> Stem's convK / bnK
        f"{'conv' if part == '0' else 'bn'}{k}.{name}": t
        for key, t in net.stem.state_dict().items()
        for k, part, name in [(key[4], key.split(".")[1], key.split(".", 2)[2])]
    }
    backbone.stem.load_state_dict(stem)
    for layer, ref in enumerate(backbone.cells, start=1):
        node = net.layers[layer - 1][0]
        ref.preprocess.load_state_dict(node.pre[0].body.state_dict())
        if layer > 1:
            ref.preprocess_prev.load_state_dict(node.pre_prev.body.state_dict())
        _copy_op(node, ref, genotype, single_edge_copy)
    # The one place the modules differ: the supernet brings stem0 (stride 2) to level 0 by a
    # stride-2 conv edge, the retrain cell by resizing and a 1x1 conv. Layer 1 reads its
    # H^{l-2} through the supernet's edge, as an input that needs no preprocessing.
    first = Cell(genotype, 2, PAPER_STEM.stem1_channels, prev_channels=2).eval()
    first.preprocess.load_state_dict(net.layers[0][0].pre[0].body.state_dict())
    _copy_op(net.layers[0][0], first, genotype, single_edge_copy)
    backbone.cells[0] = _StemEdgeCell(first, net.layers[0][0].pre_prev)
    x = _x()
    features, _ = backbone(x)
    expected = resize(net.heads[0](features), x.shape[-2:])
    got = net.forward_genotype(x, genotype)
    assert got.shape == net(x).shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _one_hot_arch(net: SearchNetwork, genotype: Genotype) -> None:
    """alpha and beta that make the supernet's forward run exactly ``genotype``, and every
    head but the path's last level's output zero."""
    big = 1e4
    with torch.no_grad():
        net.alpha.fill_(-big)
        net.alpha[:, net.primitives.index("none")] = big
        for block, branches in enumerate(genotype.cell):
            for op, state in branches:
                row = edge_index(block, state)
                net.alpha[row].fill_(-big)
                net.alpha[row, net.primitives.index(op)] = big
        net.beta.fill_(-big)
        levels = [0, *genotype.path]
        for row in range(net.num_layers):
            nxt = levels[row + 1]
            for src in net.trellis.levels_at(row):
                targets = [
                    t for t in (src - 1, src, src + 1) if t in net.trellis.levels_at(row + 1)
                ]
                # The path's node sends to the path; every other node anywhere else.
                target = nxt if src == levels[row] else next(t for t in targets if t != nxt)
                net.beta[row, src, target - src + 1] = big
        for level, head in enumerate(net.heads):
            if level != genotype.path[-1]:
                head.classifier.weight.zero_()
                head.classifier.bias.zero_()


@pytest.mark.parametrize("path", [(0, 0, 0, 0), (1, 1, 1, 1), (1, 2, 2, 2), (1, 2, 3, 3)])
@pytest.mark.parametrize("pool_bn", [True, False])
def test_single_path_equals_the_one_hot_supernet_where_the_trellis_has_its_edges(
    make_net, randomize, path, pool_bn
) -> None:
    # On these paths each cell's H^{l-2} is the trellis's own edge from the path's node.
    net = randomize(make_net(pool_bn=pool_bn), seed=3).eval()
    genotype = Genotype(CELLS[0], path)
    levels = [-1, 0, *path]
    assert all(net.layers[i][lv].prev_prev_level == levels[i] for i, lv in enumerate(path))
    _one_hot_arch(net, genotype)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(net.forward_genotype(x, genotype), net(x), atol=1e-5, rtol=1e-5)


def test_only_the_genotype_s_edges_and_ops_get_gradients(make_net) -> None:
    net = make_net()
    genotype = Genotype(CELLS[2], (0, 1, 1, 0))
    net.forward_genotype(_x(), genotype).square().mean().backward()
    assert net.alpha.grad is None and net.beta.grad is None
    used = {(b, s, op) for b, blk in enumerate(genotype.cell) for op, s in blk}
    for layer, level in enumerate(genotype.path, start=1):
        for node in net.layers[layer - 1]:
            for state, mixed in enumerate(node.cell.mixed):
                for col, op in zip(mixed.columns, mixed.ops, strict=True):
                    name = net.primitives[col]
                    for p in op.parameters():
                        first = max(0, state - 1)
                        rows = p.shape[0] // mixed.num_edges
                        for e in range(mixed.num_edges):
                            grad = None if p.grad is None else p.grad[e * rows : (e + 1) * rows]
                            live = grad is not None and bool(grad.abs().sum() > 0)
                            want = node.level == level and (e + first, state, name) in used
                            assert live == want, (layer, node.level, state, name, e)
    # Heads off the path's last level and nodes off the path learn nothing.
    assert all(p.grad is None for p in net.heads[1].parameters())
    assert all(p.grad is None for p in net.layers[3][2].parameters())


def _spy_cells(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen = []
    real = single_path._cell

    def spy(layer, s0, s1, sliced):
        seen.append((s0, s1))
        return real(layer, s0, s1, sliced)

    monkeypatch.setattr(single_path, "_cell", spy)
    return seen


def test_trellis_mode_reads_h_l_minus_2_through_the_trained_edge_from_its_level(
    make_net, monkeypatch
) -> None:
    # Path 0, 0, 1: layer 3 (level 1) has its node two back at level 0; the trellis's H^{l-2}
    # edge reads level 1 there. The cell's H^{l-1} edge from level 0 maps the same shapes.
    net = make_net().eval()
    genotype = Genotype(CELLS[0], (0, 0, 1, 1))
    seen = _spy_cells(monkeypatch)
    with torch.no_grad():
        trellis = net.forward_genotype(_x(), genotype, prev_prev="trellis")
        assert net.layers[2][1].prev_prev_level == 1
        # Through a path edge that holds the H^{l-1} edge's weights: the same network.
        net.add_path_edges()
        for layer in (3, 4):  # both read level 0 two layers back, the trellis level 1
            node = net.layers[layer - 1][1]
            net.path_edges[path_edge_key(layer, 1, 0)].load_state_dict(node.pre[0].state_dict())
        seen.clear()
        path = net.forward_genotype(_x(), genotype, prev_prev="path")
        torch.testing.assert_close(trellis, path)
        assert all(s0 is not s1 for s0, s1 in seen)


def test_trellis_mode_feeds_h_l_minus_1_where_the_level_moved_by_two(make_net, monkeypatch) -> None:
    net = make_net().eval()
    genotype = Genotype(CELLS[0], (0, 0, 1, 2))  # layer 4 at level 2, its node two back at 0
    seen = _spy_cells(monkeypatch)
    with torch.no_grad():
        net.forward_genotype(_x(), genotype, prev_prev="trellis")
        assert [s0 is s1 for s0, s1 in seen] == [False, False, False, True]
        net.add_path_edges()
        seen.clear()
        net.forward_genotype(_x(), genotype)  # auto: the path edges now
        assert [s0 is s1 for s0, s1 in seen] == [False] * 4
        assert seen[3][0].shape == seen[3][1].shape


def test_path_mode_needs_path_edges_and_bad_genotypes_are_refused(make_net) -> None:
    net = make_net()
    genotype = Genotype(CELLS[0], (0, 1, 2, 1))
    with pytest.raises(ValueError, match="add_path_edges"):
        net.forward_genotype(_x(), genotype, prev_prev="path")
    with pytest.raises(ValueError, match="prev_prev must be one of"):
        net.forward_genotype(_x(), genotype, prev_prev="nearest")
    with pytest.raises(ValueError, match="layers"):
        net.forward_genotype(_x(), Genotype(CELLS[0], (0, 1, 1)))
    with pytest.raises(ValueError, match="ops"):
        make_net(primitives=("none", "skip_connect", "sep_conv_3x3")).forward_genotype(
            _x(), genotype
        )
    with pytest.raises(ValueError, match="level 2"):
        make_net(strides=(4, 8)).forward_genotype(_x(), genotype)


@pytest.mark.parametrize("path", [(0, 1, 2, 3), (1, 2, 1, 0), (0, 0, 1, 2), (1, 1, 0, 0)])
def test_every_path_runs_in_both_modes_with_the_forward_s_shape(make_net, path) -> None:
    net = make_net()
    genotype = Genotype(CELLS[1], path)
    x = _x(size=37)  # odd sizes: the levels' sizes come from the stem's ceil halving
    shape = net(x).shape
    assert net.forward_genotype(x, genotype, prev_prev="trellis").shape == shape
    net.add_path_edges()
    assert net.forward_genotype(x, genotype, prev_prev="path").shape == shape


def test_path_edges_cover_every_level_change_and_leave_forward_unchanged(make_net) -> None:
    net = make_net(num_layers=6).eval()
    x = _x()
    before = net(x)
    state = torch.random.get_rng_state()
    net.add_path_edges()
    assert torch.equal(torch.random.get_rng_state(), state)  # its own generator
    torch.testing.assert_close(net(x), before, atol=0, rtol=0)
    assert len(net.path_edges) > 0
    assert not any(m.training for m in net.path_edges.modules())  # the net's mode (eval)
    for layer in range(3, 7):
        for node in net.layers[layer - 1]:
            for a in net.trellis.levels_at(layer - 2):
                key = path_edge_key(layer, node.level, a)
                if abs(a - node.level) <= 2 and a != node.prev_prev_level:
                    assert key in net.path_edges
                else:
                    assert key not in net.path_edges
    # Deterministic, and its parameters are weights (an optimiser of spos trains them).
    other = make_net(num_layers=6, seed=9)
    other.add_path_edges()
    for p, q in zip(net.path_edges.parameters(), other.path_edges.parameters(), strict=True):
        assert torch.equal(p, q)
    ids = {id(p) for p in net.weight_parameters()}
    assert all(id(p) in ids for p in net.path_edges.parameters())


def test_a_state_without_path_edges_loads_and_one_with_them_adds_them(make_net, tmp_path) -> None:
    old = make_net()
    torch.save(old.state_dict(), tmp_path / "old.pt")
    fresh = make_net(seed=4)
    fresh.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))  # strict
    assert fresh.path_edges is None
    genotype = Genotype(CELLS[0], (0, 1, 2, 1))
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.eval().forward_genotype(_x(), genotype),
            old.eval().forward_genotype(_x(), genotype),
        )
    spos = make_net(seed=5)
    spos.add_path_edges(seed=7)
    again = make_net(seed=6)
    again.load_state_dict(spos.state_dict())  # adds the edges, then loads strictly
    assert again.path_edges is not None
    assert again.state_dict().keys() == spos.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(
            again.eval().forward_genotype(_x(), genotype),
            spos.eval().forward_genotype(_x(), genotype),
        )


def _bn_state(bns) -> list[torch.Tensor]:
    return [t.clone() for m in bns for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("partial_channels", [1, 2])
def test_recalibration_is_the_cumulative_mean_over_batches(make_net, partial_channels) -> None:
    net = make_net(partial_channels=partial_channels)
    # Two branches on different edges of the same edge-batched ops (sep_conv_3x3 on H^{l-1}).
    genotype = Genotype(CELLS[2], (0, 1, 1, 2))
    bns = batchnorms_used(net, genotype)
    b1, b2 = _x(seed=1), _x(seed=2)
    every = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    untouched = [m for m in every if all(m is not b for b in bns)]
    before = _bn_state(untouched)
    assert recalibrate(net, genotype, [b1]) == 1
    one = _bn_state(bns)
    recalibrate(net, genotype, [b2])
    two = _bn_state(bns)
    recalibrate(net, genotype, [b1, b2])
    assert not net.training
    # In training mode each pass normalises with its own batch's statistics, so the running
    # statistics over two batches are exactly the mean of each batch's.
    for got, a, b in zip(_bn_state(bns), one, two, strict=True):
        torch.testing.assert_close(got, (a + b) / 2)
    for got, want in zip(_bn_state(untouched), before, strict=True):
        assert torch.equal(got, want)
    assert all(m.momentum == 0.1 for m in bns)
    # Two batches; a trellis edge that also stands in for H^{l-2} counts both of its uses.
    assert all(int(m.num_batches_tracked) in (2, 4) for m in bns)


def test_random_genotypes_run_with_partial_channels(make_net) -> None:
    net = make_net(partial_channels=2)
    rng = random.Random(0)
    for _ in range(3):
        genotype = random_genotype(rng, 4, 2, 4)
        out = net.forward_genotype(_x(), genotype)
        assert out.shape == (2, 3, 40, 40) and torch.isfinite(out).all()
        F.cross_entropy(out, torch.zeros(2, 40, 40, dtype=torch.long)).backward()
