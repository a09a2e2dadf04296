"""Retraining a discrete Auto-DeepLab from scratch (paper §5.2; docs/design.md §7.1).

DeepLab's protocol: SGD with momentum, poly learning rate ``lr_t = lr0 (1 - t/T)^power``
(power 0.9), weight decay on conv weights only (TF slim regularises weights, not BN or
biases), random scale / crop / flip augmentation, an iteration-based schedule, and BN
trained throughout. Mixed precision runs on CUDA only (bf16, or fp16 with a GradScaler).

The loop reads top to bottom on the run scaffold (:mod:`autodeeplab.engine.scaffold`): set up,
resume, then for each iteration: batch, step, log, and at each evaluation a checkpoint.
Exact resume: the data order and each image's augmentation depend on (seed, iteration) only
(:mod:`autodeeplab.engine.train.data`), and a checkpoint holds the weights, optimiser,
scheduler, scaler, RNG states and best score (:mod:`autodeeplab.engine.train.state`);
training resumed from it gives weights bitwise equal (on CPU) to an uninterrupted run.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from autodeeplab.config import TrainConfig
from autodeeplab.data import dataset_info
from autodeeplab.distributed import barrier, broadcast_tensors, call_on_main, sharded_mean
from autodeeplab.engine.device import compile_backend
from autodeeplab.engine.guards import (
    NonFiniteError,
    NonFiniteGuard,
    StopRequest,
    check_loop_options,
    grads_finite,
    resolve_amp,
)
from autodeeplab.engine.infer.evaluate import evaluate, resolve_eval
from autodeeplab.engine.rng import seed_everything
from autodeeplab.engine.scaffold import Run
from autodeeplab.engine.train.data import BatchSchedule, train_datasets, train_loaders
from autodeeplab.engine.train.model import build_train_model, param_groups, with_genotype
from autodeeplab.engine.train.state import (
    LogWindow,
    check_same_setup,
    load_train_state,
    resume_state,
    save_train_state,
)
from autodeeplab.genotype import save_genotype
from autodeeplab.metrics import IGNORE_INDEX

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

#: A train record's keys that go to TensorBoard, and an eval record's (as ``val/<name>``).
_TRAIN_TAGS = {key: f"train/{key}" for key in ("loss", "lr", "img_per_s", "skipped")}
_VAL_TAGS = {key: f"val/{key[4:]}" for key in ("val_miou", "val_pixel_acc", "val_mean_acc")}


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
        return _run_train(cfg, Path(out_dir), resume, progress, stop_after, stop)


def _run_train(
    cfg: TrainConfig,
    out: Path,
    resume: str | Path | bool | None,
    progress: bool,
    stop_after: int | None,
    stop: StopRequest,
) -> TrainResult:
    # -- set up: options, torchrun, the checkpoint to resume, the network, the run folder --
    start_time = time.perf_counter()
    loop = cfg.train
    if loop.iters < 1 or loop.eval_every < 1 or loop.log_every < 1:
        raise ValueError("train.iters, train.eval_every and train.log_every must be positive")
    check_loop_options("train", loop.nonfinite, loop.max_skipped, loop.amp)
    backend = compile_backend(loop.compile, "train.compile")
    end = loop.iters if stop_after is None else min(stop_after, loop.iters)
    run = Run.start(out, "train", loop.device, stop, "train_log.jsonl")
    resume_path, state = run.resume_state(lambda: resume_state(out, resume))
    if state is not None:
        check_same_setup(state, cfg, resume_path)
    device, ckpt_dir = run.device, run.ckpt_dir
    amp_dtype = resolve_amp(loop.amp, device, "train.amp")
    seed_everything(loop.seed)
    info = dataset_info(cfg.data.spec)
    model = build_train_model(cfg, info.num_classes).to(device)
    model = run.sync_batchnorm(model, loop.sync_bn)  # type: ignore[assignment]
    memory_format = torch.channels_last if loop.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    train_set, val_set = train_datasets(cfg, run.world)

    optimizer = torch.optim.SGD(
        param_groups(model, loop.weight_decay), lr=loop.lr, momentum=loop.momentum
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

    # -- resume: weights, optimiser, RNG streams, position, log window ----------------------
    start, best_miou, best_iter, own_rng = 0, -math.inf, 0, False
    if state is not None:
        load_train_state(resume_path, state, model, optimizer, scheduler, scaler)
        own_rng = run.restore_rng(state)  # every rank's stream, from a run of `world` ranks
        start, best_miou, best_iter = state["iteration"], state["best_miou"], state["best_iter"]
        guard.skipped = state.get("skipped", 0)
    # Only now, with the whole resume checked, is anything written: a refused resume leaves
    # every file of the run as it was.
    run.write_folder(cfg)
    if run.main:
        save_genotype(model.genotype, out / "genotype.json")
    run.restart_log(None if state is None else lambda r: r.get("iter", 0) <= start)
    if run.rank > 0 and not own_rng:
        seed_everything(loop.seed + 1_000_003 * run.rank + start)  # own dropout / drop-path masks
    net: torch.nn.Module = model
    if run.world > 1:  # after loading: DDP starts every rank from rank 0's parameters and buffers
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if backend is not None:
        # Training forward passes only: validation runs the eager model (eval mode and
        # whole images of other sizes would each compile anew), and checkpoints hold
        # ``model``'s own state-dict keys.
        net = torch.compile(net, backend=backend)
    train_loader, val_loader = train_loaders(
        cfg, train_set, val_set, start, end, run.rank, run.world, device
    )
    run.open_outputs(loop.tensorboard, start + 1, progress, loop.iters, start)

    def checkpoint(name: str, iteration: int, metrics: dict[str, Any]) -> None:
        """Write ``checkpoints/<name>`` (every rank takes part)."""
        parts = (model, optimizer, scheduler, scaler, guard, window, cfg, info)
        save_train_state(run, ckpt_dir / name, iteration, (best_miou, best_iter), metrics, *parts)

    # -- the loop: batch, step, log, evaluate and checkpoint ---------------------------------
    model.train()
    batches = iter(train_loader)
    window = LogWindow(device, guard.skipped)
    if state is not None and "log_window" in state:  # stopped between two log records
        window.restore(state["log_window"], guard.skipped)
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    saved_iter, done, stopped = start, start, False  # saved_iter: the iteration last.pt holds
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
        if run.world > 1:  # this rank's share of the global batch's mean
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
            window.add(loss)
        scaler.update()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        window.images += x.shape[0]
        done = it + 1

        if done % loop.log_every == 0 or done == loop.iters:
            guard.check()  # before a nan loss reaches the log (the sync below is there anyway)
            now = time.perf_counter()
            record = {
                "event": "train",
                "iter": done,
                "loss": window.mean_loss(),  # None: every update here was skipped
                "lr": lr,
                "img_per_s": window.images * run.world / max(now - window.tick, 1e-9),
            }
            if loop.nonfinite == "skip":
                record["skipped"] = guard.skipped - window.skipped_before
            run.log(record, done, _TRAIN_TAGS)
            loss_text = f"{record['loss'] if window.n_loss else float('nan'):.3f}"
            run.progress(0, loss=loss_text, lr=f"{lr:.2e}", img_s=f"{record['img_per_s']:.1f}")
            window.reset(guard.skipped)
        run.progress()

        if done % loop.eval_every == 0 or done == loop.iters:
            guard.check()  # no evaluation (nor its log record) of nan weights
            metrics = _validate(cfg, model, val_loader, info.num_classes, device, amp_dtype, done)
            is_best = metrics["val_miou"] > best_miou  # nan (no valid pixel) is never best
            if is_best:
                best_miou, best_iter = metrics["val_miou"], done
            metrics["best_miou"] = best_miou
            run.log(metrics, done, _VAL_TAGS)
            run.note(f"iter {done}: val mIoU {metrics['val_miou']:.4f} (best {best_miou:.4f})")
            if is_best:
                checkpoint("best.pt", done, metrics)
            checkpoint("last.pt", done, metrics)
            saved_iter, guard.last_checkpoint = done, ckpt_dir / "last.pt"
        # SIGINT/SIGTERM: this iteration is done; last.pt below makes it resumable.
        if done < end and run.should_stop():
            stopped = True
            break

    run.close()
    if saved_iter != done:  # stopped between evaluations (stop_after or a signal)
        checkpoint("last.pt", done, {})
        guard.last_checkpoint = ckpt_dir / "last.pt"
    if done == loop.iters and not call_on_main((ckpt_dir / "best.pt").is_file):  # all nan
        checkpoint("best.pt", done, {"val_miou": best_miou})
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


def _validate(
    cfg: TrainConfig,
    model: torch.nn.Module,
    loader: Any,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    iteration: int,
) -> dict[str, Any]:
    """The eval record at ``iteration``: the whole validation set, summed over ranks."""
    # Under torchrun: rank 0's BN statistics, as DDP's next forward would use (else a no-op).
    broadcast_tensors(list(model.buffers()))
    cm = evaluate(model, loader, num_classes, device, resolve_eval(cfg), amp_dtype=amp_dtype)
    cm.all_reduce()  # the whole validation set (a no-op in one process)
    result = cm.compute()
    return {
        "event": "eval",
        "iter": iteration,
        "val_miou": result["miou"],
        "val_pixel_acc": result["pixel_acc"],
        "val_mean_acc": result["mean_acc"],
    }
