"""The continuous search cell (paper §4.1, Eq. 1-5).

A cell of B blocks: block i sums a mixed op over every hidden state it may read (H^{l-2},
H^{l-1} and the earlier blocks); a mixed op is the softmax(alpha)-weighted sum of the
candidate ops; the cell outputs the concatenation of its B blocks. alpha, of shape
(num_edges, num_ops), is one tensor shared by every cell of the network.

Speed: a mixed op here covers *all* edges that read one hidden state (one per later block)
and runs each candidate op once for all of them, as a grouped convolution (see
``autodeeplab.ops``). A cell therefore runs one :class:`MixedOp` per hidden state
(B + 1 of them) instead of one per edge (B(B+3)/2), and the 'none' op, whose output is
zero, is never computed. The cell also accepts H^{l-1} stacked along the batch for the up
to three incoming directions of a trellis node, with H^{l-2} given once: the mixed op of
H^{l-2} then runs on N samples and is broadcast over the directions.

Edges are numbered as in DARTS: block i's edges come after those of blocks 0..i-1 and list
the states 0..i+1 in order (0 = H^{l-2}, 1 = H^{l-1}, k >= 2 = block k-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.ops import OPS

__all__ = ["MixedOp", "SearchCell", "edge_index", "num_edges", "state_edges"]


def num_edges(num_blocks: int) -> int:
    """Edges of a cell with ``num_blocks`` blocks: 2 + 3 + ... + (B+1) (20 for B=5)."""
    return num_blocks * (num_blocks + 3) // 2


def edge_index(block: int, state: int) -> int:
    """Row of alpha for the edge from hidden state ``state`` into block ``block`` (0-based)."""
    return block * (block + 3) // 2 + state


def state_edges(state: int, num_blocks: int) -> list[int]:
    """Rows of alpha of the edges that read hidden state ``state``, in block order."""
    first = max(0, state - 1)
    return [edge_index(block, state) for block in range(first, num_blocks)]


class MixedOp(nn.Module):
    """All edges that read one hidden state: out_e = sum_k w[e, k] * O^k(x) (Eq. 2).

    ``forward(x, weights)`` takes x (N, C, H, W) and the softmaxed alpha rows of these
    edges, weights (E, K), and returns (N, E, C, H, W).
    """

    def __init__(
        self, channels: int, primitives: Sequence[str], num_edges: int, affine: bool = False
    ) -> None:
        super().__init__()
        self.num_edges, self.channels = num_edges, channels
        ops, columns = [], []
        for k, name in enumerate(primitives):
            if name == "none":
                continue  # zero output: contributes nothing, so it is never run
            ops.append(OPS[name](channels, 1, affine, num_edges))
            columns.append(k)
        self.ops = nn.ModuleList(ops)
        self.columns = columns
        self._pre_relu = [bool(getattr(op, "pre_relu", False)) for op in ops]
        self._shared = [bool(getattr(op, "shared_across_edges", False)) for op in ops]

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """(N, C, H, W), (E, K) -> (N, E, C, H, W)."""
        n, c, h, w = x.shape
        e = self.num_edges
        xr = F.relu(x) if any(self._pre_relu) else x
        out: Tensor | None = None
        for op, k, pre_relu, shared in zip(
            self.ops, self.columns, self._pre_relu, self._shared, strict=True
        ):
            y = op.forward_relu(xr) if pre_relu else op(x)
            y = y.view(n, 1, c, h, w) if shared else y.view(n, e, c, h, w)
            wk = weights[:, k].view(1, e, 1, 1, 1)
            # The first product broadcasts a shared op's output over the edges.
            out = y * wk if out is None else torch.addcmul(out, y, wk)
        if out is None:  # every op is 'none'
            return x.new_zeros(n, e, c, h, w)
        return out


class SearchCell(nn.Module):
    """A search cell of ``num_blocks`` blocks at block width ``channels`` (stride 1).

    ``forward(s0, s1, state_weights)``: s0 = preprocessed H^{l-2} (N, C, H, W); s1 =
    preprocessed H^{l-1} (k*N, C, H, W), k >= 1 incoming directions stacked along the batch;
    state_weights = :meth:`split_weights` of softmax(alpha). Returns (k*N, B*C, H, W).
    """

    def __init__(
        self,
        channels: int,
        num_blocks: int,
        primitives: Sequence[str],
        affine: bool = False,
    ) -> None:
        super().__init__()
        self.num_blocks, self.channels = num_blocks, channels
        # One MixedOp per hidden state that has outgoing edges: s0, s1, blocks 1..B-1.
        self.mixed = nn.ModuleList(
            MixedOp(channels, primitives, len(state_edges(s, num_blocks)), affine)
            for s in range(num_blocks + 1)
        )

    @staticmethod
    def split_weights(weights: Tensor, state_rows: Sequence[Tensor]) -> list[Tensor]:
        """Rows of softmax(alpha) (E, K) per hidden state; run once per network forward.

        ``state_rows[s]`` holds :func:`state_edges` ``(s, B)`` as a long tensor.
        """
        return [weights.index_select(0, rows) for rows in state_rows]

    def forward(self, s0: Tensor, s1: Tensor, state_weights: Sequence[Tensor]) -> Tensor:
        """(N, C, H, W), (kN, C, H, W), :meth:`split_weights` -> (kN, B*C, H, W)."""
        n = s0.shape[0]
        kn = s1.shape[0]
        k = kn // n
        b, c, h, w = self.num_blocks, self.channels, s1.shape[2], s1.shape[3]
        from_s1 = self.mixed[1](s1, state_weights[1])
        from_s0 = self.mixed[0](s0, state_weights[0])
        # H^{l-2} is the same for every incoming direction: broadcast its mixed ops.
        partial = (from_s1.view(k, n, b, c, h, w) + from_s0.unsqueeze(0)).view(kn, b, c, h, w)
        sums = list(partial.unbind(1))
        for i in range(b - 1):
            mixed = self.mixed[i + 2]
            out = mixed(sums[i], state_weights[i + 2])  # edges into blocks i+1..B-1
            for j, y in enumerate(out.unbind(1)):
                sums[i + 1 + j] = sums[i + 1 + j] + y
        return torch.cat(sums, dim=1)
