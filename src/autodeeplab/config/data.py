"""The ``data`` section, one for the search and the retraining (they differ in the crop)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig", "TrainDataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Which data, at what crop, its augmentation (DeepLab's random scale, crop, flip), loading."""

    spec: str = "synthetic"
    crop: int = 64  # the search's default; TrainConfig's is 769
    scale: tuple[float, float] = (0.5, 2.0)  # random rescale range (real datasets only)
    # Resize real images first so the longer side is this (Cityscapes at half res: 1024,
    # ADE20K: 513).
    longest_side: int | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    num_workers: int = 0


#: The retraining's data section is the same class; ``TrainConfig`` defaults its crop to 769.
TrainDataConfig = DataConfig
