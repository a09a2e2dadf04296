"""The first-order bi-level architecture search (paper §4.2, §5.1; SPEC.md §3).

Each iteration: one SGD step on the weights w with a trainA batch, then (from
``arch_start_epoch`` on) one Adam step on alpha and beta with a trainB batch. trainA and
trainB are a seeded random split of the training set, stored in the run folder. An epoch
is one pass over trainA; trainB is cycled alongside by its own iterator (SPEC.md §12.9).

Every epoch appends a record to ``search_log.jsonl`` (losses, validation mIoU, alpha,
beta, the decoded genotype) and writes an atomic checkpoint holding everything an exact
resume needs: weights, alpha/beta, both optimisers, the scheduler, the epoch, the RNG
states and the split. The data order of an epoch depends only on (seed, epoch), so a
resumed run equals an uninterrupted one.

Under torchrun (``torchrun --nproc-per-node N -m autodeeplab search ...``) every rank runs
this loop on its slice of each global batch (``search.batch_size`` / N images; the ranks'
slices, in rank order, are exactly the batch of one process) and the gradients are averaged
over ranks before every optimiser step. The supernet is *not* wrapped in
DistributedDataParallel: DDP's reducer expects the same parameters to produce gradients in
every backward, while the bi-level loop alternates two disjoint sets (w, then alpha/beta) with
the other set frozen (``requires_grad`` off) and ``backward(inputs=...)``. DDP would need
``find_unused_parameters`` (a graph walk per step, and the whole weight bucket all-reduced as
zeros on every architecture step) or two wrappers on private ignore lists. Instead
:func:`~autodeeplab.engine.search_step.search_step` keeps its freezing and, after the
backward, averages the gradients of the set it steps with one flat all-reduce. So:

- alpha and beta stay bitwise identical on every rank: they start equal (rank 0's tensors are
  broadcast after construction or resume), every rank applies the same Adam update to the
  same all-reduced gradient (a collective returns the same bytes everywhere), and the weights
  they are trained against are kept identical the same way. Each epoch checks it and stops
  with an error if the ranks ever disagree.
- The result equals one process with the same global batch, to float rounding: the loss is
  normalised by the pixel count of the *global* batch (``distributed.sharded_mean``), and
  BatchNorm sees the global batch with ``search.sync_bn`` (CUDA). With plain BN each rank
  normalises over its own slice, as in any data-parallel run; the running statistics (used
  by validation only) are averaged over ranks at the end of every epoch.
- Validation is sharded over ranks and its confusion matrix summed; only rank 0 writes files
  (config, split, log, TensorBoard, checkpoints, genotype, figures). Rank 0 decides what to
  resume from and the trainA/trainB split, and sends them to the others, so a multi-node run
  needs no shared disk.

Stopping mid-epoch: SIGINT/SIGTERM finish the current w step + arch step pair, then write
``checkpoints/epoch_EEEE_step_SSSSSS.pt`` (step S of epoch E, both 1-based) and return with
``stopped=True``; nothing else is written (no genotype.json, no report). That checkpoint holds
the epoch's position: the steps done, the partial loss sums, the RNG states, and (through the
step count) the trainB position, since trainB yields one batch per step from the start of
the epoch. A resume rebuilds both data iterators, skips the indices already used (without
loading them), and restores the RNG state after making the iterators, because making a
DataLoader iterator draws a seed from the global RNG. The epoch then continues exactly where
it stopped, and its record is written once, when it completes. (With ``data.num_workers`` > 0
the workers of the resumed epoch get new seeds and a shifted batch -> worker assignment; only
augmentation of real data draws from them, the synthetic data does not.)

Numerical guards and mixed precision: see :class:`~autodeeplab.engine.train.NonFiniteGuard`
(``search.nonfinite``, ``search.max_skipped``) and ``search.amp``. The fp16 mode keeps one
GradScaler per optimiser: the weight and architecture steps have their own losses and
gradient scales, and an overflow in one must not shrink the other's scale; both scalers
travel with the checkpoint.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from autodeeplab.checkpoint import CheckpointError, check_state_dict, save_checkpoint
from autodeeplab.config import (
    SearchConfig,
    SearchModelConfig,
    config_from_dict,
    config_to_dict,
    save_config,
    supernet_kwargs,
)
from autodeeplab.data import build_dataset, dataset_info, parse_spec
from autodeeplab.data.split import load_split, save_split, split_indices
from autodeeplab.data.transforms import train_transform, val_transform
from autodeeplab.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    broadcast_tensors,
    call_on_main,
    check_same_across_ranks,
    init_distributed,
    rank_indices,
)
from autodeeplab.engine.arch_schedule import ARCH_LR_RANGE, ArchSchedule, class_prior_entropy
from autodeeplab.engine.guards import (
    NonFiniteGuard,
    StopRequest,
    check_loop_options,
    ignore_sigint,
    resolve_amp,
)
from autodeeplab.engine.runtime import (
    append_jsonl,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
    truncate_jsonl,
)
from autodeeplab.engine.sampling import EpochSampler, TrainBCycle
from autodeeplab.engine.search_checkpoints import (
    CHECKPOINT_KIND,
    decode_checkpoint,
    epoch_end_path,
    find_latest_checkpoint,
    load_resume_state,
    prune_checkpoints,
    stop_path,
)
from autodeeplab.engine.search_step import (
    all_finite,
    bn_running_stats,
    recalibrate_bn,
    search_step,
    validate_supernet,
)
from autodeeplab.genotype import Genotype, save_genotype
from autodeeplab.model import build_model
from autodeeplab.model.complexity import count_multiply_adds
from autodeeplab.search.cost import CostModel, parse_madds_target
from autodeeplab.search.decode import path_margin
from autodeeplab.search.diagnostics import search_diagnostics
from autodeeplab.search.memory import device_memory_bytes, resolve_checkpoint_cells
from autodeeplab.search.network import SearchNetwork, min_search_crop

__all__ = [
    "SearchResult",
    "run_search",
    "find_latest_checkpoint",
    "decode_checkpoint",
    "check_search_crop",
    "margin_warning",
    "supernet",
]


def check_search_crop(cfg: SearchConfig) -> None:
    """Refuse a crop that leaves the coarsest level under 3x3 (SPEC.md §12.12)."""
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


def supernet(
    mcfg: SearchModelConfig, num_classes: int, checkpoint_cells: bool = False
) -> SearchNetwork:
    """The supernet ``mcfg`` describes (``checkpoint_cells``: resolved, never ``auto``)."""
    return SearchNetwork(
        num_classes, **{**supernet_kwargs(mcfg), "checkpoint_cells": checkpoint_cells}
    )


def margin_warning(margin: float, threshold: float) -> str | None:
    """The one-line warning for a decoded path that barely beats its runner-up, or None."""
    if margin >= threshold:
        return None
    return (
        f"the decoded path beats its runner-up by only {margin:.3f} nats (< "
        f"search.min_path_margin={threshold:g}): beta has not learnt enough to choose a path; "
        "search longer (--epochs) or raise search.arch_lr (or use search.arch_lr=auto)"
    )


@dataclass
class SearchResult:
    """What a finished search leaves behind."""

    genotype: Genotype
    out_dir: Path
    epochs: int
    val_miou: float
    seconds: float
    stopped: bool = False  # ended early by SIGINT/SIGTERM; ``checkpoint`` resumes it
    checkpoint: Path | None = None  # the newest checkpoint written (None: none yet)
    skipped: int = 0  # updates dropped for a non-finite loss or gradient (nonfinite=skip)


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


def _datasets(cfg: SearchConfig) -> tuple[Dataset, Dataset, bool]:
    """trainA+B and val sets; real data gets the crop/scale recipe, synthetic is made at size."""
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


class _CostTerm:
    """lambda * log(E[Multi-Adds] / target)^2 for the architecture loss (cost-aware search)."""

    def __init__(self, cfg: SearchConfig, model: SearchNetwork, num_classes: int) -> None:
        loop, m = cfg.search, cfg.model
        self.target = parse_madds_target(loop.target_madds)
        self.weight, self.model, self.num_classes = loop.cost_weight, model, num_classes
        self.filter_multiplier = loop.cost_filter_multiplier
        self.cost = CostModel(
            m.num_layers,
            m.num_blocks,
            m.primitives,
            len(m.strides),
            num_classes,
            self.filter_multiplier,
            self.target.size,
        )

    def expected(self) -> Tensor:
        """E[Multi-Adds] of the decoded network under the current alpha and beta."""
        return self.cost.expected(self.model.alpha_weights(), self.model.beta_weights())

    def __call__(self) -> Tensor:
        ratio = torch.log(self.expected() / self.target.madds)
        return (self.weight * ratio.square()).to(torch.float32)

    def report(self, genotype: Genotype) -> dict[str, float]:
        """Expected and counted Multi-Adds, for the log."""
        with torch.no_grad():
            expected = float(self.expected())
        net = build_model(genotype, self.num_classes, self.filter_multiplier)
        return {
            "target_madds": self.target.madds,
            "expected_madds": expected,
            "decoded_madds": float(count_multiply_adds(net, self.target.size)),
        }


def _model_identity(mcfg: SearchModelConfig) -> dict[str, Any]:
    """The model config less the switches that change no result (``checkpoint_cells``)."""
    return {k: v for k, v in config_to_dict(mcfg).items() if k != "checkpoint_cells"}


def run_search(
    cfg: SearchConfig,
    out_dir: str | Path,
    resume: str | Path | bool | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> SearchResult:
    """Run (or resume) a search into ``out_dir``; returns the decoded genotype.

    ``resume``: a checkpoint path, or True for the newest complete one in ``out_dir``.
    ``stop_after``: return after this many epochs in total (checkpoint written), so a later
    call with ``resume=True`` continues; genotype.json and the figures are written only
    once all configured epochs are done. SIGINT/SIGTERM stop the run after the current step
    pair the same way, mid-epoch if need be (the result says ``stopped``); the handlers are
    installed for this call only.
    """
    start_time = time.perf_counter()
    with StopRequest() as stop:
        run = _SearchRun(cfg, Path(out_dir), resume, stop)
        loop = cfg.search
        last_epoch = loop.epochs if stop_after is None else min(loop.epochs, stop_after)
        try:
            stopped = run.run_epochs(last_epoch, progress)
        finally:
            run.close()
        genotype = run.model.genotype(loop.path_decode)
        if last_epoch == loop.epochs and not stopped and run.main:
            run.write_results(genotype)
            if run.record.get("warning"):
                print(f"warning: {run.record['warning']}", file=sys.stderr)
        barrier()  # every rank returns once rank 0 has written everything
        record = run.record
        return SearchResult(
            genotype=genotype,
            out_dir=run.out,
            epochs=run.epochs_done,
            val_miou=float(record.get("val_miou", float("nan"))) if record else float("nan"),
            seconds=time.perf_counter() - start_time,
            stopped=stopped,
            checkpoint=run.last_checkpoint,
            skipped=run.guard.skipped,
        )


@dataclass
class _EpochTally:
    """The epoch in progress: its loss sums and step counts, which a stop's checkpoint keeps."""

    w_loss_sum: Tensor
    a_loss_sum: Tensor
    class_counts: Tensor  # trainA label pixels per class seen this epoch (for the prior)
    steps: int = 0
    w_steps: int = 0
    arch_steps: int = 0
    skipped_w: int = 0
    skipped_arch: int = 0
    seconds_before: float = 0.0  # time the epoch ran before the stop it resumes from

    @classmethod
    def start(
        cls, device: torch.device, partial: dict[str, Any] | None, num_classes: int
    ) -> _EpochTally:
        """A fresh epoch's tally, or the one a mid-epoch checkpoint saved (``partial``)."""
        zero = torch.zeros((), device=device)
        tally = cls(zero.clone(), zero.clone(), torch.zeros(num_classes, dtype=torch.float64))
        if partial is not None:
            tally.steps, tally.w_steps = partial["steps"], partial["w_steps"]
            tally.arch_steps = partial["arch_steps"]
            tally.skipped_w, tally.skipped_arch = partial["skipped_w"], partial["skipped_arch"]
            tally.w_loss_sum += partial["w_loss_sum"].to(device)
            tally.a_loss_sum += partial["a_loss_sum"].to(device)
            if "class_counts" in partial:
                tally.class_counts += partial["class_counts"]
            tally.seconds_before = partial["seconds"]
        return tally

    def position(self, seconds: float) -> dict[str, Any]:
        """The ``partial`` entry of a stop's checkpoint (``seconds``: the epoch's run time)."""
        return {
            "steps": self.steps,
            "w_steps": self.w_steps,
            "arch_steps": self.arch_steps,
            "skipped_w": self.skipped_w,
            "skipped_arch": self.skipped_arch,
            "w_loss_sum": self.w_loss_sum.detach().cpu(),
            "a_loss_sum": self.a_loss_sum.detach().cpu(),
            "class_counts": self.class_counts.clone(),
            "seconds": seconds,
        }


class _SearchRun:
    """One search run: data, supernet, optimisers and guard, set up from the config (and the
    checkpoint it resumes), then its epochs: steps, validation, log records and checkpoints.

    The set-up order is part of the run's determinism: the seed, then the datasets, then the
    supernet's initial weights, then (on resume) the saved RNG states.
    """

    def __init__(
        self,
        cfg: SearchConfig,
        out: Path,
        resume: str | Path | bool | None,
        stop: StopRequest,
    ) -> None:
        self.cfg, self.out, self.stop = cfg, out, stop
        self.ckpt_dir = out / "checkpoints"
        self.log_path = out / "search_log.jsonl"
        loop = cfg.search
        check_loop_options("search", loop.nonfinite, loop.max_skipped, loop.amp)

        dist_info = init_distributed(select_device(loop.device))
        self.world, self.rank, self.main = dist_info.world_size, dist_info.rank, dist_info.is_main
        if loop.batch_size % self.world:
            raise ValueError(
                f"search.batch_size={loop.batch_size} cannot be shared by {self.world} "
                f"processes; use a multiple of {self.world} (each process takes batch_size / "
                f"{self.world})"
            )
        # Rank 0 reads the checkpoint and sends it: on several nodes only its disk has the run.
        self.resume_path, state = call_on_main(lambda: load_resume_state(out, resume))
        if state is not None:
            saved = config_from_dict(state["config"], SearchConfig(), where=str(self.resume_path))
            # checkpoint_cells trades time for memory and changes no result: it may differ.
            if _model_identity(saved.model) != _model_identity(cfg.model):
                raise CheckpointError(
                    f"{self.resume_path}: checkpoint was made with model "
                    f"{config_to_dict(saved.model)}, not the configured one; resume with the "
                    "run's own config.yaml"
                )

        self.device = dist_info.device
        # Before the run folder is written: an amp mode the device lacks is refused up front.
        self.amp_dtype = resolve_amp(loop.amp, self.device, "search.amp")
        check_search_crop(cfg)
        seed_everything(loop.seed)
        if self.main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        self.num_classes = dataset_info(cfg.data.spec).num_classes
        self._set_up_data(state)
        self._set_up_model()
        self._restore(state)
        self.writer: Any = None
        if loop.tensorboard and self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=self.first_epoch + 1)
        self.bar: Any = None
        self.record: dict[str, Any] = {}
        self.epochs_done = self.first_epoch
        self.last_checkpoint = self.resume_path

    def _set_up_data(self, state: dict[str, Any] | None) -> None:
        """The trainA/trainB split (rank 0's), the per-rank samplers and the loaders."""
        cfg, loop, device = self.cfg, self.cfg.search, self.device
        train_set, val_set, synthetic = _datasets(cfg)
        split_path = self.out / "split.json"

        def decide_split() -> tuple[list[int], list[int]]:
            seed = loop.seed
            if state is not None:
                train_a, train_b = state["split"]["train_a"], state["split"]["train_b"]
            elif split_path.is_file():  # a given split keeps the seed it was drawn with
                train_a, train_b, meta = load_split(split_path, num_samples=len(train_set))
                seed = meta["seed"]
            else:
                train_a, train_b = split_indices(len(train_set), loop.seed, loop.split_fraction)
            save_split(split_path, train_a, train_b, seed=seed, num_samples=len(train_set))
            return train_a, train_b

        # Rank 0 decides (and stores) the split; every rank trains on exactly its halves.
        self.train_a, self.train_b = train_a, train_b = call_on_main(decide_split)
        if len(train_a) < loop.batch_size or len(train_b) < loop.batch_size:
            raise ValueError(
                f"trainA/trainB have {len(train_a)}/{len(train_b)} images, fewer than the batch "
                f"size {loop.batch_size}; use more data or --batch-size "
                f"{min(len(train_a), len(train_b))}"
            )
        self.batch = batch = loop.batch_size // self.world  # images per process and step
        self.sampler_a = EpochSampler(len(train_a), loop.seed, self.rank, self.world, batch)
        self.sampler_b = EpochSampler(len(train_b), loop.seed + 1, self.rank, self.world, batch)
        # For a mid-epoch resume: the indices the stopped epoch used are skipped, not loaded.
        self.skip_a, self.skip_b = _SkipFirst(self.sampler_a), _SkipFirst(self.sampler_b)
        self.loader_a = _loader(Subset(train_set, train_a), batch, self.skip_a, cfg, device)
        self.loader_b = _loader(Subset(train_set, train_b), batch, self.skip_b, cfg, device)
        # Real validation images differ in size: whole-image inference one at a time.
        if self.world > 1:  # each rank scores every world-th image; the metrics are summed
            val_set = Subset(val_set, rank_indices(len(val_set)))  # type: ignore[arg-type]
        self.loader_val = _loader(val_set, batch if synthetic else 1, None, cfg, device)
        self.batches_b = TrainBCycle(self.loader_b, self.sampler_b)

    def _set_up_model(self) -> None:
        """The supernet, both optimisers, the scheduler, the grad scalers, the guard, the cost."""
        cfg, loop, mcfg, device = self.cfg, self.cfg.search, self.cfg.model, self.device
        # auto: from the memory estimate for rank 0's device. Every rank must agree: under
        # SyncBatchNorm a recomputed cell runs collectives that the others would not.
        checkpoint_cells = broadcast_object(
            resolve_checkpoint_cells(
                cfg.data.crop,
                loop.batch_size,
                self.num_classes,
                amp=loop.amp,
                device=device.type,
                world_size=self.world,
                available=device_memory_bytes(device.type),
                **supernet_kwargs(mcfg),
            )
        )
        model = supernet(mcfg, self.num_classes, checkpoint_cells).to(device)
        self.sync_bn = loop.sync_bn and self.world > 1
        if self.sync_bn:
            if device.type != "cuda":
                raise ValueError(
                    "search.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                    "set search.sync_bn=false"
                )
            # Keeps the parameter objects and state-dict keys; checkpoints load into plain BN.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.weights, self.arch = model.weight_parameters(), model.arch_parameters()
        self.w_opt = torch.optim.SGD(
            self.weights, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay
        )
        # With arch_lr=auto the lr is set when the updates start (ArchSchedule.start).
        arch_lr = loop.arch_lr if isinstance(loop.arch_lr, float) else ARCH_LR_RANGE[0]
        self.a_opt = torch.optim.Adam(
            self.arch, lr=arch_lr, betas=loop.arch_betas, weight_decay=loop.arch_weight_decay
        )
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_opt, T_max=loop.epochs, eta_min=loop.lr_min
        )
        fp16 = self.amp_dtype == torch.float16
        self.w_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.a_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        steps_per_epoch = len(self.loader_a)
        arch_epochs = max(loop.epochs - max(loop.arch_start_epoch, 0), 0)
        self.guard = NonFiniteGuard(
            loop.nonfinite,
            int(loop.max_skipped * (loop.epochs + arch_epochs) * steps_per_epoch),
            device,
            "search",
            buffers=model.buffers(),
            last_checkpoint=self.resume_path,
            hint="Lower search.lr or search.arch_lr, or set search.grad_clip",
        )
        self.cost = _CostTerm(cfg, model, self.num_classes) if loop.target_madds else None

    def _restore(self, state: dict[str, Any] | None) -> None:
        """Load a checkpoint's states (or clear a fresh run's log), then share rank 0's."""
        self.first_epoch, self.step = 0, 0
        # The epoch position of a mid-epoch checkpoint, and the RNG states it saved.
        self.partial: dict[str, Any] | None = None
        self.saved_rng: dict[str, Any] | None = None
        self.schedule = ArchSchedule(self.num_classes)
        self.previous_genotype: Genotype | None = None
        if state is not None:
            check_state_dict(self.resume_path, self.model.state_dict(), state["model"], "model")
            if state.get("previous_genotype") is not None:
                self.previous_genotype = Genotype.from_dict(state["previous_genotype"])
            elif state.get("genotype") is not None and "partial" not in state:
                self.previous_genotype = Genotype.from_dict(state["genotype"])
            if "arch_schedule" in state:
                self.schedule.load(state["arch_schedule"])
            elif state["epoch"] > self.cfg.search.arch_start_epoch:  # a run from before it
                self.schedule.started_epoch = self.cfg.search.arch_start_epoch
            self.model.load_state_dict(state["model"])
            self.w_opt.load_state_dict(state["w_optimizer"])
            self.a_opt.load_state_dict(state["arch_optimizer"])
            self.w_sched.load_state_dict(state["w_scheduler"])
            for key, scaler in (("w_scaler", self.w_scaler), ("arch_scaler", self.a_scaler)):
                if state.get(key):  # absent before search.amp existed; empty when fp16 was off
                    scaler.load_state_dict(state[key])
            self.saved_rng = state["rng"]
            set_rng_state(self.saved_rng)
            self.first_epoch, self.step = state["epoch"], state["step"]
            self.partial = state.get("partial")
            self.guard.skipped = state.get("skipped", 0)
            # Records written after the checkpoint (a run killed in between) are redone.
            if self.main:
                first = self.first_epoch
                truncate_jsonl(self.log_path, lambda r: r.get("epoch", 0) <= first)
        elif self.main and self.log_path.exists():
            self.log_path.unlink()
        # Every rank starts from rank 0's weights, alpha and beta (and BN statistics).
        broadcast_tensors(list(self.model.state_dict().values()))

    def run_epochs(self, last_epoch: int, progress: bool) -> bool:
        """Epochs up to ``last_epoch``, each checkpointed; True if a signal stopped them."""
        steps_per_epoch = len(self.loader_a)
        if progress and self.main:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.cfg.search.epochs * steps_per_epoch,
                initial=self.first_epoch * steps_per_epoch
                + (self.partial["steps"] if self.partial else 0),
                desc="search",
                unit="it",
                dynamic_ncols=True,
            )
        for epoch in range(self.first_epoch, last_epoch):
            epoch_start = time.perf_counter()
            arch_on = self._arch_on(epoch)
            self.aux_weight = self.schedule.aux_skip(self.cfg.search, epoch)
            self.model.set_aux_skip(self.aux_weight)
            tally, stopped = self._train_epoch(epoch, arch_on)
            started = epoch_start - tally.seconds_before  # when the epoch began, across a stop
            if stopped:
                self._save_stop(epoch, tally, started)
                return True
            self._end_epoch(epoch, arch_on, tally, started)
            # A signal during validation: the epoch's checkpoint is the place to resume from.
            if self.epochs_done < last_epoch and self.stop.should_stop(self.device):
                return True
        return False

    def _arch_on(self, epoch: int) -> bool:
        """Whether alpha/beta learn in ``epoch``; starts them (lr, snapshot) when it is time."""
        schedule, loop = self.schedule, self.cfg.search
        if schedule.started_epoch is not None:
            return epoch >= schedule.started_epoch
        if self.partial is not None:  # resuming mid-epoch: the epoch began without them
            return False
        if not schedule.should_start(loop, epoch):
            return False
        steps = len(self.loader_a)
        schedule.start(loop, epoch, steps, self.model.alpha, self.model.beta, self.a_opt)
        return True

    def _diagnostics(self, genotype: Genotype, arch_on: bool) -> dict:
        """The epoch record's view of what the search has learnt (search/diagnostics.py)."""
        model, loop, schedule = self.model, self.cfg.search, self.schedule
        with torch.no_grad():
            beta_w = model.beta_weights().cpu()
            start = None
            if schedule.start_alpha is not None and schedule.start_beta is not None:
                start = (schedule.start_alpha, schedule.start_beta)
            diag = search_diagnostics(
                model.alpha_weights().cpu(),
                beta_w,
                genotype,
                path_margin(beta_w, loop.path_decode),
                self.previous_genotype,
                start,
                model.alpha.cpu(),
                model.beta.cpu(),
                model.beta_mask.cpu(),
            )
        self.previous_genotype = genotype
        diag.update(
            {
                "path_decode": loop.path_decode,
                "arch_lr": schedule.lr if arch_on else None,
                "arch_start_forced": schedule.forced or None,
                "aux_skip": self.aux_weight,
                "class_prior_entropy": class_prior_entropy(schedule.class_counts),
                "arch_start_loss": schedule.loss_threshold(loop),
            }
        )
        return diag

    def _train_epoch(self, epoch: int, arch_on: bool) -> tuple[_EpochTally, bool]:
        """The step pairs of one epoch (the rest of it, when resuming mid-epoch)."""
        self.sampler_a.set_epoch(epoch)
        self.batches_b.start_epoch(epoch)
        self.model.train()
        tally = _EpochTally.start(self.device, self.partial, self.num_classes)
        if self.partial is not None:  # resume mid-epoch: the batches of its first steps are done
            self.skip_a.skip = tally.steps * self.batch
            batches_a = iter(self.loader_a)
            if arch_on and tally.steps:
                # trainB gave one batch per step since the epoch began: the iterator of pass
                # c had yielded p batches (p may be a whole pass, not yet found exhausted).
                per_pass = len(self.loader_b)
                cycle, used = (tally.steps - 1) // per_pass, (tally.steps - 1) % per_pass + 1
                self.batches_b.cycle = cycle
                self.sampler_b.set_epoch(epoch, cycle)
                self.skip_b.skip = used * self.batch
                self.batches_b.it = iter(self.loader_b)
            # Making those iterators drew loader seeds from the global RNG, which the
            # uninterrupted run had drawn before the saved state: restore it after them.
            assert self.saved_rng is not None  # a partial state comes from a checkpoint
            set_rng_state(self.saved_rng)
            self.partial = None
        else:
            batches_a = iter(self.loader_a)
        loop, guard = self.cfg.search, self.guard
        for batch_a in batches_a:
            at = f"epoch {epoch + 1}, step {tally.steps + 1} (iteration {self.step + 1})"
            labels = batch_a[1]
            labels = labels[(labels >= 0) & (labels < self.num_classes)]
            tally.class_counts += torch.bincount(labels, minlength=self.num_classes).double()
            w_loss, ok = search_step(
                self.model,
                batch_a,
                self.weights,
                self.arch,
                self.w_opt,
                loop.grad_clip,
                self.device,
                amp_dtype=self.amp_dtype,
                scaler=self.w_scaler,
                guard=guard,
                where=f"the weight step of {at}",
            )
            if ok:
                tally.w_loss_sum += w_loss
                tally.w_steps += 1
            else:
                tally.skipped_w += 1
            if arch_on:
                a_loss, ok = search_step(
                    self.model,
                    next(self.batches_b),
                    self.arch,
                    self.weights,
                    self.a_opt,
                    None,
                    self.device,
                    self.cost,
                    amp_dtype=self.amp_dtype,
                    scaler=self.a_scaler,
                    guard=guard,
                    where=f"the architecture step of {at}",
                )
                if ok:
                    tally.a_loss_sum += a_loss
                    tally.arch_steps += 1
                else:
                    tally.skipped_arch += 1
                # Adam cannot be undone: a bad alpha/beta ends the run in either mode.
                guard.watch(
                    all_finite(self.arch), f"alpha/beta after the architecture step of {at}"
                )
            tally.steps += 1
            self.step += 1
            if self.step % 10 == 0:  # .item() syncs a GPU: do it rarely (CUDA reads the guard)
                guard.check()
                if self.bar is not None:
                    loss = float(tally.w_loss_sum) / max(tally.w_steps, 1)
                    self.bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}")
            if self.bar is not None:
                self.bar.update(1)
            if self.stop.should_stop(self.device):  # SIGINT/SIGTERM: this step pair is done
                return tally, True
        return tally, False

    def _average_over_ranks(self, tally: _EpochTally) -> None:
        """The global batch's loss sums, and one set of BN statistics (without SyncBN)."""
        if self.world > 1:
            all_reduce_mean([tally.w_loss_sum, tally.a_loss_sum])
            # The mean of the ranks' counts: the global frequencies, scaled by 1/world.
            counts = tally.class_counts.to(self.device)
            all_reduce_mean([counts])
            tally.class_counts = counts.cpu()
            if not self.sync_bn:
                all_reduce_mean(bn_running_stats(self.model))

    def _save_stop(self, epoch: int, tally: _EpochTally, started: float) -> None:
        """Write the checkpoint of a stop in the middle of ``epoch``."""
        # One value per rank would not survive the resume: their mean does.
        self._average_over_ranks(tally)
        position = tally.position(time.perf_counter() - started)
        self.last_checkpoint = stop_path(self.ckpt_dir, epoch + 1, tally.steps)
        genotype = self.model.genotype(self.cfg.search.path_decode).to_dict()
        self.save(self.last_checkpoint, epoch, {"partial": position, "genotype": genotype})

    def _end_epoch(self, epoch: int, arch_on: bool, tally: _EpochTally, started: float) -> None:
        """Step the scheduler, validate, log the epoch's record and write its checkpoint."""
        lr = self.w_sched.get_last_lr()[0]
        with warnings.catch_warnings():
            # A run resumed after the epoch's last step (or one whose steps were all
            # skipped) steps the scheduler before any optimiser step in this process: the
            # order PyTorch warns about, but right here.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.w_sched.step()
        self._average_over_ranks(tally)
        if self.world > 1:
            check_same_across_ranks(self.arch, "alpha/beta")
        self.guard.check()  # no validation, log record or checkpoint of nan weights
        model = self.model
        val_bn = self.cfg.search.val_bn
        if val_bn == "recalibrate":
            self._recalibrate_bn()
        metrics = validate_supernet(
            model,
            self.loader_val,
            self.num_classes,
            self.device,
            self.amp_dtype,
            batch_stats=val_bn == "batch",
        )
        loop = self.cfg.search
        genotype = model.genotype(loop.path_decode)
        n_w, n_arch = tally.w_steps, tally.arch_steps
        record = {
            "epoch": epoch + 1,
            "step": self.step,
            # None: every update of the epoch was skipped (search.nonfinite=skip)
            "train_loss": float(tally.w_loss_sum) / n_w if n_w else None,
            "arch_loss": float(tally.a_loss_sum) / n_arch if arch_on and n_arch else None,
            **metrics,
            "lr": lr,
            "arch_updates": arch_on,
            "seconds": time.perf_counter() - started,
            "alpha": model.alpha_weights().detach().cpu().tolist(),
            "beta": model.beta_weights().detach().cpu().tolist(),
            "genotype": genotype.to_dict(),
        }
        # The schedule's start condition reads this epoch's train loss and label counts.
        self.schedule.end_epoch(record["train_loss"], tally.class_counts)
        record.update(self._diagnostics(genotype, arch_on))
        if epoch + 1 == loop.epochs:
            warning = margin_warning(record["path_margin"], loop.min_path_margin)
            if warning is not None:
                record["warning"] = warning
        if self.cfg.search.nonfinite == "skip":
            record["skipped_steps"] = tally.skipped_w
            record["skipped_arch_steps"] = tally.skipped_arch
        if self.main:  # only rank 0 writes
            if self.cost is not None:
                record.update(self.cost.report(genotype))
            append_jsonl(self.log_path, record)
            self._write_tensorboard(record, genotype, epoch + 1)
        self.record = record
        self.last_checkpoint = epoch_end_path(self.ckpt_dir, epoch + 1)
        metrics_kept = {k: record[k] for k in ("train_loss", "val_loss", "val_miou")}
        self.save(
            self.last_checkpoint,
            epoch + 1,
            {"genotype": record["genotype"], "metrics": metrics_kept},
        )
        self.epochs_done = epoch + 1

    def _recalibrate_bn(self, count: int = 8) -> None:
        """BatchNorm statistics from the first ``count`` trainA batches (val_bn=recalibrate).

        The same images every epoch, read by index and with the global RNG put back after
        (real data's augmentation draws from it), so the run's randomness is untouched and a
        resumed run recalibrates as the uninterrupted one did. Each rank reads its own share
        and the statistics are averaged over ranks.
        """
        subset = self.loader_a.dataset
        per_rank = self.batch
        starts = range(0, min(count, len(self.train_a) // self.cfg.search.batch_size))
        state = rng_state()
        try:
            batches = [
                torch.stack(
                    [
                        subset[(b * self.world + self.rank) * per_rank + j][0]
                        for j in range(per_rank)
                    ]
                )
                for b in starts
            ]
            recalibrate_bn(self.model, batches, self.device, self.amp_dtype)
        finally:
            set_rng_state(state)
        if self.world > 1 and not self.sync_bn:
            all_reduce_mean(bn_running_stats(self.model))

    def _write_tensorboard(self, record: dict[str, Any], genotype: Genotype, epoch: int) -> None:
        if self.writer is None:
            return
        keys = ("train_loss", "arch_loss", "val_loss", "val_miou", "val_pixel_acc", "lr")
        for key in (*keys, "expected_madds", "decoded_madds"):
            if record.get(key) is not None and math.isfinite(record[key]):
                self.writer.add_scalar(f"search/{key}", record[key], epoch)
        self.writer.add_text("search/genotype", genotype.to_json().replace("\n", "  \n"), epoch)
        self.writer.flush()

    def save(self, path: Path, epochs_done: int, extra: dict[str, Any]) -> None:
        """Write a checkpoint (rank 0), after every rank has checked it holds no inf/nan."""
        payload = {
            "epoch": epochs_done,
            "step": self.step,
            "model": self.model.state_dict(),
            "model_kwargs": self.model.model_kwargs,
            "w_optimizer": self.w_opt.state_dict(),
            "arch_optimizer": self.a_opt.state_dict(),
            "w_scheduler": self.w_sched.state_dict(),
            "w_scaler": self.w_scaler.state_dict(),
            "arch_scaler": self.a_scaler.state_dict(),
            "rng": rng_state(),
            "split": {"train_a": list(self.train_a), "train_b": list(self.train_b)},
            "config": config_to_dict(self.cfg),
            "skipped": self.guard.skipped,
            "arch_schedule": self.schedule.state(),
            "previous_genotype": (
                None if self.previous_genotype is None else self.previous_genotype.to_dict()
            ),
            **extra,
        }
        checked = ("model", "w_optimizer", "arch_optimizer", "partial")
        self.guard.check_state(
            {k: payload[k] for k in checked if k in payload},
            f"the search state to be saved as {path.name}",
        )
        if self.main:
            save_checkpoint(path, payload, CHECKPOINT_KIND)
            prune_checkpoints(self.ckpt_dir, path, self.cfg.search.keep_checkpoints)
        self.guard.last_checkpoint = path

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def write_results(self, genotype: Genotype) -> None:
        """genotype.json, the genotype figures and the search report (rank 0, run complete)."""
        out, loop, record = self.out, self.cfg.search, self.record
        provenance = {
            "path_decode": loop.path_decode,
            "path_margin": record.get("path_margin"),
            "epochs": self.epochs_done,
            "arch_started_epoch": self.schedule.started_epoch,
        }
        save_genotype(genotype, out / "genotype.json", search=provenance)
        from autodeeplab.viz import render_genotype

        beta_w = self.model.beta_weights().detach().cpu().numpy()
        render_genotype(genotype, out, beta=beta_w, prefix="genotype_")
        from autodeeplab.engine.search_report import render_search_report

        try:
            render_search_report(out)
        except (OSError, ValueError) as exc:  # the genotype is saved: a report failure is not fatal
            print(f"warning: search report not written ({exc}); run 'autodeeplab report {out}'")
