"""One step of the bi-level search (a weight step or an architecture step) and validation of
the supernet: the per-iteration math of :mod:`autodeeplab.engine.search.loop`.

Under torchrun (``torchrun --nproc-per-node N -m autodeeplab search ...``) every rank runs
the search loop on its slice of each global batch (``search.batch_size`` / N images; the
ranks' slices, in rank order, are exactly the batch of one process) and the gradients are averaged
over ranks before every optimiser step. The supernet is *not* wrapped in
DistributedDataParallel: DDP's reducer expects the same parameters to produce gradients in
every backward, while the bi-level loop alternates two disjoint sets (w, then alpha/beta) with
the other set frozen (``requires_grad`` off) and ``backward(inputs=...)``. DDP would need
``find_unused_parameters`` (a graph walk per step, and the whole weight bucket all-reduced as
zeros on every architecture step) or two wrappers on private ignore lists. Instead
:func:`search_step` keeps its freezing and, after the
backward, averages the gradients of the set it steps with one flat all-reduce. So:

- alpha and beta stay bitwise identical on every rank: they start equal (rank 0's tensors are
  broadcast after construction or resume), every rank applies the same Adam update to the
  same all-reduced gradient (a collective returns the same bytes everywhere), and the weights
  they are trained against are kept identical the same way. Each epoch checks it and stops
  with an error if the ranks ever disagree.
- The result equals one process with the same global batch, to float rounding: the loss is
  normalised by the pixel count of the *global* batch (``distributed.sharded_mean``), and
  BatchNorm sees the global batch with ``search.sync_bn`` (CUDA). With plain BN each rank
  normalises over its own slice, as in any data-parallel run; the running statistics (used
  by validation only) are averaged over ranks at the end of every epoch.
- Validation is sharded over ranks and its confusion matrix summed; only rank 0 writes files
  (config, split, log, TensorBoard, checkpoints, genotype, figures). Rank 0 decides what to
  resume from and the trainA/trainB split, and sends them to the others, so a multi-node run
  needs no shared disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from autodeeplab.distributed import all_reduce_mean, all_reduce_sum, is_distributed, sharded_mean
from autodeeplab.engine.guards import NonFiniteGuard, grads_finite
from autodeeplab.metrics import IGNORE_INDEX, ConfusionMatrix
from autodeeplab.space.network import SearchNetwork

__all__ = [
    "Batch",
    "StepResult",
    "IGNORE_INDEX",
    "search_step",
    "bn_running_stats",
    "all_finite",
    "recalibrate_bn",
    "validate_supernet",
]


#: An (images (N, 3, H, W), labels (N, H, W)) pair, as the search's loaders yield it.
Batch = tuple[Tensor, Tensor]


@dataclass
class StepResult:
    """One iteration of a strategy: its losses (detached) and whether each update applied."""

    w_loss: Tensor
    w_applied: bool
    arch_loss: Tensor | None = None  # None: the iteration had no architecture update
    arch_applied: bool = False


def search_step(
    model: SearchNetwork,
    batch: Batch,
    params: list[Tensor],
    frozen: list[Tensor],
    optimizer: torch.optim.Optimizer,
    clip: float | None,
    device: torch.device,
    penalty: Callable[[], Tensor] | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    guard: NonFiniteGuard | None = None,
    where: str = "a search step",
    forward: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, bool]:
    """One optimiser step on ``params``; returns the (detached) loss and whether it was applied.

    ``frozen`` (the other parameter set) is taken out of autograd for the step, so a w step
    neither saves what alpha/beta gradients would need nor touches alpha/beta, and an
    architecture step computes no weight gradient (the stem runs without autograd). Under
    torchrun the gradients of ``params`` are then averaged over ranks, before clipping.
    ``amp_dtype`` autocasts the forward pass (the loss and ``penalty`` stay fp32), ``scaler``
    (fp16) scales the loss, and ``guard`` vets the loss and gradients before the optimiser
    step (``where`` names the step in its error); a step it drops returns False.
    ``forward``: the logits of a batch (default: the softmax supernet, ``model``); a
    single-path step passes one sub-network's. Parameters it leaves unused keep no
    gradient; since every rank runs the same sub-network, the all-reduced set is the same.
    """
    x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    if guard is not None:
        guard.before_forward()
    # No stale gradient of ``params`` may sit beside this step's activations at the peak.
    optimizer.zero_grad(set_to_none=True)
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = (forward or model)(x)
        logits = logits.float()  # the identity in fp32; the loss is computed in fp32
        if is_distributed():  # this rank's share of the global batch's mean
            ce = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = sharded_mean(ce, (y != IGNORE_INDEX).sum())
        else:
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        if penalty is not None:
            loss = loss + penalty()
        (scaler.scale(loss) if scaler is not None else loss).backward(inputs=params)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if is_distributed():  # one flat all-reduce; the same graph on every rank, so the same grads
        all_reduce_mean([p.grad for p in params if p.grad is not None])
    if scaler is not None:
        scaler.unscale_(optimizer)  # a no-op unless fp16: clipping and checks see true grads
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip is not None else None
    applied = True
    if guard is not None:
        # With fp16, inf gradients are the GradScaler's business (it skips and rescales).
        fp16 = scaler is not None and scaler.is_enabled()
        applied = guard.allow(grads_finite(loss, None if fp16 else params, norm), where)
    if applied:
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()
    if scaler is not None:
        scaler.update()
    # The other step of the pair freezes these parameters: their gradients (as large as the
    # weights themselves for a w step) would only take memory through it.
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), applied


def bn_running_stats(model: torch.nn.Module) -> list[Tensor]:
    """The running means and variances of every BatchNorm in ``model``."""
    return [
        t
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]


def all_finite(tensors: list[Tensor]) -> Tensor:
    """A device bool: every entry of ``tensors`` is finite (no host sync)."""
    return torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all()


@torch.no_grad()
def recalibrate_bn(
    model: torch.nn.Module,
    batches: Iterable[Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> None:
    """Recompute every BatchNorm's running statistics as the mean over ``batches``.

    The search's BNs see batches of 2 and (in the mixed ops) have no affine parameters, and
    their running averages trail weights that change every step: validation with them
    under-reports the supernet (at the end of the old CPU preset, pixel accuracy 0.58 in
    eval mode against 0.63 in train mode). Single-path NAS recalibrates the same way before
    it evaluates a path.
    """
    bns = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    was_training = model.training
    model.train()
    try:
        for x in batches:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x.to(device, non_blocking=True))
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def validate_supernet(
    model: SearchNetwork,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    batch_stats: bool = False,
    recalibrate: list[Tensor] | None = None,
    average_bn: bool = True,
) -> dict[str, float]:
    """Loss, mIoU and pixel accuracy of the supernet on ``loader`` (summed over ranks).

    ``batch_stats``: BatchNorm normalises with each validation batch's own statistics, as in
    the training and architecture steps, and the running statistics are left as they were.
    ``recalibrate``: first recompute the running statistics over these image batches (this
    rank's share), and under torchrun average them over ranks if ``average_bn`` (not needed
    with SyncBatchNorm, which saw every rank's images).
    """
    if recalibrate is not None:
        recalibrate_bn(model, recalibrate, device, amp_dtype)
        if average_bn:
            all_reduce_mean(bn_running_stats(model))
    saved = [t.clone() for t in bn_running_stats(model)] if batch_stats else []
    model.train(batch_stats)
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX, device)
    total, count = torch.zeros((), device=device), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        total += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
        count += int((y != IGNORE_INDEX).sum())
        cm.update(logits.argmax(1), y)
    if batch_stats:
        torch._foreach_copy_(bn_running_stats(model), saved)
    model.train()
    cm.all_reduce()
    if is_distributed():  # each rank scored its own share of the validation set
        sums = torch.tensor([float(total), count], dtype=torch.float64, device=device)
        all_reduce_sum(sums)
        total, count = sums[0], int(sums[1])
    metrics = cm.compute()
    return {
        "val_loss": float(total) / max(count, 1),
        "val_miou": metrics["miou"],
        "val_pixel_acc": metrics["pixel_acc"],
    }
