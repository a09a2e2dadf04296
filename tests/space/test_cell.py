"""Tests of the search cell: edge tables, MixedOp and SearchCell against per-edge references."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

from autodeeplab.ops import OPS, PRIMITIVES, Pool, channel_shuffle
from autodeeplab.space.cell import (
    MixedOp,
    SearchCell,
    edge_index,
    edge_softmax,
    num_edges,
    state_edges,
)

C = 3
PERMUTED = ("skip_connect", "sep_conv_3x3", "none", "max_pool_3x3", "dil_conv_3x3")


# -- edge tables ------------------------------------------------------------------------------


def test_num_edges() -> None:
    assert [num_edges(b) for b in range(1, 7)] == [2, 5, 9, 14, 20, 27]
    assert num_edges(5) == 20  # alpha is (20, 8) in the paper's space


def test_edge_index_table_for_b5() -> None:
    table = [[edge_index(block, state) for state in range(block + 2)] for block in range(5)]
    assert table == [
        [0, 1],
        [2, 3, 4],
        [5, 6, 7, 8],
        [9, 10, 11, 12, 13],
        [14, 15, 16, 17, 18, 19],
    ]


def test_state_edges_table_for_b5() -> None:
    assert [state_edges(s, 5) for s in range(6)] == [
        [0, 2, 5, 9, 14],  # H^{l-2} feeds every block
        [1, 3, 6, 10, 15],  # H^{l-1} feeds every block
        [4, 7, 11, 16],  # block 1 feeds blocks 2..5
        [8, 12, 17],
        [13, 18],
        [19],
    ]
    rows = sorted(r for s in range(6) for r in state_edges(s, 5))
    assert rows == list(range(20))  # a partition of the edges


# -- reference implementations ----------------------------------------------------------------


def _single_ops(
    mixed: MixedOp, primitives: Sequence[str], edge: int, affine: bool, copy: Callable
) -> list[nn.Module]:
    """Independent single-edge ops, one per primitive, holding edge ``edge`` of ``mixed``."""
    batched = dict(zip(mixed.columns, mixed.ops, strict=True))
    ops = []
    for k, name in enumerate(primitives):
        single = OPS[name](C, 1, affine, 1)
        if k in batched and single.state_dict():
            copy(batched[k], single, edge, mixed.num_edges)
        if isinstance(single, Pool):  # the search pools are followed by BN (docs/design.md §12.11)
            bn = nn.BatchNorm2d(C, affine=False)
            bn.load_state_dict(batched[k].bn.state_dict())
            single = nn.Sequential(single, bn)
        ops.append(single.train(mixed.training))
    return ops


def _mixed_edge(ops: list[nn.Module], w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eq. 2 as written: sum_k w_k * O^k(x), 'none' included (its output is zero)."""
    return sum(w[k] * op(x) for k, op in enumerate(ops))


# -- MixedOp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("primitives", [PRIMITIVES, PERMUTED])
@pytest.mark.parametrize("num_edges_", [1, 3])
def test_mixed_op_equals_explicit_per_edge_loop(
    primitives, num_edges_: int, train: bool, randomize, single_edge_copy
) -> None:
    e, k = num_edges_, len(primitives)
    mixed = randomize(MixedOp(C, primitives, e, affine=True)).train(train)
    refs = [_single_ops(mixed, primitives, i, True, single_edge_copy) for i in range(e)]
    weights = torch.softmax(torch.randn(e, k), dim=-1)
    x = torch.randn(2, C, 7, 9)
    out = mixed(x, weights)
    assert tuple(out.shape) == (2, e, C, 7, 9)
    for i in range(e):
        torch.testing.assert_close(out[:, i], _mixed_edge(refs[i], weights[i], x))


def test_mixed_op_never_builds_none_and_none_contributes_zero() -> None:
    mixed = MixedOp(C, PRIMITIVES, 2)
    assert mixed.columns == [1, 2, 3, 4, 5, 6, 7]
    assert not any(isinstance(op, type(OPS["none"](C, 1, False, 1))) for op in mixed.ops)
    x = torch.randn(2, C, 5, 5)
    only_none = torch.zeros(2, len(PRIMITIVES))
    only_none[:, 0] = 1.0
    assert torch.count_nonzero(mixed(x, only_none)) == 0
    # 'none' has no effect on the output, so alpha of 'none' gets no gradient through it.
    w = torch.softmax(torch.randn(2, len(PRIMITIVES)), -1).requires_grad_()
    mixed(x, w).square().sum().backward()
    assert torch.count_nonzero(w.grad[:, 0]) == 0
    assert torch.count_nonzero(w.grad[:, 1:]) == w.grad[:, 1:].numel()


def test_mixed_op_with_only_none_is_zero() -> None:
    mixed = MixedOp(C, ("none",), 3)
    out = mixed(torch.randn(2, C, 4, 5), torch.ones(3, 1))
    assert tuple(out.shape) == (2, 3, C, 4, 5) and torch.count_nonzero(out) == 0


@pytest.mark.parametrize("pool_bn", [False, True])
def test_mixed_op_shared_ops_are_broadcast_over_edges(pool_bn: bool) -> None:
    mixed = MixedOp(C, ("skip_connect", "avg_pool_3x3"), 3, pool_bn=pool_bn)
    x = torch.randn(2, C, 5, 6)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    out = mixed(x, w)
    pool = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    if pool_bn:  # training mode: normalised over the batch, per channel, no affine
        pool = torch.nn.functional.batch_norm(pool, None, None, training=True)
    torch.testing.assert_close(out[:, 0], x)
    torch.testing.assert_close(out[:, 1], pool)
    torch.testing.assert_close(out[:, 2], 0.25 * x + 0.75 * pool)


def test_search_pools_have_the_scale_of_the_other_ops() -> None:
    # docs/design.md §12.11: on a normalised input, max-pool alone has mean ~+1 and ~2.2x the
    # energy of a BN-ended op; with the BN after it, mean 0 and unit variance like the rest.
    torch.manual_seed(0)
    x = torch.randn(8, 16, 16, 16)
    plain = MixedOp(16, ("max_pool_3x3",), 1, pool_bn=False)(x, torch.ones(1, 1))
    normed = MixedOp(16, ("max_pool_3x3",), 1)(x, torch.ones(1, 1))
    assert plain.mean() > 0.8 and plain.square().mean() > 2.0
    assert abs(float(normed.mean())) < 1e-5
    assert float(normed.square().mean()) == pytest.approx(1.0, abs=1e-3)


def test_aux_skip_adds_the_input_to_every_edge() -> None:
    mixed = MixedOp(C, ("skip_connect", "sep_conv_3x3"), 2)
    x, w = torch.randn(2, C, 5, 6), torch.softmax(torch.randn(2, 2), -1)
    base = mixed(x, w)
    mixed.aux_skip = 0.4
    torch.testing.assert_close(mixed(x, w), base + 0.4 * x.unsqueeze(1))


def test_skip_dropout_drops_only_the_skip_and_only_in_training() -> None:
    # P-DARTS: out = w_skip * dropout(x) + w_sep * sep(x); the sep_conv part is untouched.
    mixed = MixedOp(C, ("skip_connect", "sep_conv_3x3"), 2)
    x, w = torch.randn(2, C, 5, 6), torch.softmax(torch.randn(2, 2), -1)
    base = mixed(x, w)  # training mode (BN on batch statistics)
    mixed.skip_dropout = 0.5
    torch.manual_seed(3)
    dropped = mixed(x, w)
    torch.manual_seed(3)
    mask = torch.nn.functional.dropout(torch.ones_like(x), 0.5)  # the same draw: 0 or 2
    assert (mask == 0).any() and (mask == 2).any()
    w_skip = w[:, 0].view(1, 2, 1, 1, 1)
    expected = base + w_skip * ((mask - 1) * x).unsqueeze(1)
    torch.testing.assert_close(dropped, expected, rtol=1e-5, atol=1e-5)
    mixed.eval()  # evaluation: no dropout
    kept = mixed(x, w)
    mixed.skip_dropout = 0.0
    torch.testing.assert_close(kept, mixed(x, w))


# -- SearchCell -------------------------------------------------------------------------------


class _ReferenceCell:
    """Eq. 1-5 written out: block i = sum over states j of the mixed edge (j -> i); concat."""

    def __init__(self, cell: SearchCell, primitives, affine: bool, copy: Callable) -> None:
        b = cell.num_blocks
        self.num_blocks = b
        # ops[(j, i)]: independent single-edge ops of edge j -> i, sliced from the cell.
        self.ops = {}
        for j in range(b + 1):
            rows = state_edges(j, b)
            for i in range(max(0, j - 1), b):
                pos = rows.index(edge_index(i, j))
                self.ops[j, i] = _single_ops(cell.mixed[j], primitives, pos, affine, copy)

    def __call__(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        for i in range(self.num_blocks):
            h = sum(
                _mixed_edge(self.ops[j, i], weights[edge_index(i, j)], states[j])
                for j in range(i + 2)
            )
            states.append(h)
        return torch.cat(states[2:], dim=1)


def _state_weights(weights: torch.Tensor, b: int) -> list[torch.Tensor]:
    return SearchCell.split_weights(
        weights, [torch.tensor(state_edges(s, b)) for s in range(b + 1)]
    )


def test_split_weights_selects_state_rows() -> None:
    w = torch.arange(20.0).view(20, 1).expand(20, 3)
    parts = _state_weights(w, 5)
    assert [p[:, 0].tolist() for p in parts] == [
        [float(r) for r in state_edges(s, 5)] for s in range(6)
    ]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(("num_blocks", "primitives"), [(1, PRIMITIVES), (3, PERMUTED)])
def test_search_cell_equals_reference(
    num_blocks: int, primitives, train: bool, randomize, single_edge_copy
) -> None:
    cell = randomize(SearchCell(C, num_blocks, primitives, affine=True)).train(train)
    ref = _ReferenceCell(cell, primitives, True, single_edge_copy)
    weights = torch.softmax(torch.randn(num_edges(num_blocks), len(primitives)), dim=-1)
    s0, s1 = torch.randn(2, C, 6, 5), torch.randn(2, C, 6, 5)
    out = cell(s0, s1, _state_weights(weights, num_blocks))
    assert tuple(out.shape) == (2, num_blocks * C, 6, 5)
    torch.testing.assert_close(out, ref(s0, s1, weights), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("directions", [2, 3])
def test_search_cell_stacked_directions_broadcast_s0(
    directions: int, randomize, single_edge_copy
) -> None:
    """k stacked H^{l-1} share one H^{l-2}; eval mode, since train-mode BN pools the batch."""
    b = 3
    cell = randomize(SearchCell(C, b, PRIMITIVES, affine=False)).eval()
    ref = _ReferenceCell(cell, PRIMITIVES, False, single_edge_copy)
    weights = torch.softmax(torch.randn(num_edges(b), len(PRIMITIVES)) * 2, dim=-1)
    n = 2
    s0 = torch.randn(n, C, 5, 7)
    s1s = [torch.randn(n, C, 5, 7) for _ in range(directions)]
    out = cell(s0, torch.cat(s1s), _state_weights(weights, b))
    assert tuple(out.shape) == (directions * n, b * C, 5, 7)
    for d, s1 in enumerate(s1s):
        torch.testing.assert_close(out[d * n : (d + 1) * n], ref(s0, s1, weights))
        # The stacked run equals running the cell on that direction alone.
        torch.testing.assert_close(
            out[d * n : (d + 1) * n], cell(s0, s1, _state_weights(weights, b))
        )


def test_search_cell_has_one_mixed_op_per_state() -> None:
    cell = SearchCell(C, 5, PRIMITIVES)
    assert [m.num_edges for m in cell.mixed] == [5, 5, 4, 3, 2, 1]
    # affine=False (docs/design.md §12.4): only conv weights are parameters.
    per_edge = sum(p.numel() for name in PRIMITIVES for p in OPS[name](C, 1, False, 1).parameters())
    assert sum(p.numel() for p in cell.parameters()) == 20 * per_edge


# -- partial channels (PC-DARTS) --------------------------------------------------------------


@pytest.mark.parametrize("edge_weights", [False, True])
@pytest.mark.parametrize(("channels", "k"), [(8, 4), (6, 2), (6, 3)])
def test_partial_mixed_op_equals_pc_darts_formula(
    channels: int, k: int, edge_weights: bool, randomize
) -> None:
    """out_e = g_e * shuffle(cat(mixed op on the first C/K channels, the rest), K)."""
    e, cp = 3, channels // k
    mixed = randomize(MixedOp(channels, PRIMITIVES, e, affine=True, partial_channels=k)).train()
    # The ops are built for C/K channels: the same module tree as a full op at width C/K.
    narrow = MixedOp(cp, PRIMITIVES, e, affine=True)
    narrow.load_state_dict(mixed.state_dict())
    narrow.train()
    weights = torch.softmax(torch.randn(e, len(PRIMITIVES)), dim=-1)
    g = torch.rand(e) + 0.5 if edge_weights else None
    x = torch.randn(2, channels, 5, 7)
    out = mixed(x, weights, g)
    assert tuple(out.shape) == (2, e, channels, 5, 7)
    ops_part = narrow(x[:, :cp], weights)
    for i in range(e):
        expected = channel_shuffle(torch.cat([ops_part[:, i], x[:, cp:]], dim=1), k)
        if g is not None:
            expected = g[i] * expected
        torch.testing.assert_close(out[:, i], expected)


def test_partial_mixed_op_ops_are_k_times_narrower() -> None:
    full, part = MixedOp(8, PRIMITIVES, 2), MixedOp(8, PRIMITIVES, 2, partial_channels=4)
    assert [m.num_features for m in part.modules() if isinstance(m, nn.BatchNorm2d)] == [
        m.num_features // 4 for m in full.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    assert part.ops[-1].conv.weight.shape == (2 * 2, 2, 5, 5)  # dil_conv_5x5 at C/K = 2


def test_partial_mixed_op_passes_other_channels_through_unchanged() -> None:
    """With only 'none' the op channels are zero and the rest is x, shuffled."""
    mixed = MixedOp(4, ("none", "skip_connect"), 2, partial_channels=2)
    x = torch.randn(1, 4, 3, 3)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = mixed(x, w)
    torch.testing.assert_close(out[:, 0, 0::2], torch.zeros(1, 2, 3, 3))
    torch.testing.assert_close(out[:, 0, 1::2], x[:, 2:])
    torch.testing.assert_close(out[:, 1], channel_shuffle(x, 2))  # identity on every channel


@pytest.mark.parametrize(("channels", "k"), [(6, 4), (3, 2)])
def test_partial_channels_must_divide_the_width(channels: int, k: int) -> None:
    with pytest.raises(ValueError, match=f"partial_channels={k} must divide the block width"):
        MixedOp(channels, PRIMITIVES, 2, partial_channels=k)
    with pytest.raises(ValueError, match="partial_channels must be a positive integer"):
        MixedOp(channels, PRIMITIVES, 2, partial_channels=0)


def test_edge_softmax_normalises_each_blocks_incoming_edges() -> None:
    logits = torch.randn(num_edges(4)) * 3
    w = edge_softmax(logits, 4)
    for block in range(4):
        rows = [edge_index(block, s) for s in range(block + 2)]
        torch.testing.assert_close(w[rows], torch.softmax(logits[rows], 0))
    with pytest.raises(ValueError, match=r"edge logits must have shape \(14,\) for B=4"):
        edge_softmax(torch.zeros(20), 4)


def test_partial_search_cell_shapes_and_gradients() -> None:
    b, c = 3, 8
    cell = SearchCell(c, b, PRIMITIVES, partial_channels=4)
    alpha = torch.randn(num_edges(b), len(PRIMITIVES), requires_grad=True)
    gamma = torch.randn(num_edges(b), requires_grad=True)
    s0 = torch.randn(2, c, 6, 5)
    s1 = torch.randn(4, c, 6, 5, requires_grad=True)  # two stacked directions
    out = cell(
        s0, s1, _state_weights(alpha.softmax(-1), b), _state_weights(edge_softmax(gamma, b), b)
    )
    assert tuple(out.shape) == (4, b * c, 6, 5)
    out.square().sum().backward()
    for t in (alpha, gamma, s1):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
