"""Candidate operations of the Auto-DeepLab cell, and the trellis resampling edges.

Paper §3.1 lists eight ops; their exact forms come from the official TF retrain code
(SPEC.md §1.1, confirmed by the parameter oracle of §9):

- ``sep_conv_kxk``: (ReLU -> depthwise kxk -> pointwise 1x1 -> BN) applied twice; with
  stride 2 only the first depthwise conv is strided.
- ``dil_conv_kxk``: ReLU -> a *regular* (not separable) kxk conv with dilation 2 -> BN; with
  stride 2 the input is bilinearly halved first and a rate-1 conv follows.
- ``avg_pool_3x3`` / ``max_pool_3x3``: 'SAME' padding, no parameters.
- ``skip_connect``: identity; with stride 2, ReLU -> strided 1x1 conv -> BN.
- ``none``: the zero op.

One implementation serves the supernet and the discrete network. Every op can evaluate
``num_edges`` edges that read the same hidden state at once: the weights of the edges are
stacked along the output channels and run as one grouped convolution, so a search cell
issues a handful of kernels per hidden state instead of one small kernel per edge. The
output of such an op is ``(N, num_edges * C, H', W')``, edge-major. Parameter-free ops
give the same output on every edge and set ``shared_across_edges``; they return
``(N, C, H', W')`` once. The discrete network uses ``num_edges=1``.

``OPS`` maps an op name to a factory ``(channels, stride, affine, num_edges) -> Module``.
Users extend the vocabulary by adding an entry; :func:`per_edge` lifts a factory that
only knows single edges. :func:`channel_shuffle` serves the search cell's partial-channel
(PC-DARTS) mixed ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PRIMITIVES",
    "OPS",
    "OpFactory",
    "SepConv",
    "DilConv",
    "Pool",
    "Identity",
    "Zero",
    "ReLUConvBN",
    "Resample",
    "channel_shuffle",
    "per_edge",
    "resize",
]

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
        # instead of a strided dilated conv (SPEC.md §1.1).
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
        self.conv = nn.Conv2d(
            in_channels,
            num_edges * out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(num_edges * out_channels, affine=affine)

    def forward_relu(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) after ReLU -> (N, E*C_out, H', W')."""
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
    """Lift a factory ``(channels, stride, affine) -> Module`` of one edge to an ``OPS`` entry.

    Use it to add an op that has no edge-batched form: it is correct, only slower.
    """

    def factory(channels: int, stride: int, affine: bool, num_edges: int) -> nn.Module:
        if num_edges == 1:
            return single(channels, stride, affine)
        return _PerEdge([single(channels, stride, affine) for _ in range(num_edges)])

    return factory


#: Op name -> factory ``(channels, stride, affine, num_edges) -> nn.Module``.
OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine, e: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine, e: Pool("max", stride),
    "avg_pool_3x3": lambda c, stride, affine, e: Pool("avg", stride),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine, e: SepConv(c, 3, stride, affine, e),
    "sep_conv_5x5": lambda c, stride, affine, e: SepConv(c, 5, stride, affine, e),
    "dil_conv_3x3": lambda c, stride, affine, e: DilConv(c, 3, stride, affine, e),
    "dil_conv_5x5": lambda c, stride, affine, e: DilConv(c, 5, stride, affine, e),
}


class Resample(nn.Module):
    """A trellis edge that brings a hidden state to another level and to a cell's width.

    Paper §5.1: an s/2 -> s edge is a stride-2 convolution; a 2s -> s edge is bilinear
    upsampling and a 1x1 convolution. Each edge here also maps to the receiving cell's
    block width, so it doubles as the cell's input preprocessing (one conv, not two):

    - ``level_delta > 0`` (to a coarser level): ``level_delta`` x (ReLU, 3x3 stride-2 conv,
      BN), the first of them to the target width;
    - ``level_delta == 0``: ReLU, 1x1 conv, BN;
    - ``level_delta < 0`` (to a finer level): ReLU, 1x1 conv, BN at the source resolution,
      then bilinear upsampling to the target size. The conv commutes with the upsampling,
      so running it first costs 4x less.
    """

    def __init__(
        self, in_channels: int, out_channels: int, level_delta: int, affine: bool = False
    ) -> None:
        super().__init__()
        self.level_delta = level_delta
        if level_delta > 0:
            convs = [ReLUConvBN(in_channels, out_channels, 3, 2, affine)]
            for _ in range(level_delta - 1):
                convs.append(ReLUConvBN(out_channels, out_channels, 3, 2, affine))
            self.body = nn.Sequential(*convs)
        else:
            self.body = ReLUConvBN(in_channels, out_channels, 1, 1, affine)

    def forward(self, x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """(N, C_in, h, w) -> (N, C_out, *size)."""
        x = self.body(x)
        if self.level_delta < 0:
            x = resize(x, size)
        return x
