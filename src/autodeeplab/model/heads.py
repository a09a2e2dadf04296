"""Segmentation heads of the retrain network: ASPP and the DeepLabv3+ decoder.

Paper §5.2: "encoder = found network + ASPP; decoder = the DeepLabv3+ decoder using
low-level features at downsample rate 4". Forms from the official TF DeepLab code
(docs/design.md §6.3); every conv is a *regular* conv (the separable variant misses the paper's
parameter counts, docs/design.md §9.3):

- ASPP: image pooling (global mean -> 1x1 -> 256), 1x1 -> 256, three 3x3 atrous convs ->
  256, each without bias and followed by BN + ReLU; concat (1280) -> 1x1 -> 256, BN, ReLU,
  dropout 0.1 (TF keep_prob 0.9);
- decoder: low-level 1x1 -> 48 (BN, ReLU); ASPP output bilinearly resized to the
  low-level size; concat (304); two 3x3 -> 256 (BN, ReLU).

The logits conv lives in :class:`~autodeeplab.model.autodeeplab.AutoDeepLab`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.ops import resize
from autodeeplab.trellis import ASPP_CHANNELS, DECODER_CHANNELS, LOW_LEVEL_CHANNELS

__all__ = ["ASPP", "ConvBNReLU", "Decoder", "PooledBatchNorm2d"]


class PooledBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm for the ASPP image-pooling branch, defined for a batch of one.

    After global pooling each channel holds N values. With N = 1 the batch variance is
    undefined: PyTorch's BatchNorm raises, and TF's silently outputs beta (the branch then
    carries no information). Here a training forward that sees a single value per channel
    normalises with the running statistics instead and leaves them untouched (a single
    value says nothing about the variance); every other case is plain BatchNorm. The
    parameters and state-dict keys are those of ``nn.BatchNorm2d``, so the parameter
    count (docs/design.md §9 counts BN affine on all five ASPP branches) and checkpoints are
    unchanged, and eval mode and batches of two or more behave exactly like BatchNorm.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """kxk conv (no bias, optional dilation) -> BN -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
    ) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=padding,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _ImagePooling(nn.Module):
    """Global average pooling -> 1x1 conv -> BN -> ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = PooledBatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C_out, H, W)."""
        y = F.relu(self.bn(self.conv(x.mean(dim=(2, 3), keepdim=True))))
        # Bilinear upsampling of a 1x1 map is a broadcast.
        return y.expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: (N, C_in, H, W) -> (N, out_channels, H, W).

    Args:
        in_channels: backbone output channels.
        out_channels: width of each branch and of the projection (256 in the paper).
        rates: dilation rates of the three 3x3 branches; (12, 24, 36) is the DeepLab
            convention at output stride 8, where the paper's backbone ends.
        dropout: dropout after the projection (TF keep_prob 0.9).
        projection_gamma: initial scale (BatchNorm gamma) of the projection's output; 1 is
            the usual init. A small value keeps the random deep branch from drowning the
            decoder's low-level signal early in training from scratch (see AutoDeepLab).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = ASPP_CHANNELS,
        rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.1,
        projection_gamma: float = 1.0,
    ) -> None:
        super().__init__()
        if not projection_gamma > 0:  # also catches NaN
            raise ValueError(f"projection_gamma must be positive, got {projection_gamma}")
        self.rates = tuple(int(r) for r in rates)
        self.pooling = _ImagePooling(in_channels, out_channels)
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, 1)]
            + [ConvBNReLU(in_channels, out_channels, 3, rate) for rate in self.rates]
        )
        self.project = ConvBNReLU((len(self.rates) + 2) * out_channels, out_channels, 1)
        # Exactly zero would leave the ReLU after it dead; any positive value can grow back.
        nn.init.constant_(self.project[1].weight, projection_gamma)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, out_channels, H, W)."""
        features = [self.pooling(x)] + [branch(x) for branch in self.branches]
        return self.dropout(self.project(torch.cat(features, dim=1)))


class Decoder(nn.Module):
    """DeepLabv3+ decoder: (ASPP output, low-level features) -> (N, channels, h_low, w_low).

    Args:
        in_channels: channels of the ASPP output.
        low_level_in_channels: channels of the stride-4 backbone end point.
        low_level_channels: width of the low-level projection (48 in DeepLabv3+).
        channels: width of the two 3x3 refinement convs (256).
    """

    def __init__(
        self,
        in_channels: int,
        low_level_in_channels: int,
        low_level_channels: int = LOW_LEVEL_CHANNELS,
        channels: int = DECODER_CHANNELS,
    ) -> None:
        super().__init__()
        self.project_low_level = ConvBNReLU(low_level_in_channels, low_level_channels, 1)
        self.refine = nn.Sequential(
            ConvBNReLU(in_channels + low_level_channels, channels, 3),
            ConvBNReLU(channels, channels, 3),
        )

    def forward(self, x: Tensor, low_level: Tensor) -> Tensor:
        """(N, C, h, w), (N, C_low, H, W) -> (N, channels, H, W)."""
        low_level = self.project_low_level(low_level)
        x = resize(x, low_level.shape[-2:], align_corners=True)
        return self.refine(torch.cat([x, low_level], dim=1))
