"""What a supernet holds, counted from its structure without building it: weights, BatchNorm
buffers, and the activations autograd saves in one search step.

The supernet is described by a :class:`autodeeplab.trellis.SupernetSpec`; its structure
comes from the spec's :class:`autodeeplab.trellis.Trellis` (nodes, levels, widths, the stem)
and the profiles declared beside each part: every op's (:class:`autodeeplab.ops.OpSpec`),
the resampling edges' (:class:`autodeeplab.trellis.Resample`) and the stem's
(:class:`autodeeplab.trellis.StemSpec`). The counts are exact for weights and buffers and
within a few percent of ``saved_tensors_hooks`` for the activations (tests/space/test_memory.py);
:mod:`autodeeplab.space.memory` turns them into a peak-memory estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from autodeeplab.ops import OpSpec, op_spec
from autodeeplab.trellis import PAPER_SUPERNET, Resample, SupernetSpec, halve, level_sizes

__all__ = [
    "saved_activation_bytes",
    "search_parameter_count",
    "single_path_saved_bytes",
    "single_path_weight_bound",
]


def _specs(primitives: Sequence[str]) -> list[OpSpec]:
    """The profiles of the ops a mixed op runs ('none' is never run)."""
    return [op_spec(name) for name in primitives if name != "none"]


def search_parameter_count(
    num_classes: int, spec: SupernetSpec = PAPER_SUPERNET
) -> tuple[int, int]:
    """(weight parameters, BatchNorm buffer elements) of a SearchNetwork, without building it."""
    trellis = spec.trellis()
    stem = trellis.stem
    num_layers, num_blocks, affine = spec.num_layers, spec.num_blocks, spec.affine
    partial_channels, pool_bn = spec.partial_channels, spec.pool_bn
    specs = _specs(spec.primitives)
    weights, bn_buffers = stem.weight_count(), stem.buffer_count()
    for node in trellis.nodes():
        layer, level, width = node.layer, node.level, trellis.width(node.level)
        inputs = [(layer - 1, s) for s in node.sources] + [(layer - 2, node.prev_prev_level)]
        for src_layer, src in inputs:
            c_in = trellis.channels(src_layer, src)
            weights += Resample.weight_count(c_in, width, level - src, affine)
            bn_buffers += Resample.buffer_count(width, level - src)
        cp = width // partial_channels  # partial channels: the ops see 1/K of them
        for state in range(num_blocks + 1):
            edges = num_blocks - max(0, state - 1)
            for spec in specs:
                weights += edges * (spec.weights(cp) + (2 * spec.batchnorms * cp if affine else 0))
                bn_buffers += 2 * edges * cp * spec.batchnorms
                if pool_bn and spec.memory.pool:  # one BN after the pool, shared by the edges
                    bn_buffers += 2 * cp
    for level in trellis.levels_at(num_layers):
        c = trellis.channels(num_layers, level)
        weights += c * c + c * c * 9 + (c * c + c) + 3 * c * c + c * num_classes + num_classes
        weights += 3 * 2 * c  # the affine BatchNorms of the head
        bn_buffers += 3 * 2 * c
    return weights, bn_buffers


def _mixed_saved(
    edges: int,
    specs: Sequence[OpSpec],
    p: int,
    arch: bool,
    grad_input: bool,
    input_units: float = 1.0,
    pool_bn: bool = True,
) -> tuple[float, float]:
    """(units saved, units of the largest tensor) of one mixed op; 1 unit = its input's size.

    ``grad_input``: whether the input takes part in autograd (in the architecture step the
    first layer's inputs do not: only the ops' outputs are saved, for alpha). A saved view
    keeps its whole storage alive: ``input_units`` is the size of the input's storage.
    """
    cp = 1.0 / p  # partial channels: the ops see 1/p of the channels
    memory = [spec.memory for spec in specs]
    units, largest = 0.0, 1.0
    if grad_input:
        if any(m.pre_relu for m in memory):
            units += cp  # the ReLU shared by the ops that start with one
        for m in memory:
            units += m.saved(edges) * cp
            largest = max(largest, m.largest(edges) * cp)
            if pool_bn and m.pool:  # the pool's output, for the BatchNorm after it
                units += cp
    pools = any(m.pool for m in memory)
    if (grad_input and pools) or (arch and (any(m.identity for m in memory) or p > 1)):
        units += input_units  # pools save their input; skip's output is its input
    if arch:  # y * w[:, k] saves every op's output for the gradient of alpha
        for m in memory:
            units += m.output(edges) * cp
    return units, largest


def saved_activation_bytes(
    crop: int,
    batch_size: int,
    num_classes: int = 19,
    spec: SupernetSpec = PAPER_SUPERNET,
    *,
    checkpoint_cells: bool = False,
    arch_step: bool = True,
    bytes_per_element: int = 4,
) -> tuple[int, int]:
    """(bytes autograd saves in one search step, bytes of its largest single activation).

    ``arch_step``: the architecture step (weights frozen, alpha/beta learn) or the w step.
    Counted per node from the channel counts and spatial sizes of the trellis.
    """
    trellis = spec.trellis()
    stem = trellis.stem
    num_layers, pool_bn = spec.num_layers, spec.pool_bn
    # Pixels by level + 1: the stem's stride-2 output (level -1), then levels 0, 1, ...
    stem0 = halve((crop, crop))
    pixels = [stem0[0] * stem0[1]] + [h * w for h, w in level_sizes((crop, crop), spec.num_levels)]
    specs = _specs(spec.primitives)
    n, b, p = batch_size, spec.num_blocks, spec.partial_channels
    saved = 0.0  # elements
    largest = float(n * 3 * crop * crop)
    cells: list[float] = []
    if not arch_step:  # the stem learns only in the w step; in the architecture step it is fixed
        saved += n * stem.saved_elements((crop, crop))
    for node in trellis.nodes():
        layer, level, sources, pp = node
        k, c, hw = len(sources), trellis.width(level), pixels[level + 1]
        # In the architecture step the stem is fixed: the states it feeds (H^{l-1} of layer
        # 1, H^{l-2} of layers 1-2) are constants, and their edges save nothing.
        grad0, grad1 = not arch_step or layer > 2, not arch_step or layer > 1
        node_saved = 0.0
        edges = [(layer - 1, s) for s in sources] if grad1 else []
        for src_layer, src in edges + ([(layer - 2, pp)] if grad0 else []):
            c_in = trellis.channels(src_layer, src)
            node_saved += n * Resample.saved_elements(c_in, c, level - src, pixels[src + 1 :])
        unit0, unit1 = n * c * hw, k * n * c * hw
        cell = 0.0
        for unit, grad in ((unit0, grad0), (unit1, grad1)):  # mixed ops of H^{l-2}, H^{l-1}
            u, big = _mixed_saved(b, specs, p, arch_step, grad, pool_bn=pool_bn)
            cell += u * unit
            largest = max(largest, big * unit)
        for i in range(b - 1):  # the sum of block i feeds the edges into blocks i+1 .. B-1
            # sums[0] is a view of all B partial sums: saving it keeps the B of them
            u, big = _mixed_saved(b - 1 - i, specs, p, arch_step, True, b if i == 0 else 1, pool_bn)
            cell += u * unit1
            largest = max(largest, big * unit1)
        largest = max(largest, b * unit1)  # the cell's output, B blocks wide
        if arch_step:
            node_saved += b * unit1  # out * beta saves the cell's output for beta's gradient
        cells.append(cell)
        if checkpoint_cells:
            saved += node_saved + unit0 + unit1  # only the cell's inputs, to recompute it
        else:
            saved += node_saved + cell
    if checkpoint_cells and cells:
        saved += max(cells)  # one cell's tensors exist again while it is recomputed
    for level in trellis.levels_at(num_layers):  # heads: ReLU, 2 branches, cat, project
        c, hw = trellis.channels(num_layers, level), pixels[level + 1]
        saved += 10 * n * c * hw
        largest = max(largest, 3 * n * c * hw)
    saved += n * num_classes * crop * crop  # the loss's log_softmax output
    largest = max(largest, n * num_classes * crop * crop)
    return int(saved * bytes_per_element), int(largest * bytes_per_element)


def single_path_saved_bytes(
    crop: int,
    batch_size: int,
    num_classes: int = 19,
    spec: SupernetSpec = PAPER_SUPERNET,
    *,
    bytes_per_element: int = 4,
) -> tuple[int, int]:
    """(bytes autograd saves in one single-path w step, bytes of its largest activation).

    An upper bound over the sub-networks a single-path search samples: the path that stays
    at level 0 (a cell's width doubles a level down while its area quarters, so level 0 holds
    the most), every branch the op that saves the most, one edge each (the single-path
    forward runs only the sampled op of the sampled edge), and one head.
    """
    trellis = spec.trellis()
    stem, num_layers = trellis.stem, spec.num_layers
    stem0 = halve((crop, crop))
    pixels = [stem0[0] * stem0[1]] + [h * w for h, w in level_sizes((crop, crop), spec.num_levels)]
    n, b, c, hw = batch_size, spec.num_blocks, trellis.width(0), pixels[1]
    unit = n * c * hw
    branch, big = max(
        _mixed_saved(1, [op], 1, False, True, pool_bn=spec.pool_bn)
        for op in _specs(spec.primitives)
    )
    saved = float(n * stem.saved_elements((crop, crop)))
    largest = float(max(n * 3 * crop * crop, b * unit, big * unit))
    for layer in range(1, num_layers + 1):
        for src_layer in (layer - 1, layer - 2):  # H^{l-1}, H^{l-2}, both at level 0
            c_in = trellis.channels(src_layer, 0)
            # Layer 1's H^{l-2} is the stem's stride-2 output: a strided conv from level -1.
            delta, first = (1, 0) if src_layer < 0 else (0, 1)
            saved += n * Resample.saved_elements(c_in, c, delta, pixels[first:])
        saved += (2 * b * branch + b) * unit  # 2 branches a block, and the cell's output
    saved += 10 * unit * b  # the head at level 0, on the cell's B * width channels
    saved += n * num_classes * crop * crop  # the loss's log_softmax output
    largest = max(largest, 3 * unit * b, n * num_classes * crop * crop)
    return int(saved * bytes_per_element), int(largest * bytes_per_element)


def single_path_weight_bound(num_classes: int, spec: SupernetSpec = PAPER_SUPERNET) -> int:
    """At most the weights one sampled sub-network trains (those that get a gradient).

    Per layer the widest level the path can reach by then (weights grow with the width
    squared), its 2B branches each the heaviest op, its two inputs' resampling from the
    farthest level they may come from; the stem and the head at the widest level.
    """
    trellis = spec.trellis()
    num_layers, num_blocks = spec.num_layers, spec.num_blocks
    specs = _specs(spec.primitives)
    total = trellis.stem.weight_count()
    top = spec.num_levels - 1
    for layer in range(1, num_layers + 1):
        level = min(layer, top)  # the path climbs at most one level a layer
        width = trellis.width(level)
        total += 2 * num_blocks * max(op.weights(width) for op in specs)
        for src_layer, reach in ((layer - 1, 1), (layer - 2, 2)):
            sources = [t for t in range(level - reach, level + reach + 1) if 0 <= t <= top]
            total += max(
                Resample.weight_count(
                    trellis.channels(src_layer, t), width, level - t if src_layer > 0 else 1, False
                )
                for t in sources
            )
    c = trellis.channels(num_layers, min(num_layers, top))
    total += c * c + c * c * 9 + (c * c + c) + 3 * c * c + c * num_classes + num_classes
    return total + 3 * 2 * c
