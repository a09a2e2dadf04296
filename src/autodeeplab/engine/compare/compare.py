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
test split (val where the dataset has none). Each retraining is its own run folder under
``out/runs/NAME``: a rerun skips the finished ones (``result.json``) and resumes an
interrupted one from its checkpoint, so the comparison can be stopped and continued.
Several ``compare`` processes may share one ``out`` (one per core or GPU): each network's
folder is locked while it retrains, a process skips the locked ones and, at the end, waits
for them (or retrains one whose process died). ``out`` gets compare.json, compare.md and
compare.png (mIoU against Multi-Adds).

Comparisons on the same data retrain many of the same networks: the random genotypes and
the paper's depend on the searched network only through its Multi-Adds, and a retraining is
fixed by its genotype, seed and config. ``reuse`` names earlier comparisons' ``out``
folders; a network whose genotype, seed and whole training config match a finished run
there takes that run's result (marked ``reused_from``) instead of retraining. These are
taken before the first retraining, so the time left counts only real retrainings.

Whether the search *can* help is measured beside it
(:mod:`~autodeeplab.engine.compare.ranking_report`): every genotype is scored on the search
run's supernet before the retrainings, and compare.md/json get Kendall tau and Spearman rho
between score and retrained mIoU, the searched network's percentile in the random cloud,
the seed noise (``seed_noise``: 3 random genotypes x 3 seeds) and the retrainings that
collapsed, which are left out of these statistics.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from autodeeplab.checkpoint import atomic_write
from autodeeplab.config import TrainConfig, load_config
from autodeeplab.data import DATASETS, dataset_info, parse_spec
from autodeeplab.engine.compare.plan import (
    CompareEntry,
    handmade_path,
    plan_compare,
    seed_noise_entries,
)
from autodeeplab.engine.compare.ranking_report import measure_ranking, ranking_markdown, run_health
from autodeeplab.engine.compare.scores import Scorer, score_or_why
from autodeeplab.engine.infer.evaluate import evaluate_checkpoint
from autodeeplab.engine.train.loop import run_train
from autodeeplab.engine.train.model import build_train_model, with_genotype
from autodeeplab.genotype import Genotype, load_genotype, save_genotype
from autodeeplab.model.complexity import count_parameters
from autodeeplab.viz.compare import plot_compare

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


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _report_split(spec: str) -> str:
    """test where the dataset has one, else val."""
    return "test" if "test" in DATASETS[parse_spec(spec)[0]].splits else "val"


def _entry_config(entry: CompareEntry, tcfg: TrainConfig, folder: Path) -> TrainConfig:
    """``entry``'s retraining config: its genotype, written to ``folder``, and its seed."""
    folder.mkdir(parents=True, exist_ok=True)
    genotype_path = folder / "genotype.json"
    if not genotype_path.is_file():
        save_genotype(entry.genotype, genotype_path)
    elif load_genotype(genotype_path) != entry.genotype:
        raise ValueError(
            f"{genotype_path}: holds another genotype than this comparison's {entry.name}; "
            "compare into a new --out, or remove that folder"
        )
    cfg = with_genotype(tcfg, genotype_path)
    return replace(cfg, train=replace(cfg.train, seed=entry.seed))


def _placeless(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without where its genotype file lives (the genotype itself is compared apart)."""
    return replace(cfg, model=replace(cfg.model, genotype=None))


def finished_runs(reuse: Sequence[Path], split: str) -> list[tuple[Path, Genotype, TrainConfig]]:
    """The finished run folders under each ``reuse``/runs scored on ``split``.

    Each with its genotype and its training config without the genotype's place, read once
    for every network of a comparison to be matched against. Folders that are not a finished
    compare run (no result.json, unreadable files) are passed over: they are another
    comparison's business.
    """
    runs = []
    for out in reuse:
        for folder in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else ():
            try:
                result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
                if result.get("split") != split:
                    continue
                genotype = load_genotype(folder / "genotype.json")
                cfg = load_config(folder / "train" / "config.yaml", base=TrainConfig())
            except (OSError, ValueError, AttributeError):
                continue
            runs.append((folder, genotype, _placeless(cfg)))
    return runs


def find_reusable(
    entry: CompareEntry, cfg: TrainConfig, runs: list[tuple[Path, Genotype, TrainConfig]]
) -> Path | None:
    """The first of :func:`finished_runs` with ``entry``'s genotype and ``cfg`` (its seed too)."""
    want = _placeless(cfg)
    return next((f for f, g, c in runs if g == entry.genotype and c == want), None)


def _reuse_entry(entry: CompareEntry, folder: Path, source: Path, split: str) -> None:
    """Record ``source``'s result as ``entry``'s, with where it came from."""
    result = json.loads((source / "result.json").read_text(encoding="utf-8"))
    # The name, kind and cost are this comparison's (the same network may be, say, a
    # random one here and a reference there; Multi-Adds may be matched at another size).
    result.update(
        name=entry.name,
        kind=entry.kind,
        madds=entry.madds,
        reused_from=str(source),
    )
    metrics = source / f"metrics_{split}.json"
    if metrics.is_file():
        shutil.copyfile(metrics, folder / metrics.name)
    _write_bytes(folder / "result.json", json.dumps(result, indent=2).encode())


def _run_entry(
    entry: CompareEntry,
    tcfg: TrainConfig,
    folder: Path,
    split: str,
    num_classes: int,
    progress: bool,
) -> dict[str, Any] | None:
    """Retrain, evaluate and record one network; None if a signal stopped its training."""
    cfg = _entry_config(entry, tcfg, folder)
    train_dir = folder / "train"
    resume = (train_dir / "checkpoints" / "last.pt").is_file()
    start = time.perf_counter()
    trained = run_train(cfg, train_dir, resume=resume, progress=progress)
    if trained.stopped:
        return None
    metrics = evaluate_checkpoint(
        trained.best_checkpoint,
        split=split,
        device=tcfg.train.device,
        out=folder / f"metrics_{split}.json",
    )
    result = {
        "name": entry.name,
        "kind": entry.kind,
        "seed": entry.seed,
        "genotype": entry.genotype.to_dict(),
        "madds": entry.madds,
        "parameters": count_parameters(build_train_model(cfg, num_classes)),
        "val_miou": trained.best_miou,
        "best_iteration": trained.best_iteration,
        f"{split}_miou": metrics["miou"],
        "miou": metrics["miou"],
        "split": split,
        "seconds": time.perf_counter() - start,
    }
    _write_bytes(folder / "result.json", json.dumps(result, indent=2).encode())
    return result


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and spreads by kind, and whether the searched network wins."""

    def mious(kind: str) -> list[float]:
        return [r["miou"] for r in results if r["kind"] == kind]

    searched, randoms = mious("searched"), mious("random")
    handmade, paper = mious("handmade"), mious("paper")
    out: dict[str, Any] = {
        "split": results[0]["split"] if results else None,
        "searched_mean": statistics.fmean(searched) if searched else None,
        "random_mean": statistics.fmean(randoms) if randoms else None,
        "random_std": statistics.stdev(randoms) if len(randoms) > 1 else None,
        "random_best": max(randoms) if randoms else None,
        # Means over the references' seeds (the searched network's).
        "handmade": statistics.fmean(handmade) if handmade else None,
        "paper": statistics.fmean(paper) if paper else None,
        "reference_seeds": len(handmade),
    }
    if out["searched_mean"] is not None and out["random_mean"] is not None:
        out["searched_minus_random"] = out["searched_mean"] - out["random_mean"]
    if out["searched_mean"] is not None and out["handmade"] is not None:
        out["searched_minus_handmade"] = out["searched_mean"] - out["handmade"]
    return out


def _markdown(results: list[dict[str, Any]], summary: dict[str, Any], header: str) -> str:
    split = summary["split"]
    lines = [
        "# Does the search help?",
        "",
        header,
        "",
        f"| network | kind | seed | Multi-Adds | parameters | val mIoU | {split} mIoU | path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        path = " ".join(str(4 * 2**lv) for lv in r["genotype"]["path"])
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['seed']} | {r['madds'] / 1e9:.3f}G | "
            f"{r['parameters']:,} | {100 * r['val_miou']:.2f} | {100 * r['miou']:.2f} | {path} |"
        )

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}"

    lines += [
        "",
        f"- searched ({split} mIoU, mean over seeds): {pct(summary['searched_mean'])}",
        f"- random: mean {pct(summary['random_mean'])}, std {pct(summary['random_std'])}, "
        f"best {pct(summary['random_best'])}",
        f"- hand-made path with the searched cell: {pct(summary['handmade'])}; "
        f"the paper's genotype: {pct(summary['paper'])}"
        + (
            f" (means over {summary['reference_seeds']} seeds)"
            if summary["reference_seeds"] > 1
            else ""
        ),
    ]
    if "searched_minus_random" in summary:
        lines.append(
            f"- searched minus random mean: {100 * summary['searched_minus_random']:+.2f} points"
        )
    if "searched_minus_handmade" in summary:
        lines.append(
            f"- searched minus hand-made: {100 * summary['searched_minus_handmade']:+.2f} points"
        )
    reused = [r["name"] for r in results if r.get("reused_from")]
    if reused:
        lines.append(
            "- taken from earlier comparisons (the same genotype, seed and training config): "
            + ", ".join(reused)
        )
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _network_lock(folder: Path, *, wait: bool) -> Iterator[bool]:
    """Hold ``folder/lock`` exclusively while one network retrains; yields False if taken.

    An flock, not a marker file, because the OS releases it when its process dies (a kill
    leaves no stale lock to clean up); it needs POSIX and a file system that honours flock.
    """
    folder.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(folder / "lock", "a", encoding="utf-8")  # noqa: SIM115
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _is_locked(folder: Path) -> bool:
    """Whether a compare process (this one included) holds ``folder``'s lock now."""
    if not (folder / "lock").is_file():
        return False
    # _network_lock opens the file anew, and a second open file description conflicts even
    # with this process's own lock.
    with _network_lock(folder, wait=False) as taken:
        return not taken


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
    unfinished = [f for f in folders if not (f / "result.json").is_file()]
    # The networks left are shared by every compare process on this --out: those retraining
    # one now (this one included, which holds its lock) divide the time.
    workers = max(1, sum(_is_locked(f) for f in unfinished))
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


def _reuse_earlier(
    entries: list[CompareEntry], tcfg: TrainConfig, out: Path, split: str, reuse: list[Path]
) -> None:
    """Give every unfinished network that an earlier comparison ran its result.

    Before any retraining, so that the time-left estimate counts only real retrainings.
    """
    runs = finished_runs(reuse, split)
    for i, entry in enumerate(entries, 1):
        folder = out / "runs" / entry.name
        if (folder / "result.json").is_file():
            continue
        with _network_lock(folder, wait=False) as locked:
            if not locked or (folder / "result.json").is_file():
                continue  # another compare process has it
            source = find_reusable(entry, _entry_config(entry, tcfg, folder), runs)
            if source is not None:
                _reuse_entry(entry, folder, source, split)
                print(
                    f"compare [{i}/{len(entries)}] {entry.name}: reused {source} (the same "
                    "genotype, seed and training config)",
                    file=sys.stderr,
                )


def _stopped(out: Path, entries: list[CompareEntry]) -> CompareResult:
    """What a signal leaves: the finished networks; the stopped one has its checkpoint."""
    results = _results(out, entries)
    return CompareResult(out, results, summarise(results), stopped=True)


def _results(out: Path, entries: list[CompareEntry]) -> list[dict[str, Any]]:
    """The finished networks' results, in the plan's order."""
    files = [out / "runs" / e.name / "result.json" for e in entries]
    return [json.loads(f.read_text(encoding="utf-8")) for f in files if f.is_file()]


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
    seed_noise: bool = False,
    scorer: Scorer | None = None,
) -> CompareResult:
    """Retrain and evaluate every network of :func:`plan_compare`; write the comparison.

    ``reuse``: earlier comparisons' output folders whose finished runs may stand in for
    retrainings here (see the module's docstring). ``seed_noise``: also retrain the first 3
    random genotypes with 2 more seeds each. ``scorer``: scores every genotype on the search
    run's supernet, before any retraining (:mod:`~autodeeplab.engine.compare.scores`), for
    the ranking section (:mod:`~autodeeplab.engine.compare.ranking_report`); None: no scores.
    """
    search_dir, out = Path(search_dir), Path(out_dir)
    reused_outs = [Path(d) for d in reuse]
    for d in reused_outs:
        if not (d / "runs").is_dir():
            raise FileNotFoundError(
                f"{d}: no runs/ folder; --reuse takes the --out folder of an earlier compare"
            )
    genotype_file = search_dir / "genotype.json"
    if not genotype_file.is_file():
        raise FileNotFoundError(
            f"{genotype_file}: no genotype; give the --out folder of a finished search"
        )
    searched = load_genotype(genotype_file)
    config_file = search_dir / "config.yaml"
    search_cfg = load_config(config_file if config_file.is_file() else None)
    num_classes = dataset_info(tcfg.data.spec).num_classes
    size = size or (tcfg.data.crop, tcfg.data.crop)
    split = _report_split(tcfg.data.spec)
    entries = plan_compare(
        searched,
        search_cfg,
        tcfg,
        num_classes,
        size,
        num_random,
        searched_seeds,
        tolerance,
        reference_seeds=reference_seeds,
    )
    if seed_noise:
        entries += seed_noise_entries(entries)
    out.mkdir(parents=True, exist_ok=True)
    genotypes = [e.genotype for e in entries]
    scores, not_scored = score_or_why(search_dir, genotypes, out, scorer, search_cfg.model)
    if reused_outs:
        _reuse_earlier(entries, tcfg, out, split, reused_outs)
    spent: list[float] = []
    busy: list[tuple[int, CompareEntry]] = []  # locked by another compare process
    for i, entry in enumerate(entries, 1):
        folder = out / "runs" / entry.name
        if (folder / "result.json").is_file():
            continue
        with _network_lock(folder, wait=False) as locked:
            if locked and (folder / "result.json").is_file():
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
                return _stopped(out, entries)
    for i, entry in busy:  # wait for the other process; retrain what it left unfinished
        folder = out / "runs" / entry.name
        with _network_lock(folder, wait=True):
            if (folder / "result.json").is_file():
                continue
            if not _retrain(i, entry, entries, spent, tcfg, out, split, num_classes, progress):
                return _stopped(out, entries)
    results = _results(out, entries)
    summary = summarise(results)
    header = (
        f"Search run `{search_dir}`; data `{tcfg.data.spec}`; every network retrained with "
        f"the same schedule ({tcfg.train.iters} iterations, batch {tcfg.train.batch_size}, "
        f"crop {tcfg.data.crop}, F={tcfg.model.filter_multiplier}), chosen on val, reported "
        f"on {split}. Multi-Adds at {size[0]}x{size[1]}; random genotypes within "
        f"{tolerance:.0%} of the searched network's."
    )
    health = run_health(out, results, split)
    ranking = measure_ranking(results, scores, health, not_scored=not_scored)
    payload = {"header": header, "summary": summary, "results": results, "size": list(size)}
    payload["ranking"] = ranking
    _write_bytes(out / "compare.json", json.dumps(payload, indent=2).encode())
    markdown = _markdown(results, summary, header) + ranking_markdown(ranking)
    _write_bytes(out / "compare.md", markdown.encode())
    plot_compare(results, summary, out / "compare.png", ranking=ranking)
    return CompareResult(out, results, summary)
