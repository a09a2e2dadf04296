"""What every bi-level strategy shares: w on trainA, alpha/beta on trainB, on one supernet.

The architecture schedule (:class:`~autodeeplab.engine.search.schedule.ArchSchedule`: when
alpha/beta start, at what lr, the auxiliary skip), validation of the softmax supernet, the
epoch record of alpha and beta and the argmax/Viterbi decode; w's optimiser, its cosine
schedule and the memory estimate are :class:`~.weights.WeightTraining`'s. A subclass calls
``super().__init__``, builds ``arch_optimizer`` and writes :meth:`step`;
:class:`~.darts.FirstOrderDarts` is one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.search.epoch import arch_record
from autodeeplab.engine.search.schedule import ArchSchedule, restore_schedule
from autodeeplab.engine.search.score_decode import decode_by_score, score_batches
from autodeeplab.engine.search.step import validate_supernet
from autodeeplab.engine.search.strategies.base import (
    Decoded,
    SearchEnd,
    StrategyContext,
    ValidationData,
)
from autodeeplab.engine.search.strategies.weights import WeightTraining
from autodeeplab.genotype import Genotype
from autodeeplab.space.network import SearchNetwork

__all__ = ["BiLevelStrategy"]


class BiLevelStrategy(WeightTraining):
    """The schedules, validation, record and decode of a bi-level search (paper §4.2, §4.3)."""

    uses_train_b: ClassVar[bool] = True
    #: The checkpoint entries a resume needs besides the loop's own.
    checkpoint_keys: ClassVar[tuple[str, ...]] = ("arch_optimizer", "w_scheduler")
    arch_optimizer: torch.optim.Optimizer  # the subclass's

    def __init__(self, model: SearchNetwork, loop: SearchLoopConfig, context: StrategyContext):
        super().__init__(model, loop, context)
        self.arch = model.arch_parameters()
        self.schedule = ArchSchedule(model.num_classes)
        self.aux_weight = loop.aux_skip

    def arch_parameters(self) -> list[Tensor]:
        """alpha and beta (and gamma with partial channels)."""
        return self.arch

    def start_epoch(self, epoch: int, steps_per_epoch: int, resumed_mid_epoch: bool) -> bool:
        """Whether alpha/beta learn in ``epoch`` (starting them when it is time); sets the
        architecture lr of the epoch and the auxiliary skip."""
        arch_on = self._arch_on(epoch, steps_per_epoch, resumed_mid_epoch)
        loop = self.loop
        self.aux_weight = self.schedule.aux_skip(loop, epoch)
        dropout = loop.skip_dropout if arch_on or loop.skip_dropout_in_warmup else 0.0
        self.model.set_skip_remedies(self.aux_weight, dropout)
        return arch_on

    def _arch_on(self, epoch: int, steps_per_epoch: int, resumed_mid_epoch: bool) -> bool:
        schedule, loop, model = self.schedule, self.loop, self.model
        if schedule.started_epoch is not None:
            schedule.set_epoch_lr(loop, epoch, self.arch_optimizer)
            return epoch >= schedule.started_epoch
        if resumed_mid_epoch:  # the epoch began without them
            return False
        if not schedule.should_start(loop, epoch):
            return False
        schedule.start(loop, epoch, steps_per_epoch, model.alpha, model.beta, self.arch_optimizer)
        return True

    def end_epoch(self, train_loss: float | None, class_counts: Tensor) -> float:
        """Step w's cosine schedule and feed the architecture schedule's start condition."""
        lr = self.step_w_schedule()
        self.schedule.end_epoch(train_loss, class_counts)
        return lr

    def validate(self, data: ValidationData, num_classes: int, sync_bn: bool) -> dict[str, float]:
        """The softmax supernet on val (with ``search.val_bn``'s BatchNorm statistics)."""
        val_bn = self.loop.val_bn
        return validate_supernet(
            self.model,
            data.loader_val,
            num_classes,
            self.device,
            self.amp_dtype,
            batch_stats=val_bn == "batch",
            recalibrate=data.recalibration_batches() if val_bn == "recalibrate" else None,
            average_bn=not sync_bn,
        )

    def decode(self, path_decode: str) -> Genotype:
        """The supernet's decode: argmax ops per edge, Viterbi over beta (paper §3.3)."""
        return self.model.genotype(path_decode)

    def epoch_record(
        self, genotype: Genotype, previous: Genotype | None, epoch: int, arch_on: bool
    ) -> dict[str, Any]:
        """alpha, beta, the genotype and the search diagnostics (with the margin warning)."""
        model, loop = self.model, self.loop
        return arch_record(
            model, genotype, previous, self.schedule, loop, arch_on, self.aux_weight, epoch
        )

    def final_decode(self, end: SearchEnd) -> Decoded:
        """The last epoch's decode, with its margin and the epoch alpha/beta started; with
        ``search.decode=score``, the best-scoring network in the band around it."""
        loop = self.loop
        genotype, scored = self.decode(loop.path_decode), {}
        if loop.decode == "score":  # every rank scores; ``end.out`` gets candidates.json
            recal, val = score_batches(end.data, loop)
            genotype, scored = decode_by_score(
                self.model, genotype, recal, val, end.num_classes, loop,
                device=self.device, amp_dtype=self.amp_dtype, out=end.out,
            )  # fmt: skip
        provenance = {
            "path_decode": loop.path_decode,
            "path_margin": end.record.get("path_margin"),
            "epochs": end.epochs,
            "arch_started_epoch": self.schedule.started_epoch,
            **scored,
        }
        beta = self.model.beta_weights().detach().cpu().numpy()
        return Decoded(genotype, provenance, beta)

    def schedule_state(self) -> dict[str, Any]:
        """The schedules' checkpoint entries, under their historical keys."""
        return {"w_scheduler": self.w_sched.state_dict(), "arch_schedule": self.schedule.state()}

    def load_schedule_state(self, state: dict[str, Any]) -> None:
        """From a checkpoint holding :meth:`schedule_state`'s entries (or an older one)."""
        restore_schedule(self.schedule, state, self.loop.arch_start_epoch)
        self.w_sched.load_state_dict(state["w_scheduler"])
