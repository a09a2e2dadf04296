"""The retraining's data: an order and an augmentation fixed by (seed, iteration), for exact resume.

Batch ``t`` holds the images of permutation ``(seed, epoch)`` at slots
``t mod batches_per_epoch``, and each image's augmentation is seeded by ``(seed, t, slot)``,
so neither depends on the process, the worker or what ran before. Under torchrun rank r
takes slots ``r*b .. (r+1)*b - 1`` of every global batch (``b = train.batch_size / N``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from autodeeplab.config import TrainConfig
from autodeeplab.data import build_dataset
from autodeeplab.data.transforms import val_transform
from autodeeplab.distributed import rank_indices
from autodeeplab.engine.guards import ignore_sigint

__all__ = ["BatchSchedule", "split_dataset", "train_datasets", "train_loaders"]


class BatchSchedule(Sampler[list[tuple[int, int]]]):
    """Batches ``start .. total-1`` as lists of ``(index, key)``; batch ``t`` depends on (seed, t).

    Epoch ``e`` is a permutation of the ``n`` indices seeded by ``(seed, e)``, cut into
    ``n // batch_size`` batches (the remainder is dropped). ``key`` numbers the draw in the
    whole run, and seeds that image's augmentation. With ``world_size`` W > 1, rank ``rank``
    gets its ``batch_size / W`` slots of each batch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        total: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} cannot be shared by {world_size} processes; use a "
                f"multiple of {world_size} (each process takes batch_size / {world_size})"
            )
        self.rank, self.world_size = rank, world_size
        if n < batch_size:
            raise ValueError(
                f"the training set has {n} images, fewer than the batch size {batch_size}; "
                f"use more data (data.train_samples) or a batch size of at most {n}"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.total = start, total
        self.per_epoch = n // batch_size

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 1_009)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, perm = -1, []
        for t in range(self.start, self.total):
            if t // self.per_epoch != epoch:
                epoch = t // self.per_epoch
                perm = self._permutation(epoch)
            j = (t % self.per_epoch) * self.batch_size
            batch = [(perm[j + k], t * self.batch_size + k) for k in range(self.batch_size)]
            b = self.batch_size // self.world_size
            yield batch[self.rank * b : (self.rank + 1) * b]

    def __len__(self) -> int:
        return max(self.total - self.start, 0)


class _SeededTransform:
    """Calls an albumentations pipeline with its randomness fixed by (seed, key)."""

    def __init__(self, transform: Any, seed: int) -> None:
        self.transform, self.seed, self.key = transform, seed, 0

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        compose = getattr(self.transform, "compose", None)
        if compose is None:  # not an albumentations Pipeline: nothing to seed
            return self.transform(image, mask)
        compose.set_random_seed((self.seed * 1_000_003 + self.key) % 2**32)
        out = compose(image=image, mask=mask)
        return out["image"], out["mask"]


class _Keyed(Dataset):
    """``dataset[(index, key)]``: sets the augmentation key, then reads ``dataset[index]``."""

    def __init__(self, dataset: Dataset, transform: _SeededTransform | None) -> None:
        self.dataset, self.transform = dataset, transform

    def __getitem__(self, item: tuple[int, int]) -> Any:
        if self.transform is not None:
            self.transform.key = item[1]
        return self.dataset[item[0]]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


def _train_transform(cfg: TrainConfig) -> _SeededTransform | None:
    """DeepLab's augmentation from ``data.transforms``, when that module provides it."""
    try:
        from autodeeplab.data.transforms import train_transform
    except ImportError:  # an older data package: train on unaugmented images
        return None
    pipeline = train_transform(cfg.data.crop, cfg.data.scale, longest_side=cfg.data.longest_side)
    return _SeededTransform(pipeline, cfg.train.seed)


def split_dataset(cfg: TrainConfig, split: str, transform: Any = None) -> Dataset:
    """``split`` ("train" or "val") of the run's dataset: its crop, seed and image count."""
    d = cfg.data
    num_samples = d.train_samples if split == "train" else d.val_samples
    return build_dataset(
        d.spec,
        split,
        size=d.crop,
        seed=cfg.train.seed,
        num_samples=num_samples,
        transform=transform,
    )


def train_datasets(cfg: TrainConfig, world: int) -> tuple[Dataset, Dataset]:
    """The training set (read by ``(index, key)``) and this rank's share of the validation set."""
    transform = _train_transform(cfg)
    train_set = split_dataset(cfg, "train", transform)
    resize = val_transform(cfg.data.longest_side) if cfg.data.longest_side else None
    val_set = split_dataset(cfg, "val", resize)
    if world > 1:  # each rank scores every world-th image; the confusion matrices are summed
        val_set = torch.utils.data.Subset(val_set, rank_indices(len(val_set)))
    return _Keyed(train_set, transform), val_set


def train_loaders(
    cfg: TrainConfig,
    train_set: Dataset,
    val_set: Dataset,
    start: int,
    end: int,
    rank: int,
    world: int,
    device: torch.device,
) -> tuple[DataLoader, DataLoader]:
    """Loaders of iterations ``start .. end-1`` (this rank's slots) and of validation."""
    loop, pin = cfg.train, device.type == "cuda"
    # Own generators: creating a loader iterator must not consume the global torch RNG,
    # which drives dropout and drop path and is saved for resume.
    n = len(train_set)  # type: ignore[arg-type]
    schedule = BatchSchedule(n, loop.batch_size, loop.seed, start, end, rank, world)
    train_loader = DataLoader(
        train_set,
        batch_sampler=schedule,
        num_workers=cfg.data.num_workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(loop.seed),
        worker_init_fn=ignore_sigint,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(loop.seed),
        worker_init_fn=ignore_sigint,
    )
    return train_loader, val_loader
