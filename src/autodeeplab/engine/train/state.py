"""What a training run carries across a checkpoint: the state to resume (``latest.json``'s
checkpoint), the log window, and the checkpoint ``best.pt``/``last.pt`` hold.

A checkpoint holds the weights, optimiser, scheduler, scaler, RNG states (every rank's under
torchrun) and best score, plus ``model_kwargs``, the genotype, the config, class names and
palette, so eval, predict and export need only its path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from autodeeplab.checkpoint import (
    CheckpointError,
    check_finite,
    check_same_settings,
    check_state_dict,
    load_checkpoint,
    read_latest,
    require_keys,
)
from autodeeplab.config import TrainConfig, config_from_dict, config_to_dict
from autodeeplab.data import DatasetInfo
from autodeeplab.distributed import all_reduce_mean, broadcast_tensors
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.rng import rng_state
from autodeeplab.engine.scaffold import Run
from autodeeplab.model import TRAIN_CHECKPOINT_KIND, AutoDeepLab

__all__ = [
    "LogWindow",
    "check_genotype_file",
    "check_same_setup",
    "load_train_state",
    "resume_state",
    "save_train_state",
    "setup_identity",
]


# What a resume reads: a checkpoint without one is refused by name, not with a KeyError.
_RESUME_KEYS = (
    "config", "model", "optimizer", "scheduler", "scaler", "rng", "iteration", "best_miou",
    "best_iter",
)  # fmt: skip


def resume_state(out: Path, resume: str | Path | bool | None) -> tuple[Path | None, Any]:
    """The checkpoint to resume (``resume``: a path, or True for latest.json's) and its state."""
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


#: What a resume must keep: the settings a resumed run shares with the run it continues, so
#: that it equals an uninterrupted one. The schedule's length (train.iters) may grow.
_FIXED_KEYS = ("train.seed", "train.batch_size")
#: Settings that change no result: they may differ on resume.
_FREE_DATA_KEYS = ("num_workers",)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` of a nested dict."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def setup_identity(config: dict[str, Any], genotype: dict[str, Any] | None) -> dict[str, Any]:
    """The settings of a training config a resume must keep, flat; the genotype by content.

    Where the genotype file lives is left out: a run folder that was moved still resumes.
    """
    flat = _flat(config)
    keep = {
        k: v
        for k, v in flat.items()
        if (k.startswith("model.") and k != "model.genotype")
        or (k.startswith("data.") and k[5:] not in _FREE_DATA_KEYS)
        or k in _FIXED_KEYS
    }
    keep["model.genotype (content)"] = genotype
    return keep


def check_genotype_file(cfg: TrainConfig, run_dir: Path) -> None:
    """On resume: a genotype file the config names that is gone is refused with the run's copy.

    The run's config.yaml names the file the run was started with; after a folder was
    moved it may be gone, while the run folder keeps its own copy (``genotype.json``).
    """
    where = cfg.model.genotype
    if where is None or Path(where).exists():
        return
    own = run_dir / "genotype.json"
    advice = f"--genotype {own}" if own.is_file() else "--genotype and the run's genotype file"
    raise FileNotFoundError(
        f"{where}: genotype file not found (the run's config names it; was a folder "
        f"moved?); resume with {advice}"
    )


def _config_genotype(cfg: TrainConfig, path: Path | None) -> dict[str, Any] | None:
    """The genotype ``cfg`` trains, as a dict; a missing file is named with the run's copy."""
    from autodeeplab.genotype import load_genotype
    from autodeeplab.model import MODELS

    if cfg.model.genotype is None:
        preset = MODELS.get(cfg.model.name or "")
        return None if preset is None else preset["genotype"].to_dict()
    if path is not None:
        check_genotype_file(cfg, path.parent.parent)  # path: RUN/checkpoints/last.pt
    return load_genotype(cfg.model.genotype).to_dict()


def check_same_setup(state: dict[str, Any], cfg: TrainConfig, path: Path | None) -> None:
    """Refuse to resume a checkpoint made with another model, data, seed or batch than ``cfg``.

    The genotype is compared by content, not by the path of its file. The error names the
    first setting that differs, both values and how to resume.
    """
    saved = config_from_dict(state["config"], TrainConfig(), where=str(path))
    saved_genotype = state.get("genotype")
    if not isinstance(saved_genotype, dict):  # a checkpoint of before round 2: its config's
        saved_genotype = _config_genotype(saved, None) if saved.model.genotype is None else None
    was = setup_identity(config_to_dict(saved), saved_genotype)
    now = setup_identity(config_to_dict(cfg), _config_genotype(cfg, path))
    if saved_genotype is None:  # nothing to compare the file's genotype with
        was.pop("model.genotype (content)")
        now.pop("model.genotype (content)")
    check_same_settings(path, was, now, "--iters", {"model.genotype": "another genotype"})


def load_train_state(
    path: Path | None,
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> None:
    """Load a checkpoint's weights and optimiser, scheduler and scaler states, checked first."""
    check_state_dict(path, model.state_dict(), state["model"], "model")
    check_finite(path, state["optimizer"], "optimizer")
    model.load_state_dict(state["model"])
    try:  # PyTorch's own errors here name no file, and some are tracebacks deep
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(
            f"{path}: its optimizer, scheduler or scaler state does not fit this "
            f"run ({type(exc).__name__}: {first}); resume from another checkpoint of the run"
        ) from None


class LogWindow:
    """The iterations since the last log record: loss sum, updates, skips, images, time.

    A checkpoint keeps it, so a run resumed mid-window logs what an uninterrupted run would.
    """

    def __init__(self, device: torch.device, skipped: int) -> None:
        self.device = device
        self.reset(skipped)

    def reset(self, skipped: int) -> None:
        """Start a window; ``skipped``: the guard's run total of skipped updates so far."""
        self.loss_sum = torch.zeros((), device=self.device)
        self.n_loss, self.skipped_before = 0, skipped
        self.tick, self.images = time.perf_counter(), 0

    def restore(self, window: dict[str, Any], skipped: int) -> None:
        """Continue the window a stop's checkpoint saved (``skipped``: the restored total)."""
        self.loss_sum += window["loss_sum"].to(self.device)
        self.n_loss, self.skipped_before = window["n_loss"], skipped - window["skipped"]

    def add(self, loss: torch.Tensor) -> None:
        """An applied update's loss (no host sync)."""
        self.loss_sum += loss.detach()
        self.n_loss += 1

    def mean_loss(self) -> float | None:
        """The global batch's mean loss over the window (a collective); None if all skipped."""
        all_reduce_mean(self.loss_sum)  # a no-op in one process
        # .item() syncs a GPU: only when logging.
        return float(self.loss_sum) / self.n_loss if self.n_loss else None

    def state(self, skipped: int) -> dict[str, Any]:
        """For the checkpoint; the ranks' loss sums are averaged, as at a log point."""
        loss_sum = all_reduce_mean(self.loss_sum.detach().clone()).cpu()
        return {
            "loss_sum": loss_sum,
            "n_loss": self.n_loss,
            "skipped": skipped - self.skipped_before,
        }


def save_train_state(
    run: Run,
    path: Path,
    iteration: int,
    best: tuple[float, int],
    metrics: dict[str, Any],
    model: AutoDeepLab,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    guard: NonFiniteGuard,
    window: LogWindow,
    cfg: TrainConfig,
    info: DatasetInfo,
) -> None:
    """Write the checkpoint ``path`` on rank 0; call it on every rank.

    ``best``: the best validation mIoU so far and its iteration. Under torchrun rank 0's
    BatchNorm buffers are sent to all ranks and every rank's RNG state is gathered first.
    """
    if run.world > 1:
        broadcast_tensors(list(model.buffers()))
    rng_ranks = run.rng_streams()
    model_state, opt_state = model.state_dict(), optimizer.state_dict()
    log_window = window.state(guard.skipped)
    payload = {
        "iteration": iteration,
        "best_miou": best[0],
        "best_iter": best[1],
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
        "log_window": log_window,
        **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
    }
    checked = [model_state, opt_state, log_window]
    what = f"the model state at iteration {iteration}"
    run.save(path, payload, TRAIN_CHECKPOINT_KIND, guard, checked, what)
