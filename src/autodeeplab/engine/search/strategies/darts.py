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

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.search.schedule import ARCH_LR_RANGE
from autodeeplab.engine.search.strategies.base import Batch, StepResult, StrategyContext
from autodeeplab.engine.search.strategies.bilevel import BiLevelStrategy
from autodeeplab.space.network import SearchNetwork

__all__ = ["FirstOrderDarts"]


class FirstOrderDarts(BiLevelStrategy):
    """The paper's search strategy: a w step on trainA, then an alpha/beta step on trainB."""

    def __init__(self, model: SearchNetwork, loop: SearchLoopConfig, context: StrategyContext):
        super().__init__(model, loop, context)
        # With arch_lr=auto the lr is set when the updates start (ArchSchedule.start).
        arch_lr = loop.arch_lr if isinstance(loop.arch_lr, float) else ARCH_LR_RANGE[0]
        self.arch_optimizer = torch.optim.Adam(
            self.arch, lr=arch_lr, betas=loop.arch_betas, weight_decay=loop.arch_weight_decay
        )
        self.arch_scaler = self.grad_scaler()

    def step(self, batch_a: Batch, batch_b: Batch | None, where: str) -> StepResult:
        """A w step on ``batch_a``; then, given ``batch_b``, an alpha/beta step on it."""
        w_loss, w_applied = self.optimizer_step(
            batch_a, self.weights, self.arch, self.w_optimizer, self.w_scaler,
            f"the weight step of {where}", clip=self.grad_clip,
        )  # fmt: skip
        if batch_b is None:
            return StepResult(w_loss, w_applied)
        arch_loss, arch_applied = self.optimizer_step(  # DARTS clips the weight gradients only
            batch_b, self.arch, self.weights, self.arch_optimizer, self.arch_scaler,
            f"the architecture step of {where}", penalty=self.context.penalty,
        )  # fmt: skip
        return StepResult(w_loss, w_applied, arch_loss, arch_applied)

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
