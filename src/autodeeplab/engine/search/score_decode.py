"""``search.decode=score``: the genotype chosen by its score on the trained supernet.

The argmax cell and Viterbi path of alpha and beta (the paper's decode) is the first
candidate; the others are random genotypes in ``compare``'s Multi-Adds band around it (with
``decode_generations`` > 0, evolved from the best: :func:`~.evolution.search_by_score`).
Each is scored on the supernet's shared weights (:mod:`~autodeeplab.engine.search.score`),
and the lowest val cross-entropy wins. So argmax/Viterbi and scoring are compared on one
supernet: ``candidates.json`` holds every candidate, its score, and which was the argmax.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.search.evolution import GenotypeSpace, compare_band, search_by_score
from autodeeplab.engine.search.score import GenotypeScore, score_genotype, write_json
from autodeeplab.genotype import Genotype
from autodeeplab.space.network import SearchNetwork

__all__ = ["CANDIDATES_FILE", "decode_by_score", "score_batches"]

CANDIDATES_FILE = "candidates.json"


def decode_by_score(
    model: SearchNetwork,
    argmax: Genotype,
    recal: Sequence[Tensor],
    val: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    loop: SearchLoopConfig,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    out: Path | None = None,
) -> tuple[Genotype, dict[str, Any]]:
    """The best-scoring candidate and a summary for genotype.json's provenance.

    ``out``: the run folder that gets ``candidates.json`` (None: nothing written; under
    torchrun only rank 0 passes it, every rank scores).
    """

    def score_fn(genotype: Genotype, name: str) -> GenotypeScore:
        return score_genotype(
            model, genotype, recal, val, num_classes, device=device, amp_dtype=amp_dtype, name=name
        )

    band = compare_band(argmax, num_classes)
    candidates = search_by_score(
        score_fn,
        band,
        random.Random(loop.seed),
        space=GenotypeSpace.of(model),
        population=loop.decode_candidates,
        generations=loop.decode_generations,
        start=[argmax],
    )
    best = min(candidates, key=lambda c: c.score.val_loss)
    first = candidates[0].score
    summary = {
        "decode": "score",
        "candidates": len(candidates),
        "val_loss": best.score.val_loss,
        "val_miou": best.score.val_miou,
        "argmax_val_loss": first.val_loss,
        "argmax_val_miou": first.val_miou,
        "argmax_rank": 1 + sorted(c.score.val_loss for c in candidates).index(first.val_loss),
        "argmax_genotype": argmax.to_dict(),
    }
    if out is not None:
        write_json(
            out / CANDIDATES_FILE,
            {
                "band_madds": [band.low, band.high],
                "center_madds": band.center,
                "recal_batches": len(recal),
                "best": best.score.name,
                "argmax": first.name,
                "candidates": [c.to_dict() for c in candidates],
            },
        )
    return best.score.genotype, summary


def score_batches(data: Any, loop: SearchLoopConfig) -> tuple[list[Tensor], Any]:
    """The recalibration batches and the val batches a search's scores use.

    BatchNorm is recalibrated on the first ``score_recal_batches`` training batches (the ones
    the loop's ``val_bn=recalibrate`` uses), the score taken on ``score_val_batches`` of val
    (``data``: the search's :class:`~autodeeplab.engine.search.data.SearchData`).
    """
    val: Any = data.loader_val
    if loop.score_val_batches is not None:
        val = list(itertools.islice(val, loop.score_val_batches))
    return data.recalibration_batches(loop.score_recal_batches), val
