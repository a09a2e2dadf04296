"""The discrete Auto-DeepLab cell, built from a decoded :class:`~autodeeplab.genotype.Genotype`.

Paper §3.1: a cell is a DAG of B blocks; block i adds two branches, each an op applied to
one of H^{l-2}, H^{l-1} or an earlier block; the cell outputs the concatenation of the B
block outputs. The forms below follow the official TF retrain code (docs/design.md §6.2):

- preprocessing: H^{l-1} ("net") always goes through ReLU -> 1x1 conv -> BN to the block
  width; H^{l-2} ("prev_layer") is first bilinearly resized (align_corners=True) to the
  size of ``net`` and goes through ReLU -> 1x1 conv -> BN only when its channel count
  differs from the width. A missing H^{l-2} is replaced by ``net``;
- reduction (stride 2): only the branches reading a cell input (0 or 1) are strided,
  the others run at the reduced size (docs/design.md §5.2);
- scheduled drop path (TF ``_apply_drop_path``; paper Tab. 3 "SDP"): in training, each
  op output except ``skip_connect`` (TF's ``'none'``) is multiplied by a per-sample
  Bernoulli(kp_t) mask scaled by 1/kp_t, where kp_l = 1 - ((cell_num+1)/L)(1 - kp) and
  kp_t = 1 - min(1, step/total_steps)(1 - kp_l).

The ops come from :data:`autodeeplab.ops.OPS`, the same implementation the supernet uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.genotype import Genotype
from autodeeplab.ops import OPS, ReLUConvBN, resize

__all__ = ["Cell", "drop_path", "layer_keep_prob", "scheduled_keep_prob"]

# TF's 'none' op is the identity; its output is never dropped (TF ``_apply_conv_operation``).
_NEVER_DROPPED = frozenset({"skip_connect"})


def layer_keep_prob(keep_prob: float, cell_index: int, num_layers: int) -> float:
    """Per-layer keep probability kp_l = 1 - ((cell_index + 1) / L) * (1 - keep_prob)."""
    return 1.0 - (cell_index + 1) / num_layers * (1.0 - keep_prob)


def scheduled_keep_prob(layer_keep: float, step: int, total_steps: int) -> float:
    """Keep probability at a training step: 1 - min(1, step / total_steps) * (1 - kp_l)."""
    return 1.0 - min(1.0, step / total_steps) * (1.0 - layer_keep)


def drop_path(x: Tensor, keep_prob: Tensor | float) -> Tensor:
    """Zero whole samples of ``x`` (N, ...) with probability 1 - keep_prob, scale the rest."""
    mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    # rand < p is Bernoulli(p), like TF's floor(p + U[0, 1)).
    mask = torch.rand(mask_shape, device=x.device, dtype=x.dtype) < keep_prob
    return x * (mask.to(x.dtype) / keep_prob)


class Cell(nn.Module):
    """One cell of the retrain network: B blocks of two (op, input) branches, concatenated.

    Args:
        genotype: the architecture; only its ``cell`` is used here.
        channels: the block width C = F * 2**level; the output has B * C channels.
        in_channels: channels of ``net`` (H^{l-1}).
        prev_channels: channels of ``prev_layer`` (H^{l-2}); ``None`` when the cell has no
            H^{l-2} and ``net`` is used in its place.
        stride: 2 for a reduction cell (one level up), else 1.
        drop_path_keep_prob: this cell's kp_l (already scaled by the cell's depth, see
            :func:`layer_keep_prob`); 1.0 disables drop path.
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        in_channels: int,
        prev_channels: int | None,
        stride: int = 1,
        drop_path_keep_prob: float = 1.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"Cell stride must be 1 or 2, got {stride}")
        if not 0.0 < drop_path_keep_prob <= 1.0:
            raise ValueError(f"drop_path_keep_prob must be in (0, 1], got {drop_path_keep_prob}")
        self.channels = channels
        self.stride = stride
        self.num_blocks = genotype.num_blocks
        self.out_channels = self.num_blocks * channels
        self.drop_path_keep_prob = drop_path_keep_prob
        self.preprocess = ReLUConvBN(in_channels, channels, 1)
        prev_channels = in_channels if prev_channels is None else prev_channels
        self.preprocess_prev = (
            ReLUConvBN(prev_channels, channels, 1) if prev_channels != channels else None
        )
        # Flat branch lists, two per block: ops[2*i], ops[2*i+1] belong to block i.
        self.op_names = [op for block in genotype.cell for op, _ in block]
        self.inputs = [inp for block in genotype.cell for _, inp in block]
        self.ops = nn.ModuleList(
            OPS[op](channels, stride if inp < 2 else 1, True, 1)
            for op, inp in zip(self.op_names, self.inputs, strict=True)
        )
        self._droppable = [op not in _NEVER_DROPPED for op in self.op_names]

    def forward(
        self,
        net: Tensor,
        prev_layer: Tensor | None = None,
        drop_path_progress: Tensor | float = 1.0,
    ) -> Tensor:
        """(N, C_in, H, W), (N, C_prev, h, w) -> (N, B*C, H', W'), H' = ceil(H / stride).

        Args:
            net: H^{l-1}, already at this cell's input resolution.
            prev_layer: H^{l-2} at any resolution, or ``None`` to use ``net``.
            drop_path_progress: min(1, step / total_steps), the training schedule's progress.
        """
        if prev_layer is None:
            prev_layer = net
        prev_layer = resize(prev_layer, net.shape[-2:], align_corners=True)
        if self.preprocess_prev is not None:
            prev_layer = self.preprocess_prev(prev_layer)
        states = [prev_layer, self.preprocess(net)]  # DARTS order: 0 = H^{l-2}, 1 = H^{l-1}
        relu_states: dict[int, Tensor] = {}

        drop = self.training and self.drop_path_keep_prob < 1.0
        keep_prob = 1.0 - drop_path_progress * (1.0 - self.drop_path_keep_prob) if drop else 1.0
        for i in range(self.num_blocks):
            block_out = None
            for j in (2 * i, 2 * i + 1):
                op, inp = self.ops[j], self.inputs[j]
                if getattr(op, "pre_relu", False):
                    # Ops that start with ReLU share one ReLU of their input state.
                    if inp not in relu_states:
                        relu_states[inp] = F.relu(states[inp])
                    y = op.forward_relu(relu_states[inp])
                else:
                    y = op(states[inp])
                if drop and self._droppable[j]:
                    y = drop_path(y, keep_prob)
                block_out = y if block_out is None else block_out + y
            states.append(block_out)
        return torch.cat(states[2:], dim=1)
