"""The retraining sections: the discrete network (``model``), the data, the loop (``train``)
and the validation's inference (``eval``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autodeeplab.config.data import DataConfig

__all__ = ["CPU_TRAIN_PRESET", "EvalConfig", "TrainConfig", "TrainLoopConfig", "TrainModelConfig"]


@dataclass(frozen=True)
class TrainModelConfig:
    """The discrete network: a preset ``name`` or a ``genotype`` file, plus its width."""

    # A preset network: auto-deeplab-s, auto-deeplab-m or auto-deeplab-l (give this or
    # genotype).
    name: str | None = None
    # A genotype JSON file to train (what search writes; give this or name).
    genotype: str | None = None
    filter_multiplier: int | None = None  # None: the preset's F (20 for a genotype file)
    drop_path_keep_prob: float = 1.0  # scheduled drop path; 1.0 (off) is the TF default
    # The width of each ASPP branch (256).
    aspp_channels: int = 256
    # The width of the DeepLabv3+ decoder (256).
    decoder_channels: int = 256
    # Dropout after the ASPP projection.
    dropout: float = 0.1
    # Initial gamma of the BN after the ASPP projection; 1.0 is TF's init. A small value
    # starts the deep path's contribution near zero (as zero-gamma init does for residual
    # branches), so its exploding backward signal does not drown the decoder's at the start.
    aspp_gamma_init: float = 1.0


@dataclass(frozen=True)
class TrainLoopConfig:
    """The retrain loop (paper §5.2; DeepLab's protocol: SGD, poly lr, iteration-based)."""

    # Training iterations (the paper's Cityscapes schedule: 1.5M at batch 8).
    iters: int = 1_500_000
    # Images per iteration (global: split over torchrun processes).
    batch_size: int = 8
    # The initial SGD lr, decayed by the poly schedule to 0.
    lr: float = 0.05
    # SGD momentum.
    momentum: float = 0.9
    # SGD weight decay (the TF default 4e-5).
    weight_decay: float = 4e-5
    # The poly lr schedule's power: lr * (1 - iter / iters) ** power.
    poly_power: float = 0.9
    # Clip the gradient norm to this; null: no clipping.
    grad_clip: float | None = None
    # Evaluate on val every this many iterations (best.pt keeps the best).
    eval_every: int = 5000
    # Log the mean loss of this many iterations as one record.
    log_every: int = 10
    # Seeds the whole run (data order, augmentation, initial weights).
    seed: int = 0
    # auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N.
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 or fp16 on CUDA, off on CPU), bf16, fp16, off
    # Write TensorBoard logs beside train_log.jsonl.
    tensorboard: bool = True
    # Under torchrun: SyncBatchNorm (CUDA only), so BN sees the global batch, not the rank's.
    sync_bn: bool = False
    # Weights and batches in channels-last (NHWC) memory format: the convolution kernels'
    # own layout on CPUs (oneDNN) and tensor-core GPUs; ~20% faster on CPU (benchmarks/).
    channels_last: bool = True
    # torch.compile the training forward pass: false, true (Inductor) or a backend's name
    # (e.g. aot_eager, cudagraphs). Off by default: on 2 CPU cores Inductor took 4.5 min to
    # compile auto-deeplab-s and its training steps were 13% slower (README, Speed); it is
    # meant for GPUs, where it is not measured yet.
    compile: bool | str = False
    # An inf/nan loss or gradient: stop (error naming the iteration and the last good
    # checkpoint) or skip (drop that update, count it; stop past max_skipped of train.iters).
    nonfinite: str = "stop"
    # With nonfinite=skip: the share of updates that may be skipped before the run stops.
    max_skipped: float = 0.1


@dataclass(frozen=True)
class EvalConfig:
    """Inference for validation: whole image or sliding window, with optional scales + flip."""

    # whole (one forward over the image) or slide (windows of window pixels every stride).
    mode: str = "whole"
    # Image scales whose softmax probabilities are averaged (the paper's MS: 0.5 to 1.75).
    scales: tuple[float, ...] = (1.0,)
    # Also average the mirrored image's probabilities.
    flip: bool = False
    window: int | None = None  # sliding-window size; None: the training crop
    stride: int | None = None  # sliding-window step; None: two thirds of the window
    batch_size: int = 1  # whole images of a real dataset differ in size: batch 1 by default


@dataclass(frozen=True)
class TrainConfig:
    """Everything an ``autodeeplab train`` run needs."""

    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    # The search's data section, at the retrain crop of the paper's Cityscapes runs.
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=769))
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: The default of ``autodeeplab train`` and of ``run``'s retraining: DeepLab's protocol on
#: the built-in data, sized for 2 CPU cores. Equal to configs/train/synthetic.yaml.
CPU_TRAIN_PRESET: dict[str, Any] = {
    "model": {
        "filter_multiplier": 8,
        "aspp_channels": 64,
        "decoder_channels": 64,
        "aspp_gamma_init": 0.001,
    },
    "data": {
        "spec": "synthetic",
        "crop": 64,
        "scale": [0.75, 1.25],
        "train_samples": 1024,
        "val_samples": 64,
    },
    "train": {"iters": 1200, "batch_size": 16, "lr": 0.05, "eval_every": 100, "log_every": 10},
    "eval": {"batch_size": 16},
}
