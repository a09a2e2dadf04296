"""The architecture search loop (paper §4.2, §5.1; docs/design.md §3).

It reads top to bottom: set up (the run scaffold of :mod:`autodeeplab.engine.scaffold`, the data
of :mod:`autodeeplab.engine.search.data`, the supernet, the strategy), then for each epoch
and each step: a trainA batch (and, from ``arch_start_epoch`` on, a trainB batch), one step
of the search strategy, the tally and the progress bar; at the end of the epoch:
validation, the log record and the checkpoint. How w and alpha/beta are updated is the
strategy's (``search.strategy``, :mod:`autodeeplab.engine.search.strategies`); the default is the
paper's first-order bi-level DARTS: an SGD step on w with the trainA batch, then an Adam
step on alpha and beta with the trainB batch. trainA and trainB are a seeded random split
of the training set, stored in the run folder. An epoch is one pass over trainA; trainB is
cycled alongside by its own iterator (docs/design.md §12.9).

Every epoch appends a record to ``search_log.jsonl`` (losses, validation mIoU, alpha,
beta, the decoded genotype) and writes an atomic checkpoint holding everything an exact
resume needs: weights, alpha/beta, both optimisers, the scheduler, the epoch, the RNG
states and the split. The data order of an epoch depends only on (seed, epoch), so a
resumed run equals an uninterrupted one.

Under torchrun every rank runs this loop on its slice of each global batch, with the
supernet unwrapped and the gradients of each step averaged by
:func:`~autodeeplab.engine.search.step.search_step` (its docstring says why not DDP); only
rank 0 writes files. SIGINT/SIGTERM stop the run after the current step pair with a
mid-epoch checkpoint that resumes exactly (:mod:`autodeeplab.engine.search.checkpoints`).
Numerical guards: :class:`~autodeeplab.engine.guards.NonFiniteGuard` (``search.nonfinite``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import check_state_dict
from autodeeplab.config import SearchConfig, SearchModelConfig, config_to_dict
from autodeeplab.data import dataset_info
from autodeeplab.distributed import (
    barrier,
    broadcast_object,
    broadcast_tensors,
    check_same_across_ranks,
)
from autodeeplab.engine.guards import NonFiniteGuard, StopRequest, check_loop_options, resolve_amp
from autodeeplab.engine.rng import rng_state, seed_everything, set_rng_state
from autodeeplab.engine.scaffold import Run
from autodeeplab.engine.search.checkpoints import (
    CHECKPOINT_KIND,
    check_same_model,
    check_strategy_state,
    decode_checkpoint,
    epoch_end_path,
    find_latest_checkpoint,
    load_resume_state,
    previous_genotype,
    prune_checkpoints,
    stop_path,
)
from autodeeplab.engine.search.cost_term import CostTerm
from autodeeplab.engine.search.data import SearchData, check_search_crop
from autodeeplab.engine.search.epoch import (
    TENSORBOARD_TAGS,
    EpochTally,
    epoch_record,
    margin_warning,
)
from autodeeplab.engine.search.step import all_finite
from autodeeplab.engine.search.strategies import (
    SearchEnd,
    StrategyContext,
    check_strategy,
    memory_estimate,
)
from autodeeplab.genotype import Genotype
from autodeeplab.space.memory import device_memory_bytes
from autodeeplab.space.network import SearchNetwork

__all__ = [
    "SearchResult",
    "run_search",
    "find_latest_checkpoint",
    "decode_checkpoint",
    "check_search_crop",
    "margin_warning",
    "supernet",
]


def supernet(
    mcfg: SearchModelConfig, num_classes: int, checkpoint_cells: bool = False
) -> SearchNetwork:
    """The supernet ``mcfg`` describes (``checkpoint_cells``: resolved, never ``auto``)."""
    return SearchNetwork(num_classes, spec=mcfg.supernet_spec(), checkpoint_cells=checkpoint_cells)


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
    loop = cfg.search
    last_epoch = loop.epochs if stop_after is None else min(loop.epochs, stop_after)
    with StopRequest() as stop:
        state = _SearchRun(cfg, Path(out_dir), resume, stop)
        try:
            stopped = state.run_epochs(last_epoch, progress)
        finally:
            state.run.close()
        record = state.record
        if last_epoch == loop.epochs and not stopped:
            out = state.run.out if state.run.main else None
            decoded = state.strategy.final_decode(
                SearchEnd(record, state.epochs_done, out, state.data, state.num_classes)
            )
            genotype = decoded.genotype
            if state.run.main:
                from autodeeplab.engine.search.report import write_search_results  # matplotlib

                write_search_results(state.run.out, decoded)
                if record.get("warning"):
                    print(f"warning: {record['warning']}", file=sys.stderr)
        else:
            genotype = state.strategy.decode(loop.path_decode)
        barrier()  # every rank returns once rank 0 has written everything
        return SearchResult(
            genotype=genotype,
            out_dir=state.run.out,
            epochs=state.epochs_done,
            val_miou=float(record.get("val_miou", float("nan"))) if record else float("nan"),
            seconds=time.perf_counter() - start_time,
            stopped=stopped,
            checkpoint=state.last_checkpoint,
            skipped=state.guard.skipped,
        )


class _SearchRun:
    """One search run: set up from the config (and the checkpoint it resumes), then its epochs.

    The set-up order is part of the run's determinism: the seed, then the datasets, then the
    supernet's initial weights, then (on resume) the saved RNG states.
    """

    def __init__(
        self, cfg: SearchConfig, out: Path, resume: str | Path | bool | None, stop: StopRequest
    ) -> None:
        self.cfg, loop = cfg, cfg.search
        check_loop_options("search", loop.nonfinite, loop.max_skipped, loop.amp)
        make_strategy = check_strategy(loop.strategy)
        self.run = run = Run.start(out, "search", loop.device, stop, "search_log.jsonl")
        run.share_batch(loop.batch_size)
        self.resume_path, state = run.resume_state(lambda: load_resume_state(out, resume))
        if state is not None:
            check_same_model(state, cfg, self.resume_path)
            check_strategy_state(state, make_strategy, self.resume_path)
        device = self.device = run.device
        # Before the run folder is written: an amp mode the device lacks is refused up front.
        self.amp_dtype = amp_dtype = resolve_amp(loop.amp, device, "search.amp")
        check_search_crop(cfg)
        seed_everything(loop.seed)
        self.num_classes = dataset_info(cfg.data.spec).num_classes
        self.data = SearchData(
            cfg,
            out,
            None if state is None else state["split"],
            run.rank,
            run.world,
            device,
            weights_on_train_b=not make_strategy.uses_train_b,
        )

        # auto: from the memory estimate for rank 0's device. Every rank must agree: under
        # SyncBatchNorm a recomputed cell runs collectives that the others would not.
        checkpoint_cells = broadcast_object(
            memory_estimate(
                cfg, self.num_classes, device.type, run.world, device_memory_bytes(device.type)
            ).checkpoint_cells
        )
        model = supernet(cfg.model, self.num_classes, checkpoint_cells).to(device)
        self.sync_bn = loop.sync_bn and run.world > 1
        self.model = model = run.sync_batchnorm(model, loop.sync_bn)  # type: ignore[assignment]
        arch_epochs = max(loop.epochs - max(loop.arch_start_epoch, 0), 0)
        if not make_strategy.uses_train_b:  # no architecture steps to skip
            arch_epochs = 0
        self.guard = NonFiniteGuard(
            loop.nonfinite,
            int(loop.max_skipped * (loop.epochs + arch_epochs) * self.data.steps_per_epoch),
            device,
            "search",
            buffers=model.buffers(),
            last_checkpoint=self.resume_path,
            hint="Lower search.lr or search.arch_lr, or set search.grad_clip",
        )
        # The cost term pulls alpha/beta; a strategy without them takes the budget elsewhere.
        relaxed = make_strategy.uses_train_b and loop.target_madds
        self.cost = CostTerm(cfg, model, self.num_classes) if relaxed else None
        self.strategy = make_strategy(
            model, loop, StrategyContext(device, amp_dtype, self.guard, self.cost)
        )
        self._restore(state)
        # Only now, with the whole resume checked, is anything written: a refused resume
        # leaves every file of the run as it was.
        run.write_folder(cfg)
        self.data.save_split()
        first = self.first_epoch
        run.restart_log(None if state is None else lambda r: r.get("epoch", 0) <= first)
        self.record: dict[str, Any] = {}
        self.epochs_done = self.first_epoch
        self.last_checkpoint = self.resume_path

    def _restore(self, state: dict[str, Any] | None) -> None:
        """Load a checkpoint's states (nothing is written), then share rank 0's."""
        self.first_epoch, self.step = 0, 0
        # The epoch position of a mid-epoch checkpoint, and the RNG states it saved.
        self.partial: dict[str, Any] | None = None
        self.saved_rng: dict[str, Any] | None = None
        self.previous_genotype: Genotype | None = None
        if state is not None:
            check_state_dict(self.resume_path, self.model.state_dict(), state["model"], "model")
            self.previous_genotype = previous_genotype(state)
            self.model.load_state_dict(state["model"])
            self.strategy.load_state_dict(state)
            self.run.restore_rng(state)
            self.saved_rng = state["rng"]
            self.first_epoch, self.step = state["epoch"], state["step"]
            self.partial = state.get("partial")
            self.guard.skipped = state.get("skipped", 0)
        # Every rank starts from rank 0's weights, alpha and beta (and BN statistics).
        broadcast_tensors(list(self.model.state_dict().values()))

    def run_epochs(self, last_epoch: int, progress: bool) -> bool:
        """Epochs up to ``last_epoch``, each checkpointed; True if a signal stopped them."""
        run, loop, guard, data = self.run, self.cfg.search, self.guard, self.data
        steps = data.steps_per_epoch
        total, done = loop.epochs * steps, self.first_epoch * steps
        done += self.partial["steps"] if self.partial else 0
        run.open_outputs(loop.tensorboard, self.first_epoch + 1, progress, total, done)
        for epoch in range(self.first_epoch, last_epoch):
            epoch_start = time.perf_counter()
            arch_on = self.strategy.start_epoch(epoch, steps, self.partial is not None)
            self.model.train()
            tally = EpochTally.start(self.device, self.partial, self.num_classes)
            batches_a = data.start_epoch(epoch, tally.steps, arch_on)
            if self.partial is not None:  # resumed mid-epoch: the loader seeds are drawn
                assert self.saved_rng is not None  # a partial state comes from a checkpoint
                set_rng_state(self.saved_rng)
                self.partial = None
            for batch_a in batches_a:
                at = f"epoch {epoch + 1}, step {tally.steps + 1} (iteration {self.step + 1})"
                tally.count_labels(batch_a)
                batch_b = data.next_b() if arch_on else None
                tally.add(self.strategy.step(batch_a, batch_b, at))
                if arch_on:  # Adam cannot be undone: a bad alpha/beta ends the run in either mode
                    arch = self.strategy.arch_parameters()
                    guard.watch(all_finite(arch), f"alpha/beta after the architecture step of {at}")
                self.step += 1
                if self.step % 10 == 0:  # .item() syncs a GPU: do it rarely (CUDA reads the guard)
                    guard.check()
                    if run.bar is not None:
                        run.progress(0, epoch=epoch + 1, loss=f"{tally.mean_w_loss():.3f}")
                run.progress()
                if run.should_stop():  # SIGINT/SIGTERM: this step pair is done
                    self._save_stop(epoch, tally, epoch_start - tally.seconds_before)
                    return True
            self._end_epoch(epoch, arch_on, tally, epoch_start - tally.seconds_before)
            # A signal during validation: the epoch's checkpoint is the place to resume from.
            if self.epochs_done < last_epoch and run.should_stop():
                return True
        return False

    def _save_stop(self, epoch: int, tally: EpochTally, started: float) -> None:
        """Write the checkpoint of a stop in the middle of ``epoch``."""
        # One value per rank would not survive the resume: their mean does.
        tally.average_over_ranks(self.model, self.sync_bn)
        position = tally.position(time.perf_counter() - started)
        self.last_checkpoint = stop_path(self.run.ckpt_dir, epoch + 1, tally.steps)
        genotype = self.strategy.decode(self.cfg.search.path_decode).to_dict()
        self.save(self.last_checkpoint, epoch, {"partial": position, "genotype": genotype})

    def _end_epoch(self, epoch: int, arch_on: bool, tally: EpochTally, started: float) -> None:
        """Close the strategy's epoch, validate, log the epoch's record and write its checkpoint."""
        loop, strategy = self.cfg.search, self.strategy
        tally.average_over_ranks(self.model, self.sync_bn)
        # The strategy's schedules read this epoch's train loss and label counts.
        lr = strategy.end_epoch(tally.losses(arch_on)["train_loss"], tally.class_counts)
        if self.run.world > 1 and strategy.arch_parameters():
            check_same_across_ranks(strategy.arch_parameters(), "alpha/beta")
        self.guard.check()  # no validation, log record or checkpoint of nan weights
        metrics = strategy.validate(self.data, self.num_classes, self.sync_bn)
        genotype = strategy.decode(loop.path_decode)
        arch = strategy.epoch_record(genotype, self.previous_genotype, epoch, arch_on)
        seconds = time.perf_counter() - started
        record = epoch_record(epoch, self.step, tally, metrics, lr, arch_on, seconds, arch, loop)
        self.previous_genotype = genotype
        if self.run.main and self.cost is not None:
            record.update(self.cost.report(genotype))
        self.run.log(record, epoch + 1, TENSORBOARD_TAGS)
        self.run.log_text("search/genotype", genotype.to_json(), epoch + 1)
        self.record = record
        self.last_checkpoint = epoch_end_path(self.run.ckpt_dir, epoch + 1)
        metrics_kept = {k: record[k] for k in ("train_loss", "val_loss", "val_miou")}
        extra = {"genotype": record["genotype"], "metrics": metrics_kept}
        self.save(self.last_checkpoint, epoch + 1, extra)
        self.epochs_done = epoch + 1

    def save(self, path: Path, epochs_done: int, extra: dict[str, Any]) -> None:
        """Write a checkpoint (rank 0), after every rank has checked it holds no inf/nan."""
        strategy_state = self.strategy.state_dict()
        payload = {
            "epoch": epochs_done,
            "step": self.step,
            "model": self.model.state_dict(),
            "model_kwargs": self.model.model_kwargs,
            **strategy_state,
            "rng": rng_state(),
            "split": self.data.split(),
            "config": config_to_dict(self.cfg),
            "skipped": self.guard.skipped,
            "previous_genotype": (
                None if self.previous_genotype is None else self.previous_genotype.to_dict()
            ),
            **extra,
        }
        checked = ("model", *strategy_state, "partial")
        what = f"the search state to be saved as {path.name}"
        checked_state = {k: payload[k] for k in checked if k in payload}
        self.run.save(path, payload, CHECKPOINT_KIND, self.guard, checked_state, what)
        if self.run.main:
            prune_checkpoints(self.run.ckpt_dir, path, self.cfg.search.keep_checkpoints)
        self.guard.last_checkpoint = path
