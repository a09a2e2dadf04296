"""Does the search help on this data? The searched network against random ones (``compare``).

A search is worth running only if the network it finds beats what a user gets without
searching. :func:`run_compare` retrains, under one schedule:

- the searched genotype, with ``searched_seeds`` seeds;
- ``num_random`` random genotypes (:func:`~autodeeplab.genotype.random_genotype`: cells
  without 'none', paths uniform over the valid ones) whose Multi-Adds at ``size`` are within
  ``tolerance`` of the searched network's, so that a win is not bought with compute;
- two references, with the searched network's seeds: the searched cell on a hand-made
  DeepLabv3-like path (down to stride 16 by the fourth layer, then staying there:
  [0, 0, 0, 1, 2, 2, ...]) and the paper's genotype.

Each network is chosen on val (the best checkpoint of its retraining) and reported on the
test split where it exists on disk and has labels, else on val (``report_split``). Each
retraining is its own run folder under ``out/runs/NAME``: a rerun skips the finished ones
(``result.json``) and resumes an interrupted one from its checkpoint, so the comparison
can be stopped and continued. Several ``compare`` processes may share one ``out`` (one
per core or GPU): each network's folder is locked while it retrains, a process skips the
locked ones and, at the end, waits for them (or retrains one whose process died). ``out``
gets compare.json, compare.md and compare.png (mIoU against Multi-Adds).

Nothing is trusted that is read back. Before the first retraining
(:mod:`~autodeeplab.engine.compare.validate`): the search finished and its genotype is what
its last checkpoint decodes to, in the space its config.yaml describes; the split to report
on has labels; an existing ``out`` was made by the same search, data, schedule and seeds
(``compare_manifest.json``), and each result in it matches the digest of what produced it
(:mod:`~autodeeplab.engine.compare.results`). ``reuse`` takes earlier comparisons' checked
results (:mod:`~autodeeplab.engine.compare.reuse`); :mod:`~autodeeplab.engine.compare.summary`
writes what the comparison says.

Whether the search *can* help is measured beside it
(:mod:`~autodeeplab.engine.compare.ranking_report`): every genotype is scored on the search
run's supernet after those checks and before the first retraining
(:mod:`~autodeeplab.engine.compare.scores`), and compare.md/json get Kendall tau and
Spearman rho between score and retrained mIoU, the searched network's percentile in the
random cloud, the seed noise (``seed_noise``: 3 random genotypes x 3 seeds) and the
retrainings that collapsed, which are left out of these statistics.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodeeplab.config import TrainConfig
from autodeeplab.data import dataset_info
from autodeeplab.engine.compare.plan import (
    CompareEntry,
    check_counts,
    handmade_path,
    plan_compare,
    seed_noise_entries,
)
from autodeeplab.engine.compare.ranking_report import measure_ranking, run_health
from autodeeplab.engine.compare.results import (
    RESULT_NAME,
    best_checkpoint,
    entry_config,
    mismatch,
    read_result,
    seal,
    with_seed,
    write_json,
)
from autodeeplab.engine.compare.reuse import (
    find_reusable,
    finished_runs,
    is_locked,
    network_lock,
    reuse_earlier,
)
from autodeeplab.engine.compare.scores import (
    SCORES_NAME,
    UNTRAINED_SCORES_NAME,
    Scorer,
    score_or_why,
)
from autodeeplab.engine.compare.summary import COMPARE_FILES, summarise, write_comparison
from autodeeplab.engine.compare.validate import (
    MANIFEST_NAME,
    check_finished,
    check_out,
    check_search,
    choose_report_split,
    manifest,
)
from autodeeplab.engine.infer.evaluate import evaluate_checkpoint
from autodeeplab.engine.train.loop import run_train
from autodeeplab.engine.train.model import build_train_model
from autodeeplab.model.complexity import count_parameters

__all__ = [
    "CompareEntry",
    "CompareResult",
    "find_reusable",
    "finished_runs",
    "handmade_path",
    "plan_compare",
    "run_compare",
    "summarise",
]


@dataclass
class CompareResult:
    """What :func:`run_compare` leaves behind."""

    out_dir: Path
    results: list[dict[str, Any]]
    summary: dict[str, Any]
    stopped: bool = False


def train_and_evaluate(
    cfg: TrainConfig, folder: Path, split: str, progress: bool
) -> tuple[dict[str, Any], Path] | None:
    """Retrain one network into ``folder/train`` (resuming it) and score its best checkpoint.

    Returns the scores and the checkpoint they come from; None if a signal stopped it.
    """
    train_dir = folder / "train"
    resume = (train_dir / "checkpoints" / "last.pt").is_file()
    trained = run_train(cfg, train_dir, resume=resume, progress=progress)
    if trained.stopped:
        return None
    metrics = evaluate_checkpoint(
        trained.best_checkpoint,
        split=split,
        device=cfg.train.device,
        out=folder / f"metrics_{split}.json",
    )
    scores = {
        "val_miou": trained.best_miou,
        "best_iteration": trained.best_iteration,
        f"{split}_miou": metrics["miou"],
        "miou": metrics["miou"],
    }
    return scores, trained.best_checkpoint


def _run_entry(
    entry: CompareEntry,
    tcfg: TrainConfig,
    folder: Path,
    split: str,
    num_classes: int,
    progress: bool,
) -> dict[str, Any] | None:
    """Retrain, evaluate and record one network; None if a signal stopped its training."""
    cfg = entry_config(entry, tcfg, folder)
    start = time.perf_counter()
    done = train_and_evaluate(cfg, folder, split, progress)
    if done is None:
        return None
    scores, checkpoint = done
    result = {
        "name": entry.name,
        "kind": entry.kind,
        "seed": entry.seed,
        "genotype": entry.genotype.to_dict(),
        "madds": entry.madds,
        "parameters": count_parameters(build_train_model(cfg, num_classes)),
        **scores,
        "split": split,
        "seconds": time.perf_counter() - start,
    }
    seal(result, entry.genotype, cfg, checkpoint)
    write_json(folder / RESULT_NAME, result)
    return result


def _retrain(
    i: int,
    entry: CompareEntry,
    entries: list[CompareEntry],
    spent: list[float],
    tcfg: TrainConfig,
    out: Path,
    split: str,
    num_classes: int,
    progress: bool,
) -> bool:
    """Retrain one network with a progress line; False if a signal stopped it."""
    folder = out / "runs" / entry.name
    folders = (out / "runs" / e.name for e in entries)
    unfinished = [f for f in folders if not (f / RESULT_NAME).is_file()]
    # The networks left are shared by every compare process on this --out: those retraining
    # one now (this one included, which holds its lock) divide the time.
    workers = max(1, sum(is_locked(f) for f in unfinished))
    eta = (
        f"{statistics.fmean(spent) * len(unfinished) / workers / 60:.0f} min"
        + (f" ({workers} processes)" if workers > 1 else "")
        if spent
        else "unknown"
    )
    print(
        f"compare [{i}/{len(entries)}] {entry.name} ({entry.kind}, seed {entry.seed}, "
        f"{entry.madds / 1e9:.3f}G Multi-Adds); time left: {eta}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    if _run_entry(entry, tcfg, folder, split, num_classes, progress) is None:
        return False
    spent.append(time.perf_counter() - started)
    return True


def _results(out: Path, entries: list[CompareEntry], tcfg: TrainConfig) -> list[dict[str, Any]]:
    """The finished networks' results, in the plan's order, each checked against its digest.

    Another compare process on this --out may have written some since the checks at the
    start: they are checked here, and one that fails is refused, never reported.
    """
    results = []
    for entry in entries:
        folder = out / "runs" / entry.name
        path = folder / RESULT_NAME
        if not path.is_file():
            continue
        fix = f"remove {folder} and rerun to retrain that network"
        result = read_result(path, fix)
        cfg = with_seed(entry, tcfg, folder / "genotype.json")
        checkpoint = None if result.get("reused_from") else best_checkpoint(folder)
        why = mismatch(result, entry.genotype, cfg, checkpoint)
        if why is not None:
            raise ValueError(f"{path}: {why}; {fix}")
        results.append(result)
    return results


def _empty(out: Path) -> None:
    """--overwrite: remove a comparison's own files from ``out`` (nothing else there)."""
    for name in ("runs", *COMPARE_FILES, SCORES_NAME, UNTRAINED_SCORES_NAME, MANIFEST_NAME):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


_CLOUD_CENTER = {
    "searched": "the searched network's",
    "typical": "the space's typical network's, the same for every search of this space",
}


def run_compare(
    search_dir: str | Path,
    tcfg: TrainConfig,
    out_dir: str | Path,
    *,
    num_random: int = 5,
    searched_seeds: int = 2,
    tolerance: float = 0.1,
    size: tuple[int, int] | None = None,
    progress: bool = True,
    reference_seeds: int | None = None,
    reuse: Sequence[str | Path] = (),
    report_split: str = "auto",
    overwrite: bool = False,
    seed_noise: bool = False,
    scorer: Scorer | None = None,
    random_center: str = "searched",
    control_scorer: Scorer | None = None,
) -> CompareResult:
    """Check every input, then retrain and evaluate every network of :func:`plan_compare`.

    ``reuse``: earlier comparisons' output folders whose finished runs may stand in for
    retrainings here; ``report_split``: ``auto`` (test where it has labels, else val),
    ``test`` or ``val``; ``overwrite``: start afresh in an ``out`` made with other settings.
    Every refusal comes before anything is written (see the module's docstring).
    ``seed_noise``: also retrain the first 3 random genotypes with 2 more seeds each.
    ``scorer``: scores every genotype on the search run's supernet after the checks and
    before any retraining (:mod:`~autodeeplab.engine.compare.scores`), for the ranking
    section (:mod:`~autodeeplab.engine.compare.ranking_report`); None: no scores.
    ``control_scorer``: the same on the supernet freshly initialised, the ranking's control
    (:mod:`~autodeeplab.engine.compare.controls`); only where ``scorer`` scored.
    ``random_center``: ``searched`` or ``typical`` (:func:`plan_compare`).
    """
    check_counts(num_random, searched_seeds, reference_seeds)
    search_dir, out = Path(search_dir), Path(out_dir)
    reused_outs = [Path(d) for d in reuse]
    for d in reused_outs:
        if not (d / "runs").is_dir():
            raise FileNotFoundError(
                f"{d}: no runs/ folder; --reuse takes the --out folder of an earlier compare"
            )
        if d.resolve() == out.resolve():
            raise ValueError(f"--reuse {d}: is --out itself; its finished networks are kept")
    search = check_search(search_dir)
    num_classes = dataset_info(tcfg.data.spec).num_classes
    size = size or (tcfg.data.crop, tcfg.data.crop)
    split, split_note = choose_report_split(
        tcfg.data.spec, report_split, tcfg.data.crop, tcfg.train.seed
    )
    entries = plan_compare(
        search.genotype,
        search.config,
        tcfg,
        num_classes,
        size,
        num_random,
        searched_seeds,
        tolerance,
        reference_seeds=reference_seeds,
        random_center=random_center,
    )
    if seed_noise:
        entries += seed_noise_entries(entries)
    want = manifest(search, tcfg, size, tolerance, split, random_center)
    if check_out(out, want, overwrite, [search_dir, *reused_outs]):
        _empty(out)
    else:
        check_finished(out, entries, tcfg)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST_NAME).is_file():
        write_json(out / MANIFEST_NAME, want)
    genotypes = [e.genotype for e in entries]
    space = search.config.model
    scores, not_scored = score_or_why(search_dir, genotypes, out, scorer, space)
    untrained = None
    if scores is not None and control_scorer is not None:
        untrained, _ = score_or_why(
            search_dir, genotypes, out, control_scorer, space, UNTRAINED_SCORES_NAME
        )
    if reused_outs:
        reuse_earlier(entries, tcfg, out, split, reused_outs)
    spent: list[float] = []
    busy: list[tuple[int, CompareEntry]] = []  # locked by another compare process
    for i, entry in enumerate(entries, 1):
        folder = out / "runs" / entry.name
        if (folder / RESULT_NAME).is_file():
            continue
        with network_lock(folder, wait=False) as locked:
            if locked and (folder / RESULT_NAME).is_file():
                continue  # another process finished it between the check and the lock
            if not locked:
                print(
                    f"compare [{i}/{len(entries)}] {entry.name}: another compare process is "
                    "retraining it; going on",
                    file=sys.stderr,
                )
                busy.append((i, entry))
                continue
            if not _retrain(i, entry, entries, spent, tcfg, out, split, num_classes, progress):
                return _stopped(out, entries, tcfg)
    for i, entry in busy:  # wait for the other process; retrain what it left unfinished
        folder = out / "runs" / entry.name
        with network_lock(folder, wait=True):
            if (folder / RESULT_NAME).is_file():
                continue
            if not _retrain(i, entry, entries, spent, tcfg, out, split, num_classes, progress):
                return _stopped(out, entries, tcfg)
    results = _results(out, entries, tcfg)
    header = (
        f"Search run `{search_dir}`; data `{tcfg.data.spec}`; every network retrained with "
        f"the same schedule ({tcfg.train.iters} iterations, batch {tcfg.train.batch_size}, "
        f"crop {tcfg.data.crop}, F={tcfg.model.filter_multiplier}), chosen on val, reported "
        f"on {split_note}. Multi-Adds at {size[0]}x{size[1]}; random genotypes within "
        f"{tolerance:.0%} of {_CLOUD_CENTER[random_center]}."
    )
    health = run_health(out, results, split)
    ranking = measure_ranking(results, scores, health, not_scored=not_scored, untrained=untrained)
    summary = write_comparison(out, results, header, size, ranking=ranking)
    return CompareResult(out, results, summary)


def _stopped(out: Path, entries: list[CompareEntry], tcfg: TrainConfig) -> CompareResult:
    """What a signal leaves: the finished networks; the stopped one has its checkpoint."""
    results = _results(out, entries, tcfg)
    return CompareResult(out, results, summarise(results), stopped=True)
