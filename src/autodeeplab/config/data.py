"""The ``data`` section, one for the search and the retraining (they differ in the crop)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig", "TrainDataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Which data, at what crop, its augmentation (DeepLab's random scale, crop, flip), loading."""

    # The dataset: synthetic, cityscapes:PATH, voc:PATH, ade20k:PATH, camvid:PATH or folder:PATH
    # (docs/datasets.md).
    spec: str = "synthetic"
    crop: int = 64  # the search's default; TrainConfig's is 769
    scale: tuple[float, float] = (0.5, 2.0)  # random rescale range (real datasets only)
    # Resize real images first so the longer side is this (Cityscapes at half res: 1024,
    # ADE20K: 513).
    longest_side: int | None = None
    # Use this many training images (a seeded random subset; the synthetic data's size); null:
    # all.
    train_samples: int | None = None
    # Use this many validation images, as train_samples; null: all.
    val_samples: int | None = None
    # DataLoader worker processes (0: load in the main process).
    num_workers: int = 0


#: The retraining's data section is the same class; ``TrainConfig`` defaults its crop to 769.
TrainDataConfig = DataConfig
