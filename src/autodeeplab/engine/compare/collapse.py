"""Did a retraining collapse? Telling a failed run from a bad network.

A ranking measured on unstable retrainings means nothing: on a held-out dataset the
paper's genotype retrained under ``compare``'s shared schedule to 17.2 test mIoU with one
seed and 31.4 with the other. Why a run of that schedule can fail (reasoned from the loop,
engine/train/loop.py, and configs/train/msrc21.yaml; not measured):

- the learning rate starts at its peak (poly decay, no warm-up) with SGD momentum 0.9 and
  no gradient clipping, on a network trained from scratch: an early spike can push BN
  scales and ReLUs into a dead state, after which the network predicts one class and
  recovers slowly, if at all, in the 600 iterations left;
- the deepest cells of a stride-32 genotype see 3x3 maps at crop 96: BatchNorm's batch
  statistics come from 8 x 9 values per channel, so the running statistics used at
  validation drift away from the training ones;
- 4 validations (every 150 of 600 iterations) choose the best checkpoint: one seed may
  meet a bad moment at all four.

The retrain network's own notes (``aspp_gamma_init`` in model/autodeeplab.py) name the
failure seen before: through the L cells BatchNorm's backward signal grows layer by layer,
and SGD "sat at the all-background solution for hundreds of steps". The damped ASPP gamma
of the CPU presets shortens that; the paper's genotype, the deepest network compared (12
cells, down to stride 32), has the most growth. A seed that sits there for 300 of 600
iterations gets half the schedule, which is the size of gap between 17.2 and 31.4.

The detector reads what a run leaves (its train log and its confusion matrix on the
reported split) and gives the reasons it failed, each a plain test on numbers:

- ``loss_did_not_fall``: the mean train loss of the last quarter of the log is at least
  ``fall_ratio`` of the first logged window's;
- ``diverged``: after the first tenth of the log, a logged loss rose above the first
  window's (the loss of a from-scratch run is highest there, so this is a blow-up, even if
  it recovered);
- ``stalled_at_prior``: the loss stayed at or above ``prior_margin`` times the entropy of
  the class frequencies (the loss of predicting the class prior everywhere, the
  all-background solution's neighbour; the frequencies come from the confusion matrix's
  true counts) for more than ``stall_fraction`` of the logged iterations;
- ``at_chance``: the mIoU is at most ``chance_margin`` times that of predicting the
  majority class everywhere (computed from the confusion matrix's true class counts);
- ``one_class``: one class takes at least ``one_class_share`` of the predicted pixels
  while it is less than ``one_class_truth`` of the true ones.

A collapsed run is reported and left out of the ranking statistics, not hidden.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["collapse_reasons", "prior_entropy", "read_run_health"]


def _loss_reasons(losses: Sequence[float], fall_ratio: float) -> list[str]:
    """``loss_did_not_fall`` and ``diverged`` from the logged train losses, in order."""
    if len(losses) < 4:
        return []  # too short a log to judge
    first = losses[0]
    tail = losses[-max(1, len(losses) // 4) :]
    reasons = []
    if statistics.fmean(tail) >= fall_ratio * first:
        reasons.append("loss_did_not_fall")
    if any(x > first for x in losses[max(1, len(losses) // 10) :]):
        reasons.append("diverged")
    return reasons


def prior_entropy(confusion: Sequence[Sequence[float]]) -> float | None:
    """The cross-entropy of predicting the class frequencies of ``confusion``'s true counts."""
    truth = [float(sum(row)) for row in confusion]
    total = sum(truth)
    if total <= 0:
        return None
    return -sum(t / total * math.log(t / total) for t in truth if t > 0)


def _stalled(losses: Sequence[float], prior: float, margin: float, fraction: float) -> bool:
    """Whether the loss first fell below ``margin * prior`` after ``fraction`` of the log."""
    if len(losses) < 4:
        return False
    below = next((k for k, x in enumerate(losses) if x < margin * prior), len(losses))
    return below > fraction * len(losses)


def _confusion_reasons(
    confusion: Sequence[Sequence[float]],
    miou: float,
    chance_margin: float,
    one_class_share: float,
    one_class_truth: float,
) -> list[str]:
    """``at_chance`` and ``one_class`` from a confusion matrix (rows truth, columns prediction)."""
    truth = [float(sum(row)) for row in confusion]
    predicted = [float(sum(col)) for col in zip(*confusion, strict=True)]
    total = sum(truth)
    if total <= 0:
        return []
    present = sum(1 for t in truth if t > 0)
    majority_miou = max(truth) / total / present
    reasons = []
    if miou <= chance_margin * majority_miou:
        reasons.append("at_chance")
    top = max(range(len(predicted)), key=predicted.__getitem__)
    if predicted[top] >= one_class_share * total and truth[top] < one_class_truth * total:
        reasons.append("one_class")
    return reasons


def collapse_reasons(
    losses: Sequence[float],
    miou: float | None = None,
    confusion: Sequence[Sequence[float]] | None = None,
    *,
    fall_ratio: float = 0.9,
    prior_margin: float = 0.95,
    stall_fraction: float = 1 / 3,
    chance_margin: float = 1.5,
    one_class_share: float = 0.9,
    one_class_truth: float = 0.75,
) -> list[str]:
    """Why a retraining failed (an empty list: nothing found), from its numbers.

    ``losses``: the logged train losses in order (None entries, every update of a window
    skipped, are dropped); ``miou`` and ``confusion``: on the reported split. The
    thresholds are the module docstring's.
    """
    clean = [float(x) for x in losses if x is not None and math.isfinite(x)]
    reasons = _loss_reasons(clean, fall_ratio)
    prior = prior_entropy(confusion) if confusion is not None else None
    if prior and _stalled(clean, prior, prior_margin, stall_fraction):
        reasons.append("stalled_at_prior")
    if confusion is not None and miou is not None:
        reasons += _confusion_reasons(
            confusion, miou, chance_margin, one_class_share, one_class_truth
        )
    return reasons


def read_run_health(folder: Path, split: str, log_folder: Path | None = None) -> dict[str, Any]:
    """The collapse reasons of one ``compare`` run folder, and what they were read from.

    Reads ``metrics_<split>.json`` in ``folder`` and ``train/train_log.jsonl`` in
    ``log_folder`` (default ``folder``). Either may be missing (a run reused from an earlier
    comparison that was moved away): then only what is there is judged. Returns
    ``collapsed``, ``reasons``, ``first_loss``, ``last_loss`` and ``logged``.
    """
    losses: list[float] = []
    log = (log_folder or folder) / "train" / "train_log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if record.get("event") == "train" and record.get("loss") is not None:
                losses.append(float(record["loss"]))
    miou, confusion = None, None
    metrics = folder / f"metrics_{split}.json"
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text(encoding="utf-8"))
            miou, confusion = data.get("miou"), data.get("confusion_matrix")
        except json.JSONDecodeError:
            pass
    reasons = collapse_reasons(losses, miou, confusion)
    return {
        "collapsed": bool(reasons),
        "reasons": reasons,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "logged": bool(losses),
    }
