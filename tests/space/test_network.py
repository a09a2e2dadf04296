"""Tests of the supernet: trellis layout, beta normalisation, forward, gradients, steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.cell import SearchCell, edge_index, edge_softmax, num_edges, state_edges
from autodeeplab.space.cost import CostModel
from autodeeplab.space.decode import decode
from autodeeplab.space.network import (
    SearchNetwork,
    beta_mask,
    beta_probabilities,
    cell_decode_weights,
)
from autodeeplab.trellis import levels_at


def _expected_edges(num_layers: int, num_levels: int) -> set[tuple[int, int, int]]:
    """(row, source level, direction) of every trellis edge, by the +-1 rule from the stem."""
    nodes = [[0]] + [list(range(min(layer, num_levels - 1) + 1)) for layer in range(1, 99)]
    edges = set()
    for row in range(num_layers):
        for src in nodes[row]:
            for dst in nodes[row + 1]:
                if abs(dst - src) <= 1:
                    edges.add((row, src, dst - src + 1))
    return edges


# -- layout -----------------------------------------------------------------------------------


def test_levels_at() -> None:
    assert [levels_at(layer, 4) for layer in range(5)] == [
        [0],
        [0, 1],
        [0, 1, 2],
        [0, 1, 2, 3],
        [0, 1, 2, 3],
    ]
    assert levels_at(-1, 4) == [-1]  # the stem's stride-2 output
    assert levels_at(7, 2) == [0, 1]


def test_paper_size_trellis_has_45_cells_and_105_beta_edges(make_net) -> None:
    net = make_net(num_classes=2, num_layers=12, num_blocks=1, filter_multiplier=1)
    levels = [[node.level for node in layer] for layer in net.layers]
    assert levels == [[0, 1], [0, 1, 2]] + [[0, 1, 2, 3]] * 10
    assert sum(len(layer) for layer in net.layers) == 45
    assert net.beta.shape == (12, 4, 3)
    assert int(net.beta_mask.sum()) == 105
    assert int(beta_mask(12, 4).sum()) == 105
    assert net.alpha.shape == (1 * 4 // 2, 8)  # B=1: 2 edges x 8 ops
    assert len(net.heads) == 4
    # Sources of each node: its existing neighbours at the previous layer.
    sources = {
        (layer, node.level): node.sources
        for layer, nodes in enumerate(net.layers, 1)
        for node in nodes
    }
    assert sources[1, 0] == [0] and sources[1, 1] == [0]
    assert sources[2, 2] == [1] and sources[3, 3] == [2]
    assert sources[5, 0] == [0, 1] and sources[5, 1] == [0, 1, 2] and sources[5, 3] == [2, 3]


@pytest.mark.parametrize(("num_layers", "num_levels"), [(1, 4), (3, 2), (4, 4), (12, 4), (6, 3)])
def test_beta_mask_matches_independent_edge_enumeration(num_layers: int, num_levels: int) -> None:
    mask = beta_mask(num_layers, num_levels)
    got = {tuple(idx) for idx in mask.nonzero().tolist()}
    assert got == _expected_edges(num_layers, num_levels)


def test_channels_follow_bfs_over_4(tiny_net: SearchNetwork) -> None:
    # B=2, F=2: a node at level l outputs B * F * 2^l = 4, 8, 16, 32 channels.
    feats = {}

    def hook(level):
        def record(module, inp, out) -> None:
            feats[level] = out.shape

        return record

    for node in tiny_net.layers[-1]:
        node.cell.register_forward_hook(hook(node.level))
    tiny_net(torch.randn(2, 3, 64, 64))
    assert {lv: s[1] for lv, s in feats.items()} == {0: 4, 1: 8, 2: 16, 3: 32}
    assert {lv: tuple(s[-2:]) for lv, s in feats.items()} == {
        0: (16, 16),
        1: (8, 8),
        2: (4, 4),
        3: (2, 2),
    }


def test_missing_prev_prev_uses_nearest_level_of_layer_l_minus_2(make_net) -> None:
    net = make_net(num_layers=4)
    pp = {
        (layer, node.level): (node.prev_prev_level, node.pre_prev.level_delta)
        for layer, nodes in enumerate(net.layers, 1)
        for node in nodes
    }
    # Layer 1 reads the stem's stride-2 output (level -1), brought down by strided convs.
    assert pp[1, 0] == (-1, 1) and pp[1, 1] == (-1, 2)
    # Layer 2 reads the stem's stride-4 output; level 2 needs two stride-2 convs.
    assert pp[2, 0] == (0, 0) and pp[2, 1] == (0, 1) and pp[2, 2] == (0, 2)
    # Layer 3, level 3 does not exist at layer 1: nearest is level 1.
    assert pp[3, 2] == (1, 1)
    assert pp[3, 3] == (1, 2)
    assert pp[4, 3] == (2, 1) and pp[4, 1] == (1, 0)
    # Cell width F * s / 4 per block.
    assert {node.level: node.cell.channels for node in net.layers[-1]} == {0: 2, 1: 4, 2: 8, 3: 16}


def test_search_heads_use_rate_96_over_s(tiny_net: SearchNetwork) -> None:
    rates = [head.atrous[0].dilation for head in tiny_net.heads]
    assert rates == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert [head.classifier.out_channels for head in tiny_net.heads] == [3, 3, 3, 3]


def test_forward_equals_reference_trellis(make_net) -> None:
    """Eq. 6 written out per direction with the network's own modules (eval mode)."""
    net = make_net(num_layers=4, strides=(4, 8, 16)).eval()
    with torch.no_grad():
        net.alpha.normal_(0, 1)
        net.beta.normal_(0, 1)
    x = torch.randn(2, 3, 37, 29)
    alpha_w, beta_w = net.alpha_weights(), net.beta_weights()
    state_weights = SearchCell.split_weights(
        alpha_w, [torch.tensor(state_edges(s, net.num_blocks)) for s in range(net.num_blocks + 1)]
    )
    with torch.no_grad():
        stem0, stem1 = net.stem(x)
        sizes = [tuple(stem1.shape[-2:])]
        for _ in range(2):
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        prev2, prev = {-1: stem0}, {0: stem1}
        for layer, nodes in enumerate(net.layers, 1):
            cur = {}
            for node in nodes:
                size = sizes[node.level]
                s0 = node.pre_prev(prev2[node.prev_prev_level], size)
                total = 0
                for pre, src in zip(node.pre, node.sources, strict=True):
                    weight = beta_w[layer - 1, src, node.level - src + 1]
                    assert weight > 0
                    total = total + weight * node.cell(s0, pre(prev[src], size), state_weights)
                cur[node.level] = total
            prev2, prev = prev, cur
        expected = sum(
            F.interpolate(head(prev[lv]), size=(37, 29), mode="bilinear", align_corners=False)
            for lv, head in enumerate(net.heads)
        )
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)


# -- alpha and beta ---------------------------------------------------------------------------


def test_alpha_and_beta_init_is_small_gaussian(tiny_net: SearchNetwork) -> None:
    assert tiny_net.alpha.shape == (num_edges(2), len(PRIMITIVES))
    assert tiny_net.alpha.abs().max() < 1e-2 and tiny_net.alpha.abs().max() > 0
    assert tiny_net.beta.abs().max() < 1e-2


def test_alpha_weights_rows_sum_to_one(tiny_net: SearchNetwork) -> None:
    with torch.no_grad():
        tiny_net.alpha.normal_(0, 3)
    w = tiny_net.alpha_weights()
    torch.testing.assert_close(w.sum(-1), torch.ones(num_edges(2)))
    torch.testing.assert_close(w, torch.softmax(tiny_net.alpha, -1))


def test_beta_weights_normalise_outgoing_edges(make_net) -> None:
    net = make_net(num_layers=5)
    with torch.no_grad():
        net.beta.normal_(0, 2)
    w = net.beta_weights().detach()
    mask = beta_mask(5, 4)
    assert torch.count_nonzero(w[~mask]) == 0  # missing edges are 0
    for row in range(5):
        for src in range(4):
            n_out = int(mask[row, src].sum())
            if src in levels_at(row, 4):
                # Every existing node's outgoing probabilities sum to 1.
                assert w[row, src].sum().item() == pytest.approx(1.0, abs=1e-6)
                assert torch.all(w[row, src][mask[row, src]] > 0)
                expected_out = 2 if src in (0, 3) else 3
                assert n_out == expected_out, (row, src)
            else:
                assert n_out == 0 and w[row, src].sum() == 0
    # The stem (row 0) has exactly 4->4 and 4->8.
    assert mask[0].tolist() == [[False, True, True]] + [[False] * 3] * 3
    # Border node at level 3 softmaxes over its 2 existing edges only.
    torch.testing.assert_close(w[4, 3, :2], torch.softmax(net.beta[4, 3, :2].detach(), -1))
    # Incoming weights of a node (layer 3, level 1; from levels 0, 1, 2) do not sum to 1.
    incoming = w[2, 0, 2] + w[2, 1, 1] + w[2, 2, 0]
    assert abs(incoming.item() - 1.0) > 1e-3


def test_beta_probabilities_equals_beta_weights(tiny_net: SearchNetwork) -> None:
    with torch.no_grad():
        tiny_net.beta.normal_(0, 2)
    torch.testing.assert_close(beta_probabilities(tiny_net.beta, 4), tiny_net.beta_weights())
    with pytest.raises(ValueError, match=r"beta must have shape \(L, 3, 3\)"):
        beta_probabilities(tiny_net.beta, 3)
    with pytest.raises(ValueError, match="beta must have shape"):
        beta_probabilities(torch.zeros(4, 3), 4)


def test_beta_weights_have_finite_gradients_on_missing_rows(tiny_net: SearchNetwork) -> None:
    tiny_net.beta_weights().sum().backward()
    assert torch.isfinite(tiny_net.beta.grad).all()


def test_arch_and_weight_parameters_partition_all_parameters(tiny_net: SearchNetwork) -> None:
    arch = tiny_net.arch_parameters()
    weights = tiny_net.weight_parameters()
    assert arch[0] is tiny_net.alpha and arch[1] is tiny_net.beta and len(arch) == 2
    arch_ids, weight_ids = {id(p) for p in arch}, {id(p) for p in weights}
    assert not arch_ids & weight_ids
    assert arch_ids | weight_ids == {id(p) for p in tiny_net.parameters()}
    assert len(weights) == len(list(tiny_net.parameters())) - 2


# -- forward and gradients --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strides", "size"),
    [
        ((4, 8, 16, 32), (33, 47)),
        ((4, 8, 16, 32), (64, 64)),
        ((4, 8, 16, 32), (65, 65)),
        ((4, 8), (33, 47)),
        ((4, 8, 16), (65, 31)),
        ((4,), (20, 21)),
    ],
)
def test_forward_shape(make_net, strides, size) -> None:
    net = make_net(num_layers=3, strides=strides)
    y = net(torch.randn(2, 3, *size))
    assert tuple(y.shape) == (2, 3, *size)
    assert torch.isfinite(y).all()
    assert net.beta.shape == (3, len(strides), 3)
    assert len(net.heads) == len(strides)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_forward_with_fewer_layers_than_levels(make_net, num_layers: int) -> None:
    net = make_net(num_layers=num_layers)
    assert len(net.heads) == num_layers + 1  # only the levels the last layer reaches
    assert tuple(net(torch.randn(2, 3, 33, 35)).shape) == (2, 3, 33, 35)


def test_gradients_reach_alpha_beta_and_every_weight(tiny_net: SearchNetwork) -> None:
    x, target = torch.randn(2, 3, 33, 47), torch.randint(0, 3, (2, 33, 47))
    F.cross_entropy(tiny_net(x), target).backward()
    for name, p in tiny_net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    mask = tiny_net.beta_mask
    assert torch.count_nonzero(tiny_net.beta.grad[~mask]) == 0
    assert torch.count_nonzero(tiny_net.beta.grad[mask]) == int(mask.sum())
    # Every op column of alpha, 'none' included (through the softmax), gets a gradient.
    assert torch.count_nonzero(tiny_net.alpha.grad) == tiny_net.alpha.numel()


def test_output_is_deterministic_for_a_seed(make_net) -> None:
    x = torch.randn(2, 3, 33, 35)
    a, b, c = make_net(seed=3), make_net(seed=3), make_net(seed=4)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    assert not torch.allclose(ya, c(x))
    a.eval()
    torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)


def test_eq6_output_depends_on_beta(tiny_net: SearchNetwork) -> None:
    tiny_net.eval()
    x = torch.randn(1, 3, 32, 32)
    y0 = tiny_net(x)
    with torch.no_grad():
        tiny_net.beta[2, 1].copy_(torch.tensor([5.0, -5.0, 0.0]))
    assert not torch.allclose(y0, tiny_net(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"primitives": ("none", "conv_9x9")}, r"unknown ops \['conv_9x9'\]; known ops: none"),
        ({"primitives": ("skip_connect", "skip_connect")}, "primitives has duplicates"),
        ({"primitives": ("none",)}, "at least one op other than 'none'"),
        ({"strides": (4, 16)}, r"strides must be consecutive doublings from 4 .* got \[4, 16\]"),
        ({"strides": (8, 16)}, "strides must be consecutive doublings"),
        ({"strides": (4, 8, 8)}, "strides must be consecutive doublings"),
        ({"strides": ()}, "strides must be consecutive doublings"),
        ({"num_layers": 0}, "num_layers must be a positive integer, got 0"),
        ({"num_blocks": -1}, "num_blocks must be a positive integer"),
        ({"filter_multiplier": 2.0}, "filter_multiplier must be a positive integer, got 2.0"),
        ({"num_classes": True}, "num_classes must be a positive integer, got True"),
    ],
)
def test_invalid_constructor_arguments(make_net, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_net(**kwargs)


# -- the bi-level steps -----------------------------------------------------------------------


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _loss(net: SearchNetwork) -> torch.Tensor:
    x, target = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    return F.cross_entropy(net(x), target)


def test_weight_step_leaves_alpha_and_beta_unchanged(tiny_net: SearchNetwork) -> None:
    arch, weights = tiny_net.arch_parameters(), tiny_net.weight_parameters()
    arch0, weights0 = _snapshot(arch), _snapshot(weights)
    opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9, weight_decay=3e-4)
    _loss(tiny_net).backward(inputs=weights)
    assert all(p.grad is None for p in arch)
    opt.step()
    for p, p0 in zip(arch, arch0, strict=True):
        assert torch.equal(p, p0)
    changed = [not torch.equal(p, p0) for p, p0 in zip(weights, weights0, strict=True)]
    assert all(changed)


def test_arch_step_leaves_weights_unchanged(tiny_net: SearchNetwork) -> None:
    arch, weights = tiny_net.arch_parameters(), tiny_net.weight_parameters()
    arch0, weights0 = _snapshot(arch), _snapshot(weights)
    opt = torch.optim.Adam(arch, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    _loss(tiny_net).backward(inputs=arch)
    assert all(p.grad is None for p in weights)
    opt.step()
    for p, p0 in zip(weights, weights0, strict=True):
        assert torch.equal(p, p0)
    assert not torch.equal(tiny_net.alpha, arch0[0])
    assert not torch.equal(tiny_net.beta, arch0[1])


# -- genotype ---------------------------------------------------------------------------------


def test_genotype_agrees_with_decode(tiny_net: SearchNetwork) -> None:
    with torch.no_grad():
        tiny_net.alpha.normal_(0, 1)
        tiny_net.beta.normal_(0, 1)
    g = tiny_net.genotype()
    assert g == decode(tiny_net.alpha_weights(), tiny_net.beta_weights(), PRIMITIVES, 2)
    assert g.num_blocks == 2 and g.num_layers == 4


def test_checkpointed_cells_give_the_same_loss_and_gradients() -> None:
    torch.manual_seed(0)
    kwargs = dict(num_layers=3, num_blocks=2, filter_multiplier=2, strides=(4, 8, 16))
    plain = SearchNetwork(3, **kwargs)
    ckpt = SearchNetwork(3, checkpoint_cells=True, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 33, 33)
    y = torch.randint(0, 3, (2, 33, 33))
    grads = []
    for net in (plain, ckpt):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The recomputation in the backward pass leaves the BatchNorm statistics alone.
    for a, b in zip(plain.buffers(), ckpt.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(
        m.num_batches_tracked.item() == 1
        for m in ckpt.modules()
        if hasattr(m, "num_batches_tracked")
    )


# -- partial channels (PC-DARTS) --------------------------------------------------------------


def test_without_partial_channels_there_is_no_edge_parameter(tiny_net: SearchNetwork) -> None:
    assert tiny_net.partial_channels == 1 and tiny_net.gamma is None
    assert tiny_net.edge_weights() is None
    assert "gamma" not in tiny_net.state_dict()
    torch.testing.assert_close(tiny_net.cell_weights(), tiny_net.alpha_weights(), rtol=0, atol=0)


def test_partial_channels_forward_backward_reach_alpha_beta_and_edge_weights(make_net) -> None:
    net = make_net(filter_multiplier=4, partial_channels=4)
    assert net.gamma is not None and net.gamma.shape == (num_edges(2),)
    assert net.arch_parameters() == [net.alpha, net.beta, net.gamma]
    arch_ids = {id(p) for p in net.arch_parameters()}
    weights = net.weight_parameters()
    assert not arch_ids & {id(p) for p in weights}
    assert len(weights) + 3 == len(list(net.parameters()))
    # Every op of a level-0 cell (width F = 4) runs on F / K = 1 channel.
    assert net.layers[0][0].cell.mixed[0].ops[-1].conv.in_channels == 1
    x, target = torch.randn(2, 3, 33, 47), torch.randint(0, 3, (2, 33, 47))
    y = net(x)
    assert tuple(y.shape) == (2, 3, 33, 47) and torch.isfinite(y).all()
    F.cross_entropy(y, target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.count_nonzero(net.gamma.grad) == net.gamma.numel()
    assert torch.count_nonzero(net.beta.grad[net.beta_mask]) == int(net.beta_mask.sum())


def test_partial_channels_state_dict_round_trip(make_net) -> None:
    a = make_net(filter_multiplier=4, partial_channels=2)
    b = make_net(seed=1, filter_multiplier=4, partial_channels=2)
    with torch.no_grad():
        a.gamma.normal_(0, 1)
    assert "gamma" in a.state_dict()
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.gamma, a.gamma)
    x = torch.randn(1, 3, 32, 32)
    a.eval()
    b.eval()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_partial_channels_must_divide_the_filter_multiplier(make_net) -> None:
    with pytest.raises(ValueError, match=r"partial_channels=4 must divide the block width.*F"):
        make_net(filter_multiplier=6, partial_channels=4)
    with pytest.raises(ValueError, match="partial_channels must be a positive integer"):
        make_net(partial_channels=0)


def test_decode_with_edge_normalisation_ranks_edges_by_combined_weight(make_net) -> None:
    """Block 1 (edges from s0, s1, block 0): op weights favour s0, edge weights favour s1."""
    net = make_net(filter_multiplier=2, partial_channels=2)
    sep = PRIMITIVES.index("sep_conv_3x3")
    with torch.no_grad():
        net.alpha.zero_()
        net.gamma.zero_()
        net.alpha[edge_index(1, 0), sep] = 4.0  # max op weight ~0.89
        net.alpha[edge_index(1, 1), sep] = 2.0  # ~0.51
        net.gamma[edge_index(1, 1)] = 3.0  # edge weights ~0.05 / 0.90 / 0.05
    plain = decode(net.alpha_weights(), net.beta_weights(), PRIMITIVES, 2)
    assert plain.cell[1][0] == ("sep_conv_3x3", 0)
    combined = net.cell_weights()
    torch.testing.assert_close(
        combined, net.alpha_weights() * edge_softmax(net.gamma, 2).unsqueeze(-1)
    )
    torch.testing.assert_close(combined, cell_decode_weights(net.alpha, net.gamma, 2))
    g = net.genotype()
    assert g.cell[1][0] == ("sep_conv_3x3", 1)  # 0.90 * 0.51 > 0.05 * 0.89
    assert g == decode(combined, net.beta_weights(), PRIMITIVES, 2)


def test_partial_channels_with_checkpointed_cells_gives_the_same_gradients(make_net) -> None:
    kwargs = dict(num_layers=3, strides=(4, 8, 16), filter_multiplier=4, partial_channels=4)
    plain = make_net(**kwargs)
    ckpt = make_net(checkpoint_cells=True, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    x, y = torch.randn(2, 3, 33, 33), torch.randint(0, 3, (2, 33, 33))
    grads = []
    for net in (plain, ckpt):
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cost_model_works_on_a_partial_channel_supernet(make_net) -> None:
    """The cost prices the retrain network: it reads alpha and beta as with K = 1."""
    net = make_net(filter_multiplier=4, partial_channels=4)
    cost = CostModel(4, 2, PRIMITIVES, 4, 3, 20, (64, 64))
    value = cost.expected(net.alpha_weights(), net.beta_weights())
    assert torch.isfinite(value) and value > 0
    value.backward()
    assert net.alpha.grad is not None and net.beta.grad is not None
