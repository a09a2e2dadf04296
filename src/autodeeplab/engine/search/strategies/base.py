"""The search-strategy seam: how the supernet's weights w and architecture (alpha, beta) learn.

The search loop (:mod:`autodeeplab.engine.search.loop`) owns the data, the schedule, the log and
the checkpoints; a strategy owns the updates. Each iteration the loop hands it one trainA
batch and, once the architecture schedule has started, one trainB batch; the strategy steps
its optimisers and reports the losses. ``search.strategy`` names it in
:data:`autodeeplab.engine.search.strategies.STRATEGIES`; adding one is a module beside ``darts.py``
and one line there. The relaxation itself (softmax over alpha, beta) stays in
:class:`~autodeeplab.space.network.SearchNetwork`, which every strategy trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.search.step import Batch
from autodeeplab.genotype import Genotype
from autodeeplab.space.network import SearchNetwork

__all__ = ["Batch", "Penalty", "SearchStrategy", "StepResult", "StrategyFactory"]


class Penalty(Protocol):
    """An extra architecture-loss term (the cost-aware search's), computed in fp32."""

    def __call__(self) -> Tensor:
        """The penalty, added to the architecture step's loss."""
        ...


@dataclass
class StepResult:
    """One iteration of a strategy: its losses (detached) and whether each update applied."""

    w_loss: Tensor
    w_applied: bool
    arch_loss: Tensor | None = None  # None: the iteration had no architecture update
    arch_applied: bool = False


class SearchStrategy(Protocol):
    """How w and alpha/beta are updated; what the search loop calls, and nothing more.

    ``w_optimizer``: the loop anneals its lr once per epoch (cosine, ``search.lr`` to
    ``search.lr_min``). ``arch_optimizer``: the architecture schedule sets its lr when the
    updates start (``search.arch_lr``, or ``auto``). :meth:`state_dict` holds everything
    the strategy needs to resume bitwise (its optimisers, grad scalers); its keys go into the
    checkpoint beside the loop's own.
    """

    w_optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer

    def step(self, batch_a: Batch, batch_b: Batch | None, where: str) -> StepResult:
        """One iteration: update w from ``batch_a``, then alpha/beta from ``batch_b`` if given.

        ``where`` names the iteration (``epoch E, step S (iteration I)``) in guard errors.
        """
        ...

    def arch_parameters(self) -> list[Tensor]:
        """The architecture parameters it updates (checked finite, equal across ranks)."""
        ...

    def decode(self, path_decode: str) -> Genotype:
        """The discrete architecture the current alpha/beta stand for."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint entries (name -> state) that resume this strategy exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint holding :meth:`state_dict`'s entries."""
        ...


class StrategyFactory(Protocol):
    """A strategy's constructor, as :data:`.strategies.STRATEGIES` holds it."""

    def __call__(
        self,
        model: SearchNetwork,
        loop: SearchLoopConfig,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        guard: NonFiniteGuard,
        penalty: Penalty | None,
    ) -> SearchStrategy:
        """A strategy for ``model``, configured by ``loop`` (lr, momentum, arch_lr, ...)."""
        ...
