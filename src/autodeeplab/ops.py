"""Candidate operations of the Auto-DeepLab cell, and their cost and memory profiles.

Paper §3.1 lists eight ops; their exact forms come from the official TF retrain code
(docs/design.md §1.1, confirmed by the parameter oracle of §9):

- ``sep_conv_kxk``: (ReLU -> depthwise kxk -> pointwise 1x1 -> BN) applied twice; with
  stride 2 only the first depthwise conv is strided.
- ``dil_conv_kxk``: ReLU -> a *regular* (not separable) kxk conv with dilation 2 -> BN; with
  stride 2 the input is bilinearly halved first and a rate-1 conv follows.
- ``avg_pool_3x3`` / ``max_pool_3x3``: 'SAME' padding, no parameters.
- ``skip_connect``: identity; with stride 2, ReLU -> strided 1x1 conv -> BN.
- ``none``: the zero op.

One implementation serves the supernet and the discrete network (``num_edges=1``). An op
evaluates the ``num_edges`` edges that read one hidden state at once, their weights stacked
along the output channels as one grouped convolution: ``(N, num_edges * C, H', W')``,
edge-major. Parameter-free ops (``shared_across_edges``) return ``(N, C, H', W')`` once.

``OPS`` maps an op name to an :class:`OpSpec`: the factory ``(channels, stride, affine,
num_edges) -> Module`` beside the op's cost (Multi-Adds, weights) and memory (activations)
profile, which the cost model and the memory estimate read. Users extend the vocabulary by
adding an entry (tests/test_ops.py checks every entry has both profiles); :func:`per_edge`
lifts a factory that only knows single edges. :func:`channel_shuffle` serves the search
cell's partial-channel (PC-DARTS) mixed ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PRIMITIVES", "OPS", "OpFactory", "OpMemory", "OpSpec", "SepConv", "DilConv", "Pool",
    "Identity", "Zero", "ReLUConvBN", "channel_shuffle", "op_spec", "per_edge", "resize",
]  # fmt: skip

#: The paper's eight candidate ops, in the DARTS order that genotypes of every
#: DARTS-family implementation index (0 = none ... 7 = dil_conv_5x5).
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

OpFactory = Callable[[int, int, bool, int], nn.Module]


def resize(x: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = False) -> Tensor:
    """Bilinearly resize ``x`` (N, C, H, W) to ``size``; a no-op when it already has it."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the ``groups`` channel groups of ``x`` (N, C, ...): out[j*G+g] = in[g*C/G+j].

    ShuffleNet's shuffle, which PC-DARTS applies after a partial-channel mixed op so that
    the channels that skipped the ops on one edge are among those the next one runs.
    """
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels do not split into {groups} groups")
    return x.reshape(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def _halved(size: torch.Size) -> tuple[int, int]:
    """Spatial size after a 'SAME' stride-2 op: ceil(d / 2)."""
    return ((size[0] + 1) // 2, (size[1] + 1) // 2)


class _EdgeOp(nn.Module):
    """Base of ops that begin with a ReLU, so a cell can apply that ReLU once for all ops."""

    pre_relu = True
    shared_across_edges = False

    def forward(self, x: Tensor) -> Tensor:
        """Apply the op to ``x`` (N, C, H, W)."""
        return self.forward_relu(F.relu(x))

    def forward_relu(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Apply the op to an input that has already been through ReLU."""
        raise NotImplementedError


class SepConv(_EdgeOp):
    """Depthwise-separable conv applied twice: 2 x (ReLU, dw kxk, pw 1x1, BN)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        stride: int = 1,
        affine: bool = True,
        num_edges: int = 1,
    ) -> None:
        super().__init__()
        c, e, pad = channels, num_edges, kernel_size // 2
        self.num_edges = e
        # Each edge gets its own depthwise filters, so the input is repeated once per edge
        # and every (edge, channel) pair becomes one depthwise group.
        self.dw1 = nn.Conv2d(e * c, e * c, kernel_size, stride, pad, groups=e * c, bias=False)
        self.pw1 = nn.Conv2d(e * c, e * c, 1, groups=e, bias=False)
        self.bn1 = nn.BatchNorm2d(e * c, affine=affine)
        self.dw2 = nn.Conv2d(e * c, e * c, kernel_size, 1, pad, groups=e * c, bias=False)
        self.pw2 = nn.Conv2d(e * c, e * c, 1, groups=e, bias=False)
        self.bn2 = nn.BatchNorm2d(e * c, affine=affine)

    def forward_relu(self, x: Tensor) -> Tensor:
        """(N, C, H, W) after ReLU -> (N, E*C, H', W')."""
        if self.num_edges > 1:
            x = x.repeat(1, self.num_edges, 1, 1)
        x = self.bn1(self.pw1(self.dw1(x)))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class DilConv(_EdgeOp):
    """Atrous conv: ReLU, regular kxk conv at dilation 2, BN (stride 2: halve, then rate 1)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        stride: int = 1,
        affine: bool = True,
        num_edges: int = 1,
        dilation: int = 2,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"DilConv supports stride 1 or 2, got {stride}")
        self.stride = stride
        # The official code halves the input bilinearly and then runs a rate-1 conv
        # instead of a strided dilated conv (docs/design.md §1.1).
        rate = 1 if stride == 2 else dilation
        self.conv = nn.Conv2d(
            channels,
            num_edges * channels,
            kernel_size,
            padding=rate * (kernel_size // 2),
            dilation=rate,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(num_edges * channels, affine=affine)

    def forward_relu(self, x: Tensor) -> Tensor:
        """(N, C, H, W) after ReLU -> (N, E*C, H', W')."""
        if self.stride == 2:
            x = resize(x, _halved(x.shape[-2:]), align_corners=True)
        return self.bn(self.conv(x))


class Pool(nn.Module):
    """3x3 average or max pooling with 'SAME' padding; identical on every edge."""

    pre_relu = False
    shared_across_edges = True

    def __init__(self, kind: str, stride: int = 1) -> None:
        super().__init__()
        if kind not in ("avg", "max"):
            raise ValueError(f"pool kind must be 'avg' or 'max', got {kind!r}")
        self.kind, self.stride = kind, stride

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H', W')."""
        if self.kind == "avg":
            # TF 'SAME' average pooling divides by the number of real pixels.
            return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)
        return F.max_pool2d(x, 3, self.stride, 1)


class Identity(nn.Module):
    """Skip connection; identical on every edge."""

    pre_relu = False
    shared_across_edges = True

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` unchanged."""
        return x


class Zero(nn.Module):
    """The 'no connection' op: zeros of the output shape. A search cell never runs it."""

    pre_relu = False
    shared_across_edges = True
    is_zero = True

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """Zeros shaped like the op's output."""
        if self.stride == 1:
            return torch.zeros_like(x)
        return x.new_zeros(*x.shape[:2], *_halved(x.shape[-2:]))


class ReLUConvBN(_EdgeOp):
    """ReLU -> kxk conv -> BN; with ``num_edges`` the conv maps to ``num_edges * C_out``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        affine: bool = True,
        num_edges: int = 1,
    ) -> None:
        super().__init__()
        # A strided 1x1 conv = subsample, then convolve at stride 1: the same numbers, and clear
        # of oneDNN's channels-last strided 1x1 backward, which corrupts the heap for 2-7
        # channels on AVX2 CPUs (torch 2.13; tests/test_ops.py).
        self.subsample = stride if kernel_size == 1 else 1
        self.conv = nn.Conv2d(
            in_channels,
            num_edges * out_channels,
            kernel_size,
            stride // self.subsample,
            kernel_size // 2,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(num_edges * out_channels, affine=affine)

    def forward_relu(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) after ReLU -> (N, E*C_out, H', W')."""
        if self.subsample > 1:
            x = x[..., :: self.subsample, :: self.subsample]
        return self.bn(self.conv(x))


def _skip(channels: int, stride: int, affine: bool, num_edges: int) -> nn.Module:
    """Identity at stride 1; the official code's ReLU -> strided 1x1 conv -> BN at stride 2."""
    if stride == 1:
        return Identity()
    return ReLUConvBN(channels, channels, 1, stride, affine, num_edges)


class _PerEdge(nn.Module):
    """Runs one single-edge module per edge and concatenates their outputs (edge-major)."""

    pre_relu = False
    shared_across_edges = False

    def __init__(self, edges: list[nn.Module]) -> None:
        super().__init__()
        self.edges = nn.ModuleList(edges)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, E*C, H', W')."""
        return torch.cat([edge(x) for edge in self.edges], dim=1)


def per_edge(single: Callable[[int, int, bool], nn.Module]) -> OpFactory:
    """Lift a factory ``(channels, stride, affine) -> Module`` of one edge to an edge factory.

    Use it to add an op that has no edge-batched form (correct, only slower), as the
    ``build`` of its :class:`OpSpec` beside the op's cost and memory profile.
    """

    def factory(channels: int, stride: int, affine: bool, num_edges: int) -> nn.Module:
        if num_edges == 1:
            return single(channels, stride, affine)
        return _PerEdge([single(channels, stride, affine) for _ in range(num_edges)])

    return factory


def _nothing(*_: int) -> int:
    return 0


def _skip_madds(c: int, stride: int, pixels: int) -> int:
    return 0 if stride == 1 else c * c * pixels  # the strided 1x1 conv


@dataclass(frozen=True)
class OpMemory:
    """What autograd keeps for one op of a search mixed op, in units of one edge's input.

    One unit is the op's input, (N, C, H, W) at the op's channels. The mixed op adds what
    its ops share (:mod:`autodeeplab.space.memory`): the ReLU of the ops that start with
    one, the input the pools read, and, with ``pool_bn``, the output of each pool.
    """

    saved: Callable[[int], float] = _nothing  # edges -> units kept to differentiate the input
    largest: Callable[[int], float] = _nothing  # edges -> units of the largest of those tensors
    output: Callable[[int], float] = _nothing  # edges -> units of its output (kept for alpha)
    pre_relu: bool = False  # starts with the ReLU that the cell computes once for all such ops
    pool: bool = False  # reads its input in the backward pass; search adds a BatchNorm after it
    identity: bool = False  # its output is its input (kept for alpha as the shared input)


@dataclass(frozen=True)
class OpSpec:
    """An entry of :data:`OPS`: the op's factory and its cost and memory profile.

    Args:
        build: ``(channels, stride, affine, num_edges) -> nn.Module``.
        madds: ``(channels, stride, output pixels) -> Multi-Adds`` of one edge, counted as
            :func:`autodeeplab.model.complexity.count_multiply_adds` counts them.
        weights: ``channels -> conv weights`` of one edge at stride 1 (BatchNorm apart).
        batchnorms: BatchNorms of one edge at stride 1, each ``channels`` wide.
        memory: the activations it keeps in a search mixed op.
    """

    build: OpFactory
    madds: Callable[[int, int, int], int]
    weights: Callable[[int], int]
    batchnorms: int
    memory: OpMemory

    def __call__(self, channels: int, stride: int, affine: bool, num_edges: int) -> nn.Module:
        """Build the op: ``num_edges`` edges of ``channels`` channels at ``stride``."""
        return self.build(channels, stride, affine, num_edges)


def _sep(k: int) -> OpSpec:
    return OpSpec(
        lambda c, stride, affine, e: SepConv(c, k, stride, affine, e),
        # Both halves: a depthwise kxk and a pointwise 1x1 conv, all at the output size.
        lambda c, stride, pixels: 2 * (c * k * k + c * c) * pixels,
        lambda c: 2 * c * k * k + 2 * c * c,
        2,
        # (repeated input,) dw, pw, ReLU, dw, pw outputs per edge; an edge's output is largest.
        OpMemory(lambda e: (6 if e > 1 else 5) * e, lambda e: e, lambda e: e, pre_relu=True),
    )


def _dil(k: int) -> OpSpec:
    return OpSpec(
        lambda c, stride, affine, e: DilConv(c, k, stride, affine, e),
        lambda c, stride, pixels: c * c * k * k * pixels,
        lambda c: c * c * k * k,
        1,
        OpMemory(lambda e: e, output=lambda e: e, pre_relu=True),  # the conv output, for its BN
    )


def _pool(kind: str, indices: float) -> OpSpec:
    # A max pool keeps int64 indices (two float32 units); both keep their input (pool=True).
    return OpSpec(
        lambda c, stride, affine, e: Pool(kind, stride),
        _nothing,
        _nothing,
        0,
        OpMemory(lambda e: indices, output=lambda e: 1, pool=True),
    )


#: Op name -> :class:`OpSpec`, called like a factory ``(channels, stride, affine, num_edges)``.
OPS: dict[str, OpSpec] = {
    "none": OpSpec(lambda c, stride, affine, e: Zero(stride), _nothing, _nothing, 0, OpMemory()),
    "max_pool_3x3": _pool("max", 2.0),
    "avg_pool_3x3": _pool("avg", 0.0),
    "skip_connect": OpSpec(_skip, _skip_madds, _nothing, 0, OpMemory(identity=True)),
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
}


def op_spec(name: str) -> OpSpec:
    """The :class:`OpSpec` of ``name``; a ValueError for an op added without its profile."""
    spec = OPS.get(name)
    if spec is None:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")
    if not isinstance(spec, OpSpec):
        raise ValueError(
            f"op {name!r} in OPS is a bare factory; register it as OpSpec(factory, madds, "
            "weights, batchnorms, memory) so the cost model and the memory estimate can price it"
        )
    return spec
