"""Tests of the candidate ops, their edge batching, the OPS registry and the ops' profiles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autodeeplab.ops import (
    OPS,
    PRIMITIVES,
    DilConv,
    Identity,
    OpSpec,
    Pool,
    ReLUConvBN,
    SepConv,
    Zero,
    channel_shuffle,
    op_spec,
    per_edge,
    resize,
)
from autodeeplab.space.cell import MixedOp
from autodeeplab.space.network import SearchNetwork

C = 3
PARAMETRIC = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def _expected_shape(name: str, stride: int, num_edges: int, n: int, h: int, w: int):
    hh, ww = (h, w) if stride == 1 else (math.ceil(h / 2), math.ceil(w / 2))
    op = OPS[name](C, stride, True, num_edges)
    shared = bool(getattr(op, "shared_across_edges", False))
    return (n, C if shared else num_edges * C, hh, ww), shared


def test_primitives_are_the_papers_eight_ops_in_darts_order() -> None:
    assert PRIMITIVES == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    )
    assert set(PRIMITIVES) <= set(OPS)


@pytest.mark.parametrize("num_edges", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("size", [(9, 7), (8, 8), (5, 11)])
def test_output_shape(name: str, stride: int, num_edges: int, size: tuple[int, int]) -> None:
    op = OPS[name](C, stride, True, num_edges)
    x = torch.randn(2, C, *size)
    y = op(x)
    expected, shared = _expected_shape(name, stride, num_edges, 2, *size)
    assert tuple(y.shape) == expected
    # Exactly the parameter-free ops are shared across edges.
    assert shared == (
        name in ("none", "max_pool_3x3", "avg_pool_3x3") or (name == "skip_connect" and stride == 1)
    )


@pytest.mark.parametrize("num_edges", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_gradients_reach_every_parameter_and_the_input(
    name: str, stride: int, num_edges: int
) -> None:
    op = OPS[name](C, stride, True, num_edges)
    x = torch.randn(2, C, 7, 9, requires_grad=True)
    y = op(x)
    if name == "none":
        # A constant: no graph, no parameters, nothing flows back.
        assert not y.requires_grad and list(op.parameters()) == []
        return
    (y * torch.randn_like(y)).sum().backward()
    params = list(op.parameters())
    parameter_free = name in ("none", "max_pool_3x3", "avg_pool_3x3") or (
        name == "skip_connect" and stride == 1
    )
    assert (params == []) == parameter_free
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("num_edges", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_deterministic(name: str, stride: int, num_edges: int) -> None:
    x = torch.randn(2, C, 9, 7)
    torch.manual_seed(5)
    a = OPS[name](C, stride, True, num_edges)
    torch.manual_seed(5)
    b = OPS[name](C, stride, True, num_edges)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    a.eval(), b.eval()
    ya = a(x)
    assert torch.equal(ya, a(x))
    assert torch.equal(ya, b(x))


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", [*PARAMETRIC, "skip_connect"])
def test_edge_batched_op_equals_single_ops_on_weight_slices(
    name: str, stride: int, train: bool, affine: bool, randomize, single_edge_copy
) -> None:
    """The key property of the batching: edge e of a batched op is an independent op."""
    e = 3
    batched = randomize(OPS[name](C, stride, affine, e))
    singles = [single_edge_copy(batched, OPS[name](C, stride, affine, 1), i, e) for i in range(e)]
    batched.train(train)
    for s in singles:
        s.train(train)
    x = torch.randn(2, C, 9, 7)
    y = batched(x)
    if getattr(batched, "shared_across_edges", False):
        ref = torch.cat([s(x) for s in singles], dim=1)
        assert torch.equal(ref, x.repeat(1, e, 1, 1))
        return
    ref = torch.cat([s(x) for s in singles], dim=1)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    if train:
        # Running statistics are updated per edge exactly as the single ops update theirs.
        for bn_name in [n for n, m in batched.named_modules() if isinstance(m, nn.BatchNorm2d)]:
            big = batched.get_submodule(bn_name)
            for i, s in enumerate(singles):
                small = s.get_submodule(bn_name)
                for buf in ("running_mean", "running_var"):
                    torch.testing.assert_close(
                        getattr(big, buf).chunk(e)[i], getattr(small, buf), rtol=1e-5, atol=1e-6
                    )
    # forward_relu on a ReLU'd input is the same function (MixedOp applies ReLU once).
    torch.testing.assert_close(batched.forward_relu(F.relu(x)), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("k", [3, 5])
def test_sepconv_parameter_count_matches_spec_formula(k: int, affine: bool) -> None:
    for c in (1, 4, 20):
        # docs/design.md §9.2: 2 x (dw k*k*C + pw C*C) conv weights, plus 2 BN x (gamma, beta) = 4C.
        expected = 2 * (k * k * c + c * c) + (4 * c if affine else 0)
        assert sum(p.numel() for p in SepConv(c, k, 1, affine).parameters()) == expected
        batched = SepConv(c, k, 2, affine, num_edges=3)
        assert sum(p.numel() for p in batched.parameters()) == 3 * expected


@pytest.mark.parametrize("k", [3, 5])
def test_dilconv_is_a_regular_conv_with_dilation_two(k: int) -> None:
    c = 4
    op = DilConv(c, k, 1, affine=True)
    # Regular (not separable) conv: k*k*C*C weights, BN gamma and beta.
    assert sum(p.numel() for p in op.parameters()) == k * k * c * c + 2 * c
    assert op.conv.dilation == (2, 2) and op.conv.groups == 1
    op_s2 = DilConv(c, k, 2, affine=True)
    assert op_s2.conv.dilation == (1, 1) and op_s2.conv.stride == (1, 1)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        DilConv(c, k, 3)


def test_dilconv_stride2_halves_bilinearly_then_convolves(randomize) -> None:
    op = randomize(DilConv(C, 3, 2, affine=True)).eval()
    x = torch.randn(1, C, 9, 7)
    small = F.interpolate(F.relu(x), size=(5, 4), mode="bilinear", align_corners=True)
    torch.testing.assert_close(op(x), op.bn(op.conv(small)))


def test_pools_use_same_padding_and_real_pixel_averages() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    avg = Pool("avg", 1)(x)
    # Corner: mean of the 2x2 real pixels {0, 1, 4, 5}, not divided by 9.
    assert avg[0, 0, 0, 0].item() == pytest.approx(2.5)
    assert avg[0, 0, 1, 1].item() == pytest.approx(5.0)
    mx = Pool("max", 2)(x)
    assert mx.tolist() == [[[[5.0, 7.0], [13.0, 15.0]]]]
    with pytest.raises(ValueError, match="'avg' or 'max'"):
        Pool("min")


def test_skip_is_identity_at_stride_one_and_relu_conv_bn_at_stride_two() -> None:
    x = torch.randn(2, C, 5, 5)
    ident = OPS["skip_connect"](C, 1, True, 3)
    assert isinstance(ident, Identity) and torch.equal(ident(x), x)
    strided = OPS["skip_connect"](C, 2, True, 1)
    assert isinstance(strided, ReLUConvBN)
    # a strided 1x1 conv: every second pixel, convolved at stride 1
    assert strided.conv.kernel_size == (1, 1) and strided.subsample == 2
    want = strided.bn(F.conv2d(F.relu(x), strided.conv.weight, stride=2))
    torch.testing.assert_close(strided(x), want)


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_gives_zeros_of_the_output_shape(stride: int) -> None:
    x = torch.randn(2, C, 9, 7)
    y = Zero(stride)(x)
    assert tuple(y.shape) == ((2, C, 9, 7) if stride == 1 else (2, C, 5, 4))
    assert torch.count_nonzero(y) == 0


@pytest.mark.parametrize(("channels", "groups"), [(12, 4), (8, 2), (6, 3), (5, 1)])
def test_channel_shuffle_is_the_interleaving_permutation(channels: int, groups: int) -> None:
    x = torch.arange(float(channels)).view(1, channels, 1, 1).expand(2, -1, 3, 4)
    out = channel_shuffle(x, groups)
    order = out[0, :, 0, 0].long().tolist()
    assert sorted(order) == list(range(channels))  # a permutation: nothing lost or repeated
    per = channels // groups
    assert order == [g * per + j for j in range(per) for g in range(groups)]
    torch.testing.assert_close(out, x[:, order])  # moves whole channels, every pixel
    if groups > 1:  # group 0 (the ops' channels in PC-DARTS) lands on every groups-th one
        assert order[::groups] == list(range(per))


def test_channel_shuffle_rejects_uneven_groups() -> None:
    with pytest.raises(ValueError, match="6 channels do not split into 4 groups"):
        channel_shuffle(torch.zeros(1, 6, 2, 2), 4)


def test_resize_is_a_noop_at_the_same_size() -> None:
    x = torch.randn(1, 2, 5, 6)
    assert resize(x, (5, 6)) is x
    assert tuple(resize(x, (9, 11)).shape) == (1, 2, 9, 11)


# -- per_edge and user-added ops -------------------------------------------------------------


class _Scale(nn.Module):
    """A user op of one edge: a learnable per-channel scale (no ReLU, no batching)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.scale = nn.Parameter(torch.randn(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale)[..., :: self.stride, :: self.stride]


def test_per_edge_lifts_a_single_edge_factory() -> None:
    factory = per_edge(lambda c, stride, affine: _Scale(c, stride))
    single = factory(C, 1, False, 1)
    assert isinstance(single, _Scale)
    torch.manual_seed(0)
    lifted = factory(C, 2, False, 3)
    x = torch.randn(2, C, 9, 7)
    y = lifted(x)
    assert tuple(y.shape) == (2, 3 * C, 5, 4)
    ref = torch.cat([(x * s.scale)[..., ::2, ::2] for s in lifted.edges], dim=1)
    torch.testing.assert_close(y, ref)
    assert sum(p.numel() for p in lifted.parameters()) == 3 * C
    assert not lifted.shared_across_edges and not lifted.pre_relu


def test_user_added_op_is_usable_in_mixed_op_and_search_network(monkeypatch, make_net) -> None:
    monkeypatch.setitem(OPS, "scale", per_edge(lambda c, stride, affine: _Scale(c, stride)))
    prims = ("none", "skip_connect", "scale")
    mixed = MixedOp(C, prims, num_edges=3)
    x = torch.randn(2, C, 5, 6)
    w = torch.softmax(torch.randn(3, 3), dim=-1)
    out = mixed(x, w)
    scale_op = mixed.ops[1]
    for e in range(3):
        ref = w[e, 1] * x + w[e, 2] * (x * scale_op.edges[e].scale)
        torch.testing.assert_close(out[:, e], ref)

    net = make_net(num_layers=2, primitives=prims, strides=(4, 8))
    y = net(torch.randn(2, 3, 17, 19))
    assert tuple(y.shape) == (2, 3, 17, 19)
    y.sum().backward()
    scales = [p for n, p in net.named_parameters() if n.endswith(".scale")]
    assert scales and all(p.grad is not None and p.grad.abs().sum() > 0 for p in scales)
    assert net.alpha.shape == (5, 3)
    assert net.genotype().cell[0][0][0] in ("skip_connect", "scale")

    monkeypatch.undo()
    assert "scale" not in OPS
    with pytest.raises(ValueError, match="unknown ops"):
        SearchNetwork(3, 1, 1, 1, strides=(4,), primitives=("scale",))


# -- cost and memory profiles -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_declares_a_cost_and_a_memory_profile(name: str) -> None:
    # An op added to OPS without its profile (a bare factory) fails here by name.
    spec = OPS[name]
    assert isinstance(spec, OpSpec), f"OPS[{name!r}] is not an OpSpec with cost and memory"
    assert callable(spec.madds) and callable(spec.weights) and spec.batchnorms >= 0
    memory = spec.memory
    assert callable(memory.saved) and callable(memory.largest) and callable(memory.output)
    assert op_spec(name) is spec


def test_an_op_without_a_profile_is_refused_by_name(monkeypatch) -> None:
    monkeypatch.setitem(OPS, "bare", lambda c, stride, affine, e: Identity())
    with pytest.raises(ValueError, match="'bare' in OPS is a bare factory; register it as OpSpec"):
        op_spec("bare")
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        op_spec("nope")


def _counted_madds(op: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of ``op``, as model.complexity counts them (FLOPs / 2)."""
    op = op.to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        op(torch.empty(shape, device="meta"))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("size", [(9, 7), (8, 8)])
def test_multiply_adds_profile_equals_the_flop_counter(
    name: str, stride: int, size: tuple[int, int]
) -> None:
    c = 6
    out = (size[0], size[1]) if stride == 1 else ((size[0] + 1) // 2, (size[1] + 1) // 2)
    counted = _counted_madds(OPS[name](c, stride, True, 1), (1, c, *size))
    assert OPS[name].madds(c, stride, out[0] * out[1]) == counted


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("num_edges", [1, 3])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_weight_profile_equals_the_built_op(name: str, num_edges: int, affine: bool) -> None:
    c, spec = 6, OPS[name]
    op = spec(c, 1, affine, num_edges)
    bn = [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = sum(p.numel() for m in op.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    assert convs == num_edges * spec.weights(c)
    assert sum(m.num_features for m in bn) == num_edges * spec.batchnorms * c
    affine_params = sum(p.numel() for m in bn for p in m.parameters())
    assert affine_params == (2 * num_edges * spec.batchnorms * c if affine else 0)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_a_strided_pointwise_relu_conv_bn_is_the_strided_conv(size: tuple[int, int]) -> None:
    """ReLUConvBN subsamples, then convolves at stride 1: the strided 1x1 conv's numbers."""
    from autodeeplab.ops import ReLUConvBN

    torch.manual_seed(0)
    op = ReLUConvBN(6, 5, 1, 2, affine=True).eval()
    x = torch.randn(2, 6, *size)
    want = op.bn(torch.nn.functional.conv2d(torch.relu(x), op.conv.weight, stride=2))
    got = op(x)
    assert got.shape == (2, 5, (size[0] + 1) // 2, (size[1] + 1) // 2)
    torch.testing.assert_close(got, want)


def test_channels_last_training_of_a_narrow_reduction_cell_survives() -> None:
    """oneDNN's channels-last strided 1x1 backward corrupted the heap for 2-7 channels on AVX2
    CPUs and killed the process; run in a child so that a crash fails this test only."""
    code = """
import torch
from autodeeplab.genotype import Genotype
from autodeeplab.model.cell import Cell
g = Genotype.from_dict({"cell": [[["skip_connect", 0], ["skip_connect", 1]]], "path": [0]})
cell = Cell(g, 4, 4, 4, stride=2).to(memory_format=torch.channels_last)
x = torch.randn(2, 4, 16, 16).contiguous(memory_format=torch.channels_last)
for _ in range(20):
    cell(x, x).sum().backward()
print("survived")
"""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]
