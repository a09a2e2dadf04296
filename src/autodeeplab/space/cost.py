"""Expected Multi-Adds of the discrete network under the current alpha and beta.

Beyond the paper (its search optimises accuracy alone): a differentiable estimate of the
cost of the network that decoding would produce, so that a search can be pulled toward a
Multi-Adds budget. The estimate prices the *retrain* network (the discrete Auto-DeepLab at
the retrain filter multiplier, input size and class count), counted like
``autodeeplab.model.complexity.count_multiply_adds``: convolution multiply-accumulates.

- Cell: every block keeps two branches. Block i's branch from state j is expected to cost
  sum_k softmax(alpha_ij)_k * cost_k, and the branches are weighted by
  q_ij = m_ij / sum_j m_ij, where m_ij is the non-zero op mass 1 - softmax(alpha_ij)_none;
  the block costs 2 * sum_j q_ij * E[branch ij]. With one-hot alpha that keeps exactly two
  non-zero edges per block, this is the decoded cell's cost.
- Network: beta's transition probabilities define a Markov chain over levels from the stem;
  each cell's cost depends on its level, the previous level (stride, input size, input
  channels) and the level two back (the H^{l-2} projection), priced under the chain's
  joint probabilities. The head (ASPP at the last level, decoder) and the stem are added.
  With one-hot beta the chain is the decoded path, and the sum is the counted Multi-Adds.

Op costs come from each op's own profile (:class:`autodeeplab.ops.OpSpec`, ``madds``), the
levels, widths and stem from :class:`autodeeplab.trellis.Trellis`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from autodeeplab.genotype import Genotype
from autodeeplab.ops import op_spec
from autodeeplab.trellis import (
    ASPP_CHANNELS,
    DECODER_CHANNELS,
    LOW_LEVEL_CHANNELS,
    SupernetSpec,
    Trellis,
    direction,
    edge_index,
    level_sizes,
    num_edges,
)

__all__ = ["CostModel", "parse_madds_target", "MaddsTarget"]


@dataclass(frozen=True)
class MaddsTarget:
    """A Multi-Adds budget at an input size, e.g. ``50G@1024x2048``."""

    madds: float
    size: tuple[int, int]


_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


def parse_madds_target(text: str) -> MaddsTarget:
    """Parse ``NUMBER[K|M|G|B|T]@HxW`` (``B`` = billion, as the paper writes it)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGBT]?)\s*@\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(
            f"target Multi-Adds {text!r}: expected NUMBER[K|M|G|T]@HxW, e.g. 50G@1024x2048"
        )
    madds = float(m.group(1)) * _UNITS[m.group(2).upper()]
    size = (int(m.group(3)), int(m.group(4)))
    if madds <= 0 or min(size) < 1:
        raise ValueError(f"target Multi-Adds {text!r}: the budget and the size must be positive")
    return MaddsTarget(madds, size)


class CostModel:
    """Prices decoded networks of a search space at a retrain configuration.

    Args:
        num_layers, num_blocks, primitives, num_levels: the search space.
        num_classes: classes of the retrain network.
        filter_multiplier: F of the retrain network (20 for Auto-DeepLab-S).
        size: the input size (H, W) the budget refers to.
        aspp_channels, decoder_channels: the retrain heads' widths (256 in the paper).
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        primitives: Sequence[str],
        num_levels: int,
        num_classes: int,
        filter_multiplier: int,
        size: tuple[int, int],
        aspp_channels: int = ASPP_CHANNELS,
        decoder_channels: int = DECODER_CHANNELS,
    ) -> None:
        self.num_layers, self.num_blocks, self.num_levels = num_layers, num_blocks, num_levels
        self.primitives = tuple(primitives)
        self.F, self.num_classes = filter_multiplier, num_classes
        self.aspp_channels, self.decoder_channels = aspp_channels, decoder_channels
        self.trellis = Trellis(num_layers, num_levels, num_blocks, filter_multiplier)
        sizes = level_sizes(tuple(size), num_levels)
        self.pixels = [h * w for h, w in sizes]
        self.stem = self.trellis.stem.multiply_adds(tuple(size))
        # op_cost[k, level, strided]: one branch of op k writing at `level` (0 for 'none').
        table = torch.zeros(len(primitives), num_levels, 2, dtype=torch.float64)
        for k, name in enumerate(primitives):
            madds = op_spec(name).madds
            for level in range(num_levels):
                for strided in (0, 1):
                    if strided and level == 0:
                        continue  # no level below stride 4 to come from
                    table[k, level, strided] = madds(
                        self.width(level), 2 if strided else 1, self.pixels[level]
                    )
        self.op_cost = table
        self._pre: list[Tensor] | None = None
        # The trellis's edges as index tensors: (layer, source, target, direction).
        self._edges = torch.tensor(self.trellis.edges(), dtype=torch.long).T

    @classmethod
    def of_space(
        cls,
        spec: SupernetSpec,
        num_classes: int,
        filter_multiplier: int,
        size: tuple[int, int],
    ) -> CostModel:
        """The cost model of the search space ``spec`` describes, priced at a retrain F."""
        return cls(
            spec.num_layers,
            spec.num_blocks,
            spec.primitives,
            spec.num_levels,
            num_classes,
            filter_multiplier,
            size,
        )

    def width(self, level: int) -> int:
        """Block width F * 2**level."""
        return self.trellis.width(level)

    def _out_channels(self, layer: int, level: int) -> int:
        """Channels of the node at ``layer`` (-1 = stem0, 0 = stem1)."""
        return self.trellis.channels(layer, level)

    def _head(self, level: int) -> float:
        """ASPP at ``level`` and the decoder, with a level-0 cell as the low-level input."""
        c, p, p0 = self._out_channels(1, level), self.pixels[level], self.pixels[0]
        a, d = self.aspp_channels, self.decoder_channels
        # 1x1 + three 3x3 atrous branches, the 5a -> a projection, the pooled 1x1 branch.
        aspp = (c * a + 27 * c * a + 5 * a * a) * p + c * a
        low = self.num_blocks * self.F * LOW_LEVEL_CHANNELS
        decoder = low + 9 * (a + LOW_LEVEL_CHANNELS) * d + 9 * d * d
        return aspp + (decoder + d * self.num_classes) * p0

    def _cell_ops(self, alpha_weights: Tensor) -> Tensor:
        """Expected op cost of one cell, (num_levels, 2) over (level, reduction cell)."""
        w = alpha_weights.to(torch.float64)
        none = [k for k, name in enumerate(self.primitives) if name == "none"]
        mass = 1.0 - w[:, none].sum(-1) if none else torch.ones_like(w[:, 0])
        cost = self.op_cost.to(w.device)
        total = torch.zeros(self.num_levels, 2, dtype=torch.float64, device=w.device)
        for block in range(self.num_blocks):
            rows = [edge_index(block, s) for s in range(block + 2)]
            q = mass[rows] / mass[rows].sum().clamp_min(1e-12)
            for j, row in enumerate(rows):
                # (K) x (K, levels, 2) -> (levels, 2); only cell inputs (j < 2) are strided.
                branch = torch.einsum("k,kls->ls", w[row], cost)
                if j >= 2:
                    branch = branch[:, :1].expand(-1, 2)
                total = total + 2 * q[j] * branch
        return total

    def _transitions(self, beta: Tensor) -> Tensor:
        """(L, lev, lev): P(level t at layer l+1 | level s at layer l); layer 0 = the stem."""
        nlev = self.num_levels
        trans = torch.zeros(self.num_layers, nlev, nlev, dtype=beta.dtype, device=beta.device)
        layer, src, tgt, d = self._edges.to(beta.device)
        trans[layer, src, tgt] = beta[layer, src, d]
        return trans

    def _preprocess_cost(self, layer: int) -> Tensor:
        """(a, b, c): the 1x1 input projections of the cell at ``layer``."""
        nlev = self.num_levels
        cost = torch.zeros(nlev, nlev, nlev, dtype=torch.float64)
        for a in range(nlev):
            for b in range(nlev):
                for c in range(max(0, b - 1), min(nlev, b + 2)):
                    width = self.width(c)
                    pixels_in = self.pixels[b] if c == b + 1 else self.pixels[c]
                    c_prev = self._out_channels(layer - 2, a)
                    pre = self._out_channels(layer - 1, b) * width
                    pre += c_prev * width if c_prev != width else 0
                    cost[a, b, c] = pre * pixels_in
        return cost

    def expected(self, alpha_weights: Tensor, beta_weights: Tensor) -> Tensor:
        """E[Multi-Adds] under softmax(alpha) (E, K) and transition probabilities (L, lev, 3)."""
        ops = self._cell_ops(alpha_weights)  # (level, reduction)
        trans = self._transitions(beta_weights.to(torch.float64))
        nlev = self.num_levels
        levels = torch.arange(nlev)
        reduction = (levels.view(-1, 1) + 1 == levels.view(1, -1)).long()  # (b, c)
        ops_bc = ops[levels.view(1, -1).expand(nlev, -1), reduction]  # (b, c)
        if self._pre is None:
            self._pre = [self._preprocess_cost(layer) for layer in range(1, self.num_layers + 1)]
        total = trans.new_tensor(float(self.stem))
        # joint[a, b] = P(level a at layer l-2, level b at layer l-1); stem0 and stem1 are
        # both booked at level 0 (their channels are set apart by the layer index).
        joint = trans.new_zeros(nlev, nlev)
        joint[0, 0] = 1.0
        never_level0 = None  # P(no level-0 cell yet, at level c >= 1 now)
        for layer in range(1, self.num_layers + 1):
            triple = joint.unsqueeze(-1) * trans[layer - 1].unsqueeze(0)  # (a, b, c)
            joint = triple.sum(0)  # (b, c)
            pre = self._pre[layer - 1].to(trans.device)
            total = total + (triple * pre).sum() + (joint * ops_bc).sum()
            step = trans[layer - 1][:, 1:]
            never_level0 = step[0] if never_level0 is None else never_level0 @ step[1:]
        final = joint.sum(0)
        heads = trans.new_tensor([self._head(level) for level in range(nlev)])
        total = total + (final * heads).sum()
        # Without a level-0 cell the decoder's low-level input is stem1 (128 channels).
        low_extra = self.trellis.stem.stem1_channels - self.num_blocks * self.F
        shift = low_extra * LOW_LEVEL_CHANNELS * self.pixels[0]
        return total + never_level0.sum() * shift

    def of_genotype(self, genotype: Genotype) -> int:
        """Multi-Adds of the retrain network of ``genotype``: exact, and about a millisecond.

        Needs 'none' among the primitives (the edges a genotype does not keep are 'none').
        """
        if "none" not in self.primitives:
            raise ValueError("CostModel.of_genotype needs 'none' among the primitives")
        alpha = torch.zeros(num_edges(self.num_blocks), len(self.primitives), dtype=torch.float64)
        alpha[:, self.primitives.index("none")] = 1.0
        for block, branches in enumerate(genotype.cell):
            for op, inp in branches:
                row = edge_index(block, inp)
                alpha[row] = 0.0
                alpha[row, self.primitives.index(op)] = 1.0
        return int(self.of_path(alpha, genotype.path))

    def of_path(self, alpha_weights: Tensor, path: Sequence[int]) -> Tensor:
        """Cost of a fixed path with the (expected) cell of ``alpha_weights``."""
        beta = torch.zeros(self.num_layers, self.num_levels, 3, dtype=torch.float64)
        prev = 0
        for layer, level in enumerate(path):
            beta[layer, prev, direction(prev, level)] = 1.0
            prev = level
        return self.expected(alpha_weights, beta)
