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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from autodeeplab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autodeeplab.config import SearchConfig, config_from_dict, config_to_dict, save_config
from autodeeplab.data import build_dataset, dataset_info, parse_spec
from autodeeplab.data.split import load_split, save_split, split_indices
from autodeeplab.data.transforms import train_transform, val_transform
from autodeeplab.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_tensors,
    call_on_main,
    check_same_across_ranks,
    init_distributed,
    is_distributed,
    rank_indices,
    sharded_mean,
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
from autodeeplab.search.network import SearchNetwork, beta_probabilities

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


def find_latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint in ``out_dir/checkpoints`` that loads, or None."""
    ckpts = sorted((out_dir / "checkpoints").glob("epoch_*.pt"), reverse=True)
    for path in ckpts:
        try:
            load_checkpoint(path, CHECKPOINT_KIND)
        except (CheckpointError, OSError):
            continue
        return path
    return None


def decode_checkpoint(path: str | Path) -> tuple[Genotype, dict[str, Any]]:
    """Decode the genotype of a search checkpoint without building the supernet."""
    state = load_checkpoint(path, CHECKPOINT_KIND)
    cfg = config_from_dict(state["config"], SearchConfig(), where=str(path))
    weights = state["model"]
    alpha, beta = weights["alpha"], weights["beta"]
    beta_w = beta_probabilities(beta, len(cfg.model.strides))
    genotype = decode(F.softmax(alpha, -1), beta_w, cfg.model.primitives, cfg.model.num_blocks)
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


def _step(
    model: SearchNetwork,
    batch: tuple[Tensor, Tensor],
    params: list[Tensor],
    frozen: list[Tensor],
    optimizer: torch.optim.Optimizer,
    clip: float | None,
    device: torch.device,
    penalty: Callable[[], Tensor] | None = None,
) -> Tensor:
    """One optimiser step on ``params``; returns the (detached) loss, penalty included.

    ``frozen`` (the other parameter set) is taken out of autograd for the step, so a w step
    neither saves what alpha/beta gradients would need nor touches alpha/beta, and an
    architecture step computes no weight gradient (the stem runs without autograd). Under
    torchrun the gradients of ``params`` are then averaged over ranks, before clipping.
    """
    x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    for p in frozen:
        p.requires_grad_(False)
    try:
        if is_distributed():  # this rank's share of the global batch's mean
            ce = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = sharded_mean(ce, (y != IGNORE_INDEX).sum())
        else:
            loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
        if penalty is not None:
            loss = loss + penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if is_distributed():  # one flat all-reduce; the same graph on every rank, so the same grads
        all_reduce_mean([p.grad for p in params if p.grad is not None])
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return loss.detach()


def _bn_running_stats(model: torch.nn.Module) -> list[Tensor]:
    """The running means and variances of every BatchNorm in ``model``."""
    return [
        t
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]


@torch.no_grad()
def _validate(
    model: SearchNetwork, loader: DataLoader, num_classes: int, device: torch.device
) -> dict[str, float]:
    model.eval()
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX, device)
    total, count = torch.zeros((), device=device), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
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
    once all configured epochs are done.
    """
    start_time = time.perf_counter()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    loop, mcfg = cfg.search, cfg.model

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
        return resume_path, load_checkpoint(resume_path, CHECKPOINT_KIND) if resume_path else None

    # Rank 0 reads the checkpoint and sends it: on several nodes only its disk has the run.
    resume_path, state = call_on_main(load_resume_state)
    if state is not None:
        saved = config_from_dict(state["config"], SearchConfig(), where=str(resume_path))
        if config_to_dict(saved.model) != config_to_dict(mcfg):
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
    loader_a = _loader(Subset(train_set, train_a), batch, sampler_a, cfg, device)
    loader_b = _loader(Subset(train_set, train_b), batch, sampler_b, cfg, device)
    # Real validation images differ in size: whole-image inference one at a time.
    if world > 1:  # each rank scores every world-th image; the metrics are summed
        val_set = Subset(val_set, rank_indices(len(val_set)))  # type: ignore[arg-type]
    loader_val = _loader(val_set, batch if synthetic else 1, None, cfg, device)
    batches_b = TrainBCycle(loader_b, sampler_b)

    model = SearchNetwork(
        info.num_classes,
        num_layers=mcfg.num_layers,
        num_blocks=mcfg.num_blocks,
        filter_multiplier=mcfg.filter_multiplier,
        strides=mcfg.strides,
        primitives=mcfg.primitives,
        affine=mcfg.affine,
        checkpoint_cells=mcfg.checkpoint_cells,
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

    cost = _CostTerm(cfg, model, info.num_classes) if loop.target_madds else None

    first_epoch, step = 0, 0
    log_path = out / "search_log.jsonl"
    if state is not None:
        model.load_state_dict(state["model"])
        w_opt.load_state_dict(state["w_optimizer"])
        a_opt.load_state_dict(state["arch_optimizer"])
        w_sched.load_state_dict(state["w_scheduler"])
        set_rng_state(state["rng"])
        first_epoch, step = state["epoch"], state["step"]
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
            total=loop.epochs * len(loader_a),
            initial=first_epoch * len(loader_a),
            desc="search",
            unit="it",
            dynamic_ncols=True,
        )

    record: dict[str, Any] = {}
    last_epoch = loop.epochs if stop_after is None else min(loop.epochs, stop_after)
    for epoch in range(first_epoch, last_epoch):
        epoch_start = time.perf_counter()
        sampler_a.set_epoch(epoch)
        batches_b.start_epoch(epoch)
        arch_on = epoch >= loop.arch_start_epoch
        model.train()
        w_loss_sum = torch.zeros((), device=device)
        a_loss_sum = torch.zeros((), device=device)
        n_steps = 0
        for batch_a in loader_a:
            w_loss_sum += _step(model, batch_a, weights, arch, w_opt, loop.grad_clip, device)
            if arch_on:
                a_loss_sum += _step(
                    model, next(batches_b), arch, weights, a_opt, None, device, cost
                )
            n_steps += 1
            step += 1
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:  # .item() syncs a GPU: do it rarely
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(w_loss_sum) / n_steps:.3f}")
        lr = w_sched.get_last_lr()[0]
        w_sched.step()
        if world > 1:
            all_reduce_mean([w_loss_sum, a_loss_sum])  # the global batch's losses
            if not sync_bn:  # one set of BN statistics for validation and the checkpoint
                all_reduce_mean(_bn_running_stats(model))
            check_same_across_ranks(arch, "alpha/beta")
        metrics = _validate(model, loader_val, info.num_classes, device)
        genotype = model.genotype()
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": float(w_loss_sum) / max(n_steps, 1),
            "arch_loss": float(a_loss_sum) / max(n_steps, 1) if arch_on else None,
            **metrics,
            "lr": lr,
            "arch_updates": arch_on,
            "seconds": time.perf_counter() - epoch_start,
            "alpha": model.alpha_weights().detach().cpu().tolist(),
            "beta": model.beta_weights().detach().cpu().tolist(),
            "genotype": genotype.to_dict(),
        }
        if not main:  # only rank 0 writes; the others go on to the next epoch
            continue
        if cost is not None:
            record.update(cost.report(genotype))
        append_jsonl(log_path, record)
        if writer is not None:
            keys = ("train_loss", "arch_loss", "val_loss", "val_miou", "val_pixel_acc", "lr")
            for key in (*keys, "expected_madds", "decoded_madds"):
                if record.get(key) is not None and math.isfinite(record[key]):
                    writer.add_scalar(f"search/{key}", record[key], epoch + 1)
            writer.add_text("search/genotype", genotype.to_json().replace("\n", "  \n"), epoch + 1)
            writer.flush()
        save_checkpoint(
            ckpt_dir / f"epoch_{epoch + 1:04d}.pt",
            {
                "epoch": epoch + 1,
                "step": step,
                "model": model.state_dict(),
                "w_optimizer": w_opt.state_dict(),
                "arch_optimizer": a_opt.state_dict(),
                "w_scheduler": w_sched.state_dict(),
                "rng": rng_state(),
                "split": {"train_a": list(train_a), "train_b": list(train_b)},
                "config": config_to_dict(cfg),
                "genotype": genotype.to_dict(),
                "metrics": {k: record[k] for k in ("train_loss", "val_loss", "val_miou")},
            },
            CHECKPOINT_KIND,
        )
        for old in sorted(ckpt_dir.glob("epoch_*.pt"))[: -max(loop.keep_checkpoints, 1)]:
            old.unlink()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()

    genotype = model.genotype()
    if last_epoch == loop.epochs and main:
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
        epochs=last_epoch,
        val_miou=float(record.get("val_miou", float("nan"))) if record else float("nan"),
        seconds=time.perf_counter() - start_time,
    )
