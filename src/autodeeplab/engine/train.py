"""Retraining a discrete Auto-DeepLab from scratch (paper §5.2; SPEC.md §7.1).

DeepLab's protocol: SGD with momentum, poly learning rate ``lr_t = lr0 (1 - t/T)^power``
(power 0.9), weight decay on conv weights only (TF slim regularises weights, not BN or
biases), random scale / crop / flip augmentation, an iteration-based schedule, and BN
trained throughout. Mixed precision runs on CUDA only (bf16, or fp16 with a GradScaler).

Exact resume: batch ``t`` holds the images of permutation ``(seed, epoch)`` at slots
``t mod batches_per_epoch``, and each image's augmentation is seeded by ``(seed, t, slot)``,
so neither depends on the process, the worker or what ran before. A checkpoint holds the
weights, optimiser, scheduler, scaler, RNG states and best score; training resumed from it
gives weights bitwise equal (on CPU) to an uninterrupted run.

A run folder holds ``config.yaml``, ``genotype.json``, ``train_log.jsonl`` (one record per
``log_every`` iterations and per evaluation), ``tensorboard/`` and ``checkpoints/best.pt`` +
``last.pt``, which carry ``model_kwargs``, the genotype, the config, class names and palette.

Under torchrun (``torchrun --nproc-per-node N -m autodeeplab train ...``) the network is
wrapped in DistributedDataParallel and rank r trains on slots ``r*b .. (r+1)*b - 1`` of every
global batch (``b = train.batch_size / N``, same images and augmentation keys as one process).
The loss is normalised by the global batch's pixel count, so the averaged gradient is that of
one process with the whole batch; BatchNorm sees the rank's images (the global batch with
``train.sync_bn``, CUDA only). BN buffers follow DDP's default: rank 0's are sent to all ranks
at every forward, and once more before each evaluation and checkpoint. Validation is sharded
and its confusion matrix summed; only rank 0 writes files. Each rank has its own random
stream (dropout, drop path); checkpoints keep every rank's, so a resume with the same number
of processes is exact.

Stopping and guards (:mod:`autodeeplab.engine.guards`, shared with the search loop):
:class:`StopRequest` turns SIGINT/SIGTERM into "finish this iteration, write ``last.pt``,
return ``stopped=True``", and :class:`NonFiniteGuard` ends the run with
:class:`NonFiniteError` on an inf/nan loss or gradient (``train.nonfinite=stop``, the
default) or drops that batch's update (``skip``), and never lets a non-finite value into a
checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from autodeeplab.checkpoint import (
    CheckpointError,
    check_finite,
    check_state_dict,
    load_checkpoint,
    read_latest,
    require_keys,
    save_checkpoint,
)
from autodeeplab.config import TrainConfig, config_from_dict, config_to_dict, save_config
from autodeeplab.data import build_dataset, dataset_info
from autodeeplab.data.transforms import val_transform
from autodeeplab.distributed import (
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_tensors,
    call_on_main,
    init_distributed,
    rank_indices,
    sharded_mean,
)
from autodeeplab.engine.evaluate import evaluate
from autodeeplab.engine.guards import (
    NonFiniteError,
    NonFiniteGuard,
    StopRequest,
    check_loop_options,
    grads_finite,
    ignore_sigint,
    resolve_amp,
)
from autodeeplab.engine.runtime import (
    append_jsonl,
    compile_backend,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
    truncate_jsonl,
)
from autodeeplab.genotype import Genotype, load_genotype, save_genotype
from autodeeplab.metrics import IGNORE_INDEX
from autodeeplab.model import MODELS, TRAIN_CHECKPOINT_KIND, AutoDeepLab, build_model

__all__ = [
    "BatchSchedule",
    "NonFiniteError",
    "TrainResult",
    "build_train_model",
    "poly_lr",
    "resolve_amp",
    "run_train",
    "with_genotype",
]


@dataclass
class TrainResult:
    """What a finished training run leaves behind."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_miou: float
    best_iteration: int
    iterations: int
    seconds: float
    stopped: bool = False  # ended early by SIGINT/SIGTERM; last.pt resumes it
    skipped: int = 0  # updates dropped for a non-finite loss or gradient (train.nonfinite=skip)


def poly_lr(base_lr: float, step: int, total: int, power: float = 0.9) -> float:
    """DeepLab's poly schedule: ``base_lr * (1 - step / total) ** power``."""
    return base_lr * (1.0 - min(step, total) / total) ** power


def _genotype_of(cfg: TrainConfig) -> Genotype:
    """The genotype the config names: a preset's or a genotype.json file's."""
    name, path = cfg.model.name, cfg.model.genotype
    if (name is None) == (path is None):
        raise ValueError(
            "give exactly one of --model NAME (model.name) or --genotype FILE (model.genotype); "
            f"got name={name!r}, genotype={path!r}"
        )
    if path is not None:
        return load_genotype(path)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]["genotype"]


def build_train_model(
    cfg: TrainConfig, num_classes: int, genotype: Genotype | None = None
) -> AutoDeepLab:
    """The network that ``cfg.model`` describes, for ``cfg.train.iters`` of drop path.

    ``genotype``: build this cell and path instead of the config's preset or file.
    """
    m = cfg.model
    kwargs: dict[str, Any] = {
        "filter_multiplier": m.filter_multiplier,
        "drop_path_keep_prob": m.drop_path_keep_prob,
        "total_training_steps": cfg.train.iters,
        "aspp_channels": m.aspp_channels,
        "decoder_channels": m.decoder_channels,
        "dropout": m.dropout,
        "aspp_gamma_init": m.aspp_gamma_init,
    }
    if genotype is not None:
        return build_model(genotype, num_classes, **kwargs)
    genotype = _genotype_of(cfg)  # also checks that exactly one of name / genotype is set
    return build_model(m.name if m.name is not None else genotype, num_classes, **kwargs)


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


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# What a resume reads: a checkpoint without one is refused by name, not with a KeyError.
_RESUME_KEYS = (
    "config", "model", "optimizer", "scheduler", "scaler", "rng", "iteration", "best_miou",
    "best_iter",
)  # fmt: skip


def _resume_state(out: Path, resume: str | Path | bool | None) -> tuple[Path | None, Any]:
    if not resume:
        return None, None
    path = Path(resume) if resume is not True else out / "checkpoints" / "last.pt"
    if resume is True:
        # latest.json names the newest whole checkpoint: best.pt if a kill came between the
        # best.pt and last.pt writes of an evaluation (both hold the full training state).
        path = read_latest(out / "checkpoints", TRAIN_CHECKPOINT_KIND) or path
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no checkpoint to resume; start afresh without --resume (add "
                "--overwrite if the folder holds a run killed before one)"
            )
    state = load_checkpoint(path)
    if state.get("kind") != TRAIN_CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path}: this is a {state.get('kind')!r} checkpoint; resume training from a "
            "train run's checkpoints/last.pt"
        )
    require_keys(state, path, _RESUME_KEYS)
    return path, state


def run_train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | Path | bool | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or resume) the network of ``cfg`` into ``out_dir``; returns the best checkpoint.

    ``stop_after`` ends the run after that iteration of the schedule with ``last.pt`` written,
    so a long schedule can be split over jobs and continued with ``resume=True``.
    SIGINT/SIGTERM do the same after the current iteration (the result says ``stopped``); the
    handlers are installed for this call only.
    """
    with StopRequest() as stop:
        return _run_train(cfg, out_dir, resume, progress, stop_after, stop)


def _run_train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | Path | bool | None,
    progress: bool,
    stop_after: int | None,
    stop: StopRequest,
) -> TrainResult:
    start_time = time.perf_counter()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    loop = cfg.train
    if loop.iters < 1 or loop.eval_every < 1 or loop.log_every < 1:
        raise ValueError("train.iters, train.eval_every and train.log_every must be positive")
    check_loop_options("train", loop.nonfinite, loop.max_skipped, loop.amp)
    backend = compile_backend(loop.compile, "train.compile")
    end = loop.iters if stop_after is None else min(stop_after, loop.iters)

    dist_info = init_distributed(select_device(loop.device))
    world, rank, main = dist_info.world_size, dist_info.rank, dist_info.is_main
    # Rank 0 reads the checkpoint and sends it: on several nodes only its disk has the run.
    resume_path, state = call_on_main(lambda: _resume_state(out, resume))
    if state is not None:
        saved = config_from_dict(state["config"], TrainConfig(), where=str(resume_path))
        if config_to_dict(saved.model) != config_to_dict(cfg.model) or saved.data != cfg.data:
            raise CheckpointError(
                f"{resume_path}: checkpoint was made with another model or data config; "
                "resume with the run's own config (OUT/config.yaml)"
            )

    device = dist_info.device
    amp_dtype = resolve_amp(loop.amp, device, "train.amp")
    seed_everything(loop.seed)
    info = dataset_info(cfg.data.spec)
    model = build_train_model(cfg, info.num_classes).to(device)
    if loop.sync_bn and world > 1:
        if device.type != "cuda":
            raise ValueError(
                "train.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                "set train.sync_bn=false"
            )
        # Same parameters and state-dict keys: checkpoints load into the plain network.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if loop.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        save_genotype(model.genotype, out / "genotype.json")

    transform = _train_transform(cfg)
    train_set = build_dataset(
        cfg.data.spec,
        "train",
        size=cfg.data.crop,
        seed=loop.seed,
        num_samples=cfg.data.train_samples,
        transform=transform,
    )
    val_set = build_dataset(
        cfg.data.spec,
        "val",
        size=cfg.data.crop,
        seed=loop.seed,
        num_samples=cfg.data.val_samples,
        transform=val_transform(cfg.data.longest_side) if cfg.data.longest_side else None,
    )
    if world > 1:  # each rank scores every world-th image; the confusion matrices are summed
        val_set = torch.utils.data.Subset(val_set, rank_indices(len(val_set)))

    optimizer = torch.optim.SGD(
        _param_groups(model, loop.weight_decay), lr=loop.lr, momentum=loop.momentum
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: poly_lr(1.0, t, loop.iters, loop.poly_power)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    guard = NonFiniteGuard(
        loop.nonfinite,
        int(loop.max_skipped * loop.iters),
        device,
        "train",
        buffers=model.buffers(),
        last_checkpoint=resume_path,
        hint="Lower train.lr or set train.grad_clip",
    )

    start, best_miou, best_iter = 0, -math.inf, 0
    own_rng = None
    log_path = out / "train_log.jsonl"
    if state is not None:
        check_state_dict(resume_path, model.state_dict(), state["model"], "model")
        check_finite(resume_path, state["optimizer"], "optimizer")
        model.load_state_dict(state["model"])
        try:  # PyTorch's own errors here name no file, and some are tracebacks deep
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            raise CheckpointError(
                f"{resume_path}: its optimizer, scheduler or scaler state does not fit this "
                f"run ({type(exc).__name__}: {first}); resume from another checkpoint of the run"
            ) from None
        own_rng = state.get("rng_ranks")  # every rank's stream, from a run of `world` ranks
        own_rng = own_rng[rank] if own_rng is not None and len(own_rng) == world else None
        set_rng_state(own_rng if own_rng is not None else state["rng"])
        start, best_miou, best_iter = state["iteration"], state["best_miou"], state["best_iter"]
        guard.skipped = state.get("skipped", 0)
        # Records written after the checkpoint (a run killed in between) are redone.
        if main:
            truncate_jsonl(log_path, lambda r: r.get("iter", 0) <= start)
    elif main and log_path.exists():
        log_path.unlink()
    if rank > 0 and own_rng is None:
        seed_everything(loop.seed + 1_000_003 * rank + start)  # own dropout / drop-path masks
    net: torch.nn.Module = model
    if world > 1:  # after loading: DDP starts every rank from rank 0's parameters and buffers
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if backend is not None:
        # Training forward passes only: validation runs the eager model (eval mode and
        # whole images of other sizes would each compile anew), and checkpoints hold
        # ``model``'s own state-dict keys.
        net = torch.compile(net, backend=backend)

    pin = device.type == "cuda"
    # Own generators: creating a loader iterator must not consume the global torch RNG,
    # which drives dropout and drop path and is saved for resume.
    schedule = BatchSchedule(len(train_set), loop.batch_size, loop.seed, start, end, rank, world)
    train_loader = DataLoader(
        _Keyed(train_set, transform),
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

    writer = None
    if loop.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1)
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=loop.iters, initial=start, desc="train", unit="it", dynamic_ncols=True)

    saved_iter = start  # the iteration last.pt holds (or the resumed one)

    def checkpoint(path: Path, iteration: int, metrics: dict[str, Any]) -> None:
        # Called on every rank: the buffers are synced and the RNG states gathered first.
        nonlocal saved_iter
        rng_ranks = None
        if world > 1:
            broadcast_tensors(list(model.buffers()))
            rng_ranks = all_gather_object(rng_state())
        model_state, opt_state = model.state_dict(), optimizer.state_dict()
        # The log window since the last record, so a resume mid-window logs what an
        # uninterrupted run would (the ranks' sums are averaged, as at a log point).
        window = {"loss_sum": all_reduce_mean(loss_sum.detach().clone()).cpu(), "n_loss": n_loss}
        window["skipped"] = guard.skipped - skipped_before
        # Every rank checks (and agrees), so no rank is left waiting if this raises.
        guard.check_state(
            [model_state, opt_state, window], f"the model state at iteration {iteration}"
        )
        if main:
            save_checkpoint(
                path,
                {
                    "iteration": iteration,
                    "best_miou": best_miou,
                    "best_iter": best_iter,
                    "model_kwargs": model.model_kwargs,
                    "model": model_state,
                    "optimizer": opt_state,
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "config": config_to_dict(cfg),
                    "genotype": model.genotype.to_dict(),
                    "class_names": list(info.class_names),
                    "palette": [list(c) for c in info.palette],
                    "metrics": metrics,
                    "skipped": guard.skipped,
                    "log_window": window,
                    **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
                },
                TRAIN_CHECKPOINT_KIND,
            )
        if path.name == "last.pt":
            saved_iter = iteration
            guard.last_checkpoint = path

    model.train()
    batches = iter(train_loader)
    loss_sum, n_loss, skipped_before = torch.zeros((), device=device), 0, guard.skipped
    if state is not None and "log_window" in state:  # stopped between two log records
        window = state["log_window"]
        loss_sum += window["loss_sum"].to(device)
        n_loss, skipped_before = window["n_loss"], guard.skipped - window["skipped"]
    tick, images = time.perf_counter(), 0
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    window = cfg.eval.window or cfg.data.crop
    done, stopped = start, False
    for it in range(start, end):
        x, y = next(batches)
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        model.set_training_step(it)
        guard.before_forward()
        # Free last step's gradients before the forward, not after it: they would otherwise
        # sit in memory beside this step's activations at the peak.
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = net(x)
        if world > 1:  # this rank's share of the global batch's mean
            ce = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = sharded_mean(ce, (y != IGNORE_INDEX).sum())
        else:
            loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # a no-op without fp16; the checks see the true gradients
        norm = None
        if loop.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
        # With fp16, inf gradients are the GradScaler's business (it skips and rescales).
        checked = None if scaler.is_enabled() else model.parameters()
        if guard.allow(grads_finite(loss, checked, norm), f"iteration {it + 1}"):
            scaler.step(optimizer)
            loss_sum += loss.detach()
            n_loss += 1
        scaler.update()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        images += x.shape[0]
        done = it + 1

        if done % loop.log_every == 0 or done == loop.iters:
            guard.check()  # before a nan loss reaches the log (the sync below is there anyway)
            now = time.perf_counter()
            all_reduce_mean(loss_sum)  # the global batch's loss (a no-op in one process)
            record = {
                "event": "train",
                "iter": done,
                # .item() syncs a GPU: only when logging. None: every update here was skipped.
                "loss": float(loss_sum) / n_loss if n_loss else None,
                "lr": lr,
                "img_per_s": images * world / max(now - tick, 1e-9),
            }
            if loop.nonfinite == "skip":
                record["skipped"] = guard.skipped - skipped_before
            if main:
                append_jsonl(log_path, record)
            if writer is not None:
                for key in ("loss", "lr", "img_per_s", "skipped"):
                    if record.get(key) is not None:
                        writer.add_scalar(f"train/{key}", record[key], done)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{record['loss'] if n_loss else float('nan'):.3f}",
                    lr=f"{lr:.2e}",
                    img_s=f"{record['img_per_s']:.1f}",
                )
            loss_sum, n_loss, tick, images = torch.zeros((), device=device), 0, now, 0
            skipped_before = guard.skipped
        if bar is not None:
            bar.update(1)

        if done % loop.eval_every == 0 or done == loop.iters:
            guard.check()  # no evaluation (nor its log record) of nan weights
            if world > 1:  # rank 0's BN statistics, as DDP's next forward would use
                broadcast_tensors(list(model.buffers()))
            cm = evaluate(
                model,
                val_loader,
                info.num_classes,
                device,
                mode=cfg.eval.mode,
                scales=cfg.eval.scales,
                flip=cfg.eval.flip,
                window=window,
                stride=cfg.eval.stride,
                amp_dtype=amp_dtype,
            )
            cm.all_reduce()  # the whole validation set (a no-op in one process)
            result = cm.compute()
            metrics = {
                "event": "eval",
                "iter": done,
                "val_miou": result["miou"],
                "val_pixel_acc": result["pixel_acc"],
                "val_mean_acc": result["mean_acc"],
            }
            is_best = result["miou"] > best_miou  # nan (no valid pixel) is never best
            if is_best:
                best_miou, best_iter = result["miou"], done
            metrics["best_miou"] = best_miou
            if main:
                append_jsonl(log_path, metrics)
            if writer is not None:
                for key in ("val_miou", "val_pixel_acc", "val_mean_acc"):
                    if math.isfinite(metrics[key]):
                        writer.add_scalar(f"val/{key[4:]}", metrics[key], done)
                writer.flush()
            if bar is not None:
                bar.write(f"iter {done}: val mIoU {result['miou']:.4f} (best {best_miou:.4f})")
            if is_best:
                checkpoint(ckpt_dir / "best.pt", done, metrics)
            checkpoint(ckpt_dir / "last.pt", done, metrics)
        # SIGINT/SIGTERM: this iteration is done; last.pt below makes it resumable.
        if done < end and stop.should_stop(device):
            stopped = True
            break

    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if saved_iter != done:  # stopped between evaluations (stop_after or a signal)
        checkpoint(ckpt_dir / "last.pt", done, {})
    if done == loop.iters and not call_on_main((ckpt_dir / "best.pt").is_file):  # all nan
        checkpoint(ckpt_dir / "best.pt", done, {"val_miou": best_miou})
    barrier()  # every rank returns once rank 0 has written everything
    return TrainResult(
        out_dir=out,
        best_checkpoint=ckpt_dir / "best.pt",
        last_checkpoint=ckpt_dir / "last.pt",
        best_miou=best_miou,
        best_iteration=best_iter,
        iterations=done,
        seconds=time.perf_counter() - start_time,
        stopped=stopped,
        skipped=guard.skipped,
    )


def with_genotype(cfg: TrainConfig, genotype_path: str | Path) -> TrainConfig:
    """``cfg`` training the network of ``genotype_path`` (and no preset)."""
    return replace(cfg, model=replace(cfg.model, name=None, genotype=str(genotype_path)))
