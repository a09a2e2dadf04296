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

Edges are numbered as in DARTS (:func:`autodeeplab.trellis.edge_index`): block i's edges
come after those of blocks 0..i-1 and list the states 0..i+1 in order (0 = H^{l-2},
1 = H^{l-1}, k >= 2 = block k-1).

Partial channels (PC-DARTS, Xu et al., ICLR 2020; beyond the paper): with
``partial_channels`` K > 1 a mixed op runs its candidate ops on the first C/K channels of
its input only, passes the other channels through unchanged, and channel-shuffles the
concatenation with K groups. The ops are K times narrower, so the supernet's activation
memory and compute shrink by about K. The shuffle makes the next mixed op, which reads the
block's sum, see a different channel slice. PC-DARTS's edge normalisation goes with it: each
edge's output is scaled by a weight, softmaxed over the edges into the same block (the
network holds these logits, see :func:`edge_softmax`). The weight damps the noise that
sampling channels adds to the edge choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.ops import OPS, Pool
from autodeeplab.trellis import edge_index, num_edges

__all__ = ["MixedOp", "SearchCell", "edge_index", "edge_softmax", "num_edges", "state_edges"]


def state_edges(state: int, num_blocks: int) -> list[int]:
    """Rows of alpha of the edges that read hidden state ``state``, in block order."""
    first = max(0, state - 1)
    return [edge_index(block, state) for block in range(first, num_blocks)]


def edge_softmax(logits: Tensor, num_blocks: int) -> Tensor:
    """Softmax of per-edge logits (num_edges,) over the edges entering each block."""
    if logits.shape != (num_edges(num_blocks),):
        raise ValueError(
            f"edge logits must have shape ({num_edges(num_blocks)},) for B={num_blocks}, "
            f"got {tuple(logits.shape)}"
        )
    # Block i's edges are rows edge_index(i, 0) .. edge_index(i, i + 1): contiguous.
    sizes = [block + 2 for block in range(num_blocks)]
    return torch.cat([F.softmax(part, dim=0) for part in logits.split(sizes)])


def _check_partial(channels: int, partial_channels: int) -> None:
    if not isinstance(partial_channels, int) or isinstance(partial_channels, bool):
        raise ValueError(f"partial_channels must be a positive integer, got {partial_channels!r}")
    if partial_channels < 1:
        raise ValueError(f"partial_channels must be a positive integer, got {partial_channels}")
    if channels % partial_channels:
        raise ValueError(
            f"partial_channels={partial_channels} must divide the block width, "
            f"got {channels} channels ({channels} % {partial_channels} != 0)"
        )


class MixedOp(nn.Module):
    """All edges that read one hidden state: out_e = sum_k w[e, k] * O^k(x) (Eq. 2).

    ``forward(x, weights)`` takes x (N, C, H, W) and the softmaxed alpha rows of these
    edges, weights (E, K), and returns (N, E, C, H, W).

    With ``partial_channels`` P > 1 (PC-DARTS) the ops are built for C/P channels and
    out_e = g_e * shuffle(cat(sum_k w[e, k] * O^k(x[:, :C/P]), x[:, C/P:]), P), with g the
    optional ``edge_weights`` (E,) (1 when not given).
    """

    def __init__(
        self,
        channels: int,
        primitives: Sequence[str],
        num_edges: int,
        affine: bool = False,
        partial_channels: int = 1,
        pool_bn: bool = True,
    ) -> None:
        super().__init__()
        _check_partial(channels, partial_channels)
        self.num_edges, self.channels, self.partial_channels = num_edges, channels, partial_channels
        op_channels = channels // partial_channels
        ops, columns = [], []
        for k, name in enumerate(primitives):
            if name == "none":
                continue  # zero output: contributes nothing, so it is never run
            op = OPS[name](op_channels, 1, affine, num_edges)
            if pool_bn and isinstance(op, Pool):
                op = _PoolBN(op, op_channels)
            ops.append(op)
            columns.append(k)
        # DARTS-'s auxiliary skip (Chu et al., ICLR 2021): out_e += aux_skip * x on every
        # edge, outside the softmax, so a skip's benefit to training no longer has to win
        # it alpha. The search loop sets it (decaying to 0); 0 is the paper's mixed op.
        self.aux_skip = 0.0
        # P-DARTS's dropout on skip_connect (Chen et al., ICCV 2019): in training, the skip
        # op's output is dropped at this rate, so skip cannot win alpha by making the
        # supernet easy to train alone. 0 (the paper's) leaves the mixed op as it was.
        self.skip_dropout = 0.0
        self.ops = nn.ModuleList(ops)
        self.columns = columns
        self._skip = [primitives[k] == "skip_connect" for k in columns]
        self._pre_relu = [bool(getattr(op, "pre_relu", False)) for op in ops]
        self._shared = [bool(getattr(op, "shared_across_edges", False)) for op in ops]

    def forward(self, x: Tensor, weights: Tensor, edge_weights: Tensor | None = None) -> Tensor:
        """(N, C, H, W), (E, K)[, (E,)] -> (N, E, C, H, W)."""
        p = self.partial_channels
        if p == 1:
            if edge_weights is not None:
                weights = weights * edge_weights.unsqueeze(-1)
            return self._mix(x, weights)
        n, c, h, w = x.shape
        e, cp = self.num_edges, c // p
        if edge_weights is not None:
            # g_e scales the whole edge: fold it into the op weights (E x K multiplies) and
            # apply it to the pass-through channels, which are copied per edge anyway.
            weights = weights * edge_weights.unsqueeze(-1)
        mixed = self._mix(x[:, :cp], weights)  # (N, E, C/P, H, W)
        # The pass-through channels as (N, 1, C/P, P-1, H, W): group g, channel j at [j, g-1].
        rest = x[:, cp:].reshape(n, 1, p - 1, cp, h, w).transpose(2, 3)
        if edge_weights is None:
            rest = rest.expand(n, e, cp, p - 1, h, w)
        else:
            rest = rest * edge_weights.view(1, e, 1, 1, 1, 1).to(rest.dtype)
        # cat + channel_shuffle(groups=P) in one copy: stacking the P groups along a new
        # innermost channel axis puts group g's channel j at j * P + g.
        out = torch.cat([mixed.unsqueeze(3), rest.to(mixed.dtype)], dim=3)
        return out.view(n, e, c, h, w)

    def _mix(self, x: Tensor, weights: Tensor) -> Tensor:
        """sum_k w[e, k] * O^k(x) over the built ops: (N, C', H, W), (E, K) -> (N, E, C', H, W)."""
        n, c, h, w = x.shape
        e = self.num_edges
        xr = F.relu(x) if any(self._pre_relu) else x
        out: Tensor | None = None
        for op, k, pre_relu, shared, skip in zip(
            self.ops, self.columns, self._pre_relu, self._shared, self._skip, strict=True
        ):
            y = op.forward_relu(xr) if pre_relu else op(x)
            if skip and self.skip_dropout and self.training:
                y = F.dropout(y, self.skip_dropout)
            y = y.view(n, 1, c, h, w) if shared else y.view(n, e, c, h, w)
            wk = weights[:, k].view(1, e, 1, 1, 1)
            # The first product broadcasts a shared op's output over the edges.
            out = y * wk if out is None else torch.addcmul(out, y, wk)
        if out is None:  # every op is 'none'
            out = x.new_zeros(n, e, c, h, w)
        if self.aux_skip:
            out = out + self.aux_skip * x.view(n, 1, c, h, w)
        return out


class _PoolBN(nn.Module):
    """A search pool followed by BatchNorm (docs/design.md §12.11; DARTS and the public ports).

    Without it max-pooling a BN-normalised input has mean about +1 and 2.2x the energy of the
    other ops' outputs (whose last layer is a BN), and wins edges by that bias alone. One BN
    serves every edge: a pool's output is the same on each, and so would their BNs be.
    """

    pre_relu = False
    shared_across_edges = True

    def __init__(self, pool: Pool, channels: int) -> None:
        super().__init__()
        self.pool = pool
        self.bn = nn.BatchNorm2d(channels, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return self.bn(self.pool(x))


class SearchCell(nn.Module):
    """A search cell of ``num_blocks`` blocks at block width ``channels`` (stride 1).

    ``forward(s0, s1, state_weights[, state_edge_weights])``: s0 = preprocessed H^{l-2}
    (N, C, H, W); s1 = preprocessed H^{l-1} (k*N, C, H, W), k >= 1 incoming directions
    stacked along the batch; state_weights = :meth:`split_weights` of softmax(alpha);
    state_edge_weights = :meth:`split_weights` of the edge weights (PC-DARTS edge
    normalisation), or None. Returns (k*N, B*C, H, W).
    """

    def __init__(
        self,
        channels: int,
        num_blocks: int,
        primitives: Sequence[str],
        affine: bool = False,
        partial_channels: int = 1,
        pool_bn: bool = True,
    ) -> None:
        super().__init__()
        self.num_blocks, self.channels = num_blocks, channels
        self.partial_channels = partial_channels
        # One MixedOp per hidden state that has outgoing edges: s0, s1, blocks 1..B-1.
        self.mixed = nn.ModuleList(
            MixedOp(
                channels,
                primitives,
                len(state_edges(s, num_blocks)),
                affine,
                partial_channels,
                pool_bn,
            )
            for s in range(num_blocks + 1)
        )

    @staticmethod
    def split_weights(weights: Tensor, state_rows: Sequence[Tensor]) -> list[Tensor]:
        """Rows of softmax(alpha) (E, K) per hidden state; run once per network forward.

        ``state_rows[s]`` holds :func:`state_edges` ``(s, B)`` as a long tensor. Edge
        weights (E,) split the same way.
        """
        return [weights.index_select(0, rows) for rows in state_rows]

    def forward(
        self,
        s0: Tensor,
        s1: Tensor,
        state_weights: Sequence[Tensor],
        state_edge_weights: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """(N, C, H, W), (kN, C, H, W), :meth:`split_weights` -> (kN, B*C, H, W)."""
        n = s0.shape[0]
        kn = s1.shape[0]
        k = kn // n
        b, c, h, w = self.num_blocks, self.channels, s1.shape[2], s1.shape[3]
        g = state_edge_weights if state_edge_weights is not None else [None] * (b + 1)
        from_s1 = self.mixed[1](s1, state_weights[1], g[1])
        from_s0 = self.mixed[0](s0, state_weights[0], g[0])
        # H^{l-2} is the same for every incoming direction: broadcast its mixed ops.
        partial = (from_s1.view(k, n, b, c, h, w) + from_s0.unsqueeze(0)).view(kn, b, c, h, w)
        sums = list(partial.unbind(1))
        for i in range(b - 1):
            mixed = self.mixed[i + 2]
            out = mixed(sums[i], state_weights[i + 2], g[i + 2])  # edges into blocks i+1..B-1
            for j, y in enumerate(out.unbind(1)):
                sums[i + 1 + j] = sums[i + 1 + j] + y
        return torch.cat(sums, dim=1)
