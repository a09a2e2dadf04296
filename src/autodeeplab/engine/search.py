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
:func:`_step` keeps its freezing and, after the backward, averages the gradients of the set
it steps with one flat all-reduce. So:

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
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from autodeeplab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autodeeplab.config import (
    SearchConfig,
    SearchModelConfig,
    config_from_dict,
    config_to_dict,
    save_config,
)
from autodeeplab.data import build_dataset, dataset_info, parse_spec
from autodeeplab.data.split import load_split, save_split, split_indices
from autodeeplab.data.transforms import train_transform, val_transform
from autodeeplab.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_tensors,
    call_on_main,
    check_same_across_ranks,
    init_distributed,
    is_distributed,
    rank_indices,
    sharded_mean,
)
from autodeeplab.engine.guards import (
    NonFiniteGuard,
    StopRequest,
    check_loop_options,
    grads_finite,
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
from autodeeplab.genotype import Genotype, save_genotype
from autodeeplab.metrics import ConfusionMatrix
from autodeeplab.model import build_model
from autodeeplab.model.complexity import count_multiply_adds
from autodeeplab.search.cost import CostModel, parse_madds_target
from autodeeplab.search.decode import decode
from autodeeplab.search.memory import device_memory_bytes, resolve_checkpoint_cells
from autodeeplab.search.network import SearchNetwork, beta_probabilities, cell_decode_weights

__all__ = ["SearchResult", "run_search", "find_latest_checkpoint", "decode_checkpoint"]

IGNORE_INDEX = 255
CHECKPOINT_KIND = "search"


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


_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.pt$")


def _checkpoint_position(path: Path) -> tuple[int, int] | None:
    """(epochs done, steps into the next) of a checkpoint name; None for other files.

    ``epoch_0003.pt`` is the end of epoch 3: (3, 0). ``epoch_0003_step_000005.pt`` is step 5
    of epoch 3, written by a stop: (2, 5), older than ``epoch_0003.pt``.
    """
    m = _CHECKPOINT_NAME.match(path.name)
    if m is None:
        return None
    epoch, steps = int(m.group(1)), m.group(2)
    return (epoch, 0) if steps is None else (epoch - 1, int(steps))


def _checkpoints(ckpt_dir: Path) -> list[tuple[tuple[int, int], Path]]:
    """The run's checkpoints with their positions, newest first."""
    found = [(_checkpoint_position(p), p) for p in ckpt_dir.glob("epoch_*.pt")]
    return sorted(((pos, p) for pos, p in found if pos is not None), reverse=True)


def _prune_checkpoints(ckpt_dir: Path, newest: Path, keep: int) -> None:
    """After writing ``newest``: drop the older stop checkpoints, and keep ``keep`` epoch ends.

    A stop's mid-epoch checkpoint is superseded by any later one. Epoch ends are pruned only
    after an epoch end is written; files newer than ``newest`` (from a run resumed from an
    older checkpoint) are left alone.
    """
    position = _checkpoint_position(newest)
    if position is None:  # pragma: no cover - the loop names its checkpoints
        return
    ends_kept = 1 if position[1] == 0 else 0
    for pos, path in _checkpoints(ckpt_dir):
        if pos >= position:
            continue
        if pos[1] != 0:
            path.unlink(missing_ok=True)
        elif position[1] == 0:
            if ends_kept < max(keep, 1):
                ends_kept += 1
            else:
                path.unlink(missing_ok=True)


def find_latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint in ``out_dir/checkpoints`` that loads, or None."""
    for _, path in _checkpoints(out_dir / "checkpoints"):
        try:
            load_checkpoint(path, CHECKPOINT_KIND)
        except (CheckpointError, OSError):
            continue
        return path
    return None


# What a resume reads: a checkpoint without one is refused by name, not with a KeyError.
_RESUME_KEYS = (
    "config", "model", "w_optimizer", "arch_optimizer", "w_scheduler", "rng", "epoch", "step",
    "split",
)  # fmt: skip


def decode_checkpoint(path: str | Path) -> tuple[Genotype, dict[str, Any]]:
    """Decode the genotype of a search checkpoint without building the supernet."""
    state = load_checkpoint(path, CHECKPOINT_KIND, required=("config", "model", "epoch"))
    cfg = config_from_dict(state["config"], SearchConfig(), where=str(path))
    weights = state["model"]
    alpha, beta = weights["alpha"], weights["beta"]
    beta_w = beta_probabilities(beta, len(cfg.model.strides))
    # With partial channels (PC-DARTS) the edge choice also weighs the edge-normalisation gamma.
    cell_w = cell_decode_weights(alpha, weights.get("gamma"), cfg.model.num_blocks)
    genotype = decode(cell_w, beta_w, cfg.model.primitives, cfg.model.num_blocks)
    return genotype, {"epoch": state["epoch"], "beta_weights": beta_w, "config": cfg}


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


def _step(
    model: SearchNetwork,
    batch: tuple[Tensor, Tensor],
    params: list[Tensor],
    frozen: list[Tensor],
    optimizer: torch.optim.Optimizer,
    clip: float | None,
    device: torch.device,
    penalty: Callable[[], Tensor] | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    guard: NonFiniteGuard | None = None,
    where: str = "a search step",
) -> tuple[Tensor, bool]:
    """One optimiser step on ``params``; returns the (detached) loss and whether it was applied.

    ``frozen`` (the other parameter set) is taken out of autograd for the step, so a w step
    neither saves what alpha/beta gradients would need nor touches alpha/beta, and an
    architecture step computes no weight gradient (the stem runs without autograd). Under
    torchrun the gradients of ``params`` are then averaged over ranks, before clipping.
    ``amp_dtype`` autocasts the forward pass (the loss and ``penalty`` stay fp32), ``scaler``
    (fp16) scales the loss, and ``guard`` vets the loss and gradients before the optimiser
    step (``where`` names the step in its error); a step it drops returns False.
    """
    x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    if guard is not None:
        guard.before_forward()
    # No stale gradient of ``params`` may sit beside this step's activations at the peak.
    optimizer.zero_grad(set_to_none=True)
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()  # the identity in fp32; the loss is computed in fp32
        if is_distributed():  # this rank's share of the global batch's mean
            ce = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = sharded_mean(ce, (y != IGNORE_INDEX).sum())
        else:
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        if penalty is not None:
            loss = loss + penalty()
        (scaler.scale(loss) if scaler is not None else loss).backward(inputs=params)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if is_distributed():  # one flat all-reduce; the same graph on every rank, so the same grads
        all_reduce_mean([p.grad for p in params if p.grad is not None])
    if scaler is not None:
        scaler.unscale_(optimizer)  # a no-op unless fp16: clipping and checks see true grads
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip is not None else None
    applied = True
    if guard is not None:
        # With fp16, inf gradients are the GradScaler's business (it skips and rescales).
        fp16 = scaler is not None and scaler.is_enabled()
        applied = guard.allow(grads_finite(loss, None if fp16 else params, norm), where)
    if applied:
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()
    if scaler is not None:
        scaler.update()
    # The other step of the pair freezes these parameters: their gradients (as large as the
    # weights themselves for a w step) would only take memory through it.
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), applied


def _bn_running_stats(model: torch.nn.Module) -> list[Tensor]:
    """The running means and variances of every BatchNorm in ``model``."""
    return [
        t
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]


def _all_finite(tensors: list[Tensor]) -> Tensor:
    """A device bool: every entry of ``tensors`` is finite (no host sync)."""
    return torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all()


@torch.no_grad()
def _validate(
    model: SearchNetwork,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    model.eval()
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX, device)
    total, count = torch.zeros((), device=device), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        total += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
        count += int((y != IGNORE_INDEX).sum())
        cm.update(logits.argmax(1), y)
    model.train()
    cm.all_reduce()
    if is_distributed():  # each rank scored its own share of the validation set
        sums = torch.tensor([float(total), count], dtype=torch.float64, device=device)
        all_reduce_sum(sums)
        total, count = sums[0], int(sums[1])
    metrics = cm.compute()
    return {
        "val_loss": float(total) / max(count, 1),
        "val_miou": metrics["miou"],
        "val_pixel_acc": metrics["pixel_acc"],
    }


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
    with StopRequest() as stop:
        return _run_search(cfg, out_dir, resume, progress, stop_after, stop)


def _run_search(
    cfg: SearchConfig,
    out_dir: str | Path,
    resume: str | Path | bool | None,
    progress: bool,
    stop_after: int | None,
    stop: StopRequest,
) -> SearchResult:
    start_time = time.perf_counter()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    loop, mcfg = cfg.search, cfg.model
    check_loop_options("search", loop.nonfinite, loop.max_skipped, loop.amp)

    dist_info = init_distributed(select_device(loop.device))
    world, main = dist_info.world_size, dist_info.is_main
    if loop.batch_size % world:
        raise ValueError(
            f"search.batch_size={loop.batch_size} cannot be shared by {world} processes; "
            f"use a multiple of {world} (each process takes batch_size / {world})"
        )

    def load_resume_state() -> tuple[Path | None, Any]:
        resume_path: Path | None = None
        if resume is True:
            resume_path = find_latest_checkpoint(out)
            if resume_path is None:
                raise FileNotFoundError(
                    f"{ckpt_dir}: no complete search checkpoint to resume; run without --resume"
                )
        elif resume:
            resume_path = Path(resume)
        return resume_path, (
            load_checkpoint(resume_path, CHECKPOINT_KIND, required=_RESUME_KEYS)
            if resume_path
            else None
        )

    # Rank 0 reads the checkpoint and sends it: on several nodes only its disk has the run.
    resume_path, state = call_on_main(load_resume_state)
    if state is not None:
        saved = config_from_dict(state["config"], SearchConfig(), where=str(resume_path))
        # checkpoint_cells trades time for memory and changes no result: it may differ.
        if _model_identity(saved.model) != _model_identity(mcfg):
            raise CheckpointError(
                f"{resume_path}: checkpoint was made with model {config_to_dict(saved.model)}, "
                "not the configured one; resume with the run's own config.yaml"
            )

    device = dist_info.device
    seed_everything(loop.seed)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    info = dataset_info(cfg.data.spec)
    train_set, val_set, synthetic = _datasets(cfg)
    split_path = out / "split.json"

    def decide_split() -> tuple[list[int], list[int]]:
        if state is not None:
            train_a, train_b = state["split"]["train_a"], state["split"]["train_b"]
        elif split_path.is_file():
            train_a, train_b, _ = load_split(split_path, num_samples=len(train_set))
        else:
            train_a, train_b = split_indices(len(train_set), loop.seed, loop.split_fraction)
        save_split(split_path, train_a, train_b, seed=loop.seed, num_samples=len(train_set))
        return train_a, train_b

    # Rank 0 decides (and stores) the split; every rank trains on exactly its halves.
    train_a, train_b = call_on_main(decide_split)
    if len(train_a) < loop.batch_size or len(train_b) < loop.batch_size:
        raise ValueError(
            f"trainA/trainB have {len(train_a)}/{len(train_b)} images, fewer than the batch size "
            f"{loop.batch_size}; use more data or --batch-size {min(len(train_a), len(train_b))}"
        )

    batch, rank = loop.batch_size // world, dist_info.rank  # images per process and step
    sampler_a = EpochSampler(len(train_a), loop.seed, rank, world, batch)
    sampler_b = EpochSampler(len(train_b), loop.seed + 1, rank, world, batch)
    skip_a, skip_b = _SkipFirst(sampler_a), _SkipFirst(sampler_b)  # for a mid-epoch resume
    loader_a = _loader(Subset(train_set, train_a), batch, skip_a, cfg, device)
    loader_b = _loader(Subset(train_set, train_b), batch, skip_b, cfg, device)
    # Real validation images differ in size: whole-image inference one at a time.
    if world > 1:  # each rank scores every world-th image; the metrics are summed
        val_set = Subset(val_set, rank_indices(len(val_set)))  # type: ignore[arg-type]
    loader_val = _loader(val_set, batch if synthetic else 1, None, cfg, device)
    batches_b = TrainBCycle(loader_b, sampler_b)

    # auto: from the memory estimate for rank 0's device. Every rank must agree: under
    # SyncBatchNorm a recomputed cell runs collectives that the others would not.
    checkpoint_cells = broadcast_object(
        resolve_checkpoint_cells(
            cfg, info.num_classes, device.type, world, device_memory_bytes(device.type)
        )
    )
    model = SearchNetwork(
        info.num_classes,
        num_layers=mcfg.num_layers,
        num_blocks=mcfg.num_blocks,
        filter_multiplier=mcfg.filter_multiplier,
        strides=mcfg.strides,
        primitives=mcfg.primitives,
        affine=mcfg.affine,
        checkpoint_cells=checkpoint_cells,
        partial_channels=mcfg.partial_channels,
    ).to(device)
    sync_bn = loop.sync_bn and world > 1
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(
                "search.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                "set search.sync_bn=false"
            )
        # Keeps the parameter objects and state-dict keys; checkpoints load into plain BN.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    weights, arch = model.weight_parameters(), model.arch_parameters()
    w_opt = torch.optim.SGD(
        weights, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay
    )
    a_opt = torch.optim.Adam(
        arch, lr=loop.arch_lr, betas=loop.arch_betas, weight_decay=loop.arch_weight_decay
    )
    w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        w_opt, T_max=loop.epochs, eta_min=loop.lr_min
    )
    amp_dtype = resolve_amp(loop.amp, device, cpu_bf16=True)
    w_scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    a_scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    steps_per_epoch = len(loader_a)
    arch_epochs = max(loop.epochs - max(loop.arch_start_epoch, 0), 0)
    guard = NonFiniteGuard(
        loop.nonfinite,
        int(loop.max_skipped * (loop.epochs + arch_epochs) * steps_per_epoch),
        device,
        "search",
        buffers=model.buffers(),
        last_checkpoint=resume_path,
        hint="Lower search.lr or search.arch_lr, or set search.grad_clip",
    )

    cost = _CostTerm(cfg, model, info.num_classes) if loop.target_madds else None

    first_epoch, step = 0, 0
    partial: dict[str, Any] | None = None  # the epoch position of a mid-epoch checkpoint
    log_path = out / "search_log.jsonl"
    if state is not None:
        model.load_state_dict(state["model"])
        w_opt.load_state_dict(state["w_optimizer"])
        a_opt.load_state_dict(state["arch_optimizer"])
        w_sched.load_state_dict(state["w_scheduler"])
        for key, scaler in (("w_scaler", w_scaler), ("arch_scaler", a_scaler)):
            if state.get(key):  # absent before search.amp existed; empty when fp16 was off
                scaler.load_state_dict(state[key])
        set_rng_state(state["rng"])
        first_epoch, step = state["epoch"], state["step"]
        partial = state.get("partial")
        guard.skipped = state.get("skipped", 0)
        # Records written after the checkpoint (a run killed in between) are redone.
        if main:
            truncate_jsonl(log_path, lambda r: r.get("epoch", 0) <= first_epoch)
    elif main and log_path.exists():
        log_path.unlink()
    # Every rank starts from rank 0's weights, alpha and beta (and BN statistics).
    broadcast_tensors(list(model.state_dict().values()))

    writer = None
    if loop.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=first_epoch + 1)

    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(
            total=loop.epochs * steps_per_epoch,
            initial=first_epoch * steps_per_epoch + (partial["steps"] if partial else 0),
            desc="search",
            unit="it",
            dynamic_ncols=True,
        )

    def save(path: Path, epochs_done: int, extra: dict[str, Any]) -> None:
        """Write a checkpoint (rank 0), after every rank has checked it holds no inf/nan."""
        payload = {
            "epoch": epochs_done,
            "step": step,
            "model": model.state_dict(),
            "w_optimizer": w_opt.state_dict(),
            "arch_optimizer": a_opt.state_dict(),
            "w_scheduler": w_sched.state_dict(),
            "w_scaler": w_scaler.state_dict(),
            "arch_scaler": a_scaler.state_dict(),
            "rng": rng_state(),
            "split": {"train_a": list(train_a), "train_b": list(train_b)},
            "config": config_to_dict(cfg),
            "skipped": guard.skipped,
            **extra,
        }
        guard.check_state(
            {
                k: payload[k]
                for k in ("model", "w_optimizer", "arch_optimizer", "partial")
                if k in payload
            },
            f"the search state to be saved as {path.name}",
        )
        if main:
            save_checkpoint(path, payload, CHECKPOINT_KIND)
            _prune_checkpoints(ckpt_dir, path, loop.keep_checkpoints)
        guard.last_checkpoint = path

    record: dict[str, Any] = {}
    last_epoch = loop.epochs if stop_after is None else min(loop.epochs, stop_after)
    epochs_done, stopped, last_ckpt = first_epoch, False, resume_path
    for epoch in range(first_epoch, last_epoch):
        epoch_start = time.perf_counter()
        sampler_a.set_epoch(epoch)
        batches_b.start_epoch(epoch)
        arch_on = epoch >= loop.arch_start_epoch
        model.train()
        w_loss_sum = torch.zeros((), device=device)
        a_loss_sum = torch.zeros((), device=device)
        n_steps = n_w = n_arch = skipped_w = skipped_arch = 0
        if partial is not None:  # resume mid-epoch: the batches of its first n_steps are done
            n_steps, n_w, n_arch = partial["steps"], partial["w_steps"], partial["arch_steps"]
            skipped_w, skipped_arch = partial["skipped_w"], partial["skipped_arch"]
            w_loss_sum += partial["w_loss_sum"].to(device)
            a_loss_sum += partial["a_loss_sum"].to(device)
            epoch_start -= partial["seconds"]
            skip_a.skip = n_steps * batch
            batches_a = iter(loader_a)
            if arch_on and n_steps:
                # trainB gave one batch per step since the epoch began: the iterator of pass
                # c had yielded p batches (p may be a whole pass, not yet found exhausted).
                per_pass = len(loader_b)
                cycle, used = (n_steps - 1) // per_pass, (n_steps - 1) % per_pass + 1
                batches_b.cycle = cycle
                sampler_b.set_epoch(epoch, cycle)
                skip_b.skip = used * batch
                batches_b.it = iter(loader_b)
            # Making those iterators drew loader seeds from the global RNG, which the
            # uninterrupted run had drawn before the saved state: restore it after them.
            set_rng_state(state["rng"])
            partial = None
        else:
            batches_a = iter(loader_a)
        for batch_a in batches_a:
            at = f"epoch {epoch + 1}, step {n_steps + 1} (iteration {step + 1})"
            w_loss, ok = _step(
                model,
                batch_a,
                weights,
                arch,
                w_opt,
                loop.grad_clip,
                device,
                amp_dtype=amp_dtype,
                scaler=w_scaler,
                guard=guard,
                where=f"the weight step of {at}",
            )
            if ok:
                w_loss_sum += w_loss
                n_w += 1
            else:
                skipped_w += 1
            if arch_on:
                a_loss, ok = _step(
                    model,
                    next(batches_b),
                    arch,
                    weights,
                    a_opt,
                    None,
                    device,
                    cost,
                    amp_dtype=amp_dtype,
                    scaler=a_scaler,
                    guard=guard,
                    where=f"the architecture step of {at}",
                )
                if ok:
                    a_loss_sum += a_loss
                    n_arch += 1
                else:
                    skipped_arch += 1
                # Adam cannot be undone: a bad alpha/beta ends the run in either mode.
                guard.watch(_all_finite(arch), f"alpha/beta after the architecture step of {at}")
            n_steps += 1
            step += 1
            if step % 10 == 0:  # .item() syncs a GPU: do it rarely (CUDA reads the guard here)
                guard.check()
                if bar is not None:
                    loss = float(w_loss_sum) / max(n_w, 1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}")
            if bar is not None:
                bar.update(1)
            if stop.should_stop(device):  # SIGINT/SIGTERM: this step pair is done
                stopped = True
                break
        if stopped:
            if world > 1:  # one value per rank would not survive the resume: their mean does
                all_reduce_mean([w_loss_sum, a_loss_sum])
                if not sync_bn:
                    all_reduce_mean(_bn_running_stats(model))
            last_ckpt = ckpt_dir / f"epoch_{epoch + 1:04d}_step_{n_steps:06d}.pt"
            position = {
                "steps": n_steps,
                "w_steps": n_w,
                "arch_steps": n_arch,
                "skipped_w": skipped_w,
                "skipped_arch": skipped_arch,
                "w_loss_sum": w_loss_sum.detach().cpu(),
                "a_loss_sum": a_loss_sum.detach().cpu(),
                "seconds": time.perf_counter() - epoch_start,
            }
            save(last_ckpt, epoch, {"partial": position, "genotype": model.genotype().to_dict()})
            break
        lr = w_sched.get_last_lr()[0]
        with warnings.catch_warnings():
            # A run resumed after the epoch's last step (or one whose steps were all
            # skipped) steps the scheduler before any optimiser step in this process: the
            # order PyTorch warns about, but right here.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            w_sched.step()
        if world > 1:
            all_reduce_mean([w_loss_sum, a_loss_sum])  # the global batch's losses
            if not sync_bn:  # one set of BN statistics for validation and the checkpoint
                all_reduce_mean(_bn_running_stats(model))
            check_same_across_ranks(arch, "alpha/beta")
        guard.check()  # no validation, log record or checkpoint of nan weights
        metrics = _validate(model, loader_val, info.num_classes, device, amp_dtype)
        genotype = model.genotype()
        record = {
            "epoch": epoch + 1,
            "step": step,
            # None: every update of the epoch was skipped (search.nonfinite=skip)
            "train_loss": float(w_loss_sum) / n_w if n_w else None,
            "arch_loss": float(a_loss_sum) / n_arch if arch_on and n_arch else None,
            **metrics,
            "lr": lr,
            "arch_updates": arch_on,
            "seconds": time.perf_counter() - epoch_start,
            "alpha": model.alpha_weights().detach().cpu().tolist(),
            "beta": model.beta_weights().detach().cpu().tolist(),
            "genotype": genotype.to_dict(),
        }
        if loop.nonfinite == "skip":
            record["skipped_steps"], record["skipped_arch_steps"] = skipped_w, skipped_arch
        if main:  # only rank 0 writes
            if cost is not None:
                record.update(cost.report(genotype))
            append_jsonl(log_path, record)
            if writer is not None:
                keys = ("train_loss", "arch_loss", "val_loss", "val_miou", "val_pixel_acc", "lr")
                for key in (*keys, "expected_madds", "decoded_madds"):
                    if record.get(key) is not None and math.isfinite(record[key]):
                        writer.add_scalar(f"search/{key}", record[key], epoch + 1)
                genotype_md = genotype.to_json().replace("\n", "  \n")
                writer.add_text("search/genotype", genotype_md, epoch + 1)
                writer.flush()
        last_ckpt = ckpt_dir / f"epoch_{epoch + 1:04d}.pt"
        metrics_kept = {k: record[k] for k in ("train_loss", "val_loss", "val_miou")}
        save(last_ckpt, epoch + 1, {"genotype": genotype.to_dict(), "metrics": metrics_kept})
        epochs_done = epoch + 1
        # A signal during validation: the epoch's checkpoint is the place to resume from.
        if epochs_done < last_epoch and stop.should_stop(device):
            stopped = True
            break
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()

    genotype = model.genotype()
    if last_epoch == loop.epochs and not stopped and main:
        save_genotype(genotype, out / "genotype.json")
        from autodeeplab.viz import render_genotype

        beta_w = model.beta_weights().detach().cpu().numpy()
        render_genotype(genotype, out, beta=beta_w, prefix="genotype_")
        from autodeeplab.engine.search_report import render_search_report

        try:
            render_search_report(out)
        except (OSError, ValueError) as exc:  # the genotype is saved: a report failure is not fatal
            print(f"warning: search report not written ({exc}); run 'autodeeplab report {out}'")
    barrier()  # every rank returns once rank 0 has written everything
    return SearchResult(
        genotype=genotype,
        out_dir=out,
        epochs=epochs_done,
        val_miou=float(record.get("val_miou", float("nan"))) if record else float("nan"),
        seconds=time.perf_counter() - start_time,
        stopped=stopped,
        checkpoint=last_ckpt,
        skipped=guard.skipped,
    )
