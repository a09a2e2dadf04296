"""Decoding the continuous architecture into a :class:`Genotype` (paper §4.3).

- Cell (DARTS rule, SPEC.md §4.1, §12.6): for each block keep the two distinct
  predecessors whose strongest non-zero op weight is largest, and on each the argmax op
  excluding 'none'. 'none' can never be decoded.
- Network: beta, read as transition probabilities between levels, gives the most
  probable path from the stem (level 0) through layers 1..L by Viterbi in log space; the
  last level is free (SPEC.md §4.2).

These are pure functions of softmaxed weights; they work on tensors or arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from autodeeplab.genotype import Genotype
from autodeeplab.search.cell import edge_index, num_edges

__all__ = ["decode", "decode_cell", "viterbi_path", "path_log_probability"]


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


def viterbi_path(beta_weights: torch.Tensor | np.ndarray) -> tuple[int, ...]:
    """Most probable level per layer under transition probabilities (L, num_levels, 3).

    ``beta_weights[l, s, d]`` is the probability of going from level ``s`` at layer ``l``
    (layer 0 = the stem, at level 0) to level ``s + d - 1`` at layer ``l + 1``; missing
    edges have probability 0. Returns L levels.
    """
    b = _numpy(beta_weights)
    if b.ndim != 3 or b.shape[2] != 3:
        raise ValueError(f"beta weights must have shape (L, num_levels, 3), got {b.shape}")
    num_layers, nlev, _ = b.shape
    with np.errstate(divide="ignore"):
        logb = np.log(b)
    score = np.full(nlev, -np.inf)
    score[0] = 0.0  # the stem
    back = np.zeros((num_layers, nlev), dtype=np.int64)
    for layer in range(num_layers):
        new = np.full(nlev, -np.inf)
        for target in range(nlev):
            for d in range(3):
                src = target - d + 1
                if 0 <= src < nlev:
                    cand = score[src] + logb[layer, src, d]
                    if cand > new[target]:
                        new[target], back[layer, target] = cand, src
        score = new
    if not np.isfinite(score).any():
        raise ValueError("beta weights admit no path from the stem through every layer")
    level = int(np.argmax(score))
    path = [level]
    for layer in range(num_layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return tuple(reversed(path))


def path_log_probability(beta_weights: torch.Tensor | np.ndarray, path: Sequence[int]) -> float:
    """log P(path) under the transition probabilities; -inf for an impossible path."""
    b = _numpy(beta_weights)
    total, prev = 0.0, 0
    for layer, level in enumerate(path):
        d = level - prev + 1
        if not 0 <= d < 3 or not 0 <= level < b.shape[1]:
            return float("-inf")
        p = b[layer, prev, d]
        if p <= 0:
            return float("-inf")
        total += float(np.log(p))
        prev = level
    return total


def decode(
    alpha_weights: torch.Tensor | np.ndarray,
    beta_weights: torch.Tensor | np.ndarray,
    primitives: Sequence[str],
    num_blocks: int,
) -> Genotype:
    """The genotype: :func:`decode_cell` of alpha and :func:`viterbi_path` of beta."""
    return Genotype(
        cell=decode_cell(alpha_weights, primitives, num_blocks), path=viterbi_path(beta_weights)
    )
