"""The relaxation of the architecture parameters: alpha, gamma and beta as probabilities.

alpha (E, K) is softmaxed over each edge's ops (Eq. 2); PC-DARTS's gamma (E,) over the
edges into each block; beta (L, levels, 3) over each node's *existing outgoing* edges
(Eq. 7, docs/design.md §12.1), which :func:`~autodeeplab.trellis.beta_mask` marks.
:class:`~autodeeplab.space.network.SearchNetwork` applies them to its parameters; the functions
here also work on a checkpoint's tensors, without the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from autodeeplab.space.cell import edge_softmax
from autodeeplab.trellis import beta_mask

__all__ = ["beta_mask", "beta_probabilities", "cell_decode_weights", "masked_softmax"]


def cell_decode_weights(alpha: Tensor, gamma: Tensor | None, num_blocks: int) -> Tensor:
    """The weights cell decoding ranks, from raw alpha (E, K) and gamma (E,) or None.

    softmax(alpha) per edge; with PC-DARTS edge normalisation (gamma given) each row is
    scaled by its edge weight, so the edge choice uses edge weight x op weight while the op
    choice on an edge is unchanged. Works on a checkpoint's tensors without the network.
    """
    weights = F.softmax(alpha, dim=-1)
    if gamma is None:
        return weights
    return weights * edge_softmax(gamma, num_blocks).unsqueeze(-1)


def masked_softmax(beta: Tensor, mask: Tensor) -> Tensor:
    """Softmax of beta (L, levels, 3) over the edges ``mask`` marks; 0 elsewhere."""
    # Rows with no edge (a level a layer lacks) get finite logits so that no NaN reaches
    # the gradient; the mask zeroes them after the softmax.
    has_edge = mask.any(dim=-1, keepdim=True)
    fill = torch.where(has_edge, float("-inf"), 0.0).to(beta.dtype)
    return F.softmax(torch.where(mask, beta, fill), dim=-1) * mask


def beta_probabilities(beta: Tensor, num_levels: int) -> Tensor:
    """Softmax of raw beta (L, num_levels, 3) over each node's existing outgoing edges."""
    if beta.ndim != 3 or beta.shape[1:] != (num_levels, 3):
        raise ValueError(f"beta must have shape (L, {num_levels}, 3), got {tuple(beta.shape)}")
    return masked_softmax(beta, beta_mask(beta.shape[0], num_levels).to(beta.device))
