"""``autodeeplab run``: search -> decode -> retrain -> evaluate -> report, in one folder.

``OUT/search`` is a search run (genotype.json and its figures), ``OUT/train`` a training run
of the decoded genotype (checkpoints, log, metrics.json), ``OUT/predictions`` a few
validation images with their ground truth and prediction, and ``OUT/report.md`` ties them
together with the mIoU reached next to the chance level of the same labels.

Overrides name their stage first: ``search.<key>`` goes to the search config and
``train.<key>`` to the training config, e.g. ``search.epochs=2``, ``search.model.num_layers=4``
or ``train.iters=50``. A bare key that the stage's own loop section holds means that one
(``train.batch_size`` is the training batch, not the evaluation's); the long spelling
``search.search.epochs=2`` still works.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from autodeeplab.config import SearchConfig, SearchLoopConfig, TrainConfig, TrainLoopConfig
from autodeeplab.engine.device import select_device
from autodeeplab.engine.infer.evaluate import chance_level, evaluate_checkpoint
from autodeeplab.engine.infer.predict import predict_samples
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.pipeline_report import write_report
from autodeeplab.engine.search.loop import find_latest_checkpoint, run_search
from autodeeplab.engine.train.data import split_dataset
from autodeeplab.engine.train.loop import run_train
from autodeeplab.engine.train.model import with_genotype
from autodeeplab.model import count_multiply_adds, count_parameters, load_trained_model
from autodeeplab.viz.run_report import plot_training_curves, prediction_strip

__all__ = ["STAGES", "PipelineResult", "run_pipeline", "split_overrides"]

STAGES = ("search", "train")
# Each stage's loop section has the stage's name: its keys are what a bare key names first.
_LOOP_KEYS = {
    "search": {f.name for f in fields(SearchLoopConfig)},
    "train": {f.name for f in fields(TrainLoopConfig)},
}


@dataclass
class PipelineResult:
    """Where the run's report is and what it found."""

    out_dir: Path
    report: Path | None  # None when stopped early
    miou: float
    chance_miou: float
    seconds: float
    stopped: str | None = None  # the stage SIGINT/SIGTERM ended ("search" or "train")


def split_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """Route ``search.<key>=v`` / ``train.<key>=v`` to their stage, without the prefix."""
    routed: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for text in overrides:
        stage, dot, rest = text.partition(".")
        if stage not in routed or not dot or "=" not in rest:
            raise ValueError(
                f"--set {text!r}: prefix the key with its stage, e.g. "
                "--set search.epochs=2 or --set train.iters=50"
            )
        key = rest.partition("=")[0].strip()
        routed[stage].append(f"{stage}.{rest}" if key in _LOOP_KEYS[stage] else rest)
    return routed


def run_pipeline(
    search_cfg: SearchConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    num_strips: int = 4,
    resume: bool = False,
) -> PipelineResult:
    """Search, retrain the decoded network, evaluate it and write ``out_dir/report.md``.

    With ``resume`` each stage continues from its newest complete checkpoint in ``out_dir``
    (a stage with none starts afresh), so a killed or stopped run loses at most the work
    since its last checkpoint. SIGINT/SIGTERM end the run after the current step with a
    checkpoint; the result then names the stage in ``stopped`` and has no report.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    search_resume = resume and find_latest_checkpoint(out / "search") is not None
    search = run_search(search_cfg, out / "search", resume=search_resume, progress=progress)
    t_search = time.perf_counter() - t0
    if search.stopped:
        return PipelineResult(out, None, math.nan, math.nan, t_search, stopped="search")

    tcfg = with_genotype(train_cfg, out / "search" / "genotype.json")
    train_resume = resume and (out / "train" / "checkpoints" / "last.pt").is_file()
    train = run_train(tcfg, out / "train", resume=train_resume, progress=progress)
    if train.stopped:
        seconds = time.perf_counter() - t0
        return PipelineResult(out, None, math.nan, math.nan, seconds, stopped="train")
    t_train = time.perf_counter() - t0 - t_search

    metrics = evaluate_checkpoint(
        train.best_checkpoint, device=tcfg.train.device, out=out / "train" / "metrics.json"
    )
    val_set = split_dataset(tcfg, "val")  # without the longest-side resize: as stored
    loader = torch.utils.data.DataLoader(val_set, batch_size=1, shuffle=False)
    chance = chance_level(loader, len(metrics["per_class"]))

    device = select_device(tcfg.train.device)
    model, state = load_trained_model(train.best_checkpoint, device)
    strips = []
    for i, (image, truth, pred) in enumerate(predict_samples(model, val_set, num_strips, device)):
        path = out / "predictions" / f"val_{i:02d}.png"
        strips.append(prediction_strip(image, truth, pred, state["palette"], path))
    curves = plot_training_curves(
        read_jsonl(out / "train" / "train_log.jsonl"),
        out / "training_curves.png",
        chance["chance_miou"],
    )
    crop = tcfg.data.crop
    multiply_adds = {
        f"{crop}x{crop}": count_multiply_adds(model, (crop, crop)),
        "1025x2049": count_multiply_adds(model, (1025, 2049)),
    }
    facts: dict[str, Any] = {
        "genotype": search.genotype.to_dict(),
        "figures": (out / "search" / "genotype_path.png", out / "search" / "genotype_cell.png"),
        "curves": curves,
        "strips": strips,
        "metrics": metrics,
        "chance": chance,
        "parameters": count_parameters(model),
        "multiply_adds": multiply_adds,
        "search": {
            "num_layers": search_cfg.model.num_layers,
            "num_blocks": search_cfg.model.num_blocks,
            "filter_multiplier": search_cfg.model.filter_multiplier,
            "epochs": search_cfg.search.epochs,
            "crop": search_cfg.data.crop,
            "batch_size": search_cfg.search.batch_size,
            "val_miou": search.val_miou,
        },
        "train": {
            "filter_multiplier": model.filter_multiplier,
            "iters": tcfg.train.iters,
            "batch_size": tcfg.train.batch_size,
            "crop": crop,
            "lr": tcfg.train.lr,
            "momentum": tcfg.train.momentum,
            "poly_power": tcfg.train.poly_power,
            "weight_decay": tcfg.train.weight_decay,
        },
    }
    t_report = time.perf_counter() - t0 - t_search - t_train
    facts["seconds"] = {
        "search": t_search,
        "train": t_train,
        "report": t_report,
        "total": time.perf_counter() - t0,
    }
    report = write_report(out / "report.md", facts)
    return PipelineResult(
        out_dir=out,
        report=report,
        miou=metrics["miou"],
        chance_miou=chance["chance_miou"],
        seconds=time.perf_counter() - t0,
    )
