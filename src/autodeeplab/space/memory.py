"""Peak memory of a search, estimated from the supernet's arguments before anything is built.

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
  structure (:func:`~autodeeplab.space.footprint.saved_activation_bytes`, from the trellis
  and the profiles each op declares): for every trellis node, its resampling edges,
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

A single-path search (``search.strategy=spos``) has no architecture step and trains one
sampled sub-network per step: :func:`estimate_single_path_memory` counts the supernet's
weights and momentum as above, but the activations of the largest sub-network only
(:func:`~autodeeplab.space.footprint.single_path_saved_bytes`) and the gradients of the
largest sub-network's weights (:func:`~autodeeplab.space.footprint.single_path_weight_bound`);
the same fixed overhead and slack. SGD's momentum is counted for every weight: a long search
samples each op and node sooner or later. Measured (benchmarks/search_step.py, crop 64, L=12,
F=8, batch 2, after 14 steps): 687 MiB peak RSS against 836 MiB estimated, the momentum of the
weights not yet sampled (SGD creates it at a weight's first update) making up most of the
difference; DARTS's estimate there is 1,187 MiB, measured 1,171.

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

from dataclasses import dataclass, field, replace
from typing import Any

from autodeeplab.space.footprint import (
    saved_activation_bytes,
    search_parameter_count,
    single_path_saved_bytes,
    single_path_weight_bound,
)
from autodeeplab.trellis import PAPER_SUPERNET, SupernetSpec, num_edges

__all__ = [
    "AUTO_CHECKPOINT_SHARE",
    "MemoryEstimate",
    "device_memory_bytes",
    "estimate_search_memory",
    "estimate_single_path_memory",
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


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of a search's estimated peak memory, in bytes, and what it was estimated for."""

    total: int
    fixed: int
    persistent: int
    activations: int
    transient: int
    weight_params: int
    device: str
    checkpoint_cells: bool = False  # as resolved (``auto`` decided)
    crop: int = 0
    batch_size: int = 0  # of the whole step, over every process
    partial_channels: int = 1
    # Whether ``auto`` decided checkpoint_cells: for the message only, so an estimate under
    # ``auto`` equals the one with the value ``auto`` picked.
    auto: bool = field(default=False, compare=False)

    @property
    def gib(self) -> float:
        """The total in GiB."""
        return self.total / 2**30


def estimate_search_memory(
    crop: int,
    batch_size: int,
    num_classes: int = 19,
    spec: SupernetSpec = PAPER_SUPERNET,
    *,
    checkpoint_cells: bool | str = False,
    amp: str = "off",
    device: str = "cpu",
    world_size: int = 1,
    available: int | None = None,
    single_path: bool = False,
) -> MemoryEstimate:
    """Estimated peak memory of a search of the supernet ``spec`` describes.

    ``spec``: the supernet (the config's ``model`` section is one); ``checkpoint_cells``:
    SearchNetwork's, or ``auto``. ``crop``, ``batch_size`` (the whole step's) and ``amp``
    are the search's. ``device``: ``cpu`` (peak resident memory) or
    ``cuda`` (peak device memory, context included). ``world_size``: processes under
    torchrun; each holds batch_size / world_size images. ``available``: the device's memory
    in bytes, which ``checkpoint_cells=auto`` weighs (:func:`resolve_checkpoint_cells`).
    ``single_path``: a single-path search (:func:`estimate_single_path_memory`) rather than
    the bi-level one. Per process; builds nothing, about a millisecond.
    """
    search = _Search(crop, batch_size, num_classes, spec, amp, device, world_size)
    if single_path:
        # One sub-network's activations are a few percent of the supernet's, so cell
        # checkpointing would buy nothing: ``auto`` resolves to off (``true`` is kept, and
        # the estimate is the same either way, an upper bound). ``available`` is not weighed.
        est = _single_path(search, checkpoint_cells is True)
        return replace(est, auto=checkpoint_cells == "auto")
    if isinstance(checkpoint_cells, bool):
        return _bilevel(search, checkpoint_cells)
    if checkpoint_cells != "auto":
        raise ValueError(f"model.checkpoint_cells={checkpoint_cells!r}: use true, false or auto")
    # auto: see resolve_checkpoint_cells.
    off = _bilevel(search, False)
    if available is None:  # memory unknown: save it where the activations are most of it
        on = 2 * off.activations >= off.total
    else:
        on = off.total > AUTO_CHECKPOINT_SHARE * available
    return replace(_bilevel(search, True) if on else off, auto=True)


def estimate_single_path_memory(
    crop: int, batch_size: int, num_classes: int = 19, **kwargs: Any
) -> MemoryEstimate:
    """Estimated peak memory of a single-path search; the arguments of
    :func:`estimate_search_memory`, of which it is the ``single_path=True`` case."""
    return estimate_search_memory(crop, batch_size, num_classes, single_path=True, **kwargs)


@dataclass(frozen=True)
class _Search:
    """What both estimates are for: the search's arguments, and what follows from them."""

    crop: int
    batch_size: int  # of the whole step, over every process
    num_classes: int
    spec: SupernetSpec
    amp: str
    device: str
    world_size: int

    @property
    def batch(self) -> int:
        """Images per process."""
        return max(1, self.batch_size // max(1, self.world_size))

    @property
    def bytes_per_element(self) -> int:
        """An activation's element: 2 bytes under bf16/fp16 autocast, else 4."""
        half = self.amp in ("bf16", "fp16") or (self.amp == "auto" and self.device == "cuda")
        return 2 if half else 4

    def batch_bytes(self, batches: int) -> int:
        """``batches`` batches of a process: fp32 images and int64 labels."""
        return batches * self.batch * self.crop * self.crop * (3 * 4 + 8)

    def persistent(self, arch: int) -> tuple[int, int]:
        """The supernet's weight count, and the bytes kept between steps: the weights, SGD's
        momentum, the BatchNorm buffers and ``arch`` more fp32 numbers."""
        weights, buffers = search_parameter_count(self.num_classes, self.spec)
        return weights, 4 * (2 * weights + buffers + arch)

    def estimate(
        self, weights: int, persistent: int, act: int, transient: int, checkpoint_cells: bool
    ) -> MemoryEstimate:
        """The estimate of these parts, with the fixed overhead of the device."""
        fixed = CUDA_CONTEXT_BYTES if self.device == "cuda" else CPU_BASE_BYTES
        return MemoryEstimate(
            total=int(fixed + persistent + act + transient),
            fixed=fixed,
            persistent=persistent,
            activations=act,
            transient=transient,
            weight_params=weights,
            device=self.device,
            checkpoint_cells=checkpoint_cells,
            crop=self.crop,
            batch_size=self.batch_size,
            partial_channels=self.spec.partial_channels,
        )


def _bilevel(search: _Search, checkpoint_cells: bool) -> MemoryEstimate:
    """The bi-level search's estimate with checkpoint_cells decided."""
    spec = search.spec
    # alpha and beta, each with Adam's two moments.
    arch = 3 * num_edges(spec.num_blocks) * len(spec.primitives)
    arch += 3 * 3 * (spec.num_layers * spec.num_levels * 3)
    # Between steps only the weights, SGD's momentum, the BatchNorm buffers and alpha/beta
    # with Adam's two moments are kept: the engine frees the gradients (set_to_none) before
    # the forward pass and after the optimiser step.
    weights, persistent = search.persistent(arch)
    act, peak = 0, 0
    for arch_step in (False, True):  # the peak of the two steps
        a, big = saved_activation_bytes(
            search.crop,
            search.batch,
            search.num_classes,
            spec,
            checkpoint_cells=checkpoint_cells,
            arch_step=arch_step,
            bytes_per_element=search.bytes_per_element,
        )
        # Its backward pass: the gradients in flight and the allocator's slack; the w step
        # also builds the weights' gradients (fp32, the weights' size) while it frees the
        # saved tensors, which makes little room for them (few freed blocks fit a gradient).
        step = a + TRANSIENT_LARGEST * big + TRANSIENT_FRACTION * a
        if not arch_step:
            step += 4 * weights
        act, peak = max(act, a), max(peak, int(step))
    # The peak step's, beyond the larger saved set; a trainA and a trainB batch.
    transient = peak - act + search.batch_bytes(2)
    return search.estimate(weights, persistent, act, transient, checkpoint_cells)


def _single_path(search: _Search, checkpoint_cells: bool) -> MemoryEstimate:
    """The single-path search's estimate (``checkpoint_cells`` changes nothing in it)."""
    spec = search.spec
    # The weights and SGD's momentum; alpha and beta are kept (unused) without an optimiser.
    arch = num_edges(spec.num_blocks) * len(spec.primitives)
    arch += 3 * spec.num_layers * spec.num_levels
    weights, persistent = search.persistent(arch)
    act, big = single_path_saved_bytes(
        search.crop, search.batch, search.num_classes, spec,
        bytes_per_element=search.bytes_per_element,
    )  # fmt: skip
    # The gradients of the sampled sub-network's weights, those in flight, and slack.
    path_weights = single_path_weight_bound(search.num_classes, spec)
    transient = int(4 * path_weights + TRANSIENT_LARGEST * big + TRANSIENT_FRACTION * act)
    transient += search.batch_bytes(1)  # one batch: no trainB batch
    return search.estimate(weights, persistent, act, transient, checkpoint_cells)


def format_estimate(est: MemoryEstimate) -> str:
    """One line, e.g. ``estimated peak memory (RSS): 1.2 GiB (crop 64, batch 2; ...)``."""
    where = "GPU memory" if est.device == "cuda" else "memory (RSS)"
    cells = "on" if est.checkpoint_cells else "off"
    if est.auto:
        cells += " (auto)"
    return (
        f"estimated peak {where}: {est.gib:.1f} GiB (crop {est.crop}, batch {est.batch_size}; "
        f"checkpoint_cells {cells}; activations {est.activations / 2**30:.1f} GiB, "
        f"weights {est.weight_params / 1e6:.1f}M)"
    )


def memory_warning(est: MemoryEstimate, available: int) -> str | None:
    """A one-line warning when ``est`` exceeds ``available`` bytes, with what to change."""
    if est.total <= available:
        return None
    fixes = [] if est.checkpoint_cells else ["--set model.checkpoint_cells=true"]
    if est.partial_channels == 1:
        fixes.append("--set model.partial_channels=4 (PC-DARTS, beyond the paper)")
    fixes += [f"a smaller --crop (now {est.crop})", "a smaller --batch-size"]
    return (
        f"warning: the search may run out of memory: it needs about {est.gib:.1f} GiB, the "
        f"{'GPU' if est.device == 'cuda' else 'machine'} has {available / 2**30:.1f} GiB; "
        f"try {', or '.join(fixes)}"
    )


#: ``checkpoint_cells=auto`` turns checkpointing on where the search's estimated peak without
#: it would exceed this share of the device's memory (the rest is left to the data loader,
#: other processes and the estimate's error).
AUTO_CHECKPOINT_SHARE = 0.5


def resolve_checkpoint_cells(
    crop: int, batch_size: int, num_classes: int = 19, **kwargs: Any
) -> bool:
    """``checkpoint_cells`` as a bool: ``auto`` decides from the memory estimate.

    Takes the arguments of :func:`estimate_search_memory`. Checkpointing changes no result
    (the recomputed forward is the same, and the BatchNorm statistics are not moved twice);
    it trades one more forward pass of the cells for most of their saved activations: at
    crop 128 (L=12, F=8, batch 2) 45% less peak RSS for 1.5-2x the step time on a CPU, at
    321 80% less for about a third more (benchmarks/README.md). So ``auto`` turns it on only
    where the peak without it would take more than ``AUTO_CHECKPOINT_SHARE`` of the
    ``available`` memory; where that is unknown, where the activations are at least half of
    that peak (from a crop of about 112 at the paper's settings).
    """
    return estimate_search_memory(crop, batch_size, num_classes, **kwargs).checkpoint_cells


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
