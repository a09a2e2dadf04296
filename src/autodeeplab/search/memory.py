"""Peak memory of a search, estimated from the config before anything is built.

The peak comes in the backward pass of the w step or of the architecture step, whichever
needs more (the w step also trains the stem and builds the weights' gradients; the
architecture step keeps every op's output for alpha's gradient). It is the sum of

- a fixed overhead: the process (Python, the torch libraries; on CPU the peak is resident
  memory, RSS) or, on CUDA, the context, which ``max_memory_allocated`` does not count;
- the persistent state: the weights and SGD's momentum, i.e. 2x the weight bytes, plus
  BatchNorm buffers and the architecture parameters with Adam's two moments. The gradients
  are not kept: the engine's ``search_step`` frees them (``zero_grad(set_to_none=True)``) before
  the forward pass and after the optimiser step, so they exist only during a step;
- the activations autograd saves for the backward pass, counted from the network's
  structure (:func:`saved_activation_bytes`): for every trellis node, its resampling edges,
  and for every mixed op of its cell, the tensors each candidate op keeps (a sep conv 6 per
  edge, a dil conv 1 per edge, a max pool its input and int64 indices...), at the node's
  channel count and spatial size; then the heads, the stem and the loss;
- a transient term, that of the step with the larger peak: the gradients in flight in the
  backward pass (twice the largest single activation) and the allocator's slack (a fraction
  of the saved bytes), and in the w step the weights' gradients, counted in full: they are
  built while the saved tensors are freed, but few of the freed blocks fit them.

With ``checkpoint_cells`` only the cells' inputs are kept, and one cell at a time is
recomputed in the backward pass, so the cells' saved tensors count once (the largest), not
once per node. The counts match what autograd saves, to a few percent (checked in the tests
with ``saved_tensors_hooks`` on CPU). The two overhead constants were fitted on CPU peak RSS
(calibration below), so the estimate holds for other crops, batches and widths, and for
CUDA, where activations dominate.

Calibration: one process per row (``OMP_NUM_THREADS=1``), 2 steps of each kind as
the engine's ``search_step`` runs them (gradients set to None before the forward pass and after
the optimiser step, the other parameter set frozen), peak RSS from ``VmHWM``; 2 shared CPU
cores, torch 2.13, 19 classes, all 8 ops, B=5. The fixed overhead (390 MiB: 220 MiB of
imported libraries, about 100 MiB that building the network leaves with the allocator, the
rest the autograd graph's nodes and slack) and the slack fraction (6%) were fitted to these
rows, all within 4%:

===== ===== == == ===== ==== ======== ============= ===========
crop  batch L  F  ckpt  PC K weights  measured MiB  estimate
===== ===== == == ===== ==== ======== ============= ===========
32    2     12 8  off   1    48.5M    999           1004
64    2     12 8  off   1    48.5M    1156          1178
96    2     12 8  off   1    48.5M    1436          1468
128   2     12 8  off   1    48.5M    1948          1923
64    4     12 8  off   1    48.5M    1360          1410
160   1     8  8  off   1    30.6M    1210          1213
64    2     6  4  off   1    5.7M     497           514
64    2     12 8  on    1    48.5M    990           972
128   2     12 8  on    1    48.5M    1080          1047
64    2     12 8  off   4    7.3M     555           549
128   2     12 8  off   4    7.3M     828           802
===== ===== == == ===== ==== ======== ============= ===========

(PC K: ``partial_channels``, PC-DARTS.) With L=12, F=8 the w step (weights, momentum and
gradients) is the measured peak at crop 64, batch 2, the architecture step from crop 96 or
batch 4; the estimate, counting the gradients in full, moves that switch to about crop 128,
which costs it at most the 4% above. The saved-activation count alone matches
``saved_tensors_hooks`` to within 5% (it misses only small tensors: BatchNorm statistics,
the input batch). CUDA is not calibrated here (no GPU was at hand): there the estimate is
the same count plus a 600 MiB context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from autodeeplab.config import SearchConfig
from autodeeplab.ops import PRIMITIVES

__all__ = [
    "MemoryEstimate",
    "device_memory_bytes",
    "estimate_search_memory",
    "format_estimate",
    "memory_warning",
    "resolve_checkpoint_cells",
    "saved_activation_bytes",
    "search_parameter_count",
]

# Fitted on CPU (see the module docstring): the libraries' resident memory (220 MiB), what
# building the network leaves behind (about 100 MiB of its temporaries, which the allocator
# keeps), and the autograd graph's own nodes and the allocator's slack during a step.
CPU_BASE_BYTES = 390 * 2**20
CUDA_CONTEXT_BYTES = 600 * 2**20  # CUDA context + cuDNN/cuBLAS workspaces, outside the allocator
TRANSIENT_LARGEST = 2.0  # gradient buffers in flight, in units of the largest activation
TRANSIENT_FRACTION = 0.06  # allocator slack (fragmentation, caching), of the saved bytes

_SEP = ("sep_conv_3x3", "sep_conv_5x5")
_DIL = ("dil_conv_3x3", "dil_conv_5x5")
_POOLS = ("max_pool_3x3", "avg_pool_3x3")
_KERNEL = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "dil_conv_3x3": 3, "dil_conv_5x5": 5}


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of a search's estimated peak memory, in bytes."""

    total: int
    fixed: int
    persistent: int
    activations: int
    transient: int
    weight_params: int
    device: str
    checkpoint_cells: bool = False  # as resolved (``auto`` decided)

    @property
    def gib(self) -> float:
        """The total in GiB."""
        return self.total / 2**30


def _halve(size: int) -> int:
    return (size + 1) // 2  # 'SAME' stride 2: ceil(d / 2)


def _levels_at(layer: int, num_levels: int) -> list[int]:
    return [-1] if layer < 0 else list(range(min(layer, num_levels - 1) + 1))


class _Net:
    """The trellis of a search network: levels, channels and spatial sizes, no tensors."""

    def __init__(
        self,
        crop: int,
        num_layers: int,
        num_blocks: int,
        filter_multiplier: int,
        num_levels: int,
        stem: Sequence[int] = (64, 64, 128),
    ) -> None:
        self.L, self.B, self.F = num_layers, num_blocks, filter_multiplier
        self.nlev, self.stem = num_levels, tuple(stem)
        self.stem0_side = _halve(crop)
        side = _halve(self.stem0_side)
        self.sides = [side]
        for _ in range(1, num_levels):
            side = _halve(side)
            self.sides.append(side)

    def hw(self, level: int) -> int:
        """Pixels of a feature map at ``level`` (-1: the stem's stride-2 output)."""
        side = self.stem0_side if level < 0 else self.sides[level]
        return side * side

    def channels(self, layer: int, level: int) -> int:
        """Channels of the hidden state of ``layer`` at ``level`` (layer 0: the stem)."""
        if layer < 0:
            return self.stem[1]
        if layer == 0:
            return self.stem[2]
        return self.B * self.F * 2**level

    def nodes(self) -> list[tuple[int, int, list[int], int]]:
        """(layer, level, source levels, H^{l-2} level) of every node, in build order."""
        out = []
        for layer in range(1, self.L + 1):
            prev, prev2 = _levels_at(layer - 1, self.nlev), _levels_at(layer - 2, self.nlev)
            for level in _levels_at(layer, self.nlev):
                sources = [s for s in (level - 1, level, level + 1) if s in prev]
                pp = min(prev2, key=lambda s, lv=level: abs(s - lv))
                out.append((layer, level, sources, pp))
        return out


def _resample_params(c_in: int, c_out: int, delta: int, affine: bool) -> int:
    bn = 2 * c_out if affine else 0
    if delta > 0:
        return c_in * c_out * 9 + bn + (delta - 1) * (c_out * c_out * 9 + bn)
    return c_in * c_out + bn


def _mixed_params(c: int, edges: int, primitives: Sequence[str], affine: bool, p: int) -> int:
    c = c // p
    total = 0
    for name in primitives:
        if name in _SEP:
            k = _KERNEL[name]
            total += edges * (2 * c * k * k + 2 * c * c) + (4 * edges * c if affine else 0)
        elif name in _DIL:
            k = _KERNEL[name]
            total += edges * c * c * k * k + (2 * edges * c if affine else 0)
    return total


def search_parameter_count(
    num_classes: int,
    num_layers: int = 12,
    num_blocks: int = 5,
    filter_multiplier: int = 8,
    strides: Sequence[int] = (4, 8, 16, 32),
    primitives: Sequence[str] = PRIMITIVES,
    affine: bool = False,
    partial_channels: int = 1,
    stem: Sequence[int] = (64, 64, 128),
    pool_bn: bool = True,
) -> tuple[int, int]:
    """(weight parameters, BatchNorm buffer elements) of a SearchNetwork, without building it."""
    net = _Net(8, num_layers, num_blocks, filter_multiplier, len(strides), stem)
    c0, c1, c2 = stem
    weights = 3 * c0 * 9 + c0 * c1 * 9 + c1 * c2 * 9 + 2 * (c0 + c1 + c2)
    bn_buffers = 2 * (c0 + c1 + c2)
    for layer, level, sources, pp in net.nodes():
        width = filter_multiplier * 2**level
        for s in sources:
            weights += _resample_params(net.channels(layer - 1, s), width, level - s, affine)
            bn_buffers += 2 * width * max(level - s, 1)
        weights += _resample_params(net.channels(layer - 2, pp), width, level - pp, affine)
        bn_buffers += 2 * width * max(level - pp, 1)
        for state in range(num_blocks + 1):
            edges = num_blocks - max(0, state - 1)
            weights += _mixed_params(width, edges, primitives, affine, partial_channels)
            for name in primitives:
                cp = width // partial_channels
                bn_buffers += 2 * edges * cp * (2 if name in _SEP else 1 if name in _DIL else 0)
                if pool_bn and name in _POOLS:  # one BN after the pool, shared by the edges
                    bn_buffers += 2 * cp
    for level in _levels_at(num_layers, len(strides)):
        c = net.channels(num_layers, level)
        weights += c * c + c * c * 9 + (c * c + c) + 3 * c * c + c * num_classes + num_classes
        weights += 3 * 2 * c  # the affine BatchNorms of the head
        bn_buffers += 3 * 2 * c
    return weights, bn_buffers


def _mixed_saved(
    edges: int,
    primitives: Sequence[str],
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
    names = [n for n in primitives if n != "none"]
    units, largest = 0.0, 1.0
    if grad_input:
        if any(n in _SEP or n in _DIL for n in names):
            units += cp  # the ReLU shared by the conv ops
        if "max_pool_3x3" in names:
            units += 2 * cp  # its int64 indices, twice a float32
        for n in names:
            if n in _SEP:  # (repeat,) dw, pw, ReLU, dw, pw outputs per edge
                units += (6 if edges > 1 else 5) * edges * cp
                largest = max(largest, edges * cp)
            elif n in _DIL:  # the conv output, for its BatchNorm
                units += edges * cp
            elif pool_bn and n in _POOLS:  # the pool's output, for the BatchNorm after it
                units += cp
    pools = any(n in _POOLS for n in names)
    if (grad_input and pools) or (arch and ("skip_connect" in names or p > 1)):
        units += input_units  # pools save their input; skip's output is its input
    if arch:  # y * w[:, k] saves every op's output for the gradient of alpha
        for n in names:
            if n in _SEP or n in _DIL:
                units += edges * cp
            elif n in _POOLS:
                units += cp
    return units, largest


def saved_activation_bytes(
    crop: int,
    batch_size: int,
    num_classes: int = 19,
    num_layers: int = 12,
    num_blocks: int = 5,
    filter_multiplier: int = 8,
    strides: Sequence[int] = (4, 8, 16, 32),
    primitives: Sequence[str] = PRIMITIVES,
    partial_channels: int = 1,
    checkpoint_cells: bool = False,
    arch_step: bool = True,
    bytes_per_element: int = 4,
    stem: Sequence[int] = (64, 64, 128),
    pool_bn: bool = True,
) -> tuple[int, int]:
    """(bytes autograd saves in one search step, bytes of its largest single activation).

    ``arch_step``: the architecture step (weights frozen, alpha/beta learn) or the w step.
    Counted per node from the channel counts and spatial sizes; see the module docstring.
    """
    net = _Net(crop, num_layers, num_blocks, filter_multiplier, len(strides), stem)
    n, b, p = batch_size, num_blocks, partial_channels
    saved = 0.0  # elements
    largest = float(n * 3 * crop * crop)
    cells: list[float] = []
    c0, _, c2 = net.stem
    if not arch_step:  # the stem learns only in the w step; in the architecture step it is fixed
        # conv0 out, its ReLU, conv1 out, ReLU(stem0) at stride 2; conv2 out at stride 4
        saved += n * (4 * c0 * net.hw(-1) + c2 * net.hw(0))
    for layer, level, sources, pp in net.nodes():
        k, c, hw = len(sources), filter_multiplier * 2**level, net.hw(level)
        # In the architecture step the stem is fixed: the states it feeds (H^{l-1} of layer
        # 1, H^{l-2} of layers 1-2) are constants, and their edges save nothing.
        grad0, grad1 = not arch_step or layer > 2, not arch_step or layer > 1
        node = 0.0
        if grad1:
            for src in sources:
                node += _resample_saved(net, n, layer - 1, src, level, c)
        if grad0:
            node += _resample_saved(net, n, layer - 2, pp, level, c)
        unit0, unit1 = n * c * hw, k * n * c * hw
        cell = 0.0
        for unit, grad in ((unit0, grad0), (unit1, grad1)):  # mixed ops of H^{l-2}, H^{l-1}
            u, big = _mixed_saved(b, primitives, p, arch_step, grad, pool_bn=pool_bn)
            cell += u * unit
            largest = max(largest, big * unit)
        for i in range(b - 1):  # the sum of block i feeds the edges into blocks i+1 .. B-1
            # sums[0] is a view of all B partial sums: saving it keeps the B of them
            u, big = _mixed_saved(
                b - 1 - i, primitives, p, arch_step, True, b if i == 0 else 1, pool_bn
            )
            cell += u * unit1
            largest = max(largest, big * unit1)
        largest = max(largest, b * unit1)  # the cell's output, B blocks wide
        if arch_step:
            node += b * unit1  # out * beta saves the cell's output for beta's gradient
        cells.append(cell)
        if checkpoint_cells:
            saved += node + unit0 + unit1  # only the cell's inputs, to recompute it
        else:
            saved += node + cell
    if checkpoint_cells and cells:
        saved += max(cells)  # one cell's tensors exist again while it is recomputed
    for level in _levels_at(num_layers, len(strides)):  # heads: ReLU, 2 branches, cat, project
        c, hw = net.channels(num_layers, level), net.hw(level)
        saved += 10 * n * c * hw
        largest = max(largest, 3 * n * c * hw)
    saved += n * num_classes * crop * crop  # the loss's log_softmax output
    largest = max(largest, n * num_classes * crop * crop)
    return int(saved * bytes_per_element), int(largest * bytes_per_element)


def _resample_saved(net: _Net, n: int, src_layer: int, src: int, level: int, c: int) -> float:
    """Elements a resampling edge saves: per ReLU-conv-BN, the ReLU output and the conv output."""
    c_in, hw_in = net.channels(src_layer, src), net.hw(src)
    delta = level - src
    if delta <= 0:  # 1x1 conv at the source resolution (then upsampled: nothing saved)
        return n * (c_in + c) * hw_in
    total, lv = 0.0, src
    for _ in range(delta):
        total += n * c_in * net.hw(lv) + n * c * net.hw(lv + 1)
        c_in, lv = c, lv + 1
    return total


def estimate_search_memory(
    cfg: SearchConfig,
    num_classes: int = 19,
    device: str = "cpu",
    world_size: int = 1,
    available: int | None = None,
) -> MemoryEstimate:
    """Estimated peak memory of ``autodeeplab search`` with the SearchConfig ``cfg`` on ``device``.

    ``device``: ``cpu`` (peak resident memory) or ``cuda`` (peak device memory, context
    included). ``world_size``: processes under torchrun; each holds batch_size / world_size
    images. ``available``: the device's memory in bytes, which ``checkpoint_cells=auto``
    weighs (:func:`resolve_checkpoint_cells`). Per process; builds nothing, about a
    millisecond.
    """
    cfg = _with_checkpoint_cells(
        cfg, resolve_checkpoint_cells(cfg, num_classes, device, world_size, available)
    )
    m, d, s = cfg.model, cfg.data, cfg.search
    partial = int(getattr(m, "partial_channels", 1))
    amp = str(getattr(s, "amp", "off"))
    half = amp in ("bf16", "fp16") or (amp == "auto" and device == "cuda")
    batch = max(1, s.batch_size // max(1, world_size))
    common = {
        "num_classes": num_classes,
        "num_layers": m.num_layers,
        "num_blocks": m.num_blocks,
        "filter_multiplier": m.filter_multiplier,
        "strides": m.strides,
        "primitives": m.primitives,
        "partial_channels": partial,
        "pool_bn": m.pool_bn,
    }
    weights, buffers = search_parameter_count(
        num_classes,
        m.num_layers,
        m.num_blocks,
        m.filter_multiplier,
        m.strides,
        m.primitives,
        m.affine,
        partial,
        pool_bn=m.pool_bn,
    )
    arch = 3 * (m.num_blocks * (m.num_blocks + 3) // 2) * len(m.primitives) + 3 * 3 * (
        m.num_layers * len(m.strides) * 3
    )
    # Between steps only the weights, SGD's momentum, the BatchNorm buffers and alpha/beta
    # with Adam's two moments are kept: the engine frees the gradients (set_to_none) before
    # the forward pass and after the optimiser step.
    persistent = 4 * (2 * weights + buffers + arch)
    act, peak = 0, 0
    for arch_step in (False, True):  # the peak of the two steps
        a, big = saved_activation_bytes(
            d.crop,
            batch,
            checkpoint_cells=m.checkpoint_cells,
            arch_step=arch_step,
            bytes_per_element=2 if half else 4,
            **common,
        )
        # Its backward pass: the gradients in flight and the allocator's slack; the w step
        # also builds the weights' gradients (fp32, the weights' size) while it frees the
        # saved tensors, which makes little room for them (few freed blocks fit a gradient).
        step = a + TRANSIENT_LARGEST * big + TRANSIENT_FRACTION * a
        if not arch_step:
            step += 4 * weights
        act, peak = max(act, a), max(peak, int(step))
    batch_bytes = 2 * batch * d.crop * d.crop * (3 * 4 + 8)  # a trainA and a trainB batch
    transient = peak - act + batch_bytes  # the peak step's, beyond the larger saved set
    fixed = CUDA_CONTEXT_BYTES if device == "cuda" else CPU_BASE_BYTES
    total = fixed + persistent + act + transient
    return MemoryEstimate(
        total=int(total),
        fixed=fixed,
        persistent=persistent,
        activations=act,
        transient=transient,
        weight_params=weights,
        device=device,
        checkpoint_cells=bool(m.checkpoint_cells),
    )


def format_estimate(est: MemoryEstimate, cfg: SearchConfig) -> str:
    """One line, e.g. ``estimated peak memory (RSS): 1.2 GiB (crop 64, batch 2; ...)``."""
    m, d, s = cfg.model, cfg.data, cfg.search
    where = "GPU memory" if est.device == "cuda" else "memory (RSS)"
    cells = "on" if est.checkpoint_cells else "off"
    if m.checkpoint_cells == "auto":
        cells += " (auto)"
    return (
        f"estimated peak {where}: {est.gib:.1f} GiB (crop {d.crop}, batch {s.batch_size}; "
        f"checkpoint_cells {cells}; activations {est.activations / 2**30:.1f} GiB, "
        f"weights {est.weight_params / 1e6:.1f}M)"
    )


def memory_warning(est: MemoryEstimate, cfg: SearchConfig, available: int) -> str | None:
    """A one-line warning when ``est`` exceeds ``available`` bytes, with what to change."""
    if est.total <= available:
        return None
    m, d = cfg.model, cfg.data
    fixes = [] if est.checkpoint_cells else ["--set model.checkpoint_cells=true"]
    if getattr(m, "partial_channels", 1) == 1:
        fixes.append("--set model.partial_channels=4 (PC-DARTS, beyond the paper)")
    fixes += [f"a smaller --crop (now {d.crop})", "a smaller --batch-size"]
    return (
        f"warning: the search may run out of memory: it needs about {est.gib:.1f} GiB, the "
        f"{'GPU' if est.device == 'cuda' else 'machine'} has {available / 2**30:.1f} GiB; "
        f"try {', or '.join(fixes)}"
    )


def _with_checkpoint_cells(cfg: SearchConfig, on: bool) -> SearchConfig:
    if cfg.model.checkpoint_cells is on:
        return cfg
    return replace(cfg, model=replace(cfg.model, checkpoint_cells=on))


def resolve_checkpoint_cells(
    cfg: SearchConfig,
    num_classes: int = 19,
    device: str = "cpu",
    world_size: int = 1,
    available: int | None = None,
) -> bool:
    """``model.checkpoint_cells`` as a bool: ``auto`` decides from the memory estimate.

    Checkpointing changes no result (the recomputed forward is the same, and the BatchNorm
    statistics are not moved twice); it trades one more forward pass of the cells for most
    of their saved activations. ``auto`` turns it on where those activations are at least
    half of the estimated peak without it, and wherever that peak would exceed ``available``
    bytes. With the paper's settings (L=12, F=8, batch 2) that is from a crop of about 112:
    at 128 it cuts the peak RSS by 45% for about twice the step time on a CPU, at 321 by
    80% for about a third more; at 64 the weights and their momentum dominate, and it
    would double the step for 15% less memory. benchmarks/README.md has the measurements.
    """
    mode = cfg.model.checkpoint_cells
    if isinstance(mode, bool):
        return mode
    if mode != "auto":
        raise ValueError(f"model.checkpoint_cells={mode!r}: use true, false or auto")
    off = estimate_search_memory(
        _with_checkpoint_cells(cfg, False), num_classes, device, world_size
    )
    return 2 * off.activations >= off.total or (available is not None and off.total > available)


def device_memory_bytes(device: str) -> int | None:
    """Memory of ``device`` in bytes: the GPU's total, or the machine's RAM; None if unknown."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return None
