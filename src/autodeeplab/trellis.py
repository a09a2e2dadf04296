"""The trellis of the Auto-DeepLab search space and its stem, described once (paper §3.2, §4.1).

- Stem: three 3x3 convs, stride 2 (64), stride 1 (64) -> ``stem0`` at stride 2, stride 2
  (128) -> ``stem1`` at stride 4 (docs/design.md §6.1); independent of F.
- Levels: level s is stride 4 * 2**s. Layer 0 is ``stem1`` at level 0 (and layer -1
  ``stem0``, :data:`STEM_LEVEL`); layer l = 1..L has a node at every level
  0..min(l, num_levels - 1).
- Edges (:func:`edges`): a node at level s reads H^{l-1} at the levels s-1, s, s+1 that
  exist (Eq. 6); beta[l, s, d] weighs the edge from level s of layer l in direction
  d = target - source + 1 (:func:`direction`, :func:`beta_mask`). H^{l-2} comes from the
  nearest level of layer l-2, brought there by stride-2 convs (NR#77).
- Cell edges: alpha's rows, numbered as in DARTS (:func:`edge_index`, :func:`num_edges`).
- Widths: a block at level s is F * 2**s channels wide; a cell's output is B blocks.
- :class:`SupernetSpec`: the supernet's arguments and their defaults.

The supernet, its decoding, memory and cost models (``space/``), the figures (``viz/``)
and the retrain backbone (``model/backbone.py``) read this module. It also holds
:class:`Resample`, the module of a trellis edge, with its weight and memory profile, and
the stem's, which the memory estimate and the cost model count.

The stem's *modules* stay two (``space.network.SearchStem`` and ``model.backbone.Stem``):
they compute the same thing, but their state-dict keys differ (``conv0.0.weight`` against
``conv0.weight`` / ``bn0.weight``) and saved search and train checkpoints rely on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from autodeeplab.ops import PRIMITIVES, ReLUConvBN, resize

__all__ = [
    "ASPP_CHANNELS",
    "DECODER_CHANNELS",
    "LOW_LEVEL_CHANNELS",
    "PAPER_STEM",
    "PAPER_SUPERNET",
    "STEM_LEVEL",
    "Edge",
    "Node",
    "Resample",
    "StemSpec",
    "SupernetSpec",
    "Trellis",
    "beta_mask",
    "block_width",
    "direction",
    "edge_index",
    "edges",
    "halve",
    "level_sizes",
    "levels_at",
    "num_edges",
]

STEM_LEVEL = -1  # the stem's stride-2 output, H^{l-2} of layer 1

#: The retrain network's heads (DeepLabv3+, paper §5.2): the ASPP branches' width, the
#: decoder's low-level projection and its refinement width. The retrain network
#: (``model/heads.py``) and the cost model (``space/cost.py``) both read them.
ASPP_CHANNELS, LOW_LEVEL_CHANNELS, DECODER_CHANNELS = 256, 48, 256


def halve(size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after a 'SAME' stride-2 op: ceil(d / 2) per side."""
    return ((size[0] + 1) // 2, (size[1] + 1) // 2)


def level_sizes(size: tuple[int, int], num_levels: int) -> list[tuple[int, int]]:
    """(H, W) of every level (0 = stride 4) for an input of ``size``, as the stem and the
    stride-2 ops produce them (ceil halving)."""
    sizes = [halve(halve(size))]
    for _ in range(1, num_levels):
        sizes.append(halve(sizes[-1]))
    return sizes


def levels_at(layer: int, num_levels: int) -> list[int]:
    """Levels that have a node at ``layer`` (layer 0: ``stem1``; layer -1: ``stem0``)."""
    if layer < 0:
        return [STEM_LEVEL]
    return list(range(min(layer, num_levels - 1) + 1))


def block_width(filter_multiplier: int, level: int) -> int:
    """Channels of a block at ``level``: F * 2**level."""
    return filter_multiplier * 2**level


class Edge(NamedTuple):
    """A trellis edge: the layer it leaves (0 = the stem), its source and target levels, and
    its direction, beta's last index (``beta[layer, source, direction]`` weighs it)."""

    layer: int
    source: int
    target: int
    direction: int


def direction(source: int, target: int) -> int:
    """beta's direction index of the edge from level ``source`` to level ``target``.

    ``target - source + 1``: 0 goes one level finer, 1 stays, 2 goes one level coarser;
    outside 0..2 no edge joins the two levels.
    """
    return target - source + 1


def edges(num_layers: int, num_levels: int) -> list[Edge]:
    """Every edge of an L-layer trellis, by layer, source level and direction.

    Layer l's edges (l = 0: the stem) lead into layer l + 1, to the levels s-1, s, s+1 of
    their source s that layer l + 1 has (Eq. 6).
    """
    out = []
    for layer in range(num_layers):
        targets = levels_at(layer + 1, num_levels)
        for source in levels_at(layer, num_levels):
            for target in (source - 1, source, source + 1):
                if target in targets:
                    out.append(Edge(layer, source, target, direction(source, target)))
    return out


def beta_mask(num_layers: int, num_levels: int) -> Tensor:
    """True where beta[l, source level, direction] is an edge of the trellis (L, levels, 3)."""
    mask = torch.zeros(num_layers, num_levels, 3, dtype=torch.bool)
    for edge in edges(num_layers, num_levels):
        mask[edge.layer, edge.source, edge.direction] = True
    return mask


def num_edges(num_blocks: int) -> int:
    """Edges of a cell with ``num_blocks`` blocks: 2 + 3 + ... + (B+1) (20 for B=5)."""
    return num_blocks * (num_blocks + 3) // 2


def edge_index(block: int, state: int) -> int:
    """Row of alpha for the edge from hidden state ``state`` into block ``block`` (0-based).

    Block i's edges follow those of blocks 0..i-1 and list the states 0..i+1 in order
    (0 = H^{l-2}, 1 = H^{l-1}, k >= 2 = block k-1), as in DARTS.
    """
    return block * (block + 3) // 2 + state


@dataclass(frozen=True)
class StemSpec:
    """The stem's widths (c0, c1, c2): stride-2 conv to c0, conv to c1 (``stem0``, stride 2),
    stride-2 conv to c2 (``stem1``, stride 4); every conv 3x3, without bias, then BatchNorm."""

    channels: tuple[int, int, int] = (64, 64, 128)
    in_channels: int = 3

    @property
    def stem0_channels(self) -> int:
        """Channels of ``stem0`` (stride 2), H^{l-2} of layer 1."""
        return self.channels[1]

    @property
    def stem1_channels(self) -> int:
        """Channels of ``stem1`` (stride 4, level 0), H^{l-1} of layer 1."""
        return self.channels[2]

    def weight_count(self) -> int:
        """Parameters: the three convs and their affine BatchNorms."""
        c0, c1, c2 = self.channels
        return 9 * (self.in_channels * c0 + c0 * c1 + c1 * c2) + 2 * (c0 + c1 + c2)

    def buffer_count(self) -> int:
        """BatchNorm running-statistics elements."""
        return 2 * sum(self.channels)

    def multiply_adds(self, size: tuple[int, int]) -> int:
        """Multi-Adds on an input of ``size`` (H, W)."""
        c0, c1, c2 = self.channels
        h2, w2 = halve(size)
        h4, w4 = halve((h2, w2))
        return 9 * (self.in_channels * c0 + c0 * c1) * h2 * w2 + 9 * c1 * c2 * h4 * w4

    def saved_elements(self, size: tuple[int, int]) -> int:
        """Elements autograd keeps per image when the stem learns (the w step).

        conv0's output and its ReLU, conv1's output and ReLU(stem0) at stride 2, conv2's
        output at stride 4.
        """
        c0, _, c2 = self.channels
        h2, w2 = halve(size)
        h4, w4 = halve((h2, w2))
        return 4 * c0 * h2 * w2 + c2 * h4 * w4


#: The paper's stem (docs/design.md §6.1), shared by the supernet and the retrain network.
PAPER_STEM = StemSpec()


class Node(NamedTuple):
    """A trellis node: its layer and level, the levels of H^{l-1} it reads, and H^{l-2}'s."""

    layer: int
    level: int
    sources: list[int]
    prev_prev_level: int


@dataclass(frozen=True)
class Trellis:
    """The L-layer trellis over ``num_levels`` levels with B-block cells of width F * 2**level."""

    num_layers: int
    num_levels: int
    num_blocks: int
    filter_multiplier: int
    stem: StemSpec = PAPER_STEM

    def levels_at(self, layer: int) -> list[int]:
        """Levels that have a node at ``layer`` (layer 0: ``stem1``; layer -1: ``stem0``)."""
        return levels_at(layer, self.num_levels)

    def width(self, level: int) -> int:
        """Block width at ``level``: F * 2**level."""
        return block_width(self.filter_multiplier, level)

    def channels(self, layer: int, level: int) -> int:
        """Channels of the hidden state of ``layer`` at ``level`` (layers -1, 0: the stem)."""
        if layer < 0:
            return self.stem.stem0_channels
        if layer == 0:
            return self.stem.stem1_channels
        return self.num_blocks * self.width(level)

    def edges(self) -> list[Edge]:
        """Every edge of the trellis; see :func:`edges`."""
        return edges(self.num_layers, self.num_levels)

    def nodes(self) -> list[Node]:
        """Every node of layers 1..L, layer by layer, finest level first."""
        into: dict[tuple[int, int], list[int]] = {}
        for edge in self.edges():  # by source level: a node's sources come finest first
            into.setdefault((edge.layer + 1, edge.target), []).append(edge.source)
        out = []
        for layer in range(1, self.num_layers + 1):
            prev2 = self.levels_at(layer - 2)
            for level in self.levels_at(layer):
                pp = min(prev2, key=lambda s, lv=level: abs(s - lv))
                out.append(Node(layer, level, into[layer, level], pp))
        return out


@dataclass(frozen=True)
class SupernetSpec:
    """The supernet's arguments and their defaults (the paper's search space, §5.1), once.

    :class:`~autodeeplab.space.network.SearchNetwork` is built from one, the config's
    ``model`` section extends it (with ``checkpoint_cells``), the memory and cost models
    read one. L, B, F; ``strides``: the levels, consecutive doublings from 4;
    ``primitives``: op names, keys of ``autodeeplab.ops.OPS``; ``affine``: affine
    BatchNorm in the ops and resampling edges; ``stem_channels``: :class:`StemSpec`'s;
    ``partial_channels``: PC-DARTS's K (beyond the paper; 1 = off): the mixed ops run on
    1/K of the channels, with edge normalisation ``gamma``, and K must divide F;
    ``pool_bn``: BatchNorm (not affine) after the mixed op's pools (docs/design.md §12.11), so a
    pool cannot win alpha by its output's scale. Checked where the supernet is built.
    """

    # L, the number of layers of the trellis (the paper's 12).
    num_layers: int = 12
    # B, the blocks of a cell (the paper's 5); each block sums two branches.
    num_blocks: int = 5
    # F: a block at stride s has F * s / 4 channels (the paper searches with 8).
    filter_multiplier: int = 8
    # The levels' output strides, consecutive doublings from 4 (the paper's 4, 8, 16, 32).
    strides: tuple[int, ...] = (4, 8, 16, 32)
    # The candidate ops of every mixed edge: names in autodeeplab.ops.OPS (the paper's 8).
    primitives: tuple[str, ...] = PRIMITIVES
    # Affine BatchNorm in the search ops and resampling edges (DARTS: off).
    affine: bool = False
    # The stem's three conv widths (the paper's 64, 64, 128; docs/design.md §6.1).
    stem_channels: tuple[int, int, int] = PAPER_STEM.channels
    # PC-DARTS's K (beyond the paper): the mixed ops see 1/K of the channels, with edge
    # normalisation; 1 = off. K must divide F.
    partial_channels: int = 1
    # BatchNorm (not affine) after the pools of the search mixed op (docs/design.md §12.11), so
    # a pool cannot win alpha by the scale of its output; false: the discrete net's plain pools.
    pool_bn: bool = True

    def __post_init__(self) -> None:
        for name in ("strides", "primitives", "stem_channels"):
            value = getattr(self, name)
            if not isinstance(value, tuple) and isinstance(value, Sequence):
                object.__setattr__(self, name, tuple(value))

    @property
    def num_levels(self) -> int:
        """Trellis levels: one per stride."""
        return len(self.strides)

    def supernet_spec(self) -> SupernetSpec:
        """The supernet's fields alone (a config section that extends the spec drops the rest)."""
        return SupernetSpec(**{f.name: getattr(self, f.name) for f in fields(SupernetSpec)})

    def kwargs(self) -> dict[str, Any]:
        """The fields as JSON-ready keyword arguments (tuples as lists)."""
        spec = self.supernet_spec()
        return {f.name: _plain(getattr(spec, f.name)) for f in fields(spec)}

    def trellis(self) -> Trellis:
        """The trellis of this supernet, with its stem."""
        stem = StemSpec(tuple(self.stem_channels))
        return Trellis(
            self.num_layers, self.num_levels, self.num_blocks, self.filter_multiplier, stem
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


#: The paper's search space (§5.1): L = 12, B = 5, F = 8, strides 4-32, the eight ops.
PAPER_SUPERNET = SupernetSpec()


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

    @staticmethod
    def weight_count(in_channels: int, out_channels: int, level_delta: int, affine: bool) -> int:
        """Parameters of ``Resample(in_channels, out_channels, level_delta, affine)``."""
        bn = 2 * out_channels if affine else 0
        if level_delta > 0:
            first = in_channels * out_channels * 9 + bn
            return first + (level_delta - 1) * (out_channels * out_channels * 9 + bn)
        return in_channels * out_channels + bn

    @staticmethod
    def buffer_count(out_channels: int, level_delta: int) -> int:
        """BatchNorm running-statistics elements: one BatchNorm per conv."""
        return 2 * out_channels * max(level_delta, 1)

    @staticmethod
    def saved_elements(
        in_channels: int, out_channels: int, level_delta: int, pixels: Sequence[int]
    ) -> int:
        """Elements autograd keeps per image: per ReLU-conv-BN, the ReLU and the conv output.

        ``pixels``: H * W of the source level, then of each level the edge passes through
        (``level_delta`` more); an upsampling edge convolves at the source resolution and
        its upsampling saves nothing.
        """
        if level_delta <= 0:
            return (in_channels + out_channels) * pixels[0]
        total, c_in = 0, in_channels
        for step in range(level_delta):
            total += c_in * pixels[step] + out_channels * pixels[step + 1]
            c_in = out_channels
        return total
