"""The Auto-DeepLab supernet: an L-layer trellis over strides 4..32 (paper §3.2, §4.1, Eq. 6-8).

Layout (docs/design.md §1.2): a stem brings the input to stride 4 (level 0); layer l = 1..L has a
node at every level 0..min(l, num_levels - 1). A node at level s is Eq. 6:

    ^sH^l = sum_{s' in {s-1, s, s+1}} beta^l_{s'->s} * Cell(^{s'}H^{l-1}, ^sH^{l-2}; alpha)

beta is a softmax over each node's *existing outgoing* edges (Eq. 7, docs/design.md §12.1), so the
incoming weights of a node do not sum to one. An ASPP head sits on every node of layer L;
their logits are upsampled to the input and summed (§4.1.2).

Choices where the paper is silent (docs/design.md §11-12):

- The up to three Cell evaluations of a node share one cell's weights; each incoming
  direction has its own :class:`~autodeeplab.ops.Resample` edge, which is at once the
  paper's stride-2 conv (s/2 -> s) or 1x1 conv + bilinear upsampling (2s -> s) and the
  cell's input preprocessing. The directions run as one batch (their BatchNorm statistics
  are therefore pooled over the directions).
- A missing H^{l-2} is replaced by the nearest existing level of layer l-2 (the stem's
  stride-2 output for layer 1), brought to size with stride-2 convs (the first author's
  rule, NR#77).
- Stem: the retrain stem (64/64/128 channels, stride 4); the trellis, the stem's widths and
  the node widths come from :class:`autodeeplab.trellis.Trellis`. Op BatchNorms are not
  affine (DARTS); stem and heads (:mod:`autodeeplab.space.head`) are.

Partial channels (PC-DARTS, beyond the paper; ``partial_channels`` K > 1, see
:mod:`autodeeplab.space.cell`): the mixed ops run on 1/K of the channels, and a third
architecture parameter ``gamma`` (num_edges,) holds PC-DARTS's edge-normalisation logits
(its "beta"; renamed, as beta is the trellis here), softmaxed over the edges into each
block and shared by every cell like alpha. Decoding then ranks a block's edges by
gamma-weight x op weight (:meth:`SearchNetwork.cell_weights`), as PC-DARTS does. With K = 1
there is no gamma and the network is the paper's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from autodeeplab.genotype import Genotype
from autodeeplab.ops import resize
from autodeeplab.space.arguments import check_args, check_partial_channels
from autodeeplab.space.cell import MixedOp, SearchCell, edge_softmax, state_edges
from autodeeplab.space.decode import decode
from autodeeplab.space.head import SearchHead
from autodeeplab.space.relaxation import beta_probabilities, cell_decode_weights, masked_softmax
from autodeeplab.space.single_path import build_path_edges, single_path_forward
from autodeeplab.trellis import (
    PAPER_STEM,
    Resample,
    StemSpec,
    SupernetSpec,
    beta_mask,
    direction,
    halve,
    num_edges,
)

__all__ = [
    "SearchNetwork",
    "SearchStem",
    "SearchHead",
    "beta_mask",
    "beta_probabilities",
    "cell_decode_weights",
    "min_search_crop",
]


class SearchStem(nn.Module):
    """The stem of :class:`~autodeeplab.trellis.StemSpec`: stem0 at stride 2, stem1 at stride 4.

    The retrain network's ``model.backbone.Stem`` computes the same; the module classes stay
    two because their state-dict keys differ and saved checkpoints rely on both.
    """

    def __init__(self, spec: StemSpec = PAPER_STEM) -> None:
        super().__init__()
        c0, c1, c2 = spec.channels
        self.conv0 = nn.Sequential(
            nn.Conv2d(spec.in_channels, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()
        )
        self.conv1 = nn.Sequential(nn.Conv2d(c0, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1))
        self.conv2 = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> stem0 (N, c1, H/2, W/2), stem1 (N, c2, H/4, W/4)."""
        stem0 = self.conv1(self.conv0(x))
        return stem0, self.conv2(F.relu(stem0))


@contextlib.contextmanager
def _kept_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Put ``module``'s BatchNorm running statistics back as they were on entry.

    A checkpointed cell runs its forward pass twice, and BatchNorm in training mode would
    update its statistics (and its batch count) on each; the recomputation must not.
    """
    buffers = [
        b
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(buffers, saved)


class _Node(nn.Module):
    """A trellis node: the resampling edges into it and its (shared-weight) cell."""

    def __init__(
        self,
        level: int,
        sources: list[int],
        source_channels: list[int],
        prev_prev_level: int,
        prev_prev_channels: int,
        width: int,
        num_blocks: int,
        primitives: Sequence[str],
        affine: bool,
        partial_channels: int = 1,
        pool_bn: bool = True,
    ) -> None:
        super().__init__()
        self.level, self.sources, self.prev_prev_level = level, sources, prev_prev_level
        self.pre = nn.ModuleList(
            Resample(c, width, level - src, affine)
            for src, c in zip(sources, source_channels, strict=True)
        )
        self.pre_prev = Resample(prev_prev_channels, width, level - prev_prev_level, affine)
        self.cell = SearchCell(width, num_blocks, primitives, affine, partial_channels, pool_bn)

    def checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        """Contexts of a checkpointed cell's forward pass and of its recomputation."""
        return contextlib.nullcontext(), _kept_batchnorm_stats(self.cell)


class SearchNetwork(nn.Module):
    """The continuous Auto-DeepLab supernet with architecture parameters ``alpha`` and ``beta``.

    Args:
        num_classes: output classes.
        spec: the supernet's :class:`~autodeeplab.trellis.SupernetSpec` (L, B, F, strides,
            ops...), or its fields as arguments, positionally after ``num_classes`` or by
            name: ``SearchNetwork(19, num_layers=4)`` is ``SearchNetwork(19,
            spec=SupernetSpec(num_layers=4))``.
        checkpoint_cells: recompute each cell's activations in the backward pass instead of
            storing them (activation checkpointing): much less memory for about one more
            forward pass of compute, and the same results: the recomputation leaves the
            BatchNorm running statistics as the forward pass set them.
    """

    def __init__(
        self,
        num_classes: int,
        *args: Any,
        spec: SupernetSpec | None = None,
        checkpoint_cells: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if spec is None:
            spec = SupernetSpec(*args, **kwargs)
        elif args or kwargs:
            raise TypeError("SearchNetwork takes a spec or the spec's fields, not both")
        self.spec = spec = spec.supernet_spec()
        # The constructor's arguments, JSON-ready: a search checkpoint stores them, and
        # decoding one reads the architecture's shape from them (engine/search/checkpoints).
        self.model_kwargs: dict[str, Any] = {
            "num_classes": num_classes,
            **spec.kwargs(),
            "checkpoint_cells": checkpoint_cells,
        }
        self.checkpoint_cells = checkpoint_cells
        num_layers, num_blocks, strides = spec.num_layers, spec.num_blocks, spec.strides
        filter_multiplier, primitives = spec.filter_multiplier, spec.primitives
        affine, partial_channels, pool_bn = spec.affine, spec.partial_channels, spec.pool_bn
        check_args(num_classes, num_layers, num_blocks, filter_multiplier, strides, primitives)
        check_partial_channels(partial_channels, filter_multiplier)
        self.partial_channels = partial_channels
        self.num_classes, self.num_layers, self.num_blocks = num_classes, num_layers, num_blocks
        self.filter_multiplier, self.strides = filter_multiplier, tuple(strides)
        self.primitives = tuple(primitives)
        self.num_levels = nlev = len(self.strides)
        self.trellis = trellis = spec.trellis()
        self.stem = SearchStem(trellis.stem)
        layers, incoming, counts = [], [], []
        nodes = trellis.nodes()
        for layer in range(1, num_layers + 1):
            modules = []
            for node in (n for n in nodes if n.layer == layer):
                level, sources, pp = node.level, node.sources, node.prev_prev_level
                modules.append(
                    _Node(
                        level,
                        sources,
                        [trellis.channels(layer - 1, s) for s in sources],
                        pp,
                        trellis.channels(layer - 2, pp),
                        trellis.width(level),
                        num_blocks,
                        self.primitives,
                        affine,
                        partial_channels,
                        pool_bn,
                    )
                )
                # Flat indices of beta[layer - 1, source level, direction] of the edges in.
                incoming += [((layer - 1) * nlev + s) * 3 + direction(s, level) for s in sources]
                counts.append(len(sources))
            layers.append(nn.ModuleList(modules))
        self.layers = nn.ModuleList(layers)
        last = [trellis.channels(num_layers, lv) for lv in trellis.levels_at(num_layers)]
        self.heads = nn.ModuleList(
            SearchHead(c, c, num_classes, 96 // s) for c, s in zip(last, self.strides, strict=False)
        )
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(num_blocks), len(primitives)))
        self.beta = nn.Parameter(1e-3 * torch.randn(num_layers, nlev, 3))
        # Only with K > 1, so that K = 1 keeps the paper's parameters, RNG draws and
        # checkpoint keys. PC-DARTS initialises its edge logits as alpha: 1e-3 * N(0, 1).
        self.gamma: nn.Parameter | None = None
        if partial_channels > 1:
            self.gamma = nn.Parameter(1e-3 * torch.randn(num_edges(num_blocks)))
        self.register_buffer("beta_mask", beta_mask(num_layers, nlev), persistent=False)
        self.register_buffer("_incoming", torch.tensor(incoming), persistent=False)
        self._incoming_counts = counts
        for s in range(num_blocks + 1):
            self.register_buffer(f"_rows{s}", torch.tensor(state_edges(s, num_blocks)), False)
        # The H^{l-2} edges of paths that change level (space/single_path.py): only once
        # add_path_edges() is called, so that the paper's supernet keeps its keys.
        self.path_edges: nn.ModuleDict | None = None

    def add_path_edges(self, seed: int = 0) -> None:
        """Add the single-path H^{l-2} edges the trellis lacks (once), initialised from ``seed``.

        Their initialisation draws from its own generator, not the global one. New state-dict
        keys ``path_edges.*``; :meth:`forward` never reads them.
        """
        if self.path_edges is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                edges = build_path_edges(self.trellis, self.spec.affine)
            self.path_edges = edges.to(self.alpha.device, self.alpha.dtype).train(self.training)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module``'s; a state with path edges adds them here first (see above)."""
        if self.path_edges is None and any(k.startswith("path_edges.") for k in state_dict):
            self.add_path_edges()
        return super().load_state_dict(state_dict, strict, assign)

    def forward_genotype(self, x: Tensor, genotype: Genotype, prev_prev: str = "auto") -> Tensor:
        """Logits of ``genotype``'s network on the shared weights, like :meth:`forward`'s.

        Only the genotype's nodes and ops run (``space/single_path.py``); ``prev_prev``:
        how a path that changes level reads H^{l-2} (``path``, ``trellis``, ``auto``).
        """
        return single_path_forward(self, x, genotype, prev_prev)

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters: [alpha, beta], and gamma with partial channels."""
        arch = [self.alpha, self.beta]
        return arch if self.gamma is None else [*arch, self.gamma]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture parameters."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def alpha_weights(self) -> Tensor:
        """softmax(alpha) over the ops of each edge, (num_edges, num_ops) (Eq. 2)."""
        return F.softmax(self.alpha, dim=-1)

    def edge_weights(self) -> Tensor | None:
        """PC-DARTS edge normalisation: softmax(gamma) over each block's incoming edges.

        (num_edges,), or None without partial channels.
        """
        return None if self.gamma is None else edge_softmax(self.gamma, self.num_blocks)

    def cell_weights(self) -> Tensor:
        """The weights cell decoding ranks (num_edges, num_ops); see :func:`cell_decode_weights`."""
        return cell_decode_weights(self.alpha, self.gamma, self.num_blocks)

    def beta_weights(self) -> Tensor:
        """beta as transition probabilities (L, num_levels, 3), 0 on missing edges (Eq. 7)."""
        return masked_softmax(self.beta, self.beta_mask)

    def genotype(self, path_decode: str = "relative") -> Genotype:
        """Decode the current alpha and beta (argmax cell, Viterbi path; see ``decode``)."""
        with torch.no_grad():
            return decode(
                self.cell_weights(),
                self.beta_weights(),
                self.primitives,
                self.num_blocks,
                path_decode,
            )

    def set_skip_remedies(self, aux_skip: float = 0.0, skip_dropout: float = 0.0) -> None:
        """On every mixed op: DARTS-'s auxiliary skip weight, P-DARTS's skip dropout (0: off)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                m.aux_skip, m.skip_dropout = float(aux_skip), float(skip_dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> logits (N, num_classes, H, W); any H, W."""
        n = x.shape[0]
        rows = [getattr(self, f"_rows{s}") for s in range(self.num_blocks + 1)]
        state_weights = SearchCell.split_weights(self.alpha_weights(), rows)
        edge_w = self.edge_weights()
        state_edge_weights = None if edge_w is None else SearchCell.split_weights(edge_w, rows)
        beta_in = self.beta_weights().flatten()[self._incoming].split(self._incoming_counts)
        stem0, stem1 = self.stem(x)
        sizes = [tuple(stem1.shape[-2:])]
        while len(sizes) < self.num_levels:  # as the stride-2 edges produce them
            sizes.append(halve(sizes[-1]))
        prev2, prev = {-1: stem0}, {0: stem1}
        i = 0
        for nodes in self.layers:
            cur = {}
            for node in nodes:
                size = sizes[node.level]
                s0 = node.pre_prev(prev2[node.prev_prev_level], size)
                s1 = [pre(prev[s], size) for pre, s in zip(node.pre, node.sources, strict=True)]
                s1 = torch.cat(s1) if len(s1) > 1 else s1[0]
                if self.checkpoint_cells and torch.is_grad_enabled():
                    out = checkpoint(
                        node.cell,
                        s0,
                        s1,
                        state_weights,
                        state_edge_weights,
                        use_reentrant=False,
                        context_fn=node.checkpoint_contexts,
                    )
                else:
                    out = node.cell(s0, s1, state_weights, state_edge_weights)
                k, weights = len(node.sources), beta_in[i]
                i += 1
                # Eq. 6: the beta-weighted sum over the k incoming directions.
                out = out.view(k, n, *out.shape[1:]) * weights.view(k, 1, 1, 1, 1)
                cur[node.level] = out.sum(0) if k > 1 else out[0]
            prev2, prev = prev, cur
        logits = None
        for level, head in enumerate(self.heads):
            y = resize(head(prev[level]), x.shape[-2:])
            logits = y if logits is None else logits + y
        return logits


def min_search_crop(strides: Sequence[int]) -> int:
    """The smallest search crop that leaves the coarsest level 3x3 (docs/design.md §12.12).

    Below it the 3x3 pools are global, the dilated convs and every ASPP atrous branch act
    as 1x1 convs, BatchNorm normalises a handful of values and the gradients blow up (norms
    of 1e9 at crop 32 with strides up to 32).
    """
    return 3 * max(strides)
