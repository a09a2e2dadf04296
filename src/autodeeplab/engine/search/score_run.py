"""Score genotypes on a finished search run's supernet (``autodeeplab score``).

The run's newest checkpoint gives the supernet (its weights, and its path edges if the
strategy trained them) and the config; the data are the search's own
(:class:`~autodeeplab.engine.search.data.SearchData` on the checkpoint's trainA/trainB split):
BatchNorm is recalibrated on the first trainA batches and the score taken on val. Any
strategy's supernet is scored the same way; alpha and beta are not read.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from autodeeplab.checkpoint import CheckpointError, check_state_dict, load_checkpoint
from autodeeplab.config import SearchConfig, config_from_dict, supernet_kwargs
from autodeeplab.data import dataset_info
from autodeeplab.engine.device import select_device
from autodeeplab.engine.rng import seed_everything
from autodeeplab.engine.search.checkpoints import CHECKPOINT_KIND, find_latest_checkpoint
from autodeeplab.engine.search.data import SearchData
from autodeeplab.engine.search.score import GenotypeScore, score_genotypes, write_json
from autodeeplab.genotype import Genotype
from autodeeplab.space.network import SearchNetwork

__all__ = ["ScoringRun", "load_scoring_run", "score_run", "write_score_table"]

#: Validation batches kept in memory between genotypes (more are read again for each).
_CACHED_VAL_BATCHES = 256


class _FirstBatches:
    """The first ``count`` batches of a loader, read anew on each pass."""

    def __init__(self, loader: Any, count: int) -> None:
        self.loader, self.count = loader, count

    def __iter__(self) -> Any:
        return itertools.islice(iter(self.loader), self.count)


@dataclass
class ScoringRun:
    """A finished search, ready to score: its supernet, config, data and checkpoint."""

    model: SearchNetwork
    cfg: SearchConfig
    checkpoint: Path
    num_classes: int
    recal: list[Tensor]
    val: Any  # a list of (images, labels) batches, or the val loader
    device: torch.device

    def score(
        self, genotypes: Sequence[Genotype], names: Sequence[str] | None = None
    ) -> list[GenotypeScore]:
        """:func:`~autodeeplab.engine.search.score.score_genotypes` on this run."""
        return score_genotypes(
            self.model,
            genotypes,
            self.recal,
            self.val,
            self.num_classes,
            device=self.device,
            names=names,
        )


def _supernet(
    path: Path, state: dict[str, Any], cfg: SearchConfig, num_classes: int, untrained: bool
) -> Any:
    """The checkpoint's supernet, built from its stored arguments and loaded (``untrained``:
    left at its fresh initialisation, from the global seed)."""
    kwargs = state.get("model_kwargs")
    if not isinstance(kwargs, dict):  # written before checkpoints held them
        kwargs = {"num_classes": num_classes, **supernet_kwargs(cfg.model)}
    try:
        model = SearchNetwork(**{**kwargs, "checkpoint_cells": False})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: its model_kwargs do not build a supernet ({exc}); use a checkpoint "
            "written by 'autodeeplab search'"
        ) from None
    weights = state["model"]
    if isinstance(weights, dict) and any(str(k).startswith("path_edges.") for k in weights):
        model.add_path_edges()
    check_state_dict(path, model.state_dict(), weights, "model")
    if not untrained:
        model.load_state_dict(weights)
    return model


def load_scoring_run(
    run_dir: str | Path,
    *,
    recal_batches: int = 8,
    val_batches: int | None = None,
    seed: int = 0,
    device: str = "auto",
    untrained: bool = False,
) -> ScoringRun:
    """The newest checkpoint of ``run_dir``, its supernet on ``device``, and its data.

    ``recal_batches``: trainA batches (of the search's batch size) BatchNorm is recomputed
    on before each score; ``val_batches``: the first so many val batches (None: all).
    ``untrained``: the same supernet freshly initialised from ``seed`` instead of trained,
    the control of a ranking measurement: what the score says of a genotype before any
    supernet training (its structure alone).
    """
    run_dir = Path(run_dir)
    if recal_batches < 1 or (val_batches is not None and val_batches < 1):
        raise ValueError(
            f"recal_batches ({recal_batches}) and val_batches ({val_batches}) must be >= 1"
        )
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such folder; give the --out of a search")
    path = find_latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(
            f"{run_dir / 'checkpoints'}: no complete search checkpoint; give the --out folder "
            "of an 'autodeeplab search' that finished an epoch"
        )
    state = load_checkpoint(path, CHECKPOINT_KIND, required=("config", "model", "split"))
    cfg = config_from_dict(state["config"], SearchConfig(), where=str(path))
    num_classes = dataset_info(cfg.data.spec).num_classes
    dev = select_device(device)
    seed_everything(seed)
    model = _supernet(path, state, cfg, num_classes, untrained).to(dev)
    # The search's own data on the checkpoint's split; SearchData writes its split.json to
    # a scratch folder, so the run folder stays as it was.
    with tempfile.TemporaryDirectory(prefix="autodeeplab-score-") as scratch:
        data = SearchData(cfg, Path(scratch), state["split"], 0, 1, dev)
    recal = data.recalibration_batches(recal_batches)
    if not recal:
        raise ValueError(f"{run_dir}: trainA holds no whole batch to recalibrate BatchNorm on")
    limit = len(data.loader_val) if val_batches is None else min(val_batches, len(data.loader_val))
    val: Any = _FirstBatches(data.loader_val, limit)
    if limit <= _CACHED_VAL_BATCHES:  # read (and transform) the val images once
        val = list(val)
    return ScoringRun(model, cfg, path, num_classes, recal, val, dev)


def score_run(
    run_dir: str | Path,
    genotypes: Sequence[Genotype],
    *,
    recal_batches: int = 8,
    val_batches: int | None = None,
    seed: int = 0,
    device: str = "auto",
    names: Sequence[str] | None = None,
    untrained: bool = False,
) -> list[GenotypeScore]:
    """Score ``genotypes`` on the supernet of the finished search in ``run_dir``.

    Deterministic given ``seed`` (on the CPU). See :func:`load_scoring_run` (``untrained``:
    the control, the same supernet freshly initialised).
    """
    run = load_scoring_run(
        run_dir,
        recal_batches=recal_batches,
        val_batches=val_batches,
        seed=seed,
        device=device,
        untrained=untrained,
    )
    return run.score(genotypes, names)


def _cell_text(genotype: Genotype) -> str:
    return " | ".join(" + ".join(f"{op}({i})" for op, i in block) for block in genotype.cell)


def write_score_table(
    out_dir: str | Path,
    scores: Sequence[GenotypeScore],
    meta: dict[str, Any],
    madds: dict[str, int] | None = None,
) -> Path:
    """``scores.json`` and ``scores.md`` in ``out_dir``, best (lowest val CE) first.

    ``meta``: how the scores were taken (run, checkpoint, batches, seed), written beside
    them; ``madds``: Multi-Adds by score name, where known. Returns the Markdown file.
    """
    out = Path(out_dir)
    ranked = sorted(scores, key=lambda s: s.val_loss)
    madds = madds or {}
    rows = [{**s.to_dict(), "rank": k, "madds": madds.get(s.name)} for k, s in enumerate(ranked, 1)]
    write_json(out / "scores.json", {**meta, "scores": rows})
    lines = [
        f"# Scores on the supernet of {meta.get('run', '?')}",
        "",
        f"Checkpoint {meta.get('checkpoint', '?')}; BatchNorm recalibrated on "
        f"{meta.get('recal_batches', '?')} trainA batches per genotype, then val cross-entropy "
        f"and mIoU of its single path (H^(l-2) of level changes: {meta.get('prev_prev', '?')}). "
        "Lower val CE is better.",
        "",
        "| rank | name | val CE | val mIoU % | pixel acc % | Multi-Adds | path | cell |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row, s in zip(rows, ranked, strict=True):
        m = row["madds"]
        lines.append(
            f"| {row['rank']} | {s.name} | {s.val_loss:.4f} | {100 * s.val_miou:.2f} | "
            f"{100 * s.val_pixel_acc:.2f} | {'' if m is None else f'{m / 1e9:.3g}G'} | "
            f"{list(s.genotype.path)} | {_cell_text(s.genotype)} |"
        )
    md = out / "scores.md"
    tmp = md.with_name(".scores.md.tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(md)
    finally:
        tmp.unlink(missing_ok=True)
    return md
