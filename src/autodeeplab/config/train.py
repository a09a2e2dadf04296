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

    name: str | None = None
    genotype: str | None = None
    filter_multiplier: int | None = None  # None: the preset's F (20 for a genotype file)
    drop_path_keep_prob: float = 1.0  # scheduled drop path; 1.0 (off) is the TF default
    aspp_channels: int = 256
    decoder_channels: int = 256
    dropout: float = 0.1
    # Initial gamma of the BN after the ASPP projection; 1.0 is TF's init. A small value
    # starts the deep path's contribution near zero (as zero-gamma init does for residual
    # branches), so its exploding backward signal does not drown the decoder's at the start.
    aspp_gamma_init: float = 1.0


@dataclass(frozen=True)
class TrainLoopConfig:
    """The retrain loop (paper §5.2; DeepLab's protocol: SGD, poly lr, iteration-based)."""

    iters: int = 1_500_000
    batch_size: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    poly_power: float = 0.9
    grad_clip: float | None = None
    eval_every: int = 5000
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 or fp16 on CUDA, off on CPU), bf16, fp16, off
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
    max_skipped: float = 0.1


@dataclass(frozen=True)
class EvalConfig:
    """Inference for validation: whole image or sliding window, with optional scales + flip."""

    mode: str = "whole"
    scales: tuple[float, ...] = (1.0,)
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
