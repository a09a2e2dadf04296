"""The search-strategy seam: how the supernet's weights w (and alpha, beta, if any) learn.

The search loop (:mod:`autodeeplab.engine.search.loop`) owns the data, the epochs, the log and
the checkpoints; a strategy owns everything that depends on how it searches:

- its optimisers and their schedules (:meth:`SearchStrategy.start_epoch`,
  :meth:`SearchStrategy.end_epoch`), so a strategy without gradient architecture updates has
  no architecture optimiser to fake;
- each iteration's updates (:meth:`SearchStrategy.step`), given a trainA batch and, when
  :meth:`SearchStrategy.start_epoch` asked for them, a trainB batch;
- what validation runs (:meth:`SearchStrategy.validate`), what the epoch record says about
  the architecture (:meth:`SearchStrategy.epoch_record`) and its decode (per epoch:
  :meth:`SearchStrategy.decode`; at the end: :meth:`SearchStrategy.final_decode`);
- its memory estimate (:meth:`StrategyFactory.estimate_memory`, for ``--dry-run`` and
  ``checkpoint_cells=auto``) and whether its weights leave trainB to the architecture
  (:attr:`StrategyFactory.uses_train_b`).

``search.strategy`` names it in :data:`autodeeplab.engine.search.strategies.STRATEGIES`; adding
one is a module beside ``darts.py`` and one line there. A checkpoint resumes only under the
strategy that wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.search.step import Batch, StepResult
from autodeeplab.genotype import Genotype
from autodeeplab.space.memory import MemoryEstimate
from autodeeplab.space.network import SearchNetwork

__all__ = [
    "Batch",
    "Decoded",
    "Penalty",
    "SearchEnd",
    "SearchStrategy",
    "StepResult",
    "StrategyContext",
    "StrategyFactory",
    "ValidationData",
]


class Penalty(Protocol):
    """An extra architecture-loss term (the cost-aware search's), computed in fp32."""

    def __call__(self) -> Tensor:
        """The penalty, added to the architecture step's loss."""
        ...


class ValidationData(Protocol):
    """What validation may read from the search's data (:class:`.data.SearchData`)."""

    loader_val: torch.utils.data.DataLoader

    def recalibration_batches(self, count: int = 8) -> list[Tensor]:
        """This rank's share of the first ``count`` training batches, images only."""
        ...


@dataclass(frozen=True)
class StrategyContext:
    """Where and how a strategy's steps run, as the search loop sets them up."""

    device: torch.device
    amp_dtype: torch.dtype | None  # the forward pass's autocast dtype; None: fp32
    guard: NonFiniteGuard  # vets each step's loss and gradients
    penalty: Penalty | None = None  # the cost-aware search's architecture-loss term


@dataclass(frozen=True)
class SearchEnd:
    """What a search hands its strategy's :meth:`~SearchStrategy.final_decode` once every
    epoch ran. Every rank gets one."""

    record: dict[str, Any]  # the last epoch's record
    epochs: int  # the epochs run
    out: Path | None  # where to write files; None on the ranks that write nothing
    data: ValidationData
    num_classes: int


@dataclass
class Decoded:
    """A finished search's result: the genotype, how it was found, and what to draw."""

    genotype: Genotype
    provenance: dict[str, Any]  # stored in genotype.json beside the genotype
    beta: np.ndarray | None = None  # transition probabilities (L, levels, 3) to shade the path
    report: bool = True  # whether search_log.jsonl has the alpha/beta the report plots
    files: list[Path] = field(default_factory=list)  # what the decode wrote in the run folder


class SearchStrategy(Protocol):
    """How the search learns; what the search loop calls, and nothing more.

    :meth:`state_dict` holds everything the strategy needs to resume bitwise (its optimisers,
    schedules, grad scalers, counters); its keys go into the checkpoint beside the loop's own.
    """

    w_optimizer: torch.optim.Optimizer

    def start_epoch(self, epoch: int, steps_per_epoch: int, resumed_mid_epoch: bool) -> bool:
        """Set ``epoch``'s learning rates; True if its iterations need a trainB batch."""
        ...

    def step(self, batch_a: Batch, batch_b: Batch | None, where: str) -> StepResult:
        """One iteration: update w from ``batch_a`` (and the architecture from ``batch_b``).

        ``where`` names the iteration (``epoch E, step S (iteration I)``) in guard errors.
        """
        ...

    def arch_parameters(self) -> list[Tensor]:
        """The architecture parameters it updates (checked finite, equal across ranks)."""
        ...

    def end_epoch(self, train_loss: float | None, class_counts: Tensor) -> float:
        """Close the epoch (its mean train loss, trainA's label counts); returns its w lr."""
        ...

    def validate(self, data: ValidationData, num_classes: int, sync_bn: bool) -> dict[str, float]:
        """The epoch's validation: ``val_loss``, ``val_miou`` and ``val_pixel_acc``."""
        ...

    def decode(self, path_decode: str) -> Genotype:
        """The genotype the search stands for now (cheap: every epoch and every stop)."""
        ...

    def epoch_record(
        self, genotype: Genotype, previous: Genotype | None, epoch: int, arch_on: bool
    ) -> dict[str, Any]:
        """The epoch record's view of what the search has learnt, ``genotype`` included."""
        ...

    def final_decode(self, end: SearchEnd) -> Decoded:
        """The search's result once every epoch ran. Every rank calls it."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint entries (name -> state) that resume this strategy exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint holding :meth:`state_dict`'s entries."""
        ...


class StrategyFactory(Protocol):
    """A strategy's class, as :data:`.strategies.STRATEGIES` holds it."""

    #: Whether w trains on trainA alone, trainB being kept for the architecture (bi-level);
    #: otherwise w trains on the whole training set (trainA + trainB).
    uses_train_b: ClassVar[bool]
    #: The checkpoint entries (of its :meth:`SearchStrategy.state_dict`) a resume needs.
    checkpoint_keys: ClassVar[tuple[str, ...]]

    def __call__(
        self, model: SearchNetwork, loop: SearchLoopConfig, context: StrategyContext
    ) -> SearchStrategy:
        """A strategy for ``model``, configured by ``loop`` (lr, momentum, arch_lr, ...), its
        steps run as ``context`` says."""
        ...

    def prepare_model(self, model: SearchNetwork, loop: SearchLoopConfig) -> None:
        """Add to ``model`` the weights the strategy trains beyond the supernet's (spos: the
        single-path H^{l-2} edges), as its constructor does: what a resume check builds."""
        ...

    def estimate_memory(
        self, crop: int, batch_size: int, num_classes: int, **kwargs: Any
    ) -> MemoryEstimate:
        """Its search's peak memory; the arguments of
        :func:`~autodeeplab.space.memory.estimate_search_memory`."""
        ...
