"""Each compared network's score on the search run's supernet, kept between runs.

Every distinct genotype of a comparison is scored once on the search run's supernet
(single-path forward after BatchNorm recalibration, :mod:`autodeeplab.engine.search.score`,
as ``autodeeplab score`` takes them) before any retraining, so that a search run without a
supernet is known at once; the scores are kept in ``out/supernet_scores.json`` with the
search run and the scoring settings, so a rerun does not score again; compare processes
sharing one ``out`` score once (the cache is locked while one scores, and the others then
read it). A genotype outside
the supernet's space (the paper's 12 layers on a smaller one) gets no score, and the reason.

The control of the ranking is the same supernet freshly initialised (``untrained``): its
scores, kept in ``out/supernet_scores_untrained.json``, say what the score reads from a
genotype's structure alone, before any supernet training.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autodeeplab.checkpoint import atomic_write
from autodeeplab.config import SearchModelConfig
from autodeeplab.engine.search.score_run import score_run
from autodeeplab.files import file_lock
from autodeeplab.genotype import Genotype

__all__ = [
    "SCORES_NAME",
    "Scorer",
    "UNTRAINED_SCORES_NAME",
    "genotype_key",
    "outside_space",
    "score_all",
    "score_or_why",
    "supernet_scorer",
]

#: The score cache in a comparison's --out (not score's own scores.json).
SCORES_NAME = "supernet_scores.json"

#: The control's score cache in a comparison's --out: the supernet freshly initialised.
UNTRAINED_SCORES_NAME = "supernet_scores_untrained.json"

#: A function that scores genotypes on a search run's supernet: (run folder, genotypes) ->
#: one ``{"val_ce": ..., "val_miou": ...}`` per genotype, in order.
Scorer = Callable[[Path, list[Genotype]], list[dict[str, float]]]


def genotype_key(genotype: dict[str, Any]) -> str:
    """A genotype's identity as text (its JSON with sorted keys)."""
    return json.dumps(genotype, sort_keys=True)


def outside_space(genotype: Genotype, space: SearchModelConfig) -> str | None:
    """Why ``genotype`` cannot run on the supernet of ``space`` (None: it can).

    The paper's genotype (12 layers, to stride 32) is outside a smaller search space: it
    keeps its place in the comparison but has no score.
    """
    if (genotype.num_layers, genotype.num_blocks) != (space.num_layers, space.num_blocks):
        return (
            f"{genotype.num_layers} layers of {genotype.num_blocks} blocks, the supernet "
            f"{space.num_layers} of {space.num_blocks}"
        )
    if max(genotype.path) >= len(space.strides):
        stride = 4 * 2 ** max(genotype.path)
        return f"its path reaches stride {stride}, the supernet's {max(space.strides)}"
    unknown = sorted({op for block in genotype.cell for op, _ in block} - set(space.primitives))
    return f"ops the supernet lacks: {', '.join(unknown)}" if unknown else None


def score_all(
    search_dir: Path,
    genotypes: Sequence[Genotype],
    out: Path,
    scorer: Scorer,
    space: SearchModelConfig | None = None,
    cache_name: str = SCORES_NAME,
) -> dict[str, dict[str, Any]]:
    """Each distinct genotype's score on ``search_dir``'s supernet, kept in ``out/cache_name``.

    The cache holds the search run and the scorer's settings (a ``functools.partial``'s
    keywords) it came from; genotypes already there are not scored again (a rerun, or one
    with ``--seed-noise`` added, scores only its new networks). With ``space``, a genotype
    outside it (:func:`outside_space`) gets no score and ``not_scored`` saying why.
    """
    out.mkdir(parents=True, exist_ok=True)
    # Another compare process on this out may be scoring: wait for it, then read its cache.
    with file_lock(out / f"{cache_name}.lock", wait=True):
        return _score_cached(search_dir, genotypes, out / cache_name, scorer, space)


def _score_cached(
    search_dir: Path,
    genotypes: Sequence[Genotype],
    cache_file: Path,
    scorer: Scorer,
    space: SearchModelConfig | None,
) -> dict[str, dict[str, Any]]:
    """:func:`score_all`'s work, under its lock."""
    # Scores from another search run or other scoring settings are scored again.
    settings = dict(getattr(scorer, "keywords", None) or {})
    cache: dict[str, Any] = {"search_run": str(search_dir), "settings": settings, "scores": {}}
    if cache_file.is_file():
        old = json.loads(cache_file.read_text(encoding="utf-8"))
        if old.get("search_run") == str(search_dir) and old.get("settings") == settings:
            cache = old
    scores: dict[str, dict[str, Any]] = cache["scores"]
    todo: dict[str, Genotype] = {}
    for g in genotypes:
        key = genotype_key(g.to_dict())
        why = outside_space(g, space) if space is not None else None
        if why is not None:
            scores[key] = {"val_ce": None, "val_miou": None, "not_scored": why}
        elif key not in scores:
            todo.setdefault(key, g)
    if todo:
        for key, record in zip(todo, scorer(search_dir, list(todo.values())), strict=True):
            scores[key] = {k: float(record[k]) for k in ("val_ce", "val_miou")}
        text = json.dumps(cache, indent=2).encode()
        atomic_write(cache_file, lambda f: f.write(text))
    return scores


def _score_on_supernet(
    run_dir: Path,
    genotypes: list[Genotype],
    *,
    recal_batches: int,
    seed: int,
    untrained: bool = False,
) -> list[dict[str, float]]:
    """:func:`~autodeeplab.engine.search.score_run.score_run`'s val CE and mIoU."""
    scores = score_run(
        run_dir, genotypes, recal_batches=recal_batches, seed=seed, untrained=untrained
    )
    return [{"val_ce": s.val_loss, "val_miou": s.val_miou} for s in scores]


def supernet_scorer(recal_batches: int = 8, seed: int = 0, untrained: bool = False) -> Scorer:
    """Scores on the search run's supernet, as ``autodeeplab score`` takes them.

    ``recal_batches`` trainA batches recalibrate BatchNorm before each genotype's val pass;
    the settings are kept in the score cache, so other settings score anew. ``untrained``:
    the control, the same supernet freshly initialised from ``seed``
    (``autodeeplab score --untrained``).
    """
    # untrained is a keyword only when set, so that caches written before it still match.
    extra = {"untrained": True} if untrained else {}
    return functools.partial(_score_on_supernet, recal_batches=recal_batches, seed=seed, **extra)


def score_or_why(
    search_dir: Path,
    genotypes: Sequence[Genotype],
    out: Path,
    scorer: Scorer | None,
    space: SearchModelConfig | None = None,
    cache_name: str = SCORES_NAME,
) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """:func:`score_all`, or None and why not (no scorer; a search run without a supernet)."""
    if scorer is None:
        return None, "no supernet scores were asked for (--no-score)"
    try:
        return score_all(search_dir, genotypes, out, scorer, space, cache_name), None
    except FileNotFoundError as e:
        # A search run from before supernet checkpoints were kept still gets its comparison.
        print(f"compare: no supernet scores: {e}", file=sys.stderr)
        return None, f"the search run has no supernet to score on ({e})"
