"""The supernet's search-time ASPP head (paper §4.1.2): one on every node of the last layer.

1x1 conv, one 3x3 conv at rate 96/s and image pooling, each B*F*s/4 wide; concatenated,
1x1 conv + BN + ReLU, 1x1 conv to ``num_classes``. The pooled branch has no BatchNorm, so
a batch of one trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SearchHead"]


class SearchHead(nn.Module):
    """Search-time ASPP: 1x1, one 3x3 at ``rate`` and image pooling, then logits."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, rate: int) -> None:
        super().__init__()

        def conv_bn_relu(k: int, dilation: int = 1) -> nn.Sequential:
            pad = dilation * (k // 2)
            conv = nn.Conv2d(in_channels, channels, k, padding=pad, dilation=dilation, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())

        self.conv1x1 = conv_bn_relu(1)
        self.atrous = conv_bn_relu(3, rate)
        self.pool = nn.Conv2d(in_channels, channels, 1)
        self.project = nn.Sequential(
            nn.Conv2d(3 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        # Small logits at the start (docs/design.md §12.12), as the retrain model does: PyTorch's
        # default init gave an initial CE of 2.58 > ln(8) and a weight-gradient norm of 241,
        # which clip 5 turned into steps at 1/50 of the lr; at std 0.01 it is 67.
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, h, w) -> logits (N, num_classes, h, w)."""
        x = F.relu(x)
        pooled = F.relu(self.pool(F.adaptive_avg_pool2d(x, 1))).expand(-1, -1, *x.shape[-2:])
        y = torch.cat([self.conv1x1(x), self.atrous(x), pooled], dim=1)
        return self.classifier(self.project(y))
