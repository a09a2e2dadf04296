"""The search's random orders: the data's, a function of (seed, epoch, pass), and the
sub-network each single-path step trains, a function of (seed, step); so resume is exact.

An epoch is one pass over trainA; trainB is cycled alongside by its own iterator, reseeded
on every pass (docs/design.md §12.9), never ``next(iter(loader))`` per step. Under torchrun each
rank takes its slots of every global batch, so the ranks together see what one process
with the global batch would; every rank draws the same sub-network, from (seed, step) alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from autodeeplab.genotype import Genotype, count_paths

__all__ = ["EpochSampler", "TrainBCycle", "sample_single_path", "step_generator"]


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


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from a hash of (``seed``, ``step``) alone: the same on every
    rank and after a resume, and unrelated for neighbouring seeds or steps."""
    digest = hashlib.sha256(f"autodeeplab-single-path:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def sample_single_path(
    generator: torch.Generator,
    num_layers: int,
    num_blocks: int,
    num_levels: int,
    primitives: Sequence[str],
) -> Genotype:
    """A sub-network drawn uniformly from the retrain space (SPOS, Guo et al., ECCV 2020).

    The path is uniform over the valid level sequences (the stem at level 0, at most one
    level per layer): each layer's level is drawn in proportion to the number of paths that
    go on from it (:func:`~autodeeplab.genotype.count_paths`), so no level is favoured the
    way a uniform choice per layer would favour the middle ones. Each block reads two
    distinct inputs, uniform among its ``block + 2`` predecessors, each through an op
    uniform over ``primitives`` less ``none``.
    """
    ops = [p for p in primitives if p != "none"]
    if not ops:
        raise ValueError("a single path needs at least one op other than 'none'")
    cell = []
    for block in range(num_blocks):
        inputs = torch.randperm(block + 2, generator=generator)[:2].tolist()
        chosen = torch.randint(len(ops), (2,), generator=generator).tolist()
        cell.append(tuple((ops[k], i) for k, i in zip(chosen, inputs, strict=True)))
    counts = count_paths(num_layers, num_levels)
    path, level = [], 0
    for layer in range(1, num_layers + 1):
        options = [t for t in (level - 1, level, level + 1) if 0 <= t < num_levels]
        weights = torch.tensor([float(counts[layer][t]) for t in options], dtype=torch.float64)
        level = options[int(torch.multinomial(weights, 1, generator=generator))]
        path.append(level)
    return Genotype(tuple(cell), tuple(path))
