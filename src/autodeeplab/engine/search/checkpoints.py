"""The checkpoint files of a search run: their names, which is newest, pruning, resuming and
decoding a genotype from one.

A search writes ``checkpoints/epoch_EEEE.pt`` at the end of epoch E and, when a signal stops
it mid-epoch, ``checkpoints/epoch_EEEE_step_SSSSSS.pt`` (step S of epoch E, both 1-based).

Stopping mid-epoch: SIGINT/SIGTERM finish the current w step + arch step pair, then write
the step checkpoint and return with ``stopped=True``; nothing else is written (no
genotype.json, no report). That checkpoint holds the epoch's position: the steps done, the
partial loss sums, the RNG states, and (through the step count) the trainB position, since
trainB yields one batch per step from the start of the epoch. A resume rebuilds both data
iterators, skips the indices already used (without loading them), and restores the RNG state
after making the iterators, because making a DataLoader iterator draws a seed from the
global RNG. The epoch then continues exactly where it stopped, and its record is written
once, when it completes. (With ``data.num_workers`` > 0 the workers of the resumed epoch get
new seeds and a shifted batch -> worker assignment; only augmentation of real data draws
from them, the synthetic data does not.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from autodeeplab.checkpoint import (
    CheckpointError,
    check_finite,
    check_same_settings,
    load_checkpoint,
    require_keys,
)
from autodeeplab.config import (
    SearchConfig,
    SearchModelConfig,
    config_from_dict,
    config_to_dict,
    supernet_kwargs,
)
from autodeeplab.engine.search.strategies import STRATEGIES
from autodeeplab.genotype import Genotype
from autodeeplab.space.decode import decode, path_margin
from autodeeplab.space.network import beta_probabilities, cell_decode_weights

__all__ = [
    "CHECKPOINT_KIND",
    "epoch_end_path",
    "stop_path",
    "prune_checkpoints",
    "find_latest_checkpoint",
    "load_resume_state",
    "check_same_model",
    "check_strategy_state",
    "previous_genotype",
    "decode_checkpoint",
]

CHECKPOINT_KIND = "search"

_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.pt$")

# What the loop reads to resume: a checkpoint without one is refused by name, not with a
# KeyError (the strategy's own entries: check_strategy_state).
_RESUME_KEYS = ("config", "model", "w_optimizer", "rng", "epoch", "step", "split")


def epoch_end_path(ckpt_dir: Path, epochs_done: int) -> Path:
    """The checkpoint written at the end of epoch ``epochs_done`` (1-based)."""
    return ckpt_dir / f"epoch_{epochs_done:04d}.pt"


def stop_path(ckpt_dir: Path, epoch: int, steps: int) -> Path:
    """The checkpoint of a stop after ``steps`` steps of epoch ``epoch`` (both 1-based)."""
    return ckpt_dir / f"epoch_{epoch:04d}_step_{steps:06d}.pt"


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


def prune_checkpoints(ckpt_dir: Path, newest: Path, keep: int) -> None:
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
            state = load_checkpoint(path, CHECKPOINT_KIND)
            check_finite(path, state.get("model"), "model")  # never "the last good one"
        except (CheckpointError, OSError):
            continue
        return path
    return None


def load_resume_state(
    out_dir: Path, resume: str | Path | bool | None
) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its contents; ``(None, None)`` for a fresh run.

    ``resume``: a checkpoint path, or True for the newest complete one in ``out_dir``.
    """
    if not resume:
        return None, None
    path = find_latest_checkpoint(out_dir) if resume is True else Path(resume)
    if path is None:
        raise FileNotFoundError(
            f"{out_dir / 'checkpoints'}: no complete search checkpoint to resume; start afresh "
            "without --resume (add --overwrite if the folder holds a run killed before one)"
        )
    return path, load_checkpoint(path, CHECKPOINT_KIND, required=_RESUME_KEYS)


def _model_kwargs(path: str | Path, state: dict[str, Any], cfg: SearchConfig) -> dict[str, Any]:
    """The supernet's keyword arguments the checkpoint stores; its config's before round 3."""
    kwargs = state.get("model_kwargs")
    if kwargs is None:  # written before checkpoints held them: the config's model section
        return supernet_kwargs(cfg.model)
    if not isinstance(kwargs, dict) or not {"num_blocks", "strides", "primitives"} <= set(kwargs):
        raise CheckpointError(
            f"{path}: model_kwargs does not hold the supernet's num_blocks, strides and "
            "primitives; use a checkpoint written by 'autodeeplab search'"
        )
    return kwargs


#: Loop settings a resume must keep: they fix the split (seed, fraction) and the data order,
#: so a resumed search equals an uninterrupted one. The epochs may grow (an extension).
_FIXED_LOOP_KEYS = ("seed", "split_fraction", "batch_size", "strategy")


def _model_identity(mcfg: SearchModelConfig) -> dict[str, Any]:
    """The model config less the switches that change no result (``checkpoint_cells``)."""
    return {k: v for k, v in config_to_dict(mcfg).items() if k != "checkpoint_cells"}


def _run_identity(cfg: SearchConfig) -> dict[str, Any]:
    """What a resume must keep, flat: the model, the data (less its workers), the split."""
    found = {f"model.{k}": v for k, v in _model_identity(cfg.model).items()}
    data = config_to_dict(cfg.data)
    found.update({f"data.{k}": v for k, v in data.items() if k != "num_workers"})
    loop = config_to_dict(cfg.search)
    found.update({f"search.{k}": loop[k] for k in _FIXED_LOOP_KEYS})
    return found


def check_same_model(state: dict[str, Any], cfg: SearchConfig, path: Path | None) -> None:
    """Refuse to resume a checkpoint made with another search strategy, supernet, data, seed
    or split than ``cfg``.

    The error names the first setting that differs with both values, and how to resume.
    """
    saved = config_from_dict(state["config"], SearchConfig(), where=str(path))
    if saved.search.strategy != cfg.search.strategy:
        raise CheckpointError(
            f"{path}: checkpoint was written by search.strategy={saved.search.strategy}, not "
            f"{cfg.search.strategy}; resume with --set search.strategy="
            f"{saved.search.strategy}, or search into a fresh --out folder"
        )
    # checkpoint_cells trades time for memory and changes no result: it may differ.
    check_same_settings(path, _run_identity(saved), _run_identity(cfg), "--epochs")


def check_strategy_state(state: dict[str, Any], strategy: Any, path: Path | None) -> None:
    """Refuse a checkpoint that lacks an entry of ``strategy``'s state (its class)."""
    require_keys(state, path or "checkpoint", getattr(strategy, "checkpoint_keys", ()))


def previous_genotype(state: dict[str, Any]) -> Genotype | None:
    """The genotype of the epoch before the checkpoint's position (for the changes count)."""
    if state.get("previous_genotype") is not None:
        return Genotype.from_dict(state["previous_genotype"])
    if state.get("genotype") is not None and "partial" not in state:  # before round 2
        return Genotype.from_dict(state["genotype"])
    return None


def decode_checkpoint(
    path: str | Path, path_decode: str | None = None
) -> tuple[Genotype, dict[str, Any]]:
    """Decode the genotype of a search checkpoint without building the supernet.

    The architecture's shape (num_blocks, strides, primitives) comes from the supernet's
    keyword arguments stored in the checkpoint (from its config for older checkpoints).

    ``path_decode``: ``relative`` or ``literal`` (docs/design.md §12.10); None: the run's own.
    """
    state = load_checkpoint(path, CHECKPOINT_KIND, required=("config", "model", "epoch"))
    cfg = config_from_dict(state["config"], SearchConfig(), where=str(path))
    strategy = STRATEGIES.get(cfg.search.strategy)
    if strategy is not None and not strategy.uses_train_b:
        raise CheckpointError(
            f"{path}: written by search.strategy={cfg.search.strategy}, which learns no alpha or "
            "beta to decode; its genotype is the finished run's genotype.json (the best of "
            "candidates.json), or score networks on it with 'autodeeplab score RUN_DIR'"
        )
    weights = state["model"]
    if not isinstance(weights, dict) or not isinstance(weights.get("alpha"), torch.Tensor):
        raise CheckpointError(f"{path}: 'model' holds no alpha tensor; use a search checkpoint")
    if not isinstance(weights.get("beta"), torch.Tensor):
        raise CheckpointError(f"{path}: 'model' holds no beta tensor; use a search checkpoint")
    arch = {k: weights[k] for k in ("alpha", "beta", "gamma") if k in weights}
    check_finite(path, arch, "model")
    alpha, beta = weights["alpha"], weights["beta"]
    mode = path_decode or cfg.search.path_decode
    kwargs = _model_kwargs(path, state, cfg)
    num_blocks, primitives = kwargs["num_blocks"], tuple(kwargs["primitives"])
    try:
        beta_w = beta_probabilities(beta, len(kwargs["strides"]))
        # With partial channels (PC-DARTS) the edge choice also weighs the edge weights gamma.
        cell_w = cell_decode_weights(alpha, weights.get("gamma"), num_blocks)
        genotype = decode(cell_w, beta_w, primitives, num_blocks, mode)
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arch.items() if hasattr(v, "shape"))
        raise CheckpointError(
            f"{path}: the architecture weights ({shapes}) do not fit the checkpoint's config "
            f"({first}); use a checkpoint written by 'autodeeplab search'"
        ) from None
    info = {
        "epoch": state["epoch"],
        "beta_weights": beta_w,
        "config": cfg,
        "path_decode": mode,
        "path_margin": path_margin(beta_w, mode),
        # Whether alpha/beta ever learnt: the schedule says (from round 2 on); before it,
        # they did once an epoch past arch_start_epoch had run.
        "arch_updated": (
            state["arch_schedule"]["started_epoch"] is not None
            if isinstance(state.get("arch_schedule"), dict)
            else state["epoch"] > cfg.search.arch_start_epoch
        ),
    }
    return genotype, info
