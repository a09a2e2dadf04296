"""The run scaffold the search and the training loops stand on.

Both loops read top to bottom on it, as nanoGPT's ``train.py`` does. Set up:
:meth:`Run.start` joins torchrun (a no-op in one process) on the configured device,
:meth:`Run.resume_state` has rank 0 read the checkpoint to resume and send it to the others
(on several nodes only its disk holds the run), :meth:`Run.write_folder` writes the resolved
``config.yaml``, :meth:`Run.restore_rng` puts the saved RNG streams back and
:meth:`Run.restart_log` cuts the log back to the checkpoint. Then for each step: batch,
step, :meth:`Run.log` (one JSON line, TensorBoard scalars) and :meth:`Run.progress` (the
tqdm bar), and :meth:`Run.save` (every rank checks the state finite, rank 0 writes it
atomically and names it in ``latest.json``). :meth:`Run.should_stop` answers SIGINT/SIGTERM
the same on every rank. The guards themselves (:class:`~autodeeplab.engine.guards.StopRequest`,
:class:`~autodeeplab.engine.guards.NonFiniteGuard`) are in :mod:`autodeeplab.engine.guards`;
seeding and RNG capture in :mod:`autodeeplab.engine.rng`, the JSONL logs in
:mod:`autodeeplab.engine.logs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autodeeplab.checkpoint import save_checkpoint
from autodeeplab.config import save_config
from autodeeplab.distributed import all_gather_object, call_on_main, init_distributed
from autodeeplab.engine.device import select_device
from autodeeplab.engine.guards import NonFiniteGuard, StopRequest
from autodeeplab.engine.logs import append_jsonl, truncate_jsonl
from autodeeplab.engine.rng import rng_state, set_rng_state

__all__ = ["Run"]

#: What a resume loads: the checkpoint's path and contents, or ``(None, None)`` for a fresh run.
ResumeState = tuple[Path | None, dict[str, Any] | None]


@dataclass
class Run:
    """One run's plumbing: its folder, this process's place in torchrun, its log outputs."""

    out: Path
    section: str  # the config section ("search", "train"), named in errors and the bar
    device: torch.device
    world: int
    rank: int
    main: bool  # rank 0: the only process that writes files
    stop: StopRequest
    log_path: Path
    writer: Any = None  # TensorBoard's SummaryWriter (rank 0, when enabled)
    bar: Any = None  # tqdm (rank 0, when enabled)

    @classmethod
    def start(cls, out: Path, section: str, device: str, stop: StopRequest, log_name: str) -> Run:
        """Join torchrun (a no-op in one process) on ``device`` (``auto``, ``cpu``, ``cuda``)."""
        info = init_distributed(select_device(device))
        rank, world = info.rank, info.world_size
        return cls(out, section, info.device, world, rank, info.is_main, stop, out / log_name)

    @property
    def ckpt_dir(self) -> Path:
        """The folder of the run's checkpoints."""
        return self.out / "checkpoints"

    def share_batch(self, batch_size: int) -> int:
        """Images per process of a global batch; ValueError if the ranks cannot share it."""
        if batch_size % self.world:
            raise ValueError(
                f"{self.section}.batch_size={batch_size} cannot be shared by {self.world} "
                f"processes; use a multiple of {self.world} (each process takes batch_size / "
                f"{self.world})"
            )
        return batch_size // self.world

    def resume_state(self, load: Callable[[], ResumeState]) -> ResumeState:
        """``load()`` on rank 0, its result (or its exception) on every rank."""
        return call_on_main(load)

    def write_folder(self, cfg: Any) -> None:
        """Rank 0 creates the run folder and writes the resolved config (``config.yaml``)."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")

    def sync_batchnorm(self, model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
        """``model`` with SyncBatchNorm under torchrun when ``enabled`` (CUDA only)."""
        if not (enabled and self.world > 1):
            return model
        if self.device.type != "cuda":
            raise ValueError(
                f"{self.section}.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU "
                f"kernel); set {self.section}.sync_bn=false"
            )
        # Keeps the parameter objects and state-dict keys: checkpoints load into plain BN.
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def restore_rng(self, state: dict[str, Any]) -> bool:
        """Set the RNG streams a checkpoint saved; True if this rank's own stream was there.

        A checkpoint of a run with as many ranks keeps every rank's stream (``rng_ranks``);
        otherwise every rank takes rank 0's (``rng``).
        """
        streams = state.get("rng_ranks")
        own = streams[self.rank] if streams is not None and len(streams) == self.world else None
        set_rng_state(own if own is not None else state["rng"])
        return own is not None

    def rng_streams(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG state in rank order (a collective), or None in one process."""
        return all_gather_object(rng_state()) if self.world > 1 else None

    def restart_log(self, keep: Callable[[dict[str, Any]], bool] | None) -> None:
        """Cut the log to the records ``keep`` accepts (a resume), or start it empty (None).

        Records written after the resumed checkpoint (a run killed in between) are redone.
        """
        if not self.main:
            return
        if keep is not None:
            truncate_jsonl(self.log_path, keep)
        elif self.log_path.exists():
            self.log_path.unlink()

    def open_outputs(
        self, tensorboard: bool, purge_step: int, progress: bool, total: int, initial: int
    ) -> None:
        """TensorBoard (dropping events past ``purge_step``) and the progress bar, on rank 0."""
        if tensorboard and self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge_step)
        if progress and self.main:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=self.section, unit="it", dynamic_ncols=True
            )

    def log(self, record: dict[str, Any], step: int, tags: dict[str, str]) -> None:
        """Append ``record`` to the JSONL log, and its finite ``tags`` (key: tag) to TensorBoard."""
        if self.main:
            append_jsonl(self.log_path, record)
        if self.writer is None:
            return
        for key, tag in tags.items():
            value = record.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_text(self, tag: str, text: str, step: int) -> None:
        """A text entry in TensorBoard (markdown: a line break needs two spaces)."""
        if self.writer is not None:
            self.writer.add_text(tag, text.replace("\n", "  \n"), step)
            self.writer.flush()

    def progress(self, steps: int = 1, **postfix: Any) -> None:
        """Advance the bar by ``steps``, showing ``postfix`` (e.g. the loss) when given."""
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix(**postfix)
        if steps:
            self.bar.update(steps)

    def note(self, text: str) -> None:
        """A line above the bar (rank 0, with a bar)."""
        if self.bar is not None:
            self.bar.write(text)

    def save(
        self,
        path: Path,
        payload: dict[str, Any],
        kind: str,
        guard: NonFiniteGuard,
        checked: Any,
        what: str,
    ) -> None:
        """Write a checkpoint atomically (rank 0) once every rank has found ``checked`` finite.

        Every rank checks (and they agree), so no rank is left waiting if this raises.
        """
        guard.check_state(checked, what)
        if self.main:
            save_checkpoint(path, payload, kind)

    def should_stop(self) -> bool:
        """Whether SIGINT/SIGTERM asked to stop; under torchrun every rank gets the same answer."""
        return self.stop.should_stop(self.device)

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
