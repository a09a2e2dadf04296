"""The search's data order: a function of (seed, epoch, pass) only, so resume is exact.

An epoch is one pass over trainA; trainB is cycled alongside by its own iterator, reseeded
on every pass (SPEC.md §12.9), never ``next(iter(loader))`` per step. Under torchrun each
rank takes its slots of every global batch, so the ranks together see what one process
with the global batch would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochSampler", "TrainBCycle"]


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` fixed by (seed, epoch, cycle); under DDP this rank's part.

    With ``world_size`` W > 1 the permutation is cut into global batches of W x
    ``batch_size`` (the remainder is dropped, as ``drop_last`` does in one process), and rank
    r yields slots ``r*batch_size .. (r+1)*batch_size - 1`` of each: the ranks' batches, in
    rank order, are exactly the batches of one process with batch W x ``batch_size``.
    """

    def __init__(
        self, n: int, seed: int, rank: int = 0, world_size: int = 1, batch_size: int = 1
    ) -> None:
        self.n, self.seed, self.epoch, self.cycle = n, seed, 0, 0
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size

    def set_epoch(self, epoch: int, cycle: int = 0) -> None:
        """Select the permutation of ``epoch`` (and of its ``cycle``-th pass)."""
        self.epoch, self.cycle = epoch, cycle

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + self.cycle)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.world_size == 1:
            return iter(order)
        b, step = self.batch_size, self.batch_size * self.world_size
        kept = self.n // step * step
        mine = [order[t + self.rank * b + k] for t in range(0, kept, step) for k in range(b)]
        return iter(mine)

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        return self.n // (self.batch_size * self.world_size) * self.batch_size


class TrainBCycle:
    """An endless iterator over a loader whose sampler is reseeded on every pass."""

    def __init__(self, loader: DataLoader, sampler: EpochSampler) -> None:
        self.loader, self.sampler = loader, sampler
        self.it: Iterator | None = None
        self.epoch = self.cycle = 0

    def start_epoch(self, epoch: int) -> None:
        """Restart at pass 0 of ``epoch`` (the order depends on (seed, epoch, pass) only)."""
        self.epoch, self.cycle, self.it = epoch, 0, None

    def __next__(self) -> Any:
        for _ in range(2):
            if self.it is None:
                self.sampler.set_epoch(self.epoch, self.cycle)
                self.it = iter(self.loader)
            try:
                return next(self.it)
            except StopIteration:
                self.it, self.cycle = None, self.cycle + 1
        raise RuntimeError("trainB yields no batch; use more data or a smaller batch size")
