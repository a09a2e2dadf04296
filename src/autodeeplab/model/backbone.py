"""The Auto-DeepLab backbone: the stem and one cell per layer along the decoded path.

Paper §3.2 and §5.2, built as the official TF code builds it (docs/design.md §6.1-6.2):

- stem: three 3x3 convs without bias, 64 -> 64 -> 128 channels (independent of F;
  :data:`autodeeplab.trellis.PAPER_STEM`).
  ``stem0`` is the pre-ReLU output of the second conv (stride 2), ``stem1`` the output of
  the third (stride 4). Cell 0 reads (stem1, stem0), cell 1 reads (cell 0, stem1), cell i
  reads (cell i-1, cell i-2);
- level ``l`` of the path means stride 4 * 2**l, block width F * 2**l;
- level up: the cell is a reduction cell (stride 2 inside the ops reading its inputs);
- level down: ``net`` is bilinearly upsampled (align_corners=True) *before* the cell. TF
  upsamples a side d to (d - 1) * 2 + 1, which is right only for inputs of size 32k + 1;
  here the target is the size of the finer level as the stem and the stride-2 ops produce
  it (ceil halving from stem1), so every input size works, and 32k + 1 inputs get exactly
  TF's sizes;
- a final ReLU after the last cell.

The decoder's low-level end point is the stride-4 feature TF calls ``Cell_2``; for other
genotypes see :func:`low_level_index`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.genotype import Genotype
from autodeeplab.model.cell import Cell, layer_keep_prob, scheduled_keep_prob
from autodeeplab.ops import resize
from autodeeplab.trellis import PAPER_STEM, StemSpec, block_width, halve

__all__ = ["Backbone", "Stem", "low_level_index"]


def low_level_index(path: tuple[int, ...]) -> int:
    """Index of the cell whose output feeds the decoder; -1 means ``stem1``.

    The paper net uses ``Cell_2``, its first level-0 (stride 4) cell past the first two
    (TF ``feature_extractor``). In general: the first level-0 cell with index >= 2, else the
    last level-0 cell, else (a path that starts at level 1 and never returns to level 0)
    the stem's stride-4 output.
    """
    level0 = [i for i, level in enumerate(path) if level == 0]
    deep = [i for i in level0 if i >= 2]
    if deep:
        return deep[0]
    if level0:
        return level0[-1]
    return -1


class Stem(nn.Module):
    """The stem of :class:`~autodeeplab.trellis.StemSpec`: stem0 at stride 2, stem1 at stride 4.

    The supernet's ``search.network.SearchStem`` computes the same; the module classes stay
    two because their state-dict keys differ and saved checkpoints rely on both.
    """

    def __init__(self, in_channels: int = 3, spec: StemSpec = PAPER_STEM) -> None:
        super().__init__()
        c0, c1, c2 = spec.channels
        self.conv0 = nn.Conv2d(in_channels, c0, 3, 2, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(c0)
        self.conv1 = nn.Conv2d(c0, c1, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (stem0, stem1), both before ReLU; sizes ceil(H/2) and ceil(H/4)."""
        x = F.relu(self.bn0(self.conv0(x)))
        stem0 = self.bn1(self.conv1(x))
        stem1 = self.bn2(self.conv2(F.relu(stem0)))
        return stem0, stem1


class Backbone(nn.Module):
    """Stem + one :class:`Cell` per layer of ``genotype.path``.

    Args:
        genotype: the decoded cell and path.
        filter_multiplier: F; a cell at level l has blocks of F * 2**l channels.
        drop_path_keep_prob: kp of the scheduled drop path; 1.0 disables it.
        total_training_steps: steps over which the keep probability decays to kp_l.
        in_channels: image channels.
    """

    def __init__(
        self,
        genotype: Genotype,
        filter_multiplier: int,
        drop_path_keep_prob: float = 1.0,
        total_training_steps: int = 500_000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if filter_multiplier < 1:
            raise ValueError(
                f"filter_multiplier must be a positive integer, got {filter_multiplier}"
            )
        if not 0.0 < drop_path_keep_prob <= 1.0:
            raise ValueError(f"drop_path_keep_prob must be in (0, 1], got {drop_path_keep_prob}")
        if total_training_steps < 1:
            raise ValueError(f"total_training_steps must be >= 1, got {total_training_steps}")
        self.genotype = genotype
        self.filter_multiplier = filter_multiplier
        self.drop_path_keep_prob = drop_path_keep_prob
        self.total_training_steps = total_training_steps
        self.training_step = 0
        # min(1, step / total): a tensor, so a changing step never recompiles a compiled model.
        self.register_buffer("drop_path_progress", torch.zeros(()), persistent=False)

        self.stem = Stem(in_channels)
        num_layers = genotype.num_layers
        channels = [PAPER_STEM.stem0_channels, PAPER_STEM.stem1_channels]  # outputs so far
        prev_level = 0
        self.cells = nn.ModuleList()
        for i, level in enumerate(genotype.path):
            width = block_width(filter_multiplier, level)
            cell = Cell(
                genotype,
                width,
                in_channels=channels[-1],
                prev_channels=channels[-2],
                stride=2 if level > prev_level else 1,
                drop_path_keep_prob=layer_keep_prob(drop_path_keep_prob, i, num_layers),
            )
            self.cells.append(cell)
            channels.append(cell.out_channels)
            prev_level = level

        self.low_level_index = low_level_index(genotype.path)
        self.low_level_channels = channels[self.low_level_index + 2]
        self.out_channels = channels[-1]
        self.output_stride = genotype.strides[-1]

    def set_training_step(self, step: int) -> None:
        """Set the current training step, which drives the drop-path schedule."""
        self.training_step = int(step)
        self.drop_path_progress.fill_(min(1.0, step / self.total_training_steps))

    def keep_probs(self) -> list[float]:
        """The drop-path keep probability of each cell at the current training step."""
        return [
            scheduled_keep_prob(
                cell.drop_path_keep_prob, self.training_step, self.total_training_steps
            )
            for cell in self.cells
        ]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> (features after the final ReLU at ``output_stride``, low-level features).

        The low-level features are the pre-activation stride-4 end point (see
        :func:`low_level_index`), as TF's decoder reads them.
        """
        stem0, stem1 = self.stem(x)
        # The size of every level, as the stem and the 'SAME' stride-2 ops produce it.
        sizes = [tuple(stem1.shape[-2:])]
        while len(sizes) <= max(self.genotype.path):
            sizes.append(halve(sizes[-1]))

        prev_layer, net = stem0, stem1
        low_level = stem1
        prev_level = 0
        for i, (cell, level) in enumerate(zip(self.cells, self.genotype.path, strict=True)):
            upsampled = resize(net, sizes[level], align_corners=True) if level < prev_level else net
            # Only the two latest outputs are kept, so inference holds no dead activations.
            prev_layer, net = net, cell(upsampled, prev_layer, self.drop_path_progress)
            if i == self.low_level_index:
                low_level = net
            prev_level = level
        return F.relu(net), low_level
