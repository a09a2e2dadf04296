"""Model complexity: parameter count and Multi-Adds (paper Table 2).

Multi-Adds are counted with PyTorch's own FLOP counter
(:class:`torch.utils.flop_counter.FlopCounterMode`), which counts 2 FLOPs per
multiply-accumulate of convolutions and matrix products and nothing for BN, ReLU, adds,
pooling or resizing; Multi-Adds = FLOPs / 2, i.e. the conv multiply-accumulates. The
forward runs on the ``meta`` device, from shapes only, so a 1025x2049 count takes well
under a second and allocates nothing. The paper's counting convention is unknown; this
one lands 3.8-4.7% below its 333.25B / 460.93B / 695.03B for S / M / L (docs/design.md §9.4).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_multiply_adds", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (conv weights and biases, BN affine; not BN running stats)."""
    return sum(p.numel() for p in model.parameters())


def count_multiply_adds(
    model: nn.Module, size: tuple[int, int] = (1025, 2049), in_channels: int = 3
) -> int:
    """Multi-Adds of one (1, in_channels, *size) forward in eval mode: counted FLOPs / 2.

    The model itself is not run: its parameters and buffers are replaced by ``meta``
    tensors of the same shapes for the count, and its train/eval mode is restored after.
    """
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    x = torch.empty(1, in_channels, *size, device="meta")
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            functional_call(model, meta, (x,), strict=False)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
