"""What a search has learnt so far: the figures the search log records every epoch.

A search that has learnt nothing still decodes to *some* genotype, so the genotype alone
cannot tell a search from noise. These numbers can (see the review behind docs/design.md §12.10):

- entropy of softmax(alpha) per edge and of softmax(beta) per trellis node (ln 8 and ln 3
  or ln 2 at the start: they fall as the search commits);
- how far alpha and beta have moved, in logits, since architecture updates began (Adam
  moves a logit by about lr a step, so this is bounded by steps x lr);
- the decoded path's margin over the runner-up (:func:`~autodeeplab.space.decode.path_margin`);
- the share of parameter-free ops in the decoded cell (the DARTS collapse shows here);
- whether the genotype changed since the last epoch.

Pure functions of tensors and genotypes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autodeeplab.genotype import Genotype
from autodeeplab.ops import OPS, OpSpec

__all__ = [
    "PARAMETER_FREE_OPS",
    "alpha_entropy",
    "beta_entropy",
    "logit_shift",
    "parameter_free_share",
    "search_diagnostics",
]


def _parameter_free(name: str) -> bool:
    """Whether op ``name`` has no weights, read from its profile (``OpSpec.weights``)."""
    spec = OPS.get(name)
    return isinstance(spec, OpSpec) and spec.weights(8) == 0


#: The built-in table's ops with no weights, the ones the DARTS collapse favours. The share
#: below reads each op's profile when it is called, so an op added later counts too.
PARAMETER_FREE_OPS = tuple(name for name in OPS if _parameter_free(name))


def _entropy(p: Tensor) -> Tensor:
    """Entropy in nats along the last axis; 0 log 0 = 0."""
    p = p.double()
    return -(p * torch.log(p.clamp_min(1e-300))).where(p > 0, torch.zeros_like(p)).sum(-1)


def alpha_entropy(alpha_weights: Tensor) -> list[float]:
    """Entropy (nats) of each edge's op distribution, softmax(alpha) (E, K) -> E values."""
    return [float(h) for h in _entropy(alpha_weights.detach())]


def beta_entropy(beta_weights: Tensor) -> list[list[float | None]]:
    """Entropy (nats) of each node's outgoing distribution (L, levels, 3); None: no node."""
    b = beta_weights.detach()
    h = _entropy(b)
    exists = (b > 0).any(-1)
    return [
        [float(h[layer, lv]) if exists[layer, lv] else None for lv in range(b.shape[1])]
        for layer in range(b.shape[0])
    ]


def logit_shift(now: Tensor, start: Tensor, mask: Tensor | None = None) -> tuple[float, float]:
    """(max, mean) of |now - start| over the entries ``mask`` keeps (all when None)."""
    d = (now.detach().double().cpu() - start.detach().double().cpu()).abs()
    if mask is not None:
        d = d[mask.cpu()]
    if d.numel() == 0:
        return 0.0, 0.0
    return float(d.max()), float(d.mean())


def parameter_free_share(genotype: Genotype) -> float:
    """Fraction of the cell's branches whose op has no weights (pools, skip)."""
    ops = [op for block in genotype.cell for op, _ in block]
    return sum(_parameter_free(op) for op in ops) / len(ops)


def search_diagnostics(
    alpha_weights: Tensor,
    beta_weights: Tensor,
    genotype: Genotype,
    margin: float,
    previous: Genotype | None,
    arch_start: tuple[Tensor, Tensor] | None,
    alpha: Tensor,
    beta: Tensor,
    beta_mask: Tensor,
) -> dict[str, Any]:
    """The log record's diagnostic fields (see the module docstring).

    ``arch_start``: raw (alpha, beta) when architecture updates began, or None before then;
    ``previous``: the last epoch's genotype (None for the first epoch).
    """
    a_ent, b_ent = alpha_entropy(alpha_weights), beta_entropy(beta_weights)
    nodes = [h for row in b_ent for h in row if h is not None]
    record: dict[str, Any] = {
        "alpha_entropy": a_ent,
        "alpha_entropy_mean": sum(a_ent) / len(a_ent),
        "beta_entropy": b_ent,
        "beta_entropy_mean": sum(nodes) / len(nodes),
        "path_margin": margin,
        "param_free_share": parameter_free_share(genotype),
        # Two branches trading strength within a block reorder it without changing the network.
        "genotype_changed": None if previous is None else not previous.same_network(genotype),
    }
    if arch_start is not None:
        record["alpha_shift_max"], record["alpha_shift_mean"] = logit_shift(alpha, arch_start[0])
        record["beta_shift_max"], record["beta_shift_mean"] = logit_shift(
            beta, arch_start[1], beta_mask
        )
    return record
