"""The search report's figures: alpha, beta, the decoded path, the losses and the dynamics.

:mod:`autodeeplab.engine.search.report` reads the search log and writes the report's text;
this module draws its figures, one function each, from plain records and arrays:

- :func:`plot_alpha`: softmax(alpha) per edge, ops x epochs, laid out as the cell;
- :func:`plot_beta`: each trellis node's outgoing transition probabilities, directions x
  epochs, laid out as the trellis (its edges from :mod:`autodeeplab.trellis`);
- :func:`plot_path`: the decoded path per epoch, and what changed against the epoch before;
- :func:`plot_curves`: losses and validation mIoU;
- :func:`plot_search_dynamics`: what the search learnt, from the log's diagnostic fields
  (:mod:`autodeeplab.space.diagnostics`): the entropies of alpha and beta, how far they
  moved since the updates began, the decoded path's margin over its runner-up against the
  warning threshold, and the share of parameter-free branches in the decoded cell.

Figures are made and written by :mod:`autodeeplab.viz._figure` (headless Agg canvas, atomic
PNG files).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from autodeeplab.genotype import Genotype
from autodeeplab.trellis import beta_mask, direction, edge_index
from autodeeplab.viz._figure import new_figure, save_figure

__all__ = [
    "as_float",
    "path_changes",
    "plot_alpha",
    "plot_beta",
    "plot_curves",
    "plot_path",
    "plot_search_dynamics",
]

_PATH_COLOR = "#1f5fa8"
_MARK_COLOR = "#d62728"
_STATES = {0: "$H^{l-2}$", 1: "$H^{l-1}$"}  # genotype inputs; k >= 2 is block k-1 (1-based)
_LEVEL_COLORS = ("#c6dbef", "#6baed6", "#2171b5", "#08306b", "#41ab5d", "#238b45")


def as_float(x: Any) -> float:
    """A logged metric as a float; None (e.g. arch_loss during warm-up) becomes NaN."""
    return float("nan") if x is None else float(x)


def _new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with the constrained layout."""
    return new_figure((width, height), layout="constrained")


def _suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 12 characters per inch at 11 pt)."""
    width = int(fig.get_figwidth() * 12)
    fig.suptitle(textwrap.fill(text, width), fontsize=11)


def _epoch_ticks(ax: Any, epochs: list[int], labels: bool = True, most: int = 6) -> None:
    """Columns are records: at most ``most`` ticks, labelled with their epoch numbers."""
    ticks = sorted({round(t) for t in np.linspace(0, len(epochs) - 1, min(len(epochs), most))})
    ax.set_xticks(ticks, [str(epochs[t]) for t in ticks] if labels else [""] * len(ticks))


def _heatmap(
    ax: Any, data: np.ndarray, epochs: list[int], show_epochs: bool, ticks: int, **style: Any
) -> Any:
    """A (rows, epochs) heatmap with epoch ticks (labelled only where ``show_epochs``)."""
    image = ax.imshow(data, aspect="auto", interpolation="nearest", vmin=0.0, **style)
    ax.tick_params(labelsize=7, length=2)
    _epoch_ticks(ax, epochs, show_epochs, ticks)
    if show_epochs:
        ax.set_xlabel("epoch", fontsize=7, labelpad=1)
    return image


def _mark_final(ax: Any, row: int, num_epochs: int) -> None:
    """Frame ``ax`` in path blue and outline heatmap ``row`` in red: the final choice."""
    outline = Rectangle((-0.5, row - 0.5), num_epochs, 1.0, fill=False, lw=1.8, clip_on=False)
    outline.set_edgecolor(_MARK_COLOR)
    ax.add_patch(outline)
    for spine in ax.spines.values():
        spine.set_edgecolor(_PATH_COLOR)
        spine.set_linewidth(2.0)


def plot_alpha(
    alpha: np.ndarray, epochs: list[int], ops: list[str], final: Genotype, path: Path
) -> Path:
    """One ops x epochs heatmap per edge, in a blocks x inputs grid (as the cell reads)."""
    num_blocks, cols = final.num_blocks, final.num_blocks + 1
    chosen = {(b, inp): op for b, block in enumerate(final.cell) for op, inp in block}
    fig = _new_figure(1.2 + 2.3 * cols, 1.0 + (0.6 + 0.16 * len(ops)) * num_blocks)
    axes = fig.subplots(num_blocks, cols, squeeze=False)
    # Uniform alpha (before any update) should look neutral, not saturated.
    vmax = max(float(alpha.max()), 2.0 / len(ops))
    image = None
    for b in range(num_blocks):
        for s in range(cols):
            ax = axes[b, s]
            if s > b + 1:  # block b reads states 0..b+1 only
                ax.set_axis_off()
                continue
            last_in_column = b == num_blocks - 1 or s == b + 1
            data = alpha[:, edge_index(b, s), :].T
            image = _heatmap(ax, data, epochs, last_in_column, 6, cmap="viridis", vmax=vmax)
            ax.set_yticks(range(len(ops)), ops if s == 0 else [""] * len(ops), fontsize=7)
            op = chosen.get((b, s))
            title = f"{_STATES.get(s, f'block {s - 1}')} \u2192 block {b + 1}"
            ax.set_title(
                title + (f": {op}" if op else ""), fontsize=8, color=_PATH_COLOR if op else "black"
            )
            if op:
                _mark_final(ax, ops.index(op), len(epochs))
    assert image is not None
    # The empty top-right corner of the staircase holds the colour bar when there is one.
    host = axes[0, -1] if num_blocks >= 2 else None
    if host is not None:
        cax = host.inset_axes((0.05, 0.55, 0.9, 0.12))
        fig.colorbar(image, cax=cax, orientation="horizontal", label="softmax(alpha)")
    else:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="softmax(alpha)")
    _suptitle(
        fig, "alpha per edge over the epochs; blue frame + red row: the op the final cell keeps"
    )
    return save_figure(fig, path)


def plot_beta(beta: np.ndarray, epochs: list[int], final: Genotype, path: Path) -> Path:
    """One directions x epochs heatmap per trellis node, in a levels x layers grid."""
    _, num_layers, num_levels, _ = beta.shape
    mask = beta_mask(num_layers, num_levels).numpy()
    levels = (0, *final.path)  # level of the path at each source layer (0 = stem)
    rows = min(num_levels, num_layers)
    fig = _new_figure(1.6 + 1.35 * num_layers, 1.2 + 1.05 * rows)
    axes = fig.subplots(rows, num_layers, squeeze=False)
    cmap = colormaps["viridis"].with_extremes(bad="#e6e6e6")  # grey: no such edge
    image = None
    for s in range(rows):
        stride = 4 * 2**s
        names = [f"to {stride // 2}", f"to {stride}", f"to {stride * 2}"]
        for layer in range(num_layers):
            ax = axes[s, layer]
            if not mask[layer, s].any():
                ax.set_axis_off()
                continue
            values = beta[:, layer, s, :].T  # (3 directions, epochs)
            data = np.ma.masked_array(
                values, np.broadcast_to(~mask[layer, s, :, None], values.shape)
            )
            lowest = s == min(layer, rows - 1)
            image = _heatmap(ax, data, epochs, lowest, 4, cmap=cmap, vmax=1.0)
            ax.set_yticks(range(3), names if layer == s else [""] * 3, fontsize=7)
            if layer == s:
                ax.set_ylabel(f"stride {stride}", fontsize=8)
            if s == 0:
                ax.set_title("stem" if layer == 0 else f"layer {layer}", fontsize=8)
            if levels[layer] == s:
                # the transition the path takes
                _mark_final(ax, direction(s, final.path[layer]), len(epochs))
    assert image is not None
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.7, label="beta (outgoing)")
    _suptitle(
        fig,
        "beta per node over the epochs: rows = stride of the node, columns = the layer it "
        "leaves; blue frame + red row: the final path (grey: no such edge)",
    )
    return save_figure(fig, path)


def path_changes(genotypes: list[Genotype]) -> tuple[list[int | None], list[int | None]]:
    """Per epoch: path layers and cell blocks that differ from the previous epoch's."""
    layers: list[int | None] = [None]
    blocks: list[int | None] = [None]
    for prev, cur in zip(genotypes, genotypes[1:], strict=False):
        layers.append(sum(a != b for a, b in zip(prev.path, cur.path, strict=True)))
        blocks.append(sum(sorted(a) != sorted(b) for a, b in zip(prev.cell, cur.cell, strict=True)))
    return layers, blocks


def plot_path(
    genotypes: list[Genotype],
    epochs: list[int],
    num_levels: int,
    changes: tuple[list[int | None], list[int | None]],
    path: Path,
) -> Path:
    """Decoded path per epoch (layers x epochs by stride) over the per-epoch change counts."""
    levels = np.array([g.path for g in genotypes]).T  # (L, epochs)
    num_layers, n = levels.shape
    fig = _new_figure(max(7.0, 2.5 + 0.28 * n), 3.0 + 0.28 * num_layers)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[max(num_layers, 3), 4])
    cmap = ListedColormap(list(_LEVEL_COLORS[:num_levels]))
    image = top.imshow(
        levels,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=-0.5,
        vmax=num_levels - 0.5,
        extent=(-0.5, n - 0.5, num_layers + 0.5, 0.5),
    )
    if n <= 60:
        for layer in range(num_layers):
            for e in range(n):
                level = int(levels[layer, e])
                color = "white" if level >= 2 else "black"
                text = str(4 * 2**level)
                top.text(e, layer + 1, text, ha="center", va="center", fontsize=7, color=color)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_ylabel("layer")
    top.set_title("decoded path per epoch (cell value = stride of the layer)", fontsize=10)
    bar = fig.colorbar(image, ax=top, ticks=range(num_levels), shrink=0.9)
    bar.ax.set_yticklabels([str(4 * 2**i) for i in range(num_levels)])
    bar.set_label("stride")

    layer_changes, block_changes = changes
    xs = np.arange(n)
    width = 0.4
    bottom.bar(xs - width / 2, [c or 0 for c in layer_changes], width, label="path layers")
    bottom.bar(
        xs + width / 2, [c or 0 for c in block_changes], width, label="cell blocks", color="#f28e2b"
    )
    bottom.set_ylabel("changed")
    bottom.set_xlabel("epoch")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylim(0, max(num_layers, len(genotypes[0].cell)) + 0.5)
    bottom.legend(fontsize=8, loc="upper right", ncol=2)
    bottom.set_title("changes against the previous epoch", fontsize=10)
    bottom.grid(axis="y", alpha=0.3)
    _epoch_ticks(bottom, epochs)
    return save_figure(fig, path)


def plot_curves(records: list[dict[str, Any]], epochs: list[int], path: Path) -> Path:
    """Training, architecture and validation losses; validation mIoU and pixel accuracy."""
    fig = _new_figure(11.0, 4.0)
    ax_loss, ax_miou = fig.subplots(1, 2)
    style = {"marker": "o", "ms": 4}
    for key, label, color in (
        ("train_loss", "train loss (trainA, w step)", "#1f5fa8"),
        ("arch_loss", "arch loss (trainB, alpha/beta step)", "#d62728"),
        ("val_loss", "val loss", "#2ca02c"),
    ):
        ax_loss.plot(
            epochs, [as_float(r.get(key)) for r in records], label=label, color=color, **style
        )
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Losses")
    for key, label, color in (
        ("val_miou", "val mIoU", "#f28e2b"),
        ("val_pixel_acc", "val pixel acc", "#7f7f7f"),
    ):
        ax_miou.plot(
            epochs, [100 * as_float(r.get(key)) for r in records], label=label, color=color, **style
        )
    ax_miou.set(xlabel="epoch", ylabel="%", title="Validation (supernet)", ylim=(0, 100))
    arch_on = [e for e, r in zip(epochs, records, strict=True) if r.get("arch_loss") is not None]
    for ax in (ax_loss, ax_miou):
        if arch_on and arch_on[0] > epochs[0]:
            ax.axvline(
                arch_on[0] - 0.5, color="#7f7f7f", ls="--", lw=1, label="alpha/beta updates start"
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)  # one epoch still gets a sane axis
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def _series(records: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` of every record as floats (nan where absent)."""
    out = []
    for r in records:
        v = r.get(key)
        out.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan)
    return out


def plot_search_dynamics(
    records: list[dict[str, Any]], threshold: float | None, path: str | os.PathLike[str]
) -> Path:
    """Draw the four dynamics panels of ``records`` (search-log epochs) to ``path``."""
    epochs = [int(r["epoch"]) for r in records]
    fig = new_figure((11.0, 6.4))
    (ent, shift), (margin, share) = fig.subplots(2, 2)
    style = {"marker": "o", "ms": 4}
    ent.plot(epochs, _series(records, "alpha_entropy_mean"), label="alpha (per edge)", **style)
    ent.plot(epochs, _series(records, "beta_entropy_mean"), label="beta (per node)", **style)
    ent.set(title="Mean entropy (nats; falls as the search commits)", xlabel="epoch")
    for key, label in (
        ("alpha_shift_max", "alpha, largest"),
        ("alpha_shift_mean", "alpha, mean"),
        ("beta_shift_max", "beta, largest"),
        ("beta_shift_mean", "beta, mean"),
    ):
        shift.plot(epochs, _series(records, key), label=label, **style)
    shift.set(title="Logit movement since the updates began", xlabel="epoch")
    margin.plot(epochs, _series(records, "path_margin"), color="#1f5fa8", label="margin", **style)
    if threshold is not None:
        margin.axhline(threshold, color="#d62728", ls="--", lw=1, label="warning threshold")
    margin.set(title="Decoded path: margin over the runner-up (nats)", xlabel="epoch")
    share.plot(
        epochs,
        [100 * v for v in _series(records, "param_free_share")],
        color="#7f7f7f",
        label="parameter-free branches",
        **style,
    )
    changed = [e for e, r in zip(epochs, records, strict=True) if r.get("genotype_changed")]
    if changed:
        share.scatter(changed, [-4] * len(changed), marker="^", color="#d62728", zorder=3,
                      label="genotype changed")  # fmt: skip
    share.set(title="Decoded cell: parameter-free branches (%)", xlabel="epoch", ylim=(-8, 104))
    for ax in (ent, shift, margin, share):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    fig.tight_layout()
    return save_figure(fig, path)
