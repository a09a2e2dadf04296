"""First-order bi-level DARTS (Liu et al., ICLR 2019, §2.3 with xi = 0; Auto-DeepLab §4.2).

Each iteration: one SGD step on the weights w with a trainA batch, then (once the schedule
has started the architecture updates) one Adam step on alpha and beta with a trainB batch,
each with the other set frozen. The fp16 mode keeps one GradScaler per optimiser: the two
steps have their own losses and gradient scales, and an overflow in one must not shrink the
other's scale. The schedules, validation, record and decode are every bi-level strategy's
(:class:`~.bilevel.BiLevelStrategy`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.search.schedule import ARCH_LR_RANGE
from autodeeplab.engine.search.step import search_step
from autodeeplab.engine.search.strategies.base import Batch, Penalty, StepResult
from autodeeplab.engine.search.strategies.bilevel import BiLevelStrategy
from autodeeplab.space.network import SearchNetwork

__all__ = ["FirstOrderDarts"]


class FirstOrderDarts(BiLevelStrategy):
    """The paper's search strategy: a w step on trainA, then an alpha/beta step on trainB."""

    def __init__(
        self,
        model: SearchNetwork,
        loop: SearchLoopConfig,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        guard: NonFiniteGuard,
        penalty: Penalty | None,
    ) -> None:
        self.model, self.device, self.amp_dtype = model, device, amp_dtype
        self.guard, self.penalty, self.grad_clip = guard, penalty, loop.grad_clip
        self.weights, self.arch = model.weight_parameters(), model.arch_parameters()
        self.w_optimizer = torch.optim.SGD(
            self.weights, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay
        )
        # With arch_lr=auto the lr is set when the updates start (ArchSchedule.start).
        arch_lr = loop.arch_lr if isinstance(loop.arch_lr, float) else ARCH_LR_RANGE[0]
        self.arch_optimizer = torch.optim.Adam(
            self.arch, lr=arch_lr, betas=loop.arch_betas, weight_decay=loop.arch_weight_decay
        )
        fp16 = amp_dtype == torch.float16
        self.w_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.arch_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.setup(loop)

    def step(self, batch_a: Batch, batch_b: Batch | None, where: str) -> StepResult:
        """A w step on ``batch_a``; then, given ``batch_b``, an alpha/beta step on it."""
        w_loss, w_applied = search_step(
            self.model,
            batch_a,
            self.weights,
            self.arch,
            self.w_optimizer,
            self.grad_clip,
            self.device,
            amp_dtype=self.amp_dtype,
            scaler=self.w_scaler,
            guard=self.guard,
            where=f"the weight step of {where}",
        )
        if batch_b is None:
            return StepResult(w_loss, w_applied)
        arch_loss, arch_applied = search_step(
            self.model,
            batch_b,
            self.arch,
            self.weights,
            self.arch_optimizer,
            None,  # DARTS clips the weight gradients only
            self.device,
            self.penalty,
            amp_dtype=self.amp_dtype,
            scaler=self.arch_scaler,
            guard=self.guard,
            where=f"the architecture step of {where}",
        )
        return StepResult(w_loss, w_applied, arch_loss, arch_applied)

    def arch_parameters(self) -> list[Tensor]:
        """alpha and beta (and gamma with partial channels)."""
        return self.arch

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers, both grad scalers and the schedules, under the checkpoint's
        historical keys."""
        return {
            "w_optimizer": self.w_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "w_scaler": self.w_scaler.state_dict(),
            "arch_scaler": self.arch_scaler.state_dict(),
            **self.schedule_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """From a checkpoint holding :meth:`state_dict`'s entries."""
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.load_schedule_state(state)
        for key, scaler in (("w_scaler", self.w_scaler), ("arch_scaler", self.arch_scaler)):
            if state.get(key):  # absent before search.amp existed; empty when fp16 was off
                scaler.load_state_dict(state[key])
