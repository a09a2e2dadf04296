"""When alpha/beta start to learn, at what lr, and with what auxiliary skip: the search's
architecture schedule, written so that it works at any budget (README, "The schedule").

- **Start.** Architecture updates may start at ``search.arch_start_epoch`` (the paper: after
  20 of 40 epochs). With ``search.arch_start_loss`` they wait, in addition, for an epoch
  whose mean train loss is below a threshold: a number, or ``prior``, the entropy of the
  class frequencies of the trainA pixels seen so far, which is the loss of predicting those
  frequencies everywhere. Before the supernet beats that, its alpha gradients change sign
  from batch to batch about as often as chance (the review behind docs/design.md §12.10), so
  alpha/beta would follow noise. If the loss never gets there, they start anyway halfway
  from ``arch_start_epoch`` to the end, with a warning in the log. The decision is taken at
  epoch boundaries, so a resumed run takes the same one.
- **lr.** Adam moves each logit by about lr per step whatever the gradient's scale, so a
  schedule of n architecture steps can move a logit by at most n x lr: 72 steps at the
  paper's 3e-3 allow 0.22, less than the 0.4 a layer that separated a stride-4 path from the
  paper's under Eq. 7's literal decode. ``search.arch_lr=auto`` sets lr =
  ``arch_logit_budget`` / n when the updates start (n: the steps left in the schedule),
  within :data:`ARCH_LR_RANGE`: never slower than the paper, and never above 3e-2, where
  Adam's sign-like steps make the architecture jump from batch to batch.
- **Annealing** (``search.arch_lr_schedule=cosine``): the lr of the k-th of n epochs with
  updates is lr x (1 + cos(pi k / n)) / 2, set at the start of each epoch (so a resumed
  epoch gets the same one); with ``auto`` the base lr is raised so that the n epochs still
  allow ``arch_logit_budget`` logits in all.
- **Auxiliary skip** (DARTS-, ``search.aux_skip``): its weight is ``aux_skip`` until the
  updates start, then decays linearly, reaching aux_skip / (epochs left) in the last epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig

__all__ = [
    "ARCH_LR_RANGE",
    "ArchSchedule",
    "auto_arch_lr",
    "class_prior_entropy",
    "cosine_factor",
    "restore_schedule",
]

#: The range ``arch_lr=auto`` keeps to: the paper's lr, and ten times it.
ARCH_LR_RANGE = (3e-3, 3e-2)


def auto_arch_lr(budget: float, arch_steps: int) -> float:
    """``budget`` / ``arch_steps``, clamped to :data:`ARCH_LR_RANGE`."""
    lo, hi = ARCH_LR_RANGE
    return min(hi, max(lo, budget / max(arch_steps, 1)))


def cosine_factor(k: int, n: int) -> float:
    """The annealed lr's factor in the k-th (0-based) of n epochs: (1 + cos(pi k / n)) / 2."""
    return 0.5 * (1.0 + math.cos(math.pi * k / max(n, 1)))


def class_prior_entropy(counts: Tensor) -> float | None:
    """Entropy (nats) of the class frequencies ``counts``; None before any pixel is seen."""
    total = float(counts.sum())
    if total <= 0:
        return None
    p = counts.double() / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


class ArchSchedule:
    """The schedule's state: when the updates started, the lr, what they started from."""

    #: What a checkpoint keeps of it (the attributes of the same names), in their order.
    STATE_KEYS = (
        "started_epoch",
        "lr",
        "forced",
        "last_train_loss",
        "class_counts",
        "start_alpha",
        "start_beta",
    )

    def __init__(self, num_classes: int) -> None:
        self.started_epoch: int | None = None
        self.lr: float | None = None
        self.forced = False  # started at the deadline, the loss condition unmet
        self.last_train_loss: float | None = None
        self.class_counts = torch.zeros(num_classes, dtype=torch.float64)
        # Raw alpha and beta when the updates started: how far they moved since.
        self.start_alpha: Tensor | None = None
        self.start_beta: Tensor | None = None

    def loss_threshold(self, loop: SearchLoopConfig) -> float | None:
        """The train loss the updates wait for (None: no loss condition, or no data yet)."""
        if loop.arch_start_loss is None:
            return None
        if loop.arch_start_loss == "prior":
            return class_prior_entropy(self.class_counts)
        return float(loop.arch_start_loss)

    def deadline(self, loop: SearchLoopConfig) -> int:
        """The epoch at which the updates start even if the loss condition is unmet."""
        first = loop.arch_start_epoch
        return first + max(loop.epochs - first, 0) // 2

    def should_start(self, loop: SearchLoopConfig, epoch: int) -> bool:
        """Whether the updates start with ``epoch`` (0-based); True once they have started."""
        if self.started_epoch is not None:
            return epoch >= self.started_epoch
        if epoch < loop.arch_start_epoch:
            return False
        if loop.arch_start_loss is None:
            return True
        threshold = self.loss_threshold(loop)
        loss = self.last_train_loss
        met = threshold is not None and loss is not None and loss < threshold
        if not met and epoch >= self.deadline(loop):
            self.forced = True
            return True
        return met

    def start(
        self,
        loop: SearchLoopConfig,
        epoch: int,
        steps_per_epoch: int,
        alpha: Tensor,
        beta: Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Record the start at ``epoch`` and set the architecture optimiser's lr."""
        self.started_epoch = epoch
        self.start_alpha = alpha.detach().cpu().clone()
        self.start_beta = beta.detach().cpu().clone()
        if loop.arch_lr == "auto":
            span = loop.epochs - epoch
            steps = span * steps_per_epoch
            if loop.arch_lr_schedule == "cosine":
                # The same budget under the annealed lr: each epoch's steps count by its factor.
                steps = round(steps_per_epoch * sum(cosine_factor(k, span) for k in range(span)))
            self.lr = auto_arch_lr(loop.arch_logit_budget, steps)
        else:
            self.lr = float(loop.arch_lr)
        self.set_epoch_lr(loop, epoch, optimizer)

    def epoch_lr(self, loop: SearchLoopConfig, epoch: int) -> float | None:
        """The architecture lr of ``epoch`` (None before the updates start)."""
        if self.lr is None or self.started_epoch is None or epoch < self.started_epoch:
            return None
        if loop.arch_lr_schedule == "constant":
            return self.lr
        return self.lr * cosine_factor(epoch - self.started_epoch, loop.epochs - self.started_epoch)

    def set_epoch_lr(
        self, loop: SearchLoopConfig, epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """Give the architecture optimiser ``epoch``'s lr."""
        lr = self.epoch_lr(loop, epoch)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def aux_skip(self, loop: SearchLoopConfig, epoch: int) -> float:
        """DARTS-'s auxiliary skip weight for ``epoch``."""
        if loop.aux_skip == 0.0 or self.started_epoch is None or epoch < self.started_epoch:
            return loop.aux_skip
        span = max(loop.epochs - self.started_epoch, 1)
        return loop.aux_skip * (1.0 - (epoch - self.started_epoch) / span)

    def end_epoch(self, train_loss: float | None, class_counts: Tensor) -> None:
        """Fold in an epoch's mean train loss and its label counts."""
        if train_loss is not None and math.isfinite(train_loss):
            self.last_train_loss = train_loss
        self.class_counts += class_counts.double().cpu()

    def state(self) -> dict[str, Any]:
        """For the checkpoint: :data:`STATE_KEYS`, the label counts copied."""
        state = {key: getattr(self, key) for key in self.STATE_KEYS}
        state["class_counts"] = self.class_counts.clone()
        return state

    def load(self, state: dict[str, Any]) -> None:
        """From a checkpoint's :meth:`state`."""
        for key in self.STATE_KEYS:
            setattr(self, key, state[key])
        self.class_counts = state["class_counts"].double().clone()


def restore_schedule(schedule: ArchSchedule, state: dict[str, Any], arch_start_epoch: int) -> None:
    """Load the architecture schedule a checkpoint saved (or infer it for an older run)."""
    if "arch_schedule" in state:
        schedule.load(state["arch_schedule"])
    elif state["epoch"] > arch_start_epoch:  # a run from before the schedule was saved
        schedule.started_epoch = arch_start_epoch
