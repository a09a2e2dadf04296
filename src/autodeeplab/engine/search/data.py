"""The search's data: trainA, trainB and val, the split between them, and each epoch's batches.

trainA and trainB are a seeded random split of the training set (``search.split_fraction``),
decided by rank 0 and stored in the run folder as ``split.json``. An epoch is one pass over
trainA; trainB is cycled alongside, one batch per step once the architecture updates run
(:mod:`autodeeplab.engine.search.sampling`). An epoch can start mid-way, for a resume from a stop's
checkpoint: the indices its first steps used are skipped, not loaded. A strategy that learns
no architecture from trainB (``weights_on_train_b``) trains w on both halves: its "trainA"
loader then runs over the whole training set, and the split is kept only for the record.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from autodeeplab.config import SearchConfig
from autodeeplab.data import build_dataset, parse_spec
from autodeeplab.data.split import load_split, save_split, split_indices
from autodeeplab.data.transforms import train_transform, val_transform
from autodeeplab.distributed import call_on_main, rank_indices
from autodeeplab.engine.guards import ignore_sigint
from autodeeplab.engine.rng import rng_state, set_rng_state
from autodeeplab.engine.search.sampling import EpochSampler, TrainBCycle
from autodeeplab.engine.search.step import Batch
from autodeeplab.space.network import min_search_crop

__all__ = ["SearchData", "check_search_crop", "search_datasets"]


def check_search_crop(cfg: SearchConfig) -> None:
    """Refuse a crop that leaves the coarsest level under 3x3 (docs/design.md §12.12)."""
    strides, crop = cfg.model.strides, cfg.data.crop
    least = min_search_crop(strides)
    if crop < least:
        coarsest = -(-crop // max(strides))
        raise ValueError(
            f"data.crop={crop} leaves the stride-{max(strides)} level {coarsest}x{coarsest}, "
            f"where pools are global and gradients blow up; the search needs --crop {least} "
            f"or more for strides up to {max(strides)} (or fewer levels, e.g. "
            f"--set model.strides=[{','.join(str(s) for s in strides[:-1])}])"
            if len(strides) > 1
            else f"data.crop={crop} is below the search minimum {least}; use --crop {least}"
        )


class _SkipFirst(Sampler[int]):
    """``sampler`` minus its first ``skip`` indices, once: the next pass of a resumed epoch.

    ``skip`` applies to the next iteration only and then resets, so later epochs see the
    whole permutation. ``len`` stays the full length (the epoch's step count).
    """

    def __init__(self, sampler: EpochSampler) -> None:
        self.sampler, self.skip = sampler, 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


def _loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler | None,
    cfg: SearchConfig,
    device: torch.device,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=sampler is not None,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        worker_init_fn=ignore_sigint,
    )


def search_datasets(cfg: SearchConfig) -> tuple[Dataset, Dataset, bool]:
    """trainA+B and val sets, and whether they are synthetic.

    Real data gets the crop/scale recipe; synthetic data is generated at the crop size.
    """
    d, seed = cfg.data, cfg.search.seed
    synthetic = parse_spec(d.spec)[0] == "synthetic"
    train_tf = val_tf = None
    if not synthetic:
        train_tf = train_transform(d.crop, d.scale, longest_side=d.longest_side)
        val_tf = val_transform(d.longest_side)
    train = build_dataset(
        d.spec, "train", size=d.crop, seed=seed, num_samples=d.train_samples, transform=train_tf
    )
    val = build_dataset(
        d.spec, "val", size=d.crop, seed=seed, num_samples=d.val_samples, transform=val_tf
    )
    return train, val, synthetic


class SearchData:
    """This rank's trainA, trainB and val loaders, over rank 0's split.

    ``split``: the split a resumed checkpoint holds (None: ``split.json`` if the run folder
    has one, else a new one drawn with ``search.seed``). ``weights_on_train_b``: the weight
    batches (``loader_a``) come from trainA and trainB together.
    """

    def __init__(
        self,
        cfg: SearchConfig,
        out: Path,
        split: dict[str, list[int]] | None,
        rank: int,
        world: int,
        device: torch.device,
        weights_on_train_b: bool = False,
    ) -> None:
        loop = cfg.search
        self.rank, self.world = rank, world
        train_set, val_set, synthetic = search_datasets(cfg)
        self.split_path = split_path = out / "split.json"
        self.num_train = len(train_set)
        # The seed split.json is labelled with, and whether it must be (re)written; the
        # file is written by save_split, once the whole resume has been checked.
        self.split_seed, self.split_stale = loop.seed, True

        def decide_split() -> tuple[list[int], list[int]]:
            if split is not None:
                train_a, train_b = split["train_a"], split["train_b"]
                self._keep_split_file(train_a, train_b)
            elif split_path.is_file():  # a given split keeps the seed it was drawn with
                train_a, train_b, meta = load_split(split_path, num_samples=len(train_set))
                self.split_seed = meta["seed"]
            else:
                train_a, train_b = split_indices(len(train_set), loop.seed, loop.split_fraction)
            return train_a, train_b

        # Rank 0 decides the split; every rank trains on exactly its halves.
        self.train_a, self.train_b = train_a, train_b = call_on_main(decide_split)
        weight_indices = sorted(train_a + train_b) if weights_on_train_b else train_a
        if len(train_a) < loop.batch_size or len(train_b) < loop.batch_size:
            raise ValueError(
                f"trainA/trainB have {len(train_a)}/{len(train_b)} images, fewer than the batch "
                f"size {loop.batch_size}; use more data or --batch-size "
                f"{min(len(train_a), len(train_b))}"
            )
        self.global_batch = loop.batch_size
        self.batch = batch = loop.batch_size // world  # images per process and step
        self.sampler_a = EpochSampler(len(weight_indices), loop.seed, rank, world, batch)
        self.sampler_b = EpochSampler(len(train_b), loop.seed + 1, rank, world, batch)
        # For a mid-epoch resume: the indices the stopped epoch used are skipped, not loaded.
        self.skip_a, self.skip_b = _SkipFirst(self.sampler_a), _SkipFirst(self.sampler_b)
        self.loader_a = _loader(Subset(train_set, weight_indices), batch, self.skip_a, cfg, device)
        self.loader_b = _loader(Subset(train_set, train_b), batch, self.skip_b, cfg, device)
        # Real validation images differ in size: whole-image inference one at a time.
        if world > 1:  # each rank scores every world-th image; the metrics are summed
            val_set = Subset(val_set, rank_indices(len(val_set)))  # type: ignore[arg-type]
        self.loader_val = _loader(val_set, batch if synthetic else 1, None, cfg, device)
        self.batches_b = TrainBCycle(self.loader_b, self.sampler_b)

    @property
    def steps_per_epoch(self) -> int:
        """Step pairs in an epoch: one per trainA batch."""
        return len(self.loader_a)

    def split(self) -> dict[str, list[int]]:
        """The split, as a checkpoint keeps it."""
        return {"train_a": list(self.train_a), "train_b": list(self.train_b)}

    def _keep_split_file(self, train_a: list[int], train_b: list[int]) -> None:
        """On resume: leave a split.json that holds the checkpoint's halves as it is."""
        if not self.split_path.is_file():
            return
        try:
            a, b, meta = load_split(self.split_path, num_samples=self.num_train)
        except ValueError:  # unreadable or edited: rewritten from the checkpoint
            return
        if (a, b) == (sorted(train_a), sorted(train_b)):
            self.split_seed, self.split_stale = meta["seed"], False

    def save_split(self) -> None:
        """Write split.json (rank 0), unless it already holds this split."""
        if self.rank == 0 and self.split_stale:
            save_split(
                self.split_path,
                self.train_a,
                self.train_b,
                seed=self.split_seed,
                num_samples=self.num_train,
            )

    def start_epoch(self, epoch: int, steps_done: int, arch_on: bool) -> Iterator[Batch]:
        """trainA's batches of ``epoch`` after its first ``steps_done``; trainB placed to match.

        Making the iterators draws loader seeds from the global RNG: a resumed epoch must
        restore its saved RNG state after this call, as the uninterrupted run had drawn them
        before that state was saved.
        """
        self.sampler_a.set_epoch(epoch)
        self.batches_b.start_epoch(epoch)
        self.skip_a.skip = steps_done * self.batch
        batches_a = iter(self.loader_a)
        if arch_on and steps_done:
            # trainB gave one batch per step since the epoch began: the iterator of pass
            # c had yielded p batches (p may be a whole pass, not yet found exhausted).
            per_pass = len(self.loader_b)
            cycle, used = (steps_done - 1) // per_pass, (steps_done - 1) % per_pass + 1
            self.batches_b.cycle = cycle
            self.sampler_b.set_epoch(epoch, cycle)
            self.skip_b.skip = used * self.batch
            self.batches_b.it = iter(self.loader_b)
        return batches_a

    def next_b(self) -> Batch:
        """The next trainB batch (trainB is cycled, reseeded on every pass)."""
        return next(self.batches_b)

    def recalibration_batches(self, count: int = 8) -> list[Tensor]:
        """This rank's share of the first ``count`` trainA batches, images only (val_bn).

        The same images every epoch, read by index and with the global RNG put back after
        (real data's augmentation draws from it), so the run's randomness is untouched and a
        resumed run recalibrates as the uninterrupted one did.
        """
        subset: Any = self.loader_a.dataset
        starts = range(0, min(count, len(subset) // self.global_batch))
        state = rng_state()
        try:
            return [
                torch.stack(
                    [
                        subset[(b * self.world + self.rank) * self.batch + j][0]
                        for j in range(self.batch)
                    ]
                )
                for b in starts
            ]
        finally:
            set_rng_state(state)
