"""The single-path forward of the supernet: one genotype's ops and nodes on the shared weights.

:meth:`SearchNetwork.forward_genotype <autodeeplab.space.network.SearchNetwork.forward_genotype>`
runs the discrete network of a :class:`~autodeeplab.genotype.Genotype` on the supernet's
weights, as the retrain backbone (``model/backbone.py``) wires it: the stem as in the
supernet's forward; along ``genotype.path`` the cell of each (layer, level), reading H^{l-1}
from the path's previous node through the supernet's trellis edge into that cell, and H^{l-2}
from the path's own node two layers back; only the genotype's branches, each a single-edge
slice of the edge-batched op (its weights and BatchNorm statistics are the ones the
supernet's forward uses); and the search head of the last level only. A (layer, level) cell
and an (edge, op) therefore keep one set of weights shared by every genotype that uses them.
alpha, beta (and PC-DARTS's edge weights) are ignored, and so are DARTS-'s auxiliary skip and
P-DARTS's skip dropout: a branch's output is its op's, as in the discrete cell.

H^{l-2}. The supernet's own edge into the cell at (l, s) reads layer l-2 at the level nearest
to s (``Trellis.nodes``). Where the path's node two layers back is at that level, the path
uses that edge. A path that changes level (e.g. 0, 1, 2 or 1, 1, 0) has its node two back at
another level, and the trellis has no edge from there. Two ways to read it (``prev_prev``):

- ``"path"``: through a *path edge*, a :class:`~autodeeplab.trellis.Resample` from that level
  (:func:`build_path_edges`; new state-dict keys ``path_edges.<layer>_<level>_<source>.*``,
  added by ``SearchNetwork.add_path_edges``, never read by the supernet's forward). The
  network is exactly the genotype's. A supernet that trains single paths (spos) trains them;
  on another, they hold their deterministic initialisation (a fixed seed), i.e. random
  projections: a score through them penalises every level change by the noise they add.
- ``"trellis"`` (trained edges only; the paper's supernet): with the path's node two back
  at level a and the cell at s, |a - s| = 1: the cell's *H^{l-1}* edge from level a
  (``pre[a]``), which maps a level-a state of the same width to s and was trained on layer
  l-1's state there, reads the path's own H^{l-2}; |a - s| = 2 (a climb or a descent of two
  levels over two layers): no edge of the supernet maps level a to s, and the cell's
  preprocessed H^{l-1} stands in for H^{l-2}, as the retrain code does for a missing H^{l-2}.
  What it costs: an edge trained on the next layer's state (its BatchNorm statistics are
  recalibrated before scoring, its weights are not), and in the two-level case a network that
  differs from the genotype: its branches on input 0 read H^{l-1}, so a score there is of a
  cell without its skip from two layers back.

``"auto"`` picks ``"path"`` when the supernet holds path edges and ``"trellis"`` otherwise.

The head: the supernet's forward sums the logits of every last-layer level's head, and each
head was trained as one term of that sum; alone it has never had to carry the prediction, so
a DARTS supernet's single-path logits are off in scale until the weights learn it (spos trains
them alone).

BatchNorm. A single-edge slice of an edge-batched BatchNorm normalises with (and in training
updates) its edge's slice of the running statistics, with the module's momentum; with
``momentum=None`` (a cumulative average, as :func:`recalibrate` sets it) the count is the
module's batch count, advanced once per forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.genotype import Genotype
from autodeeplab.ops import DilConv, SepConv, _PerEdge, resize
from autodeeplab.space.cell import MixedOp
from autodeeplab.trellis import STEM_LEVEL, Resample, Trellis, halve

__all__ = [
    "PREV_PREV_MODES",
    "batchnorms_used",
    "build_path_edges",
    "check_genotype",
    "path_edge_key",
    "recalibrate",
    "single_path_forward",
]

#: How a cell reads H^{l-2} where the trellis has no edge from the path's own node (see above).
PREV_PREV_MODES = ("auto", "path", "trellis")

_BN = nn.modules.batchnorm._BatchNorm


def path_edge_key(layer: int, level: int, source: int) -> str:
    """Key in ``SearchNetwork.path_edges`` of the H^{l-2} edge from ``source`` to (layer, level)."""
    return f"{layer}_{level}_{source}"


def build_path_edges(trellis: Trellis, affine: bool) -> nn.ModuleDict:
    """Every H^{l-2} edge a path needs and the trellis lacks: level a of layer l-2 -> (l, s).

    One per node (l >= 3) and level a of layer l-2 within two levels of s, other than the
    node's own H^{l-2} level (layers 1 and 2 read the stem, which every path shares).
    """
    edges = nn.ModuleDict()
    for node in trellis.nodes():
        if node.layer < 3:
            continue
        for a in trellis.levels_at(node.layer - 2):
            if a != node.prev_prev_level and abs(a - node.level) <= 2:
                edges[path_edge_key(node.layer, node.level, a)] = Resample(
                    trellis.channels(node.layer - 2, a),
                    trellis.width(node.level),
                    node.level - a,
                    affine,
                )
    return edges


@dataclass(frozen=True)
class _Branch:
    """One (op, input) branch of a block: the op's module in the mixed op of its input."""

    state: int  # 0 = H^{l-2}, 1 = H^{l-1}, k >= 2 = block k-1
    op: nn.Module
    edge: int  # the branch's edge among the edges that read ``state``
    num_edges: int
    pre_relu: bool
    shared: bool  # the same output on every edge (pools, skip): computed once per state


@dataclass(frozen=True)
class _Layer:
    """A path node: its level, its H^{l-1} edge, its H^{l-2} edge (None: H^{l-1} stands in)."""

    level: int
    pre: nn.Module
    pre_prev: nn.Module | None
    blocks: tuple[tuple[_Branch, ...], ...]
    partial_channels: int


def check_genotype(net: Any, genotype: Genotype) -> None:
    """Raise a ValueError unless ``genotype`` is a network of ``net``'s search space."""
    if genotype.num_layers != net.num_layers or genotype.num_blocks != net.num_blocks:
        raise ValueError(
            f"genotype has {genotype.num_layers} layers and {genotype.num_blocks} blocks, the "
            f"supernet {net.num_layers} and {net.num_blocks}; score genotypes of its own space"
        )
    if max(genotype.path) >= net.num_levels:
        raise ValueError(
            f"genotype path reaches level {max(genotype.path)}, the supernet has levels "
            f"0..{net.num_levels - 1} (strides {list(net.strides)})"
        )
    unknown = sorted({op for blk in genotype.cell for op, _ in blk} - set(net.primitives))
    if unknown:
        raise ValueError(
            f"genotype uses ops {unknown} the supernet lacks (it has {', '.join(net.primitives)})"
        )


def _check(net: Any, genotype: Genotype, prev_prev: str) -> str:
    if prev_prev not in PREV_PREV_MODES:
        modes = ", ".join(PREV_PREV_MODES)
        raise ValueError(f"prev_prev must be one of {modes}, got {prev_prev!r}")
    check_genotype(net, genotype)
    if prev_prev == "auto":
        return "path" if net.path_edges is not None else "trellis"
    if prev_prev == "path" and net.path_edges is None:
        raise ValueError("prev_prev='path' needs path edges: call add_path_edges() first")
    return prev_prev


def _plan(net: Any, genotype: Genotype, prev_prev: str) -> list[_Layer]:
    """Resolve every module the genotype runs, layer by layer."""
    mode = _check(net, genotype, prev_prev)
    levels = [STEM_LEVEL, 0, *genotype.path]  # layers -1, 0, 1..L
    plan = []
    for layer, level in enumerate(genotype.path, start=1):
        node = net.layers[layer - 1][level]  # a layer's nodes are listed finest level first
        pre = node.pre[node.sources.index(levels[layer])]
        a = levels[layer - 1]
        if a == node.prev_prev_level:
            pre_prev = node.pre_prev
        elif mode == "path":
            pre_prev = net.path_edges[path_edge_key(layer, level, a)]
        else:
            pre_prev = node.pre[node.sources.index(a)] if a in node.sources else None
        blocks = []
        for block, branches in enumerate(genotype.cell):
            resolved = []
            for op_name, state in branches:
                mixed: MixedOp = node.cell.mixed[state]
                col = mixed.columns.index(net.primitives.index(op_name))
                resolved.append(
                    _Branch(
                        state,
                        mixed.ops[col],
                        block - max(0, state - 1),
                        mixed.num_edges,
                        mixed._pre_relu[col],
                        mixed._shared[col],
                    )
                )
            blocks.append(tuple(resolved))
        plan.append(_Layer(level, pre, pre_prev, tuple(blocks), net.partial_channels))
    return plan


def batchnorms_used(net: Any, genotype: Genotype, prev_prev: str = "auto") -> list[_BN]:
    """Every BatchNorm module the single-path forward of ``genotype`` reads (each once).

    An edge-batched op counts as a whole: its BatchNorm also holds the other edges' slices.
    """
    modules: list[nn.Module] = [net.stem, net.heads[genotype.path[-1]]]
    for layer in _plan(net, genotype, prev_prev):
        modules += [layer.pre] + ([layer.pre_prev] if layer.pre_prev is not None else [])
        modules += [br.op for blk in layer.blocks for br in blk]
    seen: dict[int, _BN] = {}
    for module in modules:
        for m in module.modules():
            if isinstance(m, _BN):
                seen.setdefault(id(m), m)
    return list(seen.values())


def single_path_forward(net: Any, x: Tensor, genotype: Genotype, prev_prev: str = "auto") -> Tensor:
    """(N, 3, H, W) -> logits (N, num_classes, H, W) of ``genotype`` on ``net``'s weights."""
    plan = _plan(net, genotype, prev_prev)
    stem0, stem1 = net.stem(x)
    sizes = [tuple(stem1.shape[-2:])]
    while len(sizes) < net.num_levels:
        sizes.append(halve(sizes[-1]))
    sliced: dict[int, _BN] = {}  # edge-batched BatchNorms read by slices in this pass
    prev2, prev = stem0, stem1
    for layer in plan:
        size = sizes[layer.level]
        s1 = layer.pre(prev, size)
        s0 = s1 if layer.pre_prev is None else layer.pre_prev(prev2, size)
        prev2, prev = prev, _cell(layer, s0, s1, sliced)
    logits = resize(net.heads[genotype.path[-1]](prev), x.shape[-2:])
    with torch.no_grad():
        for bn in sliced.values():
            if bn.training and bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
    return logits


def _cell(layer: _Layer, s0: Tensor, s1: Tensor, sliced: dict[int, _BN]) -> Tensor:
    """The genotype's blocks on (s0, s1); each op's ReLU and each shared op run once per state."""
    states = [s0, s1]
    relu: dict[int, Tensor] = {}
    shared: dict[tuple[int, int], Tensor] = {}
    p = layer.partial_channels
    for block in layer.blocks:
        total: Tensor | None = None
        for br in block:
            x = states[br.state]
            if br.pre_relu:
                if br.state not in relu:
                    relu[br.state] = F.relu(x)
                xin = relu[br.state]
            else:
                xin = x
            cp = x.shape[1] // p
            key = (br.state, id(br.op))
            if br.shared and key in shared:
                y = shared[key]
            else:
                y = _edge(br, xin[:, :cp] if p > 1 else xin, sliced)
                if br.shared:
                    shared[key] = y
            if p > 1:  # PC-DARTS: the other channels pass through, then the channel shuffle
                n, c, h, w = x.shape
                rest = x[:, cp:].reshape(n, p - 1, cp, h, w).transpose(1, 2)
                y = torch.cat([y.unsqueeze(2), rest], dim=2).reshape(n, c, h, w)
            total = y if total is None else total + y
        states.append(total)
    return torch.cat(states[2:], dim=1)


def _edge(br: _Branch, x: Tensor, sliced: dict[int, _BN]) -> Tensor:
    """One edge of an edge-batched op: slices of its weights, never the other edges."""
    op, e = br.op, br.edge
    if br.num_edges == 1 or br.shared:
        return op.forward_relu(x) if br.pre_relu else op(x)
    if isinstance(op, SepConv):
        c = op.dw1.out_channels // br.num_edges
        lo, hi = e * c, (e + 1) * c
        y = _conv(op.dw1, x, lo, hi, groups=c)
        y = _bn(op.bn1, _conv(op.pw1, y, lo, hi), lo, hi, sliced)
        y = _conv(op.dw2, F.relu(y), lo, hi, groups=c)
        return _bn(op.bn2, _conv(op.pw2, y, lo, hi), lo, hi, sliced)
    if isinstance(op, DilConv):
        c = op.conv.out_channels // br.num_edges
        lo, hi = e * c, (e + 1) * c
        if op.stride == 2:
            x = resize(x, halve(tuple(x.shape[-2:])), align_corners=True)
        return _bn(op.bn, _conv(op.conv, x, lo, hi), lo, hi, sliced)
    if isinstance(op, _PerEdge):
        return op.edges[e](x)
    # An op without a known edge-batched layout: run every edge and keep this one (correct,
    # only slower).
    y = op.forward_relu(x) if br.pre_relu else op(x)
    n, _, h, w = y.shape
    return y.view(n, br.num_edges, -1, h, w)[:, e]


def _conv(conv: nn.Conv2d, x: Tensor, lo: int, hi: int, groups: int = 1) -> Tensor:
    """Output channels lo:hi of an edge-batched conv (its edge's filters only)."""
    bias = None if conv.bias is None else conv.bias[lo:hi]
    return F.conv2d(x, conv.weight[lo:hi], bias, conv.stride, conv.padding, conv.dilation, groups)


def _bn(bn: _BN, x: Tensor, lo: int, hi: int, sliced: dict[int, _BN]) -> Tensor:
    """Channels lo:hi of a BatchNorm, as ``_BatchNorm.forward`` would normalise them."""
    factor = 0.0
    if bn.training and bn.track_running_stats:
        sliced[id(bn)] = bn
        factor = bn.momentum
        if factor is None:  # a cumulative average, this pass being the module's count + 1
            factor = 1.0 / (float(bn.num_batches_tracked) + 1.0)
    use_batch = bn.training or bn.running_mean is None
    track = not bn.training or bn.track_running_stats
    rm = bn.running_mean[lo:hi] if track and bn.running_mean is not None else None
    rv = bn.running_var[lo:hi] if track and bn.running_var is not None else None
    w = None if bn.weight is None else bn.weight[lo:hi]
    b = None if bn.bias is None else bn.bias[lo:hi]
    return F.batch_norm(x, rm, rv, w, b, use_batch, factor, bn.eps)


@contextlib.contextmanager
def _cumulative(bns: Iterable[_BN]) -> Iterator[None]:
    """Reset ``bns`` and let them average cumulatively (momentum None) inside the block."""
    bns = list(bns)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    try:
        yield
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum


@torch.no_grad()
def recalibrate(
    net: Any,
    genotype: Genotype,
    batches: Iterable[Tensor],
    prev_prev: str = "auto",
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> int:
    """Recompute the BatchNorm statistics ``genotype`` reads as the mean over ``batches``.

    Resets the running statistics of every BatchNorm the genotype's single path uses
    (:func:`batchnorms_used`), runs the image batches through it in training mode with
    momentum None (a cumulative average) without gradients, and leaves the net in eval mode.
    Returns the number of batches run.
    """
    device = device or next(net.parameters()).device
    count = 0
    with _cumulative(batchnorms_used(net, genotype, prev_prev)):
        net.train()
        try:
            for x in batches:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    single_path_forward(net, x.to(device, non_blocking=True), genotype, prev_prev)
                count += 1
        finally:
            net.eval()
    return count
