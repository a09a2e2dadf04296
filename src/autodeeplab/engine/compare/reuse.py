"""Networks a comparison need not retrain: earlier comparisons' results, and who retrains what.

Comparisons on the same data retrain many of the same networks: the random genotypes and
the paper's depend on the searched network only through its Multi-Adds, and a retraining
is fixed by its genotype, seed and config. ``--reuse`` names earlier comparisons' ``out``
folders; a network whose genotype, seed and whole training config match a finished run
there takes that run's result (marked ``reused_from``) instead of retraining. A result is
taken only when its digest holds: its scores unedited, and its genotype, config and best
checkpoint the ones its folder holds now (:func:`~autodeeplab.engine.compare.results.mismatch`);
any other is passed over, and the network retrains.

Several ``compare`` processes may share one ``out``: each network's folder is locked
(:func:`network_lock`) while it retrains or takes an earlier result.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodeeplab.config import TrainConfig, load_config
from autodeeplab.engine.compare.plan import CompareEntry
from autodeeplab.engine.compare.results import (
    RESULT_NAME,
    ResultError,
    best_checkpoint,
    config_digest,
    entry_config,
    genotype_digest,
    mismatch,
    read_result,
    write_json,
)
from autodeeplab.files import file_lock
from autodeeplab.genotype import load_genotype

__all__ = [
    "FinishedRun",
    "find_reusable",
    "finished_runs",
    "is_locked",
    "network_lock",
    "reuse_earlier",
]


@dataclass(frozen=True)
class FinishedRun:
    """A finished network of an earlier comparison: its folder and its result (unchecked)."""

    folder: Path
    result: dict[str, Any]


def finished_runs(reuse: Sequence[Path], split: str) -> list[FinishedRun]:
    """The finished run folders under each ``reuse``/runs scored on ``split``, read once.

    Folders that are not a finished compare run (no result.json, unreadable or malformed
    files) are passed over: they are another comparison's business. Results without a
    digest (written before results had one) cannot be checked: passed over, said in one line.
    """
    runs = []
    for out in reuse:
        old = 0
        for folder in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else ():
            try:
                result = read_result(folder / RESULT_NAME, f"rerun the comparison in {out}")
            except (OSError, ResultError):
                continue
            if result["split"] != split or result.get("reused_from"):
                continue  # another split; or not computed there (its checkpoint is elsewhere)
            if "digest" not in result:
                old += 1
                continue
            runs.append(FinishedRun(folder, result))
        if old:
            print(
                f"compare: {old} result(s) under {out / 'runs'} have no digest (written by an "
                "older autodeeplab) and cannot be checked: not reused, retrained if needed",
                file=sys.stderr,
            )
    return runs


def _why_not(run: FinishedRun) -> str | None:
    """Why ``run``'s result is not what its folder's genotype, config and checkpoint made."""
    try:
        genotype = load_genotype(run.folder / "genotype.json")
        cfg = load_config(run.folder / "train" / "config.yaml", base=TrainConfig())
    except (OSError, ValueError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return mismatch(run.result, genotype, cfg, best_checkpoint(run.folder))


def find_reusable(entry: CompareEntry, cfg: TrainConfig, runs: list[FinishedRun]) -> Path | None:
    """The first of :func:`finished_runs` with ``entry``'s genotype and ``cfg`` (its seed too)
    whose result checks out against its folder; the others are said and passed over."""
    want = {"genotype": genotype_digest(entry.genotype), "config": config_digest(cfg)}
    for run in runs:
        claims = run.result["produced_by"]
        if any(claims.get(k) != v for k, v in want.items()):
            continue
        why = _why_not(run)
        if why is None:
            return run.folder
        print(f"compare: not reusing {run.folder / RESULT_NAME}: {why}", file=sys.stderr)
    return None


def _reuse_entry(entry: CompareEntry, folder: Path, source: Path, split: str) -> None:
    """Record ``source``'s result as ``entry``'s, with where it came from."""
    result = read_result(source / RESULT_NAME, f"rerun the comparison of {source}")
    # The name, kind and cost are this comparison's (the same network may be, say, a
    # random one here and a reference there; Multi-Adds may be matched at another size).
    result.update(name=entry.name, kind=entry.kind, madds=entry.madds, reused_from=str(source))
    metrics = source / f"metrics_{split}.json"
    if metrics.is_file():
        shutil.copyfile(metrics, folder / metrics.name)
    write_json(folder / RESULT_NAME, result)


@contextlib.contextmanager
def network_lock(folder: Path, *, wait: bool) -> Iterator[bool]:
    """Hold ``folder/lock`` exclusively while one network retrains; yields False if taken
    (:func:`~autodeeplab.files.file_lock`)."""
    with file_lock(folder / "lock", wait=wait) as taken:
        yield taken


def is_locked(folder: Path) -> bool:
    """Whether a compare process (this one included) holds ``folder``'s lock now."""
    if not (folder / "lock").is_file():
        return False
    # network_lock opens the file anew, and a second open file description conflicts even
    # with this process's own lock.
    with network_lock(folder, wait=False) as taken:
        return not taken


def reuse_earlier(
    entries: list[CompareEntry], tcfg: TrainConfig, out: Path, split: str, reuse: list[Path]
) -> None:
    """Give every unfinished network that an earlier comparison ran its (checked) result.

    Before any retraining, so that the time-left estimate counts only real retrainings.
    """
    runs = finished_runs(reuse, split)
    for i, entry in enumerate(entries, 1):
        folder = out / "runs" / entry.name
        if (folder / RESULT_NAME).is_file():
            continue
        with network_lock(folder, wait=False) as locked:
            if not locked or (folder / RESULT_NAME).is_file():
                continue  # another compare process has it
            source = find_reusable(entry, entry_config(entry, tcfg, folder), runs)
            if source is not None:
                _reuse_entry(entry, folder, source, split)
                print(
                    f"compare [{i}/{len(entries)}] {entry.name}: reused {source} (the same "
                    "genotype, seed and training config; its digest checked)",
                    file=sys.stderr,
                )
