"""What every strategy here shares: how the supernet's weights w learn.

SGD on w (``search.lr``, ``search.momentum``, ``search.weight_decay``) with a cosine schedule
of its lr (to ``search.lr_min`` over the epochs), a GradScaler for fp16, and the guarded
optimiser step (:func:`~autodeeplab.engine.search.step.search_step`) run where the
:class:`~.base.StrategyContext` says. :class:`~.bilevel.BiLevelStrategy` (and so
:class:`~.darts.FirstOrderDarts`) and :class:`~.spos.SinglePathOneShot` build on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.search.step import Batch, search_step
from autodeeplab.engine.search.strategies.base import StrategyContext
from autodeeplab.space.memory import MemoryEstimate, estimate_search_memory
from autodeeplab.space.network import SearchNetwork

__all__ = ["WeightTraining"]


class WeightTraining:
    """SGD on the supernet's weights with a cosine lr schedule, and the guarded step."""

    #: Whether each w step trains one sampled sub-network (its activations only) rather than
    #: the softmax supernet with an architecture step beside it: what the memory model counts.
    single_path: ClassVar[bool] = False

    @classmethod
    def estimate_memory(
        cls, crop: int, batch_size: int, num_classes: int, **kwargs: Any
    ) -> MemoryEstimate:
        """Its search's peak memory: the two-step peak (w step, architecture step) over the
        whole supernet or, with :attr:`single_path`, one sub-network's activations over the
        supernet's weights (:func:`~autodeeplab.space.memory.estimate_search_memory`)."""
        return estimate_search_memory(
            crop, batch_size, num_classes, single_path=cls.single_path, **kwargs
        )

    @classmethod
    def prepare_model(cls, model: SearchNetwork, loop: SearchLoopConfig) -> None:
        """Add to ``model`` the weights this strategy trains beyond the supernet's (none)."""

    def __init__(self, model: SearchNetwork, loop: SearchLoopConfig, context: StrategyContext):
        # Before the optimiser is built: the weights the strategy adds are weights it trains.
        self.prepare_model(model, loop)
        self.model, self.loop, self.context = model, loop, context
        self.device, self.amp_dtype, self.guard = context.device, context.amp_dtype, context.guard
        self.grad_clip = loop.grad_clip
        self.weights = model.weight_parameters()
        self.w_optimizer = torch.optim.SGD(
            self.weights, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay
        )
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_optimizer, T_max=loop.epochs, eta_min=loop.lr_min
        )
        self.w_scaler = self.grad_scaler()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler for one optimiser: on with fp16 only."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def optimizer_step(
        self,
        batch: Batch,
        params: list[Tensor],
        frozen: list[Tensor],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        where: str,
        *,
        clip: float | None = None,
        penalty: Callable[[], Tensor] | None = None,
        forward: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, bool]:
        """:func:`~autodeeplab.engine.search.step.search_step` on ``params`` (``frozen``
        left out of autograd), on this strategy's device, autocast and guard."""
        return search_step(
            self.model, batch, params, frozen, optimizer, clip, self.device, penalty,
            amp_dtype=self.amp_dtype, scaler=scaler, guard=self.guard, where=where,
            forward=forward,
        )  # fmt: skip

    def step_w_schedule(self) -> float:
        """Step w's cosine schedule at the end of an epoch; returns the epoch's lr."""
        lr = self.w_sched.get_last_lr()[0]
        with warnings.catch_warnings():
            # A run resumed after the epoch's last step (or one whose steps were all
            # skipped) steps the scheduler before any optimiser step in this process: the
            # order PyTorch warns about, but right here.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.w_sched.step()
        return lr
