"""Decoding the continuous architecture into a :class:`Genotype` (paper §4.3).

- Cell (DARTS rule, docs/design.md §4.1, §12.6): for each block keep the two distinct
  predecessors whose strongest non-zero op weight is largest, and on each the argmax op
  excluding 'none'. 'none' can never be decoded.
- Network: beta, read as transition probabilities between levels, gives the most
  probable path from the stem (level 0) through layers 1..L by Viterbi in log space; the
  last level is free (docs/design.md §4.2). By default each transition is scored relative to a
  uniform choice among its source's outgoing edges (docs/design.md §12.10): read literally, Eq. 7
  gives the 2-edge border nodes (strides 4 and 32, the stem) 1/2 per edge at uniform beta
  against 1/3 elsewhere, a prior of ln(3/2) nats per layer for staying at stride 4 that
  decides every short search. ``path_decode="literal"`` keeps that reading.
- :func:`path_margin`: how far the decoded path beats the runner-up, the decode's
  confidence.

These are pure functions of softmaxed weights; they work on tensors or arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from autodeeplab.genotype import Genotype
from autodeeplab.trellis import direction, edge_index, num_edges

__all__ = [
    "PATH_DECODES",
    "decode",
    "decode_cell",
    "viterbi_path",
    "path_margin",
    "path_score",
    "path_log_probability",
]

#: How the Viterbi scores a transition: relative to uniform over the source's outgoing
#: edges (docs/design.md §12.10, the default), or Eq. 7's probability as it is.
PATH_DECODES = ("relative", "literal")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def decode_cell(
    alpha_weights: torch.Tensor | np.ndarray, primitives: Sequence[str], num_blocks: int
) -> tuple[tuple[tuple[str, int], ...], ...]:
    """softmax(alpha) (num_edges, num_ops) -> two ``(op, input)`` per block, strongest first."""
    w = _numpy(alpha_weights)
    if w.shape != (num_edges(num_blocks), len(primitives)):
        raise ValueError(
            f"alpha weights have shape {w.shape}, expected "
            f"({num_edges(num_blocks)}, {len(primitives)}) for B={num_blocks}"
        )
    keep = [k for k, name in enumerate(primitives) if name != "none"]
    if not keep:
        raise ValueError("cannot decode a cell whose only op is 'none'")
    cell = []
    for block in range(num_blocks):
        candidates = []
        for state in range(block + 2):
            row = w[edge_index(block, state), keep]
            best = int(np.argmax(row))  # first maximum: ties go to the earlier op
            candidates.append((float(row[best]), state, primitives[keep[best]]))
        # Strongest first; ties go to the lower input index (sorted is stable).
        candidates.sort(key=lambda c: -c[0])
        cell.append(tuple((op, state) for _, state, op in candidates[:2]))
    return tuple(cell)


def _transition_scores(beta_weights: torch.Tensor | np.ndarray, mode: str) -> np.ndarray:
    """Per-transition log scores (L, num_levels, 3); -inf on missing edges.

    ``literal``: log p, Eq. 7's transition probabilities as they are. ``relative`` (docs/design.md
    §12.10): log(p * n_out), p relative to a uniform choice among the source's existing
    outgoing edges, so a node with 2 edges (strides 4 and 32, the stem) is not preferred over
    one with 3 when beta has learnt nothing.
    """
    if mode not in PATH_DECODES:
        raise ValueError(f"path decode must be one of {', '.join(PATH_DECODES)}, got {mode!r}")
    b = _numpy(beta_weights)
    if b.ndim != 3 or b.shape[2] != 3:
        raise ValueError(f"beta weights must have shape (L, num_levels, 3), got {b.shape}")
    with np.errstate(divide="ignore"):
        scores = np.log(b)
    if mode == "relative":
        n_out = (b > 0).sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            scores = scores + np.log(np.maximum(n_out, 1))
    return scores


def _viterbi(scores: np.ndarray, keep: int) -> list[tuple[float, tuple[int, ...]]]:
    """The ``keep`` best distinct paths from the stem (level 0) and their total scores.

    A list-Viterbi: each node keeps its ``keep`` best partial paths, which is exact because
    the k best paths into a node extend only the k best paths into its predecessors.
    """
    num_layers, nlev, _ = scores.shape
    # best[level] = list of (score, path) at the current layer, best first
    best: list[list[tuple[float, tuple[int, ...]]]] = [[] for _ in range(nlev)]
    best[0] = [(0.0, ())]  # the stem
    for layer in range(num_layers):
        new: list[list[tuple[float, tuple[int, ...]]]] = [[] for _ in range(nlev)]
        for target in range(nlev):
            cands = []
            for src in (target + 1, target, target - 1):
                d = direction(src, target)
                if 0 <= src < nlev and np.isfinite(scores[layer, src, d]):
                    s = scores[layer, src, d]
                    cands += [(score + s, path + (target,)) for score, path in best[src]]
            # A stable sort: ties go to the path met first (source level + 1, then + 0, then
            # - 1; the lower end level), the order of a single-best Viterbi's strict ">".
            cands.sort(key=lambda c: -c[0])
            new[target] = cands[:keep]
        best = new
    final = [c for level in range(nlev) for c in best[level]]
    final.sort(key=lambda c: -c[0])
    return final[:keep]


def viterbi_path(
    beta_weights: torch.Tensor | np.ndarray, mode: str = "relative"
) -> tuple[int, ...]:
    """Most probable level per layer under transition probabilities (L, num_levels, 3).

    ``beta_weights[l, s, d]`` is the probability of going from level ``s`` at layer ``l``
    (layer 0 = the stem, at level 0) to level ``s + d - 1`` at layer ``l + 1``; missing
    edges have probability 0. ``mode``: ``relative`` (docs/design.md §12.10, the default) or
    ``literal`` (Eq. 7 as it stands); see :func:`path_scores`. Returns L levels.
    """
    found = _viterbi(_transition_scores(beta_weights, mode), keep=1)
    if not found or not np.isfinite(found[0][0]):
        raise ValueError("beta weights admit no path from the stem through every layer")
    return found[0][1]


def path_margin(beta_weights: torch.Tensor | np.ndarray, mode: str = "relative") -> float:
    """Score of the decoded path minus that of the best path that differs from it (nats).

    exp(margin) is how many times likelier the decoded path is than its runner-up: near 0
    the decode is a coin toss that any noise in beta decides. ``inf`` when only one path
    exists (a single layer whose only source has one edge).
    """
    found = _viterbi(_transition_scores(beta_weights, mode), keep=2)
    if not found or not np.isfinite(found[0][0]):
        raise ValueError("beta weights admit no path from the stem through every layer")
    if len(found) < 2 or not np.isfinite(found[1][0]):
        return float("inf")
    return float(found[0][0] - found[1][0])


def path_score(
    beta_weights: torch.Tensor | np.ndarray, path: Sequence[int], mode: str = "relative"
) -> float:
    """The decode's score of ``path``: sum of its transitions' log scores; -inf if impossible."""
    scores = _transition_scores(beta_weights, mode)
    total, prev = 0.0, 0
    for layer, level in enumerate(path):
        d = direction(prev, level)
        if not 0 <= d < 3 or not 0 <= level < scores.shape[1]:
            return float("-inf")
        total += float(scores[layer, prev, d])
        prev = level
    return total


def path_log_probability(beta_weights: torch.Tensor | np.ndarray, path: Sequence[int]) -> float:
    """log P(path) under the transition probabilities (Eq. 7); -inf for an impossible path."""
    return path_score(beta_weights, path, mode="literal")


def decode(
    alpha_weights: torch.Tensor | np.ndarray,
    beta_weights: torch.Tensor | np.ndarray,
    primitives: Sequence[str],
    num_blocks: int,
    path_decode: str = "relative",
) -> Genotype:
    """The genotype: :func:`decode_cell` of alpha and :func:`viterbi_path` of beta."""
    return Genotype(
        cell=decode_cell(alpha_weights, primitives, num_blocks),
        path=viterbi_path(beta_weights, path_decode),
    )
