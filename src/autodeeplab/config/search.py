"""The search sections: the supernet (``model``), the data and the search loop (``search``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from autodeeplab.config.data import DataConfig
from autodeeplab.trellis import SupernetSpec

__all__ = [
    "CPU_SEARCH_PRESET",
    "SearchConfig",
    "SearchLoopConfig",
    "SearchModelConfig",
    "supernet_kwargs",
]


@dataclass(frozen=True)
class SearchModelConfig(SupernetSpec):
    """The supernet: the :class:`~autodeeplab.trellis.SupernetSpec` fields, and checkpointing.

    Its keys, types and defaults are the spec's (one place for a new supernet argument);
    ``checkpoint_cells`` adds the one that changes memory and time, not the network.
    """

    # Activation checkpointing per cell: true, false, or auto (on where the peak without it
    # would take over half the device's memory; autodeeplab.space.memory).
    checkpoint_cells: bool | str = "auto"


def supernet_kwargs(model: SearchModelConfig) -> dict[str, Any]:
    """The keyword arguments of ``SearchNetwork`` (all but ``num_classes``) that ``model`` holds.

    The spec's fields and ``checkpoint_cells``, which may still be ``auto``: the engine
    resolves it before building.
    """
    return {f.name: getattr(model, f.name) for f in fields(model)}


@dataclass(frozen=True)
class SearchLoopConfig:
    """The first-order bi-level search (paper §4.2, §5.1)."""

    # How the search learns: a name in engine.strategies.STRATEGIES ("darts": first-order
    # bi-level DARTS, the paper's; "spos": uniform single-path one-shot training, then an
    # evolutionary decode scored on the supernet). The engine checks it against that registry,
    # which this layer cannot see, so that a strategy is added with one module and one line.
    strategy: str = "darts"
    # Search epochs; an epoch is one pass over trainA (docs/design.md §12.9).
    epochs: int = 40
    # Images per step, for w and for alpha/beta (global: split over torchrun processes).
    batch_size: int = 2
    # alpha/beta learn from this epoch on (0-based: 20 = after 20 epochs of w alone)...
    arch_start_epoch: int = 20
    # ...and, when set, only once an epoch's mean train loss is below this: a number, or
    # "prior" for the entropy of trainA's class frequencies (the loss of predicting them
    # everywhere: a supernet above it has learnt nothing yet for alpha/beta to follow). If the
    # loss never gets there, they start anyway halfway between arch_start_epoch and the end.
    arch_start_loss: float | str | None = None
    # The weights' SGD lr at the start (the paper's 0.025), annealed by cosine to lr_min.
    lr: float = 0.025
    # The weights' lr at the end of the cosine schedule.
    lr_min: float = 0.001
    # The weights' SGD momentum.
    momentum: float = 0.9
    # The weights' SGD weight decay.
    weight_decay: float = 3e-4
    # Clip the weights' gradient norm to this (DARTS: 5); null: no clipping.
    grad_clip: float | None = 5.0
    # Adam's lr for alpha/beta: a number (the paper: 3e-3), or "auto": arch_logit_budget /
    # the number of architecture steps the schedule leaves when they start, within
    # [3e-3, 3e-2]. Adam moves a logit by about lr a step, so a short search at 3e-3 cannot
    # move beta past the decode's margin (README, "The schedule").
    arch_lr: float | str = 3e-3
    # With arch_lr=auto: how many logits Adam may move alpha/beta over the architecture steps
    # (the lr is this over the number of steps).
    arch_logit_budget: float = 3.0
    # The architecture lr over the epochs with updates: "constant" (the paper's), or
    # "cosine": lr x (1 + cos(pi k / n)) / 2 in the k-th of n such epochs, so the last epochs
    # move alpha/beta little and the decoded genotype can settle. With arch_lr=auto the lr
    # is scaled so that the schedule still allows arch_logit_budget logits of movement.
    arch_lr_schedule: str = "constant"
    # Adam's weight decay on alpha/beta (the paper's 1e-3).
    arch_weight_decay: float = 1e-3
    # Adam's betas for alpha/beta (DARTS: 0.5, 0.999).
    arch_betas: tuple[float, float] = (0.5, 0.999)
    # How the Viterbi scores the path: "relative" to a uniform choice among each node's
    # outgoing edges (docs/design.md §12.10), or "literal" (Eq. 7 as written; a prior toward
    # stride 4 that decides every short search). Recorded in genotype.json and the log.
    path_decode: str = "relative"
    # A search whose decoded path beats the runner-up by fewer nats than this ends with a
    # warning: beta has not learnt enough to choose (exp(0.5) = 1.65x as likely).
    min_path_margin: float = 0.5
    # BatchNorm in the supernet's validation: "batch" statistics, as the training and the
    # architecture steps see them (the default); "recalibrate": running statistics recomputed
    # over the first 8 trainA batches; "running": the running averages (DARTS). With batch-2,
    # non-affine BNs the running statistics do not describe what the supernet learnt: on the
    # CPU preset they gave val CE 4.2 where batch statistics gave 1.37 (README).
    val_bn: str = "batch"
    # How the genotype is decoded at the end: "argmax" (the paper's: argmax cell, Viterbi
    # path), or "score": candidates within compare's Multi-Adds band around that genotype
    # (it first, then random ones; with decode_generations > 0, evolved from the best) are
    # scored on the trained supernet (single path, BatchNorm recalibrated on
    # score_recal_batches trainA batches, val CE over score_val_batches val batches, null:
    # all), and the lowest val CE becomes genotype.json; all are in candidates.json. The
    # spos strategy always decodes so, in the band around target_madds (at retrain F
    # cost_filter_multiplier) or, without one, around the median network of the space.
    decode: str = "argmax"
    # With decode=score, and for spos: how many genotypes (the argmax/Viterbi one included, for
    # DARTS) are scored on the supernet.
    decode_candidates: int = 20
    # Evolution rounds (mutation and crossover) over the scored candidates; 0: random candidates
    # only.
    decode_generations: int = 0
    # Train batches that recalibrate the BatchNorm statistics of each candidate before it is
    # scored.
    score_recal_batches: int = 8
    # Val batches each candidate is scored on; null: the whole val split.
    score_val_batches: int | None = None
    # DARTS- (Chu et al., ICLR 2021; beyond the paper): an auxiliary skip connection of this
    # weight on every mixed op, outside the softmax, decaying linearly to 0 over the
    # architecture epochs, against the collapse onto parameter-free ops. 0 = off.
    aux_skip: float = 0.0
    # P-DARTS (Chen et al., ICCV 2019; beyond the paper): dropout at this rate on the output
    # of every skip_connect in the search's training passes (w and alpha/beta steps), against
    # the collapse onto skip connections. 0 = off.
    skip_dropout: float = 0.0
    # Whether that dropout also runs in the warm-up epochs, before alpha/beta learn. There it
    # cannot steer alpha, and it slows the supernet: on the CPU preset the supernet was still
    # at the all-background solution after 3 epochs with it, and past it after 2 without.
    skip_dropout_in_warmup: bool = True
    # The share of the training images that goes to trainA (the weights); the rest is trainB
    # (alpha/beta). The paper splits in halves.
    split_fraction: float = 0.5
    # Seeds the whole run: data order, split, initial weights, sampling (a resumed run equals an
    # uninterrupted one).
    seed: int = 0
    # auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N.
    device: str = "auto"
    # Write TensorBoard logs beside search_log.jsonl.
    tensorboard: bool = True
    # How many epoch checkpoints to keep (older ones are deleted; the newest is always kept).
    keep_checkpoints: int = 2
    # Cost-aware search (beyond the paper): pull the decoded network toward a Multi-Adds
    # budget of the retrain network, e.g. "50G@1024x2048"; null searches for accuracy alone.
    target_madds: str | None = None
    cost_weight: float = 1.0  # lambda in CE + lambda * log(E[Multi-Adds] / target)^2
    cost_filter_multiplier: int = 20  # F of the retrain network the budget is for (S = 20)
    # Under torchrun: SyncBatchNorm (CUDA only), so BN sees the global batch, not the rank's.
    sync_bn: bool = False
    # Mixed precision: off (the paper's fp32, the default), auto (bf16 or fp16 on CUDA, off
    # on CPU), bf16 (also on CPU, where it is only faster with bf16 units), fp16 (CUDA only).
    amp: str = "off"
    # An inf/nan loss, gradient or alpha/beta: stop (error naming the step and the last good
    # checkpoint) or skip (drop that update, count it; stop past max_skipped of all updates).
    nonfinite: str = "stop"
    # With nonfinite=skip: the share of updates that may be skipped before the run stops.
    max_skipped: float = 0.1


@dataclass(frozen=True)
class SearchConfig:
    """Everything an ``autodeeplab search`` run needs."""

    model: SearchModelConfig = field(default_factory=SearchModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchLoopConfig = field(default_factory=SearchLoopConfig)


#: The default of ``autodeeplab search``: a smaller space than the paper's (L=4, strides 4-16)
#: on the built-in data, sized for 2 CPU cores (at most 8 minutes) so that the supernet learns
#: and the search does not collapse onto skips (README). Equal to configs/search/synthetic.yaml.
CPU_SEARCH_PRESET: dict[str, Any] = {
    "model": {"num_layers": 4, "num_blocks": 5, "filter_multiplier": 8, "strides": [4, 8, 16]},
    "data": {"spec": "synthetic", "crop": 64, "train_samples": 512, "val_samples": 32},
    "search": {
        "epochs": 8,
        "batch_size": 8,
        "lr": 0.05,
        "arch_start_epoch": 2,
        "arch_start_loss": "prior",
        "arch_lr": "auto",
        "arch_betas": [0.9, 0.999],
        "skip_dropout": 0.5,
        "skip_dropout_in_warmup": False,
        "decode": "score",
    },
}
