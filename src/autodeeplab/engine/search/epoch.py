"""One search epoch as numbers: the tally of its steps (which a stop's checkpoint keeps) and
the record it ends with in ``search_log.jsonl``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.distributed import all_reduce_mean, is_distributed
from autodeeplab.engine.search.schedule import ARCH_LR_RANGE, ArchSchedule, class_prior_entropy
from autodeeplab.engine.search.step import Batch, StepResult, bn_running_stats
from autodeeplab.genotype import Genotype
from autodeeplab.space.decode import path_margin
from autodeeplab.space.diagnostics import search_diagnostics
from autodeeplab.space.network import SearchNetwork

__all__ = ["TENSORBOARD_TAGS", "EpochTally", "arch_record", "epoch_record", "margin_warning"]

#: The epoch record's keys that go to TensorBoard, and their tags.
TENSORBOARD_TAGS = {
    key: f"search/{key}"
    for key in (
        "train_loss", "arch_loss", "val_loss", "val_miou", "val_pixel_acc", "lr",
        "expected_madds", "decoded_madds",
    )
}  # fmt: skip


def margin_warning(
    margin: float,
    threshold: float,
    arch_lr: float | None = None,
    setting: float | str | None = None,
    budget: float | None = None,
    decode: str = "argmax",
) -> str | None:
    """The one-line warning for a decoded path that barely beats its runner-up, or None.

    ``arch_lr``: the architecture lr the search ended with; at or above auto's cap, raising
    it is no longer the advice (Adam's steps would follow single batches). ``setting``: the
    run's ``search.arch_lr`` (a number or ``auto``), so the advice never names what the run
    already uses: under ``auto`` the lr rises with ``search.arch_logit_budget`` (``budget``).
    ``decode``: the run's ``search.decode``; under ``score`` the argmax/Viterbi path is only
    the first candidate, and the warning says so instead of blaming genotype.json's path.
    """
    if margin >= threshold:
        return None
    if decode == "score":
        return (
            f"beta's argmax/Viterbi path beats its runner-up by only {margin:.3f} nats (< "
            f"search.min_path_margin={threshold:g}); genotype.json is not chosen by beta "
            "(search.decode=score picks the best-scoring candidate, that path only its "
            "first), so this says only that beta has learnt little"
        )
    if arch_lr is not None and arch_lr >= ARCH_LR_RANGE[1]:
        fix = (
            f"search longer (--epochs) or with larger batches (--batch-size); search.arch_lr "
            f"is already {arch_lr:g}, the most that search.arch_lr=auto uses"
        )
    elif setting == "auto":
        now = "" if budget is None else f" (now {budget:g})"
        fix = (
            "search longer (--epochs) or raise search.arch_logit_budget"
            f"{now}: search.arch_lr=auto sets the lr to it over the architecture steps"
        )
    else:
        fix = "search longer (--epochs) or raise search.arch_lr (or use search.arch_lr=auto)"
    return (
        f"the decoded path beats its runner-up by only {margin:.3f} nats (< "
        f"search.min_path_margin={threshold:g}): beta has not learnt enough to choose a path; "
        + fix
    )


@dataclass
class EpochTally:
    """The epoch in progress: its loss sums and step counts, which a stop's checkpoint keeps."""

    w_loss_sum: Tensor
    a_loss_sum: Tensor
    class_counts: Tensor  # trainA label pixels per class seen this epoch (for the prior)
    steps: int = 0
    w_steps: int = 0
    arch_steps: int = 0
    skipped_w: int = 0
    skipped_arch: int = 0
    seconds_before: float = 0.0  # time the epoch ran before the stop it resumes from

    @classmethod
    def start(
        cls, device: torch.device, partial: dict[str, Any] | None, num_classes: int
    ) -> EpochTally:
        """A fresh epoch's tally, or the one a mid-epoch checkpoint saved (``partial``)."""
        zero = torch.zeros((), device=device)
        tally = cls(zero.clone(), zero.clone(), torch.zeros(num_classes, dtype=torch.float64))
        if partial is not None:
            tally.steps, tally.w_steps = partial["steps"], partial["w_steps"]
            tally.arch_steps = partial["arch_steps"]
            tally.skipped_w, tally.skipped_arch = partial["skipped_w"], partial["skipped_arch"]
            tally.w_loss_sum += partial["w_loss_sum"].to(device)
            tally.a_loss_sum += partial["a_loss_sum"].to(device)
            if "class_counts" in partial:
                tally.class_counts += partial["class_counts"]
            tally.seconds_before = partial["seconds"]
        return tally

    def count_labels(self, batch: Batch) -> None:
        """Add ``batch``'s valid label pixels per class (the class prior of arch_start_loss)."""
        labels = batch[1]
        num_classes = len(self.class_counts)
        labels = labels[(labels >= 0) & (labels < num_classes)]
        self.class_counts += torch.bincount(labels, minlength=num_classes).double()

    def add(self, result: StepResult) -> None:
        """Fold in one iteration's losses (applied updates only) and skips."""
        if result.w_applied:
            self.w_loss_sum += result.w_loss
            self.w_steps += 1
        else:
            self.skipped_w += 1
        if result.arch_loss is not None:
            if result.arch_applied:
                self.a_loss_sum += result.arch_loss
                self.arch_steps += 1
            else:
                self.skipped_arch += 1
        self.steps += 1

    def mean_w_loss(self) -> float:
        """The mean weight-step loss so far (a host sync)."""
        return float(self.w_loss_sum) / max(self.w_steps, 1)

    def average_over_ranks(self, model: torch.nn.Module, sync_bn: bool) -> None:
        """The global batch's loss sums and label counts, and (without SyncBN) one set of BN
        statistics; a no-op in one process."""
        if not is_distributed():
            return
        all_reduce_mean([self.w_loss_sum, self.a_loss_sum])
        # The mean of the ranks' counts: the global frequencies, scaled by 1/world.
        counts = self.class_counts.to(self.w_loss_sum.device)
        all_reduce_mean([counts])
        self.class_counts = counts.cpu()
        if not sync_bn:
            all_reduce_mean(bn_running_stats(model))

    def position(self, seconds: float) -> dict[str, Any]:
        """The ``partial`` entry of a stop's checkpoint (``seconds``: the epoch's run time)."""
        return {
            "steps": self.steps,
            "w_steps": self.w_steps,
            "arch_steps": self.arch_steps,
            "skipped_w": self.skipped_w,
            "skipped_arch": self.skipped_arch,
            "w_loss_sum": self.w_loss_sum.detach().cpu(),
            "a_loss_sum": self.a_loss_sum.detach().cpu(),
            "class_counts": self.class_counts.clone(),
            "seconds": seconds,
        }

    def losses(self, arch_on: bool) -> dict[str, float | None]:
        """The epoch's mean losses; None where every update was skipped (or none ran)."""
        n_w, n_arch = self.w_steps, self.arch_steps
        return {
            "train_loss": float(self.w_loss_sum) / n_w if n_w else None,
            "arch_loss": float(self.a_loss_sum) / n_arch if arch_on and n_arch else None,
        }


def arch_record(
    model: SearchNetwork,
    genotype: Genotype,
    previous: Genotype | None,
    schedule: ArchSchedule,
    loop: SearchLoopConfig,
    arch_on: bool,
    aux_weight: float,
    epoch: int,
) -> dict[str, Any]:
    """The epoch record's view of what the search has learnt (space/diagnostics.py)."""
    with torch.no_grad():
        alpha_w, beta_w = model.alpha_weights().cpu(), model.beta_weights().cpu()
        start = None
        if schedule.start_alpha is not None and schedule.start_beta is not None:
            start = (schedule.start_alpha, schedule.start_beta)
        diag = search_diagnostics(
            alpha_w,
            beta_w,
            genotype,
            path_margin(beta_w, loop.path_decode),
            previous,
            start,
            model.alpha.cpu(),
            model.beta.cpu(),
            model.beta_mask.cpu(),
        )
    record = {
        "alpha": alpha_w.tolist(),
        "beta": beta_w.tolist(),
        "genotype": genotype.to_dict(),
        **diag,
        "path_decode": loop.path_decode,
        "arch_lr": schedule.epoch_lr(loop, epoch) if arch_on else None,
        "arch_start_forced": schedule.forced or None,
        "aux_skip": aux_weight,
        "class_prior_entropy": class_prior_entropy(schedule.class_counts),
        "arch_start_loss": schedule.loss_threshold(loop),
    }
    if epoch + 1 == loop.epochs:
        # The schedule's base lr, not the last epoch's: an annealed lr ends far below the
        # cap even when its base is at it, and raising it would then be the wrong advice.
        warning = margin_warning(
            diag["path_margin"],
            loop.min_path_margin,
            schedule.lr,
            loop.arch_lr,
            loop.arch_logit_budget,
            loop.decode,
        )
        if warning is not None:
            record["warning"] = warning
    return record


def epoch_record(
    epoch: int,
    step: int,
    tally: EpochTally,
    metrics: dict[str, float],
    lr: float,
    arch_on: bool,
    seconds: float,
    arch: dict[str, Any],
    loop: SearchLoopConfig,
) -> dict[str, Any]:
    """The ``search_log.jsonl`` record of ``epoch`` (0-based), ``arch`` from :func:`arch_record`."""
    record = {
        "epoch": epoch + 1,
        "step": step,
        **tally.losses(arch_on),  # None: every update was skipped (search.nonfinite=skip)
        **metrics,
        "lr": lr,
        "arch_updates": arch_on,
        "seconds": seconds,
        **arch,  # with the last epoch's margin warning, if any
    }
    if loop.nonfinite == "skip":
        record["skipped_steps"] = tally.skipped_w
        record["skipped_arch_steps"] = tally.skipped_arch
    return record
